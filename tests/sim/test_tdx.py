from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from teegate.errors import ConfigError
from teegate.sim import DevTdx
from teegate.sim.tdx import DEFAULT_MRTD, DEFAULT_RTMRS, SGX_EXTENSION_OID, TCB_STATUSES
from tests.sim.conftest import DATA

NOW = int(time.time())
NONCE_RD = bytes(range(64))


def verify(dev: DevTdx, quote: bytes, collateral: str, now: int = NOW) -> dcap_qvl.VerifiedReport:
    col = dcap_qvl.QuoteCollateralV3.from_json(collateral)
    return dcap_qvl.verify_with_root_ca(quote, col, dev.root_der, now)


def test_quote_verifies_under_dev_root_and_carries_the_parameters(dev_tdx: DevTdx) -> None:
    rtmrs = [bytes([i]) * 48 for i in range(4)]
    quote = dev_tdx.quote(NONCE_RD, mrtd=b"\x42" * 48, rtmrs=rtmrs, mrconfigid=b"\x01" * 48)
    report = verify(dev_tdx, quote, dev_tdx.collateral(now=NOW))
    assert report.status == "UpToDate"
    assert report.advisory_ids == []
    td = json.loads(report.to_json())["report"]["TD10"]
    assert td["report_data"] == NONCE_RD.hex()
    assert td["mr_td"] == (b"\x42" * 48).hex()
    assert td["mr_config_id"] == (b"\x01" * 48).hex()
    assert [td[f"rt_mr{i}"] for i in range(4)] == [r.hex() for r in rtmrs]


def test_defaults_and_short_report_data_is_zero_padded(dev_tdx: DevTdx) -> None:
    parsed = dcap_qvl.parse_quote(dev_tdx.quote(b"\xaa" * 32))
    assert parsed.report.report_data == b"\xaa" * 32 + bytes(32)
    assert parsed.report.mr_td == DEFAULT_MRTD
    assert parsed.report.rt_mr3 == DEFAULT_RTMRS[3]


@pytest.mark.parametrize("status", [s for s in TCB_STATUSES if s != "Revoked"])
def test_quote_tcb_status_parameter(dev_tdx: DevTdx, status: str) -> None:
    report = verify(dev_tdx, dev_tdx.quote(NONCE_RD, tcb_status=status),
                    dev_tdx.collateral(now=NOW))
    assert report.status == status
    assert (report.advisory_ids == []) == (status == "UpToDate")


@pytest.mark.parametrize("status", [s for s in TCB_STATUSES if s != "Revoked"])
def test_collateral_tcb_status_parameter(dev_tdx: DevTdx, status: str) -> None:
    report = verify(dev_tdx, dev_tdx.quote(NONCE_RD), dev_tdx.collateral(status, now=NOW))
    assert report.status == status


def test_collateral_advisory_ids_parameter(dev_tdx: DevTdx) -> None:
    col = dev_tdx.collateral("SWHardeningNeeded", now=NOW, advisory_ids=["INTEL-SA-00615"])
    report = verify(dev_tdx, dev_tdx.quote(NONCE_RD), col)
    assert (report.status, report.advisory_ids) == ("SWHardeningNeeded", ["INTEL-SA-00615"])


def test_revoked_tcb_is_rejected_by_dcap_qvl(dev_tdx: DevTdx) -> None:
    with pytest.raises(ValueError, match="Revoked"):
        verify(dev_tdx, dev_tdx.quote(NONCE_RD, tcb_status="Revoked"),
               dev_tdx.collateral(now=NOW))
    with pytest.raises(ValueError, match="Revoked"):
        verify(dev_tdx, dev_tdx.quote(NONCE_RD), dev_tdx.collateral("Revoked", now=NOW))


def test_altered_report_data_fails(dev_tdx: DevTdx) -> None:
    quote = bytearray(dev_tdx.quote(NONCE_RD))
    quote[568] ^= 1  # REPORTDATA starts at quote offset 568
    with pytest.raises(ValueError, match="ISV enclave report signature is invalid"):
        verify(dev_tdx, bytes(quote), dev_tdx.collateral(now=NOW))


def test_altered_qe_report_fails(dev_tdx: DevTdx) -> None:
    quote = bytearray(dev_tdx.quote(NONCE_RD))
    quote[770 + 64] ^= 1  # QE report MRENCLAVE
    with pytest.raises(ValueError, match="qe_report"):
        verify(dev_tdx, bytes(quote), dev_tdx.collateral(now=NOW))


def test_debug_quote_is_rejected(dev_tdx: DevTdx) -> None:
    quote = dev_tdx.quote(NONCE_RD, debug=True)
    assert dcap_qvl.parse_quote(quote).report.td_attributes[0] & 1
    with pytest.raises(ValueError, match="Debug mode is enabled"):
        verify(dev_tdx, quote, dev_tdx.collateral(now=NOW))


def test_revoked_pck_certificate_is_rejected(dev_tdx: DevTdx) -> None:
    with pytest.raises(ValueError, match="CertRevoked"):
        verify(dev_tdx, dev_tdx.quote(NONCE_RD), dev_tdx.collateral(now=NOW, revoke_pck=True))


def test_collateral_window_is_now_plus_minus_30_days(dev_tdx: DevTdx) -> None:
    col = dev_tdx.collateral(now=NOW)
    quote = dev_tdx.quote(NONCE_RD)
    assert verify(dev_tdx, quote, col, NOW - 29 * 86400).status == "UpToDate"
    assert verify(dev_tdx, quote, col, NOW + 29 * 86400).status == "UpToDate"
    with pytest.raises(ValueError, match=r"Expired|expired"):
        verify(dev_tdx, quote, col, NOW + 31 * 86400)
    with pytest.raises(ValueError, match=r"future|not yet|Crl|CRL"):
        verify(dev_tdx, quote, col, NOW - 31 * 86400)


def test_dev_quote_does_not_verify_under_intel_root(dev_tdx: DevTdx) -> None:
    col = dcap_qvl.QuoteCollateralV3.from_json(dev_tdx.collateral(now=NOW))
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify(dev_tdx.quote(NONCE_RD), col, NOW)


def test_other_installation_root_rejects(dev_tdx: DevTdx, tmp_path: Path) -> None:
    other = DevTdx.load_or_create(tmp_path)
    assert other.root_pem != dev_tdx.root_pem
    col = dcap_qvl.QuoteCollateralV3.from_json(dev_tdx.collateral(now=NOW))
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(dev_tdx.quote(NONCE_RD), col, other.root_der, NOW)


def _walk(quote: bytes) -> dict[str, bytes]:
    """Walk the v4 signature data by its length fields."""
    (sig_len,) = struct.unpack_from("<I", quote, 632)
    sig = quote[636 : 636 + sig_len]
    ctype, csize = struct.unpack_from("<HI", sig, 128)
    inner = sig[134 : 134 + csize]
    (auth_len,) = struct.unpack_from("<H", inner, 448)
    off = 450 + auth_len
    t5, s5 = struct.unpack_from("<HI", inner, off)
    return {
        "ctype": bytes([ctype]), "key": sig[64:128], "qe_report": inner[:384],
        "qe_sig": inner[384:448], "auth": inner[450:off], "t5": bytes([t5]),
        "chain": inner[off + 6 : off + 6 + s5], "rest": inner[off + 6 + s5 :],
        "trailer": quote[636 + sig_len :],
    }


def test_binary_layout_matches_a_real_v4_quote(dev_tdx: DevTdx) -> None:
    real = (DATA / "tdx_quote").read_bytes()
    mine = dev_tdx.quote(NONCE_RD)
    assert mine[:12] == real[:12]  # version 4, key type 2, TDX, reserved
    assert mine[12:28] == real[12:28]  # Intel QE vendor ID
    r, m = _walk(real), _walk(mine)
    for w in (r, m):
        assert w["ctype"] == b"\x06"
        assert w["t5"] == b"\x05"
        assert w["rest"] == b""
        assert w["trailer"].strip(b"\0") == b""
        assert w["chain"].endswith(b"-----END CERTIFICATE-----\n\x00")
        assert w["chain"].count(b"BEGIN CERTIFICATE") == 3
        binding = hashlib.sha256(w["key"] + w["auth"]).digest()
        assert w["qe_report"][320:352] == binding
    assert len(mine) == 636 + struct.unpack_from("<I", mine, 632)[0]
    # QE report signed by the PCK leaf key (first cert of the type-5 chain), raw r||s.
    pck = x509.load_pem_x509_certificates(m["chain"].rstrip(b"\0"))[0]
    der = encode_dss_signature(int.from_bytes(m["qe_sig"][:32], "big"),
                               int.from_bytes(m["qe_sig"][32:], "big"))
    pck_key = pck.public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    pck_key.verify(der, m["qe_report"], ec.ECDSA(hashes.SHA256()))


def _oid_tree(der: bytes) -> list[str]:
    """Every OID in a DER blob, in order (a structural fingerprint of the SGX extension)."""
    out, i = [], 0
    while i < len(der) - 2:
        if der[i] == 0x06 and der[i + 2] == 0x2A:
            n = der[i + 1]
            body = der[i + 2 : i + 2 + n]
            arcs, val = [1, 2], 0
            for b in body[1:]:
                val = (val << 7) | (b & 0x7F)
                if not b & 0x80:
                    arcs.append(val)
                    val = 0
            out.append(".".join(map(str, arcs)))
            i += 2 + n
        else:
            i += 1
    return out


def _sgx_ext(chain_pem: bytes) -> bytes:
    leaf = x509.load_pem_x509_certificates(chain_pem.rstrip(b"\0"))[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


def test_pck_sgx_extension_has_the_real_structure(dev_tdx: DevTdx) -> None:
    real = _walk((DATA / "tdx_quote").read_bytes())["chain"]
    mine = _walk(dev_tdx.quote(NONCE_RD))["chain"]
    assert _oid_tree(_sgx_ext(mine)) == _oid_tree(_sgx_ext(real))
    ext = dcap_qvl.parse_quote(dev_tdx.quote(NONCE_RD)).pck_extension()
    assert ext.fmspc == dev_tdx.fmspc
    assert ext.sgx_type == 1
    assert ext.platform_instance_id is not None
    assert len(ext.platform_instance_id) == 16
    assert ext.pce_svn == 11
    assert len(ext.cpu_svn) == 16
    assert len(ext.ppid) == 16


def test_chain_names_and_ca_kind(dev_tdx: DevTdx) -> None:
    parsed = dcap_qvl.parse_quote(dev_tdx.quote(NONCE_RD))
    assert parsed.ca() == "platform"
    assert parsed.is_tdx()
    certs = x509.load_pem_x509_certificates(parsed.cert_chain_pem_bytes().rstrip(b"\0"))
    names = [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in certs]
    assert names == [
        "Intel SGX PCK Certificate", "Intel SGX PCK Platform CA", "Intel SGX Root CA"
    ]


def test_collateral_is_quote_collateral_v3_json_with_signed_raw_text(dev_tdx: DevTdx) -> None:
    data = json.loads(dev_tdx.collateral(now=NOW))
    assert set(data) == {
        "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
        "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
    }
    tcb_info = json.loads(data["tcb_info"])
    assert (tcb_info["id"], tcb_info["version"]) == ("TDX", 3)
    assert tcb_info["tdxModuleIdentities"][0]["id"] == "TDX_01"
    assert json.loads(data["qe_identity"])["id"] == "TD_QE"
    signer = x509.load_pem_x509_certificates(data["tcb_info_issuer_chain"].encode())[0]
    signer_key = signer.public_key()
    assert isinstance(signer_key, ec.EllipticCurvePublicKey)
    for text, sig in ((data["tcb_info"], data["tcb_info_signature"]),
                      (data["qe_identity"], data["qe_identity_signature"])):
        raw = bytes.fromhex(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        signer_key.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))
    crl = x509.load_der_x509_crl(bytes.fromhex(data["pck_crl"]))
    assert crl.next_update_utc is not None
    assert int(crl.next_update_utc.timestamp()) == NOW + 30 * 86400


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"report_data": bytes(65)}, "report_data"),
        ({"report_data": b"", "tcb_status": "Fine"}, "unknown TCB status"),
        ({"report_data": b"", "mrtd": bytes(47)}, "mrtd"),
        ({"report_data": b"", "rtmrs": [bytes(48)] * 3}, "rtmrs"),
        ({"report_data": b"", "mrconfigid": bytes(49)}, "mrconfigid"),
    ],
)
def test_bad_parameters_raise_config_error(dev_tdx: DevTdx, kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        dev_tdx.quote(**kwargs)


def test_unknown_collateral_status_raises(dev_tdx: DevTdx) -> None:
    with pytest.raises(ConfigError, match="unknown TCB status"):
        dev_tdx.collateral("Good")

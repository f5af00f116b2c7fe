"""The quote parser: every field of every vector, cross-checked with dcap-qvl's own parser."""

from __future__ import annotations

import struct

import dcap_qvl
import pytest

from teegate.attest.tdx import load_quote, parse_quote
from teegate.errors import EvidenceError
from tests.attest.test_tdx import DATA, read

QUOTES = [
    *sorted(
        str(p.relative_to(DATA)) for p in DATA.rglob("*")
        if p.is_file() and p.suffix in ("", ".bin", ".dat", ".hex", ".txt")
        and not p.name.startswith(("ccel", "nonce", "go-eventlog"))  # event logs, nonce
    ),
    "../confidential-ai/dstack-simulator-quote.hex",
]
TD_FIELDS = {
    "tee_tcb_svn": "tee_tcb_svn", "mrseam": "mr_seam", "mrsignerseam": "mr_signer_seam",
    "seam_attributes": "seam_attributes", "td_attributes": "td_attributes", "xfam": "xfam",
    "mrtd": "mr_td", "mrconfigid": "mr_config_id", "mrowner": "mr_owner",
    "mrownerconfig": "mr_owner_config", "rtmr0": "rt_mr0", "rtmr1": "rt_mr1",
    "rtmr2": "rt_mr2", "rtmr3": "rt_mr3", "report_data": "report_data",
}


def test_all_vectors_found() -> None:
    assert len(QUOTES) == 16, QUOTES


@pytest.mark.parametrize("name", QUOTES)
def test_fields_match_dcap_qvl(name: str) -> None:
    raw = load_quote(read(name))
    ours = parse_quote(raw)
    theirs = dcap_qvl.parse_quote(raw)
    h = theirs.header
    assert (ours.header.version, ours.header.att_key_type, ours.header.tee_type) == (
        h.version, h.attestation_key_type, h.tee_type)
    assert ours.header.qe_vendor_id == bytes(h.qe_vendor_id)
    assert ours.header.user_data == bytes(h.user_data)
    assert (ours.pck_chain_pem or b"").rstrip(b"\0") == bytes(theirs.cert_chain_pem_bytes())
    report = theirs.report
    if ours.td_report is not None:
        for mine, attr in TD_FIELDS.items():
            assert getattr(ours.td_report, mine) == bytes(getattr(report, attr)), mine
        if ours.body_type == 3:
            assert ours.td_report.tee_tcb_svn2 == bytes(report.tee_tcb_svn2)
            assert ours.td_report.mrservicetd == bytes(report.mr_service_td)
        else:
            assert ours.td_report.tee_tcb_svn2 is None
            assert ours.td_report.mrservicetd is None
    else:
        assert ours.sgx_report is not None
        for mine, attr in (("cpu_svn", "cpu_svn"), ("attributes", "attributes"),
                           ("mrenclave", "mr_enclave"), ("mrsigner", "mr_signer"),
                           ("report_data", "report_data")):
            assert getattr(ours.sgx_report, mine) == bytes(getattr(report, attr)), mine
    # QE report binds the attestation key and auth data (REFERENCE §2.1).
    import hashlib

    sig = ours.signature_data
    assert sig.qe_report.report_data[:32] == hashlib.sha256(
        sig.attestation_key + sig.qe_auth_data).digest()


def test_v5_td15_layout() -> None:
    q = parse_quote(read("dcap-qvl/tdx_quote_outdated"))
    assert (q.header.version, q.body_type, q.signed_size) == (5, 3, 702)
    assert q.td_report is not None
    assert q.td_report.mrservicetd == bytes(48)
    assert len(q.td_report.tee_tcb_svn2 or b"") == 16


def test_v4_and_sgx_layout() -> None:
    v4 = parse_quote(read("dcap-qvl/tdx_quote"))
    assert (v4.tee, v4.signed_size, v4.size, v4.body_type) == ("tdx", 632, 4936, 2)
    assert not v4.debug
    assert v4.td_report is not None
    assert v4.td_report.td_attributes.hex() == "0000001000000000"
    sgx = parse_quote(read("dcap-qvl/sgx_quote"))
    assert (sgx.tee, sgx.signed_size, sgx.size) == ("sgx", 432, 4600)
    assert sgx.signature_data.certification.cert_type == 5


def test_hex_input_forms() -> None:
    raw = read("dcap-qvl/tdx_quote")
    for form in (raw.hex(), "0x" + raw.hex(), raw.hex().upper(), "  " + raw.hex()[:200] + "\n"
                 + raw.hex()[200:] + "\n"):
        assert load_quote(form.encode()) == raw
        assert load_quote(form) == raw
    assert load_quote(raw) == raw


@pytest.mark.parametrize(("data", "message"), [
    (b"", "shorter than the 48-byte header"),
    (b"abc", "neither a binary DCAP quote nor hex"),
    (b"zz" * 40, "neither a binary DCAP quote nor hex"),
    ("é", "neither binary nor hex"),
    (struct.pack("<HHI", 4, 2, 0) + bytes(40), "not a DCAP quote"),
    (struct.pack("<HHI", 3, 2, 0x81) + bytes(40), "not a DCAP quote"),
])
def test_load_quote_rejects(data: bytes | str, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        load_quote(data)


def test_parse_rejects_malformed() -> None:
    raw = read("dcap-qvl/tdx_quote")
    q = parse_quote(raw)
    with pytest.raises(EvidenceError, match="truncated"):
        parse_quote(raw[: q.size - 1])
    with pytest.raises(EvidenceError, match="attestation key type"):
        parse_quote(raw[:2] + b"\x03\x00" + raw[4:])
    bad_len = bytearray(raw)
    struct.pack_into("<I", bad_len, 632, 10**6)
    with pytest.raises(EvidenceError, match="signature data says"):
        parse_quote(bytes(bad_len))
    wrong_type = bytearray(raw)
    struct.pack_into("<H", wrong_type, 764, 5)
    with pytest.raises(EvidenceError, match="certification data type 5"):
        parse_quote(bytes(wrong_type))
    v5 = bytearray(read("dcap-qvl/tdx_quote_outdated"))
    struct.pack_into("<H", v5, 48, 4)
    with pytest.raises(EvidenceError, match="body type 4"):
        parse_quote(bytes(v5))
    # Review R3: an SGX body in a TDX v5 quote, and a body size that lies.
    struct.pack_into("<H", v5, 48, 1)
    with pytest.raises(EvidenceError, match="body type 1"):
        parse_quote(bytes(v5))
    struct.pack_into("<HI", v5, 48, 3, 584)
    with pytest.raises(EvidenceError, match="must be 648 bytes"):
        parse_quote(bytes(v5))
    # Trailing zero padding is tolerated (real files carry it).
    assert parse_quote(raw + bytes(100)).size == q.size

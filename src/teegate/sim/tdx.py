"""Development Intel TDX: a generated Intel-shaped DCAP PKI, v4 quotes and their collateral.

The PKI mirrors Intel's: a self-signed P-256 root ("Intel SGX Root CA" shape), the PCK Platform
CA, a PCK leaf carrying the SGX extension (OID 1.2.840.113741.1.13.1: PPID, TCB with 16 CPUSVN
components + PCESVN + CPUSVN, PCE-ID, FMSPC, SGX type, PlatformInstanceID, Configuration), the
TCB signing certificate and both CRLs. Quotes use the real v4 binary layout (header, TD report
1.0, ECDSA signature data, certification data type 6 wrapping the QE report signed by the PCK
key and a type-5 PEM chain) and verify with ``dcap_qvl.verify_with_root_ca`` under this root,
so they exercise exactly the verifier code path of real quotes.

TCB status is a parameter on both sides: the collateral lists one TCB level per status, told
apart by the TDX late-microcode component (TEE_TCB_SVN[2]); ``quote(tcb_status=S)`` produces a
platform whose first matching level is S, and ``collateral(tcb_status=S)`` gives the top level
(the one an "UpToDate" quote matches) status S.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from teegate.errors import ConfigError
from teegate.sim import _der, _store

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
# A family-model-stepping value no real Intel platform uses, so collateral caches keyed by FMSPC
# can never mix development and real collateral.
DEV_FMSPC = bytes.fromhex("00DE7E000000")
DEV_PCE_ID = bytes(2)
DEV_CPUSVN = bytes([3, 3, 2, 2, 4, 1, 0, 5]) + bytes(8)
DEV_PCESVN = 11
TDX_MODULE_ISVSVN = 6
TDX_MODULE_MAJOR = 1
DEV_MRSEAM = hashlib.sha384(b"teegate development TDX module").digest()
DEV_QE_MRSIGNER = hashlib.sha256(b"teegate development TD quoting enclave signer").digest()
DEV_QE_MRENCLAVE = hashlib.sha256(b"teegate development TD quoting enclave").digest()
DEV_QE_ISVPRODID = 2
DEV_QE_ISVSVN = 8
DEV_QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
DEV_XFAM = bytes.fromhex("e702060000000000")
DEFAULT_MRTD = hashlib.sha384(b"teegate development MRTD").digest()
DEFAULT_RTMRS = tuple(hashlib.sha384(f"teegate development RTMR{i}".encode()).digest()
                      for i in range(4))
DEFAULT_MRCONFIGID = bytes(48)
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28

# TEE_TCB_SVN[2] (TDX late microcode SVN) that makes a platform match each level first.
TCB_STATUSES: dict[str, int] = {
    "UpToDate": 7,
    "SWHardeningNeeded": 6,
    "ConfigurationNeeded": 5,
    "ConfigurationAndSWHardeningNeeded": 4,
    "OutOfDate": 3,
    "OutOfDateConfigurationNeeded": 2,
    "Revoked": 1,
}
# Advisory IDs the development collateral attaches to each non-UpToDate level.
DEV_ADVISORIES: dict[str, tuple[str, ...]] = {
    "SWHardeningNeeded": ("INTEL-SA-DEV01",),
    "ConfigurationNeeded": ("INTEL-SA-DEV02",),
    "ConfigurationAndSWHardeningNeeded": ("INTEL-SA-DEV01", "INTEL-SA-DEV02"),
    "OutOfDate": ("INTEL-SA-DEV03",),
    "OutOfDateConfigurationNeeded": ("INTEL-SA-DEV02", "INTEL-SA-DEV03"),
    "Revoked": ("INTEL-SA-DEV04",),
}
_DAY = dt.timedelta(days=1)
_CDP_BASE = "https://dev-pki.teegate.invalid/sgx/certification/v4"


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ])


ROOT_NAME = _name("Intel SGX Root CA")
PCK_CA_NAME = _name("Intel SGX PCK Platform CA")
PCK_NAME = _name("Intel SGX PCK Certificate")
TCB_SIGNING_NAME = _name("Intel SGX TCB Signing")


def sgx_extension(
    *, ppid: bytes, cpusvn: bytes, pcesvn: int, pce_id: bytes, fmspc: bytes,
    platform_instance_id: bytes,
) -> bytes:
    """DER of the SGX extension as Intel's PCK certificates for a Platform CA carry it."""
    base = SGX_EXTENSION_OID

    def entry(sub: str, value: bytes) -> bytes:
        return _der.sequence(_der.oid(f"{base}.{sub}"), value)

    tcb = [entry(f"2.{i + 1}", _der.integer(cpusvn[i])) for i in range(16)]
    tcb.append(entry("2.17", _der.integer(pcesvn)))
    tcb.append(entry("2.18", _der.octet_string(cpusvn)))
    config = _der.sequence(*(entry(f"7.{i}", _der.boolean(True)) for i in (1, 2, 3)))
    return _der.sequence(
        entry("1", _der.octet_string(ppid)),
        entry("2", _der.sequence(*tcb)),
        entry("3", _der.octet_string(pce_id)),
        entry("4", _der.octet_string(fmspc)),
        entry("5", _der.enumerated(1)),  # SGX type: Scalable
        entry("6", _der.octet_string(platform_instance_id)),
        entry("7", config),
    )


def _rs(key: ec.EllipticCurvePrivateKey, data: bytes, size: int) -> bytes:
    """ECDSA signature as raw big-endian r || s, the encoding DCAP uses everywhere."""
    hash_alg: hashes.HashAlgorithm = hashes.SHA256() if size == 32 else hashes.SHA384()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_alg)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_len(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise ConfigError(f"development TDX: {name} must be {size} bytes")
    return bytes(value)


@dataclass(frozen=True)
class _Keys:
    root: ec.EllipticCurvePrivateKey
    pck_ca: ec.EllipticCurvePrivateKey
    pck: ec.EllipticCurvePrivateKey
    tcb_signing: ec.EllipticCurvePrivateKey
    attestation: ec.EllipticCurvePrivateKey


class DevTdx:
    """A development TDX platform: quotes and collateral under a generated, stored PKI."""

    def __init__(self, keys: _Keys, certs: dict[str, x509.Certificate]) -> None:
        self._keys = keys
        self._certs = certs
        self.root_pem: str = _store.pem(certs["root"])
        self.root_der: bytes = certs["root"].public_bytes(serialization.Encoding.DER)
        self.fmspc: bytes = DEV_FMSPC
        pub = keys.attestation.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._attestation_key = pub[1:]
        self._qe_id = hashlib.sha256(b"teegate dev QE id" + pub).digest()[:16]
        self._chain_pem = (
            _store.pem(certs["pck"]) + _store.pem(certs["pck_ca"]) + self.root_pem
        ).encode("ascii")

    # ----------------------------------------------------------------- storage
    @classmethod
    def load_or_create(cls, directory: Path) -> DevTdx:
        """Load the TDX development PKI under ``directory/tdx``, generating it on first use."""
        return _store.load_or_create(Path(directory), "tdx", _create, _load)

    # ------------------------------------------------------------------ quotes
    def quote(
        self,
        report_data: bytes,
        *,
        mrtd: bytes | None = None,
        rtmrs: Sequence[bytes] | None = None,
        mrconfigid: bytes | None = None,
        debug: bool = False,
        tcb_status: str = "UpToDate",
    ) -> bytes:
        """A v4 TDX quote; ``report_data`` (at most 64 bytes) is right-padded with zeros."""
        if len(report_data) > 64:
            raise ConfigError("development TDX: report_data is at most 64 bytes")
        if tcb_status not in TCB_STATUSES:
            raise ConfigError(
                f"development TDX: unknown TCB status {tcb_status!r}; known: {list(TCB_STATUSES)}"
            )
        regs = tuple(rtmrs) if rtmrs is not None else DEFAULT_RTMRS
        if len(regs) != 4:
            raise ConfigError("development TDX: rtmrs must be 4 values")
        td_attributes = TD_ATTR_SEPT_VE_DISABLE | (TD_ATTR_DEBUG if debug else 0)
        tee_tcb_svn = bytes([TDX_MODULE_ISVSVN, TDX_MODULE_MAJOR, TCB_STATUSES[tcb_status]])
        body = b"".join([
            tee_tcb_svn.ljust(16, b"\0"),
            DEV_MRSEAM,
            bytes(48),  # MRSIGNERSEAM: zero for Intel's own module
            bytes(8),  # SEAMATTRIBUTES
            struct.pack("<Q", td_attributes),
            DEV_XFAM,
            _check_len("mrtd", mrtd if mrtd is not None else DEFAULT_MRTD, 48),
            _check_len("mrconfigid", mrconfigid if mrconfigid is not None
                       else DEFAULT_MRCONFIGID, 48),
            bytes(48),  # MROWNER
            bytes(48),  # MROWNERCONFIG
            *(_check_len(f"rtmr{i}", r, 48) for i, r in enumerate(regs)),
            bytes(report_data).ljust(64, b"\0"),
        ])
        header = struct.pack("<HHI4s", 4, 2, 0x81, bytes(4)) + INTEL_QE_VENDOR_ID
        header += self._qe_id + bytes(4)
        signed = header + body
        signature = _rs(self._keys.attestation, signed, 32)
        return signed + self._signature_data(signature)

    def _signature_data(self, signature: bytes) -> bytes:
        auth_data = bytes(range(32))
        binding = hashlib.sha256(self._attestation_key + auth_data).digest()
        qe_report = b"".join([
            DEV_CPUSVN,
            struct.pack("<I", 0),  # MISCSELECT
            bytes(28),
            DEV_QE_ATTRIBUTES,
            DEV_QE_MRENCLAVE,
            bytes(32),
            DEV_QE_MRSIGNER,
            bytes(96),
            struct.pack("<HH", DEV_QE_ISVPRODID, DEV_QE_ISVSVN),
            bytes(60),
            binding.ljust(64, b"\0"),
        ])
        qe_signature = _rs(self._keys.pck, qe_report, 32)
        # Real quotes end the PEM chain with a NUL byte inside the type-5 length.
        chain = self._chain_pem + b"\0"
        inner = b"".join([
            qe_report,
            qe_signature,
            struct.pack("<H", len(auth_data)),
            auth_data,
            struct.pack("<HI", 5, len(chain)),
            chain,
        ])
        sig_data = signature + self._attestation_key + struct.pack("<HI", 6, len(inner)) + inner
        return struct.pack("<I", len(sig_data)) + sig_data

    # -------------------------------------------------------------- collateral
    def collateral(
        self,
        tcb_status: str = "UpToDate",
        *,
        now: int | None = None,
        advisory_ids: Sequence[str] | None = None,
        revoke_pck: bool = False,
    ) -> str:
        """dcap-qvl ``QuoteCollateralV3`` JSON valid from ``now`` - 30 days to ``now`` + 30 days.

        ``tcb_status`` is the status of the level an "UpToDate" quote matches; its advisory IDs
        default to the development ones for that status. ``revoke_pck`` lists the PCK leaf in
        the PCK CRL.
        """
        if tcb_status not in TCB_STATUSES:
            raise ConfigError(
                f"development TDX: unknown TCB status {tcb_status!r}; known: {list(TCB_STATUSES)}"
            )
        at = dt.datetime.fromtimestamp(int(time.time()) if now is None else now, dt.UTC)
        issue, next_update = at - 30 * _DAY, at + 30 * _DAY
        top_advisories = (
            tuple(advisory_ids) if advisory_ids is not None
            else DEV_ADVISORIES.get(tcb_status, ())
        )
        tcb_info = self._tcb_info(issue, next_update, tcb_status, top_advisories)
        qe_identity = self._qe_identity(issue, next_update)
        root_pem = self.root_pem
        tcb_chain = _store.pem(self._certs["tcb_signing"]) + root_pem
        revoked = [self._certs["pck"].serial_number] if revoke_pck else []
        data = {
            "pck_crl_issuer_chain": _store.pem(self._certs["pck_ca"]) + root_pem,
            "root_ca_crl": self._crl(
                self._keys.root, ROOT_NAME, issue, next_update, []
            ).hex(),
            "pck_crl": self._crl(
                self._keys.pck_ca, PCK_CA_NAME, issue, next_update, revoked
            ).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": _rs(self._keys.tcb_signing, tcb_info.encode(), 32).hex(),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": _rs(
                self._keys.tcb_signing, qe_identity.encode(), 32
            ).hex(),
        }
        return json.dumps(data)

    def _tcb_info(
        self, issue: dt.datetime, next_update: dt.datetime, top_status: str,
        top_advisories: Sequence[str],
    ) -> str:
        sgx_components = [{"svn": DEV_CPUSVN[i]} for i in range(16)]
        levels = []
        for status, svn in TCB_STATUSES.items():
            shown = top_status if status == "UpToDate" else status
            advisories = top_advisories if status == "UpToDate" else DEV_ADVISORIES[status]
            tdx_components: list[dict[str, object]] = [{"svn": 0} for _ in range(16)]
            tdx_components[0] = {"svn": 2, "category": "OS/VMM", "type": "TDX Module"}
            tdx_components[1] = {"svn": 0, "category": "OS/VMM", "type": "TDX Module"}
            tdx_components[2] = {
                "svn": svn, "category": "OS/VMM", "type": "TDX Late Microcode Update"
            }
            level: dict[str, object] = {
                "tcb": {
                    "sgxtcbcomponents": sgx_components,
                    "pcesvn": DEV_PCESVN,
                    "tdxtcbcomponents": tdx_components,
                },
                "tcbDate": _ts(issue - (TCB_STATUSES["UpToDate"] - svn) * 30 * _DAY),
                "tcbStatus": shown,
            }
            if advisories:
                level["advisoryIDs"] = list(advisories)
            levels.append(level)
        module = {
            "mrsigner": "00" * 48,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
        info = {
            "id": "TDX",
            "version": 3,
            "issueDate": _ts(issue),
            "nextUpdate": _ts(next_update),
            "fmspc": DEV_FMSPC.hex().upper(),
            "pceId": DEV_PCE_ID.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": module,
            "tdxModuleIdentities": [{
                "id": f"TDX_{TDX_MODULE_MAJOR:02X}",
                **module,
                "tcbLevels": [{
                    "tcb": {"isvsvn": TDX_MODULE_ISVSVN},
                    "tcbDate": _ts(issue),
                    "tcbStatus": "UpToDate",
                }],
            }],
            "tcbLevels": levels,
        }
        return json.dumps(info, separators=(",", ":"))

    def _qe_identity(self, issue: dt.datetime, next_update: dt.datetime) -> str:
        identity = {
            "id": "TD_QE",
            "version": 2,
            "issueDate": _ts(issue),
            "nextUpdate": _ts(next_update),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": DEV_QE_MRSIGNER.hex().upper(),
            "isvprodid": DEV_QE_ISVPRODID,
            "tcbLevels": [{
                "tcb": {"isvsvn": DEV_QE_ISVSVN},
                "tcbDate": _ts(issue),
                "tcbStatus": "UpToDate",
            }],
        }
        return json.dumps(identity, separators=(",", ":"))

    @staticmethod
    def _crl(
        key: ec.EllipticCurvePrivateKey, issuer: x509.Name, this_update: dt.datetime,
        next_update: dt.datetime, revoked: Sequence[int],
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer)
            .last_update(this_update)
            .next_update(next_update)
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(_store.aki(key.public_key()), critical=False)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# ------------------------------------------------------------------ generation
def _create(path: Path) -> None:
    keys = {n: ec.generate_private_key(ec.SECP256R1())
            for n in ("root", "pck_ca", "pck", "tcb_signing", "attestation")}
    pub = {n: k.public_key() for n, k in keys.items()}
    now = _store.utcnow()

    def cdp(url: str) -> x509.CRLDistributionPoints:
        return x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url)],
            relative_name=None, reasons=None, crl_issuer=None,
        )])

    root_cdp = cdp("https://dev-pki.teegate.invalid/IntelSGXRootCA.der")
    ca_usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )
    leaf_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    sha256 = hashes.SHA256()
    root = _store.build_cert(
        subject=ROOT_NAME, issuer=ROOT_NAME, public_key=pub["root"], signing_key=keys["root"],
        not_before=now - 365 * _DAY, not_after=now + 25 * 365 * _DAY, hash_alg=sha256,
        extensions=[
            (_store.aki(pub["root"]), False), (root_cdp, False), (_store.ski(pub["root"]), False),
            (ca_usage, True), (x509.BasicConstraints(ca=True, path_length=1), True),
        ],
    )
    pck_ca = _store.build_cert(
        subject=PCK_CA_NAME, issuer=ROOT_NAME, public_key=pub["pck_ca"],
        signing_key=keys["root"], not_before=now - 365 * _DAY,
        not_after=now + 15 * 365 * _DAY, hash_alg=sha256,
        extensions=[
            (_store.aki(pub["root"]), False), (root_cdp, False),
            (_store.ski(pub["pck_ca"]), False), (ca_usage, True),
            (x509.BasicConstraints(ca=True, path_length=0), True),
        ],
    )
    extension = sgx_extension(
        ppid=os.urandom(16), cpusvn=DEV_CPUSVN, pcesvn=DEV_PCESVN, pce_id=DEV_PCE_ID,
        fmspc=DEV_FMSPC, platform_instance_id=os.urandom(16),
    )
    pck = _store.build_cert(
        subject=PCK_NAME, issuer=PCK_CA_NAME, public_key=pub["pck"], signing_key=keys["pck_ca"],
        not_before=now - 365 * _DAY, not_after=now + 7 * 365 * _DAY, hash_alg=sha256,
        extensions=[
            (_store.aki(pub["pck_ca"]), False),
            (cdp(f"{_CDP_BASE}/pckcrl?ca=platform&encoding=der"), False),
            (_store.ski(pub["pck"]), False), (leaf_usage, True),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), extension),
             False),
        ],
    )
    tcb_signing = _store.build_cert(
        subject=TCB_SIGNING_NAME, issuer=ROOT_NAME, public_key=pub["tcb_signing"],
        signing_key=keys["root"], not_before=now - 365 * _DAY,
        not_after=now + 7 * 365 * _DAY, hash_alg=sha256,
        extensions=[
            (_store.aki(pub["root"]), False), (root_cdp, False),
            (_store.ski(pub["tcb_signing"]), False), (leaf_usage, True),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ],
    )
    for name, key in keys.items():
        _store.write_key(path / f"{name}.key", key)
    for name, cert in (("root", root), ("pck_ca", pck_ca), ("pck", pck),
                       ("tcb_signing", tcb_signing)):
        _store.write_cert(path / f"{name}.pem", cert)


def _load(path: Path) -> DevTdx:
    keys = _Keys(**{n: _store.read_ec_key(path / f"{n}.key")
                    for n in ("root", "pck_ca", "pck", "tcb_signing", "attestation")})
    certs = {n: _store.read_cert(path / f"{n}.pem", getattr(keys, n))
             for n in ("root", "pck_ca", "pck", "tcb_signing")}
    return DevTdx(keys, certs)

"""Development AMD SEV-SNP: a generated ARK/ASK/VCEK chain and signed 1184-byte reports.

Shaped like AMD's Genoa chain: ARK and ASK are RSA-4096 and sign with RSA-PSS (SHA-384,
MGF1-SHA-384, salt 48); the VCEK is P-384 and carries AMD's extensions under
1.3.6.1.4.1.3704.1 (struct version, product name, bl/tee/snp/ucode SPLs, hwID) exactly as
KDS-issued VCEKs do. Reports follow the ABI layout (versions 3 and 5) and are signed with the
VCEK over bytes 0x000-0x29F, r and s little-endian and zero-extended to 72 bytes at 0x2A0.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from teegate.errors import ConfigError
from teegate.sim import _der, _store

PRODUCT = "Genoa"
AMD_OID = "1.3.6.1.4.1.3704.1"
REPORT_SIZE = 0x4A0
SIGNATURE_OFFSET = 0x2A0
# Genoa TCB_VERSION layout: byte 0 boot loader, 1 TEE, 2-5 reserved, 6 SNP, 7 microcode.
DEV_TCB = {"bootloader": 10, "tee": 0, "snp": 25, "microcode": 84}
DEV_CPUID = bytes([0x19, 0x11, 0x01])  # family 0x19, model 0x11 (Genoa), stepping 1
DEV_BUILD = bytes([0x2B, 0x37, 0x01, 0x00])  # build, minor, major, reserved
DEFAULT_MEASUREMENT = hashlib.sha384(b"teegate development SNP launch measurement").digest()
DEFAULT_HOST_DATA = bytes(32)
DEFAULT_POLICY = 0x30000  # SMT allowed, reserved bit 17 set, ABI 0.0
POLICY_DEBUG = 1 << 19
PLATFORM_INFO = 0x25  # SMT_EN, ECC_EN, ALIAS_CHECK_COMPLETE
_DAY = dt.timedelta(days=1)


def tcb_bytes(bootloader: int, tee: int, snp: int, microcode: int) -> bytes:
    """Genoa-layout TCB_VERSION (8 bytes)."""
    return bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])


DEV_REPORTED_TCB = tcb_bytes(**DEV_TCB)


def _amd_name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


ARK_NAME = _amd_name(f"ARK-{PRODUCT}")
ASK_NAME = _amd_name(f"SEV-{PRODUCT}")
VCEK_NAME = _amd_name("SEV-VCEK")


def vcek_extensions(chip_id: bytes, tcb: dict[str, int]) -> list[x509.UnrecognizedExtension]:
    """AMD's VCEK extensions, in the order KDS emits them (reserved SPLs 3.4-3.7 are 0)."""

    def ext(sub: str, value: bytes) -> x509.UnrecognizedExtension:
        return x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{AMD_OID}.{sub}"), value)

    return [
        ext("1", _der.integer(0)),  # struct version: 0 for Milan/Genoa
        ext("2", _der.ia5_string(PRODUCT)),
        ext("3.1", _der.integer(tcb["bootloader"])),
        ext("3.2", _der.integer(tcb["tee"])),
        *(ext(f"3.{i}", _der.integer(0)) for i in (4, 5, 6, 7)),
        ext("3.3", _der.integer(tcb["snp"])),
        ext("3.8", _der.integer(tcb["microcode"])),
        ext("4", chip_id),  # hwID: the raw 64-byte CHIP_ID, not DER-wrapped
    ]


def _fixed(name: str, value: bytes | None, default: bytes, size: int) -> bytes:
    v = default if value is None else value
    if not isinstance(v, bytes | bytearray) or len(v) > size:
        raise ConfigError(f"development SNP: {name} must be at most {size} bytes")
    return bytes(v).ljust(size, b"\0")


@dataclass(frozen=True)
class _Keys:
    ark: rsa.RSAPrivateKey
    ask: rsa.RSAPrivateKey
    vcek: ec.EllipticCurvePrivateKey


class DevSnp:
    """A development SEV-SNP platform (Genoa-shaped) with its generated, stored AMD chain."""

    product: str = PRODUCT

    def __init__(self, keys: _Keys, certs: dict[str, x509.Certificate], chip_id: bytes) -> None:
        self._keys = keys
        self._certs = certs
        self.chip_id: bytes = chip_id
        self.reported_tcb: bytes = DEV_REPORTED_TCB
        self.ark_pem: str = _store.pem(certs["ark"])
        self.ask_pem: str = _store.pem(certs["ask"])
        self.vcek_pem: str = _store.pem(certs["vcek"])

    @classmethod
    def load_or_create(cls, directory: Path) -> DevSnp:
        """Load the SNP development PKI under ``directory/snp``, generating it on first use
        (two RSA-4096 keys: about a second)."""
        return _store.load_or_create(Path(directory), "snp", _create, _load)

    def cert_chain_pem(self) -> bytes:
        """VCEK, ASK, ARK as concatenated PEM."""
        return (self.vcek_pem + self.ask_pem + self.ark_pem).encode("ascii")

    def crl(self, *, revoke: tuple[str, ...] = (), now: int | None = None,
            days: int = 7) -> bytes:
        """The ARK's CRL (DER, RSA-PSS SHA-384 like AMD's) valid ``days`` from ``now``,
        listing the certificates named in ``revoke`` ("ask", "vcek")."""
        start = dt.datetime.fromtimestamp(
            int(dt.datetime.now(dt.UTC).timestamp()) if now is None else now, dt.UTC)
        b = (x509.CertificateRevocationListBuilder().issuer_name(self._certs["ark"].subject)
             .last_update(start).next_update(start + dt.timedelta(days=days)))
        for role in revoke:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(self._certs[role].serial_number).revocation_date(start).build())
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        return b.sign(self._keys.ark, hashes.SHA384(), rsa_padding=pss).public_bytes(
            Encoding.DER)

    def report(
        self,
        report_data: bytes,
        *,
        version: int = 3,
        measurement: bytes | None = None,
        host_data: bytes | None = None,
        vmpl: int = 0,
        debug: bool = False,
        policy: int | None = None,
        guest_svn: int = 0,
        reported_tcb: bytes | None = None,
    ) -> bytes:
        """A signed 1184-byte ATTESTATION_REPORT.

        ``policy`` overrides the guest policy word (``debug`` then ORs in bit 19);
        ``reported_tcb`` overrides REPORTED_TCB/CURRENT_TCB, e.g. to disagree with the VCEK.
        """
        if version not in (2, 3, 5):
            raise ConfigError("development SNP: version must be 2, 3 or 5")
        if not 0 <= vmpl <= 3:
            raise ConfigError("development SNP: vmpl must be 0..3")
        guest_policy = (DEFAULT_POLICY if policy is None else policy) | (
            POLICY_DEBUG if debug else 0
        )
        tcb = _fixed("reported_tcb", reported_tcb, self.reported_tcb, 8)
        r = bytearray(REPORT_SIZE)
        struct.pack_into("<IIQ", r, 0x000, version, guest_svn, guest_policy)
        struct.pack_into("<II", r, 0x030, vmpl, 1)  # VMPL, SIGNATURE_ALGO = ECDSA P-384
        r[0x038:0x040] = tcb  # CURRENT_TCB
        struct.pack_into("<Q", r, 0x040, PLATFORM_INFO)
        struct.pack_into("<I", r, 0x048, 0)  # signer info: VCEK, chip key not masked
        r[0x050:0x090] = _fixed("report_data", report_data, b"", 64)
        r[0x090:0x0C0] = _fixed("measurement", measurement, DEFAULT_MEASUREMENT, 48)
        r[0x0C0:0x0E0] = _fixed("host_data", host_data, DEFAULT_HOST_DATA, 32)
        r[0x140:0x160] = os.urandom(32)  # REPORT_ID
        r[0x160:0x180] = b"\xff" * 32  # REPORT_ID_MA: no migration agent
        r[0x180:0x188] = tcb  # REPORTED_TCB
        if version >= 3:
            r[0x188:0x18B] = DEV_CPUID
        r[0x1A0:0x1E0] = self.chip_id
        r[0x1E0:0x1E8] = tcb  # COMMITTED_TCB
        r[0x1E8:0x1EC] = DEV_BUILD  # CURRENT build/minor/major
        r[0x1EC:0x1F0] = DEV_BUILD  # COMMITTED
        r[0x1F0:0x1F8] = tcb  # LAUNCH_TCB
        if version >= 5:
            struct.pack_into("<QQ", r, 0x1F8, 1, 1)  # LAUNCH/CURRENT_MIT_VECTOR
        der = self._keys.vcek.sign(bytes(r[:SIGNATURE_OFFSET]), ec.ECDSA(hashes.SHA384()))
        sig_r, sig_s = decode_dss_signature(der)
        r[0x2A0:0x2E8] = sig_r.to_bytes(72, "little")
        r[0x2E8:0x330] = sig_s.to_bytes(72, "little")
        return bytes(r)


def _create(path: Path) -> None:
    ark = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    ask = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    vcek = ec.generate_private_key(ec.SECP384R1())
    chip_id = os.urandom(64)
    now = _store.utcnow()
    sha384 = hashes.SHA384()

    def usage(*, sign: bool, crl: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=sign, crl_sign=crl,
            encipher_only=False, decipher_only=False,
        )

    crl = x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(
            f"https://dev-pki.teegate.invalid/vcek/v1/{PRODUCT}/crl")],
        relative_name=None, reasons=None, crl_issuer=None,
    )])
    ark_cert = _store.build_cert(
        subject=ARK_NAME, issuer=ARK_NAME, public_key=ark.public_key(), signing_key=ark,
        not_before=now - 365 * _DAY, not_after=now + 25 * 365 * _DAY, hash_alg=sha384,
        rsa_pss=True, extensions=[
            (usage(sign=True, crl=True), True), (_store.ski(ark.public_key()), False),
            (x509.BasicConstraints(ca=True, path_length=None), True), (crl, False),
        ],
    )
    ask_cert = _store.build_cert(
        subject=ASK_NAME, issuer=ARK_NAME, public_key=ask.public_key(), signing_key=ark,
        not_before=now - 365 * _DAY, not_after=now + 25 * 365 * _DAY, hash_alg=sha384,
        rsa_pss=True, extensions=[
            (_store.ski(ask.public_key()), False), (_store.aki(ark.public_key()), False),
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (usage(sign=True, crl=False), True), (crl, False),
        ],
    )
    vcek_cert = _store.build_cert(
        subject=VCEK_NAME, issuer=ASK_NAME, public_key=vcek.public_key(), signing_key=ask,
        not_before=now - 365 * _DAY, not_after=now + 7 * 365 * _DAY, hash_alg=sha384,
        rsa_pss=True, extensions=[(e, False) for e in vcek_extensions(chip_id, DEV_TCB)],
    )
    _store.write_key(path / "ark.key", ark)
    _store.write_key(path / "ask.key", ask)
    _store.write_key(path / "vcek.key", vcek)
    for name, cert in (("ark", ark_cert), ("ask", ask_cert), ("vcek", vcek_cert)):
        _store.write_cert(path / f"{name}.pem", cert)


def _load(path: Path) -> DevSnp:
    keys = _Keys(
        ark=_store.read_rsa_key(path / "ark.key"),
        ask=_store.read_rsa_key(path / "ask.key"),
        vcek=_store.read_ec_key(path / "vcek.key"),
    )
    certs = {n: _store.read_cert(path / f"{n}.pem", getattr(keys, n))
             for n in ("ark", "ask", "vcek")}
    try:
        hwid = certs["vcek"].extensions.get_extension_for_oid(
            x509.ObjectIdentifier(f"{AMD_OID}.4")
        ).value
    except x509.ExtensionNotFound as e:
        raise ValueError("vcek.pem has no hwID extension") from e
    if not isinstance(hwid, x509.UnrecognizedExtension) or len(hwid.value) != 64:
        raise ValueError("vcek.pem has no 64-byte hwID extension")
    return DevSnp(keys, certs, hwid.value)

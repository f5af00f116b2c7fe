"""Development NVIDIA Hopper GPUs: SPDM GET_MEASUREMENTS evidence under a generated device PKI.

The evidence is what NVML's ``nvmlDeviceGetConfComputeGpuAttestationReport`` returns: the
37-byte SPDM 1.1 GET_MEASUREMENTS request (signature requested, all blocks, 32-byte nonce,
slot 0) followed by the MEASUREMENTS response (64 blocks of 48-byte SHA-384 digests, responder
nonce, opaque TLVs with driver/VBIOS versions and the FWID, then a raw P-384 r || s signature
over request || response-before-signature). The chain is shaped like NVIDIA's five
certificates: "NVIDIA Device Identity CA" -> "NVIDIA GH100 Identity" -> "NVIDIA GH100
Provisioner ICA 1" -> per-GPU "GH100 A01 GSP BROM" -> "GH100 A01 GSP FMC LF", whose TCG DICE
TcbInfo extension (2.23.133.5.4.1) carries the FWID that the evidence repeats (opaque type 20).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from teegate.errors import ConfigError
from teegate.sim import _der, _store

N_GPUS = 8  # one HGX board's worth, generated up front
N_BLOCKS = 64
TCB_INFO_OID = "2.23.133.5.4.1"
NVIDIA_SAN_OID = "1.3.6.1.4.1.412.274.1"
SHA384_OID = "2.16.840.1.101.3.4.2.2"
DEFAULT_DRIVER_VERSION = "550.90.07"
DEFAULT_VBIOS_VERSION = "96.00.9F.00.01"
DEFAULT_MEASUREMENTS = tuple(
    hashlib.sha384(f"teegate development GPU measurement {i}".encode()).digest()
    for i in range(N_BLOCKS)
)
# Opaque data TLV types (nvtrust ``spdm_msrt_resp_msg.py``).
OPAQUE_DRIVER_VERSION = 3
OPAQUE_GPU_INFO = 4
OPAQUE_VBIOS_VERSION = 6
OPAQUE_NVDEC0_STATUS = 11
OPAQUE_MSRSCNT = 12
OPAQUE_CPRINFO = 13
OPAQUE_BOARD_ID = 14
OPAQUE_CHIP_SKU = 15
OPAQUE_CHIP_SKU_MOD = 16
OPAQUE_PROJECT = 17
OPAQUE_PROJECT_SKU = 18
OPAQUE_PROJECT_SKU_MOD = 19
OPAQUE_FWID = 20
OPAQUE_PROTECTED_PCIE_STATUS = 21
_END_OF_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
_DAY = dt.timedelta(days=1)


def encode_vbios_version(version: str) -> bytes:
    """``96.00.9F.00.01`` -> the 8 opaque bytes NVIDIA uses (``00 9f 00 96 01 00 00 00``)."""
    try:
        parts = bytes(int(p, 16) for p in version.split("."))
    except ValueError:
        parts = b""
    if len(parts) != 5:
        raise ConfigError(f"development GPU: VBIOS version {version!r} is not like 96.00.9F.00.01")
    return bytes(reversed(parts[:4])) + parts[4:] + bytes(3)


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


ROOT_NAME = _name((NameOID.COMMON_NAME, "NVIDIA Device Identity CA"),
                  (NameOID.ORGANIZATION_NAME, "NVIDIA"))
IDENTITY_NAME = _name((NameOID.COMMON_NAME, "NVIDIA GH100 Identity"),
                      (NameOID.ORGANIZATION_NAME, "NVIDIA Corporation"))
ICA_NAME = _name((NameOID.COMMON_NAME, "NVIDIA GH100 Provisioner ICA 1"),
                 (NameOID.ORGANIZATION_NAME, "NVIDIA Corporation"),
                 (NameOID.COUNTRY_NAME, "US"))


def _device_name(serial: str, cn: str) -> x509.Name:
    return _name((NameOID.SERIAL_NUMBER, serial), (NameOID.COUNTRY_NAME, "US"),
                 (NameOID.ORGANIZATION_NAME, "NVIDIA Corporation"), (NameOID.COMMON_NAME, cn))


def tcb_info_extension(public_key: ec.EllipticCurvePublicKey, fwid: bytes) -> bytes:
    """DER of the FMC leaf's TcbInfo value as NVIDIA's certificates carry it: version 1, the
    subject public key, and the FWID as a SHA-384 digest (the last 48 bytes)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _der.sequence(
        _der.integer(1), spki, _der.sequence(_der.oid(SHA384_OID), _der.octet_string(fwid))
    )


class DevGpu:
    """Development Hopper GPUs (indices 0..7) with a generated, stored NVIDIA-shaped chain."""

    def __init__(
        self,
        ca_certs: list[x509.Certificate],
        devices: list[tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]],
        fwids: list[bytes],
    ) -> None:
        self._ca_pem = "".join(_store.pem(c) for c in ca_certs)  # ICA, identity, root
        self._devices = devices
        self._fwids = fwids
        self.root_pem: str = _store.pem(ca_certs[-1])
        self.count: int = len(devices)

    @classmethod
    def load_or_create(cls, directory: Path) -> DevGpu:
        """Load the GPU development PKI under ``directory/gpu``, generating it on first use."""
        return _store.load_or_create(Path(directory), "gpu", _create, _load)

    def _device(
        self, index: int
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, x509.Certificate]:
        if not 0 <= index < self.count:
            raise ConfigError(f"development GPU: index must be 0..{self.count - 1}")
        return self._devices[index]

    def cert_chain_pem(self, index: int = 0) -> bytes:
        """Leaf (FMC), BROM, ICA, identity, root as concatenated PEM, as NVML hands it out."""
        _, leaf, brom = self._device(index)
        return (_store.pem(leaf) + _store.pem(brom) + self._ca_pem).encode("ascii")

    def fwid(self, index: int = 0) -> bytes:
        self._device(index)
        return self._fwids[index]

    def evidence(
        self,
        nonce: bytes,
        *,
        index: int = 0,
        measurements: Sequence[bytes] | None = None,
        driver_version: str = DEFAULT_DRIVER_VERSION,
        vbios_version: str = DEFAULT_VBIOS_VERSION,
        with_fwid: bool = True,
    ) -> bytes:
        """SPDM GET_MEASUREMENTS request || signed response for GPU ``index``; without
        ``with_fwid`` the opaque data carries no FWID, as older drivers' evidence."""
        key, _, _ = self._device(index)
        if len(nonce) != 32:
            raise ConfigError("development GPU: the SPDM nonce must be 32 bytes")
        values = tuple(measurements) if measurements is not None else DEFAULT_MEASUREMENTS
        if len(values) != N_BLOCKS or any(len(v) != 48 for v in values):
            raise ConfigError(f"development GPU: measurements must be {N_BLOCKS} x 48 bytes")
        request = bytes([0x11, 0xE0, 0x01, 0xFF]) + bytes(nonce) + b"\x00"
        record = b"".join(
            bytes([i + 1, 1]) + struct.pack("<H", 51) + b"\x01" + struct.pack("<H", 48) + v
            for i, v in enumerate(values)
        )
        opaque = b"".join(
            struct.pack("<HH", t, len(v)) + v
            for t, v in (
                (OPAQUE_VBIOS_VERSION, encode_vbios_version(vbios_version)),
                (OPAQUE_BOARD_ID, bytes.fromhex("b1030000")),
                (OPAQUE_CHIP_SKU, b"882".ljust(9, b"\0")),
                (OPAQUE_CHIP_SKU_MOD, b"0".ljust(5, b"\0")),
                (OPAQUE_PROJECT, b"1010\0"),
                (OPAQUE_PROJECT_SKU, b"0200\0"),
                (OPAQUE_PROJECT_SKU_MOD, bytes(2)),
                (OPAQUE_DRIVER_VERSION, driver_version.encode("ascii") + b"\0"),
                (OPAQUE_GPU_INFO, bytes.fromhex("8001000000000000")),
                (OPAQUE_MSRSCNT, struct.pack(f"<{N_BLOCKS}I", *([1] * N_BLOCKS))),
                (OPAQUE_CPRINFO, bytes.fromhex("00c00100")),
                (OPAQUE_NVDEC0_STATUS, b"\x55"),
                (OPAQUE_FWID, self._fwids[index]),
                (OPAQUE_PROTECTED_PCIE_STATUS, b"\x55"),
            )
            if with_fwid or t != OPAQUE_FWID
        )
        response = b"".join([
            bytes([0x11, 0x60, 0x00, 0x00, N_BLOCKS]),
            len(record).to_bytes(3, "little"),
            record,
            os.urandom(32),  # responder nonce
            struct.pack("<H", len(opaque)),
            opaque,
        ])
        r, s = decode_dss_signature(key.sign(request + response, ec.ECDSA(hashes.SHA384())))
        return request + response + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def nvidia_payload(
        self,
        nonce: bytes,
        n_gpus: int = 1,
        *,
        measurements: Sequence[bytes] | None = None,
        driver_version: str = DEFAULT_DRIVER_VERSION,
        vbios_version: str = DEFAULT_VBIOS_VERSION,
    ) -> str:
        """The provider ``nvidia_payload`` JSON string (the NRAS request body): ``nonce``
        (hex), ``arch``, and per GPU base64 SPDM evidence plus base64 PEM chain."""
        if not 1 <= n_gpus <= self.count:
            raise ConfigError(f"development GPU: n_gpus must be 1..{self.count}")
        evidence_list = [
            {
                "evidence": base64.b64encode(self.evidence(
                    nonce, index=i, measurements=measurements,
                    driver_version=driver_version, vbios_version=vbios_version,
                )).decode("ascii"),
                "certificate": base64.b64encode(self.cert_chain_pem(i)).decode("ascii"),
            }
            for i in range(n_gpus)
        ]
        return json.dumps(
            {"nonce": bytes(nonce).hex(), "arch": "HOPPER", "evidence_list": evidence_list}
        )


def _create(path: Path) -> None:
    now = _store.utcnow()
    sha384 = hashes.SHA384()

    def usage(*, sign: bool, crl: bool, digital: bool = False) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=digital, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=sign, crl_sign=crl,
            encipher_only=False, decipher_only=False,
        )

    def ca_exts(
        pub: ec.EllipticCurvePublicKey, issuer_pub: ec.EllipticCurvePublicKey, level: str | None
    ) -> list[tuple[x509.ExtensionType, bool]]:
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (usage(sign=True, crl=True), True),
        ]
        if level is not None:
            exts.append((x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(
                    f"http://dev-pki.teegate.invalid/crl/{level}.crl")],
                relative_name=None, reasons=None, crl_issuer=None)]), False))
            exts.append((x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.oid.AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier("http://dev-pki.teegate.invalid/ocsp"))]), False))
        exts += [(_store.ski(pub), False), (_store.aki(issuer_pub), False)]
        return exts

    keys = {n: ec.generate_private_key(ec.SECP384R1()) for n in ("root", "identity", "ica")}
    pub = {n: k.public_key() for n, k in keys.items()}
    root = _store.build_cert(
        subject=ROOT_NAME, issuer=ROOT_NAME, public_key=pub["root"], signing_key=keys["root"],
        not_before=now - 365 * _DAY, extensions=ca_exts(pub["root"], pub["root"], None),
        not_after=_END_OF_TIME, hash_alg=sha384,
    )
    identity = _store.build_cert(
        subject=IDENTITY_NAME, issuer=ROOT_NAME, public_key=pub["identity"],
        signing_key=keys["root"], not_before=now - 365 * _DAY,
        extensions=ca_exts(pub["identity"], pub["root"], "l1-root"),
        not_after=_END_OF_TIME, hash_alg=sha384,
    )
    ica = _store.build_cert(
        subject=ICA_NAME, issuer=IDENTITY_NAME, public_key=pub["ica"],
        signing_key=keys["identity"], not_before=now - 365 * _DAY,
        extensions=ca_exts(pub["ica"], pub["identity"], "l2-gh100"),
        not_after=_END_OF_TIME, hash_alg=sha384,
    )
    for name, key in keys.items():
        _store.write_key(path / f"{name}.key", key)
    for name, cert in (("root", root), ("identity", identity), ("ica", ica)):
        _store.write_cert(path / f"{name}.pem", cert)
    for i in range(N_GPUS):
        brom_key = ec.generate_private_key(ec.SECP384R1())
        leaf_key = ec.generate_private_key(ec.SECP384R1())
        brom_name = _device_name(os.urandom(9).hex().upper(), "GH100 A01 GSP BROM")
        brom = _store.build_cert(
            subject=brom_name, issuer=ICA_NAME, public_key=brom_key.public_key(),
            signing_key=keys["ica"], not_before=now - 365 * _DAY, extensions=[
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (usage(sign=True, crl=False), True),
                (_store.ski(brom_key.public_key()), False), (_store.aki(pub["ica"]), False),
            ],
            not_after=_END_OF_TIME, hash_alg=sha384,
        )
        leaf_ski = _store.ski(leaf_key.public_key())
        san = x509.SubjectAlternativeName([x509.OtherName(
            x509.ObjectIdentifier(NVIDIA_SAN_OID),
            _der.utf8_string(f"NVIDIA:GH100:{os.urandom(8).hex().upper()}"),
        )])
        tcb_info = tcb_info_extension(leaf_key.public_key(), os.urandom(48))
        leaf = _store.build_cert(
            subject=_device_name(leaf_ski.digest.hex().upper(), "GH100 A01 GSP FMC LF"),
            issuer=brom_name, public_key=leaf_key.public_key(), signing_key=brom_key,
            not_before=now - 365 * _DAY, extensions=[
                (usage(sign=False, crl=False, digital=True), True), (leaf_ski, False),
                (_store.aki(brom_key.public_key()), False), (san, False),
                (x509.UnrecognizedExtension(x509.ObjectIdentifier(TCB_INFO_OID), tcb_info),
                 False),
            ],
            not_after=_END_OF_TIME, hash_alg=sha384,
        )
        _store.write_key(path / f"brom{i}.key", brom_key)
        _store.write_key(path / f"leaf{i}.key", leaf_key)
        _store.write_cert(path / f"brom{i}.pem", brom)
        _store.write_cert(path / f"leaf{i}.pem", leaf)


def _load(path: Path) -> DevGpu:
    ca_certs = [_store.read_cert(path / f"{n}.pem") for n in ("ica", "identity", "root")]
    devices = []
    fwids = []
    for i in range(N_GPUS):
        leaf_key = _store.read_ec_key(path / f"leaf{i}.key")
        leaf = _store.read_cert(path / f"leaf{i}.pem", leaf_key)
        brom = _store.read_cert(path / f"brom{i}.pem")
        try:
            ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(TCB_INFO_OID))
        except x509.ExtensionNotFound as e:
            raise ValueError(f"leaf{i}.pem has no TcbInfo extension") from e
        if not isinstance(ext.value, x509.UnrecognizedExtension):
            raise ValueError(f"leaf{i}.pem has an unreadable TcbInfo extension")
        devices.append((leaf_key, leaf, brom))
        fwids.append(ext.value.value[-48:])
    return DevGpu(ca_certs, devices, fwids)

"""Parse AMD SEV-SNP attestation reports (the 1184-byte ATTESTATION_REPORT, ABI spec 56860).

Parsing proves nothing: it turns bytes into typed fields and rejects what cannot be a report.
Signatures and policy are checked in ``teegate.attest.snp``.
"""

from __future__ import annotations

import string
import struct
from dataclasses import dataclass

from teegate.attest.guard import malformed
from teegate.errors import EvidenceError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
KNOWN_VERSIONS = frozenset({2, 3, 4, 5})
PRODUCTS = ("Milan", "Genoa", "Turin")
_HEXDIGITS = frozenset(string.hexdigits.encode())
_SIGNING_KEYS = {0: "vcek", 1: "vlek", 7: "none"}
# Reserved (must-be-zero) byte ranges, per report version (0x330.. follows the signature).
_MBZ_ALWAYS = ((0x04C, 0x050), (0x18B, 0x1A0), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x208, 0x2A0),
               (0x330, 0x4A0))
_MBZ_V2 = ((0x188, 0x18B), (0x1F8, 0x208))
_MBZ_V3_V4 = ((0x1F8, 0x208),)


@malformed("the SEV-SNP report")
def load_report(data: bytes) -> bytes:
    """Return raw report bytes from binary or hex text (whitespace and ``0x`` tolerated).

    Bytes after the first 1184 are kept (``split_report`` separates them): tools and clouds
    hand out the report followed by data no signature covers, and go-sev-guest and virtee
    read the report from the first 1184 bytes too."""
    if not _is_hex(data[: 2 * REPORT_SIZE + 64]):
        if len(data) >= REPORT_SIZE:
            return data
    else:
        text = bytes(b for b in data if b not in b" \t\r\n")
        if text[:2] in (b"0x", b"0X"):
            text = text[2:]
        if len(text) >= 2 * REPORT_SIZE and len(text) % 2 == 0 and _is_hex(text):
            return bytes.fromhex(text.decode())
    raise EvidenceError(
        f"SEV-SNP report must be at least {REPORT_SIZE} bytes (or {2 * REPORT_SIZE} hex "
        f"digits); got {len(data)} bytes"
    )


def _is_hex(data: bytes) -> bool:
    return bool(data) and all(b in _HEXDIGITS or b in b" \t\r\nxX" for b in data)


def split_report(raw: bytes) -> tuple[bytes, bytes]:
    """The 1184-byte report and what followed it (covered by no signature)."""
    return raw[:REPORT_SIZE], raw[REPORT_SIZE:]


def trailing_note(extra: bytes) -> str | None:
    """What followed the report, for the verdict; None when nothing did."""
    if not extra:
        return None
    if not any(extra):
        return f"{len(extra)} zero bytes of padding follow the 1184-byte report (ignored)"
    shown = extra[:32].hex() + ("…" if len(extra) > 32 else "")
    return (f"{len(extra)} bytes follow the 1184-byte report ({shown}); no signature covers "
            "them, so they are ignored, as go-sev-guest and virtee/sev do")


def product_from_cpuid(family: int, model: int) -> str | None:
    """Product name from CPUID family/model (trustee ``get_processor_generation``)."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A TCB_VERSION decoded with its product's layout (Turin adds FMC and moves fields)."""

    raw: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None

    @classmethod
    def decode(cls, raw: bytes, product: str | None) -> TcbVersion:
        if product == "Turin":
            return cls(raw, raw[1], raw[2], raw[3], raw[7], raw[0])
        return cls(raw, raw[0], raw[1], raw[6], raw[7], None)

    def parts(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.parts().items())


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY word (ABI spec, ``ParseSnpPolicy``)."""

    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    def _bit(self, n: int) -> bool:
        return bool(self.raw >> n & 1)

    @property
    def smt(self) -> bool:
        return self._bit(16)

    @property
    def migrate_ma(self) -> bool:
        return self._bit(18)

    @property
    def debug(self) -> bool:
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        return self._bit(20)

    @property
    def cxl_allow(self) -> bool:
        return self._bit(21)

    @property
    def mem_aes_256_xts(self) -> bool:
        return self._bit(22)

    @property
    def rapl_dis(self) -> bool:
        return self._bit(23)

    @property
    def ciphertext_hiding(self) -> bool:
        return self._bit(24)

    @property
    def page_swap_disable(self) -> bool:
        return self._bit(25)


@dataclass(frozen=True, slots=True)
class SnpReport:
    """Every field of an SEV-SNP attestation report; TCBs decoded for ``product``."""

    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: TcbVersion
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes
    product: str | None

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def author_key_en(self) -> bool:
        return bool(self.signer_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.signer_info >> 1 & 1)

    @property
    def signing_key(self) -> str:
        """``vcek``, ``vlek``, ``none`` or ``unknown(n)`` from SIGNER_INFO bits 2-4."""
        code = (self.signer_info >> 2) & 0x7
        return _SIGNING_KEYS.get(code, f"unknown({code})")

    @property
    def chip_id_used(self) -> bytes:
        """The bytes of CHIP_ID that identify the chip (8 on Turin, 64 otherwise)."""
        return self.chip_id[:8] if self.product == "Turin" else self.chip_id

    @property
    def chip_id_masked(self) -> bool:
        return not any(self.chip_id)

    def reserved_nonzero(self) -> list[tuple[int, int]]:
        """Must-be-zero ranges that are not zero."""
        ranges = list(_MBZ_ALWAYS)
        if self.version == 2:
            ranges += _MBZ_V2
        elif self.version < 5:
            ranges += _MBZ_V3_V4
        if self.product == "Turin":
            ranges.append((0x1A8, 0x1E0))
        return [(a, b) for a, b in ranges if any(self.raw[a:b])]


@malformed("the SEV-SNP report")
def parse_report(raw: bytes, *, product: str | None = None) -> SnpReport:
    """Parse a raw 1184-byte report. ``product`` overrides CPUID detection (needed for v2
    reports, which carry no CPUID; without it a v2 report is decoded with the Milan/Genoa
    TCB layout, the only one v2 firmware uses)."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EvidenceError("SEV-SNP report must be bytes")
    raw = bytes(raw)
    if len(raw) != REPORT_SIZE:
        raise EvidenceError(f"SEV-SNP report must be {REPORT_SIZE} bytes, got {len(raw)}")
    version, guest_svn, policy_raw = struct.unpack_from("<IIQ", raw, 0)
    if version not in KNOWN_VERSIONS:
        raise EvidenceError(f"SEV-SNP report version {version} is not supported (2, 3, 4, 5)")
    if not policy_raw >> 17 & 1:
        raise EvidenceError("SEV-SNP report POLICY bit 17 (reserved, must be 1) is 0")
    if policy_raw >> 26:
        raise EvidenceError(f"SEV-SNP report POLICY has must-be-zero bits set: {policy_raw:#x}")
    vmpl, sig_algo = struct.unpack_from("<II", raw, 0x30)
    if vmpl > 3:
        raise EvidenceError(f"SEV-SNP report VMPL {vmpl} is out of range 0-3")
    if sig_algo != 1:
        raise EvidenceError(f"SEV-SNP signature algorithm {sig_algo} is not 1 (ECDSA P-384)")
    fam, mod, step = raw[0x188], raw[0x189], raw[0x18A]
    if product is not None and product not in PRODUCTS:
        raise EvidenceError(f"unknown SEV-SNP product {product!r}; known: {list(PRODUCTS)}")
    detected = product_from_cpuid(fam, mod) if version >= 3 else None
    if version >= 3 and detected is None and product is None:
        raise EvidenceError(f"SEV-SNP report CPUID family {fam:#x} model {mod:#x} is unknown")
    if product is not None and detected is not None and product != detected:
        raise EvidenceError(f"SEV-SNP report CPUID says {detected}, not {product}")
    prod = product or detected

    def tcb(off: int) -> TcbVersion:
        return TcbVersion.decode(raw[off : off + 8], prod)

    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy(policy_raw),
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=tcb(0x38),
        platform_info=struct.unpack_from("<Q", raw, 0x40)[0],
        signer_info=struct.unpack_from("<I", raw, 0x48)[0],
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=tcb(0x180),
        cpuid_fam_id=fam,
        cpuid_mod_id=mod,
        cpuid_step=step,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=tcb(0x1E0),
        current_build=raw[0x1E8],
        current_minor=raw[0x1E9],
        current_major=raw[0x1EA],
        committed_build=raw[0x1EC],
        committed_minor=raw[0x1ED],
        committed_major=raw[0x1EE],
        launch_tcb=tcb(0x1F0),
        launch_mit_vector=struct.unpack_from("<Q", raw, 0x1F8)[0] if version >= 5 else None,
        current_mit_vector=struct.unpack_from("<Q", raw, 0x200)[0] if version >= 5 else None,
        signature_r=raw[0x2A0:0x2E8],
        signature_s=raw[0x2E8:0x330],
        product=prod,
    )

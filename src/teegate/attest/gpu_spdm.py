"""SPDM 1.1 GET_MEASUREMENTS evidence as NVML returns it for a Hopper GPU (REFERENCE §4.1).

The bytes are the 37-byte request followed by the MEASUREMENTS response. The signature is
found by walking the response's own length fields, never as "the last 96 bytes": real
evidence can carry trailing bytes after it, and a parser that trusts positions can be made
to verify a signature over different bytes than the ones it reports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import MappingProxyType

from teegate.attest.guard import malformed
from teegate.errors import EvidenceError

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_LEN = 37  # version, code, param1, param2, 32-byte nonce, slot id
SIGNATURE_LEN = 96  # raw r || s, P-384
DIGEST_LEN = 48  # SHA-384 measurement values

# Opaque-data TLV types (nvtrust ``spdm_msrt_resp_msg.py``).
OPAQUE_DRIVER_VERSION = 3
OPAQUE_GPU_INFO = 4
OPAQUE_VBIOS_VERSION = 6
OPAQUE_NVDEC0_STATUS = 11
OPAQUE_MSRSCNT = 12
OPAQUE_BOARD_ID = 14
OPAQUE_CHIP_SKU = 15
OPAQUE_CHIP_SKU_MOD = 16
OPAQUE_PROJECT = 17
OPAQUE_PROJECT_SKU = 18
OPAQUE_PROJECT_SKU_MOD = 19
OPAQUE_FWID = 20
OPAQUE_PROTECTED_PCIE_STATUS = 21


@dataclass(frozen=True, slots=True)
class MeasurementBlock:
    """One DMTF measurement block: SPDM ``index`` (1-based) and its value (a SHA-384)."""

    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class SpdmEvidence:
    """A parsed GET_MEASUREMENTS exchange. ``signed`` is exactly what the leaf key signed."""

    request_nonce: bytes
    slot: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: MappingProxyType[int, bytes] = field(repr=False)
    signed: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    trailing: int = 0  # bytes after the signature (unsigned, ignored)

    @property
    def measurements(self) -> tuple[bytes, ...]:
        return tuple(b.value for b in self.blocks)

    def _text(self, kind: int) -> str | None:
        value = self.opaque.get(kind)
        if value is None:
            return None
        return value.split(b"\0", 1)[0].decode("ascii", "replace")

    @property
    def driver_version(self) -> str | None:
        return self._text(OPAQUE_DRIVER_VERSION)

    @property
    def vbios_version(self) -> str | None:
        """``96.00.9F.00.01`` from the opaque bytes ``00 9f 00 96 01 …``."""
        value = self.opaque.get(OPAQUE_VBIOS_VERSION)
        if value is None or len(value) < 5:
            return None
        return ".".join(f"{b:02X}" for b in (value[3], value[2], value[1], value[0], value[4]))

    @property
    def project(self) -> str | None:
        return self._text(OPAQUE_PROJECT)

    @property
    def project_sku(self) -> str | None:
        return self._text(OPAQUE_PROJECT_SKU)

    @property
    def chip_sku(self) -> str | None:
        return self._text(OPAQUE_CHIP_SKU)

    @property
    def fwid(self) -> bytes | None:
        return self.opaque.get(OPAQUE_FWID)


class _Reader:
    def __init__(self, data: bytes, start: int = 0) -> None:
        self.data = data
        self.pos = start

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise EvidenceError(
                f"GPU evidence: truncated in {what} (needs {end} bytes, has {len(self.data)})"
            )
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u24(self, what: str) -> int:
        return int.from_bytes(self.take(3, what), "little")


def _blocks(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    r = _Reader(record)
    out = []
    seen = set()
    for _ in range(count):
        index = r.u8("measurement block index")
        spec = r.u8("measurement specification")
        size = r.u16("measurement size")
        body = _Reader(r.take(size, "measurement block"))
        if spec != 1:
            raise EvidenceError(f"GPU evidence: block {index} is not a DMTF measurement")
        value_type = body.u8("DMTF value type")
        value = body.take(body.u16("DMTF value size"), "DMTF value")
        if body.pos != size:
            raise EvidenceError(f"GPU evidence: block {index} size disagrees with its value")
        if len(value) != DIGEST_LEN:
            raise EvidenceError(f"GPU evidence: block {index} value is not a 48-byte SHA-384")
        if index == 0 or index in seen:
            raise EvidenceError(f"GPU evidence: measurement index {index} is invalid or repeated")
        seen.add(index)
        out.append(MeasurementBlock(index, value_type, value))
    if r.pos != len(record):
        raise EvidenceError("GPU evidence: measurement record length disagrees with its blocks")
    return tuple(out)


def _opaque(data: bytes) -> MappingProxyType[int, bytes]:
    r = _Reader(data)
    out: dict[int, bytes] = {}
    while r.pos < len(data):
        kind = r.u16("opaque data type")
        value = r.take(r.u16("opaque data length"), "opaque data value")
        if kind in out:
            raise EvidenceError(f"GPU evidence: opaque data type {kind} appears twice")
        out[kind] = value
    return MappingProxyType(out)


@malformed("the GPU SPDM evidence")
def parse_spdm_evidence(raw: bytes) -> SpdmEvidence:
    """Parse NVML's GET_MEASUREMENTS request || signed MEASUREMENTS response.

    Malformed bytes raise ``EvidenceError``; nothing here judges signatures or values.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EvidenceError("GPU evidence must be bytes")
    raw = bytes(raw)
    r = _Reader(raw)
    version, code, param1, param2 = r.take(4, "request header")
    if version != SPDM_VERSION_11 or code != GET_MEASUREMENTS:
        raise EvidenceError("GPU evidence: not an SPDM 1.1 GET_MEASUREMENTS request")
    if not param1 & 0x01:
        raise EvidenceError("GPU evidence: the request did not ask for a signature")
    if param2 != 0xFF:
        raise EvidenceError("GPU evidence: the request did not ask for all measurement blocks")
    nonce = r.take(32, "request nonce")
    slot = r.u8("request slot id")
    version, code, _, _ = r.take(4, "response header")
    if version != SPDM_VERSION_11 or code != MEASUREMENTS:
        raise EvidenceError("GPU evidence: not an SPDM 1.1 MEASUREMENTS response")
    count = r.u8("number of blocks")
    record = r.take(r.u24("measurement record length"), "measurement record")
    blocks = _blocks(record, count)
    responder_nonce = r.take(32, "responder nonce")
    opaque = _opaque(r.take(r.u16("opaque length"), "opaque data"))
    signed_end = r.pos
    signature = r.take(SIGNATURE_LEN, "signature")
    return SpdmEvidence(
        request_nonce=nonce,
        slot=slot,
        blocks=blocks,
        responder_nonce=responder_nonce,
        opaque=opaque,
        signed=raw[:signed_end],
        signature=signature,
        trailing=len(raw) - r.pos,
    )

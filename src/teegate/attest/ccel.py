"""Binary CCEL event logs: the TCG2 crypto-agile log TDX firmware leaves in the ACPI CCEL table.

TDX guests on GCP and Azure expose it at ``/sys/firmware/acpi/tables/data/CCEL``. Layout (TCG PC
Client Platform Firmware Profile, "crypto agile log format"; UEFI 2.10 §38.4 / ACPI 6.5 §5.2.34
for the CC mapping): one SHA-1-format ``TCG_PCR_EVENT`` carrying the ``Spec ID Event03`` header,
which lists the digest algorithms and sizes, then ``TCG_PCR_EVENT2`` records (MR index u32,
event type u32, digest count u32, {algorithm u16, digest}, event size u32, event data), then
padding (0xFF, the erased log area, or zeros). In a CC log the "PCR index" is the CC
measurement-register index: 1 = RTMR0, 2 = RTMR1, 3 = RTMR2, 4 = RTMR3 (0 would be MRTD, which no
event extends). EV_NO_ACTION events are not extended.

The events become ``eventlog.Event`` values (imr = MR index - 1, the SHA-384 digest, the event
data as payload), so the one replay in ``eventlog`` explains the quote's RTMRs. Hand-written:
the Python TCG parsers available (tpm2-pytss) need the tpm2-tss C library and know nothing of
the CC index mapping; this is 60 lines of bounds-checked struct reads.
"""

from __future__ import annotations

import json
import struct

from teegate.attest.eventlog import MAX_EVENTS, Event
from teegate.errors import EvidenceError

__all__ = ["SPEC_ID_SIGNATURE", "ParsedCcel", "ccel_json", "event_log_input", "event_log_text",
           "is_ccel", "parse_ccel"]

SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
EV_NO_ACTION = 0x3
TPM_ALG_SHA384 = 0x000C
# A real log area is 64 KiB (QEMU/OVMF) or 256 KiB (GCP); anything far larger is not a CCEL.
# 2 MiB keeps the JSON form (payloads in hex) within eventlog.MAX_EVENT_LOG_BYTES.
MAX_CCEL_SIZE = 2 << 20


_EVENT2_HEAD = struct.Struct("<III")  # MR index, event type, digest count
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class ParsedCcel(bytes):
    """A binary CCEL that was already parsed and checked: its bytes (for the JSON form and
    for hashing) with the events kept, so ``parse_event_log`` does not parse it again."""

    events: tuple[Event, ...]

    def __new__(cls, data: bytes, events: list[Event]) -> ParsedCcel:
        self = super().__new__(cls, data)
        self.events = tuple(events)
        return self


def is_ccel(data: bytes) -> bool:
    """True when ``data`` starts with the crypto-agile log's Spec ID event."""
    return len(data) >= 48 and data[4:8] == b"\x03\0\0\0" and data[32:48] == SPEC_ID_SIGNATURE


def _take(data: bytes, pos: int, n: int, what: str) -> int:
    if pos + n > len(data):
        raise EvidenceError(f"CCEL truncated: {what} needs {n} bytes at offset {pos}, "
                            f"{max(len(data) - pos, 0)} left")
    return pos + n


def _spec_id(data: bytes) -> tuple[dict[int, int], int]:
    """(digest size per algorithm, offset of the first TCG_PCR_EVENT2)."""
    end = _take(data, 0, 32, "the Spec ID event header")
    (size,) = struct.unpack_from("<I", data, 28)
    body_end = _take(data, end, size, "the Spec ID event")
    if size < 29:
        raise EvidenceError(f"CCEL Spec ID event is {size} bytes, too short")
    (count,) = struct.unpack_from("<I", data, end + 24)
    pos = end + 28
    if count == 0 or pos + 4 * count + 1 > body_end:
        raise EvidenceError(f"CCEL Spec ID event lists {count} digest algorithms that do not fit")
    sizes: dict[int, int] = {}
    for i in range(count):
        alg, digest_size = struct.unpack_from("<HH", data, pos + 4 * i)
        sizes[alg] = digest_size
    if sizes.get(TPM_ALG_SHA384) != 48:
        raise EvidenceError("CCEL has no SHA-384 digests (the TDX RTMR hash): algorithms "
                            + ", ".join(f"{a:#06x}" for a in sizes))
    return sizes, body_end


def parse_ccel(data: bytes) -> list[Event]:
    """The extending events of a binary CCEL; ``EvidenceError`` names what is malformed."""
    if len(data) > MAX_CCEL_SIZE:
        raise EvidenceError(f"CCEL is {len(data)} bytes (limit {MAX_CCEL_SIZE})")
    if data[:4] == b"CCEL":
        raise EvidenceError("this is the 56-byte ACPI CCEL table header, not the log: give "
                            "/sys/firmware/acpi/tables/data/CCEL")
    if not is_ccel(data):
        raise EvidenceError("not a CCEL / TCG2 crypto-agile event log (no Spec ID Event03)")
    sizes, pos = _spec_id(data)
    events: list[Event] = []
    n = 0
    while pos < len(data):
        head = data[pos : pos + 8]
        if head in (b"\xff" * len(head), bytes(len(head))):
            # The erased (0xFF) or zeroed rest of the log area, checked once: an event
            # hidden after padding would be an event no replay counts.
            if data.count(head[:1], pos) != len(data) - pos:
                raise EvidenceError(f"CCEL has data after the padding at offset {pos}")
            break
        _take(data, pos, 12, f"event #{n} header")
        index, event_type, count = _EVENT2_HEAD.unpack_from(data, pos)
        if index == 0xFFFFFFFF:
            break
        pos += 12
        if count > len(sizes):
            raise EvidenceError(f"CCEL event #{n} has {count} digests; the log declares "
                                f"{len(sizes)} algorithms")
        digest = b""
        for _ in range(count):
            _take(data, pos, 2, f"event #{n} digest algorithm")
            (alg,) = _U16.unpack_from(data, pos)
            if alg not in sizes:
                raise EvidenceError(f"CCEL event #{n} uses undeclared algorithm {alg:#06x}")
            start = pos + 2
            pos = _take(data, start, sizes[alg], f"event #{n} digest")
            if alg == TPM_ALG_SHA384:
                digest = data[start:pos]
        _take(data, pos, 4, f"event #{n} size")
        (size,) = _U32.unpack_from(data, pos)
        start = pos + 4
        pos = _take(data, start, size, f"event #{n} data")
        n += 1
        if n > MAX_EVENTS:  # EV_NO_ACTION records too: the loop is bounded, not the size only
            raise EvidenceError(f"CCEL has more than {MAX_EVENTS} records")
        if event_type == EV_NO_ACTION:
            continue
        if not 1 <= index <= 4:
            raise EvidenceError(f"CCEL event #{n - 1} extends MR index {index}; a TDX log "
                                "extends only 1..4 (RTMR0..RTMR3)")
        if not digest:
            raise EvidenceError(f"CCEL event #{n - 1} has no SHA-384 digest")
        events.append(Event(index - 1, event_type, digest, "", data[start:pos]))
        if len(events) > MAX_EVENTS:
            raise EvidenceError(f"CCEL has more than {MAX_EVENTS} events")
    return events


def ccel_json(data: bytes) -> str:
    """The CCEL's events as a dstack-shaped JSON event log (what ``--event-log`` and the
    node's report carry): ``{imr, event_type, digest, event, event_payload}`` per event."""
    return json.dumps([
        {"imr": e.imr, "event_type": e.event_type, "digest": e.digest.hex(), "event": e.event,
         "event_payload": e.payload.hex()}
        for e in parse_ccel(data)
    ])


def event_log_text(data: bytes, where: str = "event log") -> str:
    """An event log file's text for the verifiers: a binary CCEL becomes the JSON form, a
    JSON log is decoded; anything else is malformed input."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    if is_ccel(data) or data[:4] == b"CCEL":
        return ccel_json(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvidenceError(f"{where}: not UTF-8 text (byte {e.start} is "
                            f"0x{data[e.start]:02x}) and not a binary CCEL (TCG2 crypto-agile "
                            "log)") from None


def event_log_input(data: bytes, where: str = "event log") -> str | bytes:
    """An event log file for the verifiers: a binary CCEL is checked here (so a malformed one
    names its file) and kept binary, which ``parse_event_log`` replays without a JSON round
    trip; a JSON log is decoded text."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    if is_ccel(data):
        try:
            return ParsedCcel(data, parse_ccel(data))
        except EvidenceError as e:
            raise EvidenceError(f"{where}: {e}") from None
    return event_log_text(data, where)

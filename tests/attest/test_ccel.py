"""Binary CCEL event logs (TCG2 crypto-agile, as GCP/Azure TDX guests expose them): parsed,
replayed to RTMR0-3 and compared with the quote (issue 13, class 3).

Vectors: tests/data/tdx/PROVENANCE.md, go-tdx-guest/ (a GCP COS 113 TD's quote and its CCEL).
"""

from __future__ import annotations

import json
import struct

import pytest

from teegate.attest.ccel import MAX_CCEL_SIZE, ccel_json, event_log_text, parse_ccel
from teegate.attest.eventlog import MAX_EVENT_LOG_BYTES, parse_event_log, replay_rtmrs
from teegate.attest.policy import Policy
from teegate.attest.report import verify_quote_evidence
from teegate.attest.tdx import parse_quote
from teegate.errors import EvidenceError
from tests.attest.test_tdx import read, text

CCEL = "go-tdx-guest/ccel_data.dat"
QUOTE = "go-tdx-guest/cos-113-tdx-quote.dat"
COLLATERAL = "zkdcap/collateral_tdx_00806f050000_assembled.json"
NOW = 1740048927


def test_gcp_ccel_replays_to_the_quotes_rtmrs() -> None:
    events = parse_ccel(read(CCEL))
    assert len(events) == 43
    assert sorted({e.imr for e in events}) == [0, 1, 2]  # MR index 1..3 = RTMR0..2
    td = parse_quote(read(QUOTE)).td_report
    assert td is not None
    assert replay_rtmrs(events) == td.rtmrs


def test_go_eventlog_vector_replays_to_its_published_rtmrs() -> None:
    """go-eventlog ccel/cceventlog_test.go COS113TDXUnpadded: the RTMR values it expects."""
    events = parse_ccel(read("go-tdx-guest/go-eventlog_cos-113-intel-tdx-dupe-separator-"
                             "unpadded.bin"))
    r0, r1, r2, r3 = replay_rtmrs(events)
    assert r0.hex().startswith("a4de2df23e9611299123ba4359c42a5e")
    assert r1.hex().startswith("0ee9366c928a77092f55e9e114c73941")
    assert r2.hex().startswith("4969684dc87381fc3b3134176c8d8806")
    assert r3 == bytes(48)


def test_quote_with_its_ccel_is_accepted_and_the_log_checked() -> None:
    log = event_log_text(read(CCEL))
    v = verify_quote_evidence(read(QUOTE), text(COLLATERAL), policy=Policy.default(),
                              now=NOW, event_log=log)
    assert v.accepted, v.failures
    for i in range(4):
        check = v.check(f"eventlog.rtmr{i}")
        assert check is not None
        assert check.ok
    # Another TD's CCEL does not describe this quote.
    other = event_log_text(read("go-tdx-guest/go-eventlog_cos-113-intel-tdx-dupe-separator-"
                                "unpadded.bin"))
    v = verify_quote_evidence(read(QUOTE), text(COLLATERAL), policy=Policy.default(),
                              now=NOW, event_log=other)
    assert [c.name for c in v.failures] == ["eventlog.rtmr0", "eventlog.rtmr1"]


def test_json_form_round_trips() -> None:
    assert parse_event_log(ccel_json(read(CCEL))) == parse_ccel(read(CCEL))
    assert parse_event_log(read(CCEL)) == parse_ccel(read(CCEL))
    first = json.loads(ccel_json(read(CCEL)))[0]
    assert set(first) == {"imr", "event_type", "digest", "event", "event_payload"}


def _unpadded() -> bytes:
    return read(CCEL).rstrip(b"\xff")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + bytes(64) + b"\x01", "data after the padding"),
    (lambda d: d[:32] + b"Spec ID Event02\0" + d[48:], "not a CCEL"),
    (lambda d: read("go-tdx-guest/ccel_table.dat"), "ACPI CCEL table header"),
    (lambda d: d + struct.pack("<III", 9, 1, 1) + b"\x0c\x00" + bytes(48) + bytes(4),
     "MR index 9"),
    (lambda d: d + struct.pack("<III", 1, 1, 1) + b"\x0b\x00" + bytes(32) + bytes(4),
     "undeclared algorithm"),
])
def test_malformed_ccel_is_an_evidence_error(mutate: object, message: str) -> None:
    data = mutate(_unpadded())  # type: ignore[operator]
    with pytest.raises(EvidenceError, match=message):
        parse_ccel(data)


def test_non_utf8_event_log_is_named() -> None:
    with pytest.raises(EvidenceError, match=r"not UTF-8 text .* not a binary CCEL"):
        event_log_text(b"\xff\xfe[]", "--event-log x")


def _no_action(n: int) -> bytes:
    """``n`` EV_NO_ACTION records (extend nothing): 66 bytes each."""
    return (struct.pack("<III", 1, 3, 1) + b"\x0c\x00" + bytes(48) + bytes(4)) * n


def test_a_ccel_is_bounded_in_records_and_bytes() -> None:
    """Issue 11, point 6: EV_NO_ACTION records were not counted, so a log of them ran the
    parse loop for as long as its size allowed; every record counts now, and the size limit
    keeps the JSON form within the JSON event log's limit."""
    base = _unpadded()
    with pytest.raises(EvidenceError, match="more than 4096 records"):
        parse_ccel(base + _no_action(4096))
    assert len(parse_ccel(base + _no_action(4000))) == 43
    with pytest.raises(EvidenceError, match=f"limit {MAX_CCEL_SIZE}"):
        parse_ccel(base + b"\xff" * MAX_CCEL_SIZE)
    # The largest accepted: one event whose payload fills the rest; its JSON (hex payload)
    # is still a JSON event log the verifier takes.
    size = MAX_CCEL_SIZE - len(base) - 66
    widest = base + struct.pack("<III", 1, 1, 1) + b"\x0c\x00" + bytes(48) + \
        struct.pack("<I", size) + b"\x01" * size
    assert len(widest) == MAX_CCEL_SIZE
    text = ccel_json(widest)
    assert len(text) < MAX_EVENT_LOG_BYTES
    assert len(parse_event_log(text)) == 44


def test_an_event_log_file_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 (bench): ``--event-log`` parsed the CCEL to check it, then the verifier parsed
    it again; the checked events travel with the bytes now and replay to the same RTMRs."""
    from teegate.attest import ccel

    data = read(CCEL)
    checked = ccel.event_log_input(data, "--event-log x")
    assert isinstance(checked, ccel.ParsedCcel)
    assert bytes(checked) == data

    def no_second_parse(_: bytes) -> list[object]:
        raise AssertionError("parsed a second time")

    monkeypatch.setattr(ccel, "parse_ccel", no_second_parse)
    events = parse_event_log(checked)
    td = parse_quote(read(QUOTE)).td_report
    assert td is not None
    assert replay_rtmrs(events) == td.rtmrs
    with pytest.raises(AssertionError, match="second time"):  # plain bytes are still parsed
        parse_event_log(data)


def test_a_malformed_event_log_file_is_named() -> None:
    from teegate.attest.ccel import event_log_input

    with pytest.raises(EvidenceError, match=r"^--event-log x: CCEL truncated"):
        event_log_input(_unpadded()[:-10], "--event-log x")

"""Truncated, oversized, garbage and random input only ever raises ``EvidenceError``.

Targets: load_quote, parse_quote, verify_quote, parse_event_log, verify_provider_report.
Any other exception escaping is a bug (hypothesis reports it as a failure).
"""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.attest.eventlog import parse_event_log, replay_rtmrs
from teegate.attest.policy import Policy
from teegate.attest.report import verify_provider_report
from teegate.attest.tdx import load_quote, parse_quote, verify_quote
from teegate.errors import EvidenceError
from tests.attest.test_tdx import read, text

POLICY = Policy.default()
NOW = 1752919234
QUOTE = read("dcap-qvl/tdx_quote")
SGX = read("dcap-qvl/sgx_quote")
COLLATERAL = text("dcap-qvl/tdx_quote_collateral.json")
SIZE = parse_quote(QUOTE).size
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _verify(data: bytes, collateral: str = COLLATERAL) -> bool | None:
    """True/False = verdict accepted or not; None = EvidenceError."""
    try:
        return verify_quote(data, collateral, policy=POLICY, now=NOW).accepted
    except EvidenceError:
        return None


@FUZZ
@given(st.binary(max_size=6000))
def test_random_bytes(data: bytes) -> None:
    for fn in (load_quote, parse_quote):
        with contextlib.suppress(EvidenceError):
            fn(data)
    assert _verify(data) in (None, False)


@FUZZ
@given(st.sampled_from([(4, 0x81), (5, 0x81), (3, 0)]), st.binary(min_size=0, max_size=5000))
def test_plausible_header_then_garbage(head: tuple[int, int], rest: bytes) -> None:
    data = struct.pack("<HHI", head[0], 2, head[1]) + rest
    assert _verify(data) in (None, False)


@FUZZ
@given(st.integers(min_value=0, max_value=len(QUOTE) - 1))
def test_truncated(cut: int) -> None:
    result = _verify(QUOTE[:cut])
    # Cutting only zero padding leaves a valid quote; any real cut is malformed.
    assert result is (True if cut >= SIZE else None)


@FUZZ
@given(st.binary(min_size=1, max_size=2000))
def test_oversized(extra: bytes) -> None:
    # Bytes after the quote are covered by no signature: judged on content, as dcap-qvl does.
    assert _verify(QUOTE + extra) is True


@FUZZ
@given(st.integers(min_value=0, max_value=len(SGX) - 1), st.integers(0, 255))
def test_sgx_byte_replaced(offset: int, value: int) -> None:
    data = bytearray(SGX)
    data[offset] = value
    assert _verify(bytes(data), text("dcap-qvl/sgx_quote_collateral.json")) in (None, False)


@FUZZ
@given(st.text(max_size=300))
def test_garbage_collateral(collateral: str) -> None:
    v = verify_quote(QUOTE, collateral, policy=POLICY, now=NOW)
    assert not v.accepted
    assert v.failures[0].name == "tdx.collateral"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)
    | st.sampled_from(["", "00" * 48, "0x12", "zz", QUOTE.hex()[:200]]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["imr", "event_type", "digest", "event", "event_payload", "version",
                         "preimage", "x"]), inner, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_event_log_garbage(value: Any) -> None:
    for form in (value, json.dumps(value)):
        try:
            events = parse_event_log(form)
        except EvidenceError:
            continue
        assert len(replay_rtmrs(events)) == 4


EVENT = st.fixed_dictionaries({
    "imr": st.integers(-1, 5),
    "event_type": st.sampled_from([0x08000001, 4, 10, -1, 2**33]),
    "digest": st.sampled_from(["", "ab" * 48, "ab" * 49, "xyz", None]),
    "event": st.sampled_from(["app-id", "compose-hash", "system-ready", "", 3]),
    "event_payload": st.sampled_from(["", "00", "0", None, 5]),
})


@FUZZ
@given(st.lists(EVENT, max_size=8))
def test_event_log_near_misses(events: list[dict[str, Any]]) -> None:
    try:
        parsed = parse_event_log(events)
    except EvidenceError:
        return
    assert len(replay_rtmrs(parsed)) == 4


REPORT = st.dictionaries(
    st.sampled_from(["signing_address", "signing_algo", "intel_quote", "quote", "snp_report",
                     "snp_certificates", "event_log", "info", "nvidia_payload", "collateral",
                     "request_nonce"]),
    JSON | st.just(QUOTE.hex()) | st.just(COLLATERAL),
    max_size=8,
)


@FUZZ
@given(REPORT, st.one_of(st.none(), st.binary(min_size=32, max_size=32)))
def test_provider_report_garbage(report: dict[str, Any], nonce: bytes | None) -> None:
    try:
        v = verify_provider_report(report, nonce=nonce, policy=POLICY, now=NOW)
    except EvidenceError:
        return
    # Our quote binds no signing key of this shape, so nothing random is ever accepted.
    assert not v.accepted


@FUZZ
@given(JSON)
def test_provider_report_not_an_object(value: Any) -> None:
    if isinstance(value, dict):
        return
    try:
        verify_provider_report(value, nonce=None, policy=POLICY, now=NOW)
    except EvidenceError:
        return
    raise AssertionError("a non-object report was not rejected")


FIXTURE = json.loads(text("dstack/verifier_fixtures_quote-report.json"))
FIXTURE_COLLATERAL = text("dcap-qvl/tdx_quote_outdated_collateral.json")


@FUZZ
@given(st.lists(EVENT, max_size=8), st.sampled_from([None, b"{}", b"\xff"]))
def test_bare_quote_with_garbage_event_log(events: list[dict[str, Any]],
                                           compose: bytes | None) -> None:
    """A real quote with a near-miss event log is never accepted and never crashes."""
    from teegate.attest.report import verify_quote_evidence

    try:
        v = verify_quote_evidence(FIXTURE["quote"], FIXTURE_COLLATERAL, policy=POLICY,
                                  now=1774003274, event_log=events, app_compose=compose)
    except EvidenceError:
        return
    assert not v.accepted or not events

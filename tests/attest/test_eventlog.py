"""dstack event logs: RTMR replay against real quotes, compose hash and MRCONFIGID checks."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from teegate.attest.eventlog import (
    MAX_EVENT_LOG_BYTES,
    MAX_EVENTS,
    RUNTIME_EVENT_TYPE,
    Event,
    check_event_log,
    dstack_identity,
    parse_event_log,
    replay_rtmrs,
    runtime_digest,
)
from teegate.attest.policy import DstackPolicy, Policy
from teegate.attest.tdx import load_quote, parse_quote, quote_measurements
from teegate.errors import EvidenceError

DATA = Path(__file__).resolve().parent.parent / "data"
POLICY = Policy.default()


def load_json(name: str) -> Any:
    return json.loads((DATA / name).read_text())


# (quote source, event log source): every pair replays RTMR0-3 exactly (PROVENANCE.md).
def _pairs() -> dict[str, tuple[bytes, str | list[Any]]]:
    out: dict[str, tuple[bytes, str | list[Any]]] = {}
    for name in ("tdx/dstack/verifier_fixtures_quote-report.json",
                 "tdx/dstack/verifier_fixtures_tdx-lite-getquote.json",
                 "confidential-ai/dstack-tdx-attestation-report.json"):
        d = load_json(name)
        out[name] = (load_quote(d["quote"]), d["event_log"])
    out["confidential-ai/dstack-simulator"] = (
        load_quote((DATA / "confidential-ai/dstack-simulator-quote.hex").read_bytes()),
        load_json("confidential-ai/dstack-simulator-eventlog.json"),
    )
    return out


PAIRS = _pairs()
COMPOSE = (DATA / "confidential-ai/dstack-app-compose.json").read_bytes()


def measured(name: str) -> tuple[dict[str, str], list[Event]]:
    quote, log = PAIRS[name]
    return quote_measurements(parse_quote(quote)), parse_event_log(log)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_replay_matches_quote(name: str) -> None:
    quote, log = PAIRS[name]
    td = parse_quote(quote).td_report
    assert td is not None
    assert replay_rtmrs(parse_event_log(log)) == td.rtmrs
    checks, identity = check_event_log(quote_measurements(parse_quote(quote)),
                                       parse_event_log(log), policy=POLICY, app_compose=None)
    assert all(c.ok for c in checks), checks
    assert [c.name for c in checks][:4] == [f"eventlog.rtmr{i}" for i in range(4)]
    assert len(identity["compose_hash"]) == 64
    assert identity["app_id"] == identity["compose_hash"][:40]


def test_stripped_runtime_digests_are_recomputed() -> None:
    """The dstack-0.6.0 lite log has empty runtime digests; payloads are what counts."""
    _, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    runtime = [e for e in events if e.is_runtime]
    assert runtime
    assert all(e.digest == b"" for e in runtime)


def test_given_digest_is_not_trusted() -> None:
    """A runtime event whose payload was changed but digest kept no longer replays."""
    m, events = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    i = next(i for i, e in enumerate(events) if e.event == "compose-hash")
    assert events[i].digest == runtime_digest(events[i])
    forged = list(events)
    forged[i] = replace(events[i], payload=bytes(32))
    checks, _ = check_event_log(m, forged, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["eventlog.rtmr3", "eventlog.digest"]
    # Without the stale digest the recomputed one decides alone.
    forged[i] = replace(events[i], payload=bytes(32), digest=b"")
    checks, _ = check_event_log(m, forged, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["eventlog.rtmr3"]


def test_reordered_or_dropped_events_fail() -> None:
    m, events = measured("confidential-ai/dstack-tdx-attestation-report.json")
    boot = [i for i, e in enumerate(events) if e.imr == 1]
    swapped = list(events)
    swapped[boot[0]], swapped[boot[1]] = swapped[boot[1]], swapped[boot[0]]
    checks, _ = check_event_log(m, swapped, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["eventlog.rtmr1"]
    checks, _ = check_event_log(m, events[:-1], policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["eventlog.rtmr3"]


def test_confidential_ai_compose_binding() -> None:
    """Older dstack: MRCONFIGID is zero, the RTMR3 compose-hash event binds the compose."""
    m, events = measured("confidential-ai/dstack-tdx-attestation-report.json")
    assert m["mrconfigid"] == "00" * 48
    checks, identity = check_event_log(m, events, policy=POLICY, app_compose=COMPOSE)
    by_name = {c.name: c for c in checks}
    assert identity["compose_hash"] == hashlib.sha256(COMPOSE).hexdigest()
    assert identity["compose_hash"].startswith("06768e6d")
    assert identity["compose_hash"].endswith("653aff")
    assert by_name["dstack.compose_hash"].ok
    assert by_name["dstack.mrconfigid"].ok
    assert "zero" in by_name["dstack.mrconfigid"].detail
    # Any other compose document is refused.
    checks, _ = check_event_log(m, events, policy=POLICY, app_compose=COMPOSE + b" ")
    assert [c.name for c in checks if not c.ok] == ["dstack.compose_hash"]


def test_mrconfigid_carries_compose_hash() -> None:
    """Newer dstack: MRCONFIGID = 0x01 || compose hash (lite fixture, 01 86b0e55f…)."""
    m, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    assert m["mrconfigid"].startswith("0186b0e55f")
    checks, identity = check_event_log(m, events, policy=POLICY, app_compose=None)
    mc = next(c for c in checks if c.name == "dstack.mrconfigid")
    assert mc.ok
    assert identity["compose_hash"] in mc.detail
    # The event and the register must agree.
    bad = dict(m, mrconfigid="01" + "00" * 32 + "00" * 15)
    checks, _ = check_event_log(bad, events, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["dstack.mrconfigid"]
    other = dict(m, mrconfigid="02" + m["mrconfigid"][2:])
    checks, _ = check_event_log(other, events, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["dstack.mrconfigid"]


def test_policy_allow_lists() -> None:
    m, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    _, identity = check_event_log(m, events, policy=POLICY, app_compose=None)
    good = replace(POLICY, dstack=DstackPolicy(
        compose_hashes=frozenset({identity["compose_hash"]}),
        app_ids=frozenset({identity["app_id"]}),
        os_image_hashes=frozenset({identity["os_image_hash"]}),
    ))
    checks, _ = check_event_log(m, events, policy=good, app_compose=None)
    assert all(c.ok for c in checks)
    assert {"dstack.compose_hash", "dstack.app_id", "dstack.os_image_hash"} <= {
        c.name for c in checks}
    for field in ("compose_hashes", "app_ids", "os_image_hashes"):
        change: dict[str, Any] = {field: frozenset({"ab" * 32})}
        bad = replace(POLICY, dstack=replace(good.dstack, **change))
        checks, _ = check_event_log(m, events, policy=bad, app_compose=None)
        assert len([c for c in checks if not c.ok]) == 1, field


def test_no_event_log() -> None:
    m, _ = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    checks, identity = check_event_log(m, [], policy=POLICY, app_compose=None)
    assert (checks, identity) == ([], {})
    need = replace(POLICY, dstack=DstackPolicy(require_event_log=True,
                                               compose_hashes=frozenset({"ab" * 32})))
    checks, _ = check_event_log(m, [], policy=need, app_compose=None)
    assert sorted(c.name for c in checks if not c.ok) == [
        "dstack.compose_hash", "dstack.mrconfigid", "eventlog.present"]


def test_identity_stops_at_system_ready() -> None:
    """App events after system-ready cannot redefine the identity; repeats before it fail."""
    _, events = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    assert events[-1].event == "LIUM_MINER_HOTKEY"
    late = Event(3, RUNTIME_EVENT_TYPE, b"", "compose-hash", bytes(32))
    identity, problems = dstack_identity([*events, late])
    assert identity["compose_hash"] != "00" * 32
    assert problems == []
    ready = next(i for i, e in enumerate(events) if e.event == "system-ready")
    identity, problems = dstack_identity([*events[:ready], late, *events[ready:]])
    assert problems
    assert "compose-hash" in problems[0]


def test_runtime_digest_v1_formula() -> None:
    ev = Event(3, RUNTIME_EVENT_TYPE, b"", "app-id", bytes.fromhex("aa" * 20))
    expected = hashlib.sha384(
        (0x08000001).to_bytes(4, "little") + b":app-id:" + bytes.fromhex("aa" * 20)).digest()
    assert runtime_digest(ev) == expected
    v2 = replace(ev, version=2)
    jcs = b'{"name":"app-id","payload":"' + b"aa" * 20 + b'","type":134217729}'
    assert runtime_digest(v2) == hashlib.sha384(jcs).digest()


def test_v2_preimage_must_match() -> None:
    m, events = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    ev = Event(3, RUNTIME_EVENT_TYPE, b"", "x", b"\x01", version=2, preimage="{}")
    checks, _ = check_event_log(m, [*events, ev], policy=POLICY, app_compose=None)
    assert "eventlog.preimage" in [c.name for c in checks if not c.ok]


@pytest.mark.parametrize(("log", "message"), [
    ("not json", "not JSON"),
    ('{"a": 1}', "JSON array"),
    ([1], "not an object"),
    ([{"imr": 4, "event_type": 1, "digest": "00"}], "imr"),
    ([{"imr": 0, "event_type": -1, "digest": "00"}], "event_type"),
    ([{"imr": 0, "event_type": 1, "digest": "zz"}], "not hex"),
    ([{"imr": 0, "event_type": 1, "digest": "00" * 49}], "at most 48"),
    ([{"imr": 0, "event_type": 1, "digest": ""}], "no digest"),
    ([{"imr": 3, "event_type": RUNTIME_EVENT_TYPE, "event": 1}], "name"),
    ([{"imr": 3, "event_type": RUNTIME_EVENT_TYPE, "version": 9}], "version"),
])
def test_malformed_logs(log: str | list[Any], message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_event_log(log)


def test_double_encoded_log_and_list_form() -> None:
    _, log = PAIRS["tdx/dstack/verifier_fixtures_quote-report.json"]
    assert isinstance(log, str)
    assert parse_event_log(json.dumps(log)) == parse_event_log(log) == parse_event_log(
        json.loads(log))


def _relabel(ev: Event) -> Event:
    """The same RTMR3 extension, presented as a non-runtime event with a given digest."""
    return replace(ev, event_type=1, digest=runtime_digest(ev))


def test_relabelled_runtime_events_cannot_hide_identity() -> None:
    """Review R3: an imr-3 event with another event_type keeps its given digest, so the same
    RTMR3 replays; relabelling the real compose-hash and system-ready events must not let an
    app event emitted after system-ready become the TD's compose hash."""
    _, events = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    claimed = hashlib.sha256(b"the compose of a trusted app").digest()
    late = Event(3, RUNTIME_EVENT_TYPE, b"", "compose-hash", claimed)
    honest = [*events, late]  # what the TD really measured: the app emitted this later
    regs = replay_rtmrs(honest)
    m = {f"rtmr{i}": r.hex() for i, r in enumerate(regs)} | {"mrconfigid": "00" * 48}
    policy = replace(POLICY, dstack=DstackPolicy(compose_hashes=frozenset({claimed.hex()})))
    checks, _ = check_event_log(m, honest, policy=policy, app_compose=None)
    assert "dstack.compose_hash" in [c.name for c in checks if not c.ok]
    forged = [_relabel(e) if e.event in ("compose-hash", "system-ready") else e
              for e in honest[:-1]] + [late]
    assert replay_rtmrs(forged) == regs
    checks, identity = check_event_log(m, forged, policy=policy, app_compose=None)
    failed = [c.name for c in checks if not c.ok]
    assert "eventlog.event_type" in failed, (failed, identity)


def test_given_runtime_digest_must_match_payload() -> None:
    """A runtime event whose stated digest is not the digest of its payload is a forged or
    corrupted log, even when the recomputed digests replay."""
    m, events = measured("tdx/dstack/verifier_fixtures_quote-report.json")
    i = next(i for i, e in enumerate(events) if e.event == "app-id")
    forged = list(events)
    forged[i] = replace(events[i], digest=bytes(48))
    checks, _ = check_event_log(m, forged, policy=POLICY, app_compose=None)
    assert [c.name for c in checks if not c.ok] == ["eventlog.digest"]


def _keccak(data: bytes) -> bytes:
    """keccak256 from pycryptodome: not the implementation under test."""
    from Crypto.Hash import keccak

    return keccak.new(data=data, digest_bits=256).digest()


def _v2(identity: dict[str, str]) -> str:
    """MRCONFIGID v2 as dstack-types mr_config.rs defines it, written out from the events."""
    provider = json.loads(identity["key_provider"])
    kind = {"none": 0, "local-sgx": 1, "kms": 2, "tpm": 3}[provider["name"]]
    pre = (bytes.fromhex(identity["compose_hash"]) + bytes.fromhex(identity["app_id"])
           + bytes([kind]) + bytes.fromhex(provider["id"]))
    return ("02" + _keccak(pre).hex()).ljust(96, "0")


def test_mrconfigid_v2_is_recomputed_from_the_event_log() -> None:
    """dstack with a pinned key provider: 0x02 || keccak256(compose hash, app id, kind, id).
    The lite fixture's events (kms key provider, real payloads) with its register set to v2."""
    m, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    _, identity = check_event_log(m, events, policy=POLICY, app_compose=None)
    assert json.loads(identity["key_provider"])["name"] == "kms"
    v2 = dict(m, mrconfigid=_v2(identity))
    checks, _ = check_event_log(v2, events, policy=POLICY, app_compose=None)
    mc = next(c for c in checks if c.name == "dstack.mrconfigid")
    assert mc.ok, mc.detail
    assert "recomputed from the event log" in mc.detail
    assert all(c.ok for c in checks)
    # Each input of the hash is bound: another app id, provider or compose fails.
    for key, value in (("app_id", "00" * 20), ("compose_hash", "00" * 32),
                       ("key_provider", json.dumps({"name": "tpm", "id": ""}))):
        wrong = dict(m, mrconfigid=_v2({**identity, key: value}))
        checks, _ = check_event_log(wrong, events, policy=POLICY, app_compose=None)
        assert [c.name for c in checks if not c.ok] == ["dstack.mrconfigid"], key


def test_mrconfigid_v2_without_its_events_cannot_be_recomputed() -> None:
    m, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    _, identity = check_event_log(m, events, policy=POLICY, app_compose=None)
    v2 = dict(m, mrconfigid=_v2(identity))
    no_kp = [e for e in events if e.event != "key-provider"]
    checks, _ = check_event_log(v2, no_kp, policy=POLICY, app_compose=None)
    mc = next(c for c in checks if c.name == "dstack.mrconfigid")
    assert not mc.ok
    assert "key-provider" in mc.detail


def test_mrconfigid_v3_and_unknown_layouts() -> None:
    m, events = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    v3 = dict(m, mrconfigid="03" + "ab" * 32 + "00" * 15)
    checks, _ = check_event_log(v3, events, policy=POLICY, app_compose=None)
    mc = next(c for c in checks if c.name == "dstack.mrconfigid")
    assert mc.ok
    assert "not compared" in mc.detail
    for bad in ("04" + "ab" * 32 + "00" * 15, "01" + "ab" * 32 + "00" * 14 + "01"):
        checks, _ = check_event_log(dict(m, mrconfigid=bad), events, policy=POLICY,
                                    app_compose=None)
        assert [c.name for c in checks if not c.ok] == ["dstack.mrconfigid"], bad


def test_v2_quote_without_an_event_log_has_no_mrconfigid_verdict() -> None:
    """A bare quote (no event log, no compose asked for) is not refused for its layout."""
    m, _ = measured("tdx/dstack/verifier_fixtures_tdx-lite-getquote.json")
    checks, _ = check_event_log(dict(m, mrconfigid="02" + "ab" * 32 + "00" * 15), [],
                                policy=POLICY, app_compose=None)
    assert checks == []


def _flood(n: int) -> bytes:
    event = b'{"imr":0,"event_type":1,"digest":"' + b"ab" * 48 + b'"}'
    return b"[" + b",".join([event] * n) + b"]"


def test_an_event_log_over_the_size_limit_is_refused_before_parsing() -> None:
    """Issue 11: 31 MB, 300,000 events used 3.2 GB before the 4,096-event limit refused it."""
    doc = _flood(300_000)  # 35 MB
    tracemalloc.start()
    try:
        with pytest.raises(EvidenceError, match="limit 8388608"):
            parse_event_log(doc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing of its size allocated


def test_an_event_log_with_too_many_events_is_refused_before_parsing() -> None:
    doc = b"[" + b",".join([b'{"imr":0}'] * 700_000) + b"]"  # 7 MB of one-field events
    assert len(doc) < MAX_EVENT_LOG_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(EvidenceError, match="limit 4096 events"):
            parse_event_log(doc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(doc)  # the scan's copies, never 700,000 dicts (~20x the bytes)
    with pytest.raises(EvidenceError, match="4097 events"):  # the count still holds
        parse_event_log(_flood(MAX_EVENTS + 1))
    assert len(parse_event_log(_flood(MAX_EVENTS))) == MAX_EVENTS

"""Issue 11, point 7: a replayed answer is never "attested". A proxy between the gateway and
the provider records every answer and serves it again, with its signature, for a
byte-identical request (the same agent's or another's): a teegate node's signature covers the
gateway's per-call nonce; a NEAR-style endpoint signature is refused by the replay window
(once per answer id, persisted in the gateway's database)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from teegate.gateway import GatewayStore
from teegate.gateway.replay import created_time, expires_at, freshness_problem, response_key
from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Replay, Server, replaying_proxy, serving

ATTESTED = {"x-teegate-trust": "attested"}


def _body(stream: bool) -> bytes:
    return json.dumps({"model": "shared-model", "stream": stream, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "hello there"}]}).encode()


def _post(gw: Gw, key: str, body: bytes) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", content=body, timeout=30, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json", **ATTESTED})


def _events(r: httpx.Response) -> list[bytes]:
    return [e for e in r.content.split(b"\n\n") if e.startswith(b"data: ")]


def _call(gw: Gw, log: ReceiptLog, key: str, rid: str) -> dict[str, Any]:
    """The receipt's teegate.call event, once the receipt is written (endpoint signatures
    are fetched before it is)."""
    found: dict[str, Any] = {}

    def written() -> bool:
        log.flush()
        r = httpx.get(f"{gw.server.url}/v1/receipts/{rid}",
                      headers={"authorization": f"Bearer {key}"})
        if r.status_code != 200:
            return False
        found.update({e["type"]: e for e in r.json()["receipt"]["event_log"]})
        return True

    wait(written, timeout=10)
    call: dict[str, Any] = found["teegate.call"]
    return call


def _other_agent(gw: Gw) -> str:
    return gw.store.create_key("agent-b-" + uuid.uuid4().hex[:6], trust="standard")


# ---------------------------------------------------------------- teegate nodes: a nonce


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("who", ["same-agent", "other-agent"])
def test_a_replayed_node_answer_is_refused(make_gateway: GatewayFactory, node_a: Server,
                                           log: ReceiptLog, stream: bool, who: str) -> None:
    state = Replay()
    with serving(replaying_proxy(node_a.url, state)) as proxy:
        gw = make_gateway([{"id": "node", "platform": "tee-node", "base_url": proxy.url + "/v1",
                            "models": ["shared-model"], "development": True}],
                          receipt_log=log)
        body = _body(stream)
        first = _post(gw, gw.key, body)
        assert first.status_code == 200, first.text
        assert first.headers["x-teegate-trust"] == "attested"
        if stream:
            assert _events(first)[-1] == b"data: [DONE]"
        state.replay = True
        key = gw.key if who == "same-agent" else _other_agent(gw)
        again = _post(gw, key, body)
        assert state.replayed == 1
        if stream:  # the old events went out; the end of the stream is an error event
            last = json.loads(_events(again)[-1][len(b"data: "):])
            assert last["error"]["code"] == "response_signature_invalid"
            assert b"data: [DONE]" not in again.content
        else:
            assert again.status_code == 502
            assert again.json()["error"]["code"] == "response_signature_invalid"
            assert again.content != first.content
        call = _call(gw, log, key, again.headers["x-teegate-receipt"])
        assert call["outcome"] == "voided"
        assert "does not match" in call["error"]
        assert gw.provider("node").quarantined_until > time.time()


# --------------------------------------------------- endpoint signatures: the replay window


def _near(url: str) -> dict[str, Any]:
    return {"id": "near", "platform": "tee-near-ai", "base_url": url + "/v1",
            "models": ["shared-model"], "development": True}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_replayed_endpoint_signed_answer_is_voided(make_gateway: GatewayFactory,
                                                     node_a: Server, log: ReceiptLog,
                                                     stream: bool) -> None:
    """The node still serves the old answer's signature by id, and it verifies: the second
    copy of an answer id is a replay (here sent to another agent)."""
    state = Replay()
    with serving(replaying_proxy(node_a.url, state)) as proxy:
        gw = make_gateway([_near(proxy.url)], receipt_log=log)
        body = _body(stream)
        first = _post(gw, gw.key, body)
        assert first.status_code == 200
        assert _call(gw, log, gw.key, first.headers["x-teegate-receipt"])["outcome"] == "success"
        state.replay = True
        other = _other_agent(gw)
        again = _post(gw, other, body)
        assert state.replayed == 1
        call = _call(gw, log, other, again.headers["x-teegate-receipt"])
        assert call["outcome"] == "voided"
        assert "accepted before" in call["error"]
        assert gw.provider("near").quarantined_until > time.time()


def test_the_replay_window_outlives_a_gateway(make_gateway: GatewayFactory, node_a: Server,
                                              tmp_path: Path, log: ReceiptLog) -> None:
    """Accepted answer ids are kept in the database: another gateway process on it (or this
    one restarted) refuses the copy too."""
    state = Replay()
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    with serving(replaying_proxy(node_a.url, state)) as proxy:
        gw1 = make_gateway([_near(proxy.url)], db=db, receipt_log=log)
        first = _post(gw1, gw1.key, _body(False))
        assert _call(gw1, log, gw1.key, first.headers["x-teegate-receipt"])["outcome"] == (
            "success")
        gw1.server.stop()
        gw2 = make_gateway([_near(proxy.url)], db=db, receipt_log=log)
        state.replay = True
        again = _post(gw2, gw2.key, _body(False))
        assert state.replayed == 1
        call = _call(gw2, log, gw2.key, again.headers["x-teegate-receipt"])
        assert call["outcome"] == "voided"
        assert "accepted before" in call["error"]


def test_an_answer_older_than_the_window_is_refused(make_gateway: GatewayFactory,
                                                    node_a: Server, log: ReceiptLog) -> None:
    """Past the window the id is forgotten, and the answer's own (signed) 'created' time
    refuses it instead."""
    state = Replay()
    with serving(replaying_proxy(node_a.url, state)) as proxy:
        gw = make_gateway([_near(proxy.url)], receipt_log=log,
                          gateway={"replay_window_seconds": 1})
        first = _post(gw, gw.key, _body(False))
        assert _call(gw, log, gw.key, first.headers["x-teegate-receipt"])["outcome"] == (
            "success")
        time.sleep(2.2)
        state.replay = True
        again = _post(gw, gw.key, _body(False))
        assert state.replayed == 1
        call = _call(gw, log, gw.key, again.headers["x-teegate-receipt"])
        assert call["outcome"] == "voided"
        assert "before the call, more than the replay window of 1 s" in call["error"]


# ---------------------------------------------------------------- the pure rules, the store


def test_freshness_rules() -> None:
    assert freshness_problem(1000.0, 1000.5, 300) is None
    assert freshness_problem(700.0, 1000.0, 300) is None
    assert "an old answer replayed" in str(freshness_problem(699.0, 1000.0, 300))
    assert "after the call" in str(freshness_problem(1301.0, 1000.0, 300))
    assert "no 'created' time" in str(freshness_problem(None, 1000.0, 300))
    for bad in (None, "1000", True, float("nan"), float("inf"), [1000]):
        assert created_time(bad) is None
    assert created_time(1000) == 1000.0
    assert expires_at(999.0, 1000.2, 300) == 1301
    assert response_key("0xAbC", "id-1") == response_key("0xabc", "id-1")
    assert response_key("0xabc", "id-1") != response_key("0xabd", "id-1")


def _claims(store: GatewayStore, other: GatewayStore) -> None:
    key = response_key("0xabc", "chatcmpl-" + uuid.uuid4().hex)
    assert store.claim_response(key, expires_at=1100, now=1000)
    assert not store.claim_response(key, expires_at=1200, now=1050)
    assert not other.claim_response(key, expires_at=1200, now=1099)  # a second gateway
    assert other.claim_response(key, expires_at=1300, now=1100)  # its window ended
    assert not store.claim_response(key, expires_at=1400, now=1200)


def test_claims_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    _claims(GatewayStore(url), GatewayStore(url))


@pytest.mark.postgres
def test_claims_postgres() -> None:
    url = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "tg_replay_" + uuid.uuid4().hex[:10]
    s1, s2 = GatewayStore(url, schema=schema), GatewayStore(url, schema=schema)
    try:
        _claims(s1, s2)
    finally:
        s1.close()
        s2.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_expired_entries_are_swept(tmp_path: Path) -> None:
    store = GatewayStore(f"sqlite:///{tmp_path / 'gw.db'}")
    for i in range(50):
        assert store.claim_response(f"k{i}", expires_at=1000 + i, now=900)
    assert store.claim_response("late", expires_at=3000, now=2000)  # sweeps the 50
    rows = store._exec("SELECT COUNT(*) FROM tg_seen_responses")
    assert rows[0][0] == 1

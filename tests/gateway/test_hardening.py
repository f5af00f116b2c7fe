"""Issue 11, denial of service and ambiguity at the gateway's front door, over real sockets:
a body built to make the JSON guard slow does not stall other requests, a key named twice is
refused before anything is held or forwarded."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server

PRICE = {"input": 1_000_000, "output": 2_000_000}


@pytest.fixture
def gw(ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"], "prices": {"gpt-plain": PRICE}},
    ], ledger=ledger)


def _agent(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def _post(gw: Gw, body: bytes, key: str | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", content=body, timeout=60, headers={
        "authorization": f"Bearer {key or gw.key}", "content-type": "application/json"})


def test_a_body_made_to_slow_the_json_guard_does_not_stall_the_gateway(gw: Gw) -> None:
    # [ x130, then a string of escaped quotes that never closes: the old guard rescanned it
    # from every quote (~30 s for these 128 KB, on the event loop, /healthz waiting).
    body = b"[" * 130 + b'"' + b'\\"' * 64_000
    result: dict[str, Any] = {}

    def attack() -> None:
        result["r"] = _post(gw, body)

    t = threading.Thread(target=attack)
    t.start()
    time.sleep(0.5)  # the body is sent and being parsed (for ~30 s, before the fix)
    t0 = time.perf_counter()
    health = httpx.get(gw.server.url + "/healthz", timeout=10)
    waited = time.perf_counter() - t0
    t.join(30)
    assert health.status_code == 200
    assert waited < 2.0
    r = result["r"]
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_a_worst_case_body_of_the_full_size_is_refused_in_linear_time(gw: Gw) -> None:
    limit = gw.gateway.config.max_body_bytes
    body = b"[" * 130 + b'"' + b'\\"' * ((limit - 131) // 2)
    assert len(body) <= limit
    t0 = time.perf_counter()
    r = _post(gw, body)
    assert r.status_code == 400
    assert time.perf_counter() - t0 < 10.0  # quadratic: hours


@pytest.mark.parametrize("body", [
    b'{"model":"gpt-plain","messages":[{"role":"user","content":"hi"}],'
    b'"max_tokens":100000,"max_tokens":1}',
    b'{"model":"gpt-plain","model":"other","messages":[]}',
    b'{"model":"gpt-plain","messages":[{"role":"user","content":"a","content":"b"}]}',
    b'{"model":"gpt-plain","messages":[],"stream":true,'
    b'"stream_options":{"include_usage":false,"include_usage":true}}',
])
def test_a_key_named_twice_is_refused_before_anything_is_held(gw: Gw, ledger: Ledger,
                                                              body: bytes) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    r = _post(gw, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_json"
    assert "twice" in err["message"]
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance(agent).available == 1_000_000
    assert ledger.balance(agent).held == 0

"""Issue 11, denial of service and ambiguity at the gateway's front door, over real sockets:
a body built to make the JSON guard slow does not stall other requests, a key named twice is
refused before anything is held or forwarded."""

from __future__ import annotations

import socket
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


WRITE_ROUTES = [("POST", "/admin/agents"), ("DELETE", "/admin/agents/a1"),
                ("POST", "/admin/providers/plain/reattest"), ("POST", "/v1/conversations"),
                ("POST", "/v1/conversations/c1/close"), ("POST", "/v1/wallets/a1/deposits"),
                ("POST", "/v1/wallets/a1/withdrawals"), ("POST", "/v1/chat/completions"),
                ("PUT", "/v1/anything")]


@pytest.mark.parametrize(("method", "path", "key"), [
    *((m, p, k) for m, p in WRITE_ROUTES for k in (None, "tgk_wrong")),
    *((m, p, "agent") for m, p in WRITE_ROUTES if p.startswith("/admin/"))])
def test_a_write_is_refused_before_its_body_is_read(gw: Gw, method: str, path: str,
                                                    key: str | None) -> None:
    """Issue 11: 40 stalled unauthenticated 4 MiB uploads took the gateway from 106 to 268
    MiB RSS; the key is now checked from the headers and the answer comes at once."""
    if key == "agent":  # a valid key, but not the admin key
        key = gw.key
    auth = f"authorization: Bearer {key}\r\n".encode() if key else b""
    head = (f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {4 << 20}\r\n").encode() + auth + b"\r\n"
    with socket.create_connection(("127.0.0.1", gw.server.port)) as s:
        s.sendall(head + b'{"id":')  # and the rest of the 4 MiB never comes
        s.settimeout(3)
        got = b""
        while b"\r\n\r\n" not in got:
            data = s.recv(65536)
            assert data, "closed without an answer"
            got += data
    assert got.startswith(b"HTTP/1.1 401 "), got[:200]

"""A provider's response head is untrusted input: a header line smuggling a second header
through a bare LF (or carrying control characters) is a broken response, failed over like a
provider that never answered, and nothing of it reaches the client."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, wait
from tests.gateway.loopback import Server

BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class RawUpstream:
    """Answers every request on a loopback socket with ``head`` (raw bytes) and BODY."""

    def __init__(self, head: bytes, status: bytes = b"200 OK") -> None:
        self.head = head
        self.status = status
        self.calls = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                n = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                             if line.lower().startswith(b"content-length")))
                while len(rest) < n:
                    rest += conn.recv(65536)
                self.calls += 1
                conn.sendall(b"HTTP/1.1 " + self.status + b"\r\n" + self.head + b"content-length: "
                             + str(len(BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + BODY)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("head", [
    b"content-type: application/json\nx-injected: yes\r\n",
    b"content-type: application/json\rx-injected: yes\r\n",
    b"content-type: application/json\x00x-injected: yes\r\n",
])
def test_smuggled_header_lines_fail_over_and_never_reach_the_client(
        ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server,
        head: bytes) -> None:
    bad = RawUpstream(head)
    try:
        price = {"input": 1_000_000, "output": 1_000_000}
        gw = make_gateway([
            {"id": "bad", "platform": "open-ai", "base_url": bad.url, "models": ["gpt-plain"],
             "prices": {"gpt-plain": price}},
            {"id": "good", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
             "models": ["gpt-plain"], "prices": {"gpt-plain": {**price, "input": 2_000_000}}},
        ], ledger=ledger)
        agent = gw.gateway.keys.cached(gw.key)
        assert agent is not None
        ledger.deposit(agent.id, 1_000_000)
        body = {"model": "gpt-plain", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 10}
        r = httpx.post(gw.url + "/chat/completions", json=body,
                       headers={"authorization": f"Bearer {gw.key}"})
        assert bad.calls == 1  # the cheaper provider was tried first ...
        assert r.status_code == 200  # ... and its broken answer failed over
        assert r.headers["x-teegate-provider"] == "good"
        assert "x-injected" not in r.headers
        assert r.headers["content-type"] == "application/json"
        wait(lambda: ledger.balance(agent.id).held == 0)
        usage = r.json()["usage"]
        spent = 1_000_000 - ledger.balance(agent.id).available
        assert spent == 2 * usage["prompt_tokens"] + usage["completion_tokens"]  # once, "good"
        assert ledger.check().ok
    finally:
        bad.close()


@pytest.mark.parametrize("status", [b"302 Found", b"301 Moved Permanently", b"204 No Content"])
def test_an_answer_that_is_not_a_completion_charges_nothing(
        ledger: Ledger, make_gateway: GatewayFactory, status: bytes) -> None:
    """A redirect (a misconfigured base_url) or an empty answer delivered nothing: the hold
    is voided, not charged at its worst case."""
    up = RawUpstream(b"location: https://elsewhere.example/v1/chat/completions\r\n"
                     b"content-type: application/json\r\n", status)
    try:
        gw = make_gateway([
            {"id": "moved", "platform": "open-ai", "base_url": up.url, "models": ["m"],
             "prices": {"m": {"input": 1_000_000, "output": 1_000_000}}}], ledger=ledger)
        agent = gw.gateway.keys.cached(gw.key)
        assert agent is not None
        ledger.deposit(agent.id, 1_000_000)
        r = httpx.post(gw.url + "/chat/completions", headers={
            "authorization": f"Bearer {gw.key}"}, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
        assert up.calls == 1
        assert r.status_code == int(status[:3])
        wait(lambda: ledger.balance(agent.id).held == 0)
        assert ledger.balance(agent.id).available == 1_000_000
        assert "location" not in r.headers  # provider headers are not relayed
    finally:
        up.close()


@pytest.mark.parametrize("status", [b"401 Unauthorized", b"403 Forbidden"])
def test_a_provider_refusing_the_gateway_key_is_a_502_not_the_agents_401(
        ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server,
        status: bytes) -> None:
    """The provider's 401 is about the operator's provider key: relayed, the agent's SDK would
    report *its* teegate key as invalid. The call fails over, or is a 502 naming the cause."""
    refusing = RawUpstream(b"content-type: application/json\r\n", status)
    try:
        price = {"m": {"input": 1, "output": 1}}
        alone = make_gateway([{"id": "refusing", "platform": "open-ai", "base_url": refusing.url,
                               "models": ["m"], "prices": price}], ledger=ledger)
        agent = alone.gateway.keys.cached(alone.key)
        assert agent is not None
        ledger.deposit(agent.id, 1_000)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        r = httpx.post(alone.url + "/chat/completions", json=body,
                       headers={"authorization": f"Bearer {alone.key}"})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "upstream_unavailable"
        assert f"refusing: HTTP {status[:3].decode()}" in err["message"]
        assert "credentials" in err["message"]
        wait(lambda: ledger.balance(agent.id).held == 0)
        assert ledger.balance(agent.id).available == 1_000  # nothing was charged

        both = make_gateway([
            {"id": "refusing", "platform": "open-ai", "base_url": refusing.url,
             "models": ["gpt-plain"], "prices": {"gpt-plain": {"input": 1, "output": 1}}},
            {"id": "good", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
             "models": ["gpt-plain"], "prices": {"gpt-plain": {"input": 2, "output": 2}}},
        ], ledger=ledger)
        other = both.gateway.keys.cached(both.key)
        assert other is not None
        ledger.deposit(other.id, 1_000)
        calls = refusing.calls
        r = httpx.post(both.url + "/chat/completions", json={**body, "model": "gpt-plain"},
                       headers={"authorization": f"Bearer {both.key}"})
        assert refusing.calls == calls + 1  # the cheaper provider was tried first ...
        assert r.status_code == 200, r.text  # ... and the call failed over
        assert r.headers["x-teegate-provider"] == "good"
    finally:
        refusing.close()


def test_an_answer_past_max_response_bytes_is_a_failed_call_that_costs_nothing(
        ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"],
                        "prices": {"gpt-plain": {"input": 1, "output": 1}}}],
                      gateway={"max_response_bytes": 64}, ledger=ledger)
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, 1_000)
    r = httpx.post(gw.url + "/chat/completions", headers={"authorization": f"Bearer {gw.key}"},
                   json={"model": "gpt-plain", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502
    assert "exceeds 64 bytes" in r.json()["error"]["message"]
    wait(lambda: ledger.balance(agent.id).held == 0)
    assert ledger.balance(agent.id).available == 1_000

"""No upstream address reaches an agent, over real HTTP on loopback: error bodies, the
routing refusal's reasons, receipts, the public provider views and the node's engine errors
carry provider ids, never hosts and ports; base URLs and metrics need the admin key unless
the operator makes them public. Verdicts, signing keys and evidence digests stay public."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.node import DevTdxSource, HttpEngine, NodeKeys, create_node_app
from teegate.receipts import ReceiptLog
from teegate.redact import Redactor
from tests.gateway.conftest import GatewayFactory, Gw, admin_headers, wait
from tests.gateway.loopback import Server, serving

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean(text: str, port: int, front: Server | None = None) -> None:
    for needle in ("127.0.0.1", "localhost", str(port), *([str(front.port)] if front else [])):
        assert needle not in text, (needle, text)


@pytest.fixture
def port() -> int:
    return _closed_port()


@pytest.fixture
def front(port: int) -> Iterator[Server]:
    """A proxy before a node that is down, saying so as Envoy does: with the node's address."""
    async def report(request: Request) -> Response:
        return Response(f"upstream connect error to 127.0.0.1:{port}: connection refused",
                        502)

    with serving(Starlette(routes=[Route("/v1/attestation/report", report)])) as s:
        yield s


@pytest.fixture
def gw(make_gateway: GatewayFactory, log: ReceiptLog, port: int, front: Server) -> Gw:
    return make_gateway([
        {"id": "down-ip", "platform": "open-ai", "base_url": f"http://127.0.0.1:{port}/v1",
         "models": ["m"]},
        {"id": "down-name", "platform": "open-ai", "base_url": f"http://localhost:{port}/v1",
         "models": ["m"]},
        {"id": "node", "platform": "tee-node", "base_url": front.url + "/v1",
         "models": ["m-attested"], "development": True}],
        ledger=None, receipt_log=log)


def test_a_failed_call_names_providers_not_their_addresses(gw: Gw, log: ReceiptLog,
                                                           port: int) -> None:
    r = httpx.post(gw.url + "/chat/completions", json=BODY,
                   headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 502, r.text
    message = r.json()["error"]["message"]
    assert "down-ip" in message
    assert "down-name" in message
    _clean(r.text, port)
    # Its receipt says the same, without the addresses either.
    rid = r.headers["x-teegate-receipt"]
    log.flush()
    wait(lambda: httpx.get(f"{gw.server.url}/v1/receipts/{rid}",
                           headers={"authorization": f"Bearer {gw.key}"}).status_code == 200)
    receipt = httpx.get(f"{gw.server.url}/v1/receipts/{rid}",
                        headers={"authorization": f"Bearer {gw.key}"}).text
    assert "down-ip" in receipt
    _clean(receipt, port)


def test_a_routing_refusal_and_the_public_views_hide_addresses(gw: Gw, port: int,
                                                              front: Server) -> None:
    wait(lambda: gw.provider("node").status == "unreachable")
    assert str(port) in gw.provider("node").detail  # the operator's state has it ...
    r = httpx.post(gw.url + "/chat/completions", json={**BODY, "model": "m-attested"},
                   headers={"authorization": f"Bearer {gw.key}", "x-teegate-trust": "attested"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["considered"][0]["provider"] == "node"
    _clean(r.text, port, front)  # ... the agent's answer does not
    base = gw.server.url
    public = httpx.get(base + "/v1/providers")
    assert public.status_code == 200
    for view in public.json()["data"]:
        assert "base_url" not in view
        assert view["attestation"]["status"]
    _clean(public.text, port, front)
    one = httpx.get(base + "/v1/providers/node/attestation")
    _clean(one.text, port, front)
    assert "base_url" not in one.json()
    # The operator sees it all.
    full = httpx.get(base + "/v1/providers", headers=admin_headers()).json()["data"]
    assert {v["id"]: v["base_url"] for v in full}["node"] == front.url + "/v1"
    assert str(port) in httpx.get(base + "/v1/providers/node/attestation",
                                  headers=admin_headers()).json()["attestation"]["detail"]


def test_metrics_need_the_admin_key_unless_public(gw: Gw, make_gateway: GatewayFactory,
                                                  port: int) -> None:
    assert httpx.get(gw.server.url + "/metrics").status_code == 401
    r = httpx.get(gw.server.url + "/metrics", headers=admin_headers())
    assert r.status_code == 200
    assert "teegate_requests" in r.text
    other = make_gateway([{"id": "p", "platform": "open-ai", "models": ["m"],
                           "base_url": f"http://127.0.0.1:{port}/v1"}], ledger=None,
                         gateway={"public_metrics": True, "public_provider_details": True})
    assert httpx.get(other.server.url + "/metrics").status_code == 200
    view = httpx.get(other.server.url + "/v1/providers").json()["data"][0]
    assert view["base_url"] == f"http://127.0.0.1:{port}/v1"


def test_an_attested_providers_key_and_verdict_stay_public(make_gateway: GatewayFactory,
                                                          node_a: Server) -> None:
    gw = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                        "models": ["teegate-builtin"], "development": True}], ledger=None)
    wait(lambda: gw.provider("node-a").status == "attested")
    view = httpx.get(gw.server.url + "/v1/providers/node-a/attestation").json()
    attested = gw.provider("node-a").attested
    assert view["attestation"]["signing_address"] == attested.signing_address
    assert view["attestation"]["verdict"] == attested.digest
    assert view["verdict"]["accepted"] is True
    assert view["verdict_digest"] == gw.provider("node-a").last_verdict.digest()


def test_the_node_does_not_show_its_engine_address(dev_pki: Any, port: int) -> None:
    engine = HttpEngine(f"http://127.0.0.1:{port}")
    app = create_node_app(DevTdxSource(dev_pki), engine, keys=NodeKeys())
    with serving(app) as node:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            r = httpx.request(method, node.url + path, content=json.dumps(BODY),
                              headers={"content-type": "application/json"})
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "engine_unavailable"
            assert "engine" in r.json()["error"]["message"]
            _clean(r.text, port)


@pytest.mark.parametrize(("text", "kept"), [
    ("cannot connect to 10.1.2.3:8001: ConnectionRefusedError: [Errno 111] Connect call "
     "failed ('10.1.2.3', 8001)", "ConnectionRefusedError"),
    ("Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0)", "Multiple"),
    ("engine http://vllm:8000/v1/chat/completions: timed out", "timed out"),
    ("p: [2001:db8::7]:443 reset; fe80::1%eth0 down", "reset"),
    ("vllm:8000: refused", "refused"),
    ("gpu.0.driver: 535.104.05, vbios 96.00.9F.00.01, at 12:30:45, svn 1.2.3",
     "535.104.05, vbios 96.00.9F.00.01, at 12:30:45, svn 1.2.3"),
    ("the engine (vllm) is down", "the engine (vllm) is down"),
])
def test_redactor(text: str, kept: str) -> None:
    out = Redactor(["http://vllm:8000/v1", "https://node.internal.example/v1"])(text)
    assert kept in out
    for leak in ("10.1.2.3", "8001", "::1", "http://", "2001:db8", "fe80", "vllm:8000"):
        assert leak not in out, out
    assert Redactor(["https://node.internal.example/v1"])(
        "node.internal.example: HTTP 500") == "<upstream>: HTTP 500"

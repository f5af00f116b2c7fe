"""A hold released under a running call (an expiry sweep from a host whose clock runs ahead):
the receipt states what was charged (nothing), and the gateway stops serving the call.
Before, the receipt stated the usage's cost though nothing was charged, and the answer was
served in full."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server, serving

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def _slow_upstream() -> Starlette:
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if not body.get("stream"):
            await asyncio.sleep(1.0)
            return Response(json.dumps({
                "id": "chatcmpl-slow", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "stop"}], "usage": USAGE}),
                media_type="application/json")

        async def gen() -> AsyncIterator[bytes]:
            for i in range(100):
                yield (b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk",'
                       b'"choices":[{"index":0,"delta":{"content":"w%d "}}]}\n\n' % i)
                await asyncio.sleep(0.03)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def slow() -> Iterator[Server]:
    with serving(_slow_upstream()) as s:
        yield s


@pytest.fixture
def gw(make_gateway: GatewayFactory, slow: Server, ledger: Ledger, log: object) -> Gw:
    g = make_gateway([{"id": "slow", "platform": "open-ai", "base_url": slow.url + "/v1",
                       "models": ["m"], "prices": {"m": {"input": 1000, "output": 1000}}}],
                     gateway={"hold_seconds": 0.6}, ledger=ledger, receipt_log=log)
    agent = g.gateway.keys.cached(g.key)
    assert agent is not None
    ledger.deposit(agent.id, 10**9)
    return g


def _sweep_ahead(ledger: Ledger, after: float) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        ledger.expire(now=time.time() + 3600)  # a host whose clock is an hour ahead

    t = threading.Thread(target=run)
    t.start()
    return t


def _receipt(gw: Gw, rid: str) -> dict[str, object]:
    r = httpx.get(f"{gw.url}/aci/receipts/{rid}", headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    doc: dict[str, object] = r.json()
    return doc


def _event(doc: dict[str, object], etype: str) -> dict[str, object]:
    events = doc["event_log"]
    assert isinstance(events, list)
    return next(e for e in events if e["type"] == etype)


def test_a_stream_whose_hold_is_released_is_cut_off_and_charged_nothing(
        gw: Gw, ledger: Ledger) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": "hello"}]}
    sweep = _sweep_ahead(ledger, 0.3)
    with httpx.stream("POST", gw.url + "/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {gw.key}"}) as r:
        assert r.status_code == 200
        rid = r.headers["x-receipt-id"]
        raw = b"".join(r.iter_raw())
    sweep.join()
    assert b"hold_lost" in raw
    assert b"[DONE]" not in raw
    assert raw.count(b'"delta"') < 60  # stopped soon after the renewal found the hold gone
    doc = _receipt(gw, rid)
    assert _event(doc, "teegate.call")["outcome"] == "failed"
    assert "hold" in str(_event(doc, "teegate.call")["error"])
    assert _event(doc, "teegate.settlement")["cost"] == 0
    assert ledger.spend(gw.gateway.keys.cached(gw.key).id) == []
    assert ledger.check().ok


def test_a_plain_answer_whose_hold_is_released_is_withheld_and_charged_nothing(
        gw: Gw, ledger: Ledger) -> None:
    body = {"model": "m", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}
    sweep = _sweep_ahead(ledger, 0.3)
    r = httpx.post(gw.url + "/chat/completions", json=body, timeout=30,
                   headers={"authorization": f"Bearer {gw.key}"})
    sweep.join()
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "hold_lost"
    doc = _receipt(gw, r.headers["x-receipt-id"])
    call = _event(doc, "teegate.call")
    assert call["outcome"] == "failed"
    assert "withheld" in str(call["error"])
    assert _event(doc, "teegate.settlement")["cost"] == 0  # was the usage's cost, uncharged
    returned = _event(doc, "response.returned")["body_hash"]
    assert returned == "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert ledger.spend(gw.gateway.keys.cached(gw.key).id) == []
    assert ledger.check().ok

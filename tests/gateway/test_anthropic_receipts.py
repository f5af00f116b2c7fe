"""Receipts of calls served by platform ``anthropic``: they name the translation and cite the
hash of the Messages bytes the provider was sent and answered (before translation) beside
the hash of what the agent got; plain, streamed, and through the Responses API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server, serving

SENT: list[bytes] = []  # the exact request bytes the Messages server received
ANSWERED: list[bytes] = []  # and the exact bytes it answered
PLAIN = (b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",'
         b'"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn",'
         b'"usage":{"input_tokens":10,"output_tokens":5}}')


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


STREAM = [
    _sse("message_start", {"message": {"id": "msg_2", "model": "claude-x",
                                       "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
    _sse("content_block_stop", {"index": 0}),
    _sse("message_delta", {"delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 5}}),
    _sse("message_stop", {}),
]


def _app() -> Starlette:
    async def messages(request: Request) -> Response:
        body = await request.body()
        SENT.append(body)
        if not json.loads(body).get("stream"):
            ANSWERED.append(PLAIN)
            return Response(PLAIN, media_type="application/json")
        ANSWERED.append(b"".join(STREAM))

        async def gen() -> AsyncIterator[bytes]:
            for ev in STREAM:
                yield ev

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serving(_app()) as s:
        yield s


@pytest.fixture
def gw(make_gateway: GatewayFactory, upstream: Server, log: ReceiptLog) -> Gw:
    return make_gateway([{"id": "a", "platform": "anthropic", "base_url": upstream.url + "/v1",
                          "models": ["claude-x"]}], receipt_log=log)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _events(gw: Gw, rid: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{gw.url}/aci/receipts/{rid}", headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    return {e["type"]: e for e in r.json()["event_log"]}


def _hashes(ev: dict[str, dict[str, Any]]) -> tuple[str, str, str, str]:
    return (ev["request.received"]["body_hash"], ev["request.forwarded"]["body_hash"],
            ev["response.received"]["body_hash"], ev["response.returned"]["body_hash"])


def _headers(gw: Gw) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.key}", "content-type": "application/json"}


def test_plain_call_receipt_names_translation_and_both_sides(gw: Gw) -> None:
    body = json.dumps({"model": "claude-x", "max_tokens": 20,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    r = httpx.post(gw.url + "/chat/completions", content=body, headers=_headers(gw))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hello"
    ev = _events(gw, r.headers["x-teegate-receipt"])
    assert ev["teegate.call"]["translation"] == "chat.completions->anthropic.messages"
    assert _hashes(ev) == (_sha(body), _sha(SENT[-1]), _sha(ANSWERED[-1]), _sha(r.content))


def test_streamed_call_receipt_hashes_the_provider_events(gw: Gw) -> None:
    body = json.dumps({"model": "claude-x", "max_tokens": 20, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with httpx.stream("POST", gw.url + "/chat/completions", content=body,
                      headers=_headers(gw)) as r:
        got = r.read()
        rid = r.headers["x-teegate-receipt"]
    assert b'"content":"hi"' in got
    assert got.endswith(b"data: [DONE]\n\n")
    ev = _events(gw, rid)
    assert ev["teegate.call"]["translation"] == "chat.completions->anthropic.messages"
    assert ev["teegate.call"]["outcome"] == "success"
    assert _hashes(ev) == (_sha(body), _sha(SENT[-1]), _sha(ANSWERED[-1]), _sha(got))


def test_responses_call_through_anthropic_names_both_translations(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.responses.with_raw_response.create(model="claude-x", input="hi",
                                                    max_output_tokens=20, store=False)
    assert raw.parse().output_text == "hello"
    ev = _events(gw, raw.headers["x-teegate-receipt"])
    assert ev["teegate.call"]["translation"] == (
        "responses->chat.completions->anthropic.messages")
    assert _hashes(ev)[1:] == (_sha(SENT[-1]), _sha(ANSWERED[-1]),
                               _sha(raw.http_response.content))

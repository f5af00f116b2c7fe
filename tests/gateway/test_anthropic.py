"""Platform ``anthropic`` through a loopback server that speaks the Messages API, driven by
the real openai SDK: the translated answer, the usage the ledger charges, the stream order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, wait
from tests.gateway.loopback import Server, serving

PRICE = {"input": 1_000_000, "output": 2_000_000}
SEEN: list[dict[str, Any]] = []
HEADERS: list[dict[str, str]] = []

_MSG = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hello"},
                    {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def _app() -> Starlette:
    async def messages(request: Request) -> Response:
        body = json.loads(await request.body())
        SEEN.append(body)
        HEADERS.append(dict(request.headers))
        if body["messages"][-1]["content"][0].get("text") == "limit":
            return JSONResponse({"type": "error", "error": {"type": "rate_limit_error",
                                                            "message": "slow down"}},
                                429, headers={"retry-after": "7"})
        if not body.get("stream"):
            return JSONResponse(_MSG)

        async def gen() -> AsyncIterator[bytes]:
            yield _sse("message_start", {"message": {"id": "msg_2", "model": "claude-x",
                                                     "usage": {"input_tokens": 10,
                                                               "output_tokens": 1}}})
            yield _sse("content_block_start", {"index": 0,
                                               "content_block": {"type": "text", "text": ""}})
            for w in ("hel", "lo"):
                yield _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                         "text": w}})
            yield _sse("content_block_stop", {"index": 0})
            yield _sse("message_delta", {"delta": {"stop_reason": "end_turn"},
                                         "usage": {"output_tokens": 5}})
            yield _sse("message_stop", {})

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serving(_app()) as s:
        yield s


def test_anthropic_plain_stream_and_429(make_gateway: GatewayFactory, ledger: Ledger,
                                        upstream: Server, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("TG_ANTHROPIC_KEY", "sk-ant-test")
    gw = make_gateway([{"id": "a", "platform": "anthropic", "base_url": upstream.url + "/v1",
                        "models": ["claude-x"], "api_key_env": "TG_ANTHROPIC_KEY",
                        "prices": {"claude-x": PRICE}}], ledger=ledger)
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, 1_000_000)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-x", messages=[{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer"}}}}}])
    r = raw.parse()
    assert r.choices[0].message.content == "hello"
    tc = r.choices[0].message.tool_calls
    assert tc is not None
    assert isinstance(tc[0], ChatCompletionMessageFunctionToolCall)
    assert tc[0].function.name == "f"
    assert json.loads(tc[0].function.arguments) == {"a": 1}
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (10, 5)
    assert raw.headers["x-teegate-platform"] == "anthropic"
    sent = SEEN[-1]
    assert sent["system"] == "be brief"
    assert sent["max_tokens"] > 0
    assert sent["tools"][0]["input_schema"]["type"] == "object"
    assert HEADERS[-1]["x-api-key"] == "sk-ant-test"
    assert HEADERS[-1]["anthropic-version"] == "2023-06-01"
    wait(lambda: ledger.balance(agent.id).held == 0)
    assert ledger.spend(agent.id)[0].amount == 10 + 2 * 5

    chunks = list(client.chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["", "hel", "lo", None]
    assert chunks[-1].choices[0].finish_reason == "stop"
    wait(lambda: ledger.balance(agent.id).held == 0)
    assert sum(s.amount for s in ledger.spend(agent.id)) == 2 * (10 + 2 * 5)

    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="claude-x",
                                       messages=[{"role": "user", "content": "limit"}])
    assert e.value.response.headers["retry-after"] == "7"


def test_an_attested_call_never_reaches_anthropic(make_gateway: GatewayFactory,
                                                   upstream: Server) -> None:
    gw = make_gateway([{"id": "a", "platform": "anthropic", "base_url": upstream.url + "/v1",
                        "models": ["claude-x"]}])
    before = len(SEEN)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude-x@attested",
                                       messages=[{"role": "user", "content": "hi"}])
    assert len(SEEN) == before

"""Platform ``anthropic`` through a loopback server that speaks the Messages API, driven by
the real openai SDK: the translated answer, the usage the ledger charges, the stream order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionToolParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from teegate.gateway.calls import CallRecord
from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, serving

PRICE = {"input": 1_000_000, "output": 2_000_000}
CHEAP = {"input": 500_000, "output": 1_000_000}
SEEN: list[dict[str, Any]] = []
HEADERS: list[dict[str, str]] = []
BUSY: list[int] = []  # calls the overloaded server answered 529

_MSG = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "hello"},
                    {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


_START = _sse("message_start", {"message": {"id": "msg_3", "model": "claude-x",
                                            "usage": {"input_tokens": 10, "output_tokens": 1}}})
STREAMS = {
    # overloaded after two words: Anthropic's mid-stream error event
    "break": [_START,
              _sse("content_block_start", {"index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
              _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                 "text": "one "}}),
              _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                 "text": "two"}}),
              _sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})],
    # text, then two tool calls whose arguments arrive as input_json_delta pieces
    "tools": [_START,
              _sse("content_block_start", {"index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
              _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                 "text": "Looking."}}),
              _sse("content_block_stop", {"index": 0}),
              _sse("content_block_start", {"index": 1, "content_block": {
                  "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
              *(_sse("content_block_delta", {"index": 1, "delta": {
                  "type": "input_json_delta", "partial_json": part}})
                for part in ("", '{"city": ', '"Par', 'is"}')),
              _sse("content_block_stop", {"index": 1}),
              _sse("content_block_start", {"index": 2, "content_block": {
                  "type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}}),
              *(_sse("content_block_delta", {"index": 2, "delta": {
                  "type": "input_json_delta", "partial_json": part}})
                for part in ('{"tz"', ': "CET"}')),
              _sse("content_block_stop", {"index": 2}),
              _sse("message_delta", {"delta": {"stop_reason": "tool_use"},
                                     "usage": {"output_tokens": 30}}),
              _sse("message_stop", {})],
}


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
        said = body["messages"][-1]["content"][0].get("text")
        if said in STREAMS:
            events = STREAMS[said]

            async def fixed() -> AsyncIterator[bytes]:
                for ev in events:
                    yield ev

            return StreamingResponse(fixed(), media_type="text/event-stream")

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

    async def overloaded(request: Request) -> Response:
        SEEN.append(json.loads(await request.body()))
        BUSY.append(1)
        return JSONResponse({"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "Overloaded"}}, 529)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                             Route("/busy/v1/messages", overloaded, methods=["POST"])])


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


def _funded(gw: Gw, ledger: Ledger) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, 1_000_000)
    return str(agent.id)


def _records(gw: Gw) -> list[CallRecord]:
    out: list[CallRecord] = []
    gw.gateway.concluded_hooks.append(out.append)
    return out


def test_overloaded_fails_over_and_is_503_with_retry_when_alone(
        make_gateway: GatewayFactory, ledger: Ledger, upstream: Server) -> None:
    busy = {"id": "busy", "platform": "anthropic", "base_url": upstream.url + "/busy/v1",
            "models": ["claude-x"], "prices": {"claude-x": CHEAP}}  # cheaper: tried first
    gw = make_gateway([busy, {"id": "ok", "platform": "anthropic",
                              "base_url": upstream.url + "/v1", "models": ["claude-x"],
                              "prices": {"claude-x": PRICE}}], ledger=ledger)
    agent, records, before = _funded(gw, ledger), _records(gw), len(BUSY)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-x", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "hello"
    assert raw.headers["x-teegate-provider"] == "ok"
    assert len(BUSY) == before + 1  # the 529 was failed over, not relayed
    wait(lambda: bool(records))
    assert records[-1].attempts == ["busy", "ok"]
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.spend(agent)[0].amount == 10 + 2 * 5  # at the provider that served it

    alone = make_gateway([busy], ledger=ledger)
    agent = _funded(alone, ledger)
    before = len(BUSY)
    retrying = openai.OpenAI(base_url=alone.url, api_key=alone.key, max_retries=1)
    with pytest.raises(openai.InternalServerError) as e:
        retrying.chat.completions.create(model="claude-x",
                                         messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert e.value.code == "upstream_overloaded"
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.response.headers["x-should-retry"] == "true"
    assert len(BUSY) == before + 2  # the SDK retried once, as the answer allowed
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.balance(agent).available == 1_000_000  # voided both times


def test_error_event_mid_stream_is_an_error_charged_for_what_was_delivered(
        make_gateway: GatewayFactory, ledger: Ledger, upstream: Server) -> None:
    gw = make_gateway([{"id": "a", "platform": "anthropic", "base_url": upstream.url + "/v1",
                        "models": ["claude-x"], "prices": {"claude-x": PRICE}}], ledger=ledger)
    agent, records = _funded(gw, ledger), _records(gw)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    got: list[str | None] = []

    def read() -> None:
        for c in client.chat.completions.create(
                model="claude-x", messages=[{"role": "user", "content": "break"}],
                stream=True, max_tokens=500):
            got.append(c.choices[0].delta.content if c.choices else None)

    with pytest.raises(openai.APIError) as e:
        read()
    assert got == ["", "one ", "two"]  # what came before the error, then the error
    assert "Overloaded" in e.value.message
    wait(lambda: bool(records))
    rec = records[-1]
    assert rec.outcome == "failed"
    assert rec.error == "the provider sent an error event mid-stream"
    assert rec.usage is None  # Messages sends no final usage before its error event
    assert rec.content_events == 2
    wait(lambda: ledger.balance(agent).held == 0)
    # No usage: the pipeline charges the prompt's upper bound and one output token per
    # content event delivered, far below the hold's worst case (500 output tokens).
    charged = ledger.spend(agent)[0].amount
    assert charged == rec.prompt_estimate + 2 * rec.content_events
    assert charged < rec.prompt_estimate + 2 * 500


def test_streamed_tool_calls_accumulate_in_the_openai_sdk(
        make_gateway: GatewayFactory, ledger: Ledger, upstream: Server) -> None:
    gw = make_gateway([{"id": "a", "platform": "anthropic", "base_url": upstream.url + "/v1",
                        "models": ["claude-x"], "prices": {"claude-x": PRICE}}], ledger=ledger)
    agent = _funded(gw, ledger)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "properties": {arg: {"type": "string"}}}}}
        for name, arg in (("weather", "city"), ("time", "tz"))]
    with client.chat.completions.stream(
            model="claude-x", messages=[{"role": "user", "content": "tools"}], tools=tools,
            stream_options={"include_usage": True}) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Looking."
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in calls
            if isinstance(t, ChatCompletionMessageFunctionToolCall)] == [
        ("toolu_1", "weather", {"city": "Paris"}), ("toolu_2", "time", {"tz": "CET"})]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (10, 30)
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.spend(agent)[0].amount == 10 + 2 * 30

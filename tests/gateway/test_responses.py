"""The Responses API through the gateway with the real openai SDK: translated to chat for
chat-only providers (a development TEE node with inline signatures, a hosted-style
upstream, a local server answering tool calls), forwarded with exact bytes to a provider
that speaks it (a local Responses server), stored per agent with previous_response_id,
GET and DELETE; held, settled and receipted like chat."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from teegate.ledger import Ledger
from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, serving

PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output
TOOL = {"type": "function", "name": "get_weather", "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}
SEEN: list[bytes] = []
NATIVE = (b'{"id": "resp_native1", "object": "response", "created_at": 1700000000, '
          b'"status": "completed", "model": "native-model", "output": [{"id": "msg_n1", '
          b'"type": "message", "status": "completed", "role": "assistant", "content": '
          b'[{"type": "output_text", "text": "native  answer", "annotations": []}]}], '
          b'"parallel_tool_calls": true, "tool_choice": "auto", "tools": [], '
          b'"usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}')


def _tools_and_native() -> Starlette:
    """A chat provider that calls tools, and a Responses provider with fixed bytes."""
    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
        return b"data: " + json.dumps({"id": "chatcmpl-t", "object": "chat.completion.chunk",
                                       "created": 1, "model": "tool-model", "choices": [
                                           {"index": 0, "delta": delta,
                                            "finish_reason": finish}], **more}).encode() + b"\n\n"

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        SEEN.append(json.dumps(body).encode())
        call = {"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}
        if not body.get("stream"):
            return Response(json.dumps({
                "id": "chatcmpl-t", "object": "chat.completion", "created": 1,
                "model": "tool-model", "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [
                    {**call, "function": {"name": "get_weather",
                                          "arguments": '{"city":"Paris"}'}}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
                media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "tool_calls": [call]})
            for part in ('{"city"', ':"Paris"}'):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            yield chunk({}, "tool_calls")
            yield (b'data: {"id":"chatcmpl-t","choices":[],"usage":{"prompt_tokens":10,'
                   b'"completion_tokens":5,"total_tokens":15}}\n\n')
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def responses(request: Request) -> Response:
        SEEN.append(await request.body())
        return Response(NATIVE, media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/responses", responses, methods=["POST"])])


@pytest.fixture(scope="module")
def tools() -> Iterator[Server]:
    with serving(_tools_and_native()) as s:
        yield s


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, plain_upstream: Server, tools: Server,
       ledger: Ledger, log: ReceiptLog) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin"], "development": True,
         "prices": {"teegate-builtin": PRICE}},
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"], "prices": {"gpt-plain": PRICE}},
        {"id": "tools", "platform": "open-ai", "base_url": tools.url + "/v1",
         "models": ["tool-model"], "prices": {"tool-model": PRICE}},
        {"id": "native", "platform": "open-ai", "base_url": tools.url + "/v1",
         "models": ["native-model"], "responses_api": True,
         "prices": {"native-model": PRICE}},
    ], ledger=ledger, receipt_log=log)


def _client(gw: Gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)


def _funded(gw: Gw, ledger: Ledger) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, 1_000_000)
    return str(agent.id)


def _call_event(gw: Gw, rid: str) -> dict[str, Any]:
    auth = {"authorization": f"Bearer {gw.key}"}
    r = httpx.get(f"{gw.url}/aci/receipts/{rid}", headers=auth)
    assert r.status_code == 200, r.text
    return next(e for e in r.json()["event_log"] if e["type"] == "teegate.call")


def test_plain_translated_attested_charged_and_receipted(gw: Gw, ledger: Ledger) -> None:
    agent = _funded(gw, ledger)
    raw = _client(gw).responses.with_raw_response.create(
        model="teegate-builtin", input="tell me something", instructions="be brief",
        max_output_tokens=12, extra_headers={"X-Teegate-Trust": "attested"})
    r = raw.parse()
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.output_text
    assert r.usage is not None
    assert r.usage.input_tokens == 5  # "be brief" + "tell me something"
    assert raw.headers["x-teegate-trust"] == "attested"
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.balance(agent).available == (
        1_000_000 - r.usage.input_tokens - 2 * r.usage.output_tokens)
    call = _call_event(gw, raw.headers["x-teegate-receipt"])
    assert call["translation"] == "responses->chat.completions"
    assert call["outcome"] == "success"
    assert ledger.check().ok


def test_stream_translated_typed_events(gw: Gw, ledger: Ledger) -> None:
    agent = _funded(gw, ledger)
    client = _client(gw)
    plain = client.responses.create(model="gpt-plain", input="hello there",
                                    max_output_tokens=10)
    events: list[Any] = list(client.responses.create(
        model="gpt-plain", input="hello there", max_output_tokens=10, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds
    assert "response.output_text.done" in kinds
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == plain.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.output_text == plain.output_text
    assert done.usage is not None
    assert done.usage.output_tokens == plain.usage.output_tokens  # type: ignore[union-attr]
    wait(lambda: ledger.balance(agent).held == 0)
    spent = 2 * (done.usage.input_tokens + 2 * done.usage.output_tokens)
    assert ledger.balance(agent).available == 1_000_000 - spent


def test_function_calls_plain_and_streamed(gw: Gw, ledger: Ledger) -> None:
    _funded(gw, ledger)
    client = _client(gw)
    r = client.responses.create(model="tool-model", input="weather in Paris?",
                                tools=[TOOL])  # type: ignore[list-item]
    call = r.output[0]
    assert call.type == "function_call"
    assert (call.name, call.arguments, call.call_id) == (
        "get_weather", '{"city":"Paris"}', "call_1")
    sent = json.loads(SEEN[-1])
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    events: list[Any] = list(client.responses.create(
        model="tool-model", input="weather in Paris?", tools=[TOOL],  # type: ignore[list-item]
        stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    args = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert args.arguments == '{"city":"Paris"}'
    item = next(e for e in events if e.type == "response.output_item.done").item
    assert item.type == "function_call"
    # the tool's result goes back as function_call_output, on top of the stored call
    follow = client.responses.create(
        model="tool-model", previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
    assert follow.id != r.id
    messages = json.loads(SEEN[-1])["messages"]
    assert messages[0] == {"role": "user", "content": "weather in Paris?"}
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_stored_previous_get_delete(gw: Gw, ledger: Ledger) -> None:
    _funded(gw, ledger)
    client = _client(gw)
    first = client.responses.create(model="gpt-plain", input="first question")
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(model="gpt-plain", input="second question",
                                     previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert second.usage.input_tokens == 2 + len(first.output_text.split()) + 2
    unstored = client.responses.create(model="gpt-plain", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-plain", input="x", previous_response_id=unstored.id)
    # another agent of the same gateway cannot read or chain on it
    other = gw.store.create_key("agent-other", trust="standard")
    gw.gateway.keys.reload()
    stranger = openai.OpenAI(base_url=gw.url, api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(first.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_native_provider_gets_and_returns_exact_bytes(gw: Gw, ledger: Ledger) -> None:
    _funded(gw, ledger)
    body = b'{"model": "native-model",  "input": "hi", "max_output_tokens": 30}'
    r = httpx.post(gw.url + "/responses", content=body,
                   headers={"authorization": f"Bearer {gw.key}",
                            "content-type": "application/json"})
    assert r.status_code == 200
    assert r.content == NATIVE
    assert SEEN[-1] == body
    call = _call_event(gw, r.headers["x-teegate-receipt"])
    assert "translation" not in call
    got = _client(gw).responses.retrieve("resp_native1")
    assert got.output_text == "native  answer"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_response_stored_at_one_gateway_chains_at_another(
        make_gateway: GatewayFactory, plain_upstream: Server, tmp_path: Path,
        kind: str) -> None:
    """Stored in the gateways' shared database (SQLite or PostgreSQL), per agent."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = os.environ.get("TEEGATE_TEST_PG", "")
        if not url:
            pytest.skip("TEEGATE_TEST_PG not set")
    providers = [{"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
                  "models": ["gpt-plain"]}]
    a = make_gateway(providers, db=url)
    b = make_gateway(providers, db=url)
    first = _client(a).responses.create(model="gpt-plain", input="remember this")
    at_b = openai.OpenAI(base_url=b.url, api_key=a.key, max_retries=0)  # the same agent
    assert at_b.responses.retrieve(first.id).output_text == first.output_text
    second = at_b.responses.create(model="gpt-plain", input="and this",
                                   previous_response_id=first.id)
    assert second.usage is not None
    assert second.usage.input_tokens == 2 + len(first.output_text.split()) + 2
    at_b.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        _client(a).responses.retrieve(first.id)

"""Bad input and bad clients: malformed bodies, unknown models, bad keys, oversized bodies,
a client that disconnects mid-stream; the admin API for agent keys."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.gateway.conftest import GatewayFactory, Gw, admin_headers
from tests.gateway.loopback import Server, serving

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


class SlowStream:
    """An OpenAI-compatible upstream whose streams take 100 events of 20 ms each."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed_early = False

    def app(self) -> Starlette:
        async def chat(request: Request) -> StreamingResponse:
            await request.body()

            async def gen() -> AsyncIterator[bytes]:
                try:
                    for i in range(100):
                        self.sent += 1
                        yield (b'data: {"id":"c1","object":"chat.completion.chunk","choices":'
                               b'[{"index":0,"delta":{"content":"w%d "}}]}\n\n' % i)
                        await asyncio.sleep(0.02)
                    yield b"data: [DONE]\n\n"
                except BaseException:
                    self.closed_early = True
                    raise

            return StreamingResponse(gen(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def slow() -> Iterator[tuple[SlowStream, Server]]:
    s = SlowStream()
    with serving(s.app()) as server:
        yield s, server


@pytest.fixture
def gw(make_gateway: GatewayFactory, plain_upstream: Server,
       slow: tuple[SlowStream, Server]) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"]},
        {"id": "slow", "platform": "ollama", "base_url": slow[1].url + "/v1",
         "models": ["slow-model"]},
    ], gateway={"max_body_bytes": 4096})


def _post(gw: Gw, content: bytes, key: str | None = None, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", content=content, headers={
        "authorization": f"Bearer {key or gw.key}", "content-type": "application/json",
        **headers})


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None), (b"[1,2]", None), (b'{"messages": []}', "model"),
    (b'{"model": "gpt-plain"}', "messages"),
    (b'{"model": "gpt-plain", "messages": [], "stream": "yes"}', "stream"),
])
def test_malformed_body_400(gw: Gw, body: bytes, param: str | None) -> None:
    r = _post(gw, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert r.headers["x-should-retry"] == "false"


def test_unknown_model_bad_key_oversized(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert nf.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=gw.url, api_key="tgk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-plain", messages=MSG)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(gw.url + "/chat/completions", json={"model": "gpt-plain", "messages": MSG})
    assert r.status_code == 401
    assert r.headers["x-should-retry"] == "false"
    big = b'{"model":"gpt-plain","messages":[{"role":"user","content":"' + b"x" * 5000 + b'"}]}'
    r = _post(gw, big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield big[:3000]
        yield big[3000:]

    r = httpx.post(gw.url + "/chat/completions", content=chunks(),
                   headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 413


def test_client_disconnect_mid_stream(gw: Gw, slow: tuple[SlowStream, Server]) -> None:
    state, _ = slow
    state.sent, state.closed_early = 0, False
    body = b'{"model":"slow-model","messages":[{"role":"user","content":"hi"}],"stream":true}'
    port = gw.server.port
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                     b"authorization: Bearer " + gw.key.encode() + b"\r\n"
                     b"content-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"w2 " not in got:
            got += sock.recv(4096)
    assert b"200 OK" in got
    deadline = time.monotonic() + 5
    while not state.closed_early and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.closed_early
    assert state.sent < 100
    text = httpx.get(gw.server.url + "/metrics", headers=admin_headers()).text
    assert 'teegate_requests_total{outcome="disconnected",provider="slow"} 1.0' in text
    # The gateway still serves.
    r = _post(gw, b'{"model":"gpt-plain","messages":[{"role":"user","content":"a"}]}')
    assert r.status_code == 200


def test_admin_api_agent_keys(gw: Gw) -> None:
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    base = gw.server.url
    assert httpx.post(base + "/admin/agents", json={"id": "x"}).status_code == 401
    assert httpx.post(base + "/admin/agents", json={"id": "x"},
                      headers={"authorization": f"Bearer {gw.key}"}).status_code == 401
    r = httpx.post(base + "/admin/agents", json={"id": "bot-2", "trust": "tee"}, headers=admin)
    assert r.status_code == 201
    key: str = r.json()["api_key"]
    listed: list[dict[str, Any]] = httpx.get(base + "/admin/agents", headers=admin).json()["data"]
    assert {"id": "bot-2", "trust": "tee"}.items() <= next(
        a for a in listed if a["id"] == "bot-2").items()
    client = openai.OpenAI(base_url=gw.url, api_key=key, max_retries=0)
    # The agent's default level is tee: the standard-only provider cannot serve it.
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-plain", messages=MSG)
    assert httpx.delete(base + "/admin/agents/bot-2", headers=admin).json()["revoked"]
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-plain", messages=MSG)
    assert httpx.delete(base + "/admin/agents/ghost", headers=admin).status_code == 404
    r = httpx.post(base + "/admin/agents", json={"id": "b", "trust": "max"}, headers=admin)
    assert r.status_code == 400

"""A provider's rate limit keeps its meaning: the agent gets 429 with the provider's
Retry-After when no other provider can take the call (not a 502 that SDKs retry at once), the
provider's x-ratelimit-* budget on answers, and every answer an x-request-id."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server, serving

OK = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                   "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def upstream(status: int, headers: dict[str, str]) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        await request.body()
        if status == 429:
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}},
                                status_code=429, headers=headers)
        return JSONResponse(OK, headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[Server, Server, Server]]:
    with serving(upstream(429, {"retry-after": "7", "x-ratelimit-remaining-requests": "0"})
                 ) as a, serving(upstream(429, {"retry-after": "3"})) as b, serving(
            upstream(200, {"x-ratelimit-remaining-tokens": "41", "x-ratelimit-limit-requests":
                           "60"})) as ok:
        yield a, b, ok


@pytest.fixture
def gw(make_gateway: GatewayFactory, limited: tuple[Server, Server, Server]) -> Gw:
    a, b, ok = limited
    return make_gateway([
        {"id": "a", "platform": "open-ai", "base_url": a.url + "/v1", "models": ["busy", "mix"]},
        {"id": "b", "platform": "open-ai", "base_url": b.url + "/v1", "models": ["busy"]},
        {"id": "ok", "platform": "open-ai", "base_url": ok.url + "/v1", "models": ["mix"]},
    ], gateway={"allowed_fails": 100})


def _chat(gw: Gw, model: str) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {gw.key}"})


def test_every_provider_rate_limited_is_a_429_with_the_soonest_retry_after(gw: Gw) -> None:
    r = _chat(gw, "busy")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert r.headers["retry-after"] == "3"  # the provider that frees up first
    assert r.headers["x-should-retry"] == "true"
    assert r.headers["x-request-id"].startswith("req_")


def test_the_sdk_sees_a_rate_limit_error(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="busy", max_tokens=4,
                                       messages=[{"role": "user", "content": "hi"}])


def test_another_provider_takes_the_call_and_its_budget_is_passed_on(gw: Gw) -> None:
    r = _chat(gw, "mix")
    assert r.status_code == 200, r.text
    assert r.headers["x-teegate-provider"] == "ok"
    assert r.headers["x-ratelimit-remaining-tokens"] == "41"
    assert r.headers["x-ratelimit-limit-requests"] == "60"


def test_request_ids_are_unique_on_every_route(gw: Gw) -> None:
    ids = {_chat(gw, "mix").headers["x-request-id"] for _ in range(3)}
    ids.add(httpx.get(gw.url + "/models", headers={
        "authorization": f"Bearer {gw.key}"}).headers["x-request-id"])
    ids.add(httpx.get(gw.url.removesuffix("/v1") + "/healthz").headers["x-request-id"])
    refused = httpx.post(gw.url + "/chat/completions", json={}, headers={
        "authorization": "Bearer tgk_nobody"})
    assert refused.status_code == 401
    ids.add(refused.headers["x-request-id"])
    streamed = httpx.post(gw.url + "/chat/completions", json={
        "model": "mix", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"authorization": f"Bearer {gw.key}"})
    ids.add(streamed.headers["x-request-id"])
    assert len(ids) == 7
    assert all(i.startswith("req_") and len(i) == 28 for i in ids)

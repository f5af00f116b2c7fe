"""The real openai SDK (sync and async, plain and streaming) through the gateway to a
development TEE node and a plain hosted-style upstream, all on loopback."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.gateway.conftest import GatewayFactory, Gw, admin_headers
from tests.gateway.loopback import Server, serving

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, plain_upstream: Server) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin", "shared-model"], "development": True,
         "prices": {"shared-model": {"input": 500, "output": 500}}},
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain", "shared-model"],
         "prices": {"shared-model": {"input": 1, "output": 1}}},
    ])


def test_sync_plain_attested(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, max_tokens=64,
        extra_headers={"X-Teegate-Trust": "attested"})
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2
    assert raw.headers["x-teegate-provider"] == "node-a"
    assert raw.headers["x-teegate-trust"] == "attested"
    verdict = raw.headers["x-teegate-verdict"]
    assert verdict == gw.provider("node-a").attested.digest
    assert raw.headers["x-teegate-development"] == "true"
    # The client's bytes went through unchanged, so the node's own signature is passed on.
    assert raw.headers["x-teegate-signing-algo"] == "ecdsa"


def test_added_token_cap_withholds_the_node_signature(gw: Gw) -> None:
    """Without a token limit the gateway forwards the cap its hold assumed: the node signed
    bytes the client never sent, so its signature is not passed on as if it covered them."""
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, extra_headers={"X-Teegate-Trust": "attested"})
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-teegate-trust"] == "attested"
    assert "x-teegate-signature" not in raw.headers


def test_sync_stream_strips_injected_usage(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="teegate-builtin", messages=MSG, stream=True,
        extra_headers={"X-Teegate-Trust": "attested"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.usage is None for c in chunks)  # the gateway asked for usage, not the client
    assert all(c.choices for c in chunks)


def test_stream_with_client_usage_and_raw_bytes(gw: Gw) -> None:
    body = {"model": "teegate-builtin", "messages": MSG, "stream": True, "max_tokens": 64,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", gw.url + "/chat/completions", json=body,
                      headers={"authorization": f"Bearer {gw.key}"}) as r:
        assert r.status_code == 200
        assert r.headers["x-teegate-trust"] == "attested"
        raw = b"".join(r.iter_raw())
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    # Unchanged request bytes: the node's signature comment is passed on before [DONE].
    assert events[-2].startswith(b": teegate-signature ")
    usage = json.loads(events[-3][len(b"data: "):])
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 2


async def test_async_plain_and_stream_plain_provider(gw: Gw) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(model="gpt-plain",
                                                                 messages=MSG)
    assert raw.headers["x-teegate-provider"] == "plain"
    assert raw.headers["x-teegate-trust"] == "standard"
    assert raw.headers["x-teegate-verdict"] == "none"
    assert raw.parse().choices[0].message.content
    stream = await client.chat.completions.create(
        model="gpt-plain", messages=MSG, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    stream = await client.chat.completions.create(
        model="teegate-builtin@attested", messages=MSG, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()


def test_trust_rule_suffix_header_and_price(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    # Standard request: cheapest eligible provider (the plain one).
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG)
    assert r.headers["x-teegate-provider"] == "plain"
    # Model suffix raises the level: only the attested node qualifies.
    r = client.chat.completions.with_raw_response.create(model="shared-model@attested",
                                                         messages=MSG)
    assert r.headers["x-teegate-provider"] == "node-a"
    assert r.parse().model == "shared-model"  # the suffix is not forwarded
    with pytest.raises(openai.BadRequestError, match="different trust levels"):
        client.chat.completions.create(model="shared-model@tee", messages=MSG,
                                       extra_headers={"X-Teegate-Trust": "attested"})
    with pytest.raises(openai.BadRequestError, match="X-Teegate-Trust"):
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers={"X-Teegate-Trust": "ultra"})


def test_models_providers_health_metrics(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"teegate-builtin", "shared-model", "gpt-plain"}
    extra = models["teegate-builtin"].model_extra or {}
    assert extra["trust_level"] == "attested"
    assert extra["development"] is True
    assert extra["providers"][0]["attestation"] == "attested"
    base = gw.server.url
    providers = httpx.get(base + "/v1/providers").json()["data"]
    node = next(p for p in providers if p["id"] == "node-a")
    assert node["label"].startswith("DEVELOPMENT")
    assert node["attestation"]["status"] == "attested"
    att = httpx.get(base + "/v1/providers/node-a/attestation").json()
    assert att["verdict"]["accepted"] is True
    assert att["verdict"]["development"] is True
    assert any(c["name"].endswith("development_root") for c in att["verdict"]["checks"])
    assert httpx.get(base + "/v1/providers/nope/attestation").status_code == 404
    plain = httpx.get(base + "/v1/providers/plain/attestation").json()
    assert plain["trust_level"] == "standard"
    assert plain["verdict"] is None
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/readyz").json()["ready"] is True
    client.chat.completions.create(model="gpt-plain", messages=MSG)
    text = httpx.get(base + "/metrics", headers=admin_headers()).text
    assert 'teegate_requests_total{outcome="success",provider="plain"}' in text
    assert 'teegate_provider_trust_level{provider="node-a"} 2.0' in text
    assert 'teegate_attestation_refreshes_total{provider="node-a",result="accepted"}' in text


def test_e2ee_headers_forwarded_and_gateway_headers_not(make_gateway: GatewayFactory) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    seen: list[dict[str, str]] = []

    async def chat(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(b'{"id":"c","object":"chat.completion","created":0,"model":"m",'
                        b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
                        b'"finish_reason":"stop"}]}', media_type="application/json")

    with serving(Starlette(routes=[Route("/v1/chat/completions", chat,
                                         methods=["POST"])])) as up:
        gw = make_gateway([{"id": "up", "platform": "open-ai", "base_url": up.url + "/v1",
                            "models": ["m"]}])
        client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
        client.chat.completions.create(model="m", messages=MSG, extra_headers={
            "X-Client-Pub-Key": "ab" * 32, "X-Signing-Algo": "ecdsa",
            "X-Teegate-Trust": "standard", "X-Other": "no"})
    h = seen[0]
    assert h["x-client-pub-key"] == "ab" * 32
    assert h["x-signing-algo"] == "ecdsa"
    assert "x-other" not in h
    assert "x-teegate-trust" not in h
    assert gw.key not in h.get("authorization", "")  # the agent's key never leaves

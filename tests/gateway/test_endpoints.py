"""Embeddings, legacy completions (plain and streamed) and ``models.retrieve`` through the
gateway with the real openai SDK, to a development TEE node (inline signatures checked) and
a plain hosted-style upstream, on loopback; charged from the provider's usage."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from teegate.ledger import Ledger
from teegate.ledger.pricing import estimate_prompt_tokens
from teegate.node.engine import embed
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server

PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, plain_upstream: Server,
       ledger: Ledger) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin", "org/embed-1"], "development": True,
         "prices": {"teegate-builtin": PRICE, "org/embed-1": PRICE}},
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"], "prices": {"gpt-plain": PRICE}},
    ], ledger=ledger)


def _funded(gw: Gw, ledger: Ledger, amount: int = 1_000_000) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, amount)
    return str(agent.id)


def _settled(ledger: Ledger, agent: str) -> None:
    wait(lambda: ledger.balance(agent).held == 0)


def test_embeddings_attested_and_charged_on_input_tokens(gw: Gw, ledger: Ledger) -> None:
    agent = _funded(gw, ledger)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(
        model="org/embed-1", input=["confidential inference", "three words here"],
        extra_headers={"X-Teegate-Trust": "attested"})
    r = raw.parse()  # the SDK asks for base64 and decodes it
    assert [d.index for d in r.data] == [0, 1]
    assert r.data[0].embedding == pytest.approx(embed("confidential inference", 16))
    assert math.isclose(sum(v * v for v in r.data[1].embedding), 1.0, rel_tol=1e-5)
    assert r.usage.prompt_tokens == 5
    assert raw.headers["x-teegate-trust"] == "attested"
    assert raw.headers["x-teegate-provider"] == "node-a"
    # the client's bytes went through unchanged: the node's signature is passed on
    assert raw.headers["x-teegate-signing-algo"] == "ecdsa"
    _settled(ledger, agent)
    assert ledger.balance(agent).available == 1_000_000 - 5  # input tokens only
    floats = client.embeddings.create(model="org/embed-1", input="one", dimensions=4,
                                      encoding_format="float")
    assert len(floats.data[0].embedding) == 4
    assert ledger.check().ok


def test_embeddings_refusals(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="org/embed-1", input=[])
    assert e.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_legacy_completions_plain_and_stream(gw: Gw, ledger: Ledger) -> None:
    agent = _funded(gw, ledger)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.completions.with_raw_response.create(
        model="teegate-builtin", prompt="say something attested", max_tokens=8,
        extra_headers={"X-Teegate-Trust": "attested"})
    done = raw.parse()
    assert done.object == "text_completion"
    text = done.choices[0].text
    assert text
    assert len(text.split()) <= 8
    assert done.usage is not None
    assert done.usage.prompt_tokens == 3
    assert raw.headers["x-teegate-trust"] == "attested"
    _settled(ledger, agent)
    spent = done.usage.prompt_tokens + 2 * done.usage.completion_tokens
    assert ledger.balance(agent).available == 1_000_000 - spent
    chunks = list(client.completions.create(
        model="teegate-builtin", prompt="say something attested", max_tokens=8, stream=True,
        extra_headers={"X-Teegate-Trust": "attested"}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert all(c.usage is None for c in chunks)  # the gateway's own usage chunk is stripped
    _settled(ledger, agent)  # settled from the stream's usage: the same as the plain call
    assert ledger.balance(agent).available == 1_000_000 - 2 * spent
    assert ledger.check().ok


def test_legacy_completions_default_to_16_tokens_and_held_so(gw: Gw, ledger: Ledger
                                                            ) -> None:
    """No ``max_tokens``: OpenAI's default of 16 is held (and sent, so the provider
    cannot produce more): one unit short of that worst case is a 402, exactly it serves."""
    worst = estimate_prompt_tokens({"model": "gpt-plain", "prompt": "x"}) + 2 * 16
    agent = _funded(gw, ledger, worst - 1)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="gpt-plain", prompt="x")
    assert e.value.status_code == 402
    ledger.deposit(agent, 1)
    r = client.completions.create(model="gpt-plain", prompt="x")
    assert r.usage is not None
    assert 0 < r.usage.completion_tokens <= 16
    _settled(ledger, agent)
    assert ledger.balance(agent).available == worst - 1 - 2 * r.usage.completion_tokens


def test_models_retrieve(gw: Gw) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    m = client.models.retrieve("org/embed-1")  # an id with a slash
    assert m.id == "org/embed-1"
    extra = m.model_extra or {}
    assert extra["trust_level"] == "attested"
    assert extra["providers"][0]["id"] == "node-a"
    assert client.models.retrieve("gpt-plain").id == "gpt-plain"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nope")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert httpx.get(gw.url + "/models/gpt-plain").status_code == 401

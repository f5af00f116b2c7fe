"""Hostile or sloppy chat requests through a real gateway: token limits of the wrong type or
size, stream options that are not an object, conflicting trust headers and suffixes, the
agent's floor and the configured default level. Each is refused with a clear 4xx (nothing
forwarded, nothing held) or served at the level the rules require."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server

PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output


@pytest.fixture
def gw(ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server,
       node_a: Server) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain", "shared-model"], "prices": {"gpt-plain": PRICE}},
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin", "shared-model"], "development": True},
    ], ledger=ledger)


def _agent(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def _chat(gw: Gw, body: dict[str, Any], key: str | None = None,
          headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", json=body, headers=[
        ("authorization", f"Bearer {key or gw.key}"), *(headers or [])])


def _msg(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [1.5, 100.0, True, 0, -5, "10", [1], 10**30, 2**62, 2**53])
@pytest.mark.parametrize("model", ["gpt-plain", "teegate-builtin"])  # priced and free
def test_bad_token_limits_are_400(gw: Gw, ledger: Ledger, field: str, value: Any,
                                  model: str) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    r = _chat(gw, _msg(model, **{field: value}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["param"] == field
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance(agent).available == 1_000_000
    assert ledger.balance(agent).held == 0


def test_huge_but_valid_token_limit_is_402_with_the_amounts(gw: Gw, ledger: Ledger) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    r = _chat(gw, _msg("gpt-plain", max_tokens=10**15))
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["needed"] > 2 * 10**15
    assert err["available"] == 1_000_000


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_worst_case_beyond_the_ledger_maximum_is_400_not_retryable(
        gw: Gw, ledger: Ledger, field: str) -> None:
    """2^52 output tokens at 2 units each cost more than any wallet may hold: a request
    error (it was a retryable 503 'ledger unavailable' before)."""
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    r = _chat(gw, _msg("gpt-plain", **{field: 2**52}))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_request", "max_tokens")
    assert "maximum" in err["message"]
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance(agent).available == 1_000_000


def test_hold_covers_the_larger_of_both_token_limits(gw: Gw, ledger: Ledger) -> None:
    """A provider that only knows ``max_tokens`` may produce that many tokens although
    ``max_completion_tokens`` is small: the hold must cover both."""
    agent = _agent(gw)
    ledger.deposit(agent, 1_000)  # covers the prompt and ~5 tokens, not 1000 tokens
    r = _chat(gw, _msg("gpt-plain", max_completion_tokens=5, max_tokens=1000))
    assert r.status_code == 402
    assert r.json()["error"]["needed"] >= 2_000
    r = _chat(gw, _msg("gpt-plain", max_completion_tokens=1000, max_tokens=5))
    assert r.status_code == 402
    r = _chat(gw, _msg("gpt-plain", max_completion_tokens=5, max_tokens=None))
    assert r.status_code == 200
    wait(lambda: ledger.balance(agent).held == 0)


@pytest.mark.parametrize("opts", ["yes", [True], 1, {"include_usage": "no"}])
def test_stream_options_must_be_an_object(gw: Gw, opts: Any) -> None:
    r = _chat(gw, _msg("teegate-builtin", stream=True, stream_options=opts))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "stream_options"


def test_conflicting_trust_headers_are_400(gw: Gw) -> None:
    r = _chat(gw, _msg("shared-model"), headers=[("x-teegate-trust", "attested"),
                                                 ("x-teegate-trust", "standard")])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_trust_level"
    r = _chat(gw, _msg("shared-model"), headers=[("x-teegate-trust", "attested"),
                                                 ("x-teegate-trust", "Attested")])
    assert r.status_code == 200
    assert r.headers["x-teegate-trust"] == "attested"


@pytest.mark.parametrize(("model", "header", "status", "served"), [
    ("shared-model@ATTESTED", None, 200, "attested"),
    ("shared-model@attested", "attested", 200, "attested"),
    ("shared-model@attested", "standard", 400, None),
    ("shared-model@standard", "ATTESTED", 400, None),
    ("shared-model@atested", None, 400, None),  # a typo is not silently another model
    ("shared-model@attested@standard", None, 404, None),
    ("shared-model", "attested-gpu", 403, None),
    ("shared-model", "bogus", 400, None),
    ("shared-model", "", 400, None),
])
def test_trust_suffix_and_header_edge_cases(gw: Gw, model: str, header: str | None,
                                            status: int, served: str | None) -> None:
    r = _chat(gw, _msg(model), headers=[("x-teegate-trust", header)] if header is not None
              else None)
    assert r.status_code == status, r.text
    if served is not None:
        assert r.headers["x-teegate-trust"] == served
        assert r.headers["x-teegate-provider"] == "node-a"


def test_a_request_never_goes_below_the_agent_floor(gw: Gw) -> None:
    key = gw.store.create_key("floored", trust="attested", min_trust="attested")
    for extra in ([("x-teegate-trust", "standard")], None):
        r = _chat(gw, _msg("gpt-plain"), key=key, headers=extra)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "trust_level_unmet"
    r = _chat(gw, _msg("shared-model@standard"), key=key)
    assert r.status_code == 200
    assert r.headers["x-teegate-trust"] == "attested"


def test_default_trust_applies_to_agents_without_a_level(
        make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"]}], gateway={"default_trust": "tee"})
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    r = httpx.post(gw.server.url + "/admin/agents", json={"id": "no-level"}, headers=admin)
    assert r.status_code == 201
    assert r.json()["trust"] == "tee"
    got = _chat(gw, _msg("gpt-plain"), key=r.json()["api_key"])
    assert got.status_code == 403  # a standard provider cannot serve the default level
    # An explicit level still wins over the default.
    r = httpx.post(gw.server.url + "/admin/agents", json={"id": "explicit",
                                                          "trust": "standard"}, headers=admin)
    assert _chat(gw, _msg("gpt-plain"), key=r.json()["api_key"]).status_code == 200


def test_admin_create_answers_the_stored_settings(gw: Gw) -> None:
    """A new key for an existing agent keeps that agent's levels: the answer says so."""
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    url = gw.server.url + "/admin/agents"
    first = httpx.post(url, json={"id": "rekeyed", "trust": "tee"}, headers=admin).json()
    assert (first["trust"], first["min_trust"], first["kind"]) == ("tee", "standard", "agent")
    again = httpx.post(url, json={"id": "rekeyed", "trust": "attested",
                                  "min_trust": "attested"}, headers=admin).json()
    assert again["api_key"] != first["api_key"]
    stored = next(a for a in httpx.get(url, headers=admin).json()["data"]
                  if a["id"] == "rekeyed")
    assert (again["trust"], again["min_trust"]) == (stored["trust"], stored["min_trust"])


@pytest.mark.parametrize("model", ["gpt-plain", "teegate-builtin"])
def test_a_lone_surrogate_in_a_message_is_served_and_held(gw: Gw, ledger: Ledger,
                                                          model: str) -> None:
    """Valid JSON that is not valid Unicode text: the prompt bound comes from the bytes."""
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    body = (b'{"model":"' + model.encode() + b'","max_tokens":5,'
            b'"messages":[{"role":"user","content":"\\ud800 hi"}]}')
    r = httpx.post(gw.url + "/chat/completions", content=body,
                   headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.check().ok


@pytest.mark.usefixtures("raised_recursion_limit")
def test_deeply_nested_json_is_400(gw: Gw) -> None:
    body = b'{"model":"gpt-plain","messages":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    r = httpx.post(gw.url + "/chat/completions", content=body,
                   headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("name", ["llama@attested", "llama@TEE", "org/m@attested-gpu"])
def test_a_model_named_like_a_trust_suffix_is_a_config_error(name: str) -> None:
    """Otherwise ``llama@attested`` would reach a standard provider serving a model of that
    name instead of requiring the attested level."""
    from teegate.errors import ConfigError
    from teegate.gateway import parse_config

    with pytest.raises(ConfigError, match=r"providers\[0\]\.models\[0\].*trust level"):
        parse_config({"providers": [{"id": "p", "platform": "open-ai",
                                     "base_url": "http://127.0.0.1:9/v1", "models": [name]}]})
    parse_config({"providers": [{"id": "p", "platform": "open-ai",  # other '@' are fine
                                 "base_url": "http://127.0.0.1:9/v1", "models": ["m@v2"]}]})


def test_the_hold_covers_every_choice(gw: Gw, ledger: Ledger) -> None:
    """``n`` completions may each use ``max_tokens``: a hold for one would undercharge."""
    agent = _agent(gw)
    ledger.deposit(agent, 1_000)  # the prompt and 2 x 100 output tokens, not 10 x 100
    r = _chat(gw, _msg("gpt-plain", max_tokens=100, n=10))
    assert r.status_code == 402
    assert r.json()["error"]["needed"] >= 2_000
    for bad in (0, 1.5, "2", True):
        r = _chat(gw, _msg("gpt-plain", max_tokens=100, n=bad))
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "n"
    r = _chat(gw, _msg("gpt-plain", max_tokens=100, n=1))
    assert r.status_code == 200
    wait(lambda: ledger.balance(agent).held == 0)


def _greedy_upstream(seen: list[dict[str, Any]]) -> Any:
    """A provider that ignores every token limit: 100,005 completion tokens whatever it is
    asked; ``seen`` gets each request body it received."""
    import json

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        seen.append(json.loads(await request.body()))
        return Response(json.dumps({
            "id": "chatcmpl-greedy", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 9},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 100_005,
                      "total_tokens": 100_010}}).encode(), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_call_without_a_limit_forwards_the_cap_it_was_held_for(
        make_gateway: GatewayFactory, ledger: Ledger, field: str) -> None:
    """The hold assumes ``default_max_tokens``: the provider is sent that cap (under the
    field it expects), and usage above the cap is charged as the cap."""
    from tests.gateway.loopback import serving

    seen: list[dict[str, Any]] = []
    with serving(_greedy_upstream(seen)) as up:
        gw = make_gateway([{"id": "greedy", "platform": "open-ai", "base_url": up.url + "/v1",
                            "models": ["m"], "prices": {"m": PRICE},
                            "max_tokens_field": field}],
                          gateway={"default_max_tokens": 50}, ledger=ledger)
        agent = _agent(gw)
        ledger.deposit(agent, 1_000_000)
        r = _chat(gw, _msg("m"))
        assert r.status_code == 200, r.text
        assert seen[-1][field] == 50
        assert seen[-1]["messages"] == [{"role": "user", "content": "hi"}]
        wait(lambda: ledger.balance(agent).held == 0)
        charge = next(t for t in ledger.transfers(agent) if t.kind == "charge")
        assert charge.amount == 5 * 1 + 50 * 2  # the prompt, and the cap it was sent
        # A limit the request names is forwarded as it came (the bytes unchanged).
        r = _chat(gw, _msg("m", max_completion_tokens=7))
        assert r.status_code == 200
        assert "max_tokens" not in seen[-1]
        assert seen[-1]["max_completion_tokens"] == 7


def test_max_tokens_field_is_validated() -> None:
    from teegate.errors import ConfigError
    from teegate.gateway import parse_config

    with pytest.raises(ConfigError, match=r"providers\[0\]\.max_tokens_field"):
        parse_config({"providers": [{"id": "p", "platform": "open-ai", "models": ["m"],
                                     "base_url": "http://127.0.0.1:9/v1",
                                     "max_tokens_field": "limit"}]})

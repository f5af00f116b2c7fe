"""Every call holds its worst case before forwarding and settles or voids it on every exit
path; 402 with needed/available when it cannot be held; conversations by header."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, Tamper, serving, tampering_proxy
from tests.gateway.test_errors import SlowStream

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output


@pytest.fixture
def slow() -> Iterator[tuple[SlowStream, Server]]:
    s = SlowStream()
    with serving(s.app()) as server:
        yield s, server


@pytest.fixture
def broken(node_a: Server) -> Iterator[Server]:
    with serving(tampering_proxy(node_a.url, Tamper(fail_status=503))) as proxy:
        yield proxy


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, ledger: Ledger,
       slow: tuple[SlowStream, Server], broken: Server) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin"], "development": True,
         "prices": {"teegate-builtin": PRICE}},
        {"id": "slow", "platform": "ollama", "base_url": slow[1].url + "/v1",
         "models": ["slow-model"], "prices": {"slow-model": PRICE}},
        {"id": "down", "platform": "open-ai", "base_url": broken.url + "/v1",
         "models": ["down-model"], "prices": {"down-model": PRICE}},
    ], ledger=ledger)


def _agent(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def _settled(ledger: Ledger, agent: str) -> Callable[[], bool]:
    return lambda: ledger.balance(agent).held == 0


def test_plain_and_stream_charge_usage(gw: Gw, ledger: Ledger) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 100_000)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=50)
    assert r.usage is not None
    wait(_settled(ledger, agent))
    cost = r.usage.prompt_tokens + 2 * r.usage.completion_tokens
    assert ledger.balance(agent).available == 100_000 - cost
    chunks = list(client.chat.completions.create(model="teegate-builtin", messages=MSG,
                                                 stream=True, max_tokens=50))
    words = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
    wait(_settled(ledger, agent))
    # The usage chunk the gateway asked for (and stripped) settled the stream exactly.
    assert ledger.balance(agent).available == 100_000 - cost - (2 + 2 * len(words))
    assert ledger.check().ok


def test_402_when_the_hold_cannot_be_covered(gw: Gw, ledger: Ledger) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 10)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=2)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=100)
    assert e.value.status_code == 402
    assert e.value.response.headers["x-should-retry"] == "false"
    err = e.value.response.json()["error"]
    assert err["code"] == "insufficient_funds"
    assert err["available"] == 10
    assert err["needed"] > 10
    assert "needed" in err["message"]
    assert ledger.balance(agent).available == 10


def test_failed_upstream_voids_and_disconnect_charges_what_was_produced(
        gw: Gw, ledger: Ledger, slow: tuple[SlowStream, Server]) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="down-model", messages=MSG)
    wait(_settled(ledger, agent))
    assert ledger.balance(agent).available == 1_000_000  # voided
    state, _ = slow
    body = (b'{"model":"slow-model","messages":[{"role":"user","content":"hi"}],'
            b'"stream":true,"max_tokens":1000}')
    with socket.create_connection(("127.0.0.1", gw.server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                     + gw.key.encode() + b"\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"w4 " not in got:
            got += sock.recv(4096)
    wait(lambda: state.closed_early)
    wait(_settled(ledger, agent))
    spent = 1_000_000 - ledger.balance(agent).available
    # Charged the prompt estimate plus the content produced, far below the 2,000+ unit hold.
    assert 2 * 5 <= spent < 2 * 100 + 100
    assert ledger.check().ok


def test_conversation_header(gw: Gw, ledger: Ledger) -> None:
    agent = _agent(gw)
    ledger.deposit(agent, 100_000)
    auth = {"authorization": f"Bearer {gw.key}"}
    conv = httpx.post(gw.server.url + "/v1/conversations", json={"budget": 5_000},
                      headers=auth).json()
    cid = conv["id"]
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=50,
                                       extra_headers={"X-Teegate-Conversation": cid})
    assert r.usage is not None
    cost = r.usage.prompt_tokens + 2 * r.usage.completion_tokens
    wait(lambda: ledger.conversation(cid).to_json()["remaining"] == 5_000 - cost)
    wallet = httpx.get(f"{gw.server.url}/v1/wallets/{agent}", headers=auth).json()
    assert wallet["available"] == 100_000 - 5_000
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="teegate-builtin", messages=MSG,
                                       extra_headers={"X-Teegate-Conversation": "conv_nope"})


def test_an_empty_conversation_header_is_400_not_the_wallet(gw: Gw, ledger: Ledger) -> None:
    """It was silently ignored: the call was then charged to the wallet, outside the budget
    the caller meant to spend. (Only-blank values arrive empty: HTTP strips them.)"""
    agent = _agent(gw)
    ledger.deposit(agent, 100_000)
    r = httpx.post(gw.url + "/chat/completions", headers={
        "authorization": f"Bearer {gw.key}", "X-Teegate-Conversation": ""},
        json={"model": "teegate-builtin", "messages": MSG, "max_tokens": 5})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("invalid_conversation", "x-teegate-conversation")
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance(agent).available == 100_000
    assert ledger.check().transfers == 1  # the deposit only


def test_principals_owner_operator_agent(gw: Gw, ledger: Ledger) -> None:
    import os

    owner_key = gw.store.create_key("owner-1", kind="owner")
    bot_key = gw.store.create_key("bot-x", owner="owner-1")
    base = gw.server.url
    wait(lambda: gw.gateway.keys.principal(gw.gateway.keys.cached(owner_key)).agents == (
        frozenset({"bot-x"})) if gw.gateway.keys.cached(owner_key) else False)

    def deposit(key: str, agent: str = "bot-x") -> int:
        return httpx.post(f"{base}/v1/wallets/{agent}/deposits", json={"amount": 1000},
                          headers={"authorization": f"Bearer {key}"}).status_code

    assert deposit(owner_key) == 201
    assert deposit(bot_key) == 403  # an agent never funds itself
    assert deposit(owner_key, _agent(gw)) == 403  # not the owner of that agent
    assert deposit(os.environ["TG_TEST_ADMIN"], _agent(gw)) == 201  # the operator may
    assert deposit("tgk_nope") == 401
    assert ledger.balance("bot-x").available == 1000
    # An owner key is not an agent key: it cannot call models.
    r = httpx.post(base + "/v1/chat/completions", json={"model": "teegate-builtin",
                                                        "messages": MSG},
                   headers={"authorization": f"Bearer {owner_key}"})
    assert r.status_code == 401


def test_stream_without_usage_charges_the_worst_case(
        make_gateway: GatewayFactory, ledger: Ledger) -> None:
    """A provider that ignores include_usage: the documented rule charges the whole hold."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        await request.body()

        async def gen() -> AsyncIterator[bytes]:
            yield b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            yield b"data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    with serving(Starlette(routes=[Route("/v1/chat/completions", chat,
                                         methods=["POST"])])) as up:
        gw = make_gateway([{"id": "nousage", "platform": "open-ai",
                            "base_url": up.url + "/v1", "models": ["m"],
                            "prices": {"m": PRICE}}], ledger=ledger)
        agent = _agent(gw)
        ledger.deposit(agent, 100_000)
        client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
        assert [c.choices[0].delta.content for c in client.chat.completions.create(
            model="m", messages=MSG, stream=True, max_tokens=10) if c.choices] == ["hi"]
        wait(_settled(ledger, agent))
        hold = next(t for t in ledger.transfers(agent) if t.kind == "hold")
        charge = next(t for t in ledger.transfers(agent) if t.kind == "charge")
        assert charge.amount == hold.amount >= 2 * 10  # every allowed output token


def test_upstream_timeout_voids_the_hold(make_gateway: GatewayFactory, ledger: Ledger) -> None:
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        await asyncio.sleep(3)
        return Response(b"{}", media_type="application/json")

    with serving(Starlette(routes=[Route("/v1/chat/completions", chat,
                                         methods=["POST"])])) as up:
        gw = make_gateway([{"id": "stuck", "platform": "open-ai", "base_url": up.url + "/v1",
                            "models": ["m"], "prices": {"m": PRICE}, "timeout": 0.3}],
                          ledger=ledger)
        agent = _agent(gw)
        ledger.deposit(agent, 100_000)
        client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="m", messages=MSG)
        assert e.value.status_code == 502
        assert "TimeoutError" in e.value.message
        wait(_settled(ledger, agent))
        assert ledger.balance(agent).available == 100_000
        assert any(t.kind == "hold" for t in ledger.transfers(agent))  # held, then voided


def test_gateway_releases_holds_a_crashed_gateway_left(make_gateway: GatewayFactory,
                                                       node_a: Server, ledger: Ledger) -> None:
    """Holds past their expiry (a gateway died mid-call) are released by every running
    gateway's sweep, at start and then every ``ledger_expire_seconds``."""
    ledger.deposit("crashed-agent", 1_000)
    now = time.time()
    ledger.hold("crashed-agent", 300, now=now - 700, expires_at=now - 100)  # expired
    live = ledger.hold("crashed-agent", 200, expires_at=now + 6.0)  # a call still running
    assert ledger.balance("crashed-agent").held == 500
    make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                   "models": ["teegate-builtin"], "development": True}],
                 ledger=ledger, gateway={"ledger_expire_seconds": 0.2})
    wait(lambda: ledger.balance("crashed-agent").held == 200)  # the sweep at start
    assert ledger.balance("crashed-agent").available == 800
    assert ledger.get_hold(live.id).state == "open"
    wait(lambda: ledger.balance("crashed-agent").held == 0, timeout=15)  # periodic sweep
    assert ledger.balance("crashed-agent").available == 1_000
    assert ledger.get_hold(live.id).state == "expired"


def test_hold_seconds_sets_each_call_hold_expiry(make_gateway: GatewayFactory, node_a: Server,
                                                 ledger: Ledger) -> None:
    from teegate.gateway.calls import CallRecord

    gw = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                        "models": ["teegate-builtin"], "development": True}],
                      ledger=ledger, gateway={"hold_seconds": 42})
    agent = _agent(gw)
    ledger.deposit(agent, 1_000)
    acc = gw.gateway.accounting
    assert acc is not None
    record = CallRecord(agent, "teegate-builtin", "standard", time.time(), "0" * 64)
    before = time.time()
    hold = ledger.get_hold(acc.hold(record, 10))
    assert before + 42 <= hold.expires_at <= time.time() + 42


def test_flat_per_call_price_is_charged_with_the_tokens(make_gateway: GatewayFactory,
                                                        node_a: Server, ledger: Ledger) -> None:
    gw = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                        "models": ["teegate-builtin"], "development": True,
                        "prices": {"teegate-builtin": {"per_call": 500, **PRICE}}}],
                      ledger=ledger)
    agent = _agent(gw)
    ledger.deposit(agent, 100_000)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=50)
    assert r.usage is not None
    wait(_settled(ledger, agent))
    tokens = r.usage.prompt_tokens + 2 * r.usage.completion_tokens
    assert ledger.balance(agent).available == 100_000 - 500 - tokens


def test_a_free_call_cannot_name_a_conversation_it_cannot_use(
        ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    """No hold is placed for a free model, but the conversation header is still checked: the
    call's receipt would otherwise file it under another agent's (or a closed) conversation."""
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                      ledger=ledger)
    agent = _agent(gw)
    ledger.deposit(agent, 1_000)
    ledger.deposit("someone-else", 1_000)
    own = ledger.open_conversation(agent, 100).id
    theirs = ledger.open_conversation("someone-else", 100).id
    closed = ledger.open_conversation(agent, 100).id
    ledger.close_conversation(closed)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)

    def call(cid: str) -> object:
        return client.chat.completions.create(model="gpt-plain", messages=MSG,
                                              extra_headers={"X-Teegate-Conversation": cid})

    assert call(own) is not None
    for cid, why in ((theirs, "belongs to another agent"), (closed, "is closed"),
                     ("conv_nope", "no conversation")):
        with pytest.raises(openai.BadRequestError, match=why) as e:
            call(cid)
        assert e.value.code == "invalid_conversation"
    wait(_settled(ledger, agent))
    assert ledger.balance(agent).available == 1_000 - 2 * 100 + 100  # the closed one refunded
    assert ledger.check().ok


def test_a_call_longer_than_hold_seconds_is_still_charged(
        ledger: Ledger, make_gateway: GatewayFactory, slow: tuple[SlowStream, Server]) -> None:
    """The stream takes 2 s, the hold 0.6 s, the sweep runs every 0.1 s: the gateway renews
    the holds of running calls, so the call is settled (charged), not expired (free)."""
    gw = make_gateway([{"id": "slow", "platform": "ollama", "base_url": slow[1].url + "/v1",
                        "models": ["slow-model"], "prices": {"slow-model": PRICE}}],
                      ledger=ledger, gateway={"hold_seconds": 0.6,
                                              "ledger_expire_seconds": 0.1})
    agent = _agent(gw)
    ledger.deposit(agent, 1_000_000)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    t0 = time.monotonic()
    chunks = list(client.chat.completions.create(model="slow-model", messages=MSG,
                                                 max_tokens=200, stream=True))
    assert time.monotonic() - t0 > 1.5
    assert len(chunks) == 100
    wait(_settled(ledger, agent))
    spent = 1_000_000 - ledger.balance(agent).available
    # No usage in this provider's stream: the documented rule charges the whole hold.
    assert spent >= 2 * 200
    assert ledger.revenue("slow") == spent
    assert ledger.check().ok

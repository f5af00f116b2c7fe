"""Every hold is settled or voided, also on the exit paths nobody plans for: a gateway that
stops while a delivered call still waits for its provider's response signature."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.ledger import Ledger
from tests.gateway.conftest import GatewayFactory, wait
from tests.gateway.loopback import Server, serving

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def _stalling_signatures(target: str) -> Starlette:
    """NEAR-style provider (a dev node behind it) whose ``/v1/signature/{id}`` never
    answers."""
    client = httpx.AsyncClient(base_url=target, timeout=30)

    async def report(request: Request) -> Response:
        r = await client.get("/v1/attestation/report", params=dict(request.query_params))
        return Response(r.content, r.status_code, media_type="application/json")

    async def chat(request: Request) -> Response:
        r = await client.post("/v1/chat/completions", content=await request.body(),
                              headers={"content-type": "application/json"})
        return Response(r.content, r.status_code, media_type="application/json")

    async def signature(request: Request) -> Response:
        await asyncio.sleep(3600)
        return Response(b"{}", 500)  # pragma: no cover

    return Starlette(routes=[
        Route("/v1/attestation/report", report, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/signature/{chat_id:path}", signature, methods=["GET"]),
    ])


def test_stopping_while_a_signature_is_fetched_still_settles_the_hold(
        ledger: Ledger, make_gateway: GatewayFactory, node_a: Server) -> None:
    """The signature is fetched before the answer is delivered (the receipt records it): a
    stop while the fetch hangs cuts the answer off, still releases the hold (voided: an
    answer whose check never completed is not charged) and still writes the receipt."""
    with serving(_stalling_signatures(node_a.url)) as proxy:
        gw = make_gateway([
            {"id": "near", "platform": "tee-near-ai", "base_url": proxy.url + "/v1",
             "models": ["shared-model"], "development": True,
             "prices": {"shared-model": {"input": 1_000_000, "output": 1_000_000}}}],
            ledger=ledger)
        agent = gw.gateway.keys.cached(gw.key)
        assert agent is not None
        ledger.deposit(agent.id, 1_000_000)
        client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
        errors: list[Exception] = []

        def call() -> None:
            try:
                client.chat.completions.create(
                    model="shared-model", messages=MSG, max_tokens=20,
                    extra_headers={"X-Teegate-Trust": "attested"})
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=call)
        t.start()
        wait(lambda: ledger.balance(agent.id).held > 0)  # waiting for the signature
        time.sleep(0.3)
        assert t.is_alive()  # the answer is not complete before its receipt is
        gw.server.stop()  # graceful shutdown cancels the signature fetch
        t.join(10)
        assert errors  # cut off, not delivered
        balance = ledger.balance(agent.id)
        assert balance.held == 0
        assert ledger.spend(agent.id) == []
        assert balance.available == 1_000_000
        assert ledger.check().ok


def test_a_failing_store_is_an_openai_shaped_500(
        ledger: Ledger, make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                      ledger=ledger)
    gw.store.close()  # the database is gone: a key not cached must be looked up there
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                         ("GET", "/v1/wallets/x")):
        r = httpx.request(method, gw.server.url + path, json={"model": "gpt-plain",
                                                                "messages": []},
                          headers={"authorization": "Bearer tgk_" + "a" * 43})
        assert r.status_code == 500, (path, r.text)
        assert r.json()["error"]["code"] == "internal_error"
        assert r.headers["x-should-retry"] == "true"

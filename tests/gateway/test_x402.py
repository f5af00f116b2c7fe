"""x402 at the gateway, step 1: a paid route called without an API key and without payment is
answered 402, with the v2 ``PAYMENT-REQUIRED`` header and the v1 body read back by the x402
SDK's own decoders, priced at the call's worst-case hold; over loopback HTTP against the
development node. Without ``[x402]`` the same call stays a 401."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired
from x402.schemas.v1 import PaymentRequiredV1

from teegate.chain.config import ChainConfig
from teegate.gateway.app import create_app
from teegate.gateway.config import parse_config
from teegate.gateway.store import GatewayStore
from teegate.ledger.pricing import Price, estimate_prompt_tokens
from teegate.x402.config import X402Config, parse_x402
from tests.gateway.loopback import Server

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEY = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output
CHAT = {"model": "teegate-builtin", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def serve(tmp_path: Path, node_a: Server, request: pytest.FixtureRequest) -> Any:
    def make(x402: bool) -> tuple[str, str]:
        url = f"sqlite:///{tmp_path / ('gw-' + uuid.uuid4().hex[:8] + '.db')}"
        cfg = parse_config({
            "gateway": {"database_url": url, "state_poll_seconds": 0.2},
            "providers": [{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                           "models": ["teegate-builtin"], "development": True,
                           "prices": {"teegate-builtin": PRICE}}],
            "collateral": {"cache_dir": str(tmp_path / "collateral")}})
        chain = ChainConfig(rpc_url="http://127.0.0.1:1", chain_id=31337,
                            channels="0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003", token=TOKEN,
                            receiver_key=KEY)
        cfg = dataclasses.replace(cfg, chain=chain, x402=X402Config(
            "DevToken", "1", ("exact", "batch-settlement"), trust=parse_x402(
                {"token_name": "x", "trust": "standard"}).trust) if x402 else None)
        store = GatewayStore(url)
        key = store.create_key("agent-" + uuid.uuid4().hex[:8], trust="standard")
        server = Server(create_app(cfg, store=store), lifespan="on")
        request.node.addfinalizer(server.stop)
        return server.url + "/v1", key

    return make


def challenge(r: httpx.Response) -> tuple[PaymentRequired, PaymentRequiredV1]:
    assert r.status_code == 402, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-should-retry"] == "false"
    v2 = decode_payment_required_header(r.headers["payment-required"])
    assert isinstance(v2, PaymentRequired)
    return v2, PaymentRequiredV1.model_validate(r.json())


def test_chat_without_key_or_payment_is_priced_at_its_worst_case(serve: Any) -> None:
    url, _ = serve(True)
    r = httpx.post(url + "/chat/completions", json=CHAT)
    v2, v1 = challenge(r)
    worst = Price(**PRICE).cost(estimate_prompt_tokens(CHAT), 10)
    assert worst > 0
    for a in v2.accepts:
        assert (a.network, a.asset, a.amount) == ("eip155:31337", TOKEN, str(worst))
        assert a.pay_to == ChainConfig("x", 1, TOKEN, TOKEN, KEY).receiver
    assert [a.scheme for a in v1.accepts] == ["exact", "batch-settlement"]
    assert v1.accepts[0].max_amount_required == str(worst)
    assert v2.resource is not None
    assert v2.resource.url.endswith("/v1/chat/completions")


@pytest.mark.parametrize(("path", "body"), [
    ("/completions", {"model": "teegate-builtin", "prompt": "hi", "max_tokens": 5}),
    ("/embeddings", {"model": "teegate-builtin", "input": "hello"}),
    ("/responses", {"model": "teegate-builtin", "input": "hi", "max_output_tokens": 5}),
])
def test_every_paid_route_answers_402(serve: Any, path: str, body: dict[str, Any]) -> None:
    url, _ = serve(True)
    v2, v1 = challenge(httpx.post(url + path, json=body))
    assert int(v2.accepts[0].amount) > 0
    assert v1.accepts[0].resource.endswith("/v1" + path)


def test_refusals_of_a_keyed_call_come_first_and_keys_still_work(serve: Any) -> None:
    url, key = serve(True)
    r = httpx.post(url + "/chat/completions", json={**CHAT, "model": "no-such-model"})
    assert r.status_code == 404
    assert httpx.post(url + "/chat/completions", content=b"{").status_code == 400
    ok = httpx.post(url + "/chat/completions", json=CHAT,
                    headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text


def test_without_x402_a_keyless_call_is_401(serve: Any) -> None:
    url, _ = serve(False)
    r = httpx.post(url + "/chat/completions", json=CHAT)
    assert r.status_code == 401
    assert "payment-required" not in r.headers
    assert json.loads(r.text)["error"]["code"] == "invalid_api_key"

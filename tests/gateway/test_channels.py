"""Calls paid by an agent's vouchers on an on-chain conversation channel, through the gateway
(loopback HTTP, the real openai SDK) with the real contract on an in-process EVM: each call's
hold is checked against its x-teegate-voucher before forwarding, settled at the actual cost in
the channel book, claimed on chain in one batch; the chain, the book and the receipts agree."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.chain.accounting import ChannelAccounting
from teegate.chain.book import ChannelBook
from teegate.chain.config import ChainConfig
from teegate.chain.edge import ChainEdge
from teegate.chain.vouchers import Voucher
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.ledger_bridge import gateway_accounting
from teegate.ledger import Ledger
from teegate.receipts import ReceiptLog
from tests.chain.channels import CHANNELS, World
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture
def setup(make_gateway: GatewayFactory, node_a: Server, ledger: Ledger, log: ReceiptLog,
          world: World) -> tuple[Gw, ChainEdge, Any]:
    book = ChannelBook(ledger.backend)
    cfg = ChainConfig(rpc_url="http://in-process", chain_id=world.chain.chain_id,
                      channels=CHANNELS, token=world.token.address,
                      receiver_key=world.receiver.private_key, confirmations=1)
    edge = ChainEdge(world.chain.w3, cfg, book, clock=lambda: float(world.chain.now()))

    def refuse(r: Any) -> Exception:
        return GatewayRefusal(r.status, str(r), code=r.check, param="x-teegate-voucher")

    accounting = ChannelAccounting(book, world.domain, gateway_accounting(ledger),
                                   refuse=refuse)
    gw = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                        "models": ["teegate-builtin"], "development": True,
                        "prices": {"teegate-builtin": PRICE}}],
                      ledger=ledger, accounting=accounting, receipt_log=log)
    config = world.config()
    world.mint(world.payer.address, 5000)
    world.deposit(config, 5000)
    book.register(config, world.cid(config), conversation="conv-chain", agent="a")
    world.mint(world.stranger.address, 1)  # one block deeper: the deposit is confirmed
    edge.sync()
    return gw, edge, config


def voucher(world: World, config: Any, ceiling: int) -> str:
    return Voucher(world.cid(config), ceiling, world.voucher(config, ceiling)).as_header()


def test_calls_paid_by_vouchers_are_claimed_once_on_chain(
        setup: tuple[Gw, ChainEdge, Any], world: World, log: ReceiptLog) -> None:
    gw, edge, config = setup
    cid = world.cid(config)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    headers = {"x-teegate-conversation": "conv-chain"}

    # no voucher, a voucher too small, a voucher above the deposit: refused before forwarding
    for sent, code in ((None, "voucher_required"),
                       (voucher(world, config, 10), "invalid_batch_settlement_evm_cumulative_"
                                                    "amount_mismatch"),
                       (voucher(world, config, 6000), "invalid_batch_settlement_evm_cumulative_"
                                                      "exceeds_balance")):
        extra = {**headers, **({"x-teegate-voucher": sent} if sent else {})}
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=20,
                                           extra_headers=extra)
        assert e.value.status_code == 402
        assert e.value.response.json()["error"]["code"] == code

    costs: list[int] = []
    receipts: list[str] = []
    for _ in range(3):
        channel = edge.book.get(cid)
        assert channel is not None
        charged = channel.mirror.charged  # the server's channel state (x402: channelState)
        raw = client.chat.completions.with_raw_response.create(
            model="teegate-builtin", messages=MSG, max_tokens=20,
            extra_headers={**headers, "x-teegate-voucher": voucher(world, config,
                                                                   charged + 500)})
        r = raw.parse()
        assert r.usage is not None
        costs.append(r.usage.prompt_tokens + 2 * r.usage.completion_tokens)
        receipts.append(raw.headers["x-teegate-receipt"])
        wait(lambda: edge.book.get(cid).mirror.charged == sum(costs),  # type: ignore[union-attr]
             timeout=30)
    result = edge.claim()
    assert result is not None
    assert result.status == 1
    assert world.state(config) == (5000, sum(costs))
    world.mint(world.stranger.address, 1)
    edge.sync()
    assert edge.claim() is None  # claimed once
    before = world.balance(world.receiver.address)
    edge.settle()
    assert world.balance(world.receiver.address) - before == sum(costs)
    channel = edge.book.get(cid)
    assert channel is not None
    payer_before = world.balance(world.payer.address)
    edge.refund_rest(channel)
    assert world.balance(world.payer.address) - payer_before == 5000 - sum(costs)
    # the receipts state what each call cost, the sum the chain shows claimed
    log.flush()
    auth = {"authorization": f"Bearer {gw.key}"}
    charged_in_receipts = []
    cited: list[dict[str, str]] = []
    for rid in receipts:
        doc = httpx.get(f"{gw.server.url}/v1/receipts/{rid}", headers=auth).json()["receipt"]
        settlement = {e["type"]: e for e in doc["event_log"]}["teegate.settlement"]
        charged_in_receipts.append(settlement["cost"])
        cited.append(settlement["channel"])
    assert charged_in_receipts == costs
    # each receipt cites the channel and the cumulative ceiling of the voucher that paid
    ceilings = [str(sum(costs[:i]) + 500) for i in range(len(costs))]
    assert cited == [{"id": "0x" + cid.hex(), "voucher_cumulative": c} for c in ceilings]
    assert edge.book.claim_tx_of(cid) == result.tx_hash  # the claim that paid them

"""The chain edge on an in-process EVM with the real contract: the book mirrors confirmed events,
claims land once even across a restart, claims beat a payer's withdrawal, reorgs are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.chain.book import ChannelBook, ReorgError
from teegate.chain.config import ChainConfig
from teegate.chain.edge import ChainEdge
from teegate.chain.scheme import ChannelConfig
from teegate.chain.vouchers import Voucher, check_voucher
from teegate.ledger.db import open_backend
from tests.chain.channels import CHANNELS, World


@pytest.fixture(scope="module")
def w() -> World:
    return World()


def edge(w: World, db: Path, **kw: object) -> ChainEdge:
    cfg = ChainConfig(rpc_url="http://in-process", chain_id=w.chain.chain_id, channels=CHANNELS,
                      token=w.token.address, receiver_key=w.receiver.private_key,
                      confirmations=1, withdraw_delay=900, claim_margin=300)
    book = ChannelBook(open_backend(f"sqlite:///{db}"))
    return ChainEdge(w.chain.w3, cfg, book, clock=lambda: float(w.chain.now()), **kw)  # type: ignore[arg-type]


def mine(w: World) -> None:
    w.mint(w.stranger.address, 1)


def open_channel(w: World, e: ChainEdge, deposit: int) -> ChannelConfig:
    config = w.config()
    w.mint(w.payer.address, deposit)
    w.deposit(config, deposit)
    e.book.register(config, w.cid(config), conversation=f"c-{w.cid(config).hex()[:8]}",
                    agent="a")
    mine(w)
    e.sync()
    return config


def call(w: World, e: ChainEdge, config: ChannelConfig, hold: str, ceiling: int, cost: int,
         hold_amount: int) -> None:
    """One paid call as the gateway runs it: check the voucher, then settle the actual cost."""
    channel = e.book.get(w.cid(config))
    assert channel is not None
    v = Voucher.from_header(Voucher(w.cid(config), ceiling, w.voucher(config, ceiling)
                                    ).as_header())
    check_voucher(w.domain, channel.view(), v, hold_amount)
    e.book.settle(hold, v, cost)


def test_calls_claim_settle_refund_and_a_restart_claims_nothing_twice(
        w: World, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    e = edge(w, db)
    config = open_channel(w, e, 1000)
    cid = w.cid(config)
    assert e.book.get(cid).mirror.balance == 1000  # type: ignore[union-attr]
    for i, (cost, ceiling) in enumerate(((70, 100), (50, 170), (30, 220))):
        call(w, e, config, f"hold-{i}", ceiling, cost, hold_amount=ceiling - (0, 70, 120)[i])
    # killed between the settles and the claim: a new process on the same database
    e2 = edge(w, db)
    e2.book.settle("hold-2", Voucher(cid, 220, w.voucher(config, 220)), 30)  # a retried settle
    result = e2.claim()
    assert result is not None
    assert result.status == 1
    assert w.state(config) == (1000, 150)
    assert e2.claim() is not None  # before the mirror caught up it may send again...
    assert w.state(config) == (1000, 150)  # ...and the cumulative claim moves nothing twice
    mine(w)
    e2.sync()
    assert e2.claim() is None  # mirrored: nothing left to claim
    channel = e2.book.get(cid)
    assert channel is not None
    assert (channel.mirror.total_claimed, channel.mirror.charged) == (150, 150)
    assert e2.book.claim_tx_of(cid) == result.tx_hash
    before_r, before_p = w.balance(w.receiver.address), w.balance(w.payer.address)
    e2.settle()
    refund_tx = e2.refund_rest(channel)
    assert refund_tx is not None
    assert w.balance(w.receiver.address) - before_r >= 150
    assert w.balance(w.payer.address) - before_p == 850
    mine(w)
    e2.sync()
    channel = e2.book.get(cid)
    assert channel is not None
    assert (channel.mirror.balance, channel.mirror.total_claimed) == (150, 150)
    # the second claim was a no-op on chain: no event, nothing mirrored twice
    assert [k for k, _, _ in e2.book.events(cid)] == ["Deposited", "Claimed", "Refunded"]


def test_claims_beat_a_pending_withdrawal_and_the_risk_is_a_metric(w: World,
                                                                   tmp_path: Path) -> None:
    e = edge(w, tmp_path / "ledger.db")
    config = open_channel(w, e, 500)
    call(w, e, config, "h", 200, 120, hold_amount=200)
    w.chain.transact(w.channels.functions.initiateWithdraw(config.as_tuple(), 500),
                     w.payer.address)
    mine(w)
    e.sync()
    assert [c.channel_id for c in e.urgent()] == [w.cid(config)]
    assert e.metrics.at_risk._value.get() == 0
    w.chain.travel(900 - 300)
    mine(w)
    e.sync()
    assert e.metrics.at_risk._value.get() == 1
    assert e.metrics.unclaimed._value.get() == 120
    assert e.claim() is not None
    w.chain.travel(900)
    before = w.balance(w.payer.address)
    w.chain.transact(w.channels.functions.finalizeWithdraw(config.as_tuple()), w.payer.address)
    assert w.balance(w.payer.address) - before == 380  # the claimed 120 stayed with the gateway
    mine(w)
    e.sync()
    assert e.metrics.at_risk._value.get() == 0
    assert e.metrics.unclaimed._value.get() == 0


def test_a_reorg_below_the_confirmation_depth_is_reported(w: World, tmp_path: Path) -> None:
    e = edge(w, tmp_path / "ledger.db")
    open_channel(w, e, 10)
    snapshot = w.chain.tester.take_snapshot()
    mine(w)
    mine(w)
    e.sync()  # the block after the snapshot is now recorded as confirmed
    w.chain.tester.revert_to_snapshot(snapshot)
    w.chain.transact(w.token.functions.mint(w.payer.address, 7), w.chain.accounts[0])
    mine(w)
    mine(w)
    with pytest.raises(ReorgError, match="reorg below the confirmation depth"):
        e.sync()
    assert e.metrics.reorgs._value.get() == 1
    with pytest.raises(ReorgError):
        e.sync()  # stays stopped


def test_only_one_claimer_at_a_time(w: World, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    a, b = edge(w, db, holder="a"), edge(w, db, holder="b")
    config = open_channel(w, a, 100)
    call(w, a, config, "h", 50, 40, hold_amount=50)
    assert a.book.take_lease("a", ttl=600)
    assert b.claim() is None  # a holds the lease
    assert w.state(config) == (100, 0)

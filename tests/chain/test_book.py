"""The channel book on SQLite and PostgreSQL: charges once per hold, events once each, the
reorg check, one claimer at a time; and the pure rules beside it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teegate.chain import rules, scheme
from teegate.chain.book import ChannelBook, ReorgError
from teegate.chain.rules import ChargeError, Event, Mirror
from teegate.chain.vouchers import Voucher
from teegate.errors import ChainError
from teegate.ledger.db import open_backend
from tests.ledger.conftest import _PG, PG_URL, SESSION, drop_schema

KEY = os.urandom(32)
DOMAIN = scheme.Domain.of(31337, "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003")
BookFactory = Callable[[], ChannelBook]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BookFactory]:
    if request.param == "postgresql" and not _PG:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    schema = f"tc_test_{SESSION}_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else PG_URL
    opened = []

    def make() -> ChannelBook:
        backend = open_backend(url, schema=schema if request.param == "postgresql" else None)
        opened.append(backend)
        return ChannelBook(backend)

    yield make
    for b in opened:
        b.close()
    if request.param == "postgresql":
        drop_schema(schema)


def config() -> scheme.ChannelConfig:
    return scheme.ChannelConfig.of(
        payer="0x" + os.urandom(20).hex(), payer_authorizer=scheme.address_of(KEY),
        receiver="0x" + "22" * 20, receiver_authorizer="0x" + "22" * 20,
        token="0x" + "44" * 20, withdraw_delay=3600, salt=os.urandom(32))


def voucher(cid: bytes, amount: int) -> Voucher:
    return Voucher(cid, amount, scheme.sign_digest(KEY, scheme.voucher_digest(DOMAIN, cid, amount)))


def opened(book: ChannelBook, deposit: int = 1000) -> bytes:
    c = config()
    cid = c.channel_id(DOMAIN)
    book.register(c, cid, conversation=f"conv-{cid.hex()[:8]}", agent="agent-1")
    book.apply_block(book.head() + 1, "0x" + os.urandom(32).hex(), _head_hash(book),
                     [("0x" + os.urandom(32).hex(), 0, Event("Deposited", cid, deposit))])
    return cid


def _head_hash(book: ChannelBook) -> str:
    blocks = book.recorded_blocks(book.head())
    return blocks[-1][1] if blocks else "0x" + "00" * 32


def test_a_settle_charges_once_per_hold_and_keeps_the_best_voucher(make_book: BookFactory) -> None:
    book = make_book()
    cid = opened(book)
    assert book.settle("hold-1", voucher(cid, 100), 70).charged == 70
    assert book.settle("hold-1", voucher(cid, 100), 70).charged == 70  # replay: once
    again = make_book()  # another process, or this one restarted
    assert again.settle("hold-1", voucher(cid, 100), 70).charged == 70
    m = again.settle("hold-2", voucher(cid, 200), 100)
    assert (m.charged, m.signed_max) == (170, 200)
    channel = book.get(cid)
    assert channel is not None
    assert channel.signature == voucher(cid, 200).signature
    assert channel.view().charged == 170
    with pytest.raises(ChargeError, match="charge_exceeds_signed_cumulative"):
        book.settle("hold-3", voucher(cid, 250), 81)
    assert book.get(cid).mirror.charged == 170  # type: ignore[union-attr]
    with pytest.raises(ChainError, match="unknown channel"):
        book.settle("hold-4", voucher(os.urandom(32), 10), 1)


def test_events_apply_once_and_only_to_known_channels(make_book: BookFactory) -> None:
    book = make_book()
    cid = opened(book, 500)
    tx = "0x" + os.urandom(32).hex()
    logs = [(tx, 1, Event("Claimed", cid, 120)), (tx, 2, Event("Deposited", os.urandom(32), 9))]
    parent = _head_hash(book)
    number = book.head() + 1
    block = "0x" + os.urandom(32).hex()
    assert book.apply_block(number, block, parent, logs) == 1
    assert book.apply_block(number, block, parent, logs) == 0  # the same block again
    m = book.get(cid).mirror  # type: ignore[union-attr]
    assert (m.balance, m.total_claimed, m.charged) == (500, 120, 120)
    assert book.claim_tx_of(cid) == tx
    assert [k for k, _, _ in book.events(cid)] == ["Deposited", "Claimed"]


def test_a_changed_block_is_a_reorg(make_book: BookFactory) -> None:
    book = make_book()
    opened(book)
    head = book.head()
    with pytest.raises(ReorgError, match=f"block {head}"):
        book.apply_block(head + 1, "0x" + os.urandom(32).hex(), "0x" + "ab" * 32, [])
    with pytest.raises(ReorgError):
        book.apply_block(head, "0x" + os.urandom(32).hex(), "0x" + "00" * 32, [])


def test_one_claimer_at_a_time(make_book: BookFactory) -> None:
    a, b = make_book(), make_book()
    assert a.take_lease("a", ttl=30, now=1000)
    assert not b.take_lease("b", ttl=30, now=1001)
    assert a.take_lease("a", ttl=30, now=1010)  # renewal
    assert not b.take_lease("b", ttl=30, now=1039)
    assert b.take_lease("b", ttl=30, now=1041)  # a's lease lapsed (a crashed)
    b.release_lease("b")
    assert a.take_lease("a", ttl=30, now=1042)


def test_claimable_puts_pending_withdrawals_first(make_book: BookFactory) -> None:
    book = make_book()
    calm, hurried, idle = opened(book), opened(book), opened(book)
    book.settle("h1", voucher(calm, 10), 10)
    book.settle("h2", voucher(hurried, 10), 10)
    book.apply_block(book.head() + 1, "0x" + os.urandom(32).hex(), _head_hash(book), [
        ("0x" + os.urandom(32).hex(), 0, Event("WithdrawInitiated", hurried, 500, 1000))])
    assert [c.channel_id for c in book.claimable()] == [hurried, calm]
    assert idle not in [c.channel_id for c in book.claimable()]
    book.plan_claim("c1", [(hurried, 10, 10)])
    book.claim_sent("c1", "0xabc")
    book.claim_done("c1", "mined")
    assert book.claims() == [("c1", "mined", "0xabc")]


def test_rules_mirror_the_contracts_arithmetic() -> None:
    cid = os.urandom(32)
    m = Mirror()
    for e in (Event("Deposited", cid, 100), Event("Claimed", cid, 30),
              Event("WithdrawInitiated", cid, 50, 1000), Event("Refunded", cid, 20)):
        m = rules.apply(m, e)
    assert (m.balance, m.total_claimed, m.withdraw_amount, m.withdraw_started) == (80, 30, 30,
                                                                                   1000)
    assert rules.apply(m, Event("Refunded", cid, 30)).withdraw_started == 0  # cancelled
    m = rules.apply(m, Event("Claimed", cid, 10))  # a lower total (older claim): no change
    assert m.total_claimed == 30
    m = rules.charge(m, 5, 40)
    assert m.unclaimed_charges == 5
    assert rules.must_claim_now(m)
    assert not rules.at_risk(m, 3600, 600, now=1000 + 3600 - 601)
    assert rules.at_risk(m, 3600, 600, now=1000 + 3600 - 600)
    m = rules.apply(m, Event("WithdrawFinalized", cid, 45))
    assert (m.balance, m.withdraw_started) == (35, 0)
    with pytest.raises(ChainError, match="negative"):
        rules.charge(m, -1, 100)

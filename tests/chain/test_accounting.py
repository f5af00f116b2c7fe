"""ChannelAccounting through the gateway's Accounting seam, without HTTP: one call at a time per
channel, a voided call charges nothing, a settle cannot happen twice, other calls pass through."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from teegate.chain import scheme
from teegate.chain.accounting import ChannelAccounting, ChannelCallError
from teegate.chain.book import ChannelBook
from teegate.chain.rules import ChargeError, Event
from teegate.chain.vouchers import Voucher
from teegate.ledger.db import open_backend

KEY = os.urandom(32)
DOMAIN = scheme.Domain.of(31337, "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003")


class Inner:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def hold(self, record: Any, worst: int) -> str:
        self.calls.append("hold")
        return "ledger-hold"

    def settle(self, record: Any, amount: int, attach: Any = None) -> list[str]:
        self.calls.append("settle")
        return ["t1"]

    def void(self, record: Any, attach: Any = None) -> None:
        self.calls.append("void")


@pytest.fixture
def env(tmp_path: Path) -> tuple[ChannelAccounting, bytes, Inner]:
    book = ChannelBook(open_backend(f"sqlite:///{tmp_path / 'l.db'}"))
    config = scheme.ChannelConfig.of(
        payer="0x" + "11" * 20, payer_authorizer=scheme.address_of(KEY),
        receiver="0x" + "22" * 20, receiver_authorizer="0x" + "22" * 20,
        token="0x" + "44" * 20, withdraw_delay=3600, salt=os.urandom(32))
    cid = config.channel_id(DOMAIN)
    book.register(config, cid, conversation="conv", agent="a")
    book.apply_block(0, "0x" + "01" * 32, "0x" + "00" * 32,
                     [("0x" + "aa" * 32, 0, Event("Deposited", cid, 1000))])
    inner = Inner()
    return ChannelAccounting(book, DOMAIN, inner), cid, inner


def record(cid: bytes, ceiling: int | None, conversation: str | None = "conv") -> Any:
    header = None if ceiling is None else Voucher(cid, ceiling, scheme.sign_digest(
        KEY, scheme.voucher_digest(DOMAIN, cid, ceiling))).as_header()
    return SimpleNamespace(conversation=conversation, voucher=header, hold_id=None, cost=None,
                           transfer_ids=[])


def test_one_call_at_a_time_and_void_charges_nothing(
        env: tuple[ChannelAccounting, bytes, Inner]) -> None:
    acc, cid, _ = env
    first = record(cid, 100)
    first.hold_id = acc.hold(first, 100)
    assert first.channel_id == "0x" + cid.hex()
    assert first.voucher_cumulative == 100
    with pytest.raises(ChannelCallError, match="channel_busy"):
        acc.hold(record(cid, 100), 100)
    acc.void(first)
    assert acc.book.get(cid).mirror.charged == 0  # type: ignore[union-attr]
    second = record(cid, 100)
    second.hold_id = acc.hold(second, 100)
    assert acc.state(second.hold_id) == "open"
    acc.settle(second, 60)
    assert second.cost == 60
    assert acc.state(second.hold_id) == "settled"
    with pytest.raises(ChargeError, match="not running here"):
        acc.settle(second, 60)
    assert acc.book.get(cid).mirror.charged == 60  # type: ignore[union-attr]
    third = record(cid, 160)
    third.hold_id = acc.hold(third, 100)
    acc.settle(third, -1)  # usage unknown: the hold's worst case
    assert acc.book.get(cid).mirror.charged == 160  # type: ignore[union-attr]


def test_refusals_and_pass_through(env: tuple[ChannelAccounting, bytes, Inner]) -> None:
    acc, cid, inner = env
    with pytest.raises(ChannelCallError, match="voucher_required"):
        acc.hold(record(cid, None), 10)
    with pytest.raises(ChannelCallError, match="missing_channel"):
        acc.hold(record(cid, 10, conversation="other"), 10)
    plain = record(cid, None, conversation=None)
    plain.hold_id = acc.hold(plain, 10)
    assert plain.hold_id == "ledger-hold"
    assert acc.settle(plain, 5) == ["t1"]
    assert inner.calls == ["hold", "settle"]
    acc.book.set_state(cid, "closed")
    with pytest.raises(ChannelCallError, match="channel_closed"):
        acc.hold(record(cid, 10), 10)

"""Bounds: no amount, balance or sum can overflow a 64-bit column, on SQLite and PostgreSQL.

Before the bound, two deposits of 2^62 made an SQLite balance a float (later deposits then
vanished and ``check`` failed for good) and were a raw ``bigint out of range`` on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from teegate.ledger import Ledger
from teegate.ledger.model import MAX_AMOUNT, LimitExceeded
from tests.ledger.conftest import LedgerFactory, assert_consistent


def test_a_currency_cannot_hold_more_than_the_maximum(ledger: Ledger) -> None:
    ledger.deposit("alice", MAX_AMOUNT - 10)
    ledger.deposit("bob", 10)
    with pytest.raises(LimitExceeded, match="above the ledger's maximum") as e:
        ledger.deposit("carol", 1)  # any wallet: the bound is on the currency's total
    assert str(MAX_AMOUNT) in str(e.value)
    assert ledger.balance("carol").available == 0
    ledger.deposit("carol", 5, currency="EUR")  # another currency has its own total
    ledger.withdraw("bob", 4)
    ledger.deposit("carol", 4)
    b = ledger.balance("alice")
    assert type(b.available) is int
    assert b.available == MAX_AMOUNT - 10
    report = ledger.check()
    assert report.ok, report.problems
    assert report.minted["USD"] == MAX_AMOUNT
    assert_consistent(ledger)


@pytest.mark.parametrize("amount", [MAX_AMOUNT + 1, 2**62, 2**63, 2**64])
def test_an_amount_above_the_maximum_is_refused_as_such(ledger: Ledger, amount: int) -> None:
    ledger.deposit("alice", 1000)
    c = ledger.open_conversation("alice", 100)
    h = ledger.hold("alice", 10)
    attempts: list[Callable[[], object]] = [
        lambda: ledger.deposit("alice", amount),
        lambda: ledger.withdraw("alice", amount),
        lambda: ledger.open_conversation("alice", amount),
        lambda: ledger.hold("alice", amount, conversation=c.id),
        lambda: ledger.settle(h.id, amount, provider="p"),
        lambda: ledger.reward("alice", [("bob", amount)]),
    ]
    for attempt in attempts:
        with pytest.raises(LimitExceeded, match="exceeds the ledger's maximum"):
            attempt()
    assert ledger.get_hold(h.id).state == "open"
    assert_consistent(ledger)


def test_check_sums_a_lifetime_of_transfers_above_2_63(make_ledger: LedgerFactory) -> None:
    """An account's credits over its life may exceed 2^63 while its balance stays bounded:
    ``check`` must still add them up (SQLite's SUM overflows with an error)."""
    lg = make_ledger()
    rounds = 2**63 // MAX_AMOUNT + 2  # 1026 deposits and as many withdrawals of the maximum
    for _ in range(rounds):
        lg.deposit("alice", MAX_AMOUNT)
        lg.withdraw("alice", MAX_AMOUNT)
    report = lg.check()
    assert report.ok, report.problems
    assert report.transfers >= 2 * rounds
    assert report.minted == {"USD": 0}


@pytest.mark.parametrize("before", [2**63, 2**70, -1])
def test_a_history_cursor_beyond_64_bits_is_a_ledger_error(ledger: Ledger, before: int) -> None:
    """SQLite's driver raised OverflowError (a traceback from ``teegate wallet history``)."""
    from teegate.errors import LedgerError

    ledger.deposit("alice", 5)
    with pytest.raises(LedgerError, match="before must be a transfer seq"):
        ledger.transfers("alice", before=before)
    assert [t.amount for t in ledger.transfers("alice", before=2**63 - 1)] == [5]

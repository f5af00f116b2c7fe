"""A retry with the same key returns the first result and moves money once; the same key
with other parameters is refused."""

from __future__ import annotations

import pytest

from teegate.errors import BudgetError, LedgerError
from teegate.ledger import Ledger
from tests.ledger.conftest import Clock, assert_consistent


def _transfers(lg: Ledger) -> int:
    return lg.check().transfers


def test_every_operation_moves_money_once(ledger: Ledger) -> None:
    d1 = ledger.deposit("a", 1000, key="dep-1")
    assert ledger.deposit("a", 1000, key="dep-1") == d1
    w1 = ledger.withdraw("a", 100, key="wd-1")
    assert ledger.withdraw("a", 100, key="wd-1") == w1
    c1 = ledger.open_conversation("a", 500, key="open-1")
    assert ledger.open_conversation("a", 500, key="open-1") == c1
    h1 = ledger.hold("a", 200, conversation=c1.id, key="call-1")
    assert ledger.hold("a", 200, conversation=c1.id, key="call-1") == h1
    s1 = ledger.settle(h1.id, 50, provider="p", model="m", key="settle-1")
    assert ledger.settle(h1.id, 50, provider="p", model="m", key="settle-1") == s1
    h2 = ledger.hold("a", 10, key="call-2")
    v1 = ledger.void(h2.id)
    assert ledger.void(h2.id) == v1  # derived key void:<hold>
    r1 = ledger.reward("a", [("b", 5), ("c", 6)], key="rw-1")
    assert ledger.reward("a", [("b", 5), ("c", 6)], key="rw-1") == r1
    cl = ledger.close_conversation(c1.id)
    assert ledger.close_conversation(c1.id) == cl  # derived key close:<conversation>
    n = _transfers(ledger)
    # one more round of every retry: nothing moves
    ledger.deposit("a", 1000, key="dep-1")
    ledger.hold("a", 200, conversation=c1.id, key="call-1")
    ledger.settle(h1.id, 50, provider="p", model="m", key="settle-1")
    ledger.reward("a", [("b", 5), ("c", 6)], key="rw-1")
    assert _transfers(ledger) == n
    b = ledger.balance("a")
    assert (b.available, b.reserved, b.held) == (1000 - 100 - 50 - 11, 0, 0)
    assert_consistent(ledger)


def test_first_result_is_returned_even_after_state_moved_on(ledger: Ledger) -> None:
    ledger.deposit("a", 100)
    h = ledger.hold("a", 30, key="k")
    ledger.settle(h.id, 10, provider="p")
    again = ledger.hold("a", 30, key="k")
    assert again.state == "open"
    assert again.id == h.id
    assert ledger.balance("a").available == 90


def test_same_key_different_parameters_is_refused(ledger: Ledger) -> None:
    ledger.deposit("a", 1000, key="k1")
    with pytest.raises(LedgerError, match="different request"):
        ledger.deposit("a", 999, key="k1")
    with pytest.raises(LedgerError, match="different request"):
        ledger.withdraw("a", 1000, key="k1")
    h = ledger.hold("a", 100)
    ledger.settle(h.id, 40, provider="p")
    with pytest.raises(LedgerError, match="different request"):
        ledger.settle(h.id, 41, provider="p")  # same derived key settle:<hold>
    with pytest.raises(LedgerError, match="already settled"):
        ledger.void(h.id)
    assert ledger.balance("a").available == 960
    assert_consistent(ledger)


def test_refused_operation_records_nothing_and_can_be_retried(ledger: Ledger) -> None:
    ledger.deposit("a", 10)
    with pytest.raises(BudgetError):
        ledger.hold("a", 20, key="h")
    ledger.deposit("a", 10)
    h = ledger.hold("a", 20, key="h")  # the key was not burnt by the refusal
    assert h.amount == 20
    assert ledger.balance("a").held == 20


def test_without_a_key_each_call_is_a_new_operation(ledger: Ledger) -> None:
    ledger.deposit("a", 5)
    ledger.deposit("a", 5)
    assert ledger.balance("a").available == 10


def test_retry_later_with_a_recomputed_expiry_replays(ledger: Ledger, clock: Clock) -> None:
    ledger.deposit("a", 100)
    h = ledger.hold("a", 30, key="call-9", expires_at=clock.t + 600)
    c = ledger.open_conversation("a", 20, key="conv-9")
    clock.t += 5
    assert ledger.hold("a", 30, key="call-9", expires_at=clock.t + 600) == h
    assert ledger.open_conversation("a", 20, key="conv-9") == c
    assert ledger.balance("a").available == 50

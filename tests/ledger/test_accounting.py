"""The gateway adapter: hold, settle (also 'charge the whole hold'), void, refusal mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from teegate.errors import BudgetError, TeegateError
from teegate.ledger import Ledger
from teegate.ledger.accounting import FREE, LedgerAccounting
from tests.ledger.conftest import assert_consistent


@dataclass
class Record:
    agent: str
    model: str = "m"
    conversation: str | None = None
    provider: str | None = "near"
    usage: dict[str, Any] | None = None
    hold_id: str | None = None
    chat_id: str | None = "chatcmpl-1"
    outcome: str = "success"


class RefusedError(Exception):
    pass


def test_hold_settle_void_and_charge_whole(ledger: Ledger) -> None:
    ledger.deposit("a", 1000)
    acc = LedgerAccounting(ledger)
    r = Record("a", usage={"prompt_tokens": 1, "completion_tokens": 2})
    r.hold_id = acc.hold(r, 300)
    assert ledger.balance("a").held == 300
    ids = acc.settle(r, 120)
    assert len(ids) == 2
    assert acc.settle(r, 120) == ids  # a retried settlement charges once
    r2 = Record("a", usage=None)
    r2.hold_id = acc.hold(r2, 100)
    acc.settle(r2, -1)  # stream died without usage: the whole hold
    r3 = Record("a")
    r3.hold_id = acc.hold(r3, 50)
    acc.void(r3)
    assert ledger.balance("a").available == 1000 - 120 - 100
    assert [s.key for s in ledger.spend("a", group_by="provider")] == ["near"]
    assert_consistent(ledger)


def test_free_models_place_no_hold(ledger: Ledger) -> None:
    acc = LedgerAccounting(ledger)
    r = Record("broke")
    r.hold_id = acc.hold(r, 0)
    assert r.hold_id == FREE
    assert acc.settle(r, 0) == []
    acc.void(r)
    assert ledger.check().transfers == 0


def test_refusal_is_mapped(ledger: Ledger) -> None:
    ledger.deposit("a", 10)
    seen: list[TeegateError] = []

    def refuse(e: TeegateError) -> Exception:
        seen.append(e)
        return RefusedError(str(e))

    with pytest.raises(RefusedError, match="needed 11, available 10"):
        LedgerAccounting(ledger, refuse=refuse).hold(Record("a"), 11)
    assert isinstance(seen[0], BudgetError)
    with pytest.raises(RefusedError, match="no conversation"):
        LedgerAccounting(ledger, refuse=refuse).hold(Record("a", conversation="c9"), 1)
    with pytest.raises(BudgetError):
        LedgerAccounting(ledger).hold(Record("a"), 11)

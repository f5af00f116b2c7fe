"""``check`` finds every kind of inconsistency we can plant directly in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from teegate.errors import LedgerError
from teegate.ledger import Ledger, open_ledger


@pytest.fixture
def lg(tmp_path: Path) -> Ledger:
    lg = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    lg.deposit("a", 1000)
    c = lg.open_conversation("a", 400, conversation_id="c1")
    lg.hold("a", 100, conversation=c.id, hold_id="h1")
    assert lg.check().ok
    return lg


def _sql(lg: Ledger, stmt: str) -> None:
    url = lg.backend.url
    lg.close()
    conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints=ON")
    conn.execute(stmt)
    conn.close()


def _problems(tmp_path: Path) -> tuple[str, ...]:
    return open_ledger(f"sqlite:///{tmp_path / 'l.db'}").check().problems


def test_cache_differs_from_transfers(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "UPDATE tl_accounts SET balance = balance + 1 WHERE id = 'wallet:USD:a'")
    p = _problems(tmp_path)
    assert any("cached balance 601 but transfers give 600" in x for x in p)
    assert any("sum to 1" in x for x in p)


def test_money_created_by_a_transfer_without_counterpart(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "DELETE FROM tl_transfers WHERE kind = 'deposit'")
    p = _problems(tmp_path)
    assert any("wallet:USD:a" in x for x in p)
    assert any("external:USD" in x for x in p)


def test_open_hold_with_wrong_amount(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "UPDATE tl_holds SET state = 'settled' WHERE id = 'h1'")
    assert any("hold h1 is settled but its account holds 100" in x
               for x in _problems(tmp_path))


def test_closed_conversation_with_money_left(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "UPDATE tl_conversations SET state = 'closed' WHERE id = 'c1'")
    assert any("conversation c1 is closed but its reserve holds 300" in x
               for x in _problems(tmp_path))


def test_negative_balance(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "INSERT INTO tl_transfers (id, debit, credit, amount, currency, kind, agent, "
             "operation, created_at) VALUES ('x/0', 'wallet:USD:a', 'revenue:USD:p', 5000, "
             "'USD', 'charge', 'a', 'x', 0)")
    p = _problems(tmp_path)
    assert any("wallet:USD:a: negative balance" in x for x in p)
    assert any("revenue:USD:p, which does not exist" in x for x in p)


def test_schema_constraint_refuses_negative_cache(lg: Ledger, tmp_path: Path) -> None:
    url = lg.backend.url
    lg.close()
    conn = sqlite3.connect(url[len("sqlite:///"):])
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE tl_accounts SET balance = -1 WHERE id = 'wallet:USD:a'")
    conn.close()


def test_newer_schema_is_refused(lg: Ledger, tmp_path: Path) -> None:
    _sql(lg, "INSERT INTO tl_schema (version) VALUES (99)")
    with pytest.raises(LedgerError, match="schema version 99"):
        open_ledger(f"sqlite:///{tmp_path / 'l.db'}")


def test_bad_urls() -> None:
    with pytest.raises(LedgerError, match="must start with"):
        open_ledger("mysql://x")
    with pytest.raises(LedgerError, match="names no file"):
        open_ledger("sqlite:///")

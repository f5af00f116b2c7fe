"""Which commits the SQLite ledger fsyncs: every one that moves money, never a hold's alone
(a hold is made power-loss durable by the next fsync'd commit of the sequential WAL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from teegate.errors import LedgerError
from teegate.ledger import open_ledger
from teegate.ledger.db import SqliteBackend


def _commits(tmp_path: Path, durability: str) -> list[tuple[str, int]]:
    """(operation, the writer's ``synchronous`` level when it committed: 1 NORMAL, 2 FULL)."""
    lg = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", durability=durability)
    backend = lg.backend
    assert isinstance(backend, SqliteBackend)
    levels: list[int] = []
    conn: sqlite3.Connection = backend._w

    def trace(sql: str) -> None:
        if sql == "COMMIT":
            levels.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))

    conn.set_trace_callback(trace)
    seen: list[tuple[str, int]] = []

    def step(name: str) -> None:
        seen.append((name, levels[-1]))

    lg.deposit("a", 1_000)
    step("deposit")
    h = lg.hold("a", 100)
    step("hold")
    assert lg.renew_holds([h.id], h.expires_at + 60) == 1
    step("renewal")
    lg.settle(h.id, 40, provider="p")
    step("settle")
    h2 = lg.hold("a", 100)
    step("hold")
    lg.void(h2.id)
    step("void")
    conn.set_trace_callback(None)
    lg.close()
    return seen


def test_full_fsyncs_money_movements_not_holds(tmp_path: Path) -> None:
    assert _commits(tmp_path, "full") == [("deposit", 2), ("hold", 1), ("renewal", 1),
                                          ("settle", 2), ("hold", 1), ("void", 2)]


def test_strict_fsyncs_every_commit(tmp_path: Path) -> None:
    assert {level for _, level in _commits(tmp_path, "strict")} == {2}


def test_normal_fsyncs_nothing(tmp_path: Path) -> None:
    assert {level for _, level in _commits(tmp_path, "normal")} == {1}


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="durability must be one of full, strict, normal"):
        open_ledger(f"sqlite:///{tmp_path / 'l.db'}", durability="fast")

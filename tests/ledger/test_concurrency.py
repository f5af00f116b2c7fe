"""Many calls at once against a wallet that can afford only some of them: never a negative
balance, never more spent than deposited, the number of successful calls matches the money.
Threads on SQLite (one process) and two OS processes sharing PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from teegate.errors import BudgetError
from teegate.ledger import Ledger, open_ledger
from tests.ledger.conftest import _PG, PG_URL, assert_consistent, drop_schema

ROOT = Path(__file__).resolve().parents[2]
DEPOSIT, COST, CALLS = 1_000, 37, 64  # affords 27 of 64


def _race_threads(lg: Ledger, agent: str, calls: int) -> tuple[int, int]:
    ok: list[str] = []
    refused: list[int] = []
    barrier = threading.Barrier(calls)

    def one() -> None:
        barrier.wait()
        try:
            h = lg.hold(agent, COST)
        except BudgetError:
            refused.append(1)
            return
        lg.settle(h.id, COST, provider="p", model="m")
        ok.append(h.id)

    ts = [threading.Thread(target=one) for _ in range(calls)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(ok), len(refused)


def _assert_money(lg: Ledger, agent: str, ok: int) -> None:
    assert ok == DEPOSIT // COST
    b = lg.balance(agent)
    assert (b.available, b.reserved, b.held) == (DEPOSIT - ok * COST, 0, 0)
    spent = sum(r.amount for r in lg.spend(agent))
    assert spent == ok * COST <= DEPOSIT
    assert_consistent(lg)


def test_64_threads_on_sqlite(tmp_path: Path) -> None:
    lg = open_ledger(f"sqlite:///{tmp_path / 'c.db'}")
    lg.deposit("a", DEPOSIT)
    ok, refused = _race_threads(lg, "a", CALLS)
    assert ok + refused == CALLS
    _assert_money(lg, "a", ok)


def test_64_threads_across_two_sqlite_handles(tmp_path: Path) -> None:
    """Two ledger handles = two connections competing for SQLite's write lock."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    one, two = open_ledger(url), open_ledger(url)
    one.deposit("a", DEPOSIT)
    results: list[tuple[int, int]] = []
    ts = [threading.Thread(target=lambda lg=lg: results.append(_race_threads(lg, "a", 32)))
          for lg in (one, two)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    _assert_money(one, "a", sum(r[0] for r in results))


@pytest.mark.skipif(not _PG, reason=f"PostgreSQL not reachable at {PG_URL}")
def test_64_calls_from_two_processes_on_postgresql() -> None:
    schema = f"tl_conc_{uuid.uuid4().hex[:8]}"
    lg = open_ledger(PG_URL, schema=schema)
    try:
        lg.deposit("a", DEPOSIT)
        start = time.time() + 2.0
        procs = [subprocess.Popen(
            [sys.executable, "-m", "tests.ledger._worker", "race", PG_URL, schema, "a", "32",
             str(COST), str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
        outs = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1])
                for p in procs]
        assert all(p.returncode == 0 for p in procs)
        ok = sum(o["ok"] for o in outs)
        assert ok + sum(o["refused"] for o in outs) == CALLS
        _assert_money(lg, "a", ok)
    finally:
        lg.close()
        drop_schema(schema)

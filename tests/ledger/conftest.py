"""Ledger fixtures: the same tests run on SQLite (a temporary file) and PostgreSQL (a schema
of its own per test in the database named by TEEGATE_TEST_PG, dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teegate.ledger import Currency, Ledger, open_ledger

PG_URL = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SESSION = uuid.uuid4().hex[:8]
CURRENCIES = (Currency("USD", 6, "$"), Currency("EUR", 2))


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


_PG = pg_available()


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Clock:
    """A settable clock: expiry tests move time instead of sleeping."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


LedgerFactory = Callable[[], Ledger]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not _PG:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    return str(request.param)


@pytest.fixture
def make_ledger(backend: str, tmp_path: Path, clock: Clock) -> Iterator[LedgerFactory]:
    """Opens ledgers on one database (several handles = several 'processes' in one test)."""
    opened: list[Ledger] = []
    schema = f"tl_test_{SESSION}_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite" else PG_URL

    def make() -> Ledger:
        lg = open_ledger(url, currencies=CURRENCIES, clock=clock,
                         schema=schema if backend == "postgresql" else None)
        opened.append(lg)
        return lg

    yield make
    for lg in opened:
        lg.close()
    if backend == "postgresql":
        drop_schema(schema)


@pytest.fixture
def ledger(make_ledger: LedgerFactory) -> Ledger:
    return make_ledger()


def assert_consistent(lg: Ledger) -> None:
    report = lg.check()
    assert report.problems == ()
    assert all(v == 0 for v in report.totals.values())

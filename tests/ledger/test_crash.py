"""kill -9 a process in the middle of a load: after reopening, ``check`` passes (every
committed operation is whole, no half-applied one) and expiry releases the open holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from teegate.ledger import open_ledger
from tests.ledger.conftest import _PG, PG_URL, assert_consistent, drop_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}", None
        return
    if not _PG:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    schema = f"tl_crash_{uuid.uuid4().hex[:8]}"
    yield PG_URL, schema
    drop_schema(schema)


def test_sigkill_mid_load_leaves_a_consistent_ledger(target: tuple[str, str | None]) -> None:
    url, schema = target
    lg = open_ledger(url, schema=schema)
    lg.deposit("a", 10_000_000)
    lg.close()
    p = subprocess.Popen([sys.executable, "-m", "tests.ledger._worker", "load", url, "a",
                          *([schema] if schema else [])],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # keep loading; the kill lands mid-transaction with high probability
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL

    lg = open_ledger(url, schema=schema)
    assert_consistent(lg)
    b = lg.balance("a")
    assert b.held > 0  # the killed process left holds behind
    assert lg.expire(now=time.time() + 30).holds == 0  # not expired yet
    released = lg.expire(now=time.time() + 61)
    assert released.holds > 0
    after = lg.balance("a")
    assert after.held == 0
    assert after.available == b.available + b.held
    spent = sum(r.amount for r in lg.spend("a"))
    assert after.available + spent == 10_000_000
    assert_consistent(lg)
    lg.close()

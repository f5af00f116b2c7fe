"""kill -9 a process in the middle of a load: after reopening, ``check`` passes (every
committed operation is whole, no half-applied one) and expiry releases the open holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from teegate.ledger import open_ledger
from tests.ledger.conftest import assert_consistent

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_load_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    lg = open_ledger(url)
    lg.deposit("a", 10_000_000)
    lg.close()
    p = subprocess.Popen([sys.executable, "-m", "tests.ledger._worker", "load", url, "a"],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # keep loading; the kill lands mid-transaction with high probability
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL

    lg = open_ledger(url)
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

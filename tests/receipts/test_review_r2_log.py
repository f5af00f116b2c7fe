"""Review findings on the log writer's checkpoint schedule (each test failed before its fix)."""

from __future__ import annotations

import time
from collections.abc import Callable

from teegate.receipts import ReceiptLog

from .conftest import make_receipt

OpenLog = Callable[..., ReceiptLog]


def _wait_for_checkpoint(log: ReceiptLog, size: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = log.latest_checkpoint()
        if cp is not None and cp.size >= size:
            return True
        time.sleep(0.02)
    return False


def test_wall_clock_stepping_back_does_not_stop_interval_checkpoints(open_log: OpenLog) -> None:
    """NTP stepping the clock back an hour used to pause interval checkpoints for an hour."""
    now = [1_800_000_000.0]
    log = open_log(checkpoint_interval=0.05, clock=lambda: now[0])
    log.submit(make_receipt(0))
    assert _wait_for_checkpoint(log, 1)
    now[0] -= 3600
    log.submit(make_receipt(1))
    assert _wait_for_checkpoint(log, 2), "no checkpoint after the clock stepped back"

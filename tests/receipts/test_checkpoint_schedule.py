"""The log writer's checkpoint schedule (each test failed before its fix)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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


def test_same_receipt_id_with_other_content_is_reported_not_silently_lost(
    open_log: OpenLog,
) -> None:
    """A retry with identical bytes is idempotent; different bytes under a logged id are a
    conflict the operator must see (the second receipt is not in the log)."""
    log = open_log(checkpoint_interval=0)
    log.submit(make_receipt(1))
    log.flush()
    log.submit(make_receipt(1))  # an identical retry
    log.flush()
    assert log.size() == 1
    assert log.conflicts == []
    log.submit(make_receipt(1, outcome="voided"))
    log.submit(make_receipt(2))
    log.submit(make_receipt(2, cost=1))  # a conflict inside one batch
    log.flush()
    assert log.size() == 2
    assert sorted(log.conflicts) == ["rcpt_000001", "rcpt_000002"]
    assert log.last_error is not None
    assert "conflict" in log.last_error


def test_concurrent_first_starts_get_one_log_key(tmp_path: Path) -> None:
    """Gateways starting at once used to crash (FileExistsError) or read a half-written PEM
    (ConfigError) in over half of such races; now all get the one key that was written."""
    import threading

    from teegate.receipts import load_or_create_log_key

    for trial in range(30):
        path = tmp_path / f"t{trial}" / "log.pem"
        barrier = threading.Barrier(6)
        keys: list[bytes] = []
        errors: list[BaseException] = []

        def start(
            path: Path = path,
            barrier: threading.Barrier = barrier,
            keys: list[bytes] = keys,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                keys.append(load_or_create_log_key(path).private_bytes_raw())
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(set(keys)) == 1
        assert path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["log.pem"]  # no temp files left

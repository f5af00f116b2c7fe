"""Issue 12, point 4: start-up verifies every checkpoint the log signed (not only the newest
1,000), remembers in the database what it verified so a restart verifies only new ones, and
still re-checks what was verified before (receipts.startup). SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from teegate.receipts import CheckpointVerificationError, ReceiptLog
from teegate.receipts.checkpoint import Checkpoint, sign_checkpoint
from teegate.receipts.startup import MARK_KEY
from teegate.receipts.store import TreeStore
from tests.receipts.conftest import make_receipt

OpenLog = Callable[..., ReceiptLog]


def _checkpoints(log: ReceiptLog, start: int, end: int) -> None:
    """Receipts ``start..end`` appended and one signed checkpoint at every size in between,
    as a log with a short checkpoint interval leaves them (signed with the log's key, written
    in one transaction: the interval writer would take minutes)."""
    log.append_many([make_receipt(i) for i in range(start, end)])
    store = log.store
    rows = []
    for size in range(start + 1, end + 1):
        root = store.root(size)
        rows.append((size, root, sign_checkpoint(Checkpoint(log.origin, size, root),
                                                 log._note_signer), 0))
    with store.db.transaction(lock_head=False):
        tx = store.db.tx()
        for row in rows:
            tx.exec("INSERT INTO tlog_checkpoint (size, root, note, created_ms) "
                    "VALUES (?, ?, ?, ?)", row)


def _sql(db: dict[str, Any], sql: str, params: tuple[Any, ...] = ()) -> None:
    """Write behind the log's back (no log open: nothing re-signs a checkpoint on close)."""
    store = TreeStore(db["url"], schema=db["schema"])
    try:
        store.db.execute(sql, params)
    finally:
        store.close()


def _break_note(db: dict[str, Any], size: int) -> None:
    """Flip one character of the signature line of checkpoint ``size``'s note."""
    store = TreeStore(db["url"], schema=db["schema"])
    cp = store.checkpoint_at(size)
    store.close()
    assert cp is not None
    head, sig = cp.note.rstrip("\n").rsplit("\n", 1)
    i = len(sig) - 6
    sig = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]
    _sql(db, "UPDATE tlog_checkpoint SET note = ? WHERE size = ?", (f"{head}\n{sig}\n", size))


def test_a_tampered_old_checkpoint_is_refused(open_log: OpenLog, db: dict[str, Any]) -> None:
    """1,205 checkpoints; the third-oldest (far behind the newest 1,000) no longer verifies."""
    log = open_log(checkpoint_interval=0, background=False)
    _checkpoints(log, 0, 1205)
    log.close()
    _break_note(db, 3)
    with pytest.raises(CheckpointVerificationError, match="checkpoint 3") as e:
        open_log(checkpoint_interval=0, background=False)
    assert e.value.size == 3


def test_a_restart_verifies_only_new_checkpoints(
        open_log: OpenLog, caplog: pytest.LogCaptureFixture) -> None:
    log = open_log(checkpoint_interval=0, background=False)
    assert log.startup_check.new == 0
    _checkpoints(log, 0, 1100)
    log.close()
    with caplog.at_level(logging.INFO, logger="teegate.receipts"):
        second = open_log(checkpoint_interval=0, background=False)
    check = second.startup_check
    assert (check.new, check.first_new, check.rechecked) == (1100, 1, None)
    assert "verified 1100 new checkpoints (sizes 1..1100" in caplog.text
    assert second.store.meta(MARK_KEY) is not None  # remembered, in the database
    _checkpoints(second, 1100, 1105)
    second.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="teegate.receipts"):
        third = open_log(checkpoint_interval=0, background=False)
    check = third.startup_check
    assert (check.new, check.first_new) == (5, 1101)
    assert check.rechecked is not None
    assert check.rechecked.size == 1100
    assert check.rehashed == 1100  # the remembered rows, re-hashed (full start)
    assert "verified 5 new checkpoints (sizes 1101..1105" in caplog.text
    assert "re-checked checkpoint 1100" in caplog.text
    third.close()
    fourth = open_log(checkpoint_interval=0, background=False)  # nothing new
    assert fourth.startup_check.new == 0
    assert fourth.startup_check.rechecked is not None
    assert fourth.startup_check.rechecked.size == 1105


@pytest.mark.parametrize("where", ["remembered", "older"])
def test_a_verified_checkpoint_changed_later_is_refused(open_log: OpenLog, db: dict[str, Any],
                                                        where: str) -> None:
    log = open_log(checkpoint_interval=0, background=False)
    _checkpoints(log, 0, 40)
    log.close()
    open_log(checkpoint_interval=0, background=False).close()  # verified and remembered
    size = 40 if where == "remembered" else 7
    _break_note(db, size)
    with pytest.raises(CheckpointVerificationError) as e:
        open_log(checkpoint_interval=0, background=False)
    assert e.value.size == 40  # the remembered one, or the range up to it
    assert "rewritten" in str(e.value)


def test_a_deleted_verified_checkpoint_is_refused_on_a_fast_start(
        open_log: OpenLog, db: dict[str, Any]) -> None:
    log = open_log(checkpoint_interval=0, background=False)
    _checkpoints(log, 0, 30)
    log.close()
    open_log(checkpoint_interval=0, background=False, verify_on_open="fast").close()
    _sql(db, "DELETE FROM tlog_checkpoint WHERE size = ?", (12,))
    with pytest.raises(CheckpointVerificationError, match="not the 30 verified") as e:
        open_log(checkpoint_interval=0, background=False, verify_on_open="fast")
    assert e.value.size == 30


def test_the_remembered_checkpoint_gone_is_refused(open_log: OpenLog,
                                                   db: dict[str, Any]) -> None:
    log = open_log(checkpoint_interval=0, background=False)
    _checkpoints(log, 0, 10)
    log.close()
    open_log(checkpoint_interval=0, background=False).close()
    _sql(db, "DELETE FROM tlog_checkpoint WHERE size = ?", (10,))
    with pytest.raises(CheckpointVerificationError, match="no longer stored") as e:
        open_log(checkpoint_interval=0, background=False)
    assert e.value.size == 10


def test_a_new_checkpoint_not_consistent_with_the_remembered_one(
        open_log: OpenLog, db: dict[str, Any]) -> None:
    """A checkpoint signed over a different history after the remembered one (a fork the
    log key signed, e.g. by another process on a rewritten copy) is refused."""
    log = open_log(checkpoint_interval=0, background=False)
    _checkpoints(log, 0, 8)
    log.close()
    open_log(checkpoint_interval=0, background=False).close()
    other = open_log(checkpoint_interval=0, background=False)
    forged_root = bytes(32)
    note = sign_checkpoint(Checkpoint(other.origin, 9, forged_root), other._note_signer)
    other.append_many([make_receipt(8)])
    other.store.db.execute("INSERT INTO tlog_checkpoint (size, root, note, created_ms) "
                           "VALUES (?, ?, ?, ?)", (9, forged_root, note, 0))
    other.close()  # its final checkpoint: nothing new to sign
    with pytest.raises(CheckpointVerificationError, match="checkpoint 9") as e:
        open_log(checkpoint_interval=0, background=False)
    assert e.value.size == 9

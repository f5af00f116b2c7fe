"""Rows written into the log's tables behind its back (issue 12 points 2, 3, 5): a stray leaf
past the head makes the log visibly stuck instead of retrying forever, the queue survives a
prompt stop; rows not signed by the receipt key never enter a checkpoint; the ``agent`` and
``receipt_id`` columns are not trusted. Each test failed before its fix."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.errors import LogError
from teegate.receipts import ReceiptLog, ReceiptSigner, merkle
from teegate.receipts.store import node_key

from .conftest import ORIGIN, make_receipt, receipts_client
from .test_http_audit import principal

OpenLog = Callable[..., ReceiptLog]


def _sql(log: ReceiptLog, sql: str, params: tuple[Any, ...] = ()) -> None:
    with log.store.db.transaction(lock_head=False):
        log.store.db.execute(sql, params)


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_stray_leaf_past_the_head_stops_the_log_visibly_and_keeps_the_queue(
        open_log: OpenLog, db: dict[str, Any], log_key: Ed25519PrivateKey) -> None:
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(3)])
    stray = ReceiptSigner(log_key).sign(make_receipt(99))
    _sql(log, "INSERT INTO tlog_leaf (idx, receipt_id, agent, data) VALUES (?, ?, ?, ?)",
         (3, stray.receipt_id, stray.agent, stray.leaf))
    ids = log.commit([make_receipt(10), make_receipt(11)])  # durable, but cannot be appended
    _wait(lambda: log.stuck is not None)
    assert "past its head" in (log.stuck or "")
    t0 = time.monotonic()
    with pytest.raises(LogError, match="stuck"):
        log.get(ids[0])  # an error (the routes' 503), at once: not None (404) after 5 s
    with pytest.raises(LogError, match="stuck"):
        log.flush()
    assert time.monotonic() - t0 < 1.0
    log.submit(make_receipt(12))  # in memory only when the stop comes
    t0 = time.monotonic()
    log.close()
    assert time.monotonic() - t0 < 3.0  # was 32 s, and the queue was dropped
    # the stray row removed, the next start appends every queued receipt
    again = ReceiptLog(db["url"], schema=db["schema"], origin=ORIGIN, key=log_key,
                       checkpoint_interval=0)
    try:
        _sql(again, "DELETE FROM tlog_leaf WHERE idx = 3")
        again.flush()
        assert again.stuck is None
        for rid in [*ids, "rcpt_000012"]:
            got = again.get(rid)
            assert got is not None
        assert again.size() == 6
    finally:
        again.close()


def test_a_queued_row_not_signed_by_the_receipt_key_is_quarantined(
        open_log: OpenLog) -> None:
    log = open_log(checkpoint_interval=0)
    forged = ReceiptSigner(Ed25519PrivateKey.generate()).sign(make_receipt(7))
    _sql(log, "INSERT INTO tlog_queue (receipt_id, agent, data) VALUES (?, ?, ?)",
         (forged.receipt_id, forged.agent, forged.leaf))
    good = log.commit([make_receipt(8)])
    log.flush()
    assert log.get(forged.receipt_id) is None
    assert log.get(good[0]) is not None
    assert log.quarantined == [forged.receipt_id]
    rows = log.store.db.execute("SELECT receipt_id, reason FROM tlog_quarantine")
    assert [r[0] for r in rows] == [forged.receipt_id]
    assert "receipt key" in rows[0][1]
    assert log.size() == 1
    assert log.checkpoint().size == 1


def test_a_leaf_written_into_the_tree_without_the_key_is_never_checkpointed(
        open_log: OpenLog) -> None:
    """Someone with database access appends a complete leaf (row, node hash, head): the log
    refuses to sign a checkpoint over it (before, it was signed in)."""
    log = open_log(checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(2)])
    log.checkpoint()
    forged = ReceiptSigner(Ed25519PrivateKey.generate()).sign(make_receipt(5))
    _sql(log, "INSERT INTO tlog_leaf (idx, receipt_id, agent, data) VALUES (?, ?, ?, ?)",
         (2, forged.receipt_id, forged.agent, forged.leaf))
    _sql(log, "INSERT INTO tlog_node (id, hash) VALUES (?, ?)",
         (node_key((0, 2)), merkle.leaf_hash(forged.leaf)))
    _sql(log, "UPDATE tlog_head SET size = 3 WHERE id = 1")
    log.store.forget_edge()
    with pytest.raises(LogError, match="not a receipt signed by the receipt key"):
        log.checkpoint()
    assert log.latest_checkpoint() is not None
    assert log.latest_checkpoint().size == 2  # type: ignore[union-attr]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ReceiptLog]]:
    log = ReceiptLog(f"sqlite:///{tmp_path / 'h.db'}", origin=ORIGIN,
                     key=Ed25519PrivateKey.generate(), checkpoint_interval=0)
    log.append_many([make_receipt(i) for i in range(3)])  # agents agent-0, agent-1, agent-2
    log.checkpoint()
    async with receipts_client(log, principal) as c:
        yield c, log
    log.close()


async def test_the_agent_and_id_columns_are_not_trusted(
        served: tuple[httpx.AsyncClient, ReceiptLog]) -> None:
    c, log = served
    agent1 = {"authorization": "Bearer agent:agent-1:"}
    agent2 = {"authorization": "Bearer agent:agent-2:"}
    _sql(log, "UPDATE tlog_leaf SET agent = 'agent-2' WHERE receipt_id = 'rcpt_000001'")
    for path in ("/v1/receipts/rcpt_000001", "/v1/aci/receipts/rcpt_000001",
                 "/v1/receipts/rcpt_000001/bundle"):
        assert (await c.get(path, headers=agent2)).status_code == 404, path  # was 200
        assert (await c.get(path, headers=agent1)).status_code == 200, path
    # a row whose id column names another receipt is not that receipt
    _sql(log, "UPDATE tlog_leaf SET receipt_id = 'rcpt_other' WHERE receipt_id = 'rcpt_000002'")
    assert (await c.get("/v1/aci/receipts/rcpt_other", headers=agent2)).status_code == 404
    # a stored document rewritten after it was logged: the log says so, never serves it
    _sql(log, "UPDATE tlog_leaf SET data = ? WHERE receipt_id = 'rcpt_000001'",
         (log.store.leaves(1, 2)[0][2].replace(b'"success"', b'"refused"'),))
    r = await c.get("/v1/aci/receipts/rcpt_000001", headers=agent1)
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "log_unavailable"

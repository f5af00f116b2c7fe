"""A receipt id that reached a client exists after a SIGKILL: real `teegate serve` processes
under concurrent plain and streamed calls, killed right after the last answer (and, in a
second case, mid-load), restarted on the same database (SQLite, and PostgreSQL with
TEEGATE_TEST_PG). Before the receipt was committed with the settlement, ahead of the answer's
last byte, 218-376 of 400 receipt ids handed out this way did not exist after the restart."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from teegate.ledger import open_ledger
from teegate.node import BuiltinEngine, engine_app
from tests.gateway.loopback import Server, serving
from tests.gateway.test_processes import (
    PROC_ADMIN,
    Gateway,
    _config,
    _ledger_check,
    _setup,
    pg_db,
)

__all__ = ["pg_db"]  # the PostgreSQL database fixture, shared

CLIENTS = 8
PER_CLIENT = 30
ADMIN = {"authorization": f"Bearer {PROC_ADMIN}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serving(engine_app(BuiltinEngine(("m",)))) as s:
        yield s


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'teegate.db'}"
    return str(request.getfixturevalue("pg_db"))


def _one_call(url: str, key: str, i: int) -> str | None:
    """One call; the receipt id of a complete answer (plain or streamed), else None."""
    body = {"model": "m", "max_tokens": 5, "stream": i % 2 == 1,
            "messages": [{"role": "user", "content": f"hello {i}"}]}
    headers = {"authorization": f"Bearer {key}"}
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers,
                          timeout=30) as r:
            raw = b"".join(r.iter_raw())  # to the last byte: the answer is complete
            if r.status_code != 200:
                return None
            rid = r.headers["x-receipt-id"]
            assert r.headers["x-teegate-receipt"] == rid
    except httpx.HTTPError:
        return None  # the gateway died mid-answer: no complete answer, no promise
    if body["stream"]:
        assert raw.endswith(b"data: [DONE]\n\n")
    else:
        assert json.loads(raw)["usage"]
    return str(rid)


def _load(url: str, key: str, received: list[str], stop: threading.Event) -> None:
    def client(c: int) -> None:
        for n in range(PER_CLIENT):
            if stop.is_set():
                return
            rid = _one_call(url, key, c * PER_CLIENT + n)
            if rid is not None:
                received.append(rid)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))


@pytest.mark.parametrize("when", ["after_last_answer", "mid_load"])
def test_every_receipt_id_a_client_got_exists_after_sigkill(
        tmp_path: Path, upstream: Server, db: str, when: str) -> None:
    cfg = _config(tmp_path, db, upstream.url)
    ledger, agent, key = _setup(db, deposit=10**9)
    gw = Gateway(cfg, tmp_path)
    received: list[str] = []
    stop = threading.Event()
    try:
        if when == "after_last_answer":
            _load(gw.url, key, received, stop)
            gw.proc.send_signal(signal.SIGKILL)  # right after the last answer's last byte
        else:
            t = threading.Thread(target=_load, args=(gw.url, key, received, stop))
            t.start()
            while len(received) < CLIENTS * PER_CLIENT // 2:
                assert t.is_alive()
                time.sleep(0.005)
            gw.proc.send_signal(signal.SIGKILL)  # calls in flight on every client
            stop.set()
            t.join(60)
        gw.proc.wait(10)
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
    assert len(received) >= CLIENTS * PER_CLIENT // 2
    again = Gateway(cfg, tmp_path)  # the receipts queued by the dead one are appended
    try:
        missing = []
        for rid in received:
            r = httpx.get(f"{again.url}/v1/receipts/{rid}", headers=ADMIN, timeout=30)
            if r.status_code != 200:
                missing.append((rid, r.status_code, r.text[:200]))
        assert missing == [], f"{len(missing)} of {len(received)} receipt ids lost: {missing[:3]}"
        # the log holds each receipt once, and its checkpoint covers them
        cp = httpx.get(again.url + "/v1/log/checkpoint", timeout=30)
        assert cp.status_code == 200
    finally:
        again.stop()
    # nothing charged twice: one charge per settled hold, one settlement per hold
    lg = open_ledger(db)
    rows = lg.backend.read(lambda tx: tx.all(
        "SELECT operation, COUNT(*) FROM tl_transfers WHERE kind = 'charge' "
        "GROUP BY operation"))
    assert all(int(n) == 1 for _, n in rows)
    holds = lg.backend.read(lambda tx: tx.all(
        "SELECT state, COUNT(*) FROM tl_holds WHERE agent = ? GROUP BY state", (agent,)))
    by_state = {str(s): int(n) for s, n in holds}
    assert by_state.get("settled", 0) == len(rows) >= len(received)
    assert lg.check().ok
    lg.close()
    ledger.close()
    check = _ledger_check(db)
    assert check.returncode == 0, check.stdout + check.stderr

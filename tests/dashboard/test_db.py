"""The calls projection over a real receipt log on SQLite: fields, filters, keyset paging,
scopes, and that the indexes serve the page queries."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.dashboard.db import DashboardDB, project
from teegate.receipts import Receipt, ReceiptLog


def _receipt(i: int) -> Receipt:
    return Receipt(
        receipt_id=f"rcpt_{i:06d}", time_ms=1_750_000_000_000 + i * 1000,
        agent="a" if i % 2 else "b", conversation=None, platform="tee-node",
        provider=None if i % 10 == 0 else f"p{i % 3}", model="m",
        trust_level="attested", outcome="refused" if i % 10 == 0 else "success",
        request_received_sha256="00" * 32, response_returned_sha256="11" * 32,
        cost=i, currency="USD", transfer_ids=(f"settle:hold_{i}/charge",),
        error="insufficient funds for this call: needed 9" if i % 10 == 0 else None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'g.db'}", None
    url = os.environ.get("TEEGATE_TEST_PG")
    if not url:
        pytest.skip("TEEGATE_TEST_PG is not set")
    return url, "dash_" + uuid.uuid4().hex[:10]


def test_projection_filters_and_pages(backend: tuple[str, str | None]) -> None:
    url, schema = backend
    log = ReceiptLog(url, origin="teegate.test/log", key=Ed25519PrivateKey.generate(),
                     background=False, schema=schema)
    log.append_many([_receipt(i) for i in range(250)])
    db = DashboardDB(url, schema=schema)
    assert db.index_more(100) == 100  # in bounded batches
    while db.index_more(100):
        pass
    assert db.progress() == (250, 250)
    page = db.calls(agents=None, filters={}, limit=50)
    assert [r.idx for r in page] == list(range(249, 199, -1))  # newest first
    older = db.calls(agents=None, filters={}, before=page[-1].idx, limit=50)
    assert older[0].idx == 199
    mine = db.calls(agents=frozenset({"a"}), filters={"provider": "p1"}, limit=500)
    assert mine
    assert all(r.agent == "a" and r.provider == "p1" for r in mine)
    assert db.calls(agents=frozenset(), filters={}) == []  # an owner of nobody sees nothing
    hit = db.calls(agents=None, filters={}, receipt="rcpt_00012")
    assert {r.receipt_id for r in hit} == {f"rcpt_{i:06d}" for i in range(120, 130)}
    assert db.counts("b")["402"] == 25  # every tenth call, all even
    assert db.recent_402("b")[0][0] == "rcpt_000240"
    assert db.calls(agents=None, filters={}, limit=1)[0].hold == "hold_249"
    for q in ("SELECT idx FROM dash_calls WHERE agent IN ('a') ORDER BY idx DESC LIMIT 50",
              "SELECT idx FROM dash_calls WHERE provider = 'p1' ORDER BY idx DESC LIMIT 50"):
        if db.pg:  # a 250-row table may be scanned by PostgreSQL's planner: ask it not to
            db.all("SET enable_seqscan = off")
        plan = " ".join(str(r) for r in db.all(("EXPLAIN " if db.pg else
                                                "EXPLAIN QUERY PLAN ") + q))
        assert "INDEX" in plan.upper(), plan
    db.close()
    log.close()


def test_a_leaf_that_is_not_a_teegate_receipt_gets_a_row_and_does_not_stop_the_index() -> None:
    for data in (b"not json", b'{"event_log": []}', b"[1]"):
        row = project(7, data)
        assert row[0] == 7
        assert row[5] == "unreadable"


def test_transfers_page_like_the_ledger(backend: tuple[str, str | None]) -> None:
    """The dashboard's two-index query returns exactly ``Ledger.transfers``' pages."""
    from teegate.ledger import open_ledger

    url, schema = backend
    led = open_ledger(url, schema=schema)
    for a in ("a", "b"):
        led.deposit(a, 10**9)
    for i in range(60):
        h = led.hold("a" if i % 3 else "b", 1000)
        led.settle(h.id, 10 + i, provider="p", model="m")
    led.withdraw("a", 5)
    db = DashboardDB(url, schema=schema)
    for agent in ("a", "b"):
        wallet = led.wallet_account(agent, "USD")[0]
        before = None
        while True:
            want = led.transfers(agent, limit=7, before=before)
            got = db.transfers(agent, wallet, "USD", limit=7, before=before)
            assert got == want
            if not want:
                break
            before = want[-1].seq
    db.close()
    led.close()


def test_aggregates_match_the_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    log = ReceiptLog(url, origin="teegate.test/log", key=Ed25519PrivateKey.generate(),
                     background=False)
    log.append_many([_receipt(i) for i in range(300)])
    one, two = DashboardDB(url), DashboardDB(url)  # two workers indexing the same log
    while one.index_more(70) + two.index_more(50):
        pass
    for agent in ("a", "b"):
        rows = one.all("SELECT SUM(cost), COUNT(*), SUM(refused402) FROM dash_calls "
                       "WHERE agent = ?", (agent,))[0]
        agg = one.all("SELECT SUM(cost), SUM(calls), SUM(refused402) FROM dash_agg "
                      "WHERE agent = ?", (agent,))[0]
        assert tuple(map(int, rows)) == tuple(map(int, agg))
        assert sum(c for _, c, _ in one.spend(agent, "model", days=10_000)) == int(rows[0])
    one.close()
    two.close()
    log.close()

"""The dashboard's reads. Calls come from the receipt log (``tlog_leaf``, the signed
documents), projected into ``dash_calls`` with one index per filter, so a page of 10^5 calls
is an index range scan, never a parse of every receipt. The projection is derived data: the
indexer appends what the log gained since its last row (``idx`` order), and a receipt page
always re-reads and verifies the receipt itself. Wallets, conversations and holds are read
from the ledger's tables, read-only; the two indexes added on them are ``dash_``-named.

One connection per process (sqlite3 or psycopg, autocommit), serialised by a lock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teegate.errors import ConfigError

PAGE = 50
_DDL = (
    """CREATE TABLE IF NOT EXISTS dash_calls (
        idx BIGINT PRIMARY KEY, receipt_id TEXT NOT NULL, agent TEXT NOT NULL,
        provider TEXT, model TEXT, outcome TEXT NOT NULL, trust TEXT, cost BIGINT NOT NULL,
        currency TEXT, time_ms BIGINT NOT NULL, day TEXT NOT NULL, error TEXT,
        hold TEXT, conversation TEXT, refused402 INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS dash_calls_agent ON dash_calls (agent, idx)",
    "CREATE INDEX IF NOT EXISTS dash_calls_provider ON dash_calls (provider, idx)",
    "CREATE INDEX IF NOT EXISTS dash_calls_model ON dash_calls (model, idx)",
    "CREATE INDEX IF NOT EXISTS dash_calls_outcome ON dash_calls (outcome, idx)",
    "CREATE INDEX IF NOT EXISTS dash_calls_trust ON dash_calls (trust, idx)",
    "CREATE INDEX IF NOT EXISTS dash_calls_receipt ON dash_calls (receipt_id)",
    "CREATE INDEX IF NOT EXISTS dash_calls_agent_day ON dash_calls (agent, day)",
    # per agent, day, model, provider, outcome and trust: what the charts and menus read
    # (a few hundred rows per agent instead of every call)
    """CREATE TABLE IF NOT EXISTS dash_agg (
        agent TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
        outcome TEXT NOT NULL, trust TEXT NOT NULL, cost BIGINT NOT NULL,
        calls BIGINT NOT NULL, refused402 BIGINT NOT NULL,
        PRIMARY KEY (agent, day, model, provider, outcome, trust))""",
    """CREATE TABLE IF NOT EXISTS dash_provider_events (
        provider_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dash_provider_events_p ON dash_provider_events (provider_id, at)",
)
_LEDGER_DDL = (
    "CREATE INDEX IF NOT EXISTS dash_conversations_agent ON tl_conversations (agent, created_at)",
    "CREATE INDEX IF NOT EXISTS dash_holds_agent ON tl_holds (agent, state)",
    # partial: only reward rows, so the ledger's inserts of every other transfer skip it
    "CREATE INDEX IF NOT EXISTS dash_transfers_rewards ON tl_transfers (agent, seq) "
    "WHERE kind = 'reward'",
)
SCHEMA = "2"  # of the dash_ tables; another value: they are rebuilt from the log
_AGG_COLS = ("agent", "day", "model", "provider", "outcome", "trust")
_CALL_COLS = ("idx, receipt_id, agent, provider, model, outcome, trust, cost, currency, "
              "time_ms, day, error, hold, conversation, refused402")
FILTERS = ("agent", "provider", "model", "outcome", "trust")


@dataclass(frozen=True)
class CallRow:
    idx: int
    receipt_id: str
    agent: str
    provider: str | None
    model: str | None
    outcome: str
    trust: str | None
    cost: int
    currency: str | None
    time_ms: int
    error: str | None
    hold: str | None
    latency_ms: int | None = None


def project(idx: int, data: bytes) -> tuple[Any, ...]:
    """One ``dash_calls`` row from a stored receipt document. A leaf that is not a teegate
    receipt gets a row of its own (outcome ``unreadable``), so the projection never stops
    at it; the log itself refuses to sign over such a leaf."""
    try:
        doc = json.loads(data)
        events = {e.get("type"): e for e in doc.get("event_log", ()) if isinstance(e, dict)}
        call = events.get("teegate.call")
        if not isinstance(call, dict):
            raise TypeError("no teegate.call event")
    except (ValueError, AttributeError, TypeError):
        return (idx, f"leaf-{idx}", "", None, None, "unreadable", None, 0, None, 0,
                "1970-01-01", "not a teegate receipt", None, None, 0)
    settle = events.get("teegate.settlement") or {}
    hold = None
    for tid in settle.get("transfer_ids") or ():
        op = str(tid).split("/", 1)[0]
        for prefix in ("settle:", "void:"):
            if op.startswith(prefix):
                hold = op[len(prefix):]
        if hold:
            break
    time_ms = int(call.get("time_ms") or 0)
    error = call.get("error")
    outcome = str(call.get("outcome") or "unknown")
    low = str(error or "").lower()
    refused402 = int(outcome == "refused" and ("insufficient" in low or "budget" in low))
    import datetime as dt

    day = dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC).date().isoformat()
    cost = settle.get("cost")
    return (idx, str(doc.get("receipt_id")), str(call.get("agent")), call.get("provider"),
            doc.get("model"), outcome, call.get("trust_level"),
            int(cost) if isinstance(cost, int) else 0, settle.get("currency"), time_ms, day,
            None if error is None else str(error)[:500], hold, call.get("conversation"),
            refused402)


class DashboardDB:
    """Read-only queries over the gateway's database plus the ``dash_calls`` projection."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.pg = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.Lock()
        try:
            if self.pg:
                import psycopg

                self._conn: Any = psycopg.connect(url, autocommit=True)
                if schema:
                    self._conn.execute(f'SET search_path TO "{schema}"')
            elif url.startswith("sqlite:///"):
                path = url[len("sqlite:///"):]
                if path != ":memory:":  # (a private, empty one: no log to show)
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, check_same_thread=False,
                                             isolation_level=None, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
            else:
                raise ConfigError(f"database_url: unsupported {url!r}")
            self._conn.execute("CREATE TABLE IF NOT EXISTS dash_meta (key TEXT PRIMARY KEY, "
                               "value TEXT NOT NULL)")
            got = self.all("SELECT value FROM dash_meta WHERE key = 'schema'")
            if not got or got[0][0] != SCHEMA:  # derived data: rebuild it
                for t in ("dash_calls", "dash_agg"):
                    self._conn.execute(f"DROP TABLE IF EXISTS {t}")
            for stmt in _DDL:
                self._conn.execute(stmt)
            self.all("INSERT INTO dash_meta (key, value) VALUES ('schema', ?) ON CONFLICT "
                     "(key) DO UPDATE SET value = excluded.value", (SCHEMA,))
        except ConfigError:
            raise
        except Exception as e:  # driver errors: configuration
            raise ConfigError(f"dashboard: cannot open {url!r}: {e}") from e
        self.has_ledger = self._table("tl_holds")
        if self.has_ledger:
            for stmt in _LEDGER_DDL:
                # another worker may create it at the same moment
                with contextlib.suppress(Exception):
                    self._conn.execute(stmt)
        self.has_log = self._table("tlog_leaf")

    def _table(self, name: str) -> bool:
        if self.pg:
            q = "SELECT 1 FROM information_schema.tables WHERE table_name = ? " \
                "AND table_schema = current_schema()"
        else:
            q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self.all(q, (name,)))

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._conn.execute(self._q(sql), tuple(args))
            try:
                return [tuple(r) for r in cur.fetchall()]
            except Exception:  # no result set
                return []

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ projection

    def index_more(self, limit: int = 1000) -> int:
        """Project up to ``limit`` leaves the projection lacks, with their aggregates, in
        one transaction that holds the write lock (SQLite ``BEGIN IMMEDIATE``, a
        PostgreSQL advisory lock): two processes never count a leaf twice."""
        if not self.has_log:
            self.has_log = self._table("tlog_leaf")
            if not self.has_log:
                return 0
        done, size = self.progress()
        if done >= size:  # the common case: no write transaction for a page view
            return 0
        with self._lock:
            c = self._conn
            q = self._q
            c.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")
            try:
                if self.pg:
                    c.execute("SELECT pg_advisory_xact_lock(7463217)")
                last = c.execute("SELECT MAX(idx) FROM dash_calls").fetchone()[0]
                rows = c.execute(q("SELECT idx, data FROM tlog_leaf WHERE idx > ? ORDER BY idx "
                                   "LIMIT ?"), (-1 if last is None else int(last), limit)
                                 ).fetchall()
                out = [project(int(i), bytes(d)) for i, d in rows]
                if out:
                    marks = ",".join("?" * len(out[0]))
                    ins = q(f"INSERT INTO dash_calls ({_CALL_COLS}) VALUES ({marks})")  # noqa: S608
                    agg = q("INSERT INTO dash_agg (agent, day, model, provider, outcome, trust, "
                            "cost, calls, refused402) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT "
                            "(agent, day, model, provider, outcome, trust) DO UPDATE SET "
                            "cost = dash_agg.cost + excluded.cost, "
                            "calls = dash_agg.calls + excluded.calls, "
                            "refused402 = dash_agg.refused402 + excluded.refused402")
                    if self.pg:
                        with c.cursor() as cur:
                            cur.executemany(ins, out)
                            cur.executemany(agg, _aggregate(out))
                    else:
                        c.executemany(ins, out)
                        c.executemany(agg, _aggregate(out))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return len(rows)

    def progress(self) -> tuple[int, int]:
        """(leaves projected, leaves in the log): index lookups, not counts."""
        got = self.all("SELECT MAX(idx) FROM dash_calls")[0][0]
        size = self.all("SELECT size FROM tlog_head WHERE id = 1") if self.has_log else []
        return (0 if got is None else int(got) + 1), int(size[0][0]) if size else 0

    # ------------------------------------------------------------------ calls

    def calls(self, *, agents: frozenset[str] | None, filters: dict[str, str],
              receipt: str | None = None, before: int | None = None,
              limit: int = PAGE) -> list[CallRow]:
        """Newest first, keyset-paged by ``idx``; ``agents`` None: everyone's."""
        where: list[str] = []
        args: list[Any] = []
        if agents is not None:
            if not agents:
                return []
            where.append(f"agent IN ({','.join('?' * len(agents))})")
            args.extend(sorted(agents))
        for k in FILTERS:
            if filters.get(k):
                where.append(f"{k} = ?")
                args.append(filters[k])
        if receipt:
            where.append("receipt_id >= ? AND receipt_id < ?")
            args.extend([receipt, receipt + "\U0010ffff"])
        if before is not None:
            where.append("idx < ?")
            args.append(before)
        sql = ("SELECT idx, receipt_id, agent, provider, model, outcome, trust, cost, currency, "  # noqa: S608
               "time_ms, error, hold FROM dash_calls"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY idx DESC LIMIT ?")
        rows = [CallRow(*r) for r in self.all(sql, [*args, limit])]
        return self._with_latency(rows)

    def _with_latency(self, rows: list[CallRow]) -> list[CallRow]:
        """Latency from the call's hold (created before forwarding) to the receipt's end."""
        holds = [r.hold for r in rows if r.hold]
        if not holds or not self.has_ledger:
            return rows
        got = dict(self.all(f"SELECT id, created_at FROM tl_holds WHERE id IN "  # noqa: S608
                            f"({','.join('?' * len(holds))})", holds))
        out = []
        for r in rows:
            t = got.get(r.hold) if r.hold else None
            lat = max(0, r.time_ms - int(float(t) * 1000)) if t is not None else None
            out.append(dataclasses.replace(r, latency_ms=lat))
        return out

    def distinct(self, column: str, agents: frozenset[str] | None) -> list[str]:
        """Values of a filter column for the filter menus (bounded), from the aggregates."""
        assert column in FILTERS
        if agents is not None:
            if not agents:
                return []
            rows = self.all(f"SELECT DISTINCT {column} FROM dash_agg WHERE agent IN "  # noqa: S608
                            f"({','.join('?' * len(agents))}) LIMIT 200", sorted(agents))
        else:
            rows = self.all(f"SELECT DISTINCT {column} FROM dash_agg LIMIT 200")  # noqa: S608
        return sorted(str(r[0]) for r in rows if r[0])

    # ------------------------------------------------------------------ money

    def spend(self, agent: str, by: str, *, days: int = 30) -> list[tuple[str, int, int]]:
        """(key, cost, calls) grouped by day, model or provider, from the agent's receipts."""
        col = {"day": "day", "model": "model", "provider": "provider"}[by]
        rows = self.all(
            f"SELECT {col}, SUM(cost), SUM(calls) FROM dash_agg WHERE agent = ? AND day >= ? "  # noqa: S608
            f"GROUP BY {col} ORDER BY {col}", (agent, _days_ago(days)))
        return [(str(k or "-"), int(c or 0), int(n)) for k, c, n in rows]

    def counts(self, agent: str) -> dict[str, int]:
        rows = self.all("SELECT outcome, SUM(calls), SUM(refused402) FROM dash_agg "
                        "WHERE agent = ? GROUP BY outcome", (agent,))
        out = {str(o): int(n) for o, n, _ in rows}
        out["402"] = sum(int(r or 0) for *_, r in rows)
        return out

    def transfers(self, agent: str, wallet: str, currency: str, *, limit: int,
                  before: int | None) -> list[Any]:
        """``Ledger.transfers`` (the agent's, or debiting its wallet), as two index range
        scans: the ledger's single ``agent = ? OR debit = ?`` query sorts every match first
        (seconds at 10^5 calls)."""
        from teegate.ledger.model import Transfer

        cols = "id, seq, debit, credit, amount, currency, kind, agent, operation, " \
               "created_at, metadata"
        cursor = before if before is not None else 2**63 - 1
        rows = self.all(
            f"SELECT * FROM (SELECT {cols} FROM tl_transfers WHERE agent = ? AND seq < ? "  # noqa: S608
            f"AND currency = ? ORDER BY seq DESC LIMIT ?) a UNION "
            f"SELECT * FROM (SELECT {cols} FROM tl_transfers WHERE debit = ? AND seq < ? "
            f"AND currency = ? ORDER BY seq DESC LIMIT ?) b ORDER BY seq DESC LIMIT ?",
            (agent, cursor, currency, limit, wallet, cursor, currency, limit, limit))
        return [Transfer(str(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]),
                         str(r[6]), r[7], str(r[8]), float(r[9]), json.loads(r[10] or "{}"))
                for r in rows]

    def conversations(self, agent: str, limit: int = 20) -> list[tuple[Any, ...]]:
        if not self.has_ledger:
            return []
        return self.all("SELECT id, currency, budget, state, expires_at, created_at, closed_at, "
                        "refunded FROM tl_conversations WHERE agent = ? ORDER BY created_at "
                        "DESC LIMIT ?", (agent, limit))

    def open_holds(self, agent: str, limit: int = 20) -> list[tuple[Any, ...]]:
        if not self.has_ledger:
            return []
        return self.all("SELECT id, amount, currency, conversation, expires_at, created_at "
                        "FROM tl_holds WHERE agent = ? AND state = 'open' ORDER BY created_at "
                        "DESC LIMIT ?", (agent, limit))

    def recent_402(self, agent: str, limit: int = 10) -> list[tuple[Any, ...]]:
        return self.all("SELECT receipt_id, time_ms, error FROM dash_calls WHERE agent = ? AND "
                        "outcome = 'refused' AND refused402 = 1 ORDER BY idx DESC LIMIT ?",
                        (agent, limit))

    def rewards(self, agent: str, limit: int = 10) -> list[Any]:
        """Rewards paid to or by the agent (the ledger's reward transfers), newest first."""
        if not self.has_ledger:
            return []
        from teegate.ledger.model import Transfer

        rows = self.all("SELECT id, seq, debit, credit, amount, currency, kind, agent, "
                        "operation, created_at, metadata FROM tl_transfers WHERE kind = "
                        "'reward' AND agent = ? ORDER BY seq DESC LIMIT ?", (agent, limit))
        return [Transfer(str(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]),
                         str(r[6]), r[7], str(r[8]), float(r[9]), json.loads(r[10] or "{}"))
                for r in rows]

    # ------------------------------------------------------------------ providers

    def record_event(self, provider_id: str, at: float, status: str, detail: str) -> None:
        """A provider status change this process observed (the quarantine history)."""
        last = self.all("SELECT status FROM dash_provider_events WHERE provider_id = ? "
                        "ORDER BY at DESC LIMIT 1", (provider_id,))
        if last and last[0][0] == status:
            return  # another worker recorded it already
        self.all("INSERT INTO dash_provider_events (provider_id, at, status, detail) "
                 "VALUES (?, ?, ?, ?)", (provider_id, at, status, detail[:500]))

    def events(self, provider_id: str, limit: int = 50) -> list[tuple[Any, ...]]:
        return self.all("SELECT at, status, detail FROM dash_provider_events WHERE "
                        "provider_id = ? ORDER BY at DESC LIMIT ?", (provider_id, limit))

    # ------------------------------------------------------------------ log

    def checkpoints(self, limit: int = 200) -> list[tuple[int, bytes, str, int]]:
        if not self.has_log:
            return []
        rows = self.all("SELECT size, root, note, created_ms FROM tlog_checkpoint "
                        "ORDER BY size DESC LIMIT ?", (limit,))
        return [(int(s), bytes(r), str(n), int(c)) for s, r, n, c in rows]


def _aggregate(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Projected rows summed per (agent, day, model, provider, outcome, trust)."""
    acc: dict[tuple[str, ...], list[int]] = {}
    for (_idx, _rid, agent, provider, model, outcome, trust, cost, _cur, _t, day, _e, _h,
         _c, r402) in rows:
        a = acc.setdefault((agent, day, model or "", provider or "", outcome, trust or ""),
                           [0, 0, 0])
        a[0] += int(cost)
        a[1] += 1
        a[2] += int(r402)
    return [(*k, *v) for k, v in acc.items()]


def _days_ago(days: int) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)).isoformat()

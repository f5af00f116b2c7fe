"""Persistent Merkle tree storage in SQLite or PostgreSQL (the ledger's database).

Tables (``tlog_*``, schema version in ``tlog_meta``): leaves with the exact entry bytes, every
complete subtree hash keyed by ``level << 48 | index`` (so any proof is one indexed ``IN``
query of O(log n) keys), the signed checkpoints, and a one-row log head. Every append and every
checkpoint runs in one transaction holding the head (``BEGIN IMMEDIATE`` on SQLite,
``SELECT ... FOR UPDATE`` on PostgreSQL), so several processes can share one log.

``tlog_queue`` holds signed receipts that are durable but not yet in the tree: the gateway
writes a call's receipt there in the same transaction as its settlement (before the answer's
last byte), and the log's writer moves queued rows into the tree in batches (``append_tx``),
also after a restart. A queued row whose signature is not the receipt key's is moved to
``tlog_quarantine`` instead of the tree.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from teegate.errors import ConfigError, LogError
from teegate.filemodes import private_sqlite
from teegate.receipts import merkle
from teegate.receipts.merkle import Coord

SCHEMA_VERSION = "1"
_LEVEL_SHIFT = 48
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Tx(Protocol):
    """One open write transaction (``?`` placeholders): the ledger's ``Tx`` has this shape, so
    log rows can be written in the ledger's transactions (one commit for both)."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def exec(self, sql: str, params: Sequence[Any] = ()) -> int: ...


class LogStuckError(LogError):
    """The tree cannot grow: rows past its head, written behind the log's back, or a
    storage error that keeps recurring. Receipts stay queued (durable) until it is fixed."""


@dataclass(frozen=True)
class AppendResult:
    """What one ``append_tx`` did; ``compact`` is installed only after the commit."""

    indexes: list[int]
    appended: int
    drained: int  # queue rows taken (appended, already logged or quarantined)
    quarantined: list[tuple[str, str]]  # (receipt id, reason)
    conflicts: list[str]
    compact: merkle.CompactRange


def node_key(c: Coord) -> int:
    return (c[0] << _LEVEL_SHIFT) | c[1]


def _key_coord(k: int) -> Coord:
    return (k >> _LEVEL_SHIFT, k & ((1 << _LEVEL_SHIFT) - 1))


@dataclass(frozen=True)
class Entry:
    """One leaf to append: the receipt id, the agent it belongs to, and the exact bytes."""

    receipt_id: str
    agent: str
    data: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created_ms: int


class _DB:
    """The small differences between sqlite3 and psycopg, behind one interface."""

    pg: bool
    blob: str

    def __init__(self, url: str, schema: str | None) -> None:
        self.url = url
        self.schema = schema
        # One connection writes (inside transactions), another serves reads, so proof and
        # receipt look-ups never wait behind a batch being written.
        self._wlock = threading.RLock()
        self._rlock = threading.Lock()
        self._tx_owner: int | None = None
        if url.startswith("sqlite:///"):
            self.pg, self.blob = False, "BLOB"
            self._path = url[len("sqlite:///") :]
            if self._path == ":memory:":
                raise ConfigError("the log needs a file database (sqlite:///path), not :memory:")
            private_sqlite(self._path)  # 0600 in a 0700 folder
        elif url.startswith(("postgresql://", "postgres://")):
            self.pg, self.blob = True, "BYTEA"
            if schema and not _IDENT.fullmatch(schema):
                raise ConfigError(f"log schema name {schema!r} is not a plain identifier")
        else:
            raise ConfigError(
                f"log database URL must be sqlite:///... or postgresql://..., got {url!r}"
            )
        self._w: Any = self._connect()
        self._r: Any = self._connect()

    def _connect(self) -> Any:
        if not self.pg:
            conn: Any = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # queued receipts are promises
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        try:
            pconn: Any = psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as e:
            raise LogError(f"cannot connect to the log database: {e}") from None
        if self.schema:
            pconn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            pconn.execute(f'SET search_path TO "{self.schema}"')
        return pconn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def _in_tx(self) -> bool:
        return self._tx_owner == threading.get_ident()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._in_tx():
            cur = self._w.execute(self._sql(sql), params)
            return list(cur.fetchall()) if cur.description else []
        with self._rlock:
            cur = self._r.execute(self._sql(sql), params)
            return list(cur.fetchall()) if cur.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if not self._in_tx():
            raise LogError("internal: executemany outside a transaction")
        if self.pg:
            with self._w.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._w.executemany(sql, rows)

    def tx(self) -> _DBTx:
        """The open transaction of this thread as a ``Tx``."""
        if not self._in_tx():
            raise LogError("internal: tx() outside a transaction")
        return _DBTx(self._w, self._sql)

    @contextmanager
    def transaction(self, lock_head: bool = True) -> Iterator[None]:
        """One transaction; with ``lock_head`` it holds the log head against other writers."""
        with self._wlock:
            self._w.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")
            self._tx_owner = threading.get_ident()
            try:
                if lock_head and self.pg:
                    self._w.execute("SELECT size FROM tlog_head WHERE id = 1 FOR UPDATE")
                yield
            except BaseException:
                self._tx_owner = None
                self._w.execute("ROLLBACK")
                raise
            self._tx_owner = None
            self._w.execute("COMMIT")

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._w.close()
            self._r.close()


class _DBTx:
    def __init__(self, conn: Any, sql: Any) -> None:
        self._c, self._s = conn, sql

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._c.execute(self._s(sql), params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._c.execute(self._s(sql), params).fetchall())

    def exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        n: int = self._c.execute(self._s(sql), params).rowcount
        return n


def _many(tx: Tx, head: str, width: int, rows: Sequence[Sequence[Any]], per: int = 200) -> None:
    """Multi-row INSERT in chunks (one statement per ``per`` rows, not one per row)."""
    mark = "(" + ", ".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        part = rows[i : i + per]
        tx.exec(head + " VALUES " + ", ".join([mark] * len(part)),
                [v for r in part for v in r])


_HEAD = "SELECT size FROM tlog_head WHERE id = 1"
_HEAD_LOCK = "SELECT size FROM tlog_head WHERE id = 1 FOR UPDATE"
QUEUE_INSERT = "INSERT INTO tlog_queue (receipt_id, agent, data)"
Verify = Callable[[Entry], str | None]


class TreeStore:
    """Append-only leaves + complete-subtree hashes + signed checkpoints."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.db = _DB(url, schema)
        self._write_lock = threading.Lock()
        self._create()
        self._compact: merkle.CompactRange | None = None
        self.conflicts: list[str] = []  # ids appended again with other bytes (not logged)

    # -- schema -----------------------------------------------------------------------

    def _create(self) -> None:
        b = self.db.blob
        ddl = [
            "CREATE TABLE IF NOT EXISTS tlog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tlog_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "size BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS tlog_leaf (idx BIGINT PRIMARY KEY, "
            f"receipt_id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, data {b} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS tlog_leaf_agent ON tlog_leaf (agent, idx)",
            f"CREATE TABLE IF NOT EXISTS tlog_node (id BIGINT PRIMARY KEY, hash {b} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS tlog_checkpoint (size BIGINT PRIMARY KEY, "
            f"root {b} NOT NULL, note TEXT NOT NULL, created_ms BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS tlog_queue (seq "
            f"{'BIGSERIAL' if self.db.pg else 'INTEGER'} PRIMARY KEY, "
            f"receipt_id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, data {b} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS tlog_quarantine (receipt_id TEXT NOT NULL, "
            f"data {b} NOT NULL, reason TEXT NOT NULL, created_ms BIGINT NOT NULL)",
        ]
        with self.db.transaction(lock_head=False):
            if self.db.pg:  # concurrent first starts must not race on CREATE TABLE
                self.db.execute("SELECT pg_advisory_xact_lock(7463201)")
            for stmt in ddl:
                self.db.execute(stmt)
            self.db.execute("INSERT INTO tlog_head (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING")
            self.db.execute(
                "INSERT INTO tlog_meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT DO NOTHING",
                (SCHEMA_VERSION,),
            )
        got = self.meta("schema_version")
        if got != SCHEMA_VERSION:
            raise LogError(f"log schema version {got!r}; this teegate reads {SCHEMA_VERSION!r}")

    def meta(self, key: str) -> str | None:
        rows = self.db.execute("SELECT value FROM tlog_meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` if unset; return what is stored (a log's origin never changes)."""
        self.db.execute(
            "INSERT INTO tlog_meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, value)
        )
        got = self.meta(key)
        assert got is not None
        return got

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing what was there (a durable commit)."""
        self.db.execute(
            "INSERT INTO tlog_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- reads ------------------------------------------------------------------------

    def size(self) -> int:
        return int(self.db.execute("SELECT size FROM tlog_head WHERE id = 1")[0][0])

    def nodes(self, coords: Iterable[Coord]) -> dict[Coord, bytes]:
        keys = [node_key(c) for c in coords]
        if not keys:
            return {}
        if self.db.pg:
            rows = self.db.execute("SELECT id, hash FROM tlog_node WHERE id = ANY(?)", (keys,))
        else:
            marks = ",".join("?" * len(keys))
            rows = self.db.execute(f"SELECT id, hash FROM tlog_node WHERE id IN ({marks})", keys)  # noqa: S608
        return {_key_coord(int(k)): bytes(h) for k, h in rows}

    def root(self, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        plan = merkle.root_plan(size)
        got = self.nodes(plan)
        return merkle.fold([self._need(got, c) for c in plan])

    @staticmethod
    def _need(got: dict[Coord, bytes], c: Coord) -> bytes:
        try:
            return got[c]
        except KeyError:
            raise LogError(f"log storage is missing subtree {c}: the tree is damaged") from None

    def _check_size(self, size: int, what: str) -> None:
        current = self.size()
        if size > current:
            raise LogError(f"{what}: tree size {size} is beyond the log's size {current}")

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size, "inclusion proof")
        plan = merkle.inclusion_plan(index, size)
        return merkle.assemble(plan, self.nodes(merkle.plan_coords(plan)))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self._check_size(size2, "consistency proof")
        if size1 == size2:
            return []
        plan = merkle.consistency_plan(size1, size2)
        return merkle.assemble(plan, self.nodes(merkle.plan_coords(plan)))

    def leaf_by_id(self, receipt_id: str) -> tuple[int, str, bytes] | None:
        rows = self.db.execute(
            "SELECT idx, agent, data FROM tlog_leaf WHERE receipt_id = ?", (receipt_id,)
        )
        if not rows:
            return None
        idx, agent, data = rows[0]
        return int(idx), str(agent), bytes(data)

    def leaf_agent(self, idx: int) -> str | None:
        rows = self.db.execute("SELECT agent FROM tlog_leaf WHERE idx = ?", (idx,))
        return str(rows[0][0]) if rows else None

    def leaves(self, start: int, end: int) -> list[tuple[int, str, bytes]]:
        rows = self.db.execute(
            "SELECT idx, receipt_id, data FROM tlog_leaf WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [(int(i), str(r), bytes(d)) for i, r, d in rows]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        if self.db.pg:
            rows = self.db.execute(
                "SELECT receipt_id FROM tlog_leaf WHERE receipt_id = ANY(?)", (list(ids),)
            )
        else:
            out: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.db.execute(
                    f"SELECT receipt_id FROM tlog_leaf WHERE receipt_id IN ({marks})",  # noqa: S608
                    chunk,
                )
                out.update(str(r[0]) for r in rows)
            return out
        return {str(r[0]) for r in rows}

    # -- appends ----------------------------------------------------------------------

    def _compact_for(self, tx: Tx, size: int) -> merkle.CompactRange:
        """A private copy of the right edge at ``size`` (the cached one is replaced only
        after a commit: a transaction rolled back or run again must not move it)."""
        c = self._compact
        if c is not None and c.size == size:
            return c.copy()
        plan = merkle.root_plan(size)
        keys = [node_key(x) for x in plan]
        got: dict[Coord, bytes] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = tx.all(
                f"SELECT id, hash FROM tlog_node WHERE id IN ({', '.join('?' * len(part))})",  # noqa: S608
                part,
            )
            got.update({_key_coord(int(k)): bytes(h) for k, h in rows})
        return merkle.CompactRange(size, [self._need(got, x) for x in plan])

    @property
    def head_sql(self) -> str:
        """Read the head, holding it against other writers until the commit (PostgreSQL;
        SQLite's ``BEGIN IMMEDIATE`` already holds the whole database)."""
        return _HEAD_LOCK if self.db.pg else _HEAD

    def install(self, result: AppendResult) -> None:
        """After the commit of ``append_tx``: remember the new right edge and conflicts."""
        self._compact = result.compact
        for rid in result.conflicts:
            self._conflict(rid)

    def forget_edge(self) -> None:
        self._compact = None

    @staticmethod
    def enqueue(tx: Tx, entries: Sequence[Entry]) -> None:
        """Queue signed receipts durably inside the caller's transaction (``tlog_queue``)."""
        if entries:
            _many(tx, QUEUE_INSERT, 3, [(e.receipt_id, e.agent, e.data) for e in entries])

    def queued(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM tlog_queue")[0][0])

    def queued_entry(self, receipt_id: str) -> Entry | None:
        rows = self.db.execute(
            "SELECT receipt_id, agent, data FROM tlog_queue WHERE receipt_id = ?", (receipt_id,)
        )
        return Entry(str(rows[0][0]), str(rows[0][1]), bytes(rows[0][2])) if rows else None

    def has_queued(self) -> bool:
        return bool(self.db.execute("SELECT 1 FROM tlog_queue LIMIT 1"))

    def append(self, entries: Sequence[Entry]) -> list[int]:
        """Append in one transaction; entries whose receipt id is already logged are skipped.

        Returns the leaf index of every entry (the existing index for a duplicate).
        """
        if not entries:
            return []
        with self._write_lock:
            try:
                with self.db.transaction():
                    res = self.append_tx(self.db.tx(), entries)
            except BaseException:
                self._compact = None
                raise
            self.install(res)
        return res.indexes

    def append_tx(
        self,
        tx: Tx,
        entries: Sequence[Entry] = (),
        *,
        drain: int = 0,
        verify: Verify | None = None,
        now_ms: int = 0,
    ) -> AppendResult:
        """Inside ``tx``: take up to ``drain`` queued rows (oldest first; ``verify`` refuses
        some into quarantine), then ``entries``, and append them to the tree. Raises
        ``LogStuckError`` when leaf rows exist past the head: an append would collide with them."""
        size = int((tx.one(self.head_sql) or (0,))[0])
        stray = tx.one("SELECT COUNT(*), MIN(idx), MAX(idx) FROM tlog_leaf WHERE idx >= ?",
                       (size,))
        if stray is not None and int(stray[0]):
            raise LogStuckError(
                f"log storage holds {int(stray[0])} leaf row(s) past its head (size {size}, "
                f"rows at {stray[1]}..{stray[2]}), written behind the log's back; no receipt "
                "can be appended until they are removed"
            )
        todo: list[Entry] = []
        seqs: list[int] = []
        quarantined: list[tuple[str, str, bytes]] = []
        if drain:
            for seq, rid, agent, data in tx.all(
                "SELECT seq, receipt_id, agent, data FROM tlog_queue ORDER BY seq LIMIT ?",
                (drain,),
            ):
                seqs.append(int(seq))
                e = Entry(str(rid), str(agent), bytes(data))
                why = verify(e) if verify is not None else None
                if why is None:
                    todo.append(e)
                else:
                    quarantined.append((e.receipt_id, why, e.data))
        n_queued = len(todo)
        todo.extend(entries)
        ids = list({e.receipt_id: None for e in todo})
        have: dict[str, tuple[int, bytes]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            for rid, idx, data in tx.all(
                "SELECT receipt_id, idx, data FROM tlog_leaf WHERE receipt_id IN "  # noqa: S608
                f"({', '.join('?' * len(part))})",
                part,
            ):
                have[str(rid)] = (int(idx), bytes(data))
        compact = self._compact_for(tx, size)
        leaves: list[tuple[int, str, str, bytes]] = []
        nodes: list[tuple[int, bytes]] = []
        conflicts: list[str] = []
        indexes: list[int] = []
        for e in todo:
            got = have.get(e.receipt_id)
            if got is not None:
                if got[1] != e.data:
                    conflicts.append(e.receipt_id)
                indexes.append(got[0])
                continue
            idx = compact.size
            for level, i, h in compact.append(merkle.leaf_hash(e.data)):
                nodes.append(((level << _LEVEL_SHIFT) | i, h))
            leaves.append((idx, e.receipt_id, e.agent, e.data))
            have[e.receipt_id] = (idx, e.data)
            indexes.append(idx)
        if leaves:
            _many(tx, "INSERT INTO tlog_leaf (idx, receipt_id, agent, data)", 4, leaves)
            _many(tx, "INSERT INTO tlog_node (id, hash)", 2, nodes, per=400)
            tx.exec("UPDATE tlog_head SET size = ? WHERE id = 1", (compact.size,))
        if quarantined:
            _many(tx, "INSERT INTO tlog_quarantine (receipt_id, data, reason, created_ms)", 4,
                  [(rid, data, why, now_ms) for rid, why, data in quarantined])
        for i in range(0, len(seqs), 500):
            gone = seqs[i : i + 500]
            tx.exec(f"DELETE FROM tlog_queue WHERE seq IN ({', '.join('?' * len(gone))})",  # noqa: S608
                    gone)
        return AppendResult(indexes[n_queued:], len(leaves), len(seqs),
                            [(r, w) for r, w, _ in quarantined], conflicts, compact)

    def _conflict(self, receipt_id: str) -> None:
        if receipt_id not in self.conflicts:
            self.conflicts.append(receipt_id)

    # -- checkpoints ------------------------------------------------------------------

    def last_checkpoint(self) -> StoredCheckpoint | None:
        rows = self.db.execute(
            "SELECT size, root, note, created_ms FROM tlog_checkpoint ORDER BY size DESC LIMIT 1"
        )
        return self._cp(rows[0]) if rows else None

    def checkpoint_covering(self, size: int) -> StoredCheckpoint | None:
        """The smallest stored checkpoint whose tree includes ``size`` leaves."""
        rows = self.db.execute(
            "SELECT size, root, note, created_ms FROM tlog_checkpoint WHERE size >= ? "
            "ORDER BY size ASC LIMIT 1",
            (size,),
        )
        return self._cp(rows[0]) if rows else None

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        rows = self.db.execute(
            "SELECT size, root, note, created_ms FROM tlog_checkpoint WHERE size = ?", (size,)
        )
        return self._cp(rows[0]) if rows else None

    def checkpoints(self, limit: int = 1000) -> list[StoredCheckpoint]:
        rows = self.db.execute(
            "SELECT size, root, note, created_ms FROM tlog_checkpoint ORDER BY size DESC LIMIT ?",
            (limit,),
        )
        return [self._cp(r) for r in rows]

    def checkpoints_after(self, size: int, limit: int = 1000) -> list[StoredCheckpoint]:
        """Up to ``limit`` stored checkpoints larger than ``size``, oldest first (paging
        through all of them costs one indexed range query per page)."""
        rows = self.db.execute(
            "SELECT size, root, note, created_ms FROM tlog_checkpoint WHERE size > ? "
            "ORDER BY size ASC LIMIT ?",
            (size, limit),
        )
        return [self._cp(r) for r in rows]

    def count_checkpoints(self, up_to: int) -> int:
        """How many checkpoints of at most ``up_to`` leaves are stored."""
        rows = self.db.execute("SELECT COUNT(*) FROM tlog_checkpoint WHERE size <= ?", (up_to,))
        return int(rows[0][0])

    @staticmethod
    def _cp(row: Sequence[Any]) -> StoredCheckpoint:
        return StoredCheckpoint(int(row[0]), bytes(row[1]), str(row[2]), int(row[3]))

    def insert_checkpoint(self, cp: StoredCheckpoint) -> None:
        self.db.execute(
            "INSERT INTO tlog_checkpoint (size, root, note, created_ms) VALUES (?, ?, ?, ?)",
            (cp.size, cp.root, cp.note, cp.created_ms),
        )

    # -- integrity --------------------------------------------------------------------

    def roots_from_leaves(
        self, size: int, marks: Iterable[int], chunk: int = 20_000
    ) -> dict[int, bytes]:
        """Rebuild roots from the stored entry bytes at every size in ``marks`` (and ``size``).

        This is the check that notices a rewritten leaf even when its node hashes were left.
        """
        want = {m for m in marks if 0 <= m <= size} | {size}
        out: dict[int, bytes] = {}
        compact = merkle.CompactRange()
        if 0 in want:
            out[0] = merkle.EMPTY_ROOT
        start = 0
        while start < size:
            rows = self.db.execute(
                "SELECT idx, data FROM tlog_leaf WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, min(size, start + chunk)),
            )
            for idx, data in rows:
                if int(idx) != compact.size:
                    raise LogError(f"log storage: leaf {compact.size} is missing")
                compact.append(merkle.leaf_hash(bytes(data)))
                if compact.size in want:
                    out[compact.size] = compact.root()
            if not rows:
                break
            start += chunk
        if compact.size != size:
            raise LogError(f"log storage: {compact.size} leaves stored, head says {size}")
        return out

    def verify_all_nodes(self, size: int, chunk: int = 20_000) -> None:
        """Recompute every stored subtree hash from the entries, level by level (O(n))."""
        level, count = 0, size
        while count:
            for start in range(0, count, chunk):
                end = min(count, start + chunk)
                if level == 0:
                    rows = self.db.execute(
                        "SELECT idx, data FROM tlog_leaf WHERE idx >= ? AND idx < ? ORDER BY idx",
                        (start, end),
                    )
                    want = [merkle.leaf_hash(bytes(d)) for _, d in rows]
                else:
                    lo, hi = node_key((level - 1, 2 * start)), node_key((level - 1, 2 * end))
                    rows = self.db.execute(
                        "SELECT hash FROM tlog_node WHERE id >= ? AND id < ? ORDER BY id", (lo, hi)
                    )
                    kids = [bytes(r[0]) for r in rows]
                    want = [merkle.node_hash(kids[i], kids[i + 1]) for i in range(0, len(kids), 2)]
                lo, hi = node_key((level, start)), node_key((level, end))
                rows = self.db.execute(
                    "SELECT hash FROM tlog_node WHERE id >= ? AND id < ? ORDER BY id", (lo, hi)
                )
                have = [bytes(r[0]) for r in rows]
                if len(want) != end - start or have != want:
                    raise LogError(
                        f"stored subtree hashes at level {level} (leaves {start << level}.."
                        f"{end << level}) do not match the stored receipts: the log was rewritten"
                    )
            level, count = level + 1, count // 2

    def close(self) -> None:
        self.db.close()

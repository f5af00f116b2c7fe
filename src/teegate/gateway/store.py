"""The gateway's own shared state in the database: agents (API keys stored as sha256) and
per-provider attestation status and quarantine, so several ``teegate serve`` processes behind
one load balancer agree on which keys are valid and which providers are quarantined.

Plain SQL over ``sqlite3`` or psycopg 3 (sync, autocommit), serialised by a lock; the hot
path never touches it (the app keeps in-memory copies refreshed by a background poll)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from teegate.errors import ConfigError, TeegateError
from teegate.filemodes import private_sqlite

KEY_PREFIX = "tgk_"


def hash_key(key: str) -> str:
    """sha256 hex of an API key: keys are 256-bit random, so no slow hash is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AgentRow:
    id: str
    key_hash: str | None
    trust: str
    min_trust: str
    owner: str | None
    created_at: int
    revoked_at: int | None
    kind: str = "agent"  # "agent" or "owner" (an owner's key reads its agents' wallets)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "trust": self.trust,
                "min_trust": self.min_trust,
                "owner": self.owner, "created_at": self.created_at,
                "revoked": self.revoked_at is not None, "has_key": self.key_hash is not None}


@dataclass(frozen=True)
class ProviderState:
    provider_id: str
    status: str  # "attested", "rejected", "unreachable", "unproven", "quarantined"
    detail: str
    verdict_digest: str | None
    bound_key: str | None
    not_after: int | None
    quarantined_until: int
    updated_at: float


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tg_agents (
        id TEXT PRIMARY KEY, key_hash TEXT UNIQUE, trust TEXT NOT NULL,
        min_trust TEXT NOT NULL, owner TEXT, created_at BIGINT NOT NULL, revoked_at BIGINT,
        kind TEXT NOT NULL DEFAULT 'agent')""",
    """CREATE TABLE IF NOT EXISTS tg_provider_state (
        provider_id TEXT PRIMARY KEY, status TEXT NOT NULL, detail TEXT NOT NULL,
        verdict_digest TEXT, bound_key TEXT, not_after BIGINT,
        quarantined_until BIGINT NOT NULL DEFAULT 0, updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tg_evidence (
        sha256 TEXT PRIMARY KEY, report TEXT NOT NULL, created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tg_seen_responses (
        response_key TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)""",
    # Stored Responses API answers (store != false), per agent: the response document as
    # the agent got it and the whole input it answered (previous_response_id chains).
    """CREATE TABLE IF NOT EXISTS tg_responses (
        agent TEXT NOT NULL, id TEXT NOT NULL, created_at BIGINT NOT NULL,
        response TEXT NOT NULL, input TEXT NOT NULL, PRIMARY KEY (agent, id))""",
)
_PURGE_EVERY = 60.0  # seconds between sweeps of expired replay-window entries


class GatewayStore:
    """Agents and provider state over SQLite (``sqlite:///path``) or PostgreSQL."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._purged = 0.0
        self._responses_purged = 0.0  # the last sweep of expired stored responses
        self._pg = url.startswith(("postgresql://", "postgres://"))
        try:
            if self._pg:
                import psycopg

                opts = f"-c search_path={schema}" if schema else None
                self._conn: Any = psycopg.connect(url, autocommit=True, options=opts) if opts \
                    else psycopg.connect(url, autocommit=True)
                if schema:
                    self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            elif url.startswith("sqlite:///"):
                path = url[len("sqlite:///"):]
                private_sqlite(path)  # 0600 in a 0700 folder: it holds API key hashes
                self._conn = sqlite3.connect(path, check_same_thread=False,
                                             isolation_level=None, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
            else:
                raise ConfigError(f"database_url: unsupported {url!r}")
            for stmt in _SCHEMA:
                self._conn.execute(stmt)
        except ConfigError:
            raise
        except Exception as e:  # driver errors: report as configuration
            raise ConfigError(f"database_url: cannot open {url!r}: {e}") from e

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._conn.execute(self._q(sql), tuple(args))
            try:
                rows = cur.fetchall()
            except Exception:  # no result set (psycopg raises ProgrammingError)
                rows = []
            return [tuple(r) for r in rows]

    # ------------------------------------------------------------------ agents

    def ensure_agent(self, agent_id: str, *, trust: str, min_trust: str,
                     owner: str | None) -> None:
        """Create the agent without a key, or update its settings (configuration wins)."""
        now = int(time.time())
        self._exec(
            "INSERT INTO tg_agents (id, key_hash, trust, min_trust, owner, created_at) "
            "VALUES (?, NULL, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET trust = excluded.trust, "
            "min_trust = excluded.min_trust, owner = excluded.owner",
            (agent_id, trust, min_trust, owner, now))

    def create_key(self, agent_id: str, *, trust: str = "standard", min_trust: str = "standard",
                   owner: str | None = None, kind: str = "agent") -> str:
        """A new API key for ``agent_id`` (created if needed; replaces an older key and clears
        a revocation). The key is returned once and only its hash is stored."""
        if kind not in ("agent", "owner"):
            raise TeegateError("kind must be 'agent' or 'owner'")
        for what, name in (("agent id", agent_id), ("owner", owner)):
            # The ledger's rules for account names (a wallet is ``wallet:<currency>:<id>``):
            # an id it cannot use would make every call of the agent fail at the hold.
            if name is None and what == "owner":
                continue
            if (not isinstance(name, str) or not name or len(name) > 128 or ":" in name
                    or not name.isprintable()):
                raise TeegateError(f"{what} must be 1-128 printable characters without ':'")
        key = new_key()
        now = int(time.time())
        self._exec(
            "INSERT INTO tg_agents (id, key_hash, trust, min_trust, owner, created_at, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "key_hash = excluded.key_hash, revoked_at = NULL",
            (agent_id, hash_key(key), trust, min_trust, owner, now, kind))
        return key

    def revoke(self, agent_id: str) -> bool:
        rows = self._exec("UPDATE tg_agents SET revoked_at = ?, key_hash = NULL WHERE id = ? "
                          "RETURNING id", (int(time.time()), agent_id))
        return bool(rows)

    def agents(self) -> list[AgentRow]:
        return [AgentRow(*r) for r in self._exec(
            "SELECT id, key_hash, trust, min_trust, owner, created_at, revoked_at, kind "
            "FROM tg_agents ORDER BY id")]

    def has_agent(self, agent_id: str) -> bool:
        """Whether ``agent_id`` was ever created (a revoked agent still exists): the ledger
        sends money only to agents that do (``teegate.ledger.AgentDirectory``)."""
        return bool(self._exec("SELECT 1 FROM tg_agents WHERE id = ?", (agent_id,)))

    def agent_by_key(self, key: str) -> AgentRow | None:
        h = hash_key(key)
        rows = self._exec("SELECT id, key_hash, trust, min_trust, owner, created_at, "
                          "revoked_at, kind FROM tg_agents WHERE key_hash = ?", (h,))
        if not rows:
            return None
        row = AgentRow(*rows[0])
        ok = row.key_hash is not None and hmac.compare_digest(row.key_hash, h)
        return row if ok and row.revoked_at is None else None

    # ------------------------------------------------------------------ provider state

    def put_state(self, state: ProviderState) -> None:
        """Record a provider's attestation status; an existing quarantine is kept."""
        self._exec(
            "INSERT INTO tg_provider_state (provider_id, status, detail, verdict_digest, "
            "bound_key, not_after, quarantined_until, updated_at) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT (provider_id) DO UPDATE SET status = excluded.status, "
            "detail = excluded.detail, verdict_digest = excluded.verdict_digest, "
            "bound_key = excluded.bound_key, not_after = excluded.not_after, "
            "quarantined_until = CASE WHEN excluded.quarantined_until > "
            "tg_provider_state.quarantined_until THEN excluded.quarantined_until "
            "ELSE tg_provider_state.quarantined_until END, updated_at = excluded.updated_at",
            (state.provider_id, state.status, state.detail, state.verdict_digest,
             state.bound_key, state.not_after, state.quarantined_until, state.updated_at))

    def quarantine(self, provider_id: str, *, until: int, reason: str,
                   bound_key: str | None) -> None:
        self.put_state(ProviderState(provider_id, "quarantined", reason, None, bound_key, None,
                                     until, time.time()))

    def lift(self, provider_id: str) -> None:
        self._exec("UPDATE tg_provider_state SET quarantined_until = 0, status = 'pending' "
                   "WHERE provider_id = ?", (provider_id,))

    def states(self) -> dict[str, ProviderState]:
        return {r[0]: ProviderState(*r) for r in self._exec(
            "SELECT provider_id, status, detail, verdict_digest, bound_key, not_after, "
            "quarantined_until, updated_at FROM tg_provider_state")}

    # ------------------------------------------------------------------ evidence

    def put_evidence(self, sha256: str, report: bytes) -> None:
        """Keep a provider report that receipts cite (by the sha256 of its exact bytes)."""
        self._exec("INSERT INTO tg_evidence (sha256, report, created_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (sha256) DO NOTHING",
                   (sha256, report.decode("utf-8", "replace"), int(time.time())))

    def get_evidence(self, sha256: str) -> dict[str, Any] | None:
        """``{"provider_report": <exact report text>}`` (the receipt bundle's evidence form:
        the text, so its sha256 is the one the receipt cites), or None."""
        rows = self._exec("SELECT report FROM tg_evidence WHERE sha256 = ?", (sha256,))
        return {"provider_report": rows[0][0]} if rows else None

    # ------------------------------------------------------------------ replay window

    def claim_response(self, key: str, *, expires_at: int, now: int) -> bool:
        """Record an accepted answer until ``expires_at``: True the first time, False when a
        live entry exists (the answer was accepted before: a replay). One conditional insert,
        so two gateways sharing the database cannot both accept the same answer."""
        if now - self._purged >= _PURGE_EVERY:
            self._purged = now
            self._exec("DELETE FROM tg_seen_responses WHERE expires_at <= ?", (now,))
        rows = self._exec(
            "INSERT INTO tg_seen_responses (response_key, expires_at) VALUES (?, ?) "
            "ON CONFLICT (response_key) DO UPDATE SET expires_at = excluded.expires_at "
            "WHERE tg_seen_responses.expires_at <= ? RETURNING response_key",
            (key, expires_at, now))
        return bool(rows)

    # ------------------------------------------------------------------ stored responses

    # Every stored response is kept ``retention`` seconds after it was stored: older ones
    # are not found (whether or not the sweep has deleted them yet) and are purged at most
    # every _PURGE_EVERY seconds, by whichever call comes.

    def put_response(self, agent: str, response_id: str, response: str, input_items: str,
                     *, now: float, retention: int) -> None:
        self._purge_responses(now, retention)
        self._exec("INSERT INTO tg_responses (agent, id, created_at, response, input) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent, id) DO UPDATE SET "
                   "created_at = excluded.created_at, "
                   "response = excluded.response, input = excluded.input",
                   (agent, response_id, int(now), response, input_items))

    def get_response(self, agent: str, response_id: str, *, now: float, retention: int
                     ) -> tuple[str, str] | None:
        """(the response document, its input items), both JSON text, of ``agent``'s own
        stored response; None for another agent's, an expired or an unknown id."""
        self._purge_responses(now, retention)
        rows = self._exec("SELECT response, input FROM tg_responses WHERE agent = ? AND id = ? "
                          "AND created_at > ?", (agent, response_id, int(now) - retention))
        return (rows[0][0], rows[0][1]) if rows else None

    def delete_response(self, agent: str, response_id: str, *, now: float, retention: int
                        ) -> bool:
        """Whether ``agent`` had that response (an expired one is gone already)."""
        return bool(self._exec("DELETE FROM tg_responses WHERE agent = ? AND id = ? "
                               "AND created_at > ? RETURNING id",
                               (agent, response_id, int(now) - retention)))

    def _purge_responses(self, now: float, retention: int) -> None:
        if now - self._responses_purged < _PURGE_EVERY:
            return
        self._responses_purged = now
        self._exec("DELETE FROM tg_responses WHERE created_at <= ?", (int(now) - retention,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

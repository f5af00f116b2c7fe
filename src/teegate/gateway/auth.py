"""Who is calling: agents (per-agent API keys), owners (keys that read their agents' wallets
and receipts) and the operator (the admin key)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from teegate.gateway.store import AgentRow, GatewayStore, hash_key
from teegate.routing.trust import TrustLevel, parse_trust


@dataclass(frozen=True)
class Principal:
    """``kind`` is "agent", "owner" or "operator"; ``agents`` the agent ids it may act for."""

    kind: str
    id: str
    agents: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Agent:
    """An authenticated agent with its trust settings."""

    id: str
    trust: TrustLevel
    min_trust: TrustLevel
    owner: str | None
    kind: str = "agent"

    @classmethod
    def from_row(cls, row: AgentRow) -> Agent:
        return cls(row.id, parse_trust(row.trust), parse_trust(row.min_trust), row.owner,
                   row.kind)


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class KeyCache:
    """Agent keys by hash, in memory: the hot path never waits for the database. A miss is
    looked up in the store (a key created by another process works at once); ``reload``
    (periodic) makes revocations elsewhere effective within the poll interval."""

    def __init__(self, store: GatewayStore, admin_key: str | None) -> None:
        self.store = store
        self.admin_key = admin_key
        self._admin_digest = hashlib.sha256((admin_key or "").encode()).digest()
        self._by_hash: dict[str, Agent] = {}
        self._owned: dict[str, frozenset[str]] = {}

    def reload(self) -> None:
        rows = self.store.agents()
        by_hash: dict[str, Agent] = {}
        owned: dict[str, set[str]] = {}
        for r in rows:
            if r.owner and r.kind == "agent":
                owned.setdefault(r.owner, set()).add(r.id)
            if r.key_hash and r.revoked_at is None:
                by_hash[r.key_hash] = Agent.from_row(r)
        self._by_hash = by_hash
        self._owned = {k: frozenset(v) for k, v in owned.items()}

    def cached(self, key: str) -> Agent | None:
        return self._by_hash.get(hash_key(key))

    def lookup(self, key: str) -> Agent | None:
        """Blocking: cache, then store."""
        agent = self.cached(key)
        if agent is not None:
            return agent
        row = self.store.agent_by_key(key)
        if row is None:
            return None
        agent = Agent.from_row(row)
        self._by_hash[hash_key(key)] = agent
        return agent

    def forget(self, agent_id: str) -> None:
        self._by_hash = {h: a for h, a in self._by_hash.items() if a.id != agent_id}

    def is_admin(self, key: str | None) -> bool:
        """Timing-safe: fixed-length digests are compared (``compare_digest`` on the raw
        strings would leak the admin key's length and raises on non-ASCII text, which a
        client controls through the Authorization header)."""
        if not key or not self.admin_key:
            return False
        given = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(given, self._admin_digest)

    def principal(self, agent: Agent) -> Principal:
        if agent.kind == "owner":
            return Principal("owner", agent.id, self._owned.get(agent.id, frozenset()))
        return Principal("agent", agent.id, frozenset({agent.id}))

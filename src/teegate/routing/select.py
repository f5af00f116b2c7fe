"""Pure routing: which providers may serve a call, why the others may not, and in which order
to try the eligible ones. No I/O; the caller passes a snapshot of each provider's state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from teegate.routing.trust import TrustLevel


@dataclass(frozen=True)
class Candidate:
    """A provider as routing sees it at one instant.

    ``level`` is the trust level it can serve right now (from configuration and the current
    verdict); ``blocked`` is a reason it may not serve at all (quarantine, rejected evidence),
    ``cooldown_until`` a monotonic deadline after recent failures."""

    provider_id: str
    models: frozenset[str]
    level: TrustLevel
    blocked: str | None = None
    cooldown_until: float = 0.0
    price: int = 0  # worst-case price hint, smallest currency unit per 1M tokens
    latency_ms: float = 0.0  # exponentially weighted upstream latency
    failures: int = 0


@dataclass(frozen=True)
class Refusal:
    """A provider that was considered and what it lacked."""

    provider_id: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """Eligible providers in the order to try, and every refusal with its reason."""

    eligible: tuple[Candidate, ...]
    refused: tuple[Refusal, ...]

    def explain(self) -> str:
        return "; ".join(f"{r.provider_id}: {r.reason}" for r in self.refused)


def plan_route(
    candidates: Iterable[Candidate], model: str, required: TrustLevel, *, now: float,
    prefer: str = "price",
) -> Plan:
    """Eligible providers for ``model`` at ``required`` or above, best first.

    Order: providers out of cool-down before those still cooling down (a cooling provider is
    only a last resort), then fewer recent failures, then ``prefer`` ("price" or "latency"),
    then configuration order. A provider below the level is never eligible."""
    ok: list[tuple[tuple[float, ...], int, Candidate]] = []
    refused: list[Refusal] = []
    for i, c in enumerate(candidates):
        if model not in c.models:
            continue
        if c.blocked is not None:
            refused.append(Refusal(c.provider_id, c.blocked))
            continue
        if c.level < required:
            refused.append(Refusal(
                c.provider_id, f"serves trust level {c.level.label}, below {required.label}"))
            continue
        cooling = 1.0 if c.cooldown_until > now else 0.0
        pref = float(c.price) if prefer == "price" else c.latency_ms
        ok.append(((cooling, float(c.failures), pref), i, c))
    ok.sort(key=lambda t: (t[0], t[1]))
    return Plan(tuple(c for _, _, c in ok), tuple(refused))


def models_known(candidates: Sequence[Candidate]) -> frozenset[str]:
    out: set[str] = set()
    for c in candidates:
        out |= c.models
    return frozenset(out)

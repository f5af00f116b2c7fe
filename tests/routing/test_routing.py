"""Trust levels and the pure routing plan."""

from __future__ import annotations

import pytest

from teegate.errors import ConfigError
from teegate.routing import Candidate, Health, TrustLevel, parse_trust, plan_route


def test_levels_are_ordered_and_parse() -> None:
    assert TrustLevel.STANDARD < TrustLevel.TEE < TrustLevel.ATTESTED < TrustLevel.ATTESTED_GPU
    assert parse_trust("Attested+GPU") is TrustLevel.ATTESTED_GPU
    assert parse_trust("attested-gpu") is TrustLevel.ATTESTED_GPU
    assert str(TrustLevel.TEE) == "tee"
    with pytest.raises(ConfigError, match=r"agents\[0\]\.trust: 'secure' is not a trust level"):
        parse_trust("secure", field="agents[0].trust")


def _c(pid: str, level: TrustLevel, **kw: object) -> Candidate:
    return Candidate(pid, frozenset({"m"}), level, **kw)  # type: ignore[arg-type]


def test_never_below_the_level_and_every_refusal_named() -> None:
    plan = plan_route([_c("std", TrustLevel.STANDARD), _c("tee", TrustLevel.TEE),
                       _c("q", TrustLevel.ATTESTED, blocked="quarantined")],
                      "m", TrustLevel.ATTESTED, now=0)
    assert plan.eligible == ()
    reasons = {r.provider_id: r.reason for r in plan.refused}
    assert reasons["std"] == "serves trust level standard, below attested"
    assert reasons["tee"] == "serves trust level tee, below attested"
    assert reasons["q"] == "quarantined"


def test_order_cooldown_failures_then_price_or_latency() -> None:
    cands = [
        _c("cooling", TrustLevel.ATTESTED, cooldown_until=10.0, price=1),
        _c("expensive", TrustLevel.ATTESTED, price=9, latency_ms=1),
        _c("cheap", TrustLevel.ATTESTED_GPU, price=2, latency_ms=50),
        Candidate("other-model", frozenset({"n"}), TrustLevel.ATTESTED_GPU),
    ]
    by_price = plan_route(cands, "m", TrustLevel.ATTESTED, now=5.0)
    assert [c.provider_id for c in by_price.eligible] == ["cheap", "expensive", "cooling"]
    by_latency = plan_route(cands, "m", TrustLevel.ATTESTED, now=5.0, prefer="latency")
    assert [c.provider_id for c in by_latency.eligible] == ["expensive", "cheap", "cooling"]
    after = plan_route(cands, "m", TrustLevel.ATTESTED, now=11.0)
    assert after.eligible[0].provider_id == "cooling"


def test_health_cools_down_after_allowed_fails() -> None:
    h = Health(allowed_fails=2, cooldown_s=30)
    h.failure(100.0)
    assert not h.cooling(100.0)
    h.failure(100.0)
    assert h.cooling(129.0)
    assert not h.cooling(131.0)
    h.success(12.0)
    assert h.failures == 0
    assert not h.cooling(100.0)
    assert h.latency_ms == 12.0

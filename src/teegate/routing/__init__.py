"""Enclave routing: trust levels, eligibility, selection, failover order, health."""

from teegate.routing.health import Health
from teegate.routing.select import Candidate, Plan, Refusal, models_known, plan_route
from teegate.routing.trust import TRUST_NAMES, TrustLevel, parse_trust

__all__ = [
    "TRUST_NAMES",
    "Candidate",
    "Health",
    "Plan",
    "Refusal",
    "TrustLevel",
    "models_known",
    "parse_trust",
    "plan_route",
]

"""Route: whether a call may be served at all (the receipt log can append, the model
exists) and which providers qualify for its trust level, best first (teegate.routing)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from teegate.gateway.errors import GatewayRefusal
from teegate.ledger.pricing import Price
from teegate.routing.select import Candidate, plan_route

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.state import Gateway
    from teegate.routing.trust import TrustLevel


def candidates(gw: Gateway, model: str, now: float) -> list[Candidate]:
    out = []
    for p in gw.by_model.get(model, ()):
        price = p.config.prices.get(model, Price())
        out.append(Candidate(p.id, frozenset(p.config.models), p.level(now),
                             p.blocked(now, model), p.health.cooldown_until,
                             price.input + price.output, p.health.latency_ms,
                             p.health.failures))
    return out


def temporary(gw: Gateway, provider_id: str, now: float) -> bool:
    """Whether a refused provider may qualify again soon: blocked for now, or attestable
    but without a current verdict (pending, expired, re-attesting)."""
    p = gw.by_id[provider_id]
    return p.blocked(now) is not None or (
        p.attestable and p.current(now) is None and p.status != "unproven")


def route(gw: Gateway, record: CallRecord, model: str, required: TrustLevel
          ) -> list[ProviderRuntime]:
    """The providers that may serve the call, in the order to try them; refusals name
    every provider considered and what it lacked."""
    stuck = gw.receipts.stuck if gw.receipts is not None else None
    if stuck is not None:  # fail closed: no call without a receipt the log can take
        record.outcome, record.status = "refused", 503
        raise GatewayRefusal(503, f"the receipt log cannot append ({stuck}); calls are "
                             "refused until it can", code="log_unavailable")
    if model not in gw.by_model:
        record.outcome, record.status = "refused", 404
        raise GatewayRefusal(404, f"the model {model!r} does not exist or no provider "
                             "serves it", code="model_not_found", param="model")
    now = gw.clock()
    plan = plan_route(candidates(gw, model, now), model, required, now=time.monotonic(),
                      prefer=gw.config.prefer)
    if not plan.eligible:
        record.outcome = "refused"
        temp = any(temporary(gw, r.provider_id, now) for r in plan.refused)
        status, code = (503, "no_provider_available") if temp else (403, "trust_level_unmet")
        record.status = status
        record.error = plan.explain()
        raise GatewayRefusal(status, f"no provider can serve {model!r} at trust level "
                             f"{required.label}: {plan.explain()}", code=code, param="model",
                             extra={"considered": [{"provider": r.provider_id,
                                                    "reason": r.reason}
                                                   for r in plan.refused]})
    return [gw.by_id[c.provider_id] for c in plan.eligible]

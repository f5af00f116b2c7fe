"""The gateway's ``Accounting``: ``teegate.ledger.LedgerAccounting`` (a hold of the call's worst
case before forwarding, settled from the provider's usage or voided on every exit path), with
the ledger's refusals turned into the gateway's OpenAI-shaped answers.

Charging rules (docs/gateway.md):
- usage reported (plain responses; streams with the usage chunk): its cost, capped at the hold;
- a stream cut short before usage arrived (client disconnect, provider error event, broken
  connection, failed signature): the prompt estimate plus one token per content event the
  provider had produced;
- a stream that ended normally without usage (a provider ignoring ``include_usage``): the
  hold's worst case;
- nothing billable (refused, every provider failed, an error answer): void.
"""

from __future__ import annotations

from teegate.errors import BudgetError, TeegateError
from teegate.gateway.errors import GatewayRefusal
from teegate.ledger import InsufficientFunds, Ledger, LedgerAccounting, LimitExceeded


def refusal(e: TeegateError) -> GatewayRefusal:
    """402 for money the agent lacks (saying what was needed and what was there), 400 for a
    conversation the call cannot use or a worst case beyond the ledger's maximum, 503 when
    the ledger itself failed."""
    if isinstance(e, InsufficientFunds):
        return GatewayRefusal(
            402, f"insufficient funds for this call: needed {e.needed}, available "
            f"{e.available} (smallest units of {e.currency}) in {e.account}",
            code="insufficient_funds",
            extra={"needed": e.needed, "available": e.available, "currency": e.currency},
            retry=False)
    if isinstance(e, BudgetError):
        return GatewayRefusal(402, str(e), code="insufficient_funds", retry=False)
    if isinstance(e, LimitExceeded):  # the request asks for more than any wallet can hold
        return GatewayRefusal(400, f"the call's worst case cannot be held: {e}",
                              code="invalid_request", param="max_tokens", retry=False)
    if "conversation" in str(e):
        return GatewayRefusal(400, str(e), code="invalid_conversation",
                              param="x-teegate-conversation")
    return GatewayRefusal(503, f"ledger unavailable: {e}", code="ledger_error")


def gateway_accounting(ledger: Ledger, *, currency: str | None = None,
                       hold_s: float | None = None) -> LedgerAccounting:
    return LedgerAccounting(ledger, currency=currency, hold_ttl=hold_s, refuse=refusal)

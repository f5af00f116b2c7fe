"""The gateway's ``Accounting`` on top of ``teegate.ledger``: a hold of the call's worst case
before forwarding, settled from the provider's usage or voided on every exit path.

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

import secrets

from teegate.errors import BudgetError, LedgerError
from teegate.gateway.calls import CallRecord
from teegate.gateway.errors import GatewayRefusal
from teegate.ledger import InsufficientFunds, Ledger


class LedgerAccounting:
    def __init__(self, ledger: Ledger, *, currency: str | None = None) -> None:
        self.ledger = ledger
        self.currency = currency

    def hold(self, record: CallRecord, worst_case: int) -> str:
        """Hold ``worst_case`` in the conversation's reserve (or the wallet); 402 when it
        cannot be covered."""
        hid = "hold_" + secrets.token_hex(12)
        try:
            h = self.ledger.hold(record.agent, worst_case, conversation=record.conversation,
                                 currency=self.currency, hold_id=hid)
        except InsufficientFunds as e:
            raise GatewayRefusal(
                402, f"insufficient funds for this call: needed {e.needed}, available "
                f"{e.available} (smallest units of {e.currency}) in {e.account}",
                code="insufficient_funds",
                extra={"needed": e.needed, "available": e.available, "currency": e.currency},
                retry=False) from None
        except BudgetError as e:
            raise GatewayRefusal(402, str(e), code="insufficient_funds", retry=False) from None
        except LedgerError as e:
            if record.conversation is not None and "conversation" in str(e):
                raise GatewayRefusal(400, str(e), code="invalid_conversation",
                                     param="x-teegate-conversation") from None
            raise GatewayRefusal(503, f"ledger unavailable: {e}", code="ledger_error"
                                 ) from None
        return h.id

    def settle(self, record: CallRecord, amount: int) -> list[str]:
        """``amount`` < 0: charge the whole hold (usage unknown)."""
        assert record.hold_id is not None
        assert record.provider is not None
        s = self.ledger.settle(record.hold_id, None if amount < 0 else amount,
                               provider=record.provider, model=record.model,
                               usage=record.usage, metadata={"outcome": record.outcome})
        record.cost = s.charged
        return [t.id for t in s.transfers]

    def void(self, record: CallRecord) -> None:
        assert record.hold_id is not None
        self.ledger.void(record.hold_id, reason=record.error or record.outcome)

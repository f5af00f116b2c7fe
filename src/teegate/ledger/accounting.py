"""The ledger as the gateway's ``Accounting`` (teegate.gateway.calls): hold before forwarding,
settle or void on every exit path. Structural: no import of the gateway (no cycle).

``record`` is the gateway's ``CallRecord`` (uses ``agent``, ``conversation``, ``model``,
``provider``, ``usage``, ``hold_id``, ``chat_id``; ``outcome``, ``error`` and ``cost`` when it
has them). ``settle(record, -1)`` charges the whole
hold: the gateway's rule when a stream died without reporting usage (the provider may have
produced up to the worst case; the hold is what the agent agreed to risk). A worst case of
0 (a free model) places no hold: ``FREE`` is returned (after the conversation named, if any,
was checked) and settling it moves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from teegate.errors import TeegateError
from teegate.ledger.core import Ledger
from teegate.ledger.db import Tx
from teegate.ledger.model import Settlement

FREE = "free"


class LedgerAccounting:
    """``refuse`` turns a refused hold (BudgetError, closed or unknown conversation) into the
    exception the caller expects (the gateway's 402/4xx refusal); default: re-raise."""

    def __init__(self, ledger: Ledger, *, currency: str | None = None,
                 hold_ttl: float | None = None,
                 refuse: Callable[[TeegateError], Exception] | None = None) -> None:
        self.ledger = ledger
        self.currency = currency
        self.hold_ttl = hold_ttl
        self.refuse = refuse

    def hold(self, record: Any, worst_case: int) -> str:
        now = self.ledger.clock()
        try:
            if worst_case <= 0:
                # Nothing to hold, but a call must not be filed under a conversation the
                # agent cannot use (its receipt would name it).
                if record.conversation:
                    self.ledger.check_conversation(record.agent, record.conversation, now=now)
                return FREE
            h = self.ledger.hold(
                record.agent, worst_case, conversation=record.conversation or None,
                currency=self.currency, now=now,
                expires_at=None if self.hold_ttl is None else now + self.hold_ttl)
        except TeegateError as e:
            if self.refuse is None:
                raise
            raise self.refuse(e) from e
        return h.id

    def renew(self, holds: Sequence[str]) -> int:
        """Give the holds of calls still running a full hold time again."""
        now = self.ledger.clock()
        ttl = self.ledger.hold_ttl if self.hold_ttl is None else self.hold_ttl
        return self.ledger.renew_holds([h for h in holds if h != FREE], now + ttl, now=now)

    def lost(self, holds: Sequence[str]) -> set[str]:
        """The holds among ``holds`` that are no longer open (released under their call)."""
        return self.ledger.resolved_holds([h for h in holds if h != FREE])

    def state(self, hold: str) -> str:
        """The hold's state now (open, settled, voided, expired)."""
        return self.ledger.get_hold(hold).state

    def settle(self, record: Any, amount: int,
               attach: Callable[[Tx], None] | None = None) -> list[str]:
        """Charge ``amount`` (negative: the whole hold). ``record.cost`` and
        ``record.transfer_ids`` are what the settlement moved, set before ``attach(tx)`` runs
        in the same transaction (the gateway writes the receipt there)."""
        if record.hold_id in (None, FREE):
            return []
        usage = record.usage if isinstance(record.usage, dict) else None
        meta = {k: v for k in ("chat_id", "outcome")
                if isinstance(v := getattr(record, k, None), str) and v}
        s = self.ledger.settle(record.hold_id, None if amount < 0 else amount,
                               provider=record.provider or "unknown", model=record.model,
                               usage=usage, metadata=meta or None,
                               attach=_recorded(record, attach))
        return [t.id for t in s.transfers]

    def void(self, record: Any, attach: Callable[[Tx], None] | None = None) -> None:
        if record.hold_id in (None, FREE):
            return
        reason = getattr(record, "error", None) or getattr(record, "outcome", None)
        self.ledger.void(record.hold_id, reason=reason, attach=_recorded(record, attach))


def _recorded(record: Any, attach: Callable[[Tx], None] | None
              ) -> Callable[[Tx, Settlement], None]:
    def run(tx: Tx, s: Settlement) -> None:
        if hasattr(record, "cost"):
            record.cost = s.charged
        if hasattr(record, "transfer_ids"):
            record.transfer_ids = [t.id for t in s.transfers]
        if attach is not None:
            attach(tx)

    return run

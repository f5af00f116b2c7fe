"""Calls paid by an agent's voucher on an on-chain conversation channel, behind the gateway's
``Accounting`` seam (``teegate.gateway.calls.Accounting``): the gateway's hold and settle steps
call this; nothing else in the call pipeline knows about chains.

A call whose conversation is a channel in the book must carry ``x-teegate-voucher``; the hold is
the voucher check (``check_voucher``: it covers what was charged plus this call's worst case, it
fits the deposit, it is signed by the payer authorizer), the settlement charges the actual cost
under that voucher in the book, once per hold id, in the ledger database's transaction, where the
receipt is written too. A voided call charges nothing (its voucher is simply never used). One call
at a time per channel, as the scheme requires (``invalid_batch_settlement_evm_channel_busy``).
Calls outside channels go to the ledger's accounting unchanged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from teegate.chain.book import ChannelBook
from teegate.chain.rules import ChargeError
from teegate.chain.scheme import Domain
from teegate.chain.vouchers import Voucher, VoucherError, check_voucher
from teegate.errors import TeegateError

HOLD_PREFIX = "channel:"


class ChannelCallError(TeegateError):
    """A channel call refused before forwarding; ``status`` and ``check`` for the answer."""

    def __init__(self, status: int, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.status = status
        self.check = check


@dataclass
class _Pending:
    channel_id: bytes
    voucher: Voucher
    worst: int


class ChannelAccounting:
    def __init__(self, book: ChannelBook, domain: Domain, inner: Any | None = None, *,
                 refuse: Callable[[ChannelCallError], Exception] | None = None) -> None:
        self.book = book
        self.domain = domain
        self.inner = inner
        self.refuse = refuse
        self._pending: dict[str, _Pending] = {}
        self._busy: set[bytes] = set()
        self._lock = threading.Lock()

    def _refused(self, status: int, check: str, message: str) -> Exception:
        r = ChannelCallError(status, check, message)
        return self.refuse(r) if self.refuse is not None else r

    def hold(self, record: Any, worst_case: int) -> str:
        channel = self.book.by_conversation(record.conversation) if record.conversation else None
        header = getattr(record, "voucher", None)
        if channel is None:
            if header:
                raise self._refused(400, "invalid_batch_settlement_evm_missing_channel",
                                    "a voucher was sent for a conversation that is not an "
                                    "on-chain channel")
            if self.inner is None:
                raise self._refused(402, "voucher_required", "no ledger here: pay by voucher")
            hold: str = self.inner.hold(record, worst_case)
            return hold
        if channel.state != "open":
            raise self._refused(409, "channel_closed", "the conversation's channel is closed")
        if not header:
            raise self._refused(402, "voucher_required",
                                "this conversation is an on-chain channel: send "
                                "x-teegate-voucher covering the call")
        try:
            voucher = Voucher.from_header(header if isinstance(header, str)
                                          else bytes(header).decode("latin-1"))
            check_voucher(self.domain, channel.view(), voucher, max(0, worst_case))
        except VoucherError as e:
            raise self._refused(402, e.check, str(e)) from None
        with self._lock:
            if channel.channel_id in self._busy:
                raise self._refused(409, "invalid_batch_settlement_evm_channel_busy",
                                    "another call on this channel is running; retry")
            self._busy.add(channel.channel_id)
            hold_id = HOLD_PREFIX + os.urandom(12).hex()
            self._pending[hold_id] = _Pending(channel.channel_id, voucher, max(0, worst_case))
        record.channel_id = "0x" + channel.channel_id.hex()
        record.voucher_cumulative = voucher.max_claimable_amount
        return hold_id

    def _take(self, hold: str) -> _Pending | None:
        with self._lock:
            p = self._pending.pop(hold, None)
            if p is not None:
                self._busy.discard(p.channel_id)
            return p

    def settle(self, record: Any, amount: int,
               attach: Callable[[Any], None] | None = None) -> list[str]:
        hold = record.hold_id
        if not (isinstance(hold, str) and hold.startswith(HOLD_PREFIX)):
            if self.inner is None:
                return []
            ids: list[str] = self.inner.settle(record, amount, attach)
            return ids
        p = self._take(hold)
        if p is None:
            raise ChargeError(f"channel hold {hold} is not running here (settled already, or "
                              "held by a process that restarted)")
        cost = p.worst if amount < 0 else amount
        record.cost = cost

        def also(tx: Any) -> None:
            if attach is not None:
                attach(tx)

        self.book.settle(hold, p.voucher, cost, attach=also)
        record.transfer_ids = []
        return []

    def void(self, record: Any, attach: Callable[[Any], None] | None = None) -> None:
        hold = record.hold_id
        if isinstance(hold, str) and hold.startswith(HOLD_PREFIX):
            self._take(hold)
            record.cost = 0
            if attach is not None:
                self.book.db.run(attach)
            return
        if self.inner is not None:
            self.inner.void(record, attach)

    def renew(self, holds: Sequence[str]) -> int:
        own = [h for h in holds if not h.startswith(HOLD_PREFIX)]
        n: int = self.inner.renew(own) if self.inner is not None and own else 0
        return n + len(holds) - len(own)

    def state(self, hold: str) -> str:
        if hold.startswith(HOLD_PREFIX):
            return "open" if hold in self._pending else "settled"
        state: str = self.inner.state(hold) if self.inner is not None else "unknown"
        return state

    def lost(self, holds: Sequence[str]) -> set[str]:
        own = [h for h in holds if not h.startswith(HOLD_PREFIX)]
        lost: set[str] = self.inner.lost(own) if self.inner is not None and own else set()
        return lost

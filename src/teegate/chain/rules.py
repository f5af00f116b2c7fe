"""The channel book's accounting rules, pure: how a confirmed event moves a channel's mirror,
what a settled call may charge, which channels must be claimed now and which are at risk.

Amounts are integers in the token's smallest unit (uint128 on chain), never floats.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from teegate.errors import ChainError

EventKind = Literal["Deposited", "Claimed", "Refunded", "WithdrawInitiated", "WithdrawFinalized",
                    "Settled"]
EVENT_KINDS: tuple[EventKind, ...] = ("Deposited", "Claimed", "Refunded", "WithdrawInitiated",
                                      "WithdrawFinalized", "Settled")


class ChargeError(ChainError):
    """A settled call would charge more than the agent's voucher allows."""

    check = "invalid_batch_settlement_evm_charge_exceeds_signed_cumulative"


@dataclass(frozen=True)
class Mirror:
    """A channel as the confirmed chain shows it, and as the gateway charged it."""

    balance: int = 0
    total_claimed: int = 0
    charged: int = 0
    signed_max: int = 0
    withdraw_amount: int = 0
    withdraw_started: int = 0  # the block timestamp of initiateWithdraw; 0 when none pending

    @property
    def unclaimed_charges(self) -> int:
        """Charged to the agent, not yet claimed on chain: what a late claim would lose."""
        return max(0, self.charged - self.total_claimed)


@dataclass(frozen=True)
class Event:
    """One confirmed log of the channel contract, decoded."""

    kind: EventKind
    channel_id: bytes
    amount: int  # Deposited/Refunded/WithdrawFinalized/WithdrawInitiated: amount; Claimed: total
    timestamp: int = 0  # the block's, for WithdrawInitiated


def apply(m: Mirror, e: Event) -> Mirror:
    """The mirror after a confirmed event (mirrors the contract's own arithmetic)."""
    if e.kind == "Deposited":
        return replace(m, balance=m.balance + e.amount)
    if e.kind == "Claimed":
        total = max(m.total_claimed, e.amount)
        return replace(m, total_claimed=total, charged=max(m.charged, total))
    if e.kind == "Refunded":
        pending = m.withdraw_amount
        if m.withdraw_started:
            pending = 0 if e.amount >= pending else pending - e.amount
        return replace(m, balance=m.balance - e.amount, withdraw_amount=pending,
                       withdraw_started=m.withdraw_started if pending else 0)
    if e.kind == "WithdrawInitiated":
        return replace(m, withdraw_amount=e.amount, withdraw_started=e.timestamp)
    if e.kind == "WithdrawFinalized":
        return replace(m, balance=m.balance - e.amount, withdraw_amount=0, withdraw_started=0)
    return m


def charge(m: Mirror, cost: int, ceiling: int) -> Mirror:
    """The mirror after a call settled at ``cost`` under a voucher of cumulative ``ceiling``."""
    if cost < 0:
        raise ChainError("a call's cost cannot be negative")
    charged = max(m.charged, m.total_claimed) + cost
    if charged > ceiling:
        raise ChargeError(f"{ChargeError.check}: charging {cost} makes {charged}, above the "
                          f"voucher's {ceiling}")
    return replace(m, charged=charged, signed_max=max(m.signed_max, ceiling))


def finalises_at(m: Mirror, withdraw_delay: int) -> int | None:
    """When the pending withdrawal can be finalised (unix seconds), or None."""
    return m.withdraw_started + withdraw_delay if m.withdraw_started else None


def must_claim_now(m: Mirror) -> bool:
    """A channel with unclaimed charges and a pending withdrawal is claimed at once, not at the
    next batch: the payer may finalise as soon as the delay passes."""
    return m.unclaimed_charges > 0 and m.withdraw_started != 0


def at_risk(m: Mirror, withdraw_delay: int, margin: int, now: float) -> bool:
    """Unclaimed charges and a withdrawal that finalises within ``margin`` seconds (or could
    already have been): a claim that does not land now loses money."""
    due = finalises_at(m, withdraw_delay)
    return m.unclaimed_charges > 0 and due is not None and now >= due - margin

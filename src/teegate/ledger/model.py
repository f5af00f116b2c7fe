"""Values the ledger hands out: currencies, transfers, holds, conversations, balances.

All are small frozen dataclasses; amounts are ``int`` in the currency's smallest unit. Each
has ``to_json``/``from_json`` because the ledger stores an operation's first result to answer
retries of the same idempotency key with exactly that result.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from teegate.errors import BudgetError, LedgerError

MAX_AMOUNT = 2**53 - 1
"""The most any amount may be, and the most a currency's deposits may add up to (less its
withdrawals), in smallest units: so also the most any account may hold. It is the largest
integer every JSON reader keeps exact (JavaScript's ``Number.MAX_SAFE_INTEGER``), and no sum
the ledger computes from balances bounded by it can leave SQLite's or PostgreSQL's signed
64-bit integers (SQLite would silently turn an overflowing balance into a float, PostgreSQL
would refuse the operation). With 6 decimals it is about 9 billion currency units."""


@dataclass(frozen=True)
class Currency:
    """A currency from configuration: ``code`` (e.g. "USD"), ``decimals`` of its smallest unit
    (6 = micro-units), ``display`` symbol or suffix used when printing."""

    code: str
    decimals: int = 6
    display: str = ""

    def __post_init__(self) -> None:
        if not self.code or not self.code.replace("_", "").isalnum() or len(self.code) > 16:
            raise LedgerError(f"currency code {self.code!r} must be 1-16 letters/digits")
        if not isinstance(self.decimals, int) or not 0 <= self.decimals <= 18:
            raise LedgerError(f"currency {self.code}: decimals must be an integer 0..18")

    def format(self, amount: int) -> str:
        """``1234567`` with 6 decimals → ``"1.234567 USD"`` (exact, no float)."""
        sign = "-" if amount < 0 else ""
        whole, frac = divmod(abs(amount), 10**self.decimals)
        text = f"{whole}.{frac:0{self.decimals}d}" if self.decimals else str(whole)
        return f"{sign}{self.display}{text}" if self.display else f"{sign}{text} {self.code}"


DEFAULT_CURRENCIES = (Currency("USD", 6, "$"),)


def check_amount(value: object, what: str = "amount", *, zero_ok: bool = False) -> int:
    """An amount must be a Python ``int`` (not bool, not float), > 0 (or ≥ 0 if allowed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerError(f"{what} must be an integer number of smallest units, "
                          f"got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise LedgerError(f"{what} must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    if value > MAX_AMOUNT:
        raise LimitExceeded(f"{what} {value} exceeds the ledger's maximum {MAX_AMOUNT} "
                            "smallest units")
    return value


_AMOUNT = re.compile(r"([0-9]+)|([0-9]*)\.([0-9]+)")  # ASCII digits only: no \d


def parse_amount(text: object, decimals: int, what: str = "amount") -> int:
    """The one amount syntax of the CLI and of strings in the HTTP API: digits alone are
    smallest units (``"1500000"``), a decimal point means currency units (``"1.5"`` with 6
    decimals is ``1500000``; at most ``decimals`` digits after the point). ASCII digits
    only: no sign, exponent, separator or space, and no other script's digits (Python's
    ``int()`` reads ``"٥"`` as 5). JSON numbers are not text: the HTTP API takes them as
    smallest units and refuses fractions (``teegate.ledger.http``)."""
    m = _AMOUNT.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
    if m is None:
        raise LedgerError(f"{what} {text!r} must be ASCII digits (smallest units) or a "
                          "decimal number with a point (currency units, e.g. 1.5)")
    if m[1] is not None:
        return check_amount(int(m[1]), what)
    whole, frac = m[2], m[3]
    if len(frac) > decimals:
        raise LedgerError(f"{what} {text!r} must have at most {decimals} decimals")
    return check_amount(int(whole or "0") * 10**decimals + int(frac.ljust(decimals, "0")),
                        what)


def check_name(value: object, what: str) -> str:
    """Agent, provider, pool and conversation names: short printable text without ':'."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise LedgerError(f"{what} must be a non-empty string of at most 200 characters")
    if ":" in value or not value.isprintable():
        raise LedgerError(f"{what} {value!r} must be printable and must not contain ':'")
    return value


class LimitExceeded(LedgerError):  # noqa: N818 - reads as the refusal it is
    """An amount, or a currency's total in the ledger, would exceed ``MAX_AMOUNT``: refused
    before any sum can overflow a 64-bit column. Retrying the same request cannot help."""


class NotFound(LedgerError):  # noqa: N818 - reads as the refusal it is
    """The named hold or conversation does not exist."""


class Conflict(LedgerError):  # noqa: N818
    """The operation contradicts what already happened: a hold already settled, a closed
    conversation, an idempotency key reused for a different request."""


class InsufficientFunds(BudgetError):  # noqa: N818 - reads as the refusal it is
    """An account cannot cover an amount; says how much was needed and how much is there."""

    def __init__(self, account: str, needed: int, available: int, currency: str) -> None:
        self.account, self.needed, self.available, self.currency = (
            account, needed, available, currency)
        super().__init__(f"insufficient funds in {account}: needed {needed}, "
                         f"available {available} (smallest units of {currency})")


@dataclass(frozen=True)
class Transfer:
    """One immutable movement from ``debit`` to ``credit``. ``seq`` orders transfers."""

    id: str
    seq: int
    debit: str
    credit: str
    amount: int
    currency: str
    kind: str  # deposit withdraw reserve hold charge release refund reward
    agent: str | None
    operation: str
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "debit": self.debit, "credit": self.credit,
                "amount": self.amount, "currency": self.currency, "kind": self.kind,
                "agent": self.agent, "operation": self.operation,
                "created_at": self.created_at, "metadata": self.metadata}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Transfer:
        return cls(**d)


@dataclass(frozen=True)
class Hold:
    """The worst-case cost of one call set aside in its own account until settled/voided."""

    id: str
    agent: str
    currency: str
    amount: int
    conversation: str | None
    state: str  # open settled voided expired
    expires_at: float
    created_at: float
    cost: int | None = None
    provider: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "currency": self.currency,
                "amount": self.amount, "conversation": self.conversation, "state": self.state,
                "expires_at": self.expires_at, "created_at": self.created_at,
                "cost": self.cost, "provider": self.provider}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Hold:
        return cls(**d)


@dataclass(frozen=True)
class Settlement:
    """A settled hold with the transfers that settled it (charge, release)."""

    hold: Hold
    charged: int
    released: int
    transfers: tuple[Transfer, ...]

    def to_json(self) -> dict[str, Any]:
        return {"hold": self.hold.to_json(), "charged": self.charged, "released": self.released,
                "transfers": [t.to_json() for t in self.transfers]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Settlement:
        return cls(Hold.from_json(d["hold"]), d["charged"], d["released"],
                   tuple(Transfer.from_json(t) for t in d["transfers"]))


@dataclass(frozen=True)
class Conversation:
    """A budget reserved from an agent's wallet; ``remaining`` is the reserve's balance when
    this value was produced, ``refunded`` what closing returned to the wallet."""

    id: str
    agent: str
    currency: str
    budget: int
    state: str  # open closed expired
    expires_at: float
    created_at: float
    closed_at: float | None = None
    remaining: int = 0
    refunded: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Conversation:
        return cls(**d)


@dataclass(frozen=True)
class WalletBalance:
    """``available`` spendable now; ``reserved`` in open conversations; ``held`` by calls."""

    agent: str
    currency: str
    available: int
    reserved: int
    held: int

    @property
    def total(self) -> int:
        return self.available + self.reserved + self.held

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class SpendRow:
    """Spend of one agent grouped by model, conversation, provider or day."""

    key: str
    amount: int
    calls: int
    prompt_tokens: int
    completion_tokens: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExpiryReport:
    holds: int
    conversations: int


@dataclass(frozen=True)
class CheckReport:
    """What ``Ledger.check`` found: ``ok`` iff ``problems`` is empty."""

    accounts: int
    transfers: int
    totals: dict[str, int]  # per currency: sum over all accounts (must be 0)
    minted: dict[str, int]  # per currency: what is outside the external account
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))

"""teegate's ledger: agent wallets, conversation budgets, per-call holds, settlements, rewards.

Shape (TigerBeetle's model on SQLite/PostgreSQL, REFERENCE §11):
- Double-entry. Accounts: agent wallets, reward pools, conversation reserves, one account
  per call hold, provider revenue, and one external mint/burn account per currency. Every
  movement is an immutable transfer; each account's balance is a cache updated in the same
  transaction by a conditional update that refuses to take any non-external account below
  zero (and a CHECK constraint says so again). ``Ledger.check`` recomputes every balance from
  the transfers and verifies: cache == recomputation, nothing negative, per currency the sum
  of all accounts is 0 (the external account carries minus everything minted), every
  open hold's account holds exactly its amount, resolved holds and closed reserves hold 0.
- Amounts are ``int`` in the currency's smallest unit (currencies come from configuration);
  floats, bools and non-positive amounts are refused with a LedgerError.
- Conversation: wallet → reserve (the budget). Call: reserve (or wallet without a
  conversation) → hold (worst case). Settle: hold → provider revenue (actual cost, capped at
  the hold), hold → reserve (the rest; to the wallet once the conversation is closed). Void
  and expiry: hold → back. Close: reserve → wallet. Reward: facilitator wallet or pool →
  agents, every leg or none. Rewards of a conversation may be paid by the agent that opened
  it (its facilitator) or the operator (``teegate.ledger.http``).
- Idempotency: each operation is recorded under its key with its parameters and first
  result; a retry returns that result and moves nothing, a reuse with other parameters is a
  LedgerError. Keys default to ones derived from the object (``settle:<hold>``,
  ``void:<hold>``, ``close:<conversation>``, ``hold:<hold id>``); deposits, withdrawals,
  openings and rewards without a caller key get a fresh one (no retry protection). A
  caller's key is stored as ``key:<key>``, apart from the derived ones.
  Transfer ids are ``<operation key>/<leg>``.
- Bounds: no amount and no currency's total may exceed ``MAX_AMOUNT`` (2^53 - 1), so no
  balance or sum overflows either backend (``LimitExceeded``). With an ``AgentDirectory``
  deposits and reward legs go only to agents it knows; rewards of a conversation only while
  it is open.
- Expiry: holds (default 10 min) and conversations (default 24 h) carry ``expires_at``;
  ``expire(now)`` releases what a crashed gateway left. A hold that expired can no longer be
  settled (the call is then free: an undercharge, never an overspend), so the gateway's hold
  TTL must exceed its longest call.
- Provider revenue is spread over 16 shard accounts per provider (every settlement credits
  revenue; one row would serialise all settlements on PostgreSQL); ``Ledger.revenue`` sums
  them. Spend reports read the charge transfers' metadata (model, provider, conversation,
  usage), not the revenue accounts.
- Backends: see ``teegate.ledger.db`` (SQLite: WAL, synchronous=FULL by default,
  BEGIN IMMEDIATE, group commit; PostgreSQL: one transaction per operation, conditional
  updates, multi-row locks in a fixed order).
- Edges: ``teegate.ledger.http.wallet_router`` (FastAPI routes), ``LedgerAccounting`` (the
  gateway's hold/settle/void adapter), ``teegate.ledger.pricing`` (integer prices, the
  worst-case hold and the prompt-token upper bound). Something must call ``expire()``
  periodically (the gateway's background loop, or ``teegate ledger expire`` from cron).
"""

from teegate.ledger.accounting import LedgerAccounting
from teegate.ledger.core import (
    CONVERSATION_TTL,
    GROUPS,
    HOLD_TTL,
    REVENUE_SHARDS,
    AgentDirectory,
    Ledger,
    open_ledger,
)
from teegate.ledger.model import (
    DEFAULT_CURRENCIES,
    CheckReport,
    Conflict,
    Conversation,
    Currency,
    ExpiryReport,
    Hold,
    InsufficientFunds,
    LimitExceeded,
    NotFound,
    Settlement,
    SpendRow,
    Transfer,
    WalletBalance,
)
from teegate.ledger.pricing import Price, PriceTable, estimate_prompt_tokens

__all__ = [
    "CONVERSATION_TTL",
    "DEFAULT_CURRENCIES",
    "GROUPS",
    "HOLD_TTL",
    "REVENUE_SHARDS",
    "AgentDirectory",
    "CheckReport",
    "Conflict",
    "Conversation",
    "Currency",
    "ExpiryReport",
    "Hold",
    "InsufficientFunds",
    "Ledger",
    "LedgerAccounting",
    "LimitExceeded",
    "NotFound",
    "Price",
    "PriceTable",
    "Settlement",
    "SpendRow",
    "Transfer",
    "WalletBalance",
    "estimate_prompt_tokens",
    "open_ledger",
]

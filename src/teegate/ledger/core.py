# ruff: noqa: S608 - SQL is built only from the constant column lists below, never from input
"""The ledger's operations: each one atomic (one ``Backend.run``) and idempotent by key.

Accounts (id → kind, balance cache):
  ``wallet:<cur>:<agent>``   an agent's (or facilitator's) spendable money
  ``pool:<cur>:<name>``      a reward pool (deposit into ``"pool:<name>"``)
  ``reserve:<conversation>`` a conversation's budget, reserved from the wallet
  ``hold:<hold>``            one call's worst-case cost, from a reserve or the wallet
  ``revenue:<cur>:<provider>:<shard>`` what calls cost, per provider (16 shards)
  ``external:<cur>``         mint/burn: the only account allowed below zero

Every movement is a transfer row; the balance cache of both accounts is updated in the same
transaction, the debit with a conditional update that refuses to take a non-external account
below zero. ``check`` recomputes every balance from the transfers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from teegate.errors import BudgetError, LedgerError
from teegate.ledger.db import Backend, Tx, open_backend
from teegate.ledger.model import (
    DEFAULT_CURRENCIES,
    MAX_AMOUNT,
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
    check_amount,
    check_name,
    dumps,
)
from teegate.ledger.usage import read_usage

R = TypeVar("R")

HOLD_TTL = 600.0  # seconds; longer than any call the gateway lets run
CONVERSATION_TTL = 86_400.0
GROUPS = ("model", "conversation", "provider", "day")
# A provider's revenue is spread over this many accounts (by hold id): every settlement
# credits revenue, and one row would serialise all settlements on PostgreSQL's row lock.
REVENUE_SHARDS = 16

_TRANSFER_COLS = ("id, seq, debit, credit, amount, currency, kind, agent, operation, "
                  "created_at, metadata")
_HOLD_COLS = "id, agent, currency, amount, conversation, state, expires_at, created_at, cost, " \
             "provider"
_CONV_COLS = "id, agent, currency, budget, state, expires_at, created_at, closed_at, refunded"


def _new_id(prefix: str) -> str:
    """Time-ordered ids (ns clock, then 64 random bits): new rows land at the right edge of
    every index they are keyed in, so a commit dirties few pages (random ids scatter them)."""
    return f"{prefix}_{time.time_ns():016x}{secrets.token_hex(8)}"


CALLER_KEYS = "key:"
"""The namespace of callers' idempotency keys. The keys the ledger derives itself
(``close:<conversation>``, ``settle:<hold>``, ``hold:<hold>``, ...) live outside it, so no
caller key can take one (a CLI ``--key close:<id>`` once blocked closing that conversation for
good: the close was answered with the first operation's result, or refused as a conflict)."""
# operations whose first result is rebuilt from its stored JSON alone (not from the key)
_REPLAYABLE_FROM_JSON = frozenset({"deposit", "withdraw", "open_conversation", "hold", "reward"})
MAX_KEY = 1000  # a caller key plus the scope an edge adds (teegate.ledger.http: ~600 at most)


def _key(value: object) -> str:
    """A caller's key in the callers' namespace (see ``CALLER_KEYS``)."""
    if (not isinstance(value, str) or not value or len(value) > MAX_KEY
            or not value.isprintable()):
        raise LedgerError(f"an idempotency key must be 1-{MAX_KEY} printable characters")
    return CALLER_KEYS + value


def _time(value: object, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value)):
        raise LedgerError(f"{what} must be a finite number of seconds since the epoch")
    return float(value)


def _ttl(value: object, what: str) -> float:
    """A lifetime in seconds: finite and positive (a NaN expiry would never be swept)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise LedgerError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _usable_conversation(tx: Tx, conversation: str, agent: str, t: float) -> str:
    """The currency of ``agent``'s open conversation, or the refusal a hold in it gets."""
    row = tx.one("SELECT agent, currency, state, expires_at FROM tl_conversations WHERE id = ?",
                 (conversation,))
    if row is None:
        raise NotFound(f"no conversation {conversation!r}")
    if row[0] != agent:
        raise LedgerError(f"conversation {conversation} belongs to another agent")
    if row[2] != "open" or float(row[3]) <= t:
        raise Conflict(f"conversation {conversation} is "
                       f"{'expired' if row[2] == 'open' else row[2]}")
    return str(row[1])


def _transfer(row: Sequence[Any]) -> Transfer:
    return Transfer(row[0], int(row[1]), row[2], row[3], int(row[4]), row[5], row[6], row[7],
                    row[8], float(row[9]), json.loads(row[10]))


def _hold(row: Sequence[Any]) -> Hold:
    return Hold(row[0], row[1], row[2], int(row[3]), row[4], row[5], float(row[6]),
                float(row[7]), None if row[8] is None else int(row[8]), row[9])


class AgentDirectory(Protocol):
    """Who the agents are (the gateway's ``GatewayStore``): money is deposited or rewarded
    only to an agent that exists, so an agent created later under an unused id does not
    inherit what was sent there."""

    def has_agent(self, agent_id: str) -> bool: ...


class Ledger:
    """Wallets, conversations, holds, settlements and rewards over one database.

    Methods are synchronous and thread-safe (the gateway calls them from a thread pool).
    ``now`` (seconds since the epoch) defaults to ``clock()``; ``key`` makes an operation
    idempotent: a retry with the same key returns the first result and moves nothing; the
    same key with different parameters is a ``LedgerError``. ``agents``: when given,
    deposits and reward legs to an agent it does not know are ``NotFound``.
    """

    def __init__(self, backend: Backend, *, currencies: Sequence[Currency] = DEFAULT_CURRENCIES,
                 clock: Callable[[], float] = time.time, hold_ttl: float = HOLD_TTL,
                 conversation_ttl: float = CONVERSATION_TTL,
                 agents: AgentDirectory | None = None) -> None:
        if not currencies:
            raise LedgerError("the ledger needs at least one currency")
        self.backend = backend
        self.currencies = {c.code: c for c in currencies}
        self.default_currency = currencies[0]
        self.clock = clock
        self.hold_ttl = _ttl(hold_ttl, "hold_ttl")
        self.conversation_ttl = _ttl(conversation_ttl, "conversation_ttl")
        self.agents = agents

    def close(self) -> None:
        self.backend.close()

    # ------------------------------------------------------------ helpers

    def currency(self, code: str | None = None) -> Currency:
        if code is None:
            return self.default_currency
        cur = self.currencies.get(code)
        if cur is None:
            raise LedgerError(f"unknown currency {code!r}; configured: "
                              f"{', '.join(self.currencies)}")
        return cur

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else _time(now, "now")

    def _known(self, owner: str) -> None:
        """Refuse money for an agent the directory does not know (pools need no agent)."""
        if self.agents is None or owner.startswith("pool:"):
            return
        if not self.agents.has_agent(owner):
            raise NotFound(f"no agent {owner!r}: create it first (teegate agents create, the "
                           "admin API or [[agents]]); money sent to an unknown id would go "
                           "to whoever is created under it later")

    @staticmethod
    def wallet_account(owner: str, currency: str) -> tuple[str, str]:
        """Account id and kind of an agent's wallet, or of a pool named ``pool:<name>``."""
        if isinstance(owner, str) and owner.startswith("pool:"):
            return f"pool:{currency}:{check_name(owner[5:], 'pool name')}", "pool"
        return f"wallet:{currency}:{check_name(owner, 'agent')}", "wallet"

    @staticmethod
    def _ensure(tx: Tx, account: str, kind: str, owner: str | None, currency: str,
                now: float, balance: int = 0) -> None:
        tx.exec("INSERT INTO tl_accounts (id, kind, owner, currency, balance, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (account, kind, owner, currency, balance, now))

    @staticmethod
    def _balance(tx: Tx, account: str) -> int:
        row = tx.one("SELECT balance FROM tl_accounts WHERE id = ?", (account,))
        return int(row[0]) if row else 0

    def _debit(self, tx: Tx, account: str, amount: int, currency: str) -> None:
        """Conditional debit: refuses to take a non-external account below zero, and the
        external account (minus what was minted) below ``-MAX_AMOUNT``: every account's
        balance is then at most ``MAX_AMOUNT``, so no balance or sum can overflow."""
        n = tx.exec("UPDATE tl_accounts SET balance = balance - ? WHERE id = ? AND balance >= "
                    "(CASE WHEN kind = 'external' THEN ? ELSE ? END)",
                    (amount, account, amount - MAX_AMOUNT, amount))
        if n == 1:
            return
        have = self._balance(tx, account)
        if account.startswith("external:"):
            raise LimitExceeded(f"a deposit of {amount} would take the {currency} held in this "
                                f"ledger from {-have} to {amount - have} smallest units, above "
                                f"the ledger's maximum {MAX_AMOUNT}")
        raise InsufficientFunds(account, amount, have, currency)

    @staticmethod
    def _credit(tx: Tx, account: str, kind: str, owner: str | None, currency: str,
                amount: int, now: float) -> None:
        """Credit, creating the account if it does not exist yet (one statement)."""
        tx.exec("INSERT INTO tl_accounts (id, kind, owner, currency, balance, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "balance = tl_accounts.balance + excluded.balance",
                (account, kind, owner, currency, amount, now))

    @staticmethod
    def _record(tx: Tx, op: str, leg: int, debit: str, credit: str, amount: int,
                currency: str, kind: str, agent: str | None, now: float,
                meta: dict[str, Any] | None = None) -> Transfer:
        """The immutable transfer row (balances already moved by the caller)."""
        tid = f"{op}/{leg}"
        row = tx.one("INSERT INTO tl_transfers (id, debit, credit, amount, currency, kind, agent,"
                     " operation, created_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     "RETURNING seq", (tid, debit, credit, amount, currency, kind, agent, op,
                                       now, dumps(meta) if meta else "{}"))
        assert row is not None
        return Transfer(tid, int(row[0]), debit, credit, amount, currency, kind, agent, op, now,
                        meta or {})

    def _move(self, tx: Tx, op: str, leg: int, debit: str, credit: tuple[str, str, str | None],
              amount: int, currency: str, kind: str, agent: str | None, now: float,
              meta: dict[str, Any] | None = None) -> Transfer:
        """One transfer: conditional debit, credit (``credit`` = id, kind, owner), row."""
        self._debit(tx, debit, amount, currency)
        self._credit(tx, credit[0], credit[1], credit[2], currency, amount, now)
        return self._record(tx, op, leg, debit, credit[0], amount, currency, kind, agent, now,
                            meta)

    def _op(self, kind: str, key: str, params: dict[str, Any], now: float,
            body: Callable[[Tx], R], encode: Callable[[R], Any],
            decode: Callable[[Tx, Any], R], *, fresh: bool = False,
            guarded: bool = False, sync: bool = True,
            attach: Callable[[Tx, R], None] | None = None) -> R:
        """Run ``body`` once per key: replay the first result on a retry. ``encode`` may
        return None when ``decode`` rebuilds the result from the rows (hot path: no JSON).

        On SQLite (one writer) the body runs first and the key's row is inserted last: a
        retry then fails on the key (or on the hold's state) and rolls back whole, and the
        first result is looked up in a second transaction, which also sees a twin committed
        in the same group commit. On PostgreSQL the key is looked up first (a retry must not
        wait for a unique-violation retry loop). ``fresh``: the key was just generated, so
        this cannot be a retry. ``guarded``: the body itself refuses to run twice (a hold
        resolves once, a conversation closes once), so the key need not be looked up first.
        ``sync=False``: see ``Backend.run``.
        ``attach(tx, result)`` runs in the same transaction as the result it is given (the
        first run or the replay): the gateway writes a call's receipt there, so the receipt is
        committed exactly when the settlement is."""
        # A fresh key is never looked up or stored, so its params JSON is never compared:
        # not encoding it saves a dumps per hold on the hot path (bench/README.md).
        pj = "" if fresh else dumps({"kind": kind, **params})

        def replay(tx: Tx) -> tuple[bool, Any]:
            row = tx.one("SELECT params, result FROM tl_operations WHERE key = ?", (key,))
            if row is None:
                return False, None
            if row[0] != pj:
                raise Conflict(f"idempotency key {key!r} was already used for a different "
                               f"request ({json.loads(row[0]).get('kind')})")
            return True, decode(tx, json.loads(row[1]) if row[1] else None)

        check_first = self.backend.check_first and not fresh and not guarded
        # A caller's key stored before callers had a namespace of their own: a retry that
        # spans the upgrade still replays (exact same request only; anything else under
        # that old key is not this caller's, so it is ignored, never a conflict).
        legacy = (key[len(CALLER_KEYS):] if key.startswith(CALLER_KEYS) and not fresh
                  and kind in _REPLAYABLE_FROM_JSON else None)

        def fn(tx: Tx) -> R:
            if legacy is not None:
                old = tx.one("SELECT params, result FROM tl_operations WHERE key = ?",
                             (legacy,))
                if old is not None and old[0] == pj:
                    replayed: R = decode(tx, json.loads(old[1]) if old[1] else None)
                    return replayed
            if check_first:
                done, prev = replay(tx)
                if done:
                    result: R = prev
                    if attach is not None:
                        attach(tx, result)
                    return result
            result = body(tx)
            if attach is not None:
                attach(tx, result)
            if fresh:
                return result  # a key nobody knows: nothing can retry it
            enc = encode(result)
            tx.exec("INSERT INTO tl_operations (key, kind, params, result, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key, kind, pj, "" if enc is None else dumps(enc), now))
            return result

        try:
            return self.backend.run(fn, sync=sync)
        except (BudgetError, LedgerError):
            if fresh:
                raise
            # A retry (or a twin that won the race): answer with the first result.
            def replay_attached(tx: Tx) -> tuple[bool, Any]:
                done, prev = replay(tx)
                if done and attach is not None:
                    attach(tx, prev)
                return done, prev

            done, prev = self.backend.run(replay_attached, sync=sync)
            if done:
                replayed: R = prev
                return replayed
            raise

    # ------------------------------------------------------------ deposits

    def deposit(self, to: str, amount: int, *, currency: str | None = None,
                key: str | None = None, now: float | None = None,
                memo: str | None = None) -> Transfer:
        """Mint ``amount`` into an agent's wallet (or ``"pool:<name>"``) from outside."""
        return self._external(to, amount, "deposit", currency, key, now, memo)

    def withdraw(self, frm: str, amount: int, *, currency: str | None = None,
                 key: str | None = None, now: float | None = None,
                 memo: str | None = None) -> Transfer:
        """Burn ``amount`` from an agent's available wallet balance (BudgetError if short)."""
        return self._external(frm, amount, "withdraw", currency, key, now, memo)

    def _external(self, who: str, amount: int, kind: str, currency: str | None,
                  key: str | None, now: float | None, memo: str | None) -> Transfer:
        check_amount(amount)
        cur = self.currency(currency).code
        acct, akind = self.wallet_account(who, cur)
        t = self._now(now)
        op = _key(key) if key is not None else _new_id(kind)
        if kind == "deposit":
            self._known(who)
        ext = f"external:{cur}"
        agent = None if akind == "pool" else who

        def body(tx: Tx) -> Transfer:
            self._ensure(tx, ext, "external", None, cur, t)
            tx.lock([ext, acct])
            if kind == "deposit":
                return self._move(tx, op, 0, ext, (acct, akind, who), amount, cur, kind, agent,
                                  t, {"memo": memo} if memo else None)
            return self._move(tx, op, 0, acct, (ext, "external", None), amount, cur, kind, agent, t,
                              {"memo": memo} if memo else None)

        return self._op(kind, op, {"who": who, "amount": amount, "currency": cur, "memo": memo},
                        t, body, Transfer.to_json, _dec(Transfer.from_json), fresh=key is None)

    # ------------------------------------------------------------ conversations

    def open_conversation(self, agent: str, budget: int, *, expires_at: float | None = None,
                          currency: str | None = None, key: str | None = None,
                          now: float | None = None,
                          conversation_id: str | None = None,
                          ttl: float | None = None) -> Conversation:
        """Reserve ``budget`` from the agent's wallet (BudgetError naming needed vs available
        when the wallet is short). It expires at ``expires_at``, or ``ttl`` seconds from now
        (default ``conversation_ttl``); either is part of the request a key stands for."""
        check_amount(budget, "budget")
        cur = self.currency(currency).code
        wallet, _ = self.wallet_account(agent, cur)
        t = self._now(now)
        if expires_at is not None and ttl is not None:
            raise LedgerError("a conversation takes expires_at or ttl, not both")
        when: dict[str, float] = {}
        if ttl is not None:
            when["ttl"] = _ttl(ttl, "ttl")
            exp = t + when["ttl"]
        elif expires_at is not None:
            exp = when["expires_at"] = _time(expires_at, "expires_at")
        else:
            exp = t + self.conversation_ttl
        if exp <= t:
            raise LedgerError("a conversation must expire after it opens")
        cid = check_name(conversation_id, "conversation id") if conversation_id else (
            _new_id("conv"))
        op = _key(key) if key is not None else _new_id("open")
        reserve = f"reserve:{cid}"

        def body(tx: Tx) -> Conversation:
            if tx.one("SELECT 1 FROM tl_conversations WHERE id = ?", (cid,)):
                raise Conflict(f"conversation {cid} already exists")
            tx.lock([wallet, reserve])
            try:
                self._move(tx, op, 0, wallet, (reserve, "reserve", agent), budget, cur,
                           "reserve", agent, t,
                           {"conversation": cid})
            except InsufficientFunds as e:
                raise InsufficientFunds(f"the wallet of {agent}", e.needed, e.available,
                                        cur) from None
            tx.exec(f"INSERT INTO tl_conversations ({_CONV_COLS}) VALUES "
                    "(?, ?, ?, ?, 'open', ?, ?, NULL, NULL)", (cid, agent, cur, budget, exp, t))
            return Conversation(cid, agent, cur, budget, "open", exp, t, None, budget, None)

        return self._op("open_conversation", op,
                        {"agent": agent, "budget": budget, "currency": cur,
                         "id": conversation_id, **when}, t, body, Conversation.to_json,
                        _dec(Conversation.from_json),
                        fresh=key is None and conversation_id is None)

    def close_conversation(self, conversation: str, *, key: str | None = None,
                           now: float | None = None) -> Conversation:
        """Return what is left in the reserve to the wallet. Calls still holding money from
        it release straight to the wallet when they settle, void or expire."""
        t = self._now(now)
        op = _key(key) if key is not None else f"close:{conversation}"
        return self._op("close_conversation", op, {"conversation": conversation}, t,
                        lambda tx: self._close(tx, op, conversation, t, "closed"),
                        Conversation.to_json, _dec(Conversation.from_json),
                        guarded=key is None)

    def _close(self, tx: Tx, op: str, cid: str, t: float, state: str) -> Conversation:
        row = tx.one(f"SELECT {_CONV_COLS} FROM tl_conversations WHERE id = ?", (cid,))
        if row is None:
            raise NotFound(f"no conversation {cid!r}")
        agent, cur = row[1], row[2]
        reserve, wallet = f"reserve:{cid}", f"wallet:{cur}:{agent}"
        tx.lock([reserve, wallet])
        if tx.exec("UPDATE tl_conversations SET state = ?, closed_at = ? WHERE id = ? AND "
                   "state = 'open'", (state, t, cid)) != 1:
            raise Conflict(f"conversation {cid} is already closed")
        left = self._balance(tx, reserve)
        if left:
            self._move(tx, op, 0, reserve, (wallet, "wallet", agent), left, cur, "refund",
                       agent, t,
                       {"conversation": cid})
        tx.exec("UPDATE tl_conversations SET refunded = ? WHERE id = ?", (left, cid))
        return Conversation(cid, agent, cur, int(row[3]), state, float(row[5]), float(row[6]),
                            t, 0, left)

    # ------------------------------------------------------------ holds

    def hold(self, agent: str, amount: int, *, conversation: str | None = None,
             expires_at: float | None = None, currency: str | None = None,
             key: str | None = None, now: float | None = None,
             hold_id: str | None = None) -> Hold:
        """Set aside ``amount`` (a call's worst case) from the conversation's reserve, or from
        the wallet when there is no conversation. BudgetError when it cannot be covered."""
        check_amount(amount)
        t = self._now(now)
        exp = t + self.hold_ttl if expires_at is None else _time(expires_at, "expires_at")
        hid = check_name(hold_id, "hold id") if hold_id else _new_id("hold")
        op = _key(key) if key is not None else f"hold:{hid}"
        check_name(agent, "agent")
        cur = self.currency(currency).code
        hacct = f"hold:{hid}"

        def body(tx: Tx) -> Hold:
            c = cur
            if conversation is not None:
                # No lock needed: the conditional debit below locks the reserve, and a reserve
                # closed meanwhile holds 0 for good, so that debit then fails.
                c = _usable_conversation(tx, conversation, agent, t)
                source = f"reserve:{conversation}"
            else:
                source = f"wallet:{c}:{agent}"
            if hold_id and tx.one("SELECT 1 FROM tl_holds WHERE id = ?", (hid,)):
                raise Conflict(f"hold {hid} already exists")
            try:
                self._debit(tx, source, amount, c)
            except InsufficientFunds as e:
                where = (f"the reserve of conversation {conversation}" if conversation else
                         f"the wallet of {agent}")
                raise InsufficientFunds(where, e.needed, e.available, c) from None
            self._ensure(tx, hacct, "hold", agent, c, t, amount)
            self._record(tx, op, 0, source, hacct, amount, c, "hold", agent, t,
                         {"conversation": conversation} if conversation else None)
            tx.exec(f"INSERT INTO tl_holds ({_HOLD_COLS}) VALUES "
                    "(?, ?, ?, ?, ?, 'open', ?, ?, NULL, NULL)",
                    (hid, agent, c, amount, conversation, exp, t))
            return Hold(hid, agent, c, amount, conversation, "open", exp, t)

        # the expiry is not part of the request's identity: a retry computes it anew
        # A hold moves no money out of the ledger: it is committed (it survives a killed
        # process) and made power-loss durable by the next fsync'd commit, at the latest its
        # own settlement's, which the answer's end waits for.
        return self._op("hold", op, {"agent": agent, "amount": amount, "currency": cur,
                                     "conversation": conversation, "id": hold_id}, t, body,
                        lambda h: h.id, _first_hold, fresh=key is None and hold_id is None,
                        sync=False)

    def settle(self, hold: str, cost: int | None, *, provider: str, model: str | None = None,
               usage: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
               key: str | None = None, now: float | None = None,
               attach: Callable[[Tx, Settlement], None] | None = None) -> Settlement:
        """Charge ``cost`` to ``provider``'s revenue and release the rest of the hold to where
        it came from. ``cost`` above the hold is capped at the hold (the hold is the most a
        call may cost; the metadata records what was asked and ``capped``); ``None`` charges
        the whole hold (the gateway's choice when a stream died without usage)."""
        if cost is not None:
            check_amount(cost, "cost", zero_ok=True)
        check_name(provider, "provider")
        t = self._now(now)
        op = _key(key) if key is not None else f"settle:{hold}"

        def body(tx: Tx) -> Settlement:
            h = self._resolve(tx, hold, "settled", t, cost=cost, provider=provider)
            charged = h.amount if cost is None else min(cost, h.amount)
            meta: dict[str, Any] = {"hold": h.id, "provider": provider, "model": model,
                                    "conversation": h.conversation, "usage": usage or {}}
            if cost is None or cost > h.amount:
                meta["requested"] = cost
                meta["capped"] = True
            if metadata:
                meta["extra"] = metadata
            return self._release(tx, op, h, charged, provider, t, meta)

        return self._op("settle", op, {"hold": hold, "cost": cost, "provider": provider,
                                       "model": model, "usage": usage, "metadata": metadata},
                        t, body, _none, lambda tx, _: _settlement(tx, op, hold),
                        guarded=key is None, attach=attach)

    def void(self, hold: str, *, key: str | None = None, now: float | None = None,
             reason: str | None = None,
             attach: Callable[[Tx, Settlement], None] | None = None) -> Settlement:
        """Release the whole hold (the call failed before producing anything billable)."""
        t = self._now(now)
        op = _key(key) if key is not None else f"void:{hold}"

        def body(tx: Tx) -> Settlement:
            h = self._resolve(tx, hold, "voided", t)
            return self._release(tx, op, h, 0, None, t, {"reason": reason} if reason else {})

        return self._op("void", op, {"hold": hold, "reason": reason}, t, body, _none,
                        lambda tx, _: _settlement(tx, op, hold), guarded=key is None,
                        attach=attach)

    def write(self, fn: Callable[[Tx], R]) -> R:
        """Run ``fn(tx)`` as one write of its own, committed with the ledger's other writes
        (SQLite: in the same group commit): rows the caller keeps in the ledger's database,
        such as a receipt of a call that held nothing."""
        return self.backend.run(fn)

    def check_conversation(self, agent: str, conversation: str, *,
                           now: float | None = None) -> None:
        """Refuse as ``hold`` would (NotFound, another agent's, closed or expired), without
        holding anything: a free call may only name a conversation it could be charged to."""
        t = self._now(now)
        self.backend.read(lambda tx: _usable_conversation(tx, conversation, agent, t))

    def renew_holds(self, holds: Sequence[str], expires_at: float, *,
                    now: float | None = None) -> int:
        """Push the expiry of open, unexpired holds out to ``expires_at`` (never earlier):
        the gateway renews the holds of calls still running, so a long call is not released
        by the expiry sweep and then served for free. Moves no money; returns how many."""
        t = self._now(now)
        until = _time(expires_at, "expires_at")
        ids = list(dict.fromkeys(holds))
        if not ids:
            return 0

        def fn(tx: Tx) -> int:
            n = 0
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                n += len(tx.all(
                    "UPDATE tl_holds SET expires_at = ? WHERE state = 'open' AND expires_at > ? "
                    f"AND expires_at < ? AND id IN ({', '.join('?' * len(part))}) RETURNING id",
                    (until, t, until, *part)))
            return n

        return self.backend.run(fn, sync=False)  # as a hold's own commit

    def _resolve(self, tx: Tx, hid: str, state: str, t: float, *, cost: int | None = None,
                 provider: str | None = None, expired_only: bool = False) -> Hold:
        """Close an open hold (conditional state change: only the first resolution wins)."""
        c = -1 if cost is None or state != "settled" else cost
        sql = (f"UPDATE tl_holds SET state = ?, resolved_at = ?, provider = ?, cost = CASE WHEN "
               f"? = 'settled' THEN (CASE WHEN ? < 0 OR ? > amount THEN amount ELSE ? END) END "
               f"WHERE id = ? AND state = 'open'{' AND expires_at <= ?' if expired_only else ''}"
               f" RETURNING {_HOLD_COLS}")
        params: tuple[Any, ...] = (state, t, provider, state, c, c, c, hid)
        row = tx.one(sql, (*params, t) if expired_only else params)
        if row is None:
            old = tx.one("SELECT state FROM tl_holds WHERE id = ?", (hid,))
            if old is None:
                raise NotFound(f"no hold {hid!r}")
            if old[0] == "open":
                raise LedgerError(f"hold {hid} has not expired")
            raise Conflict(f"hold {hid} is already {old[0]}")
        return _hold(row)

    def _release(self, tx: Tx, op: str, h: Hold, charged: int, provider: str | None,
                 t: float, meta: dict[str, Any]) -> Settlement:
        hacct, wallet = f"hold:{h.id}", f"wallet:{h.currency}:{h.agent}"
        revenue = (f"revenue:{h.currency}:{provider}:{zlib.crc32(h.id.encode()) % REVENUE_SHARDS}"
                   if provider else None)
        target, tkind = wallet, "wallet"
        # Lock order (PostgreSQL): reserve, then revenue, then the release target; every
        # other operation locks wallets last or in id order, so no cycle can form.
        if h.conversation:
            tx.lock([f"reserve:{h.conversation}"])  # close changes the state under this lock
            st = tx.one("SELECT state FROM tl_conversations WHERE id = ?", (h.conversation,))
            if st is not None and st[0] == "open":
                target, tkind = f"reserve:{h.conversation}", "reserve"
        # (leg, credit account, its kind and owner, amount, transfer kind, metadata)
        legs: list[tuple[int, str, str, str | None, int, str, dict[str, Any]]] = []
        if charged and revenue:
            legs.append((0, revenue, "revenue", provider, charged, "charge", meta))
        rest = h.amount - charged
        if rest:
            legs.append((1, target, tkind, h.agent, rest, "release",
                         {"hold": h.id, "conversation": h.conversation}))
        # The hold account holds exactly its amount while open (the CHECK constraint refuses
        # anything else): empty it, then one statement credits every leg, in the lock order
        # above, and one more writes the transfers.
        tx.exec("UPDATE tl_accounts SET balance = balance - ? WHERE id = ?", (h.amount, hacct))
        accts: list[Any] = []
        for _, acct, akind, owner, amount, _, _ in legs:
            accts += [acct, akind, owner, h.currency, amount, t]
        tx.exec("INSERT INTO tl_accounts (id, kind, owner, currency, balance, created_at) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(legs))
                + " ON CONFLICT (id) DO UPDATE SET balance = tl_accounts.balance + "
                "excluded.balance", accts)
        rows: list[Any] = []
        for leg, acct, _, _, amount, kind, md in legs:
            rows += [f"{op}/{leg}", hacct, acct, amount, h.currency, kind, h.agent, op, t,
                     dumps(md)]
        seqs = {r[0]: int(r[1]) for r in tx.all(
            "INSERT INTO tl_transfers (id, debit, credit, amount, currency, kind, agent, "
            "operation, created_at, metadata) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(legs))
            + " RETURNING id, seq", rows)}
        transfers = tuple(
            Transfer(f"{op}/{leg}", seqs[f"{op}/{leg}"], hacct, acct, amount, h.currency, kind,
                     h.agent, op, t, md)
            for leg, acct, _, _, amount, kind, md in legs)
        return Settlement(h, charged, rest, transfers)

    # ------------------------------------------------------------ rewards

    def reward(self, source: str, legs: Sequence[tuple[str, int]], *,
               conversation: str | None = None, currency: str | None = None,
               key: str | None = None, now: float | None = None,
               memo: str | None = None) -> tuple[Transfer, ...]:
        """Move money from a facilitator's wallet (``source`` = agent id) or a reward pool
        (``"pool:<name>"``) to agents: every leg or none."""
        legs = [(check_name(a, "agent"), check_amount(n)) for a, n in legs]
        if not legs or len(legs) > 1000:
            raise LedgerError("a reward needs 1 to 1000 legs")
        for a in dict.fromkeys(a for a, _ in legs):
            self._known(a)
        cur = self.currency(currency).code
        src, _ = self.wallet_account(source, cur)
        t = self._now(now)
        op = _key(key) if key is not None else _new_id("reward")
        total = sum(n for _, n in legs)
        if any(f"wallet:{cur}:{a}" == src for a, _ in legs):
            raise LedgerError("a reward leg cannot pay the source itself")

        def body(tx: Tx) -> tuple[Transfer, ...]:
            accts = [f"wallet:{cur}:{a}" for a, _ in legs]
            if conversation is None:
                tx.lock([src, *accts])
            else:
                # Under the reserve's lock (closing takes it): a conversation closes once, and
                # no reward of it is paid after.
                tx.lock([src, *accts, f"reserve:{conversation}"])
                _rewardable(tx, conversation, t)
            have = self._balance(tx, src)
            if have < total:
                raise InsufficientFunds(src, total, have, cur)
            meta = {"conversation": conversation, "source": source, "memo": memo}
            return tuple(self._move(tx, op, i, src, (acct, "wallet", a), n, cur, "reward", a, t,
                                    meta)
                         for i, ((a, n), acct) in enumerate(zip(legs, accts, strict=True)))

        return self._op("reward", op, {"source": source, "legs": legs, "currency": cur,
                                       "conversation": conversation, "memo": memo}, t, body,
                        lambda r: [x.to_json() for x in r],
                        lambda tx, d: tuple(Transfer.from_json(x) for x in d), fresh=key is None)

    # ------------------------------------------------------------ expiry

    def expire(self, now: float | None = None, *, limit: int = 10_000) -> ExpiryReport:
        """Release every open hold and close every open conversation whose expiry has passed
        (what a crashed gateway left behind). Safe to run from several processes at once."""
        t = self._now(now)
        holds = self.backend.read(lambda tx: [r[0] for r in tx.all(
            "SELECT id FROM tl_holds WHERE state = 'open' AND expires_at <= ? ORDER BY id "
            "LIMIT ?", (t, limit))])
        nh = sum(self._expire_hold(hid, t) for hid in holds)
        convs = self.backend.read(lambda tx: [r[0] for r in tx.all(
            "SELECT id FROM tl_conversations WHERE state = 'open' AND expires_at <= ? "
            "ORDER BY id LIMIT ?", (t, limit))])
        nc = sum(self._expire_conversation(cid, t) for cid in convs)
        return ExpiryReport(nh, nc)

    def _expire_hold(self, hid: str, t: float) -> bool:
        op = f"expire-hold:{hid}"

        def body(tx: Tx) -> Settlement:
            h = self._resolve(tx, hid, "expired", t, expired_only=True)
            return self._release(tx, op, h, 0, None, t, {"reason": "expired"})

        try:
            self._op("expire_hold", op, {"hold": hid}, t, body, _none,
                     lambda tx, _: _settlement(tx, op, hid), guarded=True)
        except LedgerError:
            return False  # settled or voided meanwhile
        return True

    def _expire_conversation(self, cid: str, t: float) -> bool:
        op = f"expire-conversation:{cid}"
        try:
            self._op("expire_conversation", op, {"conversation": cid}, t,
                     lambda tx: self._close(tx, op, cid, t, "expired"),
                     Conversation.to_json, _dec(Conversation.from_json), guarded=True)
        except LedgerError:
            return False  # closed meanwhile
        return True

    # ------------------------------------------------------------ reads

    def balance(self, agent: str, currency: str | None = None) -> WalletBalance:
        cur = self.currency(currency).code
        wallet, _ = self.wallet_account(agent, cur)

        def q(tx: Tx) -> WalletBalance:
            avail = self._balance(tx, wallet)
            rows = tx.all("SELECT kind, COALESCE(SUM(balance), 0) FROM tl_accounts WHERE "
                          "owner = ? AND currency = ? AND kind IN ('reserve', 'hold') "
                          "GROUP BY kind", (agent, cur))
            by = {k: int(v) for k, v in rows}
            return WalletBalance(agent, cur, avail, by.get("reserve", 0), by.get("hold", 0))

        return self.backend.read(q)

    def revenue(self, provider: str, currency: str | None = None) -> int:
        """What ``provider`` has earned (the sum of its revenue shards)."""
        cur = self.currency(currency).code
        row = self.backend.read(lambda tx: tx.one(
            "SELECT COALESCE(SUM(balance), 0) FROM tl_accounts WHERE kind = 'revenue' AND "
            "owner = ? AND currency = ?", (provider, cur)))
        return int(row[0]) if row else 0

    def resolved_holds(self, holds: Sequence[str]) -> set[str]:
        """Which of ``holds`` are no longer open (settled, voided or expired)."""
        ids = list(dict.fromkeys(holds))

        def q(tx: Tx) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                out.update(str(r[0]) for r in tx.all(
                    f"SELECT id FROM tl_holds WHERE state <> 'open' AND id IN "
                    f"({', '.join('?' * len(part))})", part))
            return out

        return self.backend.read(q) if ids else set()

    def get_hold(self, hold: str) -> Hold:
        row = self.backend.read(lambda tx: tx.one(
            f"SELECT {_HOLD_COLS} FROM tl_holds WHERE id = ?", (hold,)))
        if row is None:
            raise NotFound(f"no hold {hold!r}")
        return _hold(row)

    def conversation(self, conversation: str) -> Conversation:
        def q(tx: Tx) -> Sequence[Any] | None:
            row = tx.one(f"SELECT {_CONV_COLS} FROM tl_conversations WHERE id = ?",
                         (conversation,))
            if row is None:
                return None
            return (*row, self._balance(tx, f"reserve:{conversation}"))

        r = self.backend.read(q)
        if r is None:
            raise NotFound(f"no conversation {conversation!r}")
        return Conversation(r[0], r[1], r[2], int(r[3]), r[4], float(r[5]), float(r[6]),
                            None if r[7] is None else float(r[7]), int(r[9]),
                            None if r[8] is None else int(r[8]))

    def transfers(self, agent: str, *, limit: int = 50, before: int | None = None,
                  currency: str | None = None) -> list[Transfer]:
        """An agent's transfers, newest first; page with ``before`` = the last ``seq`` seen.
        Includes movements of its reserves and holds, charges, and rewards it paid."""
        if not 1 <= limit <= 1000:
            raise LedgerError("limit must be 1..1000")
        cur = self.currency(currency).code
        wallet, _ = self.wallet_account(agent, cur)
        if before is not None and (isinstance(before, bool) or not isinstance(before, int)
                                   or not 0 <= before < 2**63):
            # beyond a 64-bit seq SQLite's driver overflows and PostgreSQL compares numerics
            raise LedgerError(f"before must be a transfer seq 0..{2**63 - 1}")
        cursor = before if before is not None else 2**63 - 1
        rows = self.backend.read(lambda tx: tx.all(
            f"SELECT {_TRANSFER_COLS} FROM tl_transfers WHERE seq < ? AND currency = ? AND "
            "(agent = ? OR debit = ?) ORDER BY seq DESC LIMIT ?",
            (cursor, cur, agent, wallet, limit)))
        return [_transfer(r) for r in rows]

    def spend(self, agent: str, *, group_by: str = "model", since: float | None = None,
              until: float | None = None, currency: str | None = None) -> list[SpendRow]:
        """What an agent's calls cost, grouped by model, conversation, provider or UTC day."""
        if group_by not in GROUPS:
            raise LedgerError(f"group_by must be one of {', '.join(GROUPS)}")
        cur = self.currency(currency).code
        rows = self.backend.read(lambda tx: tx.all(
            "SELECT amount, metadata, created_at FROM tl_transfers WHERE agent = ? AND "
            "kind = 'charge' AND currency = ? AND created_at >= ? AND created_at < ?",
            (agent, cur, since if since is not None else -1.0,
             until if until is not None else 1e18)))
        acc: dict[str, list[int]] = {}
        for amount, md, created in rows:
            meta = json.loads(md)
            if group_by == "day":
                k = dt.datetime.fromtimestamp(float(created), dt.UTC).date().isoformat()
            else:
                k = str(meta.get(group_by) or "-")
            tokens = read_usage(meta.get("usage"))  # the provider's shape, whichever it is
            a = acc.setdefault(k, [0, 0, 0, 0])
            a[0] += int(amount)
            a[1] += 1
            a[2] += tokens.prompt if tokens else 0
            a[3] += tokens.completion if tokens else 0
        return [SpendRow(k, *v) for k, v in sorted(acc.items())]

    def check(self) -> CheckReport:
        """Recompute every balance from the transfers and verify every invariant."""
        return self.backend.read(_check)


def _none(_: object) -> None:
    return None


def _rewardable(tx: Tx, conversation: str, t: float) -> None:
    """Rewards of a conversation are paid while it is open: NotFound or Conflict otherwise."""
    row = tx.one("SELECT state, expires_at FROM tl_conversations WHERE id = ?",
                 (conversation,))
    if row is None:
        raise NotFound(f"no conversation {conversation!r}")
    if row[0] != "open" or float(row[1]) <= t:
        raise Conflict(f"conversation {conversation} is "
                       f"{'expired' if row[0] == 'open' else row[0]}: its rewards are paid "
                       "before it ends")


def _dec(fn: Callable[[Any], R]) -> Callable[[Tx, Any], R]:
    return lambda tx, d: fn(d)


def _first_hold(tx: Tx, hid: Any) -> Hold:
    """A hold as it was when placed (the first result of its operation)."""
    row = tx.one(f"SELECT {_HOLD_COLS} FROM tl_holds WHERE id = ?", (hid,))
    if row is None:
        raise NotFound(f"no hold {hid!r}")
    h = _hold(row)
    return Hold(h.id, h.agent, h.currency, h.amount, h.conversation, "open", h.expires_at,
                h.created_at)


def _settlement(tx: Tx, op: str, hid: str) -> Settlement:
    """A resolved hold and the transfers its operation made."""
    row = tx.one(f"SELECT {_HOLD_COLS} FROM tl_holds WHERE id = ?", (hid,))
    if row is None:
        raise NotFound(f"no hold {hid!r}")
    h = _hold(row)
    transfers = tuple(_transfer(r) for r in tx.all(
        f"SELECT {_TRANSFER_COLS} FROM tl_transfers WHERE id IN (?, ?) ORDER BY seq",
        (f"{op}/0", f"{op}/1")))
    charged = sum(x.amount for x in transfers if x.kind == "charge")
    return Settlement(h, charged, h.amount - charged, transfers)


def _check(tx: Tx) -> CheckReport:
    problems: list[str] = []
    accounts = {r[0]: (r[1], r[2], int(r[3])) for r in tx.all(
        "SELECT id, kind, currency, balance FROM tl_accounts")}
    derived: dict[str, int] = dict.fromkeys(accounts, 0)
    # Summed in two 32-bit halves: the credits (or debits) of one account over its whole life
    # can exceed 2^63 while its balance stays bounded, and SQLite's SUM then fails with
    # "integer overflow" (each half needs 2^31 transfers to overflow).
    for side, sign in (("credit", 1), ("debit", -1)):
        for acct, hi, lo in tx.all(
                f"SELECT {side}, SUM(amount / 4294967296), SUM(amount - amount / 4294967296 "
                f"* 4294967296) FROM tl_transfers GROUP BY {side}"):
            derived[acct] = derived.get(acct, 0) + sign * (int(hi) * 4294967296 + int(lo))
    ntransfers = int((tx.one("SELECT COUNT(*) FROM tl_transfers") or (0,))[0])
    totals: dict[str, int] = {}
    minted: dict[str, int] = {}
    for acct, value in derived.items():
        if acct not in accounts:
            problems.append(f"transfers name account {acct}, which does not exist")
            continue
        kind, cur, cached = accounts[acct]
        if cached != value:
            problems.append(f"{acct}: cached balance {cached} but transfers give {value}")
        if kind != "external" and value < 0:
            problems.append(f"{acct}: negative balance {value}")
        if kind == "external":
            minted[cur] = minted.get(cur, 0) - value
    for _kind, cur, cached in accounts.values():
        totals[cur] = totals.get(cur, 0) + cached
    for cur, total in totals.items():
        if total != 0:
            problems.append(f"{cur}: cached balances sum to {total}, not 0 (money created or "
                            "lost)")
    for n, what in (
        (tx.one("SELECT COUNT(*) FROM tl_transfers t JOIN tl_accounts a ON a.id = t.debit "
                "WHERE a.currency <> t.currency"), "debit"),
        (tx.one("SELECT COUNT(*) FROM tl_transfers t JOIN tl_accounts a ON a.id = t.credit "
                "WHERE a.currency <> t.currency"), "credit"),
    ):
        if n and int(n[0]):
            problems.append(f"{int(n[0])} transfers whose currency differs from their "
                            f"{what} account's")
    for hid, state, amount in tx.all("SELECT id, state, amount FROM tl_holds"):
        bal = accounts.get(f"hold:{hid}", (None, None, None))[2]
        want = int(amount) if state == "open" else 0
        if bal != want:
            problems.append(f"hold {hid} is {state} but its account holds {bal} "
                            f"(expected {want})")
    for cid, state in tx.all("SELECT id, state FROM tl_conversations WHERE state <> 'open'"):
        bal = accounts.get(f"reserve:{cid}", (None, None, 0))[2]
        if bal:
            problems.append(f"conversation {cid} is {state} but its reserve holds {bal}")
    return CheckReport(len(accounts), ntransfers, totals, minted, tuple(problems))


def open_ledger(url: str, *, currencies: Iterable[Currency] = DEFAULT_CURRENCIES,
                schema: str | None = None, clock: Callable[[], float] = time.time,
                durability: str = "full",
                hold_ttl: float = HOLD_TTL,
                conversation_ttl: float = CONVERSATION_TTL,
                agents: AgentDirectory | None = None) -> Ledger:
    """Open (and migrate) the ledger at ``sqlite:///path`` or ``postgresql://...``;
    ``schema`` puts PostgreSQL tables in that schema (created if missing); ``durability``
    "full" (SQLite synchronous=FULL, the default) or "normal" (see ``teegate.ledger.db``)."""
    return Ledger(open_backend(url, schema=schema, durability=durability),
                  currencies=tuple(currencies), clock=clock,
                  hold_ttl=hold_ttl, conversation_ttl=conversation_ttl, agents=agents)

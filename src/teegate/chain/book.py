"""The channel book: the ledger database's record of conversation channels (SQLite or PostgreSQL).

Per channel: its config, the confirmed on-chain mirror (balance, total claimed, pending
withdrawal), what the gateway charged and the best voucher covering it. Confirmed events are
applied once each (keyed by transaction hash and log index) with the hash of every block they
came from, so a block that changes under a recorded number is a reorg below the confirmation
depth: ``ReorgError``, reported, and nothing more is mirrored until an operator looks.

A settled call is recorded once per hold id, so a retried settle (a restarted gateway) charges
nothing twice. Claims are planned in the book before they are sent; claims are cumulative on chain
too, so a claim sent twice moves nothing twice. One claimer at a time across gateway processes:
a lease row taken by a conditional update (a row lock in effect on both databases).

Amounts are stored as decimal TEXT: uint128 does not fit BIGINT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from teegate.chain.rules import Event, Mirror, apply, charge
from teegate.chain.scheme import ChannelConfig, bytes32
from teegate.chain.vouchers import ChannelView, Voucher
from teegate.errors import ChainError
from teegate.ledger.db import Backend, Tx

TABLES = (
    """CREATE TABLE IF NOT EXISTS tc_channels (
        channel_id TEXT PRIMARY KEY,
        conversation TEXT UNIQUE,
        agent TEXT,
        config TEXT NOT NULL,
        balance TEXT NOT NULL DEFAULT '0',
        total_claimed TEXT NOT NULL DEFAULT '0',
        charged TEXT NOT NULL DEFAULT '0',
        signed_max TEXT NOT NULL DEFAULT '0',
        signature TEXT,
        withdraw_amount TEXT NOT NULL DEFAULT '0',
        withdraw_started BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'open',
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tc_charges (
        hold TEXT PRIMARY KEY,
        channel_id TEXT NOT NULL,
        cost TEXT NOT NULL,
        cumulative TEXT NOT NULL,
        ceiling TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tc_events (
        tx_hash TEXT NOT NULL,
        log_index BIGINT NOT NULL,
        block_number BIGINT NOT NULL,
        channel_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount TEXT NOT NULL,
        PRIMARY KEY (tx_hash, log_index))""",
    """CREATE TABLE IF NOT EXISTS tc_blocks (
        number BIGINT PRIMARY KEY,
        hash TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tc_claims (
        id TEXT PRIMARY KEY,
        rows TEXT NOT NULL,
        tx_hash TEXT,
        state TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tc_lease (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL)""",
)


class ReorgError(ChainError):
    """A block the book already mirrored as confirmed has another hash now."""

    def __init__(self, number: int, recorded: str, now: str) -> None:
        super().__init__(f"chain reorg below the confirmation depth: block {number} was "
                         f"{recorded}, is now {now}; mirroring stopped")
        self.number = number


@dataclass(frozen=True)
class Channel:
    channel_id: bytes
    conversation: str | None
    agent: str | None
    config: ChannelConfig
    mirror: Mirror
    signature: bytes | None
    state: str

    def view(self) -> ChannelView:
        return ChannelView(self.config, self.channel_id, self.mirror.balance,
                           self.mirror.total_claimed, max(self.mirror.charged,
                                                          self.mirror.total_claimed))


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _config_json(c: ChannelConfig) -> str:
    return json.dumps(c.as_json(), sort_keys=True)


def _config_of(text: str) -> ChannelConfig:
    d = json.loads(text)
    return ChannelConfig.of(payer=d["payer"], payer_authorizer=d["payerAuthorizer"],
                            receiver=d["receiver"], receiver_authorizer=d["receiverAuthorizer"],
                            token=d["token"], withdraw_delay=int(d["withdrawDelay"]),
                            salt=d["salt"])


_SELECT = ("SELECT channel_id, conversation, agent, config, balance, total_claimed, charged, "
           "signed_max, signature, withdraw_amount, withdraw_started, state FROM tc_channels ")
BY_ID = _SELECT + "WHERE channel_id = ?"
BY_CONVERSATION = _SELECT + "WHERE conversation = ?"
ALL = _SELECT + "ORDER BY created_at, channel_id"
STORE = ("UPDATE tc_channels SET balance = ?, total_claimed = ?, charged = ?, signed_max = ?, "
         "withdraw_amount = ?, withdraw_started = ? WHERE channel_id = ?")
STORE_SIGNED = ("UPDATE tc_channels SET balance = ?, total_claimed = ?, charged = ?, "
                "signed_max = ?, withdraw_amount = ?, withdraw_started = ?, signature = ? "
                "WHERE channel_id = ?")


def _row(r: Sequence[object]) -> Channel:
    m = Mirror(balance=int(str(r[4])), total_claimed=int(str(r[5])), charged=int(str(r[6])),
               signed_max=int(str(r[7])), withdraw_amount=int(str(r[9])),
               withdraw_started=int(str(r[10])))
    sig = bytes.fromhex(str(r[8])[2:]) if r[8] else None
    return Channel(bytes32(str(r[0])), None if r[1] is None else str(r[1]),
                   None if r[2] is None else str(r[2]), _config_of(str(r[3])), m, sig, str(r[11]))


def _store(tx: Tx, channel_id: bytes, m: Mirror, signature: bytes | None = None) -> None:
    values = (str(m.balance), str(m.total_claimed), str(m.charged), str(m.signed_max),
              str(m.withdraw_amount), m.withdraw_started)
    if signature is None:
        tx.exec(STORE, (*values, _hex(channel_id)))
    else:
        tx.exec(STORE_SIGNED, (*values, _hex(signature), _hex(channel_id)))


class ChannelBook:
    """The book over a ledger backend (``teegate.ledger.db.open_backend``)."""

    def __init__(self, backend: Backend) -> None:
        self.db = backend

        def create(tx: Tx) -> None:
            for stmt in TABLES:
                tx.exec(stmt)

        self.db.run(create)

    # ------------------------------------------------------------------------------ channels

    def register(self, config: ChannelConfig, channel_id: bytes, *, conversation: str | None,
                 agent: str | None, now: float | None = None) -> Channel:
        """Records a channel the gateway accepts (idempotent for the same config)."""
        def op(tx: Tx) -> Channel:
            row = tx.one(BY_ID, (_hex(channel_id),))
            if row is not None:
                found = _row(row)
                if found.config != config or found.conversation != conversation:
                    raise ChainError("channel already registered with another config or "
                                     "conversation")
                return found
            tx.exec("INSERT INTO tc_channels (channel_id, conversation, agent, config, created_at)"
                    " VALUES (?, ?, ?, ?, ?)", (_hex(channel_id), conversation, agent,
                                                _config_json(config), now or time.time()))
            return Channel(channel_id, conversation, agent, config, Mirror(), None, "open")

        return self.db.run(op)

    def get(self, channel_id: bytes) -> Channel | None:
        row = self.db.read(lambda tx: tx.one(BY_ID, (_hex(channel_id),)))
        return _row(row) if row else None

    def by_conversation(self, conversation: str) -> Channel | None:
        row = self.db.read(lambda tx: tx.one(BY_CONVERSATION, (conversation,)))
        return _row(row) if row else None

    def channels(self) -> list[Channel]:
        rows = self.db.read(lambda tx: tx.all(ALL))
        return [_row(r) for r in rows]

    def set_state(self, channel_id: bytes, state: str) -> None:
        self.db.run(lambda tx: tx.exec("UPDATE tc_channels SET state = ? WHERE channel_id = ?",
                                       (state, _hex(channel_id))))

    # ------------------------------------------------------------------------------ charges

    def settle(self, hold: str, voucher: Voucher, cost: int, now: float | None = None,
               attach: Callable[[Tx], None] | None = None) -> Mirror:
        """Charges a call's actual ``cost`` under the voucher that covered its hold, once per
        ``hold`` (a replay returns the mirror unchanged). ChargeError above the voucher.
        ``attach(tx)`` runs in the same transaction (the gateway writes the call's receipt)."""
        def op(tx: Tx) -> Mirror:
            cid = _hex(voucher.channel_id)
            row = tx.one(BY_ID, (cid,))
            if row is None:
                raise ChainError("settle: unknown channel")
            channel = _row(row)
            done = tx.one("SELECT channel_id FROM tc_charges WHERE hold = ?", (hold,))
            if done is not None:
                return channel.mirror
            m = charge(channel.mirror, cost, voucher.max_claimable_amount)
            better = voucher.max_claimable_amount >= channel.mirror.signed_max
            _store(tx, voucher.channel_id, m, voucher.signature if better else None)
            tx.exec("INSERT INTO tc_charges (hold, channel_id, cost, cumulative, ceiling, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (hold, cid, str(cost), str(m.charged), str(voucher.max_claimable_amount),
                     now or time.time()))
            if attach is not None:
                attach(tx)
            return m

        return self.db.run(op)

    # ------------------------------------------------------------------------------- mirror

    def head(self) -> int:
        """The last block mirrored as confirmed (-1 before the first)."""
        row = self.db.read(lambda tx: tx.one("SELECT MAX(number) FROM tc_blocks"))
        return -1 if row is None or row[0] is None else int(row[0])

    def recorded_blocks(self, since: int) -> list[tuple[int, str]]:
        rows = self.db.read(lambda tx: tx.all(
            "SELECT number, hash FROM tc_blocks WHERE number >= ? ORDER BY number", (since,)))
        return [(int(r[0]), str(r[1])) for r in rows]

    def apply_block(self, number: int, block_hash: str, parent_hash: str,
                    logs: Sequence[tuple[str, int, Event]]) -> int:
        """Mirrors one confirmed block's events of known channels, once; ReorgError when it
        does not extend the recorded chain. Returns how many events were new."""
        def op(tx: Tx) -> int:
            prev = tx.one("SELECT hash FROM tc_blocks WHERE number = ?", (number - 1,))
            if prev is not None and str(prev[0]) != parent_hash:
                raise ReorgError(number - 1, str(prev[0]), parent_hash)
            same = tx.one("SELECT hash FROM tc_blocks WHERE number = ?", (number,))
            if same is not None:
                if str(same[0]) != block_hash:
                    raise ReorgError(number, str(same[0]), block_hash)
                return 0
            tx.exec("INSERT INTO tc_blocks (number, hash) VALUES (?, ?)", (number, block_hash))
            new = 0
            for tx_hash, index, event in logs:
                cid = _hex(event.channel_id)
                row = tx.one(BY_ID, (cid,))
                if row is None:
                    continue  # not a channel of this gateway
                if tx.one("SELECT 1 FROM tc_events WHERE tx_hash = ? AND log_index = ?",
                          (tx_hash, index)) is not None:
                    continue
                tx.exec("INSERT INTO tc_events (tx_hash, log_index, block_number, channel_id, "
                        "kind, amount) VALUES (?, ?, ?, ?, ?, ?)",
                        (tx_hash, index, number, cid, event.kind, str(event.amount)))
                _store(tx, event.channel_id, apply(_row(row).mirror, event))
                new += 1
            return new

        return self.db.run(op)

    def events(self, channel_id: bytes) -> list[tuple[str, int, str]]:
        """(kind, amount, tx hash) of a channel's mirrored events, in chain order."""
        rows = self.db.read(lambda tx: tx.all(
            "SELECT kind, amount, tx_hash FROM tc_events WHERE channel_id = ? "
            "ORDER BY block_number, log_index", (_hex(channel_id),)))
        return [(str(r[0]), int(str(r[1])), str(r[2])) for r in rows]

    # ------------------------------------------------------------------------------- claims

    def claimable(self, limit: int = 100) -> list[Channel]:
        """Channels whose charges exceed what the chain shows claimed, most urgent first
        (pending withdrawals), then oldest."""
        chans = [c for c in self.channels() if c.mirror.unclaimed_charges > 0
                 and c.signature is not None]
        chans.sort(key=lambda c: (c.mirror.withdraw_started == 0, c.mirror.withdraw_started))
        return chans[:limit]

    def plan_claim(self, claim_id: str, rows: Sequence[tuple[bytes, int, int]],
                   now: float | None = None) -> None:
        """Records a claim (channel, ceiling, total) before it is sent."""
        body = json.dumps([[_hex(c), str(m), str(t)] for c, m, t in rows])
        self.db.run(lambda tx: tx.exec(
            "INSERT INTO tc_claims (id, rows, state, created_at) VALUES (?, ?, 'planned', ?)",
            (claim_id, body, now or time.time())))

    def claim_sent(self, claim_id: str, tx_hash: str) -> None:
        self.db.run(lambda tx: tx.exec(
            "UPDATE tc_claims SET tx_hash = ?, state = 'sent' WHERE id = ?", (tx_hash, claim_id)))

    def claim_done(self, claim_id: str, state: str) -> None:
        self.db.run(lambda tx: tx.exec("UPDATE tc_claims SET state = ? WHERE id = ?",
                                       (state, claim_id)))

    def claims(self) -> list[tuple[str, str, str | None]]:
        rows = self.db.read(lambda tx: tx.all(
            "SELECT id, state, tx_hash FROM tc_claims ORDER BY created_at, id"))
        return [(str(r[0]), str(r[1]), None if r[2] is None else str(r[2])) for r in rows]

    def claim_tx_of(self, channel_id: bytes) -> str | None:
        """The last claim transaction that lifted this channel's claimed total (its event)."""
        rows = [e for e in self.events(channel_id) if e[0] == "Claimed"]
        return rows[-1][2] if rows else None

    # -------------------------------------------------------------------------------- lease

    def take_lease(self, holder: str, ttl: float, now: float | None = None) -> bool:
        """True when ``holder`` is the one claimer until ``now + ttl`` (taken or renewed)."""
        t = now if now is not None else time.time()

        def op(tx: Tx) -> bool:
            tx.exec("INSERT INTO tc_lease (name, holder, expires_at) VALUES ('claimer', ?, 0) "
                    "ON CONFLICT (name) DO NOTHING", (holder,))
            n = tx.exec("UPDATE tc_lease SET holder = ?, expires_at = ? WHERE name = 'claimer' "
                        "AND (holder = ? OR expires_at < ?)", (holder, t + ttl, holder, t))
            return n == 1

        return self.db.run(op)

    def release_lease(self, holder: str) -> None:
        self.db.run(lambda tx: tx.exec(
            "UPDATE tc_lease SET expires_at = 0 WHERE name = 'claimer' AND holder = ?",
            (holder,)))


def with_mirror(channel: Channel, m: Mirror) -> Channel:
    return replace(channel, mirror=m)

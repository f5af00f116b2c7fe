"""The gateway's I/O with the chain: mirror confirmed channel events into the book, claim
charged vouchers in batches before any payer's withdrawal can finalise, refund on close.

Everything here goes through one ``web3.Web3`` (an HTTP RPC to anvil or a node, or the in-process
eth-tester provider in tests); decisions are the pure rules of ``teegate.chain.rules``.
Transactions are signed locally with the receiver key (the gateway is its channels' receiver and
receiver authorizer) and sent raw, so any RPC works, and the gateway never asks a node to hold
its key.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from prometheus_client import CollectorRegistry, Counter, Gauge
from web3 import Web3
from web3.contract import Contract

from teegate.chain.artifacts import load_artifact
from teegate.chain.book import Channel, ChannelBook, ReorgError
from teegate.chain.config import ChainConfig
from teegate.chain.rules import EVENT_KINDS, Event, at_risk, must_claim_now
from teegate.errors import ChainError

log = logging.getLogger("teegate.chain")

REORG_WINDOW = 64  # recorded blocks re-checked on every sync


class ChainMetrics:
    """Chain gauges, in the gateway's registry (or a registry of their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.at_risk = Gauge("teegate_chain_claims_at_risk",
                             "Channels with unclaimed charges whose payer withdrawal finalises "
                             "within the claim margin", registry=r)
        self.unclaimed = Gauge("teegate_chain_unclaimed_charges",
                               "Charged to agents and not yet claimed on chain (token units)",
                               registry=r)
        self.reorgs = Counter("teegate_chain_reorgs",
                              "Reorgs detected below the confirmation depth", registry=r)
        self.claims = Counter("teegate_chain_claims", "Claim transactions by result",
                              ["result"], registry=r)
        self.head = Gauge("teegate_chain_confirmed_head", "Last block mirrored as confirmed",
                          registry=r)


@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    tx_hash: str
    channels: int
    status: int


class ChainEdge:
    def __init__(self, w3: Web3, config: ChainConfig, book: ChannelBook, *,
                 metrics: ChainMetrics | None = None, start_block: int = 0,
                 holder: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.w3 = w3
        self.cfg = config
        self.book = book
        self.metrics = metrics or ChainMetrics()
        self.start_block = start_block
        self.holder = holder or f"{os.getpid()}-{os.urandom(4).hex()}"
        self.clock = clock
        self.account = Account.from_key(config.receiver_key)
        self.channels: Contract = w3.eth.contract(
            address=Web3.to_checksum_address(config.channels),
            abi=load_artifact("ConversationChannels").abi)
        self.stopped: ReorgError | None = None

    # -------------------------------------------------------------------------------- mirror

    def sync(self) -> int:
        """Mirrors every newly confirmed block; returns the number of new events. Raises
        ReorgError (and stays stopped) when a recorded block changed."""
        if self.stopped is not None:
            raise self.stopped
        head = int(self.w3.eth.block_number)
        confirmed = head - self.cfg.confirmations
        last = self.book.head()
        for number, recorded in self.book.recorded_blocks(max(0, last - REORG_WINDOW)):
            if number > confirmed:
                break
            now = "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()
            if now != recorded:
                self._stop(ReorgError(number, recorded, now))
        first = max(last + 1, self.start_block)
        if confirmed < first:
            return 0
        by_block: dict[int, list[tuple[str, int, Event]]] = {}
        for kind in EVENT_KINDS:
            if kind == "Settled":
                continue
            for entry in self.channels.events[kind]().get_logs(from_block=first,
                                                               to_block=confirmed):
                by_block.setdefault(int(entry.blockNumber), []).append(
                    (_hex(entry.transactionHash), int(entry.logIndex), self._event(kind, entry)))
        new = 0
        for number in sorted({*by_block, confirmed}):
            block = self.w3.eth.get_block(number)
            logs = sorted(by_block.get(number, []), key=lambda x: x[1])
            try:
                new += self.book.apply_block(number, _hex(block["hash"]),
                                             _hex(block["parentHash"]), logs)
            except ReorgError as e:
                self._stop(e)
        self.metrics.head.set(confirmed)
        self._gauges()
        return new

    def _event(self, kind: str, entry: Any) -> Event:
        args = entry.args
        amount = int(args.newTotalClaimed if kind == "Claimed" else args.amount)
        timestamp = 0
        if kind == "WithdrawInitiated":
            timestamp = int(args.finalizeAfter) - self._delay_of(bytes(args.channelId))
        return Event(kind, bytes(args.channelId), amount, timestamp)  # type: ignore[arg-type]

    def _delay_of(self, channel_id: bytes) -> int:
        channel = self.book.get(channel_id)
        return channel.config.withdraw_delay if channel else 0

    def _stop(self, e: ReorgError) -> None:
        self.stopped = e
        self.metrics.reorgs.inc()
        log.error("%s", e)
        raise e

    def _gauges(self) -> None:
        now = self.clock()
        chans = self.book.channels()
        self.metrics.unclaimed.set(sum(c.mirror.unclaimed_charges for c in chans))
        self.metrics.at_risk.set(sum(
            1 for c in chans if at_risk(c.mirror, c.config.withdraw_delay, self.cfg.claim_margin,
                                        now)))

    def urgent(self) -> list[Channel]:
        """Channels to claim now, not at the next interval (a withdrawal is pending)."""
        return [c for c in self.book.claimable() if must_claim_now(c.mirror)]

    # -------------------------------------------------------------------------------- claims

    def claim(self, limit: int = 100) -> ClaimResult | None:
        """Claims every charged channel in one ``claim`` transaction, as the one claimer (a
        lease in the book); None when there is nothing to claim or another process claims."""
        if not self.book.take_lease(self.holder, ttl=max(30.0, 2 * self.cfg.claim_interval)):
            return None
        try:
            chans = self.book.claimable(limit)
            if not chans:
                return None
            rows = [((c.config.as_tuple(), c.mirror.signed_max), c.signature,
                     c.mirror.charged) for c in chans]
            claim_id = os.urandom(16).hex()
            self.book.plan_claim(claim_id, [(c.channel_id, c.mirror.signed_max, c.mirror.charged)
                                            for c in chans], now=self.clock())
            tx_hash, status = self._send(self.channels.functions.claim(rows))
            self.book.claim_sent(claim_id, tx_hash)
            self.book.claim_done(claim_id, "mined" if status == 1 else "reverted")
            self.metrics.claims.labels("mined" if status == 1 else "reverted").inc()
            return ClaimResult(claim_id, tx_hash, len(chans), status)
        finally:
            self.book.release_lease(self.holder)

    def settle(self) -> str:
        """Sweeps everything claimed for the receiver to it (permissionless on chain)."""
        tx_hash, status = self._send(self.channels.functions.settle(self.cfg.receiver,
                                                                    self.cfg.token))
        if status != 1:
            raise ChainError(f"settle transaction {tx_hash} reverted")
        return tx_hash

    def refund_rest(self, channel: Channel) -> str | None:
        """Returns the channel's unclaimed escrow to the payer (cooperative close); claim
        first, or the charges since the last claim go back to the payer too."""
        balance, claimed = self.channels.functions.channels(channel.channel_id).call()
        rest = int(balance) - int(claimed)
        if rest <= 0:
            return None
        tx_hash, status = self._send(self.channels.functions.refund(channel.config.as_tuple(),
                                                                    rest))
        if status != 1:
            raise ChainError(f"refund transaction {tx_hash} reverted")
        return tx_hash

    def _send(self, call: Any) -> tuple[str, int]:
        tx = call.build_transaction({
            "from": self.account.address, "chainId": self.cfg.chain_id,
            "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
            "gasPrice": self.w3.eth.gas_price})
        signed = self.account.sign_transaction(tx)
        sent = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(sent, timeout=60)
        return _hex(bytes(sent)), int(receipt["status"])


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()

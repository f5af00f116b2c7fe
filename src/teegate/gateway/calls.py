"""The record of one chat call, handed to accounting (ledger) and receipts when it ends, and
the interfaces those parts plug in through."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class CallRecord:
    """What happened in one call; filled in as the call proceeds."""

    agent: str
    model: str
    required_trust: str
    started: float
    request_sha256: str
    forwarded_sha256: str | None = None
    conversation: str | None = None
    provider: str | None = None
    platform: str | None = None
    served_trust: str | None = None
    verdict_digest: str | None = None
    stream: bool = False
    status: int = 0
    outcome: str = "pending"  # success, failed, refused, voided, disconnected
    error: str | None = None
    response_sha256: str | None = None
    usage: dict[str, Any] | None = None
    signature: dict[str, str] | None = None
    signature_check: str | None = None  # "verified", "failed: ...", "pending", None
    verified_after_delivery: bool = False  # delivered before its endpoint signature verified
    endpoint: str = "/v1/chat/completions"  # the gateway route the agent called
    translation: str | None = None  # e.g. "responses->chat.completions" (what the agent got)
    attempts: list[str] = field(default_factory=list)
    hold_id: str | None = None
    cost: int | None = None
    transfer_ids: list[str] = field(default_factory=list)
    receipt_id: str | None = None
    attestation: dict[str, Any] | None = None  # Attested.ref() of the verdict relied on
    returned_sha256: str | None = None  # bytes the client received from the gateway
    chat_id: str | None = None  # the provider's completion id
    created: object = None  # the answer's own 'created' time, as sent (replay window)
    prompt_estimate: int = 0  # upper bound on prompt tokens (ledger estimate)
    content_events: int = 0  # stream events with content (an estimate when usage is missing)
    output_cap: int = 0  # output tokens the call may produce (token limit x n), as held
    concluded: bool = False  # settled (or voided) and its receipt written, or given up
    receipt_committed: bool = False  # the receipt is durable: receipt_id may be handed out
    finished: bool = False  # counted in the metrics
    hold_lost: bool = False  # the hold was released (expired) before the call ended
    withheld_sha256: str | None = None  # a plain answer's refusal body if its hold is lost
    voucher: str | None = None  # x-teegate-voucher: the call is paid on a conversation channel
    channel_id: str | None = None  # the channel that paid (teegate.chain.accounting)
    voucher_cumulative: int | None = None  # the voucher's cumulative ceiling


class Accounting(Protocol):
    """The ledger as the gateway uses it (teegate.ledger adapter): place a hold before
    forwarding, settle or void it on every exit path. Blocking methods (run in a thread)."""

    def hold(self, record: CallRecord, worst_case: int) -> str: ...
    def settle(self, record: CallRecord, amount: int,
               attach: Callable[[Any], None] | None = None) -> list[str]: ...
    def void(self, record: CallRecord, attach: Callable[[Any], None] | None = None) -> None: ...
    def renew(self, holds: Sequence[str]) -> int: ...
    def state(self, hold: str) -> str: ...
    def lost(self, holds: Sequence[str]) -> set[str]: ...


class Receipts(Protocol):
    """The receipt log as the gateway uses it. A call's receipt is durable before the
    answer's last byte: written by ``attach`` inside the settlement's transaction when the
    ledger shares the log's database (``shared``), else by ``commit``."""

    shared: bool
    keyset_digest: str  # the ACI workload keyset every receipt names (X-ACI-Keyset-Digest)

    def new_id(self) -> str: ...
    def attach(self, tx: Any, record: CallRecord, receipt_id: str) -> None: ...
    def commit(self, record: CallRecord, receipt_id: str) -> None: ...
    def wake(self) -> None: ...

    @property
    def stuck(self) -> str | None: ...

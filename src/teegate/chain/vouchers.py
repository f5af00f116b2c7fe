"""Checking an agent's voucher before a call is forwarded: pure, in process, no RPC.

The gateway holds, per channel, the confirmed on-chain view (balance, total claimed) and what it
has charged so far. A voucher pays for the next call when it names this channel, its cumulative
ceiling covers everything charged plus this call's hold, it fits the escrow, it is above what
was claimed, and the channel's payer authorizer signed it (ECDSA, low-s). Channels whose
``payerAuthorizer`` is zero would need an ERC-1271 call per voucher; the gateway does not open
those (``payer_authorizer_required``), so verification never leaves the process.

Each refusal is a ``VoucherError`` whose ``check`` is the scheme's error code where it has one
(``invalid_batch_settlement_evm_*``), so a client's x402 tooling reads it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from teegate.chain.scheme import (
    UINT128_MAX,
    ZERO_ADDRESS,
    ChannelConfig,
    Domain,
    bytes32,
    checksum,
    recover,
    voucher_digest,
)
from teegate.errors import ChainError

PREFIX = "invalid_batch_settlement_evm_"
MAX_HEADER = 1024


class VoucherError(ChainError):
    """A voucher does not pay for the call; ``check`` names the rule that failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass(frozen=True)
class Voucher:
    """A signed cumulative ceiling for one channel."""

    channel_id: bytes
    max_claimable_amount: int
    signature: bytes

    @classmethod
    def from_json(cls, data: object) -> Voucher:
        """The scheme's ``voucher`` object: ``{channelId, maxClaimableAmount, signature}``."""
        if not isinstance(data, dict):
            raise VoucherError(PREFIX + "voucher_payload", "the voucher is not a JSON object")
        channel_id, amount, signature = (data.get(k) for k in
                                         ("channelId", "maxClaimableAmount", "signature"))
        if not isinstance(channel_id, str) or not isinstance(signature, str):
            raise VoucherError(PREFIX + "voucher_payload", "channelId or signature missing")
        if not isinstance(amount, str) or not amount.isdigit() or len(amount) > 39:
            raise VoucherError(PREFIX + "voucher_payload",
                                 "maxClaimableAmount is not a decimal string")
        value = int(amount)
        if value > UINT128_MAX:
            raise VoucherError(PREFIX + "voucher_payload", "maxClaimableAmount above uint128")
        try:
            cid = bytes32(channel_id)
            sig = bytes.fromhex(signature[2:]) if signature[:2] == "0x" else None
        except (ChainError, ValueError):
            raise VoucherError(PREFIX + "voucher_payload", "channelId or signature not hex"
                                 ) from None
        if sig is None or len(sig) != 65:
            raise VoucherError(PREFIX + "voucher_payload", "signature is not 65 bytes of hex")
        return cls(cid, value, sig)

    @classmethod
    def from_header(cls, value: str) -> Voucher:
        """``x-teegate-voucher``: base64 (standard or URL-safe) of the voucher's JSON."""
        if len(value) > MAX_HEADER:
            raise VoucherError(PREFIX + "voucher_payload", "voucher header too long")
        try:
            standard = value.replace("-", "+").replace("_", "/")
            raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
            data = json.loads(raw)
        except (binascii.Error, ValueError):
            raise VoucherError(PREFIX + "voucher_payload",
                                 "voucher header is not base64 JSON") from None
        return cls.from_json(data)

    def as_json(self) -> dict[str, str]:
        return {"channelId": "0x" + self.channel_id.hex(),
                "maxClaimableAmount": str(self.max_claimable_amount),
                "signature": "0x" + self.signature.hex()}

    def as_header(self) -> str:
        return base64.b64encode(json.dumps(self.as_json(), separators=(",", ":")).encode()
                                ).decode()


@dataclass(frozen=True)
class ChannelView:
    """What the gateway knows of a channel when a call arrives: confirmed chain state and its
    own cumulative charge (never below what was claimed)."""

    config: ChannelConfig
    channel_id: bytes
    balance: int
    total_claimed: int
    charged: int


def check_voucher(domain: Domain, view: ChannelView, voucher: Voucher, hold: int) -> None:
    """Raises VoucherError unless ``voucher`` covers ``view.charged + hold`` on this channel.
    Cheap rules first; the signature (the costly one, ~0.1 ms) last."""
    if voucher.channel_id != view.channel_id:
        raise VoucherError(PREFIX + "channel_id_mismatch", "the voucher names another channel")
    if view.balance <= 0:
        raise VoucherError(PREFIX + "channel_not_found", "the channel holds no deposit")
    ceiling = voucher.max_claimable_amount
    needed = view.charged + hold
    if ceiling < needed:
        raise VoucherError(
            PREFIX + "cumulative_amount_mismatch",
            f"the voucher's cumulative {ceiling} is below charged {view.charged} + hold {hold}")
    if ceiling > view.balance:
        raise VoucherError(PREFIX + "cumulative_exceeds_balance",
                             f"the voucher's cumulative {ceiling} exceeds the deposit "
                             f"{view.balance}")
    if ceiling <= view.total_claimed:
        raise VoucherError(PREFIX + "cumulative_below_claimed",
                             f"the voucher's cumulative {ceiling} is not above the claimed "
                             f"{view.total_claimed}")
    authorizer = view.config.payer_authorizer
    if authorizer == ZERO_ADDRESS:
        raise VoucherError("payer_authorizer_required",
                             "the channel has no payer authorizer key (ERC-1271-only channels "
                             "are not verified in process)")
    try:
        signer = recover(voucher_digest(domain, view.channel_id, ceiling), voucher.signature)
    except ChainError as e:
        raise VoucherError(PREFIX + "voucher_signature", str(e)) from None
    if signer != authorizer:
        raise VoucherError(PREFIX + "voucher_signature",
                             f"signed by {checksum(signer)}, not the payer authorizer "
                             f"{checksum(authorizer)}")

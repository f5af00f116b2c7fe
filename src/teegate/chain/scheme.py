"""The x402 ``batch-settlement`` EVM scheme's typed data, pure: channel ids, digests, signatures.

Written from ``specs/schemes/batch-settlement/scheme_batch_settlement_evm.md``: EIP-712 domain
``{"x402 Batch Settlement", "1", chainId, channel contract}``; ``channelId`` is the EIP-712 hash of
the ``ChannelConfig`` under that domain; vouchers are ``Voucher(channelId, maxClaimableAmount)``,
cumulative. The digests are computed here by hand (keccak over fixed-width words, the domain
separator computed once per deployment) because the gateway checks a voucher on every call and
eth-account's generic typed-data encoder costs milliseconds. Tests pin each digest to the
contract's own ``get*Digest`` views and to the x402 SDK's encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import coincurve
from eth_utils.crypto import keccak

from teegate.errors import ChainError

DOMAIN_NAME = "x402 Batch Settlement"
DOMAIN_VERSION = "1"
MIN_WITHDRAW_DELAY = 15 * 60
MAX_WITHDRAW_DELAY = 30 * 24 * 3600
UINT128_MAX = (1 << 128) - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ZERO_ADDRESS = b"\0" * 20

EIP712_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
CHANNEL_CONFIG_TYPEHASH = keccak(
    b"ChannelConfig(address payer,address payerAuthorizer,address receiver,"
    b"address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
)
VOUCHER_TYPEHASH = keccak(b"Voucher(bytes32 channelId,uint128 maxClaimableAmount)")
REFUND_TYPEHASH = keccak(b"Refund(bytes32 channelId,uint256 nonce,uint128 amount)")
CLAIM_ENTRY_TYPEHASH = keccak(
    b"ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
)
CLAIM_BATCH_TYPEHASH = keccak(
    b"ClaimBatch(ClaimEntry[] claims)"
    b"ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
)


def address_bytes(value: str | bytes) -> bytes:
    """20 address bytes from ``0x``-hex (any case) or bytes; ChainError otherwise."""
    if isinstance(value, bytes):
        raw = value
    else:
        text = value[2:] if value[:2] in ("0x", "0X") else None
        if text is None or len(text) != 40:
            raise ChainError(f"not a 0x-prefixed 20-byte address: {value[:48]!r}")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ChainError(f"not a hex address: {value[:48]!r}") from None
    if len(raw) != 20:
        raise ChainError("an address is 20 bytes")
    return raw


def bytes32(value: str | bytes) -> bytes:
    """32 bytes from ``0x``-hex or bytes; ChainError otherwise."""
    if isinstance(value, bytes):
        raw = value
    else:
        if value[:2] not in ("0x", "0X") or len(value) != 66:
            raise ChainError(f"not a 0x-prefixed 32-byte value: {value[:72]!r}")
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise ChainError("not a hex bytes32") from None
    if len(raw) != 32:
        raise ChainError("a bytes32 is 32 bytes")
    return raw


def checksum(address: bytes) -> str:
    """EIP-55 form of 20 address bytes."""
    hex_ = address.hex()
    digest = keccak(hex_.encode()).hex()[:40]
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(hex_, digest,
                                                                              strict=True))


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _amount(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT128_MAX:
        raise ChainError(f"{what} is not a uint128")
    return value


@dataclass(frozen=True)
class Domain:
    """One deployment of the channel contract: its chain and address (the EIP-712 domain)."""

    chain_id: int
    contract: bytes

    @classmethod
    def of(cls, chain_id: int, contract: str | bytes) -> Domain:
        return cls(chain_id, address_bytes(contract))

    @cached_property
    def separator(self) -> bytes:
        return keccak(
            EIP712_DOMAIN_TYPEHASH + keccak(DOMAIN_NAME.encode()) + keccak(DOMAIN_VERSION.encode())
            + _word(self.chain_id) + b"\0" * 12 + self.contract
        )

    def digest(self, struct_hash: bytes) -> bytes:
        """``keccak(0x19 0x01 || domainSeparator || structHash)``."""
        return keccak(b"\x19\x01" + self.separator + struct_hash)


@dataclass(frozen=True)
class ChannelConfig:
    """The immutable channel parameters; their EIP-712 hash is the channel id."""

    payer: bytes
    payer_authorizer: bytes
    receiver: bytes
    receiver_authorizer: bytes
    token: bytes
    withdraw_delay: int
    salt: bytes

    @classmethod
    def of(cls, *, payer: str | bytes, payer_authorizer: str | bytes, receiver: str | bytes,
           receiver_authorizer: str | bytes, token: str | bytes, withdraw_delay: int,
           salt: str | bytes) -> ChannelConfig:
        """Parses and checks a config the way the contract's ``deposit`` would accept it."""
        config = cls(address_bytes(payer), address_bytes(payer_authorizer),
                     address_bytes(receiver), address_bytes(receiver_authorizer),
                     address_bytes(token), withdraw_delay, bytes32(salt))
        for name in ("payer", "receiver", "receiver_authorizer", "token"):
            if getattr(config, name) == ZERO_ADDRESS:
                raise ChainError(f"channel config: {name} is the zero address")
        if not MIN_WITHDRAW_DELAY <= withdraw_delay <= MAX_WITHDRAW_DELAY:
            raise ChainError(
                f"channel config: withdraw delay {withdraw_delay}s outside "
                f"{MIN_WITHDRAW_DELAY}..{MAX_WITHDRAW_DELAY}"
            )
        return config

    def struct_hash(self) -> bytes:
        pad = b"\0" * 12
        return keccak(
            CHANNEL_CONFIG_TYPEHASH + pad + self.payer + pad + self.payer_authorizer + pad
            + self.receiver + pad + self.receiver_authorizer + pad + self.token
            + _word(self.withdraw_delay) + self.salt
        )

    def channel_id(self, domain: Domain) -> bytes:
        return domain.digest(self.struct_hash())

    def as_tuple(self) -> tuple[str, str, str, str, str, int, bytes]:
        """The ``ChannelConfig`` tuple for a contract call (checksummed addresses)."""
        return (checksum(self.payer), checksum(self.payer_authorizer), checksum(self.receiver),
                checksum(self.receiver_authorizer), checksum(self.token), self.withdraw_delay,
                self.salt)

    def as_json(self) -> dict[str, str | int]:
        """The scheme's JSON form (``channelConfig`` in x402 payloads)."""
        return {
            "payer": checksum(self.payer), "payerAuthorizer": checksum(self.payer_authorizer),
            "receiver": checksum(self.receiver),
            "receiverAuthorizer": checksum(self.receiver_authorizer),
            "token": checksum(self.token), "withdrawDelay": self.withdraw_delay,
            "salt": "0x" + self.salt.hex(),
        }


def voucher_digest(domain: Domain, channel_id: bytes, max_claimable_amount: int) -> bytes:
    amount = _amount(max_claimable_amount, "maxClaimableAmount")
    return domain.digest(keccak(VOUCHER_TYPEHASH + channel_id + _word(amount)))


def refund_digest(domain: Domain, channel_id: bytes, nonce: int, amount: int) -> bytes:
    return domain.digest(keccak(REFUND_TYPEHASH + channel_id + _word(nonce)
                                + _word(_amount(amount, "refund amount"))))


@dataclass(frozen=True)
class ClaimEntry:
    """One row of a claim batch: the voucher's ceiling and the new cumulative total claimed."""

    channel_id: bytes
    max_claimable_amount: int
    total_claimed: int


def claim_batch_digest(domain: Domain, entries: Sequence[ClaimEntry]) -> bytes:
    """EIP-712 ``ClaimBatch``: an array of structs hashes as keccak of its entries' hashes."""
    rows = b"".join(
        keccak(CLAIM_ENTRY_TYPEHASH + e.channel_id
               + _word(_amount(e.max_claimable_amount, "maxClaimableAmount"))
               + _word(_amount(e.total_claimed, "totalClaimed")))
        for e in entries
    )
    return domain.digest(keccak(CLAIM_BATCH_TYPEHASH + keccak(rows)))


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """A 65-byte ``r || s || v`` (v = 27/28) low-s ECDSA signature of ``digest``."""
    raw = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def recover(digest: bytes, signature: bytes) -> bytes:
    """The signer's 20-byte address. Refuses what the contract refuses: a length other than 65,
    v other than 27/28, r or s zero or out of range, and the high-s twin of a valid signature."""
    if len(signature) != 65:
        raise ChainError("signature: not 65 bytes")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise ChainError("signature: v is not 27 or 28")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        raise ChainError("signature: r or s out of range (high-s refused)")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None)
    except ValueError:
        raise ChainError("signature: no public key recovers from it") from None
    return keccak(public.format(compressed=False)[1:])[12:]


def address_of(private_key: bytes) -> bytes:
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return keccak(public[1:])[12:]

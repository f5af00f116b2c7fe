"""A chain with the conversation-channel contract where the x402 SDK expects it.

The SDK hard-codes the batch-settlement contract and its EIP-3009 deposit collector at their
canonical CREATE2 addresses, so the runtime code is compiled from teegate's sources, made once on a
scratch chain and placed there by genesis state, as on a real chain. Parties are keys the tester
also holds, so they can both sign typed data and send transactions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.contract import Contract

from teegate.chain.scheme import (
    ChannelConfig,
    ClaimEntry,
    Domain,
    claim_batch_digest,
    refund_digest,
    sign_digest,
    voucher_digest,
)
from tests.chain.evm import Chain, sign_typed

CHANNELS = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
ERC3009_COLLECTOR = "0x4020806089470a89826cB9fB1f4059150b550004"
RECEIVE_FIELDS = [
    ("from", "address"), ("to", "address"), ("value", "uint256"),
    ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"),
]
DELAY = 900


def runtime_codes() -> dict[str, bytes]:
    scratch = Chain()
    channels = scratch.deploy("ConversationChannels")
    collector = scratch.deploy("ERC3009DepositCollector", CHANNELS)
    return {CHANNELS: bytes(scratch.w3.eth.get_code(channels.address)),
            ERC3009_COLLECTOR: bytes(scratch.w3.eth.get_code(collector.address))}


@dataclass(frozen=True)
class Party:
    key: LocalAccount

    @property
    def address(self) -> str:
        return str(self.key.address)

    @property
    def private_key(self) -> bytes:
        return bytes(self.key.key)


class World:
    def __init__(self) -> None:
        self.chain = c = Chain(code=runtime_codes())
        self.channels = c.at("ConversationChannels", CHANNELS)
        self.collector = c.at("ERC3009DepositCollector", ERC3009_COLLECTOR)
        self.wallet_collector = c.deploy("WalletDepositCollector", CHANNELS)
        self.token = c.deploy("DevToken", "Dev 6022", "D6022", "2", 6)
        self.domain = Domain.of(c.chain_id, CHANNELS)
        self.payer = self.party()
        self.payer_auth = self.party()
        self.receiver = self.party()
        self.receiver_auth = self.party()
        self.stranger = self.party()

    def party(self, eth: int = 10**18) -> Party:
        key: LocalAccount = Account.from_key(os.urandom(32))
        self.chain.tester.add_account("0x" + bytes(key.key).hex())
        self.chain.fund_eth(key.address, eth)
        return Party(key)

    def mint(self, to: str, amount: int, token: Contract | None = None) -> None:
        self.chain.transact((token or self.token).functions.mint(to, amount),
                            self.chain.accounts[0])

    def balance(self, who: str, token: Contract | None = None) -> int:
        return int((token or self.token).functions.balanceOf(who).call())

    def config(self, *, payer: Party | None = None, payer_auth: Party | str | None = None,
               receiver: Party | None = None, receiver_auth: Party | None = None,
               token: str | None = None, delay: int = DELAY) -> ChannelConfig:
        pa = payer_auth if payer_auth is not None else self.payer_auth
        return ChannelConfig(
            payer=bytes.fromhex((payer or self.payer).address[2:]),
            payer_authorizer=bytes.fromhex((pa if isinstance(pa, str) else pa.address)[2:]),
            receiver=bytes.fromhex((receiver or self.receiver).address[2:]),
            receiver_authorizer=bytes.fromhex((receiver_auth or self.receiver_auth).address[2:]),
            token=bytes.fromhex((token or self.token.address)[2:]),
            withdraw_delay=delay, salt=os.urandom(32))

    def cid(self, config: ChannelConfig) -> bytes:
        return config.channel_id(self.domain)

    def state(self, config: ChannelConfig) -> tuple[int, int]:
        balance, claimed = self.channels.functions.channels(self.cid(config)).call()
        return int(balance), int(claimed)

    def authorization(self, config: ChannelConfig, amount: int, signer: Party | None = None, *,
                      salt: int | None = None, valid_before: int | None = None,
                      token: Contract | None = None, channel_id: bytes | None = None) -> bytes:
        """``collectorData`` for an EIP-3009 deposit signed by ``signer`` (the payer)."""
        salt = salt if salt is not None else int.from_bytes(os.urandom(32), "big")
        before = valid_before if valid_before is not None else self.chain.now() + 3600
        nonce = keccak(abi_encode(["bytes32", "uint256"], [channel_id or self.cid(config), salt]))
        t = token or self.token
        domain = {"name": "Dev 6022", "version": "2", "chainId": self.chain.chain_id,
                  "verifyingContract": t.address}
        message = {"from": config.as_tuple()[0], "to": ERC3009_COLLECTOR,
                   "value": amount, "validAfter": 0, "validBefore": before, "nonce": nonce}
        signature = sign_typed((signer or self.payer).key, domain, "ReceiveWithAuthorization",
                               RECEIVE_FIELDS, message)
        return abi_encode(["uint256", "uint256", "uint256", "bytes"], [0, before, salt, signature])

    def deposit(self, config: ChannelConfig, amount: int, sender: str | None = None) -> Any:
        data = self.authorization(config, amount)
        return self.chain.transact(self.channels.functions.deposit(
            config.as_tuple(), amount, ERC3009_COLLECTOR, data), sender or self.stranger.address)

    def open(self, amount: int = 1000, **kw: Any) -> ChannelConfig:
        config = self.config(**kw)
        self.mint(config.as_tuple()[0], amount)
        self.deposit(config, amount)
        return config

    def voucher(self, config: ChannelConfig, amount: int, signer: Party | None = None) -> bytes:
        key = (signer or self.payer_auth).private_key
        return sign_digest(key, voucher_digest(self.domain, self.cid(config), amount))

    def row(self, config: ChannelConfig, ceiling: int, total: int | None = None,
            signature: bytes | None = None) -> tuple[Any, ...]:
        sig = signature if signature is not None else self.voucher(config, ceiling)
        return ((config.as_tuple(), ceiling), sig, ceiling if total is None else total)

    def claim_signature(self, rows: list[tuple[Any, ...]], signer: Party | None = None) -> bytes:
        entries = [ClaimEntry(config_of(r[0][0]).channel_id(self.domain), r[0][1], r[2])
                   for r in rows]
        return sign_digest((signer or self.receiver_auth).private_key,
                           claim_batch_digest(self.domain, entries))

    def refund_signature(self, config: ChannelConfig, nonce: int, amount: int,
                         signer: Party | None = None) -> bytes:
        return sign_digest((signer or self.receiver_auth).private_key,
                           refund_digest(self.domain, self.cid(config), nonce, amount))


def config_of(t: tuple[Any, ...]) -> ChannelConfig:
    """A ChannelConfig from its contract-call tuple."""
    a = [bytes.fromhex(str(x)[2:]) for x in t[:5]]
    return ChannelConfig(a[0], a[1], a[2], a[3], a[4], int(t[5]), bytes(t[6]))

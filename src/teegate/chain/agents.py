"""Agent NFTs and their ERC-6551 wallets from the command line's side: mint, look, deposit.

The addresses come from a devnet.json (``teegate chain devnet|deploy`` writes it; any chain's
deployment can be described in the same shape). Transactions are signed locally and sent raw,
as the gateway's edge does, so the node never holds a key; every refusal is a typed error
naming what failed (no chain, unknown agent, short of funds, the contract's revert reason).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from teegate.chain.artifacts import load_artifact
from teegate.chain.reverts import revert_error
from teegate.errors import ChainError

ACCOUNT_SALT = b"\0" * 32  # the salt teegate's devnet and AgentRewards use for agent wallets


class ChainUnreachableError(ChainError):
    """No node answers at the RPC URL."""


class UnknownAgentError(ChainError):
    """No agent NFT has this token id."""


class InsufficientFundsError(ChainError):
    """The paying account holds fewer tokens than the operation moves."""


@dataclass(frozen=True)
class Deployment:
    """What a devnet.json says: where the chain and teegate's contracts are."""

    rpc_url: str
    chain_id: int
    token: str
    decimals: int
    identity: str
    account_registry: str
    account_implementation: str
    rewards: str
    channels: str
    wallet_collector: str | None
    dev_owner_key: str | None

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            d: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ChainError(f"no devnet file at {path}: run `teegate chain devnet` or "
                             "`teegate chain deploy`, or pass --devnet FILE") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ChainError(f"{path}: not readable JSON ({type(e).__name__})") from None
        try:
            c = d["contracts"]
            return cls(rpc_url=str(d["rpc_url"]), chain_id=int(d["chain_id"]),
                       token=Web3.to_checksum_address(d["token"]["address"]),
                       decimals=int(d["token"]["decimals"]),
                       identity=Web3.to_checksum_address(c["identity"]),
                       account_registry=Web3.to_checksum_address(c["account_registry"]),
                       account_implementation=Web3.to_checksum_address(
                           c["account_implementation"]),
                       rewards=Web3.to_checksum_address(c["rewards"]),
                       channels=Web3.to_checksum_address(c["channels"]),
                       wallet_collector=(Web3.to_checksum_address(c["wallet_collector"])
                                         if c.get("wallet_collector") else None),
                       dev_owner_key=(d.get("owner") or {}).get("private_key"))
        except (KeyError, TypeError, ValueError) as e:
            raise ChainError(f"{path}: not a devnet.json ({type(e).__name__}: {e})") from None


def key_from_env(var: str, dev_key: str | None, what: str) -> tuple[LocalAccount, str]:
    """The signing key of ``what``: ``$var``, else the devnet's development key (labelled so).
    Never an argument: a key on the command line shows in ``ps``. The key is never echoed."""
    raw = os.environ.get(var)
    label = f"{what} key from ${var}"
    if not raw:
        if not dev_key:
            raise ChainError(f"no {what} key: set {var} (a 32-byte hex private key)")
        raw, label = dev_key, f"DEVELOPMENT {what} key from devnet.json"
    text = raw.strip().removeprefix("0x")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ChainError(f"{var}: not a 32-byte hex private key")
    try:
        return Account.from_key(key), label
    except (ValueError, TypeError):
        raise ChainError(f"{var}: not a valid secp256k1 private key") from None


@dataclass(frozen=True)
class Minted:
    token_id: int
    wallet: str
    owner: str
    txs: tuple[str, ...]


class AgentChain:
    """One node, teegate's contracts on it."""

    def __init__(self, dep: Deployment, *, timeout: float = 10.0) -> None:
        self.dep = dep
        self.w3 = Web3(Web3.HTTPProvider(dep.rpc_url, request_kwargs={"timeout": timeout}))
        try:
            chain_id = int(self.w3.eth.chain_id)
        except Exception as e:  # any transport failure: the chain is not there
            raise ChainUnreachableError(f"no chain answers at {dep.rpc_url}: "
                                   f"{type(e).__name__}") from None
        if chain_id != dep.chain_id:
            raise ChainError(f"{dep.rpc_url} is chain {chain_id}, the devnet file says "
                             f"{dep.chain_id}")
        self.token = self._at("DevToken", dep.token)
        self.identity = self._at("AgentIdentityRegistry", dep.identity)
        self.registry = self._at("ERC6551Registry", dep.account_registry)

    def _at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address),
                                    abi=load_artifact(name).abi)

    @contextlib.contextmanager
    def _rpc(self, what: str, refused: str | None) -> Iterator[None]:
        """web3's failures as the error tree: a revert with its reason, a refusal (``refused``
        says how, else the exception's name), no answer."""
        try:
            yield
        except ContractLogicError as e:
            raise revert_error(what, e) from None
        except Web3Exception as e:
            how = refused if refused is not None else f"{type(e).__name__}: "
            raise ChainError(f"{what}: {how}{e}") from None
        except OSError as e:
            raise ChainUnreachableError(f"{what}: no answer from {self.dep.rpc_url}: "
                                        f"{type(e).__name__}") from None

    def _read(self, what: str, call: Any) -> Any:
        with self._rpc(what, None):
            return call.call()

    def send(self, what: str, call: Any, acct: LocalAccount) -> Any:
        """Estimates (a revert surfaces here with its reason), signs locally, sends, waits."""
        with self._rpc(what, "the node refused: "):
            tx = call.build_transaction({
                "from": acct.address, "chainId": self.dep.chain_id,
                "nonce": self.w3.eth.get_transaction_count(acct.address, "pending"),
                "gasPrice": self.w3.eth.gas_price})
            sent = self.w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(sent, timeout=60)
        if receipt["status"] != 1:
            raise ChainError(f"{what}: transaction 0x{bytes(sent).hex()} reverted")
        return receipt

    def balance(self, address: str) -> int:
        return int(self._read("balanceOf", self.token.functions.balanceOf(
            Web3.to_checksum_address(address))))

    def owner_of(self, token_id: int) -> str:
        """The NFT's owner; UnknownAgentError when no such agent was minted."""
        try:
            return str(self._read("ownerOf", self.identity.functions.ownerOf(token_id)))
        except ChainError as e:
            if getattr(e, "name", "") == "ERC721NonexistentToken":
                raise UnknownAgentError(f"unknown agent #{token_id}: no such NFT in the identity "
                                   f"registry {self.dep.identity}") from None
            raise

    def _account_args(self, token_id: int) -> tuple[str, bytes, int, str, int]:
        return (self.dep.account_implementation, ACCOUNT_SALT, self.dep.chain_id,
                self.dep.identity, token_id)

    def wallet_of(self, token_id: int) -> str:
        """The agent's ERC-6551 account address (computed: the same before and after it is
        created)."""
        return str(self._read("account", self.registry.functions.account(
            *self._account_args(token_id))))

    def deployed(self, address: str) -> bool:
        return len(self.w3.eth.get_code(Web3.to_checksum_address(address))) > 0

    def mint(self, acct: LocalAccount, uri: str, signer: str | None = None) -> Minted:
        """Registers an agent NFT to ``acct``, creates its wallet, optionally authorises a signer
        key (e.g. one held in the agent's TEE) on it."""
        call = (self.identity.functions.register(uri) if uri
                else self.identity.functions.register())
        receipt = self.send("register", call, acct)
        events = self.identity.events.Registered().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise ChainError("register: no Registered event in the receipt")
        token_id = int(events[0].args.agentId)
        txs = ["0x" + bytes(receipt["transactionHash"]).hex()]
        receipt = self.send("createAccount", self.registry.functions.createAccount(
            *self._account_args(token_id)), acct)
        txs.append("0x" + bytes(receipt["transactionHash"]).hex())
        wallet = self.wallet_of(token_id)
        if signer:
            account = self._at("AgentAccount", wallet)
            receipt = self.send("setSigner", account.functions.setSigner(
                Web3.to_checksum_address(signer), True), acct)
            txs.append("0x" + bytes(receipt["transactionHash"]).hex())
        return Minted(token_id, wallet, acct.address, tuple(txs))

    def deposit(self, acct: LocalAccount, token_id: int, amount: int) -> str:
        """The key's holder transfers ``amount`` tokens into the agent's wallet."""
        if amount <= 0:
            raise ChainError("deposit: the amount must be > 0")
        self.owner_of(token_id)
        wallet = self.wallet_of(token_id)
        have = self.balance(acct.address)
        if have < amount:
            raise InsufficientFundsError(f"insufficient funds: {acct.address} holds {have} "
                                    f"smallest units, the deposit needs {amount}")
        receipt = self.send("transfer", self.token.functions.transfer(wallet, amount), acct)
        return "0x" + bytes(receipt["transactionHash"]).hex()

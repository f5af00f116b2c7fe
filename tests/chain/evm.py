"""An in-process EVM (eth-tester on py-evm) with teegate's committed artifacts, for contract tests.

Reverts are decoded to the custom error's name and arguments from the contract's ABI, so a test
names the exact check that refused, not just "it reverted".
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import Wei

from teegate.chain import load_artifact

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Reverted:
    """A revert decoded against an ABI: the custom error's name and its arguments."""

    name: str
    args: tuple[Any, ...]


class Chain:
    """One chain per test module: deploy once, then transact, sign, move time."""

    def __init__(self, code: dict[str, bytes] | None = None) -> None:
        """``code``: runtime code placed at fixed addresses in the genesis state (contracts that
        must sit where a client hard-codes them, as on a real chain)."""
        if code:
            state = dict(PyEVMBackend.generate_genesis_state(num_accounts=10))
            for address, runtime in code.items():
                state[bytes.fromhex(address[2:])] = {
                    "balance": 0, "nonce": 1, "code": runtime, "storage": {}}
            self.tester = EthereumTester(PyEVMBackend(genesis_state=state))
        else:
            self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self.accounts: list[str] = [str(a) for a in self.w3.eth.accounts][:10]
        self.chain_id: int = self.w3.eth.chain_id

    def deploy(self, name: str, *args: Any, sender: str | None = None) -> Contract:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx = factory.constructor(*args).transact({"from": sender or self.accounts[0]})
        receipt = self.w3.eth.get_transaction_receipt(tx)
        assert receipt["status"] == 1
        address = receipt["contractAddress"]
        assert address is not None
        return self.at(name, address)

    def at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address),
                                    abi=load_artifact(name).abi)

    def transact(self, call: Any, sender: str, value: int = 0) -> Any:
        """Sends ``call`` from ``sender``; returns the mined receipt (asserting success)."""
        tx = call.transact({"from": sender, "value": value})
        receipt = self.w3.eth.get_transaction_receipt(tx)
        assert receipt["status"] == 1
        return receipt

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel(self, seconds: int) -> None:
        """Moves the next block's timestamp ``seconds`` past the latest one."""
        self.tester.time_travel(self.now() + seconds)

    def fund_eth(self, address: str, wei: int = 10**18) -> None:
        self.w3.eth.send_transaction({"from": self.accounts[0], "to": address, "value": Wei(wei)})


def new_account() -> LocalAccount:
    account: LocalAccount = Account.from_key(os.urandom(32))
    return account


def revert_of(contract: Contract, call: Any, sender: str, value: int = 0,
              also: tuple[Contract, ...] = ()) -> Reverted:
    """Sends ``call`` from ``sender`` expecting a revert; decodes it with the errors of
    ``contract`` (and of ``also``, for errors raised by contracts it calls)."""
    try:
        call.transact({"from": sender, "value": value})
    except TransactionFailed as e:
        data = _revert_data(str(e.args[0]))
    else:
        raise AssertionError("the call did not revert")
    abi = [i for c in (contract, *also) for i in cast(list[dict[str, Any]], c.abi)]
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] if i["type"] != "tuple" else _tuple_type(i) for i in item["inputs"]]
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        if data[:4] == selector:
            args = contract.w3.codec.decode(types, data[4:])
            return Reverted(item["name"], tuple(
                Web3.to_checksum_address(a) if t == "address" else a for t, a in zip(types, args,
                                                                                     strict=True)))
    raise AssertionError(f"revert data {data.hex()} matches no error of the ABI")


def _tuple_type(item: dict[str, Any]) -> str:
    return "(" + ",".join(c["type"] for c in item["components"]) + ")"


def _revert_data(message: str) -> bytes:
    """eth-tester puts py-evm's Revert(bytes) into the message as a Python bytes literal."""
    prefix = "execution reverted: "
    if not message.startswith(prefix):
        raise AssertionError(f"not a revert: {message}")
    literal = message[len(prefix):]
    if not literal.startswith(("b'", 'b"')):
        raise AssertionError(f"a string revert, not a custom error: {literal}")
    value = ast.literal_eval(literal)
    assert isinstance(value, bytes)
    return value


def split_signature(signature: bytes) -> tuple[int, bytes, bytes]:
    """(v, r, s) of a 65-byte r || s || v signature."""
    assert len(signature) == 65
    return signature[64], signature[:32], signature[32:64]


def high_s(signature: bytes) -> bytes:
    """The other valid ECDSA signature of the same digest: s' = n - s, v flipped (malleability)."""
    v, r, s = split_signature(signature)
    s2 = SECP256K1_N - int.from_bytes(s, "big")
    return r + s2.to_bytes(32, "big") + bytes([55 - v if v in (27, 28) else v ^ 1])


def sign_typed(
    key: LocalAccount,
    domain: dict[str, Any],
    primary: str,
    fields: list[tuple[str, str]],
    message: dict[str, Any],
) -> bytes:
    """The 65-byte EIP-712 signature of ``message`` (one struct type, no nesting)."""
    signed = key.sign_typed_data(
        domain_data=domain,
        message_types={primary: [{"name": n, "type": t} for n, t in fields]},
        message_data=message,
    )
    return bytes(signed.signature)


def events(contract: Contract, name: str, receipt: Any) -> list[Any]:
    """``contract``'s events called ``name`` in ``receipt`` (other contracts' logs left out)."""
    decoded = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [e for e in decoded if e.address == contract.address]

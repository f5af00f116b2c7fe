"""A revert's reason, named: custom errors decoded against every committed artifact's ABI, so a
refusal reads ``ERC20InsufficientBalance(sender=0x.., balance=5, needed=9)`` and not hex."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from teegate.chain.artifacts import load_artifact
from teegate.errors import ChainError


class RevertError(ChainError):
    """A transaction or call the chain refused; ``name`` is the contract's error (or "revert")."""

    def __init__(self, what: str, name: str, reason: str) -> None:
        super().__init__(f"{what} reverted: {reason}")
        self.name = name
        self.reason = reason


def _type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + str(item["type"])[5:]
    return str(item["type"])


@lru_cache(maxsize=1)
def _errors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    found: dict[bytes, tuple[str, list[str], list[str]]] = {}
    folder = resources.files("teegate.chain").joinpath("artifacts")
    for entry in folder.iterdir():
        if not entry.name.endswith(".json"):
            continue
        for item in load_artifact(entry.name[:-5]).abi:
            if item.get("type") != "error":
                continue
            types = [_type(i) for i in item["inputs"]]
            sel = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            found[sel] = (str(item["name"]), types, [str(i.get("name", "")) for i in
                                                     item["inputs"]])
    return found


def _show(kind: str, value: Any) -> str:
    if kind == "address":
        return str(to_checksum_address(value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def describe(data: bytes) -> tuple[str, str]:
    """``(error name, readable reason)`` of revert data."""
    if len(data) < 4:
        return "revert", "reverted without a reason"
    if data[:4] == bytes.fromhex("08c379a0"):  # Error(string)
        try:
            return "Error", str(abi_decode(["string"], data[4:])[0])
        except Exception:
            return "Error", "malformed Error(string)"
    if data[:4] == bytes.fromhex("4e487b71"):  # Panic(uint256)
        try:
            return "Panic", f"panic 0x{int(abi_decode(['uint256'], data[4:])[0]):02x}"
        except Exception:
            return "Panic", "malformed Panic(uint256)"
    known = _errors().get(data[:4])
    if known is None:
        return "unknown", f"unknown error 0x{data[:4].hex()}"
    name, types, names = known
    try:
        values = abi_decode(types, data[4:])
    except Exception:
        return name, f"{name}(malformed arguments)"
    shown = [_show(t, v) for t, v in zip(types, values, strict=True)]
    args = ", ".join(f"{n}={v}" if n else v for n, v in zip(names, shown, strict=True))
    return name, f"{name}({args})"


def revert_error(what: str, e: Exception) -> RevertError:
    """The typed error of web3's ContractLogicError (its ``data`` holds the revert bytes)."""
    raw: Any = getattr(e, "data", None)
    if isinstance(raw, dict):
        raw = raw.get("data")
    data = b""
    if isinstance(raw, str) and raw.startswith("0x"):
        try:
            data = bytes.fromhex(raw[2:])
        except ValueError:
            data = b""
    if not data:
        msg = str(getattr(e, "message", None) or e)
        return RevertError(what, "revert", msg.removeprefix("execution reverted: ") or
                           "reverted without a reason")
    name, reason = describe(data)
    return RevertError(what, name, reason)

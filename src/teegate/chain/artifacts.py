"""Compiled contracts as committed by ``teegate.chain.build``: ABI and bytecode, read-only.

An artifact is checked on the way in (every field present and of its type), so code past here
never sees a half-written file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from teegate.errors import ChainError


@dataclass(frozen=True)
class Artifact:
    """One contract: its ABI, creation bytecode and runtime bytecode (hex, 0x-prefixed)."""

    name: str
    source: str
    compiler: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str

    @classmethod
    def from_json(cls, data: object) -> Artifact:
        if not isinstance(data, dict):
            raise ChainError("artifact: not a JSON object")
        fields: dict[str, Any] = {}
        for key, attr, kind in (
            ("contractName", "name", str),
            ("sourceName", "source", str),
            ("compiler", "compiler", str),
            ("abi", "abi", list),
            ("bytecode", "bytecode", str),
            ("deployedBytecode", "deployed_bytecode", str),
        ):
            value = data.get(key)
            if not isinstance(value, kind):
                raise ChainError(f"artifact: {key} missing or not a {kind.__name__}")
            fields[attr] = value
        for key in ("bytecode", "deployed_bytecode"):
            code = fields[key]
            if not code.startswith("0x") or len(code) < 4 or len(code) % 2:
                raise ChainError(f"artifact {fields['name']}: {key} is not 0x-prefixed hex")
            try:
                bytes.fromhex(code[2:])
            except ValueError:
                raise ChainError(f"artifact {fields['name']}: {key} is not hex") from None
        return cls(**fields)


def load_artifact(name: str) -> Artifact:
    """The committed artifact of contract ``name`` (ChainError when there is none)."""
    if not name.isidentifier():
        raise ChainError(f"artifact: {name!r} is not a contract name")
    path = resources.files("teegate.chain").joinpath("artifacts", f"{name}.json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ChainError(f"artifact: no compiled contract named {name}") from None
    artifact = Artifact.from_json(json.loads(text))
    if artifact.name != name:
        raise ChainError(f"artifact {name}.json holds contract {artifact.name}")
    return artifact

"""The committed artifacts are exactly what the pinned compiler makes of contracts/src."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teegate.chain import build, load_artifact
from teegate.errors import ChainError


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return build.compile_all()


def test_committed_artifacts_match_a_fresh_compile(fresh: dict[str, str]) -> None:
    assert fresh, "the sources compiled to no contract"
    assert build.differences(fresh) == [], "run: .venv/bin/python -m teegate.chain.build"


def test_a_stale_or_left_over_artifact_is_named(fresh: dict[str, str], tmp_path: Path) -> None:
    for name, text in fresh.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert build.differences(fresh, tmp_path) == []
    name = sorted(fresh)[0]
    data = json.loads(fresh[name])
    data["bytecode"] = data["bytecode"][:-2] + ("00" if data["bytecode"][-2:] != "00" else "01")
    (tmp_path / name).write_text(build.render(data), encoding="utf-8")
    (tmp_path / "Gone.json").write_text("{}", encoding="utf-8")
    assert build.differences(fresh, tmp_path) == sorted([name, "Gone.json"])


def test_check_mode_exits_zero_on_the_committed_tree(
    fresh: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "compile_all", lambda: fresh)
    assert build.main(["--check"]) == 0
    changed = {**fresh, "Extra.json": "{}\n"}
    monkeypatch.setattr(build, "compile_all", lambda: changed)
    assert build.main(["--check"]) == 1


def test_compiler_errors_and_own_warnings_fail_the_build() -> None:
    root = build.contracts_dir()
    broken = {"Broken.sol": "pragma solidity 0.8.37; contract B { function f() public { x; } }"}
    output = build.run_solc(build.standard_input(broken), root)
    with pytest.raises(ChainError, match="Undeclared identifier"):
        build.artifacts_from_output(output, ["Broken.sol"])
    warned = {"Warned.sol": "// SPDX-License-Identifier: Apache-2.0\npragma solidity 0.8.37;\n"
              "contract Warned { function f() public view returns (uint) { return 1; } }"}
    output = build.run_solc(build.standard_input(warned), root)
    with pytest.raises(ChainError, match="can be restricted to pure"):
        build.artifacts_from_output(output, ["Warned.sol"])


def test_artifacts_load_and_refuse_malformed_ones() -> None:
    token = load_artifact("DevToken")
    # the CBOR metadata at the end names the pinned compiler: solc 0.8.37 (0x00 0x08 0x25)
    assert token.deployed_bytecode.endswith("64736f6c6343000825" + "0033")
    assert any(item.get("name") == "transferWithAuthorization" for item in token.abi)
    with pytest.raises(ChainError, match="no compiled contract"):
        load_artifact("NoSuchContract")
    with pytest.raises(ChainError, match="not a contract name"):
        load_artifact("../DevToken")
    good = json.loads(build.render({
        "contractName": "X", "sourceName": "X.sol", "compiler": "c", "abi": [],
        "bytecode": "0x6000", "deployedBytecode": "0x00",
    }))
    assert load_artifact.__module__ == "teegate.chain.artifacts"
    from teegate.chain.artifacts import Artifact
    assert Artifact.from_json(good).bytecode == "0x6000"
    with pytest.raises(ChainError, match="not hex"):
        Artifact.from_json({**good, "bytecode": "0xzz"})
    with pytest.raises(ChainError, match="abi missing"):
        Artifact.from_json({**good, "abi": None})

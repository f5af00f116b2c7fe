"""Compiles ``contracts/src`` with the pinned solc-js and writes ``teegate/chain/artifacts``.

Run from a source checkout after ``scripts/setup`` (which installs ``contracts/node_modules`` from
the lockfile): ``python -m teegate.chain.build`` writes the artifacts, ``--check`` only compares
them and exits 1 when a committed artifact differs from what the sources compile to. The compiler
runs in node (solc-js, WebAssembly) through ``contracts/solc-driver.cjs`` with standard-JSON in and
out; this module builds the input and turns the output into artifacts, both pure.

Any compiler warning in teegate's own sources fails the build: a warning in contract code is a
question nobody answered.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from teegate.errors import ChainError

#: The compiler the lockfile pins; a different one would change every bytecode.
SOLC_VERSION = "0.8.37+commit.f401782d.Emscripten.clang"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


def contracts_dir() -> Path:
    """``contracts/`` of the source checkout this module was loaded from."""
    root = Path(__file__).resolve().parents[3] / "contracts"
    if not (root / "solc-driver.cjs").is_file():
        raise ChainError(f"build: {root} is not teegate's contracts folder (a source checkout)")
    return root


def read_sources(root: Path) -> dict[str, str]:
    """Every ``*.sol`` under ``root/src``, by source unit name (its path below ``src``)."""
    src = root / "src"
    sources = {
        path.relative_to(src).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(src.rglob("*.sol"))
    }
    if not sources:
        raise ChainError(f"build: no Solidity sources under {src}")
    return sources


def standard_input(sources: Mapping[str, str]) -> dict[str, Any]:
    """solc's standard-JSON input for ``sources`` with teegate's fixed settings."""
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sorted(sources.items())},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object",
                                            "evm.deployedBytecode.object"]}},
        },
    }


def run_solc(compiler_input: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Runs the pinned solc-js on ``compiler_input``; returns solc's standard-JSON output."""
    node = shutil.which("node")
    if node is None:
        raise ChainError("build: node is not installed (solc-js runs in node; see scripts/setup)")
    if not (root / "node_modules" / "solc").is_dir():
        raise ChainError(f"build: {root}/node_modules/solc is missing: run scripts/setup")
    done = subprocess.run(
        [node, str(root / "solc-driver.cjs")],
        input=json.dumps(compiler_input).encode(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise ChainError(f"build: solc-js failed: {done.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(done.stdout)
    if result.get("version") != SOLC_VERSION:
        raise ChainError(
            f"build: solc-js is {result.get('version')}, the build pins {SOLC_VERSION}"
        )
    output = result.get("output")
    if not isinstance(output, dict):
        raise ChainError("build: solc-js printed no standard-JSON output")
    return output


def artifacts_from_output(
    output: Mapping[str, Any], own: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """One artifact per deployable contract defined in ``own`` sources, by contract name.

    Errors anywhere, or warnings in ``own`` sources, raise ChainError with solc's messages.
    """
    problems = [
        e.get("formattedMessage", e.get("message", "?"))
        for e in output.get("errors", [])
        if e.get("severity") == "error"
        or (e.get("severity") == "warning"
            and e.get("sourceLocation", {}).get("file") in own)
    ]
    if problems:
        raise ChainError("build: solc refused the sources:\n" + "\n".join(problems))
    artifacts: dict[str, dict[str, Any]] = {}
    for source in sorted(own):
        for name, contract in sorted(output.get("contracts", {}).get(source, {}).items()):
            bytecode = contract["evm"]["bytecode"]["object"]
            if not bytecode:
                continue  # interfaces and abstract contracts
            if name in artifacts:
                raise ChainError(f"build: contract {name} is defined twice")
            artifacts[name] = {
                "contractName": name,
                "sourceName": source,
                "compiler": f"solc-js {SOLC_VERSION} evm {EVM_VERSION} optimizer {OPTIMIZER_RUNS}",
                "abi": contract["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
            }
    return artifacts


def render(artifact: Mapping[str, Any]) -> str:
    """The committed text of one artifact: stable key order, one trailing newline."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def compile_all(root: Path | None = None) -> dict[str, str]:
    """Artifact file name -> text, compiled now from ``contracts/src``."""
    root = root or contracts_dir()
    sources = read_sources(root)
    output = run_solc(standard_input(sources), root)
    artifacts = artifacts_from_output(output, list(sources))
    return {f"{name}.json": render(artifact) for name, artifact in artifacts.items()}


def differences(fresh: Mapping[str, str], directory: Path = ARTIFACTS_DIR) -> list[str]:
    """Names of artifact files that are missing, stale or left over in ``directory``."""
    committed = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.json")}
    return sorted(
        name for name in set(fresh) | set(committed) if fresh.get(name) != committed.get(name)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teegate.chain.build", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed artifacts, write nothing")
    args = parser.parse_args(argv)
    try:
        fresh = compile_all()
    except ChainError as e:
        print(e, file=sys.stderr)
        return 2
    stale = differences(fresh)
    if args.check:
        for name in stale:
            print(f"differs from the sources: {name}", file=sys.stderr)
        return 1 if stale else 0
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    for name in stale:
        path = ARTIFACTS_DIR / name
        if name in fresh:
            path.write_text(fresh[name], encoding="utf-8")
        else:
            path.unlink()
        print(f"wrote {path}" if name in fresh else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

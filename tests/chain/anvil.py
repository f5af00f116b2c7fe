"""A real anvil (the pinned npm one) for the tests that need a node over HTTP, and teegate's
contracts deployed on it by `teegate chain deploy`. Import the fixtures into a test module."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from teegate.chain.devnet import anvil_binary, start_anvil
from teegate.cli import app
from teegate.errors import ChainError

try:
    anvil_binary()
    HAVE_ANVIL = True
except ChainError:
    HAVE_ANVIL = False

needs_anvil = pytest.mark.skipif(not HAVE_ANVIL, reason="anvil not installed (scripts/setup)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def anvil() -> Iterator[str]:
    port = free_port()
    proc: subprocess.Popen[bytes] = start_anvil(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def deployed(anvil: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(TEEGATE_HOME, devnet.json's content) after `teegate chain deploy` on the anvil."""
    home = tmp_path_factory.mktemp("home")
    res = CliRunner().invoke(app, ["chain", "deploy", "--rpc-url", anvil],
                             env={"TEEGATE_HOME": str(home)})
    assert res.exit_code == 0, res.output
    return home, json.loads((home / "devnet.json").read_text())

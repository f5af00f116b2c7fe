"""Issue 11, point 14: no secret on a command line (every user of the host reads it in ps).
``teegate node --engine-api-key`` and ``teegate audit --token`` are refused naming the
environment variable; the variable works, and the secret is not in the process's argv."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from teegate.cli import app
from tests.gateway.loopback import Server, serving

EXE = Path(sys.executable).parent / "teegate"
SECRET = "engine-secret-" + "5f" * 16
runner = CliRunner()


def test_engine_api_key_flag_is_refused(tmp_path: Path) -> None:
    """A real process (without the refusal it would start serving: the timeout fails it)."""
    r = subprocess.run(
        [str(EXE), "node", "--engine", "http://127.0.0.1:9", "--tee", "dev-tdx",
         "--port", str(_port()), "--pki-dir", str(tmp_path / "pki"), "--engine-api-key",
         SECRET], env={**os.environ, "TEEGATE_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "--engine-api-key is refused" in out
    assert "TEEGATE_ENGINE_API_KEY" in out
    assert "Traceback" not in out


def test_audit_token_flag_is_refused() -> None:
    r = runner.invoke(app, ["audit", "--log", "http://127.0.0.1:9", "--log-key", "x",
                            "--token", SECRET])
    assert r.exit_code == 2, r.output
    assert "--token is refused" in r.output
    assert "TEEGATE_LOG_TOKEN" in r.output


def test_no_secret_option_is_listed_in_help() -> None:
    for cmd in (["node", "--help"], ["audit", "--help"]):
        r = runner.invoke(app, cmd)
        assert "--engine-api-key" not in r.output
        assert "--token" not in r.output


@pytest.fixture
def engine() -> Iterator[tuple[Server, list[str]]]:
    """An OpenAI-shaped engine that records the Authorization header of each call."""
    seen: list[str] = []

    async def chat(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))
        return JSONResponse({"id": "c1", "object": "chat.completion", "created": 1,
                             "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hi"}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                       "total_tokens": 2}})

    async def models(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model"}]})

    with serving(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                   Route("/v1/models", models)])) as s:
        yield s, seen


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_environment_variable_reaches_the_engine(
        engine: tuple[Server, list[str]], tmp_path: Path) -> None:
    server, seen = engine
    port = _port()
    log = tmp_path / "node.log"
    proc = subprocess.Popen(
        [str(EXE), "node", "--engine", server.url, "--tee", "dev-tdx", "--port", str(port),
         "--pki-dir", str(tmp_path / "pki")],
        env={**os.environ, "TEEGATE_ENGINE_API_KEY": SECRET, "TEEGATE_HOME": str(tmp_path)},
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(url + "/v1/attestation/report", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "m", "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        assert f"Bearer {SECRET}" in seen
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in argv  # what ps shows
        assert SECRET not in log.read_text()
        # the development PKI's folder is private
        assert (tmp_path / "pki").stat().st_mode & 0o077 == 0
    finally:
        proc.terminate()
        proc.wait(15)

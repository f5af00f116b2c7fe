"""Issue 11: connections time out and are capped (``teegate.serving``), over real sockets on
loopback: an idle client, one that sends its head or its body a byte at a time, and an idle
keep-alive connection are closed; at the cap the longest-idle connection makes room for a
newcomer, and when every connection is busy the newcomer gets 503."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from teegate.serving import LimitedConfig, ServerLimits

FAST = ServerLimits(header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=0.5,
                    max_connections=1024)
seen: list[str] = []  # what the app observed, in order


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then answers its length."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen.append("disconnect")
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serve(limits: ServerLimits | None) -> Iterator[int]:
    """``echo`` under uvicorn on 127.0.0.1 with ``limits`` (None: plain uvicorn)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    kw: dict[str, Any] = {"log_level": "warning", "lifespan": "off", "access_log": False,
                          "timeout_graceful_shutdown": 1}
    config = (LimitedConfig(echo, limits=limits, **kw) if limits is not None
              else uvicorn.Config(echo, http="httptools", **kw))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    return s


def _closed_within(s: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """(seconds until the server closed ``s``, what it sent first), sending ``trickle`` a byte
    every 50 ms meanwhile; fails when the connection is still open after ``seconds``."""
    t0 = time.monotonic()
    got = b""
    s.settimeout(0.05)
    i = 0
    while time.monotonic() - t0 < seconds:
        if i < len(trickle):
            try:
                s.sendall(trickle[i:i + 1])
            except OSError:
                break
            i += 1
        try:
            data = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    else:
        pytest.fail(f"the connection is still open after {seconds} s")
    return time.monotonic() - t0, got


@pytest.mark.parametrize("trickle", [
    b"",  # connects and sends nothing
    b"POST / HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 500,  # a head that never ends
])
def test_a_client_whose_head_does_not_arrive_is_closed(trickle: bytes) -> None:
    with serve(FAST) as port, _connect(port) as s:
        took, got = _closed_within(s, 5.0, trickle)
    assert 0.3 < took < 3.0
    assert got.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in got


def test_a_body_that_trickles_is_cut_and_the_app_sees_a_disconnect() -> None:
    seen.clear()
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"
    with serve(FAST) as port, _connect(port) as s:
        s.sendall(head)
        took, got = _closed_within(s, 5.0, b"x" * 1000)
    assert 0.3 < took < 3.0
    assert got.startswith(b"HTTP/1.1 408 ")
    deadline = time.monotonic() + 2
    while "disconnect" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["disconnect"]


def test_an_idle_keep_alive_connection_is_closed() -> None:
    with serve(FAST) as port, _connect(port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        time.sleep(0.1)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert first.endswith(b"\r\n\r\n3")
        took, got = _closed_within(s, 5.0)
    assert took < 3.0
    assert got == b""  # between requests: closed without a word


def test_without_the_limits_such_clients_are_held() -> None:
    """The bug: plain uvicorn keeps a silent connection open indefinitely."""
    with serve(None) as port, _connect(port) as s:
        s.settimeout(2.0)
        with pytest.raises(TimeoutError):
            s.recv(1)


def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    limits = ServerLimits(header_timeout=30, body_timeout=30, keep_alive_timeout=30,
                          max_connections=4)
    with serve(limits) as port:
        idle = []
        for _ in range(4):
            idle.append(_connect(port))
            time.sleep(0.05)  # distinct ages: idle[0] is the longest idle
        r = httpx.post(f"http://127.0.0.1:{port}/", content=b"hello", timeout=5)
        assert r.status_code == 200
        assert r.text == "5"
        idle[0].settimeout(2)
        assert idle[0].recv(1) == b""  # evicted, without a response
        idle[1].settimeout(0.2)
        with pytest.raises(TimeoutError):
            idle[1].recv(1)  # the others are still open
        for s in idle:
            s.close()


def test_when_every_connection_is_busy_a_newcomer_gets_503() -> None:
    limits = ServerLimits(header_timeout=30, body_timeout=30, keep_alive_timeout=30,
                          max_connections=3)
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc"
    with serve(limits) as port:
        busy = [_connect(port) for _ in range(3)]
        for s in busy:
            s.sendall(head)  # a request in progress: its body is still coming
        time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/", content=b"x", timeout=5)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "too_many_connections"
        for s in busy:  # none was cut for the newcomer: each completes its request
            s.sendall(b"defghij")
            s.settimeout(5)
            assert s.recv(65536).endswith(b"\r\n\r\n10")
            s.close()


def test_limits_are_validated() -> None:
    for bad in ({"header_timeout": 0}, {"body_timeout": -1}, {"keep_alive_timeout": float("inf")},
                {"max_connections": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerLimits(**bad)


# ---------------------------------------------------------------- the real commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


@contextmanager
def _process(args: list[str], port: int, tmp_path: Path, env: dict[str, str]
             ) -> Iterator[None]:
    log = tmp_path / f"server-{port}.log"
    exe = Path(sys.executable).parent / "teegate"
    proc = subprocess.Popen([str(exe), *args], env={**os.environ, **env},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _gateway_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "teegate.toml"
    path.write_text(f"""
[gateway]
listen = "127.0.0.1:{port}"
database_url = "sqlite:///{tmp_path / 'gw.db'}"
data_dir = "{tmp_path / 'data'}"
header_timeout_seconds = 0.5
body_timeout_seconds = 0.5
keep_alive_seconds = 0.5
max_connections = 64
receipts = false
ledger = false

[[providers]]
id = "up"
platform = "ollama"
base_url = "http://127.0.0.1:9/v1"
models = ["m"]
""")
    return path


@pytest.mark.parametrize("which", ["gateway", "node"])
def test_the_gateway_and_the_node_run_with_the_limits(which: str, tmp_path: Path) -> None:
    port = _free_port()
    home = {"TEEGATE_HOME": str(tmp_path / "home")}
    if which == "gateway":
        args = ["serve", "--config", str(_gateway_config(tmp_path, port))]
    else:
        args = ["node", "--tee", "dev-tdx", "--pki-dir", str(tmp_path / "pki"), "--port",
                str(port), "--header-timeout", "0.5", "--body-timeout", "0.5"]
    with _process(args, port, tmp_path, home):
        with _connect(port) as idle:
            took, got = _closed_within(idle, 10.0)
        assert took < 5.0
        assert got.startswith(b"HTTP/1.1 408 ")
        with _connect(port) as slow:
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                         b"content-length: 100000\r\n\r\n{")
            took, _ = _closed_within(slow, 10.0, b" " * 200)
        assert took < 5.0

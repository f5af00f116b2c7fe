"""The hot-path HTTP/1.1 client against a raw asyncio server with awkward framings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from teegate.errors import UpstreamError
from teegate.providers.http11 import Http11Pool

Handler = Callable[[bytes], bytes]


async def _server(answers: list[tuple[bytes, bool]]) -> tuple[asyncio.Server, str, list[bytes]]:
    """Serves ``answers`` in order, one per request; ``True`` closes after answering."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                seen.append(head + await reader.readexactly(n))
                answer, close = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1", seen


async def _read(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def test_framings_and_stale_connection_retry() -> None:
    answers = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", True),  # then closes
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream"
         b"\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil close", True),
    ]
    server, url, seen = await _server(answers)
    pool = Http11Pool(url, headers={"authorization": "Bearer k"})
    try:
        r = await pool.post("/chat/completions", b'{"a":1}')
        assert (r.status_code, await r.aread()) == (200, b"hello")
        await asyncio.sleep(0.05)  # the server closed that kept-alive connection meanwhile
        r = await pool.post("/chat/completions", b"{}")
        assert r.headers["content-type"] == "text/event-stream"
        assert await _read(r.aiter_raw()) == b"abcde"
        r = await pool.post("/chat/completions", b"{}")
        assert await r.aread() == b"until close"
        assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"authorization: Bearer k\r\n" in seen[0]
        assert seen[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')
    finally:
        await pool.aclose()
        server.close()


async def test_errors_are_upstream_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = Http11Pool(f"http://127.0.0.1:{port}/v1", connect_timeout=1)
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.post("/chat/completions", b"{}")
    server, url, _ = await _server([(b"garbage\r\n\r\n", True),
                                    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", True)])
    pool = Http11Pool(url)
    try:
        with pytest.raises(UpstreamError, match="malformed response head"):
            await pool.post("/chat/completions", b"{}")
        r = await pool.post("/chat/completions", b"{}")
        with pytest.raises(UpstreamError, match="broken"):
            await r.aread()
    finally:
        await pool.aclose()
        server.close()
    with pytest.raises(UpstreamError, match="unsupported upstream URL"):
        Http11Pool("ftp://x")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000,            # declared
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"                      # chunked
    + b"200\r\n" + b"x" * 512 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 2000,                                     # until close
])
async def test_a_body_past_the_limit_is_refused_whatever_its_framing(answer: bytes) -> None:
    """A provider cannot make the gateway buffer an unbounded answer."""
    server, url, _ = await _server([(answer, True)])
    pool = Http11Pool(url, max_body=1024)
    try:
        r = await pool.post("/chat/completions", b"{}")
        with pytest.raises(UpstreamError, match="exceeds 1024 bytes"):
            await r.aread()
    finally:
        await pool.aclose()
        server.close()


async def test_a_body_at_the_limit_is_read() -> None:
    server, url, _ = await _server([(b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n"
                                     + b"y" * 1024, True)])
    pool = Http11Pool(url, max_body=1024)
    try:
        r = await pool.post("/chat/completions", b"{}")
        assert await r.aread() == b"y" * 1024
    finally:
        await pool.aclose()
        server.close()


async def test_a_silent_body_times_out_and_a_slow_steady_one_does_not() -> None:
    """The read timeout bounds each silence, not the whole body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        slow = b"slow" in head
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6 if slow else 1):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        if slow:
            writer.write(b"0\r\n\r\n")
        else:
            await asyncio.sleep(5)  # silent for longer than the timeout
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        pool = Http11Pool(url, timeout=0.3)
        r = await pool.post("/slow", b"{}")
        assert await _read(r.aiter_raw()) == b"x" * 6  # 0.6 s in all, never 0.3 s silent
        r = await pool.post("/silent", b"{}")
        t = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError, match=r"TimeoutError: nothing for 0.3 s"):
            await _read(r.aiter_raw())
        assert asyncio.get_running_loop().time() - t < 2
        await pool.aclose()
    finally:
        server.close()


async def test_a_slow_consumer_is_not_the_peers_silence() -> None:
    """Time the caller spends between reads (a slow client downstream) does not count."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(0.35)  # arrives while the caller is still busy with "a"
        writer.write(b"1\r\nb\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        pool = Http11Pool(url, timeout=0.2)
        r = await pool.post("/x", b"{}")
        got = []
        async for chunk in r.aiter_raw():
            got.append(chunk)
            await asyncio.sleep(0.5)  # longer than the timeout, between reads
        assert got == [b"a", b"b"]
        await pool.aclose()
    finally:
        server.close()

"""A small keep-alive HTTP/1.1 client for the chat hot path.

Why not httpx here: httpcore's pool scans every pooled connection (a ``poll`` syscall each) on
every request, so its cost grows with concurrency (measured ~2.5 ms CPU per call at 64
connections on this machine). This client keeps a stack of idle connections per upstream and
does one write and a few reads per call. It speaks only what OpenAI-compatible upstreams need:
a POST with a body, responses framed by Content-Length, chunked transfer coding or connection
close; bodies are returned as the exact bytes received (no content decoding: we send
``accept-encoding: identity``).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from teegate.errors import UpstreamError

_NO_BODY = frozenset({204, 304})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in a field value


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class _Silence:
    """Aborts a connection whose peer sent nothing for ``timeout`` seconds while a body is
    read. One timer per ``timeout`` of stream instead of an ``asyncio.timeout`` per read:
    that cost about an eighth of a streamed call's CPU (a timer armed and cancelled for each
    of its events). A read marks progress with ``touch()``, which only reads the clock; the
    time the consumer takes between reads (``pause()`` ... ``touch()``) is not silence."""

    __slots__ = ("_handle", "_loop", "_transport", "fired", "last", "paused", "timeout")

    def __init__(self, transport: asyncio.WriteTransport, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self.timeout = timeout
        self.fired = False
        self.paused = False
        self.last = self._loop.time()
        self._handle = self._loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def _check(self) -> None:
        due = (self._loop.time() if self.paused else self.last) + self.timeout
        if self._loop.time() < due:  # bytes came meanwhile: wait for the rest of the gap
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        self._transport.abort()  # the pending read ends; the caller reports the timeout

    def cancel(self) -> None:
        self._handle.cancel()


class Http11Response:
    """Status and headers at once; the body read on demand (``aread`` or ``aiter_raw``).

    The connection goes back to the pool only when the body was read to its end."""

    def __init__(self, pool: Http11Pool, conn: _Conn, status: int, headers: dict[str, str],
                 timeout: float, max_body: int = 64 << 20) -> None:
        self._pool = pool
        self._conn = conn
        self.status_code = status
        self.headers = headers
        self._timeout = timeout
        self._max_body = max_body
        self._done = False
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        cl = headers.get("content-length")
        self._length = int(cl) if cl is not None and cl.isdigit() else None
        self._keep = headers.get("connection", "").lower() != "close" and (
            self._chunked or self._length is not None or status in _NO_BODY)
        if status in _NO_BODY:
            self._length = 0

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (de-chunked, otherwise exact bytes). ``timeout`` bounds each
        silence, never the whole body (a long stream is fine while bytes keep coming)."""
        reader = self._conn.reader
        budget = self._max_body  # a provider cannot make the gateway buffer without bound
        silence = _Silence(self._conn.writer.transport, self._timeout)
        try:
            if self._chunked:
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            silence.touch()  # trailers
                        break
                    budget -= size
                    if budget < 0:
                        raise ValueError(f"the body exceeds {self._max_body} bytes")
                    data = await reader.readexactly(size + 2)
                    silence.pause()  # the consumer's time is not the peer's silence
                    yield data[:-2]
                    silence.touch()
            elif self._length is not None:
                if self._length > budget:
                    raise ValueError(f"the body of {self._length} bytes exceeds "
                                     f"{self._max_body} bytes")
                left = self._length
                while left > 0:
                    data = await reader.read(min(left, 1 << 16))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    silence.pause()
                    yield data
                    silence.touch()
            else:
                while True:
                    data = await reader.read(1 << 16)
                    if not data:
                        if silence.fired:
                            raise TimeoutError
                        break
                    budget -= len(data)
                    if budget < 0:
                        raise ValueError(f"the body exceeds {self._max_body} bytes")
                    silence.pause()
                    yield data
                    silence.touch()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as e:
            self._release(False)
            why = (f"TimeoutError: nothing for {self._timeout:g} s" if silence.fired
                   else f"{type(e).__name__}: {e}")
            raise UpstreamError(f"upstream response broken: {why}") from None
        finally:
            silence.cancel()
        self._release(self._keep)

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_raw()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _release(self, reuse: bool) -> None:
        if self._done:
            return
        self._done = True
        self._pool.release(self._conn, reuse)

    async def aclose(self) -> None:
        """Give the connection back if the body was consumed, else close it."""
        self._release(False)


class Http11Pool:
    """Keep-alive connections to one origin (``http://host:port`` or ``https://...``)."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0, timeout: float = 600.0,
                 max_idle: int = 512, headers: dict[str, str] | None = None,
                 max_body: int = 64 << 20) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"unsupported upstream URL {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (ssl.create_default_context()
                                           if parts.scheme == "https" else None)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_body = max_body
        host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        lines = [f"host: {host_header}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._static = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[_Conn] = []
        self._closed = False

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl, limit=1 << 20)
        except (OSError, TimeoutError) as e:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port}: "
                                f"{type(e).__name__}: {e}") from None
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        return None

    def release(self, conn: _Conn, reuse: bool) -> None:
        if reuse and not self._closed and len(self._idle) < self.max_idle and conn.usable():
            self._idle.append(conn)
        else:
            conn.close()

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> Http11Response:
        """POST ``body`` to ``prefix + path``; the response once its headers arrived.
        ``extra_headers``: ready-made ``name: value\r\n`` lines for this request only.

        A reused connection the server closed meanwhile is retried once on a new one (no
        response byte had arrived, so the server did not answer the first attempt)."""
        request = (b"POST " + (self.prefix + path).encode("latin-1") + b" HTTP/1.1\r\n"
                   + self._static + extra_headers + b"content-length: "
                   + str(len(body)).encode()
                   + b"\r\n\r\n" + body)
        for attempt in (0, 1):
            conn = self._take() if attempt == 0 else None
            if conn is None:
                conn = await self._connect()
            try:
                conn.writer.write(request)
                if len(request) > 1 << 16:
                    await conn.writer.drain()
                async with asyncio.timeout(self.timeout):
                    head = await conn.reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError) as e:
                conn.close()
                if conn.reused and isinstance(e, (asyncio.IncompleteReadError,
                                                  ConnectionResetError, BrokenPipeError)):
                    continue
                raise UpstreamError(f"{self.host}:{self.port}: {type(e).__name__}: {e}"
                                    ) from None
            return self._response(conn, head)
        raise UpstreamError(f"{self.host}:{self.port}: connection closed")  # pragma: no cover

    def _response(self, conn: _Conn, head: bytes) -> Http11Response:
        try:
            lines = head[:-4].decode("latin-1").split("\r\n")
            version, status_s, *_ = lines[0].split(" ", 2)
            status = int(status_s)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            # A bare CR/LF or another control character inside a line would smuggle a header
            # (or a broken value) into what the gateway relays: the head is malformed.
            if _CONTROL.search(head[:-4].replace(b"\r\n", b"")):
                raise ValueError("control character in the response head")
        except (ValueError, IndexError):
            conn.close()
            raise UpstreamError(f"{self.host}:{self.port}: malformed response head") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return Http11Response(self, conn, status, headers, self.timeout,
                              self.max_body)

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()

"""Connection limits for the gateway's and the node's HTTP servers (uvicorn + httptools).

uvicorn times out only an idle keep-alive connection after a response: a client that
connects and sends nothing, sends its head a byte at a time, or stops half way through its
body is held for ever, and with enough of them the process runs out of file descriptors and
every new client gets a reset. ``GuardedProtocol`` adds what is missing, per connection:

- ``header_timeout``: a request's head must be complete this long after its first byte (or
  after the connection opened); otherwise 408 and close.
- ``body_timeout``: its body must be complete this long after the head; otherwise 408 (or a
  plain close once a response started) and the app sees ``http.disconnect``.
- ``keep_alive_timeout``: an idle connection between requests is closed (uvicorn's own).
- ``max_connections``: at the cap, a new connection first evicts the longest-idle connection
  that has no request in progress (an idle keep-alive or a head still trickling in); when
  every connection is busy with a request, the new one gets 503 and is closed. Slow clients
  thus cannot lock out real ones, and a request in progress is never cut for a newcomer.

The limits travel on ``LimitedConfig`` (a ``uvicorn.Config``), so worker processes get them
too; each process enforces its own cap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedProtocol", "LimitedConfig", "ServerLimits", "run"]


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n")
_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nretry-after: 1\r\ncontent-length: %d\r\n\r\n")


def _error(head: bytes, status: int, message: str, code: str) -> bytes:
    from teegate.gateway.errors import error_body

    body = error_body(status, message, code=code)
    return head % len(body) + body


class LimitedConfig(uvicorn.Config):
    """``uvicorn.Config`` carrying ``ServerLimits`` and serving with ``GuardedProtocol``."""

    def __init__(self, app: Any, *, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        self.limits = limits or ServerLimits()
        kwargs.setdefault("http", "teegate.serving:GuardedProtocol")
        # Whole seconds upstream: a sub-second keep-alive is enforced here as well.
        kwargs["timeout_keep_alive"] = max(1, int(self.limits.keep_alive_timeout))
        super().__init__(app, **kwargs)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines and a connection cap."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ServerLimits = getattr(config, "limits", None) or ServerLimits()
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # a request's head arrived and its response is not complete
        self._since = time.monotonic()

    # -- the cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            self.connections.discard(self)
            transport.write(_error(  # type: ignore[attr-defined]
                _503, 503, "the server is at its connection limit; retry shortly",
                "too_many_connections"))
            transport.close()
            return
        self._arm(self.limits.header_timeout, "the request head")

    def _evict_one(self) -> bool:
        idle = [c for c in self.connections
                if isinstance(c, GuardedProtocol) and c is not self and not c._busy
                and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._since)
        oldest._cancel()
        oldest.connections.discard(oldest)
        oldest.transport.close()
        return True

    # -- deadlines

    def _arm(self, seconds: float, what: str) -> None:
        self._cancel()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        """Close the connection; answer 408 first when no answer to this request began (an
        app may have answered before reading the body, e.g. a refused key)."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        head = what == "the request head"
        if (head and (cycle is None or cycle.response_complete)) or (
                not head and cycle is not None and not cycle.response_started):
            self.transport.write(_error(
                _408, 408, f"{what} did not arrive in time", "request_timeout"))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._since = time.monotonic()
        if self._deadline is None:
            self._arm(self.limits.header_timeout, "the request head")

    def on_headers_complete(self) -> None:
        self._busy = True
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, "the request body")

    def on_message_complete(self) -> None:
        self._cancel()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._busy = False
        self._since = time.monotonic()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)


def run(app: Any, *, limits: ServerLimits, **kwargs: Any) -> None:
    """``uvicorn.run`` with ``limits``; ``workers`` > 1 needs ``app`` as an import string."""
    from uvicorn.supervisors import Multiprocess

    config = LimitedConfig(app, limits=limits, **kwargs)
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:  # pragma: no cover - the operator's Ctrl-C
        pass

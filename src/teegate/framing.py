"""Request framing and credential headers that teegate's servers (the gateway and the node)
accept: one reading of where a body ends and of who is calling, or a 400.

Why here and not in the HTTP server: uvicorn's parsers differ. httptools (the gateway's and
the node's server) takes ``Transfer-Encoding: identity, chunked``, ``gzip, chunked``, two
``Transfer-Encoding`` lines, ``Transfer-Encoding`` on HTTP/1.0, a repeated or missing
``Host``; h11 takes ``Transfer-Encoding`` beside ``Content-Length`` (and ignores the latter).
A proxy in front that reads such a request the other way frames a different body than
teegate does (request smuggling). Both parsers hand every header line to the ASGI app, so one
check here covers either server. Duplicate ``Authorization`` lines are refused for the same
reason: which one wins differs between code paths (and between a proxy and teegate).

The refusal closes the connection (``connection: close``): after ambiguous framing the next
bytes on it cannot be trusted to start a request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Headers whose repetition makes a request mean two things: who is calling, which body,
# which host, which conversation pays.
SINGLE = (b"authorization", b"content-length", b"host", b"x-teegate-conversation")


def framing_problem(scope: Scope) -> tuple[str, str] | None:
    """Why the request's framing or credentials are ambiguous, as (message, header name), or
    None. Pure: reads ``scope["headers"]`` (lower-case names, as every ASGI server gives
    them) and ``scope["http_version"]``."""
    seen: dict[bytes, int] = {}
    codings: list[bytes] = []
    length: bytes | None = None
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
            seen[name] = seen.get(name, 0) + 1
        elif name in SINGLE:
            seen[name] = seen.get(name, 0) + 1
            if name == b"content-length":
                length = value
    for name in SINGLE:
        if seen.get(name, 0) > 1:
            text = name.decode()
            return f"the {text} header is repeated: send it once", text
    if codings:
        if scope.get("http_version") == "1.0":
            return ("Transfer-Encoding on an HTTP/1.0 request: ambiguous framing (RFC 9112 "
                    "section 6.1)", "transfer-encoding")
        if codings != [b"chunked"] or seen[b"transfer-encoding"] > 1:
            return ("Transfer-Encoding must be exactly 'chunked' (one coding, one header): "
                    "ambiguous framing", "transfer-encoding")
        if length is not None:
            return ("both Transfer-Encoding and Content-Length: ambiguous framing",
                    "content-length")
    if length is not None and not length.strip().isdigit():
        return "Content-Length must be a decimal number", "content-length"
    if scope.get("http_version") == "1.1" and b"host" not in seen:
        return "an HTTP/1.1 request needs a Host header", "host"
    return None


def refusal(message: str, header: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The OpenAI-shaped 400 body and headers of a framing refusal."""
    code = "duplicate_header" if "repeated" in message else "ambiguous_framing"
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": header, "code": code}}).encode()
    return body, [(b"content-type", b"application/json"),
                  (b"content-length", str(len(body)).encode()),
                  (b"x-should-retry", b"false"), (b"connection", b"close")]


async def refuse(send: Send, problem: tuple[str, str]) -> None:
    body, headers = refusal(*problem)
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FramingGuard:
    """ASGI middleware: refuse ambiguous framing and repeated credential headers before the
    app sees the request (the node uses it; the gateway calls ``framing_problem`` first thing
    in its own entry point)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = framing_problem(scope)
            if problem is not None:
                await refuse(send, problem)
                return
        await self.app(scope, receive, send)

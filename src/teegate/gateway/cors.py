"""CORS for browser agents (``gateway.cors_origins``): off unless configured, and then only
for the origins named (or any, with ``*``). A preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered before any route or key check (browsers send
no Authorization on it); every other answer to an allowed origin names it and exposes
teegate's headers. Keys travel as bearer tokens, never cookies: no credentials mode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

EXPOSED = (b"x-request-id, x-should-retry, retry-after, x-teegate-provider, "
           b"x-teegate-platform, x-teegate-trust, x-teegate-verdict, x-teegate-development, "
           b"x-teegate-receipt, x-receipt-id, x-aci-version, x-aci-keyset-digest, "
           b"x-teegate-upstream-verified, x-teegate-routed, x-teegate-signature, "
           b"x-teegate-signing-address, x-teegate-signing-algo, x-teegate-text, "
           b"x-ratelimit-limit-requests, x-ratelimit-limit-tokens, "
           b"x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens, "
           b"x-ratelimit-reset-requests, x-ratelimit-reset-tokens")
_METHODS = b"GET, POST, DELETE, OPTIONS"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.encode() for o in origins)

    def allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self.any or origin in self.origins)

    def _allow(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"access-control-allow-origin", b"*" if self.any else origin),
                (b"vary", b"Origin")]

    async def preflight(self, headers: dict[bytes, bytes], send: Send) -> None:
        """204, with the CORS grant only for an allowed origin (the browser refuses the
        real request otherwise)."""
        origin = headers.get(b"origin")
        out: list[tuple[bytes, bytes]] = [(b"content-length", b"0")]
        if self.allowed(origin):
            assert origin is not None
            out += [*self._allow(origin), (b"access-control-allow-methods", _METHODS),
                    (b"access-control-max-age", b"600")]
            asked = headers.get(b"access-control-request-headers")
            if asked and b"\r" not in asked and b"\n" not in asked:
                out.append((b"access-control-allow-headers", asked))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})

    def wrap(self, origin: bytes, send: Send) -> Send:
        """``send`` that grants ``origin`` (allowed) on the answer's start."""
        extra = [*self._allow(origin), (b"access-control-expose-headers", EXPOSED)]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return sending

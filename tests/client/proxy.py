"""A man-in-the-middle on loopback: forwards to a node and can alter what comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tamper = False  # alter chat response bytes
        self.strip_signatures = False  # drop x-teegate-* headers and the stream comment
        # SSE bytes to slip in after the node's signature comment, before ``data: [DONE]``.
        self.inject_after_signature: bytes | None = None
        self.chat_requests = 0
        self.requests = 0  # every request, any route
        self.app = Starlette(routes=[Route("/{path:path}", self.handle,
                                           methods=["GET", "POST"])])

    @staticmethod
    def _alter(data: bytes) -> bytes:
        # Change one word of generated text; keeps JSON valid so only the signature can tell.
        for word in (b"attested", b"enclave", b"quote", b"nonce", b"signature", b"verified"):
            if word in data:
                return data.replace(word, word.upper(), 1)
        return data.replace(b'"assistant"', b'"ASSISTANT"', 1)

    @staticmethod
    def _inject(chunk: bytes, extra: bytes) -> bytes:
        at = chunk.find(b": teegate-signature ")
        if at == -1:
            return chunk
        end = chunk.index(b"\n\n", at) + 2
        return chunk[:end] + extra + chunk[end:]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.requests += 1
        if path.endswith("/chat/completions"):
            self.chat_requests += 1
        body = await request.body()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")}
        client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        req = client.build_request(request.method, path, params=request.query_params,
                                   content=body, headers=headers)
        resp = await client.send(req, stream=True)
        out_headers = {k: v for k, v in resp.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding",
                                            "content-encoding")}
        if self.strip_signatures:
            out_headers = {k: v for k, v in out_headers.items()
                           if not k.lower().startswith("x-teegate-")}
        chat = path.endswith("/chat/completions")
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.aiter_bytes():
                        if chat and self.tamper:
                            chunk = self._alter(chunk)
                        if chat and self.inject_after_signature is not None:
                            chunk = self._inject(chunk, self.inject_after_signature)
                        if chat and self.strip_signatures and b": teegate-signature" in chunk:
                            lines = chunk.split(b"\n\n")
                            chunk = b"\n\n".join(
                                x for x in lines if not x.startswith(b": teegate-signature"))
                        yield chunk
                finally:
                    await resp.aclose()
                    await client.aclose()

            return StreamingResponse(relay(), resp.status_code, headers=out_headers)
        data = await resp.aread()
        await resp.aclose()
        await client.aclose()
        if chat and self.tamper:
            data = self._alter(data)
        return Response(data, resp.status_code, headers=out_headers)


def make_proxy(upstream: str) -> Any:
    return Proxy(upstream)

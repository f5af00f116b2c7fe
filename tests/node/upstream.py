"""An upstream engine that answers fixed bytes, to prove byte-exact pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

PLAIN = b'{"id": "chatcmpl-fixed-1",  "object":"chat.completion", "choices":[{"index":0,' \
    b'"message":{"role":"assistant","content":"caf\\u00e9  \xc3\xa9"},"finish_reason":"stop"}],' \
    b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n'
# Events split across chunk boundaries in awkward places, CRLF in one event.
SSE_PIECES = [
    b'data: {"id":"chatcmpl-fixed-s","object":"chat.completion.chunk","choices":[{"index":0,',
    b'"delta":{"content":"a"}}]}\n',
    b'\ndata: {"id":"chatcmpl-fixed-s","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":" b"}}]}\r\n\r\ndata: {"id":"chatcmpl-fixed-s","choices":[]}\n\nda',
    b"ta: [DO",
    b"NE]\n\n",
]
SEEN: list[bytes] = []


def fixed_upstream() -> Any:
    async def chat(request: Request) -> Response:
        body = await request.body()
        SEEN.append(body)
        if b'"break": true' in body:
            async def broken() -> AsyncIterator[bytes]:
                yield SSE_PIECES[0] + SSE_PIECES[1] + b"\n"
                await asyncio.sleep(0.01)
                raise RuntimeError("engine crashed mid-stream")

            return StreamingResponse(broken(), media_type="text/event-stream")
        if b'"stream": true' in body:
            async def gen() -> AsyncIterator[bytes]:
                for piece in SSE_PIECES:
                    yield piece
                    await asyncio.sleep(0.005)

            return StreamingResponse(gen(), media_type="text/event-stream")
        return Response(PLAIN, media_type="application/json")

    async def models(request: Request) -> Response:
        return Response(b'{"object":"list","data":[]}', media_type="application/json")

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])

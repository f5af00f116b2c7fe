"""Real HTTP on loopback for gateway tests: ASGI apps under uvicorn in background threads,
a development node factory, and proxies that tamper with a node's answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app


class Server:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread; ``stop`` kills it (connections drop)."""

    def __init__(self, app: Any, *, lifespan: Literal["on", "off"] = "off", port: int = 0
                 ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", lifespan=lifespan, access_log=False,
            timeout_graceful_shutdown=1, http="httptools", loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def serving(app: Any, *, lifespan: Literal["on", "off"] = "off") -> Iterator[Server]:
    s = Server(app, lifespan=lifespan)
    try:
        yield s
    finally:
        s.stop()


def dev_node(pki: Path, models: tuple[str, ...], keys: NodeKeys | None = None) -> Any:
    return create_node_app(DevTdxSource(pki), BuiltinEngine(models), keys=keys or NodeKeys())


@dataclass
class Tamper:
    """Switches of a tampering proxy."""

    alter_response: bool = False  # change one byte of every chat answer (keep the signature)
    corrupt_report: bool = False  # flip a byte inside the attestation quote
    fail_status: int | None = None  # answer chat calls with this status instead
    report_status: int | None = None  # answer report requests with this status instead
    break_stream: bool = False  # send 200 + SSE headers, then drop the connection
    inject_before_done: bytes = b""  # an SSE event slipped in after the node's signature
    replace: tuple[bytes, bytes] | None = None  # rewrite these bytes of every chat answer
    flip_byte: bool = False  # flip one bit of the first content character of each answer
    strip_collateral: bool = False  # serve bare quotes, as hosted providers do
    seen: list[str] = field(default_factory=list)


def tampering_proxy(target: str, tamper: Tamper) -> Starlette:
    """A man in the middle between the gateway and a node."""
    client = httpx.AsyncClient(base_url=target, timeout=30)

    async def report(request: Request) -> Response:
        if tamper.report_status is not None:
            return Response(b'{"error":{"message":"down"}}', tamper.report_status,
                            media_type="application/json")
        r = await client.get("/v1/attestation/report", params=dict(request.query_params))
        body = r.content
        if tamper.strip_collateral:
            import json

            obj = json.loads(body)
            for rep in (obj, *obj.get("all_attestations", [])):
                rep.pop("collateral", None)
            body = json.dumps(obj).encode()
        if tamper.corrupt_report:
            import json

            obj = json.loads(body)
            q = obj["intel_quote"]
            i = len(q) // 2
            obj["intel_quote"] = q[:i] + ("0" if q[i] != "0" else "1") + q[i + 1:]
            body = json.dumps(obj).encode()
        return Response(body, r.status_code, media_type="application/json")

    async def chat(request: Request) -> Response:
        tamper.seen.append("chat")
        if tamper.fail_status is not None:
            return Response(b'{"error":{"message":"down","type":"server_error","param":null,'
                            b'"code":null}}', tamper.fail_status, media_type="application/json")
        if tamper.break_stream:
            async def broken() -> Any:
                raise RuntimeError("provider died after its headers")
                yield b""  # pragma: no cover

            return StreamingResponse(broken(), 200, media_type="text/event-stream")
        body = await request.body()
        headers = {k: v for k, v in request.headers.items()
                   if k in ("content-type", "x-teegate-signing-algo", "x-teegate-nonce")}
        req = client.build_request("POST", "/v1/chat/completions", content=body,
                                   headers=headers)
        r = await client.send(req, stream=True)
        out_headers = {k: v for k, v in r.headers.items() if k.startswith("x-teegate")}

        flipped = [False]

        def alter(chunk: bytes) -> bytes:
            if tamper.flip_byte and not flipped[0]:
                i = chunk.find(b'"content":"')
                j = i + len(b'"content":"')
                if i >= 0 and j < len(chunk) and chunk[j:j + 1] not in (b'"', b"\\"):
                    flipped[0] = True  # one byte in the whole answer, same length
                    chunk = chunk[:j] + bytes([chunk[j] ^ 0x01]) + chunk[j + 1:]
            if tamper.replace is not None:
                chunk = chunk.replace(*tamper.replace)
            return chunk.replace(b'"content":"', b'"content":"!') if (
                tamper.alter_response) else chunk

        if r.headers.get("content-type", "").startswith("text/event-stream"):
            async def gen() -> Any:
                async for chunk in r.aiter_raw():
                    yield alter(chunk).replace(b"data: [DONE]",
                                               tamper.inject_before_done + b"data: [DONE]")
                await r.aclose()

            return StreamingResponse(gen(), r.status_code, headers=out_headers,
                                     media_type="text/event-stream")
        data = alter(await r.aread())
        await r.aclose()
        return Response(data, r.status_code, headers=out_headers,
                        media_type="application/json")

    async def signature(request: Request) -> Response:
        r = await client.get(f"/v1/signature/{request.path_params['chat_id']}",
                             params=dict(request.query_params))
        return Response(r.content, r.status_code, media_type="application/json")

    return Starlette(routes=[
        Route("/v1/signature/{chat_id:path}", signature, methods=["GET"]),
        Route("/v1/attestation/report", report, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


def balancer(targets: list[str], *, style: str = "merged") -> Starlette:
    """A load balancer in front of several nodes: report requests are broadcast and merged
    (``all_attestations``, private-ml-sdk style, or NEAR's ``model_attestations``); chat
    calls go round robin."""
    import itertools
    import json

    clients = [httpx.AsyncClient(base_url=t, timeout=30) for t in targets]
    turn = itertools.cycle(range(len(targets)))
    state: dict[str, Any] = {"corrupt": None}

    async def report(request: Request) -> Response:
        reports = []
        for c in clients:
            r = await c.get("/v1/attestation/report", params=dict(request.query_params))
            reports.append(r.json())
        i = state["corrupt"]
        if i is not None:
            q = reports[i]["intel_quote"]
            reports[i]["intel_quote"] = q[:200] + ("0" if q[200] != "0" else "1") + q[201:]
        if style == "near":
            body: dict[str, Any] = {"gateway_attestation": {}, "model_attestations": reports}
        else:
            body = {**reports[0], "all_attestations": reports}
        return Response(json.dumps(body).encode(), media_type="application/json")

    async def chat(request: Request) -> Response:
        c = clients[next(turn)]
        r = await c.post("/v1/chat/completions", content=await request.body(), headers={
            k: v for k, v in request.headers.items()
            if k in ("content-type", "x-teegate-signing-algo", "x-teegate-nonce")})
        return Response(r.content, r.status_code, media_type=r.headers["content-type"],
                        headers={k: v for k, v in r.headers.items() if k.startswith("x-teegate")})

    async def signature(request: Request) -> Response:
        for c in clients:
            r = await c.get(f"/v1/signature/{request.path_params['chat_id']}",
                            params=dict(request.query_params))
            if r.status_code == 200:
                return Response(r.content, media_type="application/json")
        return Response(b'{"error":{"message":"no signature"}}', 404)

    app = Starlette(routes=[
        Route("/v1/attestation/report", report, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/signature/{chat_id:path}", signature, methods=["GET"]),
    ])
    app.state.lb = state
    return app


@dataclass
class Replay:
    """Switches of a replaying proxy. It records the first answer to each request body (by
    its sha256: the exact bytes a provider signs) with the node's signature headers; with
    ``replay`` on, a byte-identical request gets that recorded answer again, without asking
    the node. Signature and report requests always reach the node, which still holds the
    old answer's signature (NEAR-style ``GET /v1/signature/{id}``)."""

    replay: bool = False
    recorded: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    replayed: int = 0


def replaying_proxy(target: str, state: Replay) -> Starlette:
    import hashlib

    client = httpx.AsyncClient(base_url=target, timeout=30)

    async def report(request: Request) -> Response:
        r = await client.get("/v1/attestation/report", params=dict(request.query_params))
        return Response(r.content, r.status_code, media_type="application/json")

    async def signature(request: Request) -> Response:
        r = await client.get(f"/v1/signature/{request.path_params['chat_id']}",
                             params=dict(request.query_params))
        return Response(r.content, r.status_code, media_type="application/json")

    async def chat(request: Request) -> Response:
        body = await request.body()
        digest = hashlib.sha256(body).hexdigest()
        old = state.recorded.get(digest)
        if state.replay and old is not None:
            state.replayed += 1
            status, headers, content = old
        else:
            r = await client.post("/v1/chat/completions", content=body, headers={
                k: v for k, v in request.headers.items()
                if k in ("content-type", "x-teegate-signing-algo", "x-teegate-nonce")})
            status, content = r.status_code, r.content
            headers = {k: v for k, v in r.headers.items()
                       if k.startswith("x-teegate") or k == "content-type"}
            state.recorded.setdefault(digest, (status, headers, content))
        return Response(content, status, headers=headers)

    return Starlette(routes=[
        Route("/v1/signature/{chat_id:path}", signature, methods=["GET"]),
        Route("/v1/attestation/report", report, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])

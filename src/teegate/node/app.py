"""The node's HTTP app: attestation report, response signatures, OpenAI routes.

Wire-compatible with NEAR AI Cloud / RedPill / private-ml-sdk nodes. The hot path forwards
raw bytes: request and response bodies are never re-serialised, because the signature covers
``sha256hex(request bytes):sha256hex(response bytes)`` exactly as sent (docs/node.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import teegate
from teegate import safejson
from teegate.attest.guard import MAX_REPORT_VALUES
from teegate.errors import TeegateError, UpstreamError
from teegate.framing import FramingGuard
from teegate.node.engine import JSON_TYPE, Engine, EngineReply, openai_error
from teegate.node.signatures import NONCE_HEADER, SIGNING_ALGOS, parse_call_nonce, signature_text
from teegate.node.signer import NodeKeys, SignedText
from teegate.node.sources import Evidence, QuoteSource, quote_tcb_info
from teegate.node.store import SignatureStore

SIGNATURE_COMMENT = b": teegate-signature "
ALGO_HEADER = "x-teegate-signing-algo"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _error(status: int, message: str, *, type_: str = "invalid_request_error",
           code: str | None = None, param: str | None = None) -> Response:
    s, body = openai_error(status, message, type_=type_, code=code, param=param)
    return Response(body, s, media_type=JSON_TYPE, headers={"x-should-retry": "false"}
                    if s < 500 else None)


def _completion_id(data: bytes) -> str | None:
    """The ``id`` of a completion or chunk: its first top-level ``"id"`` key."""
    try:
        obj = safejson.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) and cid else None


async def _acompletion_id(data: bytes) -> str | None:
    """``_completion_id`` with a large document parsed off the event loop."""
    if len(data) <= safejson.OFFLOAD_BYTES:
        return _completion_id(data)
    return await anyio.to_thread.run_sync(_completion_id, data)


def signature_comment(signed: SignedText) -> bytes:
    """The SSE comment that carries a stream's signature (one line, then a blank line)."""
    return SIGNATURE_COMMENT + json.dumps(signed.to_json(), separators=(",", ":")).encode() + (
        b"\n\n")


@dataclass
class NodeState:
    source: QuoteSource
    engine: Engine
    keys: NodeKeys
    store: SignatureStore
    gpus: int = 0
    gpu: Any = None  # teegate.sim.DevGpu when GPUs are simulated

    def sign_text(self, algo: str, text: str) -> SignedText:
        signer = self.keys.get(algo)
        return SignedText(text, signer.sign(text), signer.signing_address, algo)

    def sign_both(self, request: bytes, response: bytes) -> dict[str, SignedText]:
        """Both algorithms' signatures (bench/node.py measures this; the app signs once)."""
        text = signature_text(request, response)
        return {algo: self.sign_text(algo, text) for algo in SIGNING_ALGOS}


def _algo(value: str | None) -> str | None:
    algo = (value or "ecdsa").strip().lower()
    return algo if algo in SIGNING_ALGOS else None


def _parse_nonce(value: str | None) -> bytes | None:
    if value is None:
        return secrets.token_bytes(32)
    text = value.strip().lower().removeprefix("0x")
    # Exactly 64 hex digits: bytes.fromhex alone would also take inner whitespace and
    # return fewer than 32 bytes.
    if len(text) != 64 or not _HEX64.fullmatch(text):
        return b""
    return bytes.fromhex(text)


def _event_log(text: str) -> Any:
    """The event log as vllm-proxy sends it: the parsed JSON list, not its text."""
    try:
        return safejson.loads(text, max_values=MAX_REPORT_VALUES)
    except (ValueError, UnicodeDecodeError) as e:
        raise UpstreamError(f"the evidence source's event log is not JSON: {e}") from e


def build_report(
    state: NodeState, evidence: Evidence, *, algo: str, nonce: bytes, model: str | None,
) -> dict[str, Any]:
    """The JSON body of ``GET /v1/attestation/report``, in the shape the peers' verifiers
    read (docs/node.md): one attestation, also as ``all_attestations`` (private-ml-sdk) and
    ``model_attestations`` (NEAR AI) of one entry."""
    signer = state.keys.get(algo)
    report: dict[str, Any] = {
        "signing_address": signer.signing_address,
        "signing_algo": algo,
        "request_nonce": nonce.hex(),
        "report_data": state.keys.report_data(algo, nonce).hex(),
    }
    if evidence.tee == "tdx":
        report["intel_quote"] = evidence.quote.hex()
        if evidence.collateral is not None:
            report["collateral"] = evidence.collateral
    else:
        report["snp_report"] = evidence.quote.hex()
        if evidence.certificates is not None:
            report["snp_certificates"] = evidence.certificates.decode("ascii")
    if state.gpus > 0 and state.gpu is not None:
        report["nvidia_payload"] = state.gpu.nvidia_payload(nonce, state.gpus)
    report["event_log"] = _event_log(evidence.event_log)
    info = {
        **evidence.info,
        "tee": evidence.tee,
        "source": evidence.source,
        "development": evidence.development,
        "version": f"teegate-node/{teegate.__version__}",
        "engine": state.engine.name,
        "gpus": state.gpus,
        "key_custody": state.keys.custody,
    }
    if not isinstance(info.get("tcb_info"), (dict, str)):
        info["tcb_info"] = quote_tcb_info(evidence.tee, evidence.quote)
    if model:
        info["model"] = model
    report["info"] = info
    one = dict(report)
    report["all_attestations"] = [one]
    report["model_attestations"] = [one]
    return report


MAX_BODY = 8 << 20
"""Default request body limit: above the gateway's 4 MiB default with room for the fields it
adds (an output cap, ``stream_options``), so a gateway's accepted call is never refused."""


class _TooLarge(Exception):  # noqa: N818 - an outcome
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (``_TooLarge``) past ``limit`` bytes: by Content-Length before a
    byte is read, else as soon as the bytes received pass it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _TooLarge
        parts.append(part)
    return b"".join(parts)


def create_node_app(
    source: QuoteSource, engine: Engine, *, keys: NodeKeys | None = None,
    store: SignatureStore | None = None, gpus: int = 0, gpu: Any = None,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The node as an ASGI app. ``gpu`` is a ``teegate.sim.DevGpu`` when ``gpus`` > 0;
    request bodies above ``max_body`` bytes are a 413."""
    state = NodeState(source, engine, keys or NodeKeys(), store or SignatureStore(), gpus, gpu)

    async def report(request: Request) -> Response:
        q = request.query_params
        algo = _algo(q.get("signing_algo"))
        if algo is None:
            return _error(400, "signing_algo must be 'ecdsa' or 'ed25519'", param="signing_algo")
        nonce = _parse_nonce(q.get("nonce"))
        if not nonce:
            return _error(400, "nonce must be 32 bytes as 64 hex digits", param="nonce")
        want = q.get("signing_address")
        signer = state.keys.get(algo)
        if want is not None and want.lower().removeprefix("0x") != (
            signer.signing_address.lower().removeprefix("0x")
        ):
            return _error(404, "this node does not hold that signing_address",
                          code="signing_address_not_found", param="signing_address")
        report_data = state.keys.report_data(algo, nonce)
        try:
            evidence = await anyio.to_thread.run_sync(state.source.get_evidence, report_data)
            body = build_report(state, evidence, algo=algo, nonce=nonce, model=q.get("model"))
        except TeegateError as e:
            return _error(503, f"evidence unavailable: {e}", type_="server_error",
                          code="evidence_unavailable")
        return Response(json.dumps(body).encode(), media_type=JSON_TYPE)

    async def signature(request: Request) -> Response:
        algo = _algo(request.query_params.get("signing_algo"))
        if algo is None:
            return _error(400, "signing_algo must be 'ecdsa' or 'ed25519'", param="signing_algo")
        chat_id = request.path_params["chat_id"]
        signed = state.store.get(chat_id, algo)
        if signed is None and (text := state.store.text(chat_id)) is not None:
            # Responses are signed once, with the algorithm the caller asked for; the other
            # algorithm signs the same stored text when somebody asks for it.
            signed = state.sign_text(algo, text)
            state.store.add(chat_id, signed)
        if signed is None:
            return _error(404, "no signature for this id (unknown or expired)",
                          code="signature_not_found")
        return Response(json.dumps(signed.to_json()).encode(), media_type=JSON_TYPE)

    async def models(request: Request) -> Response:
        try:
            reply = await state.engine.models()
        except UpstreamError as e:
            return _error(502, str(e), type_="server_error", code="engine_unavailable")
        return Response(reply.body or b"", reply.status, media_type=reply.content_type)

    async def model(request: Request) -> Response:
        """One model of the engine's list (``models.retrieve``), or 404."""
        want = request.path_params["model_id"]
        try:
            reply = await state.engine.models()
        except UpstreamError as e:
            return _error(502, str(e), type_="server_error", code="engine_unavailable")
        if reply.status != 200:
            return Response(reply.body or b"", reply.status, media_type=reply.content_type)
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError, TypeError):
            for m in safejson.loads(reply.body or b"").get("data", ()):
                if isinstance(m, dict) and m.get("id") == want:
                    return Response(json.dumps(m).encode(), media_type=JSON_TYPE)
        return _error(404, f"the model {want!r} does not exist", code="model_not_found",
                      param="model")

    def signed(call: Callable[[Engine], Callable[[bytes, Any], Awaitable[EngineReply]]]
               ) -> Callable[[Request], Awaitable[Response]]:
        """A POST route forwarded to the engine method ``call`` picks, its answer signed
        (plain: headers; stream: a comment before ``[DONE]``)."""
        async def route(request: Request) -> Response:
            return await relay(request, call(state.engine))

        return route

    async def relay(request: Request,
                    engine_call: Callable[[bytes, Any], Awaitable[EngineReply]]) -> Response:
        algo = _algo(request.headers.get(ALGO_HEADER))
        if algo is None:
            return _error(400, f"{ALGO_HEADER} must be 'ecdsa' or 'ed25519'")
        try:
            nonce = parse_call_nonce(request.headers.get(NONCE_HEADER))
        except ValueError as e:
            return _error(400, str(e), param=NONCE_HEADER)
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            return _error(413, f"request body exceeds the limit of {max_body} bytes",
                          code="request_too_large")
        try:
            reply = await engine_call(body, request.headers)
        except UpstreamError as e:
            return _error(502, str(e), type_="server_error", code="engine_unavailable")
        if reply.stream is not None:
            inline = ALGO_HEADER in request.headers or NONCE_HEADER in request.headers
            return _stream_response(state, body, reply, algo, nonce, inline=inline)
        data = reply.body or b""
        mine = state.sign_text(algo, signature_text(body, data, nonce))
        cid = await _acompletion_id(data) if reply.status < 400 else None
        if cid is not None:
            state.store.put(cid, {algo: mine})
        headers = {
            "x-teegate-signature": mine.signature,
            "x-teegate-signing-address": mine.signing_address,
            "x-teegate-signing-algo": algo,
            "x-teegate-text": mine.text,
        }
        return Response(data, reply.status, headers=headers, media_type=reply.content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.engine.aclose()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            return _error(404, f"no route {request.url.path}; this node serves "
                          "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, "
                          "/v1/attestation/report and /v1/signature/{id}", code="not_found")
        if status == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}",
                          code="method_not_allowed")
        return _error(status, str(getattr(exc, "detail", "error")))

    # Ambiguous framing and repeated credential headers are refused before any route.
    return Starlette(lifespan=lifespan, exception_handlers={404: http_error, 405: http_error},
                     middleware=[Middleware(FramingGuard)], routes=[
        Route("/v1/attestation/report", report, methods=["GET"]),
        Route("/v1/signature/{chat_id:path}", signature, methods=["GET"]),
        Route("/v1/chat/completions", signed(lambda e: e.chat), methods=["POST"]),
        Route("/v1/completions", signed(lambda e: e.completions), methods=["POST"]),
        Route("/v1/embeddings", signed(lambda e: e.embeddings), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
    ])


def _stream_response(
    state: NodeState, request_body: bytes, reply: EngineReply, algo: str, nonce: str | None,
    *, inline: bool = True,
) -> Response:
    assert reply.stream is not None
    signer = state.keys.get(algo)
    headers: Mapping[str, str] = {
        "x-teegate-signing-address": signer.signing_address,
        "x-teegate-signing-algo": algo,
        "cache-control": "no-cache",
    }
    return StreamingResponse(
        signed_sse(state, request_body, reply.stream, algo, nonce, inline=inline), reply.status,
        headers=dict(headers), media_type=reply.content_type,
    )


def _is_done(event: bytes) -> bool:
    return event.strip() == b"data: [DONE]"


async def signed_sse(
    state: NodeState, request_body: bytes, upstream: AsyncIterator[bytes], algo: str,
    nonce: str | None = None, *, inline: bool = True,
) -> AsyncIterator[bytes]:
    """Pass SSE bytes through unchanged, whole events at a time.

    Two signatures (docs/node.md, "Streams"): ``GET /v1/signature/{id}`` signs every byte of
    the stream but the signature comment, ``[DONE]`` included, which is what NEAR's and
    private-ml-sdk's verifiers hash; with ``inline`` (the caller asked for a signature by
    ``x-teegate-signing-algo`` or ``x-teegate-nonce``) a signature comment also goes just
    before ``data: [DONE]`` (or at the end when the engine sends no [DONE]), covering every
    byte sent before it, so a gateway can check it before it forwards ``[DONE]``. The call's
    nonce, when it sent one, is the signed texts' third field. If the engine breaks
    mid-stream, an OpenAI error event is sent (and signed) instead of a silent cut."""
    request_hash = hashlib.sha256(request_body).hexdigest()
    suffix = "" if nonce is None else ":" + nonce
    hasher = hashlib.sha256()  # the bytes before the inline comment
    whole = hashlib.sha256()  # every byte sent but the comment
    # Linear whatever the engine's chunking: searched only past where the last search
    # stopped (less the 3 bytes an event end can straddle); consumed events leave the front
    # of the bytearray in O(1).
    pending = bytearray()
    scanned = 0
    cid: str | None = None
    ended = False  # [DONE] (or the end) reached: the inline part is over

    def comment() -> bytes:
        if not inline:
            return b""
        signed = state.sign_text(algo, request_hash + ":" + hasher.hexdigest() + suffix)
        return signature_comment(signed)

    def keep() -> None:
        """Once the end is in sight the whole-stream text is kept before the last bytes
        leave, so a client that has read [DONE] finds it."""
        if cid is not None:
            state.store.put_text(cid, request_hash + ":" + whole.hexdigest() + suffix)

    try:
        async for chunk in upstream:
            if ended:
                whole.update(chunk)
                keep()
                yield chunk
                continue
            pending += chunk
            out: list[bytes] = []
            start = 0
            for m in _EVENT_END.finditer(pending, max(scanned - 3, 0)):
                event = bytes(pending[start : m.end()])
                start = m.end()
                if _is_done(event):
                    ended = True
                    rest = event + bytes(pending[start:])
                    start = len(pending)
                    whole.update(rest)
                    keep()
                    out += [comment(), rest]
                    break
                if cid is None and event.startswith(b"data:"):
                    cid = await _acompletion_id(event[5:].strip())
                hasher.update(event)
                whole.update(event)
                out.append(event)
            del pending[:start]
            scanned = len(pending)
            if out:
                yield b"".join(out)
    except UpstreamError as e:
        if ended:
            return
        _, err = openai_error(502, str(e), type_="server_error", code="engine_stream_broken")
        broken = (bytes(pending) + b"\n\n" if pending else b"") + b"data: " + err + b"\n\n"
        hasher.update(broken)
        whole.update(broken)
        keep()
        yield broken + comment()
        return
    if not ended:
        tail = bytes(pending)
        whole.update(tail)
        keep()
        if tail and _is_done(tail):
            yield comment() + tail
        else:
            hasher.update(tail)
            last = tail + comment()
            if last:
                yield last

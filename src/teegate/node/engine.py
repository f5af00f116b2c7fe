"""Inference engines behind the node: any OpenAI-compatible server by URL, or a built-in
deterministic engine for development, tests and benchmarks.

Both answer with raw bytes (``EngineReply``), so the node forwards and signs exactly what the
engine produced.

Built-in engine rules (documented in docs/node.md): a token is a whitespace-separated word.
``prompt_tokens`` counts the words of every message's text content; the reply is drawn from a
fixed vocabulary, seeded by sha256 of the request's messages, with a natural length of 5-24
words; ``completion_tokens`` = min(natural length, ``max_tokens`` or
``max_completion_tokens``), and ``finish_reason`` is ``length`` when the limit cut the reply.
The same messages always give the same text; ids and ``created`` are fresh per call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio.to_thread
import httpx

from teegate import safejson
from teegate.errors import UpstreamError
from teegate.redact import Redactor

log = logging.getLogger("teegate.node")
_T = TypeVar("_T")
BUILTIN_MODEL = "teegate-builtin"
_VOCAB = (
    "attested", "enclave", "quote", "nonce", "signature", "verified", "measurement", "key",
    "report", "trust", "boundary", "confidential", "hardware", "evidence", "policy", "fresh",
    "bound", "gateway", "agent", "receipt", "ledger", "budget", "model", "token",
    "response", "request", "chain", "root", "digest", "log", "audit", "secure",
)
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


@dataclass
class EngineReply:
    """An engine's answer: status, content type, and either the whole body or a byte
    stream (never both)."""

    status: int
    content_type: str
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    async def chat(self, body: bytes, headers: Mapping[str, str]) -> EngineReply: ...
    async def completions(self, body: bytes, headers: Mapping[str, str]) -> EngineReply: ...
    async def embeddings(self, body: bytes, headers: Mapping[str, str]) -> EngineReply: ...
    async def models(self) -> EngineReply: ...
    async def aclose(self) -> None: ...


def openai_error(
    status: int, message: str, *, type_: str = "invalid_request_error",
    code: str | None = None, param: str | None = None,
) -> tuple[int, bytes]:
    """An OpenAI-shaped error body."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return status, json.dumps(body).encode()


def count_tokens(text: str) -> int:
    """The built-in engine's tokenizer: whitespace-separated words."""
    return len(text.split())


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class _BadRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class _Plan:
    model: str
    words: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    stream: bool
    include_usage: bool


def _plan(body: bytes) -> _Plan:
    req = _json_object(body)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequestError("'messages' must be a non-empty array", "messages")
    texts = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise _BadRequestError("each message needs a 'role'", "messages")
        texts.append(_message_text(m.get("content")))
    limit = req.get("max_completion_tokens", req.get("max_tokens"))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _BadRequestError("'max_tokens' must be a positive integer", "max_tokens")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequestError("'model' is required", "model")
    seed = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    natural = 5 + seed[0] % 20
    n = natural if limit is None else min(natural, limit)
    words = tuple(_VOCAB[b % len(_VOCAB)] for b in (seed * 2)[1 : 1 + n])
    options = req.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return _Plan(
        model=model, words=words, finish_reason="length" if n < natural else "stop",
        prompt_tokens=sum(count_tokens(t) for t in texts), stream=req.get("stream") is True,
        include_usage=include_usage,
    )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class BuiltinEngine:
    """Deterministic in-process engine; see the module docstring for its token rules."""

    name = "builtin"

    def __init__(self, models: tuple[str, ...] = (BUILTIN_MODEL,)) -> None:
        self.model_ids = models
        self._created = int(time.time())

    async def models(self) -> EngineReply:
        data = [
            {"id": m, "object": "model", "created": self._created, "owned_by": "teegate"}
            for m in self.model_ids
        ]
        return EngineReply(200, JSON_TYPE, _dumps({"object": "list", "data": data}))

    async def aclose(self) -> None:
        return None

    async def chat(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        try:
            plan = _plan(body) if len(body) <= safejson.OFFLOAD_BYTES else (
                await anyio.to_thread.run_sync(_plan, body))  # off the event loop
        except _BadRequestError as e:
            status, err = openai_error(400, str(e), param=e.param)
            return EngineReply(status, JSON_TYPE, err)
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        usage = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": len(plan.words),
            "total_tokens": plan.prompt_tokens + len(plan.words),
        }
        if not plan.stream:
            return EngineReply(200, JSON_TYPE, _dumps({
                "id": cid, "object": "chat.completion", "created": created, "model": plan.model,
                "choices": [{
                    "index": 0, "message": {"role": "assistant", "content": " ".join(plan.words)},
                    "logprobs": None, "finish_reason": plan.finish_reason,
                }],
                "usage": usage,
            }))
        return EngineReply(200, SSE_TYPE, stream=self._stream(plan, cid, created, usage))

    async def _stream(
        self, plan: _Plan, cid: str, created: int, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        head = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": plan.model}
        extra: dict[str, Any] = {"usage": None} if plan.include_usage else {}

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return b"data: " + _dumps({**head, "choices": choices, **extra, **more}) + b"\n\n"

        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "logprobs": None, "finish_reason": None}])
        for i, word in enumerate(plan.words):
            text = word if i == 0 else " " + word
            yield event([{"index": 0, "delta": {"content": text}, "logprobs": None,
                          "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "logprobs": None,
                      "finish_reason": plan.finish_reason}])
        if plan.include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"


    async def completions(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        """Legacy completions: the prompt's words seed the text as messages do for chat;
        ``max_tokens`` defaults to 16, as OpenAI's."""
        try:
            plan = await _off_loop(_completion_plan, body)
        except _BadRequestError as e:
            status, err = openai_error(400, str(e), param=e.param)
            return EngineReply(status, JSON_TYPE, err)
        cid = "cmpl-" + uuid.uuid4().hex
        created = int(time.time())
        usage = _usage(plan.prompt_tokens, len(plan.words))
        head = {"id": cid, "object": "text_completion", "created": created,
                "model": plan.model}
        if not plan.stream:
            return EngineReply(200, JSON_TYPE, _dumps({**head, "choices": [{
                "text": " ".join(plan.words), "index": 0, "logprobs": None,
                "finish_reason": plan.finish_reason}], "usage": usage}))
        return EngineReply(200, SSE_TYPE, stream=self._text_stream(plan, head, usage))

    async def _text_stream(self, plan: _Plan, head: dict[str, Any], usage: dict[str, int]
                           ) -> AsyncIterator[bytes]:
        extra: dict[str, Any] = {"usage": None} if plan.include_usage else {}

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return b"data: " + _dumps({**head, "choices": choices, **extra, **more}) + b"\n\n"

        for i, word in enumerate(plan.words):
            yield event([{"text": word if i == 0 else " " + word, "index": 0,
                          "logprobs": None, "finish_reason": None}])
        yield event([{"text": "", "index": 0, "logprobs": None,
                      "finish_reason": plan.finish_reason}])
        if plan.include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def embeddings(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        """One unit vector per input, from sha256 of its text (or token ids): the same
        input always gives the same vector; ``dimensions`` (default 16) sets its length and
        ``encoding_format: base64`` packs it as little-endian float32, as OpenAI does."""
        try:
            texts, model, dims, b64 = await _off_loop(_embedding_inputs, body)
        except _BadRequestError as e:
            status, err = openai_error(400, str(e), param=e.param)
            return EngineReply(status, JSON_TYPE, err)
        data = []
        for i, text in enumerate(texts):
            vector = embed(text, dims)
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(
                struct.pack(f"<{dims}f", *vector)).decode() if b64 else vector})
        prompt = sum(count_tokens(t) for t in texts)
        return EngineReply(200, JSON_TYPE, _dumps({
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}))


async def _off_loop(parse: Callable[[bytes], _T], body: bytes) -> _T:
    """``parse(body)``, a large body off the event loop."""
    if len(body) <= safejson.OFFLOAD_BYTES:
        return parse(body)
    return await anyio.to_thread.run_sync(parse, body)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _json_object(body: bytes) -> dict[str, Any]:
    """Every route's body: one JSON object, or the OpenAI-shaped 400 naming what is wrong."""
    try:
        req = safejson.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BadRequestError("request body is not valid JSON") from None
    if not isinstance(req, dict):
        raise _BadRequestError("request body must be a JSON object")
    return req


def _request(body: bytes) -> dict[str, Any]:
    req = _json_object(body)
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequestError("'model' is required", "model")
    return req


def _texts(value: Any, name: str) -> list[str]:
    """A prompt or an input as texts: a string, strings, token ids (one text, the ids as
    words) or arrays of token ids."""
    def ids(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in v)

    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if ids(value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and value and all(ids(v) for v in value):
        return [" ".join(map(str, v)) for v in value]
    raise _BadRequestError(f"'{name}' must be a string, strings, token ids or arrays of "
                           "token ids", name)


def _completion_plan(body: bytes) -> _Plan:
    req = _request(body)
    texts = _texts(req.get("prompt"), "prompt")
    limit = req.get("max_tokens", 16)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _BadRequestError("'max_tokens' must be a positive integer", "max_tokens")
    seed = hashlib.sha256(json.dumps(texts).encode()).digest()
    natural = 5 + seed[0] % 20
    n = min(natural, limit)
    options = req.get("stream_options")
    return _Plan(
        model=req["model"], words=tuple(_VOCAB[b % len(_VOCAB)] for b in (seed * 2)[1 : 1 + n]),
        finish_reason="length" if n < natural else "stop",
        prompt_tokens=sum(count_tokens(t) for t in texts), stream=req.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True)


def _embedding_inputs(body: bytes) -> tuple[list[str], str, int, bool]:
    req = _request(body)
    texts = _texts(req.get("input"), "input")
    dims = req.get("dimensions", 16)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise _BadRequestError("'dimensions' must be an integer from 1 to 4096", "dimensions")
    fmt = req.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise _BadRequestError("'encoding_format' must be 'float' or 'base64'",
                               "encoding_format")
    return texts, req["model"], dims, fmt == "base64"


def embed(text: str, dims: int) -> list[float]:
    """The built-in engine's vector of ``text``: sha256-derived, unit length, float32
    values (so base64 and float encodings carry the same numbers)."""
    raw = b"".join(hashlib.sha256(text.encode() + i.to_bytes(4, "big")).digest()
                   for i in range((dims * 2 + 31) // 32))
    values = [int.from_bytes(raw[2 * i: 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f",
                                                      *(v / norm for v in values))))


_HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding",
               "te", "upgrade", "proxy-authorization", "accept-encoding"}


class HttpEngine:
    """Any OpenAI-compatible server (vLLM, llama.cpp, Ollama): bytes in, bytes out."""

    name = "http"

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self._redact = Redactor([self.base_url])
        self._api_key = api_key
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport, headers={"accept-encoding": "identity"},
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    def _failed(self, e: httpx.HTTPError, what: str = "") -> UpstreamError:
        """The error the node's client reads: no engine address in it (the engine sits on
        the node's private network); the node's log has the full text."""
        log.warning("engine %s: %s%s: %s", self.base_url, what, type(e).__name__, e)
        return UpstreamError(f"engine: {what}{type(e).__name__}: {self._redact(str(e))}")

    def _headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in incoming.items()
               if k.lower() not in _HOP_BY_HOP and not k.lower().startswith("x-teegate-")}
        out["content-type"] = JSON_TYPE
        if self._api_key:
            out["authorization"] = f"Bearer {self._api_key}"
        return out

    async def chat(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        return await self._post("/chat/completions", body, headers)

    async def completions(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        return await self._post("/completions", body, headers)

    async def embeddings(self, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        return await self._post("/embeddings", body, headers)

    async def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> EngineReply:
        req = self._client.build_request(
            "POST", path, content=body, headers=self._headers(headers)
        )
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.HTTPError as e:
            raise self._failed(e) from e
        ctype = resp.headers.get("content-type", JSON_TYPE)
        if ctype.startswith(SSE_TYPE):
            return EngineReply(resp.status_code, ctype, stream=self._relay(resp))
        try:
            data = await resp.aread()
        except httpx.HTTPError as e:
            raise self._failed(e) from e
        finally:
            await resp.aclose()
        return EngineReply(resp.status_code, ctype, data)

    async def _relay(self, resp: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as e:
            raise self._failed(e, "stream broke: ") from e
        finally:
            await resp.aclose()

    async def models(self) -> EngineReply:
        try:
            resp = await self._client.get("/models", headers=self._headers({}))
        except httpx.HTTPError as e:
            raise self._failed(e) from e
        return EngineReply(resp.status_code, resp.headers.get("content-type", JSON_TYPE),
                           resp.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def engine_app(engine: Engine | None = None) -> Any:
    """The engine alone as an ASGI app (chat, legacy completions, embeddings, models): the direct
    baseline for benchmarks and an upstream for tests of ``HttpEngine``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    eng: Engine = engine or BuiltinEngine()

    def _out(reply: EngineReply) -> Response:
        if reply.stream is not None:
            return StreamingResponse(reply.stream, reply.status, media_type=reply.content_type)
        return Response(reply.body or b"", reply.status, media_type=reply.content_type)

    async def chat(request: Request) -> Response:
        return _out(await eng.chat(await request.body(), request.headers))

    async def completions(request: Request) -> Response:
        return _out(await eng.completions(await request.body(), request.headers))

    async def embeddings(request: Request) -> Response:
        return _out(await eng.embeddings(await request.body(), request.headers))

    async def models(request: Request) -> Response:
        return _out(await eng.models())

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ])

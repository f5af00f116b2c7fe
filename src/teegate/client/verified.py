"""``VerifiedClient`` / ``AsyncVerifiedClient``: the ``openai`` SDK, with attestation before
the first call and a signature check after every call.

The checks sit in an HTTP transport under the SDK, where the exact request and response bytes
are visible. Plain responses are checked before the SDK sees them; streams are passed through
as they arrive and checked when the node's signature comment (or ``data: [DONE]``) arrives,
before the SDK sees the end of the stream. After any failure the client refuses to send.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai

from teegate import safejson
from teegate.attest.policy import Policy
from teegate.attest.verdict import Verdict
from teegate.client.errors import ClientHaltedError, ResponseSignatureError
from teegate.client.report import AttestedKey, aattest_node, api_root, attest_node
from teegate.errors import TeegateError, UpstreamError
from teegate.node.signatures import signature_text, verify_response_signature

ALGO_HEADER = "x-teegate-signing-algo"
_COMMENT = b": teegate-signature "
_DONE_EVENTS = (b"data: [DONE]\n\n", b"data: [DONE]\r\n\r\n")
_DONE_LINE = b"data: [DONE]"
Clock = Callable[[], int]


def _completion_id(data: bytes) -> str | None:
    try:
        obj = safejson.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) else None


def _signature_json(resp: httpx.Response, chat_id: str) -> dict[str, Any]:
    if resp.status_code != 200:
        raise ResponseSignatureError(f"signature for {chat_id}: HTTP {resp.status_code}")
    try:
        data = safejson.loads(resp.content)
    except ValueError as e:
        raise ResponseSignatureError(f"signature for {chat_id} is not JSON") from e
    if not isinstance(data, dict):
        raise ResponseSignatureError(f"signature for {chat_id} is not a JSON object")
    return data


class _Core:
    """I/O-free state: the attested key, the first failure, and the signature check."""

    def __init__(self, base_url: str, policy: Policy, signing_algo: str,
                 now: Clock | None) -> None:
        self.root = api_root(base_url)
        self.policy = policy
        self.algo = signing_algo
        self.now = now
        self.key: AttestedKey | None = None
        self.failure: TeegateError | None = None

    def fail(self, error: TeegateError) -> TeegateError:
        if self.failure is None:
            self.failure = error
        return error

    def current_key(self) -> AttestedKey | None:
        """The attested key while its verdict is valid; None when it must be attested
        (again): the verdict's not_after (certificates, collateral) has passed."""
        key = self.key
        if key is None:
            return None
        t = self.now() if self.now is not None else int(time.time())
        if key.verdict.not_after is not None and t > key.verdict.not_after:
            self.key = None
        return self.key

    def refuse_if_halted(self) -> None:
        if self.failure is not None:
            raise ClientHaltedError(f"client halted after a failed verification: {self.failure}")

    def check(self, request: bytes, response: bytes, sig: Mapping[str, Any]) -> None:
        """Raise ResponseSignatureError unless ``sig`` is the attested key's signature over
        exactly these bytes."""
        key = self.key
        if key is None:
            raise ResponseSignatureError("no attested key")
        fields = [sig.get(k) for k in ("text", "signature", "signing_address", "signing_algo")]
        text, signature, address, algo = (f if isinstance(f, str) else "" for f in fields)
        if not (text and signature and address and algo):
            raise ResponseSignatureError("response signature is missing fields")
        if not key.matches(address, algo):
            raise ResponseSignatureError(
                f"response signed by {address} ({algo}), not by the attested key "
                f"{key.signing_address} ({key.signing_algo})")
        if text != signature_text(request, response):
            raise ResponseSignatureError("response bytes do not match the signed text "
                                         "(altered request or response)")
        if not verify_response_signature(text, signature, address, algo):
            raise ResponseSignatureError("response signature does not verify")


def _header_signature(headers: httpx2.Headers) -> dict[str, str] | None:
    if "x-teegate-signature" not in headers:
        return None
    return {
        "text": headers.get("x-teegate-text", ""),
        "signature": headers["x-teegate-signature"],
        "signing_address": headers.get("x-teegate-signing-address", ""),
        "signing_algo": headers.get("x-teegate-signing-algo", ""),
    }


def _is_chat(request: httpx2.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/chat/completions")


def _refuse_unverifiable(request: httpx2.Request) -> None:
    """Only chat completions carry the node's signature; model listings are harmless
    metadata. Anything else (completions, embeddings, responses, ...) would come back
    unverified, so it is not sent at all."""
    path = request.url.path
    if request.method == "GET" and (path.endswith("/models") or "/models/" in path):
        return
    raise ResponseSignatureError(
        f"{request.method} {path} is not verified by the teegate client: only "
        "chat.completions and models are supported, so the request was not sent")


@dataclass
class _Found:
    """What the stream scanner found: the signed bytes and either the inline signature or
    the completion id to look the signature up by."""

    signed: bytes
    signature: dict[str, Any] | None = None
    chat_id: str | None = None


class _Scanner:
    """Watches SSE bytes for the node's signature comment, or for ``[DONE]`` without one.
    Linear in the stream length: each byte is searched once.

    The node puts its signature comment just before ``data: [DONE]``. Whatever follows the
    comment is not covered by it, so only blank lines and then ``data: [DONE]`` may follow:
    any other event would reach the SDK unsigned. After ``[DONE]`` the SDK reads no more
    events, so later bytes are ignored.
    """

    def __init__(self) -> None:
        self.seen = bytearray()
        self.done = False  # the signed part is known (and handed out once)
        self._closed = False  # [DONE] seen after the signature: nothing more to check
        self._from = 0  # where the next search for the comment starts
        self._comment_at = -1
        self._tail_at = -1  # first byte after the comment line

    def _find_comment(self) -> int:
        seen = self.seen
        pos = seen.find(_COMMENT, self._from)
        while pos != -1 and not (
            pos == 0 or seen.endswith(b"\n\n", 0, pos) or seen.endswith(b"\r\n\r\n", 0, pos)
        ):
            pos = seen.find(_COMMENT, pos + 1)
        if pos == -1:
            self._from = max(0, len(seen) - len(_COMMENT) - 4)
        return pos

    def _check_tail(self, *, final: bool) -> None:
        """Refuse anything but blank lines and ``data: [DONE]`` after the comment line."""
        if self._closed or self._tail_at == -1:
            return
        rest = bytes(self.seen[self._tail_at :]).lstrip(b"\r\n")
        if not rest:
            return
        if len(rest) > len(_DONE_LINE):
            if rest.startswith(_DONE_LINE) and rest[len(_DONE_LINE)] in b"\r\n":
                self._closed = True
                return
        elif _DONE_LINE.startswith(rest) and not final:
            return  # ``data: [DONE]`` still arriving
        raise ResponseSignatureError(
            "unsigned data after the signature comment (only data: [DONE] may follow it)")

    def feed(self, chunk: bytes) -> _Found | None:
        if self._closed:
            return None
        self.seen += chunk
        if self.done:
            self._check_tail(final=False)
            return None
        if self._comment_at == -1:
            self._comment_at = self._find_comment()
        pos = self._comment_at
        if pos != -1:
            end = self.seen.find(b"\n", pos)
            if end == -1:
                return None  # the comment line is not complete yet
            try:
                sig = safejson.loads(bytes(self.seen[pos + len(_COMMENT) : end]))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ResponseSignatureError("malformed teegate-signature comment") from e
            if not isinstance(sig, dict):
                raise ResponseSignatureError("malformed teegate-signature comment")
            self.done = True
            self._tail_at = end + 1
            self._check_tail(final=False)
            return _Found(bytes(self.seen[:pos]), signature=sig)
        for done in _DONE_EVENTS:
            if self.seen.endswith(done):
                body = bytes(self.seen[: -len(done)])
                first = body.split(b"\n", 1)[0]
                cid = _completion_id(first[5:].strip()) if first.startswith(b"data:") else None
                if cid is None:
                    raise ResponseSignatureError("unsigned stream without a completion id")
                self.done = self._closed = True
                # GET /v1/signature/{id} covers the whole stream, [DONE] included.
                return _Found(bytes(self.seen), chat_id=cid)
        return None

    def finish(self) -> None:
        if not self.done:
            raise ResponseSignatureError("stream ended without a verifiable signature")
        self._check_tail(final=True)


# ------------------------------------------------------------------------------- sync


class _Guard(_Core):
    def __init__(self, base_url: str, policy: Policy, signing_algo: str,
                 now: Clock | None, timeout: float) -> None:
        super().__init__(base_url, policy, signing_algo, now)
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout)

    def ensure_attested(self) -> AttestedKey:
        with self._lock:
            self.refuse_if_halted()
            key = self.current_key()
            if key is None:
                try:
                    key = self.key = attest_node(
                        self.root, policy=self.policy, signing_algo=self.algo,
                        now=self.now() if self.now is not None else None, client=self._http)
                except TeegateError as e:
                    raise self.fail(e) from None
            return key

    def fetch_signature(self, chat_id: str) -> dict[str, Any]:
        try:
            resp = self._http.get(f"{self.root}/v1/signature/{chat_id}",
                                  params={"signing_algo": self.algo})
        except httpx.HTTPError as e:
            raise UpstreamError(f"signature for {chat_id}: {e}") from e
        return _signature_json(resp, chat_id)

    def settle(self, request: bytes, found: _Found) -> None:
        sig = found.signature
        if sig is None:
            assert found.chat_id is not None
            sig = self.fetch_signature(found.chat_id)
        self.check(request, found.signed, sig)

    def close(self) -> None:
        self._http.close()


class _VerifiedStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, guard: _Guard, request: bytes) -> None:
        self._inner = inner
        self._guard = guard
        self._request = request
        # Kept across iterations: the SDK may iterate again to drain after [DONE].
        self._scanner = _Scanner()

    def __iter__(self) -> Iterator[bytes]:
        scanner = self._scanner
        try:
            for chunk in self._inner:
                found = scanner.feed(chunk)
                if found is not None:
                    self._guard.settle(self._request, found)
                yield chunk
            scanner.finish()
        except TeegateError as e:
            raise self._guard.fail(e) from None

    def close(self) -> None:
        self._inner.close()


class _VerifyingTransport(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if not _is_chat(request):
            _refuse_unverifiable(request)
            self._guard.ensure_attested()
            return self._inner.handle_request(request)
        self._guard.ensure_attested()
        body = request.read()
        request.headers[ALGO_HEADER] = self._guard.algo
        request.headers["accept-encoding"] = "identity"
        response = self._inner.handle_request(request)
        if response.status_code >= 300:
            return response  # the SDK raises its own error; no completion was served
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.SyncByteStream)
            return httpx2.Response(
                response.status_code, headers=response.headers,
                stream=_VerifiedStream(response.stream, self._guard, body),
                extensions=response.extensions)
        data = response.read()
        response.close()
        try:
            sig = _header_signature(response.headers)
            if sig is None:
                cid = _completion_id(data)
                if cid is None:
                    raise ResponseSignatureError("unsigned response without a completion id")
                sig = self._guard.fetch_signature(cid)
            self._guard.check(body, data, sig)
        except TeegateError as e:
            raise self._guard.fail(e) from None
        return httpx2.Response(response.status_code, headers=response.headers, content=data,
                               extensions=response.extensions)

    def close(self) -> None:
        self._inner.close()


class VerifiedClient:
    """The ``openai`` SDK pointed at a node (or any provider speaking its report API), with
    every call verified. Use ``client.chat.completions.create(...)`` as with ``openai.OpenAI``.

    ``now`` (a callable returning unix seconds) fixes the verification time, for tests.
    The node is attested before the first call and again once the verdict's ``not_after``
    has passed. Only chat completions (verified) and model listings are sent.
    """

    def __init__(
        self, base_url: str, *, policy: Policy, api_key: str | None = None,
        signing_algo: str = "ecdsa", now: Clock | None = None, timeout: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        self._guard = _Guard(base_url, policy, signing_algo, now, min(timeout, 60.0))
        transport = _VerifyingTransport(httpx2.HTTPTransport(), self._guard)
        self._http = httpx2.Client(transport=transport, timeout=timeout)
        self.openai = openai.OpenAI(
            base_url=self._guard.root + "/v1", api_key=api_key or "teegate-direct",
            http_client=self._http, max_retries=max_retries)

    def attest(self) -> Verdict:
        """Attest now (otherwise done before the first call); the accepted verdict."""
        return self._guard.ensure_attested().verdict

    @property
    def verdict(self) -> Verdict | None:
        return self._guard.key.verdict if self._guard.key else None

    @property
    def signing_address(self) -> str | None:
        return self._guard.key.signing_address if self._guard.key else None

    @property
    def halted(self) -> TeegateError | None:
        """The failure that stopped this client, if any."""
        return self._guard.failure

    @property
    def chat(self) -> Any:
        return self.openai.chat

    @property
    def models(self) -> Any:
        return self.openai.models

    def close(self) -> None:
        self.openai.close()
        self._guard.close()

    def __enter__(self) -> VerifiedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ async


class _AsyncGuard(_Core):
    def __init__(self, base_url: str, policy: Policy, signing_algo: str,
                 now: Clock | None, timeout: float) -> None:
        super().__init__(base_url, policy, signing_algo, now)
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=timeout)

    async def ensure_attested(self) -> AttestedKey:
        async with self._lock:
            self.refuse_if_halted()
            key = self.current_key()
            if key is None:
                try:
                    key = self.key = await aattest_node(
                        self.root, policy=self.policy, signing_algo=self.algo,
                        now=self.now() if self.now is not None else None, client=self._http)
                except TeegateError as e:
                    raise self.fail(e) from None
            return key

    async def fetch_signature(self, chat_id: str) -> dict[str, Any]:
        try:
            resp = await self._http.get(f"{self.root}/v1/signature/{chat_id}",
                                        params={"signing_algo": self.algo})
        except httpx.HTTPError as e:
            raise UpstreamError(f"signature for {chat_id}: {e}") from e
        return _signature_json(resp, chat_id)

    async def settle(self, request: bytes, found: _Found) -> None:
        sig = found.signature
        if sig is None:
            assert found.chat_id is not None
            sig = await self.fetch_signature(found.chat_id)
        self.check(request, found.signed, sig)

    async def aclose(self) -> None:
        await self._http.aclose()


class _AsyncVerifiedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, guard: _AsyncGuard,
                 request: bytes) -> None:
        self._inner = inner
        self._guard = guard
        self._request = request
        self._scanner = _Scanner()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        scanner = self._scanner
        try:
            async for chunk in self._inner:
                found = scanner.feed(chunk)
                if found is not None:
                    await self._guard.settle(self._request, found)
                yield chunk
            scanner.finish()
        except TeegateError as e:
            raise self._guard.fail(e) from None

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AsyncVerifyingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, guard: _AsyncGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not _is_chat(request):
            _refuse_unverifiable(request)
            await self._guard.ensure_attested()
            return await self._inner.handle_async_request(request)
        await self._guard.ensure_attested()
        body = await request.aread()
        request.headers[ALGO_HEADER] = self._guard.algo
        request.headers["accept-encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        if response.status_code >= 300:
            return response
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            return httpx2.Response(
                response.status_code, headers=response.headers,
                stream=_AsyncVerifiedStream(response.stream, self._guard, body),
                extensions=response.extensions)
        data = await response.aread()
        await response.aclose()
        try:
            sig = _header_signature(response.headers)
            if sig is None:
                cid = _completion_id(data)
                if cid is None:
                    raise ResponseSignatureError("unsigned response without a completion id")
                sig = await self._guard.fetch_signature(cid)
            self._guard.check(body, data, sig)
        except TeegateError as e:
            raise self._guard.fail(e) from None
        return httpx2.Response(response.status_code, headers=response.headers, content=data,
                               extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


class AsyncVerifiedClient:
    """Async ``VerifiedClient`` over ``openai.AsyncOpenAI``."""

    def __init__(
        self, base_url: str, *, policy: Policy, api_key: str | None = None,
        signing_algo: str = "ecdsa", now: Clock | None = None, timeout: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        self._guard = _AsyncGuard(base_url, policy, signing_algo, now, min(timeout, 60.0))
        transport = _AsyncVerifyingTransport(httpx2.AsyncHTTPTransport(), self._guard)
        self._http = httpx2.AsyncClient(transport=transport, timeout=timeout)
        self.openai = openai.AsyncOpenAI(
            base_url=self._guard.root + "/v1", api_key=api_key or "teegate-direct",
            http_client=self._http, max_retries=max_retries)

    async def attest(self) -> Verdict:
        return (await self._guard.ensure_attested()).verdict

    @property
    def verdict(self) -> Verdict | None:
        return self._guard.key.verdict if self._guard.key else None

    @property
    def signing_address(self) -> str | None:
        return self._guard.key.signing_address if self._guard.key else None

    @property
    def halted(self) -> TeegateError | None:
        return self._guard.failure

    @property
    def chat(self) -> Any:
        return self.openai.chat

    @property
    def models(self) -> Any:
        return self.openai.models

    async def aclose(self) -> None:
        await self.openai.close()
        await self._guard.aclose()

    async def __aenter__(self) -> AsyncVerifiedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

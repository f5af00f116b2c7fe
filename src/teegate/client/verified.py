"""``VerifiedClient``: the ``openai`` SDK, with attestation before the first call and a
signature check after every call.

The checks sit in an HTTP transport under the SDK, where the exact request and response bytes
are visible. Plain responses are checked before the SDK sees them; streams are passed through
as they arrive and checked when the node's signature comment (or ``data: [DONE]``) arrives,
before the SDK sees the end of the stream. After any failure the client refuses to send.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import httpx2
import openai

from teegate.attest.policy import Policy
from teegate.attest.verdict import Verdict
from teegate.client.errors import ClientHaltedError, ResponseSignatureError
from teegate.client.report import AttestedKey, api_root, attest_node
from teegate.errors import TeegateError, UpstreamError
from teegate.node.signatures import signature_text, verify_response_signature

ALGO_HEADER = "x-teegate-signing-algo"
_COMMENT = b": teegate-signature "
_DONE_EVENTS = (b"data: [DONE]\n\n", b"data: [DONE]\r\n\r\n")


class _Guard:
    """Shared state: the attested key, and the first failure (after which nothing is sent)."""

    def __init__(self, base_url: str, policy: Policy, signing_algo: str,
                 now: Any, timeout: float) -> None:
        self.root = api_root(base_url)
        self.policy = policy
        self.algo = signing_algo
        self.now = now
        self.key: AttestedKey | None = None
        self.failure: TeegateError | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout)

    def fail(self, error: TeegateError) -> TeegateError:
        if self.failure is None:
            self.failure = error
        return error

    def ensure_attested(self) -> AttestedKey:
        with self._lock:
            if self.failure is not None:
                raise ClientHaltedError(f"client halted after a failed verification: "
                                        f"{self.failure}")
            if self.key is None:
                try:
                    self.key = attest_node(
                        self.root, policy=self.policy, signing_algo=self.algo,
                        now=self.now() if self.now is not None else None, client=self._http,
                    )
                except TeegateError as e:
                    raise self.fail(e) from None
            return self.key

    def fetch_signature(self, chat_id: str) -> dict[str, Any]:
        url = f"{self.root}/v1/signature/{chat_id}"
        try:
            resp = self._http.get(url, params={"signing_algo": self.algo})
        except httpx.HTTPError as e:
            raise UpstreamError(f"signature for {chat_id}: {e}") from e
        if resp.status_code != 200:
            raise ResponseSignatureError(f"signature for {chat_id}: HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError as e:
            raise ResponseSignatureError(f"signature for {chat_id} is not JSON") from e
        if not isinstance(data, dict):
            raise ResponseSignatureError(f"signature for {chat_id} is not a JSON object")
        return data

    def check(self, request: bytes, response: bytes, sig: Mapping[str, Any]) -> None:
        """Raise ResponseSignatureError unless ``sig`` is the attested key's signature over
        exactly these bytes."""
        key = self.key
        assert key is not None
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

    def close(self) -> None:
        self._http.close()


def _completion_id(data: bytes) -> str | None:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) else None


class _VerifiedStream(httpx2.SyncByteStream):
    """Passes an SSE body through, verifying the signature before the end of the stream."""

    def __init__(self, inner: httpx2.SyncByteStream, guard: _Guard, request: bytes) -> None:
        self._inner = inner
        self._guard = guard
        self._request = request
        self._seen = bytearray()
        self._verified = False

    def _signature_at(self) -> tuple[int, dict[str, Any]] | None:
        seen = bytes(self._seen)
        pos = seen.find(_COMMENT)
        while pos != -1 and not (pos == 0 or seen[:pos].endswith((b"\n\n", b"\r\n\r\n"))):
            pos = seen.find(_COMMENT, pos + 1)
        if pos == -1:
            return None
        end = seen.find(b"\n", pos)
        if end == -1:
            return None  # comment line not complete yet
        try:
            sig = json.loads(seen[pos + len(_COMMENT) : end])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResponseSignatureError("malformed teegate-signature comment") from e
        if not isinstance(sig, dict):
            raise ResponseSignatureError("malformed teegate-signature comment")
        return pos, sig

    def _fallback(self) -> bool:
        """No comment but the stream ended with [DONE]: ask ``/v1/signature/{id}``."""
        seen = bytes(self._seen)
        for done in _DONE_EVENTS:
            if seen.endswith(done):
                body = seen[: -len(done)]
                break
        else:
            return False
        first = body.split(b"\n", 1)[0]
        cid = _completion_id(first[5:].strip()) if first.startswith(b"data:") else None
        if cid is None:
            raise ResponseSignatureError("unsigned stream without a completion id")
        self._guard.check(self._request, body, self._guard.fetch_signature(cid))
        return True

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                if not self._verified:
                    self._seen += chunk
                    found = self._signature_at()
                    if found is not None:
                        pos, sig = found
                        self._guard.check(self._request, bytes(self._seen[:pos]), sig)
                        self._verified = True
                    elif b"[DONE]" in chunk:
                        self._verified = self._fallback()
                yield chunk
            if not self._verified:
                raise ResponseSignatureError("stream ended without a verifiable signature")
        except TeegateError as e:
            raise self._guard.fail(e) from None

    def close(self) -> None:
        self._inner.close()


class _VerifyingTransport(httpx2.BaseTransport):
    def __init__(self, inner: httpx2.BaseTransport, guard: _Guard) -> None:
        self._inner = inner
        self._guard = guard

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self._guard.ensure_attested()
        if not request.url.path.endswith("/chat/completions"):
            return self._inner.handle_request(request)
        body = request.read()
        request.headers[ALGO_HEADER] = self._guard.algo
        request.headers["accept-encoding"] = "identity"
        response = self._inner.handle_request(request)
        if response.status_code >= 300:
            return response  # the SDK raises its own error; nothing was served
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.SyncByteStream)
            return httpx2.Response(
                response.status_code, headers=response.headers,
                stream=_VerifiedStream(response.stream, self._guard, body),
                extensions=response.extensions,
            )
        data = response.read()
        response.close()
        try:
            self._check_plain(body, data, response.headers)
        except TeegateError as e:
            raise self._guard.fail(e) from None
        return httpx2.Response(response.status_code, headers=response.headers, content=data,
                               extensions=response.extensions)

    def _check_plain(self, body: bytes, data: bytes, headers: httpx2.Headers) -> None:
        sig: Mapping[str, Any]
        if "x-teegate-signature" in headers:
            sig = {
                "text": headers.get("x-teegate-text", ""),
                "signature": headers["x-teegate-signature"],
                "signing_address": headers.get("x-teegate-signing-address", ""),
                "signing_algo": headers.get("x-teegate-signing-algo", ""),
            }
        else:
            cid = _completion_id(data)
            if cid is None:
                raise ResponseSignatureError("unsigned response without a completion id")
            sig = self._guard.fetch_signature(cid)
        self._guard.check(body, data, sig)

    def close(self) -> None:
        self._inner.close()


class VerifiedClient:
    """The ``openai`` SDK pointed at a node (or any provider speaking its report API), with
    every call verified. Use ``client.chat.completions.create(...)`` as with ``openai.OpenAI``.

    ``now`` (a callable returning unix seconds) fixes the verification time, for tests.
    """

    def __init__(
        self, base_url: str, *, policy: Policy, api_key: str | None = None,
        signing_algo: str = "ecdsa", now: Any = None, timeout: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        self._guard = _Guard(base_url, policy, signing_algo, now, min(timeout, 60.0))
        transport = _VerifyingTransport(httpx2.HTTPTransport(), self._guard)
        self._http = httpx2.Client(transport=transport, timeout=timeout)
        self.openai = openai.OpenAI(
            base_url=self._guard.root + "/v1", api_key=api_key or "teegate-direct",
            http_client=self._http, max_retries=max_retries,
        )

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

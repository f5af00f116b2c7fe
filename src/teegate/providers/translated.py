"""Adapters for providers that do not speak chat completions: the gateway hands them the chat
request it would forward and reads back what an OpenAI-compatible provider would have
answered. The wire work is the same keep-alive pool; the translation is pure
(``providers/anthropic.py``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator

from teegate import safejson
from teegate.errors import UpstreamError
from teegate.providers import anthropic
from teegate.providers.adapter import JSON_TYPE, OpenAIAdapter
from teegate.providers.http11 import Http11Pool, Http11Response
from teegate.providers.registry import Platform

_SSE_TYPE = "text/event-stream"
# Anthropic's rate-limit headers under the names OpenAI clients read (x-ratelimit-*).
_RATE_NAMES = {f"anthropic-ratelimit-{kind}-{what}": f"x-ratelimit-{what}-{kind}"
               for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")}
_DROPPED = frozenset({"content-length", "transfer-encoding", "content-type", "connection"})
ANTHROPIC = "chat.completions->anthropic.messages"
"""The translation's name in receipts (the agent's API -> the provider's)."""


class TranslatedResponse(Http11Response):
    """A provider's answer as chat completions: status and headers at once, the body
    translated as it is read. ``body`` is a ready answer (errors, refusals); otherwise the
    provider's own response ``source`` is read and translated, whole or event by event.

    Receipts cite both sides: ``sent_sha256`` is the hash of the request bytes the provider
    was sent, ``received_sha256()`` the hash of the bytes it answered (before translation);
    the pipeline hashes what the agent got."""

    def __init__(self, status: int, headers: dict[str, str], *, body: bytes | None = None,
                 source: Http11Response | None = None,
                 stream: anthropic.StreamTranslator | None = None,
                 sent_sha256: str | None = None, received: bytes | None = None,
                 name: str = ANTHROPIC) -> None:
        # Not backed by a connection of its own: ``source`` owns it (no super().__init__).
        self.status_code = status
        self.headers = headers
        self.name = name
        self.sent_sha256 = sent_sha256  # None: nothing was sent (refused here)
        self._body = body
        self._source = source
        self._stream = stream
        self._received = hashlib.sha256()
        self._got = received is not None or source is not None
        if received is not None:
            self._received.update(received)

    def received_sha256(self) -> str | None:
        """The hash of the provider's own bytes read so far (None: it was never called)."""
        return self._received.hexdigest() if self._got else None

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        if self._source is None or self._stream is None:
            yield await self.aread()
            return
        async for chunk in self._source.aiter_raw():
            self._received.update(chunk)
            out = self._stream.feed(chunk) if not self._stream.done else b""
            if out:
                yield out

    async def aread(self) -> bytes:
        if self._body is not None:
            return self._body
        assert self._source is not None
        data = await self._source.aread()
        self._received.update(data)
        try:
            msg = await safejson.aloads(data)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "message":
            raise UpstreamError("the answer is not an Anthropic Messages object")
        self._body = anthropic.encode(anthropic.from_messages_response(msg, int(time.time())))
        return self._body

    async def aclose(self) -> None:
        if self._source is not None:
            await self._source.aclose()


def _refusal(status: int, message: str, code: str, param: str | None = None
             ) -> TranslatedResponse:
    body = anthropic.encode({"error": {"message": message, "type": "invalid_request_error",
                                       "param": param, "code": code}})
    return TranslatedResponse(status, {"content-type": JSON_TYPE}, body=body)


def _headers(upstream: Http11Response, content_type: str) -> dict[str, str]:
    out = {"content-type": content_type}
    for k, v in upstream.headers.items():
        if k in _RATE_NAMES:
            out[_RATE_NAMES[k]] = v
        elif k not in _DROPPED:
            out[k] = v
    return out


class AnthropicAdapter(OpenAIAdapter):
    """A provider of platform ``anthropic`` (``base_url`` ``https://api.anthropic.com/v1``):
    chat calls go to ``POST /messages`` with ``x-api-key`` and ``anthropic-version``. It
    serves no attestation report and no signatures (platform trust ``standard``)."""

    def __init__(self, provider_id: str, platform: Platform, base_url: str, *,
                 api_key: str | None = None, timeout: float = 600.0,
                 connect_timeout: float = 5.0, max_connections: int = 512,
                 max_body: int = 64 << 20) -> None:
        super().__init__(provider_id, platform, base_url, timeout=timeout,
                         connect_timeout=connect_timeout, max_connections=max_connections,
                         max_body=max_body)
        headers = {"content-type": JSON_TYPE, "accept-encoding": "identity",
                   "anthropic-version": anthropic.API_VERSION, "user-agent": "teegate-gateway"}
        if api_key:
            headers["x-api-key"] = api_key
        self.pool = Http11Pool(self.base_url, connect_timeout=connect_timeout, timeout=timeout,
                               max_idle=max_connections, max_body=max_body, headers=headers)

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> Http11Response:
        """Only chat completions translate to Messages; other endpoints are refused here."""
        if path != "/chat/completions":
            return _refusal(400, f"{self.provider_id}: {path} is not served by platform "
                            "anthropic (only chat completions are translated)",
                            "unsupported_endpoint")
        return await self.chat(body, extra_headers)

    async def chat(self, body: bytes, extra_headers: bytes = b"") -> Http11Response:
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise anthropic.TranslationError("the request is not a JSON object", "body")
            messages = anthropic.to_messages_request(req)
        except (ValueError, UnicodeDecodeError) as e:  # TranslationError is a ValueError
            return _refusal(400, f"{self.provider_id}: {e}", "untranslatable_request",
                            getattr(e, "param", None))
        sent = anthropic.encode(messages)
        sent_sha = hashlib.sha256(sent).hexdigest()
        try:
            resp = await self.pool.post("/messages", sent, extra_headers)
        except UpstreamError as e:
            raise UpstreamError(f"{self.provider_id}: {e}") from None
        status = resp.status_code
        if status != 200:
            try:
                data = await resp.aread()
            except UpstreamError:
                data = b""
            status = 503 if status == anthropic.OVERLOADED else status
            return TranslatedResponse(status, _headers(resp, JSON_TYPE),
                                      body=anthropic.error_body(resp.status_code, data),
                                      sent_sha256=sent_sha, received=data)
        if resp.headers.get("content-type", "").startswith(_SSE_TYPE):
            opts = req.get("stream_options")
            include = isinstance(opts, dict) and opts.get("include_usage") is True
            return TranslatedResponse(200, _headers(resp, _SSE_TYPE), source=resp,
                                      stream=anthropic.StreamTranslator(
                                          int(time.time()), include_usage=include),
                                      sent_sha256=sent_sha)
        return TranslatedResponse(200, _headers(resp, JSON_TYPE), source=resp,
                                  sent_sha256=sent_sha)


def adapter_for(provider_id: str, platform: Platform, base_url: str, *,
                api_key: str | None = None, timeout: float = 600.0,
                max_body: int = 64 << 20) -> OpenAIAdapter:
    """The adapter that speaks ``platform``'s protocol."""
    if platform.protocol == "anthropic-messages":
        return AnthropicAdapter(provider_id, platform, base_url, api_key=api_key,
                                timeout=timeout, max_body=max_body)
    return OpenAIAdapter(provider_id, platform, base_url, api_key=api_key, timeout=timeout,
                         max_body=max_body)

"""Provider adapters: how to call an OpenAI-compatible provider, how to fetch its evidence and
its response signatures. One pooled ``httpx.AsyncClient`` per provider; bodies are forwarded
and returned as bytes, never re-serialised."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from teegate import safejson
from teegate.attest.guard import MAX_REPORT_VALUES
from teegate.errors import EvidenceError, UpstreamError
from teegate.providers.http11 import Http11Pool, Http11Response
from teegate.providers.registry import Platform

JSON_TYPE = "application/json"


def _api_root(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class OpenAIAdapter:
    """An OpenAI-compatible provider at ``base_url`` (``.../v1``).

    The gateway is the only retry loop: the adapter never retries."""

    def __init__(
        self, provider_id: str, platform: Platform, base_url: str, *, api_key: str | None = None,
        timeout: float = 600.0, connect_timeout: float = 5.0, max_connections: int = 512,
        signing_algo: str = "ecdsa", max_body: int = 64 << 20,
    ) -> None:
        self.provider_id = provider_id
        self.platform = platform
        self.base_url = base_url.rstrip("/")
        self.root = _api_root(self.base_url)
        self.signing_algo = signing_algo
        self.max_body = max_body
        headers = {"content-type": JSON_TYPE, "accept-encoding": "identity"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        if platform.signatures == "inline":
            headers["x-teegate-signing-algo"] = signing_algo
        self._headers = headers
        self._chat_url = self.base_url + "/chat/completions"
        # The chat hot path uses a lean keep-alive HTTP/1.1 pool (see http11.py); reports and
        # signatures (rare) use httpx.
        self.pool = Http11Pool(self.base_url, connect_timeout=connect_timeout, timeout=timeout,
                               max_idle=max_connections, max_body=max_body,
                               headers={**headers, "user-agent": "teegate-gateway"})
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> Http11Response:
        """POST the exact ``body`` to ``path`` under the base URL (``/chat/completions``,
        ``/embeddings``, ...); the response with its body not yet read (stream it with
        ``aiter_raw`` or ``aread`` it). Connection failures become UpstreamError."""
        try:
            return await self.pool.post(path, body, extra_headers)
        except UpstreamError as e:
            raise UpstreamError(f"{self.provider_id}: {e}") from None

    async def chat(self, body: bytes, extra_headers: bytes = b"") -> Http11Response:
        return await self.post("/chat/completions", body, extra_headers)

    async def _get_json(self, url: str, params: Mapping[str, str], what: str,
                        timeout: float) -> tuple[dict[str, Any], bytes]:
        try:
            async with self.client.stream("GET", url, params=params, timeout=timeout) as resp:
                content = await self._read_bounded(resp, what)
        except httpx.HTTPError as e:
            raise UpstreamError(f"{self.provider_id}: {what}: {type(e).__name__}: {e}") from e
        if resp.status_code != 200:
            text = content[:200].decode("utf-8", "replace")
            raise UpstreamError(f"{self.provider_id}: {what}: HTTP {resp.status_code}: {text}")
        try:
            data = await safejson.aloads(content, max_values=MAX_REPORT_VALUES)
        except safejson.TooLargeError as e:  # refused before parsing allocated it
            raise EvidenceError(f"{self.provider_id}: {what} is too large: {e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvidenceError(f"{self.provider_id}: {what} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise EvidenceError(f"{self.provider_id}: {what} is not a JSON object")
        return data, content

    async def _read_bounded(self, resp: httpx.Response, what: str) -> bytes:
        """The body, refused past ``max_body``: a report is untrusted input."""
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self.max_body:
                raise UpstreamError(f"{self.provider_id}: {what}: the body exceeds "
                                    f"{self.max_body} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def fetch_report(self, nonce: bytes, *, model: str | None = None,
                           timeout: float = 30.0) -> tuple[dict[str, Any], bytes]:
        """``GET /v1/attestation/report`` with our nonce (REFERENCE §7.1): the parsed report
        and its exact bytes (whose sha256 receipts cite)."""
        params = {"nonce": nonce.hex(), "signing_algo": self.signing_algo}
        if model:
            params["model"] = model
        return await self._get_json(self.root + "/v1/attestation/report", params,
                                    "attestation report", timeout)

    async def fetch_signature(self, chat_id: str, *, model: str | None = None,
                              timeout: float = 30.0) -> dict[str, Any]:
        """``GET /v1/signature/{chat_id}`` (REFERENCE §7.3)."""
        params = {"signing_algo": self.signing_algo}
        if model:
            params["model"] = model
        data, _ = await self._get_json(self.root + "/v1/signature/" + chat_id, params,
                                       "response signature", timeout)
        return data

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.client.aclose()

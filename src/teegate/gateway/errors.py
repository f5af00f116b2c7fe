"""OpenAI-shaped errors and the gateway's refusal classes.

One status and ``code`` per refusal class (docs/gateway.md): 400 invalid_request, 401
invalid_api_key, 402 insufficient_funds, 403 trust_level_unmet, 404 model_not_found, 413
request_too_large, 429 too_many_failed_authentications, 502 upstream_error /
response_signature_invalid, 503 no_provider_available. Refusals a retry cannot fix carry
``x-should-retry: false``."""

from __future__ import annotations

import json
from typing import Any

JSON_CT = (b"content-type", b"application/json")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_funds",
          403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
          429: "rate_limit_error"}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None,
               type_: str | None = None, extra: dict[str, Any] | None = None) -> bytes:
    err: dict[str, Any] = {"message": message,
                           "type": type_ or _TYPES.get(status, "server_error"),
                           "param": param, "code": code}
    if extra:
        err.update(extra)
    return json.dumps({"error": err}).encode()


def should_retry(status: int) -> bool:
    """Whether a client may retry: never for refusals (auth, budget, trust, bad input)."""
    return status >= 500 or status == 429


class GatewayRefusal(Exception):  # noqa: N818 - a refusal, not a bug
    """Raised inside request handling; turned into an OpenAI-shaped error response."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None,
                 extra: dict[str, Any] | None = None, retry: bool | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or []  # e.g. a provider's Retry-After on a 429
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra
        self.retry = should_retry(status) if retry is None else retry
        self.receipt_id: str | None = None
        self.headers = headers or []  # e.g. Retry-After

    def body(self) -> bytes:
        return error_body(self.status, self.message, code=self.code, param=self.param,
                          extra=self.extra)

    def sse_event(self) -> bytes:
        return b"data: " + self.body() + b"\n\n"

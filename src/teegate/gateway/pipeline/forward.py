"""Forward: send the call to the eligible providers in turn until one answers. A provider
that cannot be reached, answers a retryable status, refuses the gateway's credentials, or
breaks before its first body bytes is failed over; nothing reaches the client before the
chosen provider's first bytes."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from teegate.errors import UpstreamError
from teegate.gateway import forwarding
from teegate.gateway.errors import GatewayRefusal
from teegate.node.signatures import NONCE_HEADER
from teegate.providers.translated import TranslatedResponse

if TYPE_CHECKING:
    from teegate.gateway.attestation import Attested, ProviderRuntime
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.endpoint import Endpoint, Parsed, Translation
    from teegate.gateway.state import Gateway
    from teegate.providers.http11 import Http11Response

log = logging.getLogger("teegate.gateway")

_NONCE_LINE = NONCE_HEADER.encode() + b": "
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
# The provider refused the gateway's own credentials: the operator's problem, not the
# agent's; relayed as-is, the SDK would tell the agent its teegate key is wrong.
_PROVIDER_AUTH = frozenset({401, 403})
_RATE_HEADERS = ("retry-after", "retry-after-ms")


@dataclass(slots=True)
class Upstream:
    """The provider that answered and what it answered so far."""

    provider: ProviderRuntime
    attested: Attested | None  # the verdict the call relies on (None: unproven)
    response: Http11Response
    sent: bytes  # the exact bytes the provider was sent
    nonce: str | None  # the nonce it signs with the answer (inline signatures)
    is_sse: bool
    translation: Translation | None = None  # the agent's API is not the provider's
    inject: bool = False  # the gateway asked for the usage chunk: strip it
    data: bytes = b""  # a plain answer's whole body
    first: bytes = b""  # a stream's first bytes
    rest: AsyncIterator[bytes] | None = None  # and the rest


async def forward(gw: Gateway, endpoint: Endpoint, record: CallRecord, call: Parsed,
                  providers: list[ProviderRuntime], extra_headers: bytes) -> Upstream:
    errors: list[str] = []
    limited: list[list[tuple[bytes, bytes]]] = []  # rate-limit headers of each 429
    busy: list[list[tuple[bytes, bytes]]] = []  # and of each 503 (overloaded: Anthropic's 529)
    capped: dict[str, bytes] = {}  # the bytes sent, per token-limit field name
    for p in providers:
        now = gw.clock()
        level = p.level(now)
        if level < call.required or p.blocked(now, call.model):  # changed since planning
            errors.append(f"{p.id}: no longer eligible")
            continue
        attested = p.current(now)
        record.attempts.append(p.id)
        path, sent, translation, inject = endpoint.path, call.forward, None, call.inject
        if endpoint.leg is not None:
            leg = endpoint.leg(gw, p, call)
            path, sent, translation, inject = leg.path, leg.body, leg.translation, leg.inject
        elif call.uncapped and endpoint.cap_field is not None:
            sent = _capped(call, endpoint.cap_field(p),
                           endpoint.cap(gw.config.default_max_tokens), capped)
        record.forwarded_sha256 = None if sent is call.body else _sha(sent)
        # A fresh nonce per attempt that the node signs with the answer: an old answer
        # and its signature, replayed for byte-identical request bytes, do not verify.
        nonce = secrets.token_hex(32) if attested is not None and (
            p.config.platform.signatures == "inline") else None
        t_up = time.perf_counter()
        try:
            resp = await p.adapter.post(path, sent, extra_headers if nonce is None else (
                extra_headers + _NONCE_LINE + nonce.encode() + b"\r\n"))
        except UpstreamError as e:
            p.health.failure(time.monotonic())
            gw.metrics.failovers.labels(p.id, "connect").inc()
            errors.append(str(e))
            continue
        native = resp if isinstance(resp, TranslatedResponse) else None
        if native is not None and native.sent_sha256 is not None:
            record.forwarded_sha256 = native.sent_sha256  # what the provider itself got
        status = resp.status_code
        if status in _RETRYABLE or status in _PROVIDER_AUTH:
            if status == 429:
                limited.append(_rate_limit(resp))
            elif status == 503:
                busy.append(_rate_limit(resp))
            await resp.aclose()
            p.health.failure(time.monotonic())
            gw.metrics.failovers.labels(p.id, str(status)).inc()
            errors.append(f"{p.id}: HTTP {status}" + (
                " (the provider refused the gateway's credentials: check its api_key_env)"
                if status in _PROVIDER_AUTH else ""))
            if status in _PROVIDER_AUTH:
                log.warning("provider %s refused the gateway's credentials (HTTP %d)",
                            p.id, status)
            continue
        # Nothing reaches the client before the provider's first body bytes: a provider
        # that breaks before them is failed over like one that never answered.
        is_sse = call.stream and status == 200 and resp.headers.get(
            "content-type", "").startswith("text/event-stream")
        up = Upstream(p, attested, resp, sent, nonce, is_sse, translation, inject)
        try:
            if is_sse:
                up.rest = resp.aiter_raw()
                up.first = await anext(up.rest, b"")
            else:
                up.data = await resp.aread()
        except UpstreamError as e:
            await resp.aclose()
            p.health.failure(time.monotonic())
            gw.metrics.failovers.labels(p.id, "broken").inc()
            errors.append(f"{p.id}: response broke before its first byte: {e}")
            continue
        elapsed = time.perf_counter() - t_up
        gw.metrics.upstream_latency.labels(p.id).observe(elapsed)
        p.health.success(elapsed * 1000)
        record.served_trust = level.label
        record.translation = _named(translation.name if translation is not None else None,
                                    native.name if native is not None else None)
        return up
    if limited and len(limited) == len(record.attempts):
        # Every provider tried is rate-limiting: say so, and when to come back, so the
        # client waits instead of retrying a 502 at once.
        record.outcome, record.status = "failed", 429
        record.error = "; ".join(errors)
        raise GatewayRefusal(429, "every eligible provider is rate-limiting this gateway: "
                             + "; ".join(errors), code="rate_limited", headers=_soonest(limited))
    if busy and len(limited) + len(busy) == len(record.attempts):
        # Every provider tried is overloaded (or rate-limiting): a retry later may succeed,
        # which a 502 does not say.
        record.outcome, record.status = "failed", 503
        record.error = "; ".join(errors)
        raise GatewayRefusal(503, "every eligible provider is overloaded: " + "; ".join(errors),
                             code="upstream_overloaded", retry=True,
                             headers=_soonest(limited + busy))
    record.outcome, record.status = "failed", 502
    record.error = "; ".join(errors)
    raise GatewayRefusal(502, "every eligible provider failed: " + "; ".join(errors),
                         code="upstream_unavailable")


def _named(endpoint: str | None, adapter: str | None) -> str | None:
    """The whole translation, agent's API first: the endpoint's (e.g. responses -> chat)
    then the adapter's (chat -> the provider's own API), joined where they meet."""
    if endpoint is None or adapter is None:
        return endpoint or adapter
    middle = endpoint.rsplit("->", 1)[-1]
    return endpoint + adapter[len(middle):] if adapter.startswith(middle + "->") else (
        f"{endpoint}, {adapter}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _capped(call: Parsed, name: str, cap: int, done: dict[str, bytes]) -> bytes:
    """The request with the output cap the hold assumed (``cap`` per choice), under the
    field the provider expects: without it a provider may produce far more than was held,
    and the hold would cap what is charged."""
    out = done.get(name)
    if out is None:
        out = done[name] = (forwarding.with_keys(call.forward, {name: cap})
                            if name not in call.req
                            else forwarding.encode({**call.req, name: cap}))
    return out


def _rate_limit(resp: Http11Response) -> list[tuple[bytes, bytes]]:
    """A provider's rate-limit headers: ``Retry-After`` (seconds; an HTTP date is kept as it
    is) and ``x-ratelimit-*``."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()
            if k.lower() in _RATE_HEADERS or k.lower().startswith("x-ratelimit-")]


def _soonest(limited: list[list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
    """The headers of the provider that asks for the shortest wait (whole seconds), with a
    ``Retry-After`` of 1 s when none said."""
    def wait(h: list[tuple[bytes, bytes]]) -> float:
        for k, v in h:
            if k.lower() == b"retry-after" and v.strip().isdigit():
                return float(v.strip())
        return float("inf")

    best = min(limited, key=wait)
    if not any(k.lower() == b"retry-after" for k, _ in best):
        best = [*best, (b"retry-after", b"1")]
    return best

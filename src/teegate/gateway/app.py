"""The gateway's ASGI app.

``POST /v1/chat/completions`` is served by a raw ASGI handler in front of the FastAPI app (no
request/response models on the hot path: the body is parsed once with ``json.loads`` to read
model, stream and max_tokens and forwarded as the original bytes unless the gateway must
change it). Everything else (models, providers, admin, health, metrics, and the wallet and
receipt routers) is a FastAPI app behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from teegate import safejson
from teegate.errors import ConfigError, TeegateError, UpstreamError
from teegate.filemodes import secure_data_dir
from teegate.framing import framing_problem
from teegate.framing import refuse as refuse_framing
from teegate.gateway import forwarding
from teegate.gateway.attestation import AttestationManager, Attested, ProviderRuntime
from teegate.gateway.auth import Agent, KeyCache, Principal, bearer
from teegate.gateway.calls import Accounting, CallRecord, Receipts
from teegate.gateway.collateral import CollateralSource
from teegate.gateway.config import GatewayConfig
from teegate.gateway.errors import JSON_CT, GatewayRefusal, error_body
from teegate.gateway.metrics import Metrics
from teegate.gateway.replay import created_time, expires_at, freshness_problem, response_key
from teegate.gateway.store import GatewayStore
from teegate.gateway.streaming import SseRelay, StreamFailure
from teegate.gateway.throttle import AuthThrottle
from teegate.ledger.accounting import FREE
from teegate.ledger.model import MAX_AMOUNT
from teegate.ledger.pricing import Price
from teegate.ledger.usage import read_usage
from teegate.node.signatures import NONCE_HEADER, signature_text
from teegate.providers.adapter import OpenAIAdapter
from teegate.providers.http11 import Http11Response
from teegate.redact import Redactor
from teegate.routing.health import Health
from teegate.routing.select import Candidate, plan_route
from teegate.routing.trust import TrustLevel, parse_trust

if TYPE_CHECKING:
    from teegate.ledger import Ledger
    from teegate.receipts import ReceiptLog

log = logging.getLogger("teegate.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHAT_PATH = "/v1/chat/completions"
TRUST_HEADER = b"x-teegate-trust"
CONVERSATION_HEADER = b"x-teegate-conversation"
VOUCHER_HEADER = b"x-teegate-voucher"
_SIG_HEADERS = ("x-teegate-signature", "x-teegate-signing-address", "x-teegate-signing-algo",
                "x-teegate-text")
_NONCE_LINE = NONCE_HEADER.encode() + b": "
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_RECEIPT_HEADERS = frozenset({b"x-teegate-receipt", b"x-receipt-id"})
# The provider refused the gateway's own credentials: the operator's problem, not the
# agent's; relayed as-is, the SDK would tell the agent its teegate key is wrong.
_PROVIDER_AUTH = frozenset({401, 403})
# Client headers forwarded unchanged: end-to-end encryption toward the model TEE (NEAR AI
# E2EE, REFERENCE §7.5) and request correlation. Everything else stays at the gateway.
FORWARDED = frozenset({b"x-signing-algo", b"x-client-pub-key", b"x-model-pub-key",
                       b"x-encryption-version", b"x-request-id"})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Disconnected(Exception):  # noqa: N818 - an outcome
    pass


class _ClientGone(Exception):  # noqa: N818 - an outcome
    pass


class _ReceiptLost(Exception):  # noqa: N818 - an outcome
    """A streamed answer whose receipt could not be committed: the connection is dropped
    before the last byte, so the client sees an incomplete answer, not a receipt id that
    does not exist."""


class Gateway:
    """State shared by all requests of one gateway process."""

    def __init__(
        self, config: GatewayConfig, store: GatewayStore, *, clock: Callable[[], float] = time.time,
        accounting: Accounting | None = None, receipts: Receipts | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self.accounting = accounting
        self.receipts = receipts
        self.keys = KeyCache(store, config.admin_key)
        self.throttle = AuthThrottle(config.auth_fail_limit, config.auth_fail_window_s)
        c = config.collateral
        self.redact = Redactor([*(pc.base_url for pc in config.providers), c.pccs_url,
                                c.kds_url, c.nvidia_ocsp_url, c.nvidia_rim_url])
        self.providers: list[ProviderRuntime] = []
        for pc in config.providers:
            adapter = OpenAIAdapter(pc.id, pc.platform, pc.base_url, api_key=pc.api_key,
                                    timeout=pc.timeout, max_body=config.max_response_bytes)
            self.providers.append(ProviderRuntime(
                pc, adapter, Health(config.allowed_fails, config.cooldown_s)))
        self.by_id = {p.id: p for p in self.providers}
        self.by_model: dict[str, list[ProviderRuntime]] = {}
        for p in self.providers:
            for m in p.config.models:
                self.by_model.setdefault(m, []).append(p)
        self.manager = AttestationManager(
            self.providers, store, self.metrics, quarantine_s=config.quarantine_s,
            poll_s=config.state_poll_s, clock=clock,
            collateral=CollateralSource(config.collateral, config.data_dir)
            if any(p.attestable for p in self.providers) else None)
        self.started = False
        self.closers: list[Callable[[], None]] = []  # run after shutdown (logs, ledger)
        # called with each concluded call, before its last byte (gateway/self_attestation.py)
        self.concluded_hooks: list[Callable[[CallRecord], None]] = []
        self._poll: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        # Holds of calls not settled yet: renewed so a long call outlives its first expiry.
        self._running_holds: set[str] = set()
        self._lost_holds: set[str] = set()  # running calls whose hold is gone: cut them off
        # Settlements and receipts run here; their commits are shared (group commit).
        self._pool = concurrent.futures.ThreadPoolExecutor(64, "teegate-conclude")

    # ------------------------------------------------------------------ life cycle

    async def startup(self) -> None:
        def ensure_agents() -> None:
            for a in self.config.agents:
                self.store.ensure_agent(a.id, trust=a.trust.label, min_trust=a.min_trust.label,
                                        owner=a.owner)

        await anyio.to_thread.run_sync(ensure_agents)
        await anyio.to_thread.run_sync(self.keys.reload)
        await self.manager.start()
        self._poll = asyncio.create_task(self._reload_keys())
        if self.accounting is not None:
            self._renewer = asyncio.create_task(self._renew_holds())
        self.started = True
        for p in self.providers:
            log.info("provider %s (%s): %s, trust level %s%s", p.id, p.config.platform.name,
                     p.status, p.level(self.clock()).label,
                     " [DEVELOPMENT]" if p.config.development else "")

    async def shutdown(self) -> None:
        for task in (self._poll, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.manager.stop()
        for p in self.providers:
            await p.adapter.aclose()
        self._pool.shutdown(wait=True)
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("shutdown: closing a resource failed")

    async def _renew_holds(self) -> None:
        """Every third of ``hold_seconds``, give running calls' holds a full hold time again:
        otherwise the expiry sweep releases the hold of a call that outlives it (a slow reader
        can stretch a stream) and its settlement finds nothing to charge."""
        assert self.accounting is not None
        while True:
            await asyncio.sleep(self.config.hold_s / 3)
            running = list(self._running_holds)
            if not running:
                continue
            try:
                await anyio.to_thread.run_sync(self.accounting.renew, running)
                lost = await anyio.to_thread.run_sync(self.accounting.lost, running)
            except Exception:
                log.exception("ledger: cannot renew the holds of %d running calls",
                              len(running))
                continue
            for h in lost & self._running_holds:  # released under a running call
                log.error("ledger: hold %s was released while its call was running (an "
                          "expiry sweep, perhaps from a host whose clock runs ahead); the "
                          "call is cut off", h)
                self._lost_holds.add(h)

    async def _reload_keys(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_poll_s)
            try:
                await anyio.to_thread.run_sync(self.keys.reload)
            except Exception:
                log.exception("cannot reload agent keys")

    # ------------------------------------------------------------------ helpers

    async def authenticate(self, authorization: str | None, client: str | None = None
                           ) -> Agent:
        key = bearer(authorization)
        if key is None:
            raise GatewayRefusal(401, "missing API key: send 'Authorization: Bearer <key>'",
                                 code="invalid_api_key")
        self.check_throttle(client)
        agent = self.keys.cached(key)
        if agent is None:
            agent = await anyio.to_thread.run_sync(self.keys.lookup, key)
        if agent is None:
            self.throttle.failed(client)
        if agent is None or agent.kind != "agent":
            raise GatewayRefusal(401, "invalid API key", code="invalid_api_key")
        return agent

    def redacted(self, r: GatewayRefusal) -> GatewayRefusal:
        """``r`` without upstream addresses in what the agent reads (teegate.redact); the
        operator's log keeps them."""
        message = self.redact(r.message)
        if message != r.message:
            log.info("refusal as sent to the agent, unredacted: %s", r.message)
        r.message = message
        if r.extra:
            r.extra = self.redact.value(r.extra)  # type: ignore[assignment]
        return r

    def check_throttle(self, client: str | None) -> None:
        """429 while ``client`` has used up its failed authentications: before its key is
        checked, the right key included (teegate.gateway.throttle)."""
        wait = self.throttle.retry_after(client)
        if wait is not None:
            raise GatewayRefusal(
                429, f"too many failed authentications from this address; retry in {wait} s",
                code="too_many_failed_authentications", retry=False,
                headers=[(b"retry-after", str(wait).encode())])

    def candidates(self, model: str, now: float) -> list[Candidate]:
        out = []
        for p in self.by_model.get(model, ()):
            price = p.config.prices.get(model, Price())
            out.append(Candidate(p.id, frozenset(p.config.models), p.level(now),
                                 p.blocked(now, model),
                                 p.health.cooldown_until, price.input + price.output,
                                 p.health.latency_ms, p.health.failures))
        return out

    def _temporary(self, provider_id: str, now: float) -> bool:
        """Whether a refused provider may qualify again soon: blocked for now, or attestable
        but without a current verdict (pending, expired, re-attesting)."""
        p = self.by_id[provider_id]
        return p.blocked(now) is not None or (
            p.attestable and p.current(now) is None and p.status != "unproven")

    def worst_case(self, providers: list[ProviderRuntime], model: str, prompt_bound: int,
                   max_tokens: int) -> int:
        return max((p.config.prices.get(model, Price()).cost(prompt_bound, max_tokens)
                    for p in providers), default=0)

    # ------------------------------------------------------------------ chat

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        hdrs: dict[bytes, bytes] = {}
        extra: list[bytes] = []
        for k, v in scope["headers"]:
            if k == TRUST_HEADER and k in hdrs:  # repeated: every value must agree (_parse)
                hdrs[k] += b"," + v
            elif k in (b"authorization", b"content-length", TRUST_HEADER, CONVERSATION_HEADER,
                       VOUCHER_HEADER):
                hdrs[k] = v
            elif k in FORWARDED and b"\r" not in v and b"\n" not in v:
                extra.append(k + b": " + v + b"\r\n")
        if extra:
            hdrs[b"\0extra"] = b"".join(extra)
        counted = False  # _serve records (and counts) every call it sees
        try:
            auth = hdrs.get(b"authorization")
            client = scope.get("client")
            agent = await self.authenticate(auth.decode("latin-1") if auth else None,
                                            client[0] if client else None)
            body = await self._read_body(receive, hdrs.get(b"content-length"))
            counted = True
            await self._serve(agent, body, hdrs, send, receive, t0)
        except GatewayRefusal as r:
            if not counted:
                self.metrics.requests.labels("", "refused").inc()
            await _send_error(send, self.redacted(r))
        except _Disconnected:
            return
        except _ReceiptLost as e:  # the response is left incomplete on purpose
            log.error("chat: %s; the answer was cut off before its end", e)
            return
        except Exception:  # a bug or a failing store: an OpenAI-shaped 500, no traceback out
            log.exception("chat: unexpected error")
            # (the _serve record, if any, was finished: its hold is settled or voided)
            with contextlib.suppress(Exception):  # fails when the response had started
                await _send_error(send, GatewayRefusal(
                    500, "internal error in the gateway", code="internal_error"))

    async def _read_body(self, receive: Receive, content_length: bytes | None) -> bytes:
        limit = self.config.max_body_bytes
        if content_length is not None:
            try:
                n = int(content_length)
            except ValueError:
                raise GatewayRefusal(400, "bad Content-Length", code="invalid_request"
                                     ) from None
            if n > limit:
                raise GatewayRefusal(413, f"request body of {n} bytes exceeds the limit of "
                                     f"{limit} bytes", code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise GatewayRefusal(413, f"request body exceeds the limit of {limit} bytes",
                                     code="request_too_large")
            chunks.append(part)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _parse(self, body: bytes, req: Any, trust_header: bytes | None, agent: Agent
               ) -> tuple[dict[str, Any], str, bool, TrustLevel, bytes, bool, int, bool]:
        """(request, model, stream, required level, bytes to forward, usage injected, the
        output tokens the call may produce, whether the request names no token limit), from
        the body and its JSON (``_load_request``)."""
        if not isinstance(req, dict):
            raise GatewayRefusal(400, "request body must be a JSON object", code="invalid_json")
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayRefusal(400, "'model' is required and must be a string",
                                 code="invalid_request", param="model")
        if not isinstance(req.get("messages"), list):
            raise GatewayRefusal(400, "'messages' is required and must be an array",
                                 code="invalid_request", param="messages")
        stream = req.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise GatewayRefusal(400, "'stream' must be a boolean", code="invalid_request",
                                 param="stream")
        changed = False
        asked: TrustLevel | None = None
        limits = [_token_limit(req, name) for name in ("max_completion_tokens", "max_tokens")]
        opts = req.get("stream_options")
        if opts is not None and (not isinstance(opts, dict) or not isinstance(
                opts.get("include_usage", False), bool)):
            raise GatewayRefusal(400, "'stream_options' must be an object whose "
                                 "'include_usage' is a boolean", code="invalid_request",
                                 param="stream_options")
        if "@" in model and model not in self.by_model:
            base, _, suffix = model.rpartition("@")
            try:
                asked = parse_trust(suffix)
            except TeegateError as e:
                if base in self.by_model:  # a mistyped level, not another model
                    raise GatewayRefusal(400, f"model suffix: {e}", code="invalid_trust_level",
                                         param="model") from None
                asked = None
            if asked is not None:
                model, changed = base, True
                req["model"] = base
        if trust_header is not None:
            try:
                levels = {parse_trust(v) for v in trust_header.decode("latin-1").split(",")}
            except TeegateError as e:
                raise GatewayRefusal(400, f"X-Teegate-Trust: {e}", code="invalid_trust_level",
                                     param="x-teegate-trust") from None
            if len(levels) != 1:
                raise GatewayRefusal(400, "X-Teegate-Trust is repeated with different levels",
                                     code="invalid_trust_level", param="x-teegate-trust")
            from_header = levels.pop()
            if asked is not None and asked != from_header:
                raise GatewayRefusal(400, "X-Teegate-Trust and the model suffix name different "
                                     "trust levels", code="invalid_trust_level", param="model")
            asked = from_header
        required = max(asked if asked is not None else agent.trust, agent.min_trust)
        inject = False
        added: dict[str, Any] = {}  # keys the client did not send: appended to its bytes
        if stream:
            opts = req.get("stream_options")
            if "stream_options" not in req:
                added["stream_options"] = {"include_usage": True}
                inject = True
            elif opts is None or (isinstance(opts, dict) and not opts.get("include_usage")):
                req["stream_options"] = {**(opts or {}), "include_usage": True}
                inject = changed = True
        req.update(added)
        forward = (forwarding.encode(req) if changed
                   else forwarding.with_keys(body, added) if added else body)
        # The output bound the hold covers: a provider may honour either limit, and each of
        # ``n`` choices may use all of it.
        given = [n for n in limits if n is not None]
        choices = _token_limit(req, "n") or 1
        out = (max(given) if given else self.config.default_max_tokens) * choices
        return req, model, bool(stream), required, forward, inject, out, not given

    async def _serve(self, agent: Agent, body: bytes, hdrs: dict[bytes, bytes], send: Send,
                     receive: Receive, t0: float) -> CallRecord:
        conv = hdrs.get(CONVERSATION_HEADER)
        try:
            if conv is not None and not conv.strip():
                # Sent but empty: the caller meant a conversation; charging the wallet
                # instead would spend outside the budget it reserved.
                raise GatewayRefusal(400, "X-Teegate-Conversation is empty: name a "
                                     "conversation or leave the header out",
                                     code="invalid_conversation",
                                     param="x-teegate-conversation")
            req, model, stream, required, forward, inject, limit, uncapped = self._parse(
                body, await _load_request(body), hdrs.get(TRUST_HEADER), agent)
        except GatewayRefusal as r:  # refused calls get a record (and receipt) too
            self.redacted(r)  # before its hash goes into the receipt
            bad = CallRecord(agent.id, "", agent.trust.label, time.time(), _sha(body),
                             conversation=conv.decode("latin-1") if conv else None,
                             status=r.status, outcome="refused", error=r.message,
                             returned_sha256=_sha(r.body()))
            if self.receipts is not None:
                bad.receipt_id = self.receipts.new_id()
            await self._finish(bad, t0)
            r.receipt_id = bad.receipt_id if bad.receipt_committed else None
            raise
        record = CallRecord(agent.id, model, required.label, time.time(), _sha(body),
                            conversation=conv.decode("latin-1") if conv else None, stream=stream)
        if VOUCHER_HEADER in hdrs:  # paid by an on-chain channel (teegate.chain.accounting)
            record.voucher = hdrs[VOUCHER_HEADER].decode("latin-1")
        record.output_cap = limit
        try:
            return await self._serve_record(record, req, model, stream, required, forward,
                                            inject, body, send, receive,
                                            hdrs.get(b"\0extra", b""), limit, uncapped)
        except GatewayRefusal as r:
            self.redacted(r)  # before its hash goes into the receipt
            if record.outcome == "pending":
                record.outcome = "failed"
            record.status = record.status if record.status >= 400 else r.status
            record.error = record.error or r.message
            record.returned_sha256 = _sha(r.body())
            if self.receipts is not None:
                record.receipt_id = record.receipt_id or self.receipts.new_id()
            await self._finish(record, t0)
            r.receipt_id = record.receipt_id if record.receipt_committed else None
            raise
        finally:
            await self._finish(record, t0)  # a no-op when concluded above

    async def _serve_record(self, record: CallRecord, req: dict[str, Any], model: str,
                            stream: bool, required: TrustLevel, forward: bytes, inject: bool,
                            body: bytes, send: Send, receive: Receive,
                            extra_headers: bytes = b"", limit: int = 0,
                            uncapped: bool = False) -> CallRecord:
        stuck = self.receipts.stuck if self.receipts is not None else None
        if stuck is not None:  # fail closed: no call without a receipt the log can take
            record.outcome, record.status = "refused", 503
            raise GatewayRefusal(503, f"the receipt log cannot append ({stuck}); calls are "
                                 "refused until it can", code="log_unavailable")
        if model not in self.by_model:
            record.outcome, record.status = "refused", 404
            raise GatewayRefusal(404, f"the model {model!r} does not exist or no provider "
                                 "serves it", code="model_not_found", param="model")
        now = self.clock()
        plan = plan_route(self.candidates(model, now), model, required, now=time.monotonic(),
                          prefer=self.config.prefer)
        if not plan.eligible:
            record.outcome = "refused"
            temporary = any(self._temporary(r.provider_id, now) for r in plan.refused)
            status, code = (503, "no_provider_available") if temporary else (
                403, "trust_level_unmet")
            record.status = status
            record.error = plan.explain()
            raise GatewayRefusal(status, f"no provider can serve {model!r} at trust level "
                                 f"{required.label}: {plan.explain()}", code=code, param="model",
                                 extra={"considered": [{"provider": r.provider_id,
                                                        "reason": r.reason}
                                                       for r in plan.refused]})
        providers = [self.by_id[c.provider_id] for c in plan.eligible]
        if self.accounting is not None:
            from teegate.ledger.pricing import estimate_prompt_tokens

            max_tokens = limit or self.config.default_max_tokens
            try:
                record.prompt_estimate = estimate_prompt_tokens(req)
            except UnicodeEncodeError:  # a lone surrogate (valid JSON): bound by the bytes
                record.prompt_estimate = estimate_prompt_tokens(forward)
            try:
                worst = self.worst_case(providers, model, record.prompt_estimate, max_tokens)
            except TeegateError as e:  # beyond any amount the ledger can hold
                record.outcome, record.status = "refused", 400
                raise GatewayRefusal(400, f"the call's worst case cannot be held: {e}",
                                     code="invalid_request", param="max_tokens") from None
            if worst > 0 or record.conversation:  # a free call's conversation is checked
                try:
                    record.hold_id = await anyio.to_thread.run_sync(
                        self.accounting.hold, record, worst)
                    if record.hold_id != FREE:  # nothing held for a free call
                        self._running_holds.add(record.hold_id)
                except GatewayRefusal as r:
                    record.outcome, record.status = "refused", r.status
                    raise
        upstream: Http11Response | None = None
        is_sse = False
        body_iter: AsyncIterator[bytes] | None = None
        first = data = b""
        chosen: ProviderRuntime | None = None
        attested: Attested | None = None
        errors: list[str] = []
        limited: list[list[tuple[bytes, bytes]]] = []  # rate-limit headers of each 429
        capped: dict[str, bytes] = {}  # the bytes sent, per token-limit field name
        sent = forward
        nonce: str | None = None
        for p in providers:
            now = self.clock()
            level = p.level(now)
            if level < required or p.blocked(now, record.model):  # changed since planning
                errors.append(f"{p.id}: no longer eligible")
                continue
            attested = p.current(now)
            record.attempts.append(p.id)
            sent = forward if not uncapped else self._capped(req, forward, p, capped)
            record.forwarded_sha256 = None if sent is body else _sha(sent)
            # A fresh nonce per attempt that the node signs with the answer: an old answer
            # and its signature, replayed for byte-identical request bytes, do not verify.
            nonce = secrets.token_hex(32) if attested is not None and (
                p.config.platform.signatures == "inline") else None
            t_up = time.perf_counter()
            try:
                resp = await p.adapter.chat(sent, extra_headers if nonce is None else (
                    extra_headers + _NONCE_LINE + nonce.encode() + b"\r\n"))
            except UpstreamError as e:
                p.health.failure(time.monotonic())
                self.metrics.failovers.labels(p.id, "connect").inc()
                errors.append(str(e))
                continue
            if resp.status_code in _RETRYABLE or resp.status_code in _PROVIDER_AUTH:
                if resp.status_code == 429:
                    limited.append(_rate_limit(resp))
                await resp.aclose()
                p.health.failure(time.monotonic())
                self.metrics.failovers.labels(p.id, str(resp.status_code)).inc()
                errors.append(f"{p.id}: HTTP {resp.status_code}" + (
                    " (the provider refused the gateway's credentials: check its api_key_env)"
                    if resp.status_code in _PROVIDER_AUTH else ""))
                if resp.status_code in _PROVIDER_AUTH:
                    log.warning("provider %s refused the gateway's credentials (HTTP %d)",
                                p.id, resp.status_code)
                continue
            # Nothing reaches the client before the provider's first body bytes: a provider
            # that breaks before them is failed over like one that never answered.
            is_sse = stream and resp.status_code == 200 and resp.headers.get(
                "content-type", "").startswith("text/event-stream")
            try:
                if is_sse:
                    body_iter = resp.aiter_raw()
                    first = await anext(body_iter, b"")
                else:
                    data = await resp.aread()
            except UpstreamError as e:
                await resp.aclose()
                p.health.failure(time.monotonic())
                self.metrics.failovers.labels(p.id, "broken").inc()
                errors.append(f"{p.id}: response broke before its first byte: {e}")
                continue
            elapsed = time.perf_counter() - t_up
            self.metrics.upstream_latency.labels(p.id).observe(elapsed)
            p.health.success(elapsed * 1000)
            upstream, chosen = resp, p
            record.served_trust = level.label
            break
        if upstream is None or chosen is None:
            if limited and len(limited) == len(record.attempts):
                # Every provider tried is rate-limiting: say so, and when to come back, so
                # the client waits instead of retrying a 502 at once.
                record.outcome, record.status = "failed", 429
                record.error = "; ".join(errors)
                raise GatewayRefusal(429, "every eligible provider is rate-limiting this "
                                     "gateway: " + "; ".join(errors), code="rate_limited",
                                     headers=_soonest(limited))
            record.outcome, record.status = "failed", 502
            record.error = "; ".join(errors)
            raise GatewayRefusal(502, "every eligible provider failed: " + "; ".join(errors),
                                 code="upstream_unavailable")
        record.provider, record.platform = chosen.id, chosen.config.platform.name
        record.verdict_digest = attested.digest if attested is not None else None
        record.attestation = attested.ref(record.model) if attested is not None else None
        record.status = upstream.status_code
        headers = self._response_headers(chosen, attested, record, upstream)
        if is_sse:
            await self._relay_stream(chosen, attested, record, upstream, first, body_iter,
                                     sent, inject, sent is body, headers, send, receive, nonce)
        else:
            await self._relay_plain(chosen, attested, record, upstream, data, sent, headers,
                                    send, nonce)
        return record

    def _capped(self, req: dict[str, Any], forward: bytes, p: ProviderRuntime,
                done: dict[str, bytes]) -> bytes:
        """The request with the output cap the hold assumed (``default_max_tokens`` per
        choice), under the field the provider expects: without it a provider may produce
        far more than was held, and the hold would cap what is charged."""
        name = p.config.max_tokens_field
        out = done.get(name)
        if out is None:
            cap = self.config.default_max_tokens
            out = done[name] = (forwarding.with_keys(forward, {name: cap}) if name not in req
                                else forwarding.encode({**req, name: cap}))
        return out

    def _response_headers(self, p: ProviderRuntime, a: Attested | None, record: CallRecord,
                          upstream: Http11Response) -> list[tuple[bytes, bytes]]:
        ct = upstream.headers.get("content-type", "application/json")
        trust = record.served_trust or ""
        if a is not None and _after_delivery(p):  # the operator's choice, said where seen
            record.verified_after_delivery = True
            trust += "; verified-after-delivery"
        h = [(b"content-type", ct.encode("latin-1")), _request_id(),
             (b"x-teegate-provider", p.id.encode()),
             (b"x-teegate-platform", p.config.platform.name.encode()),
             (TRUST_HEADER, trust.encode()),
             (b"x-teegate-verdict", (a.digest if a is not None else "none").encode())]
        if a is not None and a.development:
            h.append((b"x-teegate-development", b"true"))
        h += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers.items()
              if k.startswith("x-ratelimit-")]  # the provider's budget, as OpenAI sends it
        if self.receipts is not None:
            record.receipt_id = self.receipts.new_id()
            rid = record.receipt_id.encode()
            h += [(b"x-teegate-receipt", rid), (b"x-receipt-id", rid)]  # the second: ACI's
        return h

    async def _relay_plain(self, p: ProviderRuntime, a: Attested | None, record: CallRecord,
                           upstream: Http11Response, data: bytes, forward: bytes,
                           headers: list[tuple[bytes, bytes]], send: Send,
                           nonce: str | None = None) -> None:
        await upstream.aclose()
        record.response_sha256 = record.returned_sha256 = _sha(data)
        mode = p.config.platform.signatures
        if a is not None and mode == "inline":
            sig = upstream.headers.get("x-teegate-signature")
            why: str | None
            if sig is None:
                why = "the response carries no signature"
                self.manager.signature_failed(p, why)
            else:
                why = self.manager.check_signature(
                    p, a, text=upstream.headers.get("x-teegate-text", ""), signature=sig,
                    address=upstream.headers.get("x-teegate-signing-address", ""),
                    algo=upstream.headers.get("x-teegate-signing-algo", ""),
                    expected_text=signature_text(forward, data, nonce))
            if why is not None:
                record.outcome, record.status = "failed", 502
                record.signature_check = f"failed: {why}"
                raise GatewayRefusal(502, f"{p.id}: response signature check failed: {why}; "
                                     "the response was withheld", code="response_signature_invalid")
            record.signature_check = "verified"
            record.signature = {k: upstream.headers.get(k, "") for k in _SIG_HEADERS}
            if record.forwarded_sha256 is None:  # client's bytes unchanged: it may check too
                headers += [(k.encode(), v.encode()) for k, v in record.signature.items()]
        # Only a 2xx with a body is a completion: a redirect (misconfigured base_url) or a
        # 204 delivered nothing, so its hold is voided rather than charged at the worst case.
        if 200 <= upstream.status_code < 300 and upstream.status_code != 204:
            with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
                obj = await safejson.aloads(data)
                usage = obj.get("usage")
                record.usage = usage if isinstance(usage, dict) else None
                if isinstance(obj.get("id"), str):  # the receipt's (ACI) chat_id
                    record.chat_id = obj["id"]
                    record.created = obj.get("created")
                    if a is not None and mode == "endpoint":
                        record.signature_check = "pending"
            record.outcome = "success"
        else:
            record.outcome = "failed"
        record.returned_sha256 = _sha(data)
        headers.append((b"content-length", str(len(data)).encode()))
        if record.verified_after_delivery and data:
            await self._deliver_then_conclude(record, upstream.status_code, headers, data, send)
            return
        if a is not None and mode == "endpoint" and record.outcome == "success" and (
                record.signature_check is None):
            self._no_answer_id(p, record)
        if record.signature_check == "pending":  # before any byte reaches the agent
            await self._verify_endpoint(p, record)
        if record.signature_check is not None and record.signature_check != "verified":
            refusal = self.redacted(GatewayRefusal(
                502, f"{p.id}: response signature check failed: "
                f"{record.signature_check.removeprefix('failed: ')}; the response was "
                "withheld", code="response_signature_invalid"))
            record.status, record.error = 502, refusal.message
            record.returned_sha256 = _sha(refusal.body())
            await self._conclude(record)  # voided (_void_if_unverified), receipt written
            raise refusal
        withheld = GatewayRefusal(503, "the call's hold was released before it ended (an "
                                  "expiry sweep); nothing was charged and the answer is "
                                  "withheld", code="hold_lost")
        record.withheld_sha256 = _sha(withheld.body())
        if not await self._conclude(record):  # nothing sent yet: settle, commit the receipt
            headers = [h for h in headers if h[0] not in _RECEIPT_HEADERS]
        if record.hold_lost:
            raise withheld  # the receipt (committed) says so: failed, charged 0
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _deliver_then_conclude(self, record: CallRecord, status: int,
                                     headers: list[tuple[bytes, bytes]], data: bytes,
                                     send: Send) -> None:
        """``verify_after_delivery``: the answer goes out at once but for its last byte,
        which waits for the signature check, the settlement and the receipt (a receipt id
        handed out must exist); a failure there cuts the answer off instead."""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data[:-1], "more_body": True})
        if not await self._conclude(record):
            raise _ReceiptLost(f"receipt {record.receipt_id} could not be committed")
        if record.hold_lost:
            raise _ReceiptLost(f"call {record.receipt_id}: its hold was released before it "
                               "ended")
        await send({"type": "http.response.body", "body": data[-1:]})

    async def _relay_stream(self, p: ProviderRuntime, a: Attested | None, record: CallRecord,
                            upstream: Http11Response, first: bytes,
                            body_iter: AsyncIterator[bytes] | None, forward: bytes, inject: bool,
                            unchanged: bool, headers: list[tuple[bytes, bytes]],
                            send: Send, receive: Receive, nonce: str | None = None) -> None:
        inline = a is not None and p.config.platform.signatures == "inline"
        suffix = "" if nonce is None else ":" + nonce

        def check(sig: dict[str, Any], expected: str) -> str | None:
            assert a is not None
            record.signature = {k: str(sig.get(k, "")) for k in
                                ("text", "signature", "signing_address", "signing_algo")}
            return self.manager.check_signature(
                p, a, text=str(sig.get("text", "")), signature=str(sig.get("signature", "")),
                address=str(sig.get("signing_address", "")),
                algo=str(sig.get("signing_algo", "")), expected_text=expected + suffix)

        # An endpoint signature is checked before [DONE] unless the operator chose otherwise.
        before = (a is not None and p.config.platform.signatures == "endpoint"
                  and not record.verified_after_delivery)
        relay = SseRelay(_sha(forward), check if inline else None, require_signature=inline,
                         strip_usage=inject, pass_comment=unchanged, hold_done=before)
        headers.append((b"cache-control", b"no-cache"))
        # uvicorn drops writes to a closed connection silently: watch for http.disconnect.
        gone = asyncio.ensure_future(receive())
        returned = hashlib.sha256()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The last byte sent so far is held back: it goes out only after the call's receipt
        # is committed, so no client sees the end of an answer whose receipt may not exist.
        held = b""
        lost_cut = False

        async def emit(out: bytes) -> None:
            nonlocal held
            returned.update(out)
            await send({"type": "http.response.body", "body": held + out[:-1],
                        "more_body": True})
            held = out[-1:]

        try:
            try:
                async for chunk in _chain(first, body_iter):
                    if gone.done():
                        raise _ClientGone
                    if record.hold_id in self._lost_holds:
                        raise StreamFailure("the call's hold was released before it ended; "
                                            "the rest of the answer is withheld", "hold_lost")
                    out = await relay.afeed(chunk)
                    if out:
                        await emit(out)
                tail = relay.finish()
                if tail:
                    await emit(tail)
                record.outcome = "failed" if relay.error_event else "success"
                if relay.error_event:
                    record.error = "the provider sent an error event mid-stream"
                record.signature_check = "verified" if relay.verified else None
                if before:
                    await self._verify_stream_end(p, a, record, relay, returned, emit)
            except StreamFailure as e:
                if e.code == "hold_lost":  # not the provider's fault
                    lost_cut = True
                    record.outcome, record.error = "failed", str(e)
                    await emit(GatewayRefusal(503, str(e), code=e.code).sse_event())
                else:
                    if inline and not relay.rejected:  # missing, malformed or data after it
                        self.manager.signature_failed(p, str(e))
                    record.outcome, record.error = "failed", str(e)
                    record.signature_check = f"failed: {e}"
                    err = GatewayRefusal(502, self.redact(
                        f"{p.id}: {e}; the end of the stream was withheld"), code=e.code)
                    await emit(err.sse_event())
            except UpstreamError as e:
                record.outcome, record.error = "failed", f"stream broken: {e}"
                err = GatewayRefusal(502, self.redact(f"{p.id}: stream broken: {e}"),
                                     code="upstream_error")
                await emit(err.sse_event())
            await upstream.aclose()
            self._stream_facts(p, a, record, relay, returned)
            if not await self._conclude(record):
                # the client has the receipt id (a header): cut the answer off visibly
                raise _ReceiptLost(f"receipt {record.receipt_id} could not be committed")
            if record.hold_lost and not lost_cut:  # found at the end: no [DONE] either
                raise _ReceiptLost(f"call {record.receipt_id}: its hold was released before "
                                   "it ended")
            await send({"type": "http.response.body", "body": held, "more_body": False})
        except (OSError, _ClientGone):  # the client went away
            if not record.concluded:
                record.outcome = "disconnected"
        finally:
            gone.cancel()
            await upstream.aclose()
            if not record.concluded:
                self._stream_facts(p, a, record, relay, returned)

    @staticmethod
    def _stream_facts(p: ProviderRuntime, a: Attested | None, record: CallRecord,
                      relay: SseRelay, returned: Any) -> None:
        record.usage = relay.usage
        record.response_sha256 = relay.hasher.hexdigest()
        record.returned_sha256 = returned.hexdigest()
        record.content_events = relay.content_events
        if relay.chat_id:
            record.chat_id, record.created = relay.chat_id, relay.created
            if (a is not None and p.config.platform.signatures == "endpoint"
                    and record.signature_check is None):
                record.signature_check = "pending"

    async def _verify_stream_end(self, p: ProviderRuntime, a: Attested | None,
                                 record: CallRecord, relay: SseRelay, returned: Any,
                                 emit: Callable[[bytes], Awaitable[None]]) -> None:
        """Everything but the stream's end went out as it came: check the endpoint signature
        over the bytes now, then send the provider's ``[DONE]``, or an error event instead
        (the answer is voided: _void_if_unverified)."""
        self._stream_facts(p, a, record, relay, returned)
        if record.signature_check is None and not relay.error_event:
            self._no_answer_id(p, record)
        if record.signature_check == "pending":
            await self._verify_endpoint(p, record)
        if record.signature_check is None or record.signature_check == "verified":
            if relay.held_done:
                await emit(relay.held_done)
            return
        why = record.signature_check.removeprefix("failed: ")
        err = GatewayRefusal(502, self.redact(
            f"{p.id}: response signature check failed: {why}; the end of the stream was "
            "withheld"), code="response_signature_invalid")
        record.outcome, record.error = "failed", err.message
        await emit(err.sse_event())

    # ------------------------------------------------------------------ end of a call

    async def _finish(self, record: CallRecord, t0: float) -> None:
        """Count the call and conclude it (settle and commit its receipt) if the answer's
        path has not done so already: refusals, failures and disconnects end here."""
        if record.finished:
            return
        record.finished = True
        self.metrics.requests.labels(record.provider or "", record.outcome).inc()
        self.metrics.latency.labels("true" if record.stream else "false").observe(
            time.perf_counter() - t0)
        if record.outcome == "pending":
            record.outcome = "failed"
        await self._conclude(record)

    async def _conclude(self, record: CallRecord) -> bool:
        """Before the answer's last byte: check an endpoint signature, then settle (or void)
        the hold and commit the receipt, in one transaction when the ledger and the log share
        a database (one group commit for many calls). True when the receipt is committed; a
        stop (cancellation) meanwhile still settles and writes the receipt."""
        if record.concluded:
            return self.receipts is None or record.receipt_committed
        record.concluded = True
        p = self.by_id.get(record.provider or "")
        try:
            if record.signature_check == "pending" and p is not None:
                await self._endpoint_signature(p, record)
        except asyncio.CancelledError:
            record.signature_check = "not checked: the gateway stopped first"
            await self._shielded(record)
            raise
        except Exception as e:
            log.exception("cannot check the response signature of %s", record.chat_id)
            record.signature_check = f"not checked: {type(e).__name__}"
        await self._shielded(record)
        for hook in self.concluded_hooks:
            hook(record)
        return self.receipts is None or record.receipt_committed

    async def _shielded(self, record: CallRecord) -> None:
        _void_if_unverified(record)
        if (self.accounting is None or record.hold_id is None) and self.receipts is None:
            return
        done = self._pool.submit(self._settle_and_commit, record)
        try:
            await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            done.result(timeout=60)  # stopping: the settlement and receipt still complete
            raise

    def _settle_and_commit(self, record: CallRecord) -> None:
        """(In a worker thread.) The settlement and the receipt: the receipt states what the
        settlement moved; a hold lost meanwhile (released by an expiry sweep) is charged
        nothing, and the receipt says so."""
        receipts = self.receipts
        rid = None
        if receipts is not None:
            rid = record.receipt_id = record.receipt_id or receipts.new_id()
        self._redact_record(record)
        attach = None
        if receipts is not None and receipts.shared:
            def attach(tx: Any) -> None:
                assert receipts is not None
                assert rid is not None
                receipts.attach(tx, record, rid)
        written = False
        if self.accounting is not None and record.hold_id is not None:
            try:
                self._settle(record, attach)
                written = attach is not None
            except Exception as e:
                self._settle_failed(record, e)
            finally:
                self._running_holds.discard(record.hold_id)
                self._lost_holds.discard(record.hold_id)
        if receipts is not None and rid is not None:
            try:
                if not written:
                    self._redact_record(record)  # a settlement failure's note too
                    receipts.commit(record, rid)
                record.receipt_committed = True
                receipts.wake()
            except Exception:
                self.metrics.receipt_failures.inc()
                log.exception("receipts: cannot commit the receipt %s of a call", rid)

    def _redact_record(self, record: CallRecord) -> None:
        """The agent reads its receipts: no upstream addresses in their error text."""
        if record.error:
            record.error = self.redact(record.error)

    def _settle_failed(self, record: CallRecord, e: Exception) -> None:
        from teegate.ledger.model import Conflict

        record.cost, record.transfer_ids = 0, []
        if isinstance(e, Conflict) and record.hold_id is not None:
            try:
                assert self.accounting is not None
                state = self.accounting.state(record.hold_id)
            except Exception:
                state = "unknown"
            note = (f"its hold {record.hold_id} was {state} before the call ended "
                    "(released by the expiry sweep); nothing was charged")
            record.hold_lost, record.outcome = True, "failed"
            if record.withheld_sha256 is not None:  # a plain answer, not sent: withheld
                record.returned_sha256, record.status = record.withheld_sha256, 503
                note += "; the answer was withheld"
            log.error("ledger: call %s: %s", record.receipt_id, note)
        else:
            note = f"the settlement failed ({e}); nothing was charged"
            log.exception("ledger: cannot settle hold %s", record.hold_id)
        record.error = f"{record.error}; {note}" if record.error else note

    def _settle(self, record: CallRecord, attach: Callable[[Any], None] | None = None) -> None:
        assert self.accounting is not None
        if record.outcome in ("refused", "voided") or record.provider is None:
            self.accounting.void(record, attach)
            return
        amount = self.call_cost(record)
        if amount is None:
            self.accounting.void(record, attach)
            return
        record.transfer_ids = self.accounting.settle(record, amount, attach)

    def call_cost(self, record: CallRecord) -> int | None:
        """What the call cost: from usage when the provider reported it; None to void."""
        p = self.by_id.get(record.provider or "")
        if p is None:
            return None
        price = p.config.prices.get(record.model, Price())
        usage = record.usage
        if usage:
            tokens = read_usage(usage)  # every shape real providers send (ledger.usage)
            if tokens is None:
                log.warning("%s: usage %.200s is not understood; charged the hold's worst case",
                            p.id, json.dumps(usage))
                record.error = record.error or ("the provider's usage is not understood; "
                                                "charged the hold's worst case")
                return -1
            completion = tokens.completion
            if record.output_cap and completion > record.output_cap:
                # The provider was sent this cap: tokens beyond it were never asked for.
                record.error = (f"the provider reported {completion} completion tokens, "
                                f"above the cap of {record.output_cap} it was sent; "
                                "charged the cap")
                completion = record.output_cap
            try:
                return price.cost(tokens.prompt, completion, tokens.unsplit)
            except TeegateError:  # beyond the ledger's maximum: the hold's worst case
                return -1
        if record.status >= 400 or (record.outcome == "failed" and not record.stream):
            return None  # an error answer produced nothing billable
        if record.outcome in ("disconnected", "failed"):  # cut short: what was produced
            return price.cost(record.prompt_estimate, record.content_events)
        # a complete answer without usage: charge the hold's worst case, and say so
        log.warning("%s: a %s answer without usage; charged the hold's worst case", p.id,
                    "streamed" if record.stream else "plain")
        record.error = record.error or "the provider reported no usage; charged the hold's " \
            "worst case"
        return -1

    async def _verify_endpoint(self, p: ProviderRuntime, record: CallRecord) -> None:
        """``_endpoint_signature`` before delivery: a fetch that breaks (or a stop) is a
        failed check, so nothing unverified goes out as verified."""
        try:
            await self._endpoint_signature(p, record)
        except asyncio.CancelledError:
            record.signature_check = "failed: not checked: the gateway stopped first"
            raise
        except Exception as e:
            log.exception("cannot check the response signature of %s", record.chat_id)
            record.signature_check = f"failed: not checked: {type(e).__name__}"
        check = record.signature_check or "not checked"
        if check != "verified" and not check.startswith("failed"):  # e.g. no attested key
            record.signature_check = f"failed: {check}"

    def _no_answer_id(self, p: ProviderRuntime, record: CallRecord) -> None:
        """An attested endpoint-signed answer without a completion id: its signature cannot
        be fetched, so it cannot be verified (a proxy may strip the id): a failed check."""
        why = "the answer carries no completion id to fetch its signature by"
        record.signature_check = f"failed: {why}"
        self.manager.signature_failed(p, why)

    async def _endpoint_signature(self, p: ProviderRuntime, record: CallRecord) -> None:
        """NEAR AI / RedPill: fetch ``/v1/signature/{id}`` and check it (before delivery,
        or before the last byte with ``verify_after_delivery``); a failure quarantines the
        provider."""
        a = p.current(self.clock()) or p.attested
        chat_id = record.chat_id
        if a is None or not chat_id:
            record.signature_check = "skipped: no attested key"
            return
        try:
            sig = await p.adapter.fetch_signature(chat_id, model=record.model)
        except TeegateError as e:
            record.signature_check = f"failed: {e}"
            self.manager.signature_failed(p, f"signature for {chat_id} unavailable: {e}")
            return
        record.signature = {k: str(sig.get(k, "")) for k in
                            ("text", "signature", "signing_address", "signing_algo")}
        text = str(sig.get("text", ""))
        req_hash, _, _ = text.partition(":")
        expected = f"{record.forwarded_sha256 or record.request_sha256}:{record.response_sha256}"
        why = self.manager.check_signature(
            p, a, text=text, signature=str(sig.get("signature", "")),
            address=str(sig.get("signing_address", "")), algo=str(sig.get("signing_algo", "")),
            expected_text=expected)
        if why is None:
            why = await self._replayed(p, record, str(sig.get("signing_address", "")))
        record.signature_check = "verified" if why is None else f"failed: {why}"
        del req_hash

    async def _replayed(self, p: ProviderRuntime, record: CallRecord, address: str
                        ) -> str | None:
        """Why a verified endpoint signature does not prove this call (gateway/replay.py):
        the answer is older than the replay window, or was accepted before. A replay is a
        man in the middle: the provider is quarantined as for a bad signature."""
        window = self.config.replay_window_s
        created = created_time(record.created)
        why = freshness_problem(created, record.started, window)
        if why is None and created is not None and record.chat_id is not None:
            key = response_key(address, record.chat_id)
            until = expires_at(created, record.started, window)
            first = await anyio.to_thread.run_sync(functools.partial(
                self.store.claim_response, key, expires_at=until, now=int(time.time())))
            if not first:
                why = (f"the answer {record.chat_id!r} was accepted before (within the replay "
                       "window): a replay")
        if why is not None:
            self.manager.signature_failed(p, why)
        return why


def _after_delivery(p: ProviderRuntime) -> bool:
    return p.config.verify_after_delivery and p.config.platform.signatures == "endpoint"


def _void_if_unverified(record: CallRecord) -> None:
    """An answer whose verification failed is voided, never charged: its usage is as
    unverified as its content (a forged usage would otherwise charge the whole hold)."""
    check = record.signature_check
    if check is not None and check.startswith("failed") and record.outcome != "voided":
        record.outcome = "voided"
        record.error = f"{record.error or check}; the answer failed verification: voided, " \
            "not charged"


async def _load_request(body: bytes) -> Any:
    """The request's JSON (a large body parsed off the event loop). A key named twice is
    refused: the body is forwarded verbatim, and the hold and routing (which would read the
    last value) must never disagree with the provider, whose parser may take the first."""
    try:
        return await safejson.aloads(body, unique_keys=True)
    except safejson.DuplicateKeyError as e:
        raise GatewayRefusal(400, f"request body names the key {e.key!r} twice in one object",
                             code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):  # too deep is a JSONDecodeError too
        raise GatewayRefusal(400, "request body is not valid JSON", code="invalid_json"
                             ) from None


def _token_limit(req: dict[str, Any], name: str) -> int | None:
    """A token limit (or ``n``) from the request: absent/null, or a positive integer (a
    float, a bool or a string would leave the hold guessing what the provider makes of it)."""
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise GatewayRefusal(400, f"'{name}' must be a positive integer of at most "
                             f"{MAX_AMOUNT}", code="invalid_request", param=name)
    return value


async def _chain(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk


_RATE_HEADERS = ("retry-after", "retry-after-ms")


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


async def _send_error(send: Send, r: GatewayRefusal) -> None:
    body = r.body()
    headers = [JSON_CT, (b"content-length", str(len(body)).encode()),
               (b"x-should-retry", b"true" if r.retry else b"false"), _request_id(),
               *r.headers]
    if r.receipt_id is not None:
        rid = r.receipt_id.encode()
        headers += [(b"x-teegate-receipt", rid), (b"x-receipt-id", rid)]
    await send({"type": "http.response.start", "status": r.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- the ASGI app


class GatewayApp:
    """ASGI entry point: chat completions on the lean path, everything else via FastAPI."""

    def __init__(self, gateway: Gateway, api: FastAPI,
                 authorize: Callable[[Request], Awaitable[None]] | None = None) -> None:
        self.gateway = gateway
        self.api = api
        self.authorize = authorize

    async def _refusal(self, scope: Scope) -> GatewayRefusal | None:
        """Why a write request's key may not reach its route (None: it may): checked from
        the headers alone, before a byte of the body is read, so an unauthenticated upload
        costs nothing; the route checks what the key may do once the body is read."""
        if self.authorize is None:
            return None
        try:
            await self.authorize(Request(scope))
        except HTTPException:
            return GatewayRefusal(401, "invalid API key", code="invalid_api_key")
        except GatewayRefusal as r:  # e.g. too many failed authentications (429)
            return r
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (problem := framing_problem(scope)) is not None:
            # before any route reads a header or body
            await refuse_framing(_with_request_id(send), problem)
            return
        if scope["type"] == "http" and scope["path"] == CHAT_PATH and scope["method"] == "POST":
            await self.gateway.chat(scope, receive, send)  # its answers name their own id
            return
        if scope["type"] == "http":
            send = _with_request_id(send)
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # The other routes take small JSON bodies: read them here, under the same
            # max_body_bytes as chat, so no route buffers an unbounded body; and only for a
            # caller whose key may reach the route (chat authenticates first too).
            if (refused := await self._refusal(scope)) is not None:
                await _send_error(send, refused)
                return
            try:
                body = await self.gateway._read_body(
                    receive, dict(scope["headers"]).get(b"content-length"))
            except GatewayRefusal as r:
                await _send_error(send, r)
                return
            except _Disconnected:
                return
            receive = _replay(body, receive)
        await self.api(scope, receive, send)


def _request_id() -> tuple[bytes, bytes]:
    """An ``x-request-id`` of its own for every answer (as OpenAI's API sends), for support
    requests and logs that must name one call."""
    return b"x-request-id", b"req_" + secrets.token_hex(12).encode()


def _with_request_id(send: Send) -> Send:
    """``send`` that adds ``x-request-id`` (the chat path adds it itself: no extra await per
    streamed event)."""
    rid = _request_id()

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), rid]}
        await send(message)

    return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that hands out the body already read, then waits for the disconnect."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def again() -> Message:
        return pending.pop() if pending else await receive()

    return again


def _json_error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(json.loads(error_body(status, message, code=code)), status_code=status,
                        headers={"x-should-retry": "true" if status >= 500 else "false"})


def provider_view(p: ProviderRuntime, now: float, redact: Redactor | None) -> dict[str, Any]:
    """What anyone may read about a provider: its level, attestation status, verdict digest
    and signing key (what an auditor checks receipts against). ``redact``: the public view,
    without the base URL and with upstream addresses out of the status text; None: the
    operator's view (admin key, or ``public_provider_details``)."""
    a = p.current(now)
    blocked = p.blocked(now)
    development = p.config.development or (a is not None and a.development)
    detail = blocked or p.detail
    view: dict[str, Any] = {
        "id": p.id,
        "platform": p.config.platform.name,
        "models": list(p.config.models),
        "trust_level": p.level(now).label,
        "claimed_trust_level": p.config.platform.claimed.label,
        "attestation": {
            "status": "quarantined" if p.quarantined_until > now else p.status,
            "detail": redact(detail) if redact is not None else detail,
            "verdict": a.digest if a is not None else None,
            "expires_at": int(a.expires_at) if a is not None else None,
            "signing_address": a.signing_address if a is not None else None,
            "unproven": a is None,
            # what the verdict proves runs there, and each model policy's judgement of it
            "model_identity": dict(a.verdict.model) if a is not None else None,
            "model_policies": {m: _model_state(a, m, redact) for m in p.config.model_policies},
        },
        "development": development,
        "label": "DEVELOPMENT (simulated TEE, not confidential)" if development else None,
        "cooldown": p.health.cooling(time.monotonic()),
    }
    if redact is None:
        view["base_url"] = p.config.base_url
    return view


def _model_state(a: Attested | None, model: str,
                 redact: Redactor | None) -> dict[str, Any]:
    why = a.model_refusal(model) if a is not None else "no current verdict"
    return {"accepted": a is not None and why is None,
            "refusal": (redact(why) if redact is not None and why else why)}


async def _expire_loop(ledger: Ledger, every_s: float) -> None:
    """Release holds and conversations past their expiry (left by a gateway that crashed
    mid-call), at start and then every ``every_s``. Safe with several gateways sharing the
    database: each release is one guarded, idempotent ledger operation."""
    while True:
        try:
            report = await anyio.to_thread.run_sync(ledger.expire)
            if report.holds or report.conversations:
                log.info("ledger: released %d expired holds and closed %d expired "
                         "conversations", report.holds, report.conversations)
        except Exception:
            log.exception("ledger: releasing expired holds failed; retrying in %.0f s",
                          every_s)
        await asyncio.sleep(every_s)


def create_app(
    config: GatewayConfig, *, store: GatewayStore | None = None,
    clock: Callable[[], float] = time.time, accounting: Accounting | None = None,
    receipts: Receipts | None = None, receipt_log: ReceiptLog | None = None,
    ledger: Ledger | None = None,
    extra_routers: Callable[[FastAPI, Gateway], None] | None = None,
) -> GatewayApp:
    """The gateway as an ASGI app (lifespan starts attestation and background tasks).

    ``receipt_log``: write a signed receipt of every call there and mount the receipt and log
    routes; ``accounting``: the ledger (hold before forwarding, settle/void after)."""
    if ledger is not None and config.currency is not None and (
            config.currency not in ledger.currencies):
        raise ConfigError(f"gateway.currency: {config.currency!r} is not a currency of the "
                          f"ledger (it keeps {', '.join(ledger.currencies)})")
    # the data folder's secrets (keys, databases) are the service user's alone
    secure_data_dir(config.data_dir)
    store = store or GatewayStore(config.database_url)
    if receipt_log is not None and receipts is None:
        from teegate.gateway.receipts_bridge import ReceiptBridge

        receipts = ReceiptBridge(receipt_log, currency=config.currency or (
            ledger.currency().code if ledger is not None else ""), ledger=ledger)
    if ledger is not None and accounting is None:
        from teegate.gateway.ledger_bridge import gateway_accounting

        accounting = gateway_accounting(ledger, currency=config.currency,
                                        hold_s=config.hold_s)
    gw = Gateway(config, store, clock=clock, accounting=accounting, receipts=receipts)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.startup()
        sweeper = (asyncio.create_task(_expire_loop(ledger, config.ledger_expire_s))
                   if ledger is not None else None)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await gw.shutdown()

    api = FastAPI(title="teegate", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    api.state.gateway = gw

    def client(request: Request) -> str | None:
        return request.client.host if request.client is not None else None

    async def principal(request: Request) -> Principal:
        key = bearer(request.headers.get("authorization"))
        if key is not None:
            gw.check_throttle(client(request))
        if key is not None and gw.keys.is_admin(key):
            return Principal("operator", "operator", frozenset())
        if key is not None:
            agent = gw.keys.cached(key) or await anyio.to_thread.run_sync(gw.keys.lookup, key)
            if agent is not None:
                return gw.keys.principal(agent)
            gw.throttle.failed(client(request))
        from fastapi import HTTPException

        raise HTTPException(401, detail="invalid API key")

    api.state.principal = principal

    @api.exception_handler(401)
    async def _unauth(request: Request, exc: Exception) -> JSONResponse:
        return _json_error(401, "invalid API key", "invalid_api_key")

    @api.exception_handler(GatewayRefusal)
    async def _refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayRefusal)
        headers = {k.decode(): v.decode() for k, v in exc.headers}
        return Response(exc.body(), exc.status, media_type="application/json", headers={
            "x-should-retry": "true" if exc.retry else "false", **headers})

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _json_error(500, "internal error in the gateway", "internal_error")

    @api.exception_handler(404)
    async def _missing(request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None)
        return _json_error(404, str(detail) if detail and detail != "Not Found" else
                           f"no route {request.url.path}", "not_found")

    @api.get("/v1/models")
    async def models(request: Request) -> Response:
        await principal(request)
        now = gw.clock()
        data = []
        for model, providers in gw.by_model.items():
            ok = [p for p in providers if not p.blocked(now)]
            best = max((p.level(now) for p in ok), default=None)
            views = [provider_view(p, now, gw.redact) for p in providers]
            data.append({
                "id": model, "object": "model", "created": 0, "owned_by": "teegate",
                "providers": [{"id": p.id, "platform": p.config.platform.name,
                               "trust_level": p.level(now).label,
                               "attestation": v["attestation"]["status"],
                               "development": v["development"]}
                              for p, v in zip(providers, views, strict=True)],
                "trust_level": best.label if best is not None else None,
                "development": any(v["development"] for v in views),
            })
        return JSONResponse({"object": "list", "data": data})

    def operator(request: Request) -> bool:
        """Whether the caller presents the admin key (a public route answering more to it is
        an oracle too: other keys count as failed attempts, agents' own keys excepted)."""
        key = bearer(request.headers.get("authorization"))
        if key is None:
            return False
        gw.check_throttle(client(request))
        if gw.keys.is_admin(key):
            return True
        if gw.keys.cached(key) is None:
            gw.throttle.failed(client(request))
        return False

    def redaction(request: Request) -> Redactor | None:
        return None if config.public_provider_details or operator(request) else gw.redact

    @api.get("/v1/providers")
    async def providers(request: Request) -> Response:
        now = gw.clock()
        redact = redaction(request)
        return JSONResponse({"object": "list",
                             "data": [provider_view(p, now, redact) for p in gw.providers]})

    @api.get("/v1/providers/{provider_id}/attestation")
    async def attestation(provider_id: str, request: Request) -> Response:
        p = gw.by_id.get(provider_id)
        if p is None:
            return _json_error(404, f"no provider {provider_id!r}", "provider_not_found")
        now = gw.clock()
        view = provider_view(p, now, redaction(request))
        verdict = p.last_verdict
        view["verdict"] = verdict.to_json() if verdict is not None else None
        view["verdict_digest"] = verdict.digest() if verdict is not None else None
        return JSONResponse(view)

    @api.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @api.get("/readyz")
    async def readyz() -> Response:
        now = gw.clock()
        serving = [p.id for p in gw.providers
                   if not p.blocked(now) and p.status != "unreachable"]
        stuck = gw.receipts.stuck if gw.receipts is not None else None
        ready = gw.started and bool(serving) and stuck is None
        body: dict[str, Any] = {"ready": ready, "serving": serving}
        if stuck is not None:
            body["receipt_log"] = f"stuck: {stuck}"
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get("/metrics")
    async def metrics(request: Request) -> Response:
        if not config.public_metrics:
            _admin(request)
        for p in gw.providers:
            gw.metrics.provider_cooled_down.labels(p.id).set(
                1 if p.health.cooling(time.monotonic()) else 0)
        if receipt_log is not None:
            gw.metrics.log_stuck.set(1 if receipt_log.stuck is not None else 0)
            with contextlib.suppress(Exception):
                gw.metrics.log_backlog.set(
                    await anyio.to_thread.run_sync(lambda: receipt_log.backlog))
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    def _admin(request: Request) -> None:
        from fastapi import HTTPException

        key = bearer(request.headers.get("authorization"))
        if key is not None:
            gw.check_throttle(client(request))
        if not gw.keys.is_admin(key):
            if key is not None:  # any other key on an admin route is a failed admin login
                gw.throttle.failed(client(request))
            raise HTTPException(401, detail="admin key required")

    async def authorize_write(request: Request) -> None:
        """The key check every write passes before its body is read (``GatewayApp``): the
        admin key on ``/admin/``, any valid key elsewhere."""
        if request.url.path.startswith("/admin/"):
            _admin(request)
        else:
            await principal(request)

    @api.post("/admin/agents")
    async def create_agent(request: Request) -> Response:
        _admin(request)
        try:
            body = await safejson.aloads(await request.body() or b"{}", unique_keys=True)
            agent_id = body["id"]
            if not isinstance(agent_id, str) or not isinstance(body.get("owner", ""), str):
                raise TypeError("id and owner must be strings")
            trust = parse_trust(str(body["trust"])) if "trust" in body else (
                config.default_trust)  # "level for agents without one"
            floor = parse_trust(str(body.get("min_trust", "standard")))
            kind = str(body.get("kind", "agent"))
            key = await anyio.to_thread.run_sync(lambda: gw.store.create_key(
                str(agent_id), trust=max(trust, floor).label, min_trust=floor.label,
                owner=body.get("owner"), kind=kind))
        except (ValueError, KeyError, TypeError, TeegateError) as e:
            return JSONResponse(json.loads(error_body(400, f"bad agent: {e}",
                                                      code="invalid_request")), 400)
        await anyio.to_thread.run_sync(gw.keys.reload)
        # What is stored (a new key for an existing agent keeps its settings), not what was
        # asked: the operator must not believe a floor is in force that is not.
        row = await anyio.to_thread.run_sync(gw.store.agent_by_key, key)
        view = row.to_json() if row is not None else {"id": agent_id, "kind": kind}
        return JSONResponse({**view, "api_key": key}, status_code=201)

    @api.delete("/admin/agents/{agent_id}")
    async def revoke_agent(agent_id: str, request: Request) -> Response:
        _admin(request)
        ok = await anyio.to_thread.run_sync(gw.store.revoke, agent_id)
        gw.keys.forget(agent_id)
        if not ok:
            return _json_error(404, f"no agent {agent_id!r}", "agent_not_found")
        return JSONResponse({"id": agent_id, "revoked": True})

    @api.get("/admin/agents")
    async def list_agents(request: Request) -> Response:
        _admin(request)
        rows = await anyio.to_thread.run_sync(gw.store.agents)
        return JSONResponse({"data": [r.to_json() for r in rows]})

    @api.post("/admin/providers/{provider_id}/reattest")
    async def reattest(provider_id: str, request: Request) -> Response:
        _admin(request)
        p = gw.by_id.get(provider_id)
        if p is None:
            return _json_error(404, f"no provider {provider_id!r}", "provider_not_found")
        await gw.manager.lift(p)
        await gw.manager.refresh(p)
        return JSONResponse(provider_view(p, gw.clock(), None))  # the operator asked

    if ledger is not None:
        from teegate.ledger.http import wallet_router

        api.include_router(wallet_router(ledger, principal))
    if receipt_log is not None:
        from teegate.receipts.http import receipts_router

        api.include_router(receipts_router(receipt_log, principal,
                                           evidence_lookup=store.get_evidence))
    if extra_routers is not None:
        extra_routers(api, gw)
    return GatewayApp(gw, api, authorize_write)

"""The gateway's ASGI app.

The POST endpoints the gateway relays (``teegate.gateway.endpoints``: chat completions ...)
are served by raw ASGI handlers in front of the FastAPI app, through the call pipeline
(``teegate.gateway.pipeline``: no request/response models on the hot path; the body is
parsed once and forwarded as the original bytes unless the gateway must change it).
Everything else (models, providers, admin, health, metrics, and the wallet and receipt
routers) is a FastAPI app behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from teegate import safejson
from teegate.errors import ConfigError, TeegateError
from teegate.filemodes import secure_data_dir
from teegate.framing import framing_problem
from teegate.framing import refuse as refuse_framing
from teegate.gateway.attestation import Attested, ProviderRuntime
from teegate.gateway.auth import Principal, bearer
from teegate.gateway.calls import Accounting, Receipts
from teegate.gateway.config import GatewayConfig
from teegate.gateway.cors import Cors
from teegate.gateway.endpoints import ROUTES
from teegate.gateway.errors import GatewayRefusal, error_body
from teegate.gateway.pipeline.call import serve
from teegate.gateway.pipeline.intake import Disconnected, Message, Receive, Scope, Send, read_body
from teegate.gateway.pipeline.respond import send_error, with_request_id
from teegate.gateway.state import Gateway
from teegate.gateway.store import GatewayStore
from teegate.redact import Redactor
from teegate.routing.trust import parse_trust

if TYPE_CHECKING:
    from teegate.ledger import Ledger
    from teegate.receipts import ReceiptLog

log = logging.getLogger("teegate.gateway")

__all__ = ["Gateway", "GatewayApp", "create_app", "provider_view"]


class GatewayApp:
    """ASGI entry point: the relayed endpoints on the lean path, everything else via
    FastAPI."""

    def __init__(self, gateway: Gateway, api: FastAPI,
                 authorize: Callable[[Request], Awaitable[None]] | None = None) -> None:
        self.gateway = gateway
        self.api = api
        self.authorize = authorize
        origins = gateway.config.cors_origins
        self.cors = Cors(origins) if origins else None

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
            await refuse_framing(with_request_id(send), problem)
            return
        if self.cors is not None and scope["type"] == "http":
            headers = dict(scope["headers"])
            if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
                await self.cors.preflight(headers, with_request_id(send))
                return
            origin = headers.get(b"origin")
            if origin is not None and self.cors.allowed(origin):
                send = self.cors.wrap(origin, send)
        if scope["type"] == "http" and scope["method"] == "POST" and (
                endpoint := ROUTES.get(scope["path"])) is not None:
            await serve(self.gateway, endpoint, scope, receive, send)  # names its own id
            return
        if scope["type"] == "http":
            send = with_request_id(send)
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # The other routes take small JSON bodies: read them here, under the same
            # max_body_bytes as chat, so no route buffers an unbounded body; and only for a
            # caller whose key may reach the route (chat authenticates first too).
            if (refused := await self._refusal(scope)) is not None:
                await send_error(send, refused)
                return
            try:
                body = await read_body(receive, dict(scope["headers"]).get(b"content-length"),
                                       self.gateway.config.max_body_bytes)
            except GatewayRefusal as r:
                await send_error(send, r)
                return
            except Disconnected:
                return
            receive = _replay(body, receive)
        await self.api(scope, receive, send)


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

    def model_view(model: str, providers: list[ProviderRuntime], now: float
                   ) -> dict[str, Any]:
        ok = [p for p in providers if not p.blocked(now)]
        best = max((p.level(now) for p in ok), default=None)
        views = [provider_view(p, now, gw.redact) for p in providers]
        return {
            "id": model, "object": "model", "created": 0, "owned_by": "teegate",
            "providers": [{"id": p.id, "platform": p.config.platform.name,
                           "trust_level": p.level(now).label,
                           "attestation": v["attestation"]["status"],
                           "development": v["development"]}
                          for p, v in zip(providers, views, strict=True)],
            "trust_level": best.label if best is not None else None,
            "development": any(v["development"] for v in views),
        }

    @api.get("/v1/models")
    async def models(request: Request) -> Response:
        await principal(request)
        now = gw.clock()
        return JSONResponse({"object": "list", "data": [
            model_view(m, ps, now) for m, ps in gw.by_model.items()]})

    @api.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> Response:
        """One model, as in the list (``models.retrieve``); ids may hold slashes."""
        await principal(request)
        providers = gw.by_model.get(model_id)
        if providers is None:
            return _json_error(404, f"the model {model_id!r} does not exist or no provider "
                               "serves it", "model_not_found")
        return JSONResponse(model_view(model_id, providers, gw.clock()))

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

    from teegate.gateway.responses.endpoint import responses_router

    api.include_router(responses_router(gw, principal))
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

"""The dashboard's routes under ``/dashboard``: sessions, authorization (the API's rules:
``teegate.ledger.http.may_read`` / ``may_fund``), and the I/O behind each page."""

from __future__ import annotations

import base64
import functools
import inspect
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teegate.dashboard import pages, session
from teegate.dashboard.db import FILTERS, PAGE, DashboardDB
from teegate.dashboard.pages import Money, Viewer
from teegate.errors import LedgerError, LogError, TeegateError
from teegate.gateway.attestation import ProviderRuntime
from teegate.gateway.auth import Agent, Principal
from teegate.gateway.store import AgentRow, hash_key
from teegate.ledger.http import may_fund, may_read
from teegate.ledger.model import parse_amount

if TYPE_CHECKING:
    from teegate.gateway.app import Gateway
    from teegate.ledger import Ledger
    from teegate.receipts import ReceiptLog

log = logging.getLogger("teegate.dashboard")
BASE = pages.BASE
_STATIC = {"dashboard.css": "text/css; charset=utf-8",
           "dashboard.js": "text/javascript; charset=utf-8",
           "audit.js": "text/javascript; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin", "cache-control": "no-store",
            "x-frame-options": "DENY"}
MAX_FORM = 4096  # bytes: every dashboard form is a few fields
_AGENTS_TTL = 2.0  # seconds a revoked key may keep its session


_Handler = Callable[..., Awaitable[Response]]


class Refused(Exception):  # noqa: N818 - an answer, not a fault
    """An HTML error answer (403, 404, 503) with a message a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


class Dashboard:
    """State of the dashboard in one gateway process."""

    def __init__(self, gw: Gateway, *, ledger: Ledger | None,
                 receipt_log: ReceiptLog | None, index_every: float = 1.0) -> None:
        self.gw = gw
        self.ledger = ledger
        self.log = receipt_log
        self.db = DashboardDB(gw.config.database_url)
        self.secret = session.load_secret(gw.config.data_dir)
        self._agents: tuple[float, dict[str, AgentRow]] = (0.0, {})
        self._events: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._index_every = index_every
        self._thread: threading.Thread | None = None
        cur = ledger.currency() if ledger is not None else None
        self.money = Money(cur.code if cur else (gw.config.currency or ""),
                           cur.decimals if cur else 0)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """The indexer: projects new receipts into ``dash_calls`` in the background."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="teegate-dashboard-index",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Small batches with a pause between: on SQLite each batch holds the database's
        write lock, which the ledger's commits wait for."""
        while not self._stop.is_set():
            try:
                n = self.db.index_more(1000)
            except Exception:
                log.exception("dashboard: indexing receipts failed; retrying")
                n = 0
            self._stop.wait(self._index_every if n == 0 else 0.02)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.db.close()

    # ------------------------------------------------------------------ who is asking

    def _client(self, request: Request) -> str | None:
        return request.client.host if request.client is not None else None

    def _rows(self) -> dict[str, AgentRow]:
        at, rows = self._agents
        if time.monotonic() - at > _AGENTS_TTL:
            rows = {r.key_hash: r for r in self.gw.store.agents()
                    if r.key_hash and r.revoked_at is None}
            self._agents = (time.monotonic(), rows)
        return rows

    async def viewer(self, request: Request) -> tuple[Viewer, Principal] | None:
        """The logged-in principal, re-derived from the live key table on every request."""
        s = session.read(self.secret, request.cookies.get(session.COOKIE), int(time.time()))
        if s is None:
            return None
        if s.kind == "operator":
            admin = self.gw.config.admin_key
            if not admin or not session.same_token(hash_key(admin), s.key_sha256):
                return None
            p = Principal("operator", "operator", frozenset())
        else:
            row = (await anyio.to_thread.run_sync(self._rows)).get(s.key_sha256)
            if row is None or row.id != s.id:
                return None
            p = self.gw.keys.principal(Agent.from_row(row))
        return Viewer(p.kind, p.id, s.csrf), p

    async def pre_body(self, request: Request) -> None:
        """The check a dashboard write passes before its body is read (``GatewayApp``): a
        small declared body, and a live session except on the login form."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_FORM:
            raise HTTPException(401, "dashboard forms are small and declare their length")
        if request.url.path != f"{BASE}/login" and await self.viewer(request) is None:
            raise HTTPException(401, "no dashboard session")

    # ------------------------------------------------------------------ helpers

    async def form(self, request: Request, v: Viewer | None) -> dict[str, str]:
        """The urlencoded form, after its CSRF token and Origin are checked."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Refused(403, "cross-site form refused")
        raw = await request.body()
        try:
            fields = {k: vs[0] for k, vs in parse_qs(raw.decode(), max_num_fields=20,
                                                     strict_parsing=False).items()}
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the form is not valid") from None
        want = v.csrf if v is not None else session.login_token(
            self.secret, request.cookies.get(session.LOGIN_COOKIE, ""))
        if not session.same_token(fields.get("csrf"), want):
            raise Refused(403, "the form's CSRF token does not match this session; reload "
                               "the page and try again")
        return fields

    def provider_view(self, p: ProviderRuntime, now: float, operator: bool) -> dict[str, Any]:
        """What the API's provider view shows (``/v1/providers``), plus TCB and GPU count;
        without the upstream address unless the operator or ``public_provider_details``."""
        a = p.current(now)
        redact = None if (operator or self.gw.config.public_provider_details) \
            else self.gw.redact
        detail = p.blocked(now) or p.detail
        verdict = p.last_verdict
        gpus = sum(1 for c in (a.verdict.components if a else ()) if c.tee == "nvidia-gpu"
                   and c.accepted)
        return {
            "id": p.id, "platform": p.config.platform.name, "models": list(p.config.models),
            "trust_level": p.level(now).label,
            "claimed_trust_level": p.config.platform.claimed.label,
            "attestation": {
                "status": "quarantined" if p.quarantined_until > now else p.status,
                "detail": redact(detail) if redact is not None else detail,
                "verdict": a.digest if a is not None else None,
                "expires_at": int(a.expires_at) if a is not None else None,
            },
            "development": p.config.development or (a is not None and a.development),
            "tcb_status": verdict.tcb_status if verdict is not None else None,
            "gpus": gpus, "quarantined_until": p.quarantined_until,
            "quarantine_reason": (redact(p.quarantine_reason) if redact is not None
                                  else p.quarantine_reason),
            "verdict_digest": verdict.digest() if verdict is not None else None,
            "base_url": None if redact is not None else p.config.base_url,
        }

    def observe(self) -> None:
        """Record provider status changes this process sees (quarantine history)."""
        now = time.time()
        for p in self.gw.providers:
            status = "quarantined" if p.quarantined_until > now else p.status
            reason = p.quarantine_reason if status == "quarantined" else p.detail
            if self._events.get(p.id, ("", ""))[0] != status:
                self._events[p.id] = (status, reason)
                self.db.record_event(p.id, now, status, reason)


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()
    gw = dash.gw
    m = dash.money

    def page(need_login: bool = True) -> Callable[[_Handler], _Handler]:
        """Session check and error pages: a refusal or a fault is a page, never a trace."""
        def deco(fn: _Handler) -> _Handler:
            @functools.wraps(fn)
            async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
                who = await dash.viewer(request)
                if need_login and who is None:
                    return RedirectResponse(f"{BASE}/login", status_code=303)
                try:
                    return await fn(request, who, *args, **kwargs)
                except Refused as r:
                    return html(pages.error_page(r.status, r.message,
                                                 who[0] if who else None), r.status)
                except LogError as e:
                    return html(pages.error_page(503, f"the receipt log cannot answer: {e}",
                                                 who[0] if who else None), 503)
                except Exception:
                    log.exception("dashboard: %s failed", request.url.path)
                    return html(pages.error_page(500, "internal error in the dashboard",
                                                 who[0] if who else None), 500)
            # FastAPI reads the route's parameters from the signature: not ``who``.
            sig = inspect.signature(fn)
            wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
                parameters=[p for n, p in sig.parameters.items() if n != "who"])
            return wrapper
        return deco

    def back(path: str, **params: str) -> RedirectResponse:
        from teegate.dashboard.html import url

        return RedirectResponse(url(path, **params), status_code=303)

    @router.get(f"{BASE}/static/{{name}}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no file {name!r}")
        data = resources.files("teegate.dashboard").joinpath("static", name).read_bytes()
        return Response(data, media_type=_STATIC[name],
                        headers={"cache-control": "no-cache", "x-content-type-options":
                                 "nosniff"})

    @router.get(BASE)
    @router.get(f"{BASE}/")
    async def home(request: Request) -> Response:
        who = await dash.viewer(request)
        if who is None:
            return RedirectResponse(f"{BASE}/login", status_code=303)
        if who[1].kind == "agent":
            return RedirectResponse(f"{BASE}/agents/{who[1].id}", status_code=303)
        return RedirectResponse(f"{BASE}/providers", status_code=303)

    @router.get(f"{BASE}/login")
    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        resp: Response = html(pages.login(session.login_token(dash.secret, nonce)))
        resp.set_cookie(session.LOGIN_COOKIE, nonce, max_age=3600, httponly=True,
                        samesite="strict", path=f"{BASE}/login",
                        secure=request.url.scheme == "https")
        return resp

    @router.post(f"{BASE}/login")
    async def login(request: Request) -> Response:
        client = dash._client(request)
        try:
            fields = await dash.form(request, None)
        except Refused as r:
            return html(pages.error_page(r.status, r.message, None), r.status)
        key = fields.get("key", "").strip()
        gw.check_throttle(client)  # 429 while this address used up its failures
        if key and gw.keys.is_admin(key):
            kind, ident = "operator", "operator"
        else:
            agent = await anyio.to_thread.run_sync(gw.keys.lookup, key) if key else None
            if agent is None:
                gw.throttle.failed(client)
                nonce = secrets.token_urlsafe(16)
                bad = html(pages.login(session.login_token(dash.secret, nonce),
                                        "That key is not valid (or was revoked)."), 401)
                bad.set_cookie(session.LOGIN_COOKIE, nonce, max_age=3600, httponly=True,
                               samesite="strict", path=f"{BASE}/login",
                               secure=request.url.scheme == "https")
                return bad
            kind, ident = gw.keys.principal(agent).kind, agent.id
        cookie, _ = session.issue(dash.secret, kind, ident, hash_key(key), int(time.time()))
        resp = RedirectResponse(f"{BASE}/", status_code=303)
        resp.set_cookie(session.COOKIE, cookie, max_age=session.LIFETIME_S, httponly=True,
                        samesite="strict", path=BASE, secure=request.url.scheme == "https")
        resp.delete_cookie(session.LOGIN_COOKIE, path=f"{BASE}/login")
        return resp

    @router.post(f"{BASE}/logout")
    @page()
    async def logout(request: Request, who: Any) -> Response:
        await dash.form(request, who[0])
        resp = RedirectResponse(f"{BASE}/login", status_code=303)
        resp.delete_cookie(session.COOKIE, path=BASE)
        return resp

    # ------------------------------------------------------------------ providers

    @router.get(f"{BASE}/providers")
    @page()
    async def providers(request: Request, who: Any) -> Response:
        v, p = who
        now = gw.clock()
        await anyio.to_thread.run_sync(dash.observe)
        views = [dash.provider_view(x, now, p.kind == "operator") for x in gw.providers]
        return html(pages.providers(views, now, v))

    @router.get(f"{BASE}/providers/{{pid}}")
    @page()
    async def provider(request: Request, who: Any, pid: str) -> Response:
        v, p = who
        x = gw.by_id.get(pid)
        if x is None:
            raise Refused(404, f"no provider {pid!r}")
        now = gw.clock()
        await anyio.to_thread.run_sync(dash.observe)
        events = await anyio.to_thread.run_sync(dash.db.events, pid)
        view = dash.provider_view(x, now, p.kind == "operator")
        verdict = x.last_verdict.to_json() if x.last_verdict is not None else None
        return html(pages.provider_detail(view, verdict, events, now, v,
                                          request.query_params.get("done")))

    @router.post(f"{BASE}/providers/{{pid}}/reattest")
    @page()
    async def reattest(request: Request, who: Any, pid: str) -> Response:
        v, p = who
        await dash.form(request, v)
        if p.kind != "operator":
            raise Refused(403, "re-attesting a provider needs the admin key")
        x = gw.by_id.get(pid)
        if x is None:
            raise Refused(404, f"no provider {pid!r}")
        await gw.manager.lift(x)
        await gw.manager.refresh(x)
        return back(f"{BASE}/providers/{pid}", done=f"re-attested: {x.status}")

    # ------------------------------------------------------------------ agents and money

    def balances(aid: str) -> dict[str, int]:
        if dash.ledger is None:
            return {}
        b = dash.ledger.balance(aid)
        return {"available": b.available, "reserved": b.reserved, "held": b.held}

    @router.get(f"{BASE}/agents")
    @page()
    async def agents(request: Request, who: Any) -> Response:
        v, p = who
        if p.kind == "agent":
            return RedirectResponse(f"{BASE}/agents/{p.id}", status_code=303)

        def rows() -> list[dict[str, Any]]:
            out = []
            for r in dash.gw.store.agents()[:500]:
                if r.kind == "agent" and may_read(p, r.id):
                    out.append({**r.to_json(), **balances(r.id)})
                elif r.kind == "owner" and p.kind == "operator":
                    out.append(r.to_json())
            return out

        return html(pages.agents(await anyio.to_thread.run_sync(rows), v, m))

    @router.get(f"{BASE}/agents/{{aid}}")
    @page()
    async def agent(request: Request, who: Any, aid: str) -> Response:
        v, p = who
        if not may_read(p, aid) or not await anyio.to_thread.run_sync(gw.store.has_agent, aid):
            raise Refused(404, f"no agent {aid!r} you may read")
        before_q = request.query_params.get("before")
        before = int(before_q) if before_q and before_q.isdigit() and len(before_q) < 19 \
            else None
        page_size = 20

        def load() -> dict[str, Any]:
            dash.db.index_more(1000)
            led = dash.ledger
            out: dict[str, Any] = {
                "id": aid, "may_fund": may_fund(p, aid) and led is not None, "page": page_size,
                "spend_day": dash.db.spend(aid, "day"),
                "spend_model": dash.db.spend(aid, "model"),
                "spend_provider": dash.db.spend(aid, "provider"),
                "counts": dash.db.counts(aid), "r402": dash.db.recent_402(aid),
                "conversations": dash.db.conversations(aid),
                "holds": dash.db.open_holds(aid),
                "rewards": dash.db.rewards(aid),
            }
            if led is not None:
                out["balance"] = led.balance(aid)
                code = led.currency().code
                out["transfers"] = dash.db.transfers(
                    aid, led.wallet_account(aid, code)[0], code, limit=page_size,
                    before=before)
            else:
                from teegate.ledger.model import WalletBalance

                out["balance"] = WalletBalance(aid, "", 0, 0, 0)
                out["transfers"] = []
            return out

        d = await anyio.to_thread.run_sync(load)
        done, err = request.query_params.get("done"), request.query_params.get("error")
        return html(pages.agent_page(d, v, m, message=err or done, tone="bad" if err else "ok",
                                     idem=secrets.token_urlsafe(12)))

    async def fund(request: Request, who: Any, aid: str, kind: str) -> Response:
        v, p = who
        fields = await dash.form(request, v)
        if dash.ledger is None:
            raise Refused(404, "this gateway keeps no ledger")
        if not may_fund(p, aid):
            raise Refused(403, f"{kind}s to {aid} need its owner or the operator")
        led = dash.ledger
        try:
            amount = parse_amount(fields.get("amount", "").strip(), m.decimals, "amount")
            memo = fields.get("memo") or None
            idem = fields.get("idem", "")
            key = f"http:{p.kind}:{p.id}:{kind}:dashboard-{idem}" if idem else None
            op = led.deposit if kind == "deposit" else led.withdraw
            t = await anyio.to_thread.run_sync(
                lambda: op(aid, amount, key=key, memo=memo))
        except (LedgerError, TeegateError) as e:
            return back(f"{BASE}/agents/{aid}", error=f"{kind} refused: {e}")
        return back(f"{BASE}/agents/{aid}", done=f"{kind} of {m.text(t.amount)} {m.code} done "
                                                 f"(transfer {t.seq})")

    @router.post(f"{BASE}/agents/{{aid}}/deposit")
    @page()
    async def deposit(request: Request, who: Any, aid: str) -> Response:
        return await fund(request, who, aid, "deposit")

    @router.post(f"{BASE}/agents/{{aid}}/withdraw")
    @page()
    async def withdraw(request: Request, who: Any, aid: str) -> Response:
        return await fund(request, who, aid, "withdraw")

    # ------------------------------------------------------------------ calls and receipts

    def scope(p: Principal) -> frozenset[str] | None:
        if p.kind == "operator":
            return None
        return p.agents if p.kind == "owner" else frozenset({p.id})

    @router.get(f"{BASE}/calls")
    @page()
    async def calls(request: Request, who: Any) -> Response:
        v, p = who
        q = request.query_params
        filters = {k: q.get(k, "")[:200] for k in FILTERS if q.get(k)}
        receipt = q.get("q", "").strip()[:200]
        b = q.get("before", "")
        before = int(b) if b.isdigit() and len(b) < 19 else None
        agents_ = scope(p)

        def load() -> tuple[Any, ...]:
            dash.db.index_more(1000)
            rows = dash.db.calls(agents=agents_, filters=filters, receipt=receipt or None,
                                 before=before, limit=PAGE)
            options = {k: dash.db.distinct(k, agents_) for k in FILTERS
                       if not (k == "agent" and p.kind == "agent")}
            return rows, options, dash.db.progress()

        rows, options, progress = await anyio.to_thread.run_sync(load)
        return html(pages.calls(rows, v, m, filters=filters, options=options, receipt=receipt,
                                progress=progress, page=PAGE, before=before))

    async def readable(p: Principal, rid: str) -> Any:
        if dash.log is None:
            raise Refused(404, "this gateway keeps no receipt log")
        got = await anyio.to_thread.run_sync(dash.log.get, rid)
        if got is None or not may_read(p, got.agent):
            raise Refused(404, f"no receipt {rid!r} you may read")
        return got

    def bundle_of(rid: str) -> dict[str, Any] | None:
        from teegate.receipts.http import receipt_view

        assert dash.log is not None
        proof = dash.log.prove(rid)
        return receipt_view(dash.log, proof) if proof is not None else None

    @router.get(f"{BASE}/receipts/{{rid}}")
    @page()
    async def receipt(request: Request, who: Any, rid: str) -> Response:
        v, p = who
        got = await readable(p, rid)
        bundle = await anyio.to_thread.run_sync(bundle_of, rid)
        assert dash.log is not None
        return html(pages.receipt_page(got.receipt.document, got.agent, bundle, dash.log.vkey,
                                       v, m))

    @router.get(f"{BASE}/receipts/{{rid}}/bundle.json")
    @page()
    async def bundle(request: Request, who: Any, rid: str) -> Response:
        import json

        p = who[1]
        await readable(p, rid)
        b = await anyio.to_thread.run_sync(bundle_of, rid)
        if b is None:
            raise Refused(404, "not in a signed checkpoint yet")
        return Response(json.dumps(b), media_type="application/json", headers={
            "content-disposition": f'attachment; filename="{rid}.bundle.json"',
            "cache-control": "no-store"})

    @router.get(f"{BASE}/audit")
    @page()
    async def audit(request: Request, who: Any) -> Response:
        vkey = dash.log.vkey if dash.log is not None else ""
        return html(pages.audit_paste(vkey, who[0]))

    # ------------------------------------------------------------------ log

    @router.get(f"{BASE}/log")
    @page()
    async def log_page(request: Request, who: Any) -> Response:
        if dash.log is None:
            raise Refused(404, "this gateway keeps no receipt log")
        return html(pages.log_page(await anyio.to_thread.run_sync(log_data), who[0]))

    def log_data() -> dict[str, Any]:
        from teegate.receipts import merkle
        from teegate.receipts.note import verify_note

        lg = dash.log
        assert lg is not None
        cps = []
        rows = dash.db.checkpoints(100)
        for i, (size, root, note, created) in enumerate(rows):
            try:
                verify_note(note, [lg.verifier])
                sig_ok = True
            except LogError:
                sig_ok = False
            consistent, why = "", ""
            if i + 1 < len(rows) and rows[i + 1][0] > 0:  # from the empty tree: trivial
                older = rows[i + 1]
                try:
                    proof = lg.consistency_proof(older[0], size)
                    merkle.verify_consistency(older[0], size, proof, older[1], root)
                    consistent, why = "ok", f"extends {older[0]:,} ({len(proof)} hashes)"
                except LogError as e:
                    consistent, why = "fail", str(e)
            cps.append({"size": size, "root": base64.b64encode(root).decode(), "note": note,
                        "created_ms": created, "sig_ok": sig_ok, "consistent": consistent,
                        "why": why})
        latest = cps[0]["size"] if cps else 0
        status = {"stuck": lg.stuck, "size": lg.size(), "latest": latest,
                  "backlog": lg.backlog, "quarantined": len(lg.quarantined),
                  "conflicts": len(lg.conflicts), "last_error": lg.last_error,
                  "origin": lg.origin, "vkey": lg.vkey}
        return {"cps": cps, "status": status}

    return router

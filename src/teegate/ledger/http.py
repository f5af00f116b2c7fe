"""Wallet and conversation routes, mounted by the gateway:

  POST /v1/conversations                  {"agent"?, "budget", "currency"?, "ttl"?} → conversation
  GET  /v1/conversations/{id}
  POST /v1/conversations/{id}/close
  POST /v1/conversations/{id}/rewards     {"rewards": [{"agent", "amount"}], "source"?}
  POST /v1/wallets/{agent}/deposits       {"amount", "currency"?, "memo"?}
  POST /v1/wallets/{agent}/withdrawals    {"amount", "currency"?, "memo"?}
  GET  /v1/wallets/{agent}                balance: available, reserved, held
  GET  /v1/wallets/{agent}/transfers      ?limit=&before= (newest first, paged by seq)
  GET  /v1/wallets/{agent}/spend          ?group_by=model|conversation|provider|day&since=&until=

Authorization: an agent sees and spends only its own wallet and conversations; an owner acts
for the agents it owns; the operator for everyone. Deposits and withdrawals need the owner or
the operator. Rewards of a conversation are paid by its facilitator (the agent that opened it,
from its own wallet), that agent's owner, or the operator (who may also pay from a pool,
``"source": "pool:<name>"``). ``Idempotency-Key`` makes any POST safe to retry (keys are
scoped to the caller, 1-200 characters). Amounts (``budget``, ``amount``) are JSON integers
of the currency's smallest unit, or strings in the CLI's syntax: digits are smallest units,
a decimal point means currency units (``"1.5"``); ASCII digits only. Errors are
OpenAI-shaped; a shortfall is 402 ``insufficient_funds`` with ``x-should-retry: false`` and
says what was needed and what was available.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from teegate import safejson
from teegate.errors import BudgetError, LedgerError
from teegate.ledger.core import GROUPS, Ledger
from teegate.ledger.model import (
    Conflict,
    Conversation,
    InsufficientFunds,
    LimitExceeded,
    NotFound,
    Transfer,
    parse_amount,
)

T = TypeVar("T")
MAX_SEQ = (1 << 63) - 1  # BIGINT: a larger cursor is an overflow in the driver, not a page


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``kind`` "agent", "owner" or "operator"; ``agents`` it may act for."""

    kind: str
    id: str
    agents: frozenset[str] = field(default_factory=frozenset)


class PrincipalLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def agents(self) -> frozenset[str]: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str,
                 param: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type_, code, param)
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        err: dict[str, Any] = {"message": self.message, "type": self.type,
                               "param": self.param, "code": self.code, **self.extra}
        headers = {} if self.status >= 500 else {"x-should-retry": "false"}
        return JSONResponse({"error": err}, status_code=self.status, headers=headers)


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


def _forbidden(message: str) -> ApiError:
    return ApiError(403, message, "permission_error", "forbidden")


def may_read(p: PrincipalLike, agent: str) -> bool:
    return p.kind == "operator" or agent in p.agents or (p.kind == "agent" and p.id == agent)


def may_fund(p: PrincipalLike, agent: str) -> bool:
    """Deposits and withdrawals: the owner of the agent or the operator, never the agent."""
    return p.kind == "operator" or (p.kind == "owner" and agent in p.agents)


def _amount_field(body: dict[str, Any], name: str, decimals: int) -> int:
    """A JSON integer of smallest units, or a string in the CLI's syntax (digits: smallest
    units; a decimal point: currency units, ``"1.5"``). A JSON number with a fraction is
    refused: JSON does not keep ``1.0`` apart from ``1`` (JavaScript writes both as 1)."""
    v = body.get(name)
    if isinstance(v, str):
        try:
            return parse_amount(v, decimals, name)
        except LedgerError as e:
            raise _bad(str(e), name) from None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise _bad(f"{name} must be a positive integer of the currency's smallest unit, or a "
                   'string: digits (smallest units) or a decimal number (currency units, '
                   '"1.5")', name)
    return v


def _str_field(body: dict[str, Any], name: str) -> str | None:
    v = body.get(name)
    if v is not None and not isinstance(v, str):
        raise _bad(f"{name} must be a string", name)
    return v


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = await safejson.aloads(raw, unique_keys=True)
    except safejson.DuplicateKeyError as e:  # the last value must not silently win
        raise _bad(f"the request body names the key {e.key!r} twice") from None
    except ValueError:  # also nesting deeper than safejson allows
        raise _bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def _key(request: Request, p: PrincipalLike, what: str) -> str | None:
    k = request.headers.get("idempotency-key")
    if k is None:
        return None
    if not k or len(k) > 200 or not k.isprintable():
        raise _bad("Idempotency-Key must be 1-200 printable characters", "Idempotency-Key")
    return f"http:{p.kind}:{p.id}:{what}:{k}"


def _conversation_json(c: Conversation) -> dict[str, Any]:
    return {"object": "conversation", **c.to_json()}


def _transfer_json(t: Transfer) -> dict[str, Any]:
    return {"object": "transfer", **t.to_json()}


def wallet_router(ledger: Ledger, principal_dependency: Callable[..., Any]) -> APIRouter:
    """The routes above over ``ledger``; ``principal_dependency`` authenticates the caller
    (a FastAPI dependency returning a ``Principal`` or anything with kind/id/agents)."""
    router = APIRouter()
    Who = Depends(principal_dependency)  # noqa: N806 - a FastAPI marker

    async def call(fn: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(fn)
        except InsufficientFunds as e:
            raise ApiError(402, str(e), "insufficient_funds", "insufficient_funds", None,
                           {"needed": e.needed, "available": e.available,
                            "currency": e.currency}) from None
        except BudgetError as e:
            raise ApiError(402, str(e), "insufficient_funds", "insufficient_funds") from None
        except NotFound as e:
            raise ApiError(404, str(e), "not_found_error", "not_found") from None
        except Conflict as e:
            raise ApiError(409, str(e), "invalid_request_error", "conflict") from None
        except LimitExceeded as e:
            raise ApiError(400, str(e), "invalid_request_error", "amount_too_large") from None
        except LedgerError as e:
            raise ApiError(400, str(e), "invalid_request_error", "invalid_request") from None

    def handled(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        import functools

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ApiError as e:
                return e.response()

        return wrapper

    def currency(body: dict[str, Any]) -> str | None:
        code = _str_field(body, "currency")
        if code is not None and code not in ledger.currencies:
            raise _bad(f"unknown currency {code!r}", "currency")
        return code

    async def conversation_for(p: PrincipalLike, cid: str) -> Conversation:
        c = await call(lambda: ledger.conversation(cid))
        if not may_read(p, c.agent):
            raise ApiError(404, f"no conversation {cid!r}", "not_found_error", "not_found")
        return c

    @router.post("/v1/conversations")
    @handled
    async def open_conversation(request: Request, p: PrincipalLike = Who) -> Any:
        body = await _body(request)
        agent = _str_field(body, "agent") or (p.id if p.kind == "agent" else None)
        if agent is None:
            raise _bad("agent is required", "agent")
        if not may_read(p, agent):
            raise _forbidden(f"{p.kind} {p.id} may not spend the wallet of {agent}")
        cur = currency(body)
        budget = _amount_field(body, "budget", ledger.currency(cur).decimals)
        ttl = body.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not math.isfinite(ttl) or ttl <= 0):
            raise _bad("ttl must be a positive number of seconds", "ttl")
        key = _key(request, p, "open")
        # the ttl, not the expiry it gives now, is what a retry must repeat
        c = await call(lambda: ledger.open_conversation(
            agent, budget, currency=cur, key=key, ttl=None if ttl is None else float(ttl)))
        return JSONResponse(_conversation_json(c), status_code=201)

    @router.get("/v1/conversations/{cid}")
    @handled
    async def get_conversation(cid: str, p: PrincipalLike = Who) -> Any:
        return _conversation_json(await conversation_for(p, cid))

    @router.post("/v1/conversations/{cid}/close")
    @handled
    async def close_conversation(cid: str, request: Request, p: PrincipalLike = Who) -> Any:
        await conversation_for(p, cid)
        key = _key(request, p, "close")
        return _conversation_json(await call(lambda: ledger.close_conversation(cid, key=key)))

    @router.post("/v1/conversations/{cid}/rewards")
    @handled
    async def rewards(cid: str, request: Request, p: PrincipalLike = Who) -> Any:
        body = await _body(request)
        c = await conversation_for(p, cid)
        source = _str_field(body, "source") or c.agent
        facilitator = source == c.agent and (p.kind != "agent" or p.id == c.agent)
        if p.kind != "operator" and not facilitator:
            raise _forbidden("rewards of a conversation are paid by its facilitator (the agent "
                             "that opened it), its owner, or the operator")
        legs_raw = body.get("rewards")
        if not isinstance(legs_raw, list) or not legs_raw:
            raise _bad("rewards must be a non-empty list of {agent, amount}", "rewards")
        legs: list[tuple[str, int]] = []
        kept = ledger.currencies.get(c.currency)
        if kept is None:  # a conversation opened under another configuration
            raise _bad(f"conversation {cid} is in {c.currency}, which this gateway's ledger "
                       "does not keep", "currency")
        for leg in legs_raw:
            if not isinstance(leg, dict) or not isinstance(leg.get("agent"), str):
                raise _bad("each reward needs an agent and an amount", "rewards")
            amount = _amount_field(leg, "amount", kept.decimals)
            legs.append((leg["agent"], amount))
        key = _key(request, p, f"reward:{cid}")
        memo = _str_field(body, "memo")
        out = await call(lambda: ledger.reward(source, legs, conversation=cid,
                                               currency=c.currency, key=key, memo=memo))
        return {"object": "list", "data": [_transfer_json(t) for t in out]}

    async def fund(agent: str, request: Request, p: PrincipalLike, kind: str) -> Any:
        if not may_fund(p, agent):
            raise _forbidden(f"{kind}s to {agent} need its owner or the operator")
        body = await _body(request)
        cur, memo, key = currency(body), _str_field(body, "memo"), _key(request, p, kind)
        amount = _amount_field(body, "amount", ledger.currency(cur).decimals)
        op = ledger.deposit if kind == "deposit" else ledger.withdraw
        t = await call(lambda: op(agent, amount, currency=cur, key=key, memo=memo))
        return JSONResponse(_transfer_json(t), status_code=201)

    @router.post("/v1/wallets/{agent}/deposits")
    @handled
    async def deposit(agent: str, request: Request, p: PrincipalLike = Who) -> Any:
        return await fund(agent, request, p, "deposit")

    @router.post("/v1/wallets/{agent}/withdrawals")
    @handled
    async def withdraw(agent: str, request: Request, p: PrincipalLike = Who) -> Any:
        return await fund(agent, request, p, "withdraw")

    def readable(p: PrincipalLike, agent: str) -> None:
        if not may_read(p, agent):
            raise _forbidden(f"{p.kind} {p.id} may not read the wallet of {agent}")

    def cur_q(request: Request) -> str | None:
        code = request.query_params.get("currency")
        if code is not None and code not in ledger.currencies:
            raise _bad(f"unknown currency {code!r}", "currency")
        return code

    @router.get("/v1/wallets/{agent}")
    @handled
    async def balance(agent: str, request: Request, p: PrincipalLike = Who) -> Any:
        readable(p, agent)
        cur = cur_q(request)
        b = await call(lambda: ledger.balance(agent, cur))
        return {"object": "wallet", **b.to_json()}

    @router.get("/v1/wallets/{agent}/transfers")
    @handled
    async def transfers(agent: str, request: Request, p: PrincipalLike = Who) -> Any:
        readable(p, agent)
        q = request.query_params
        try:
            limit = int(q.get("limit", "50"))
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            raise _bad("limit and before must be integers") from None
        if not 1 <= limit <= 1000:
            raise _bad("limit must be 1..1000", "limit")
        if before is not None and not 0 <= before <= MAX_SEQ:
            raise _bad(f"before must be a transfer seq 0..{MAX_SEQ}", "before")
        cur = cur_q(request)
        rows = await call(lambda: ledger.transfers(agent, limit=limit + 1, before=before,
                                                   currency=cur))
        page = rows[:limit]
        return {"object": "list", "data": [_transfer_json(t) for t in page],
                "has_more": len(rows) > limit,
                "next_before": page[-1].seq if len(rows) > limit else None}

    @router.get("/v1/wallets/{agent}/spend")
    @handled
    async def spend(agent: str, request: Request, p: PrincipalLike = Who) -> Any:
        readable(p, agent)
        q = request.query_params
        group_by = q.get("group_by", "model")
        if group_by not in GROUPS:
            raise _bad(f"group_by must be one of {', '.join(GROUPS)}", "group_by")
        try:
            since = float(q["since"]) if "since" in q else None
            until = float(q["until"]) if "until" in q else None
        except ValueError:
            raise _bad("since and until are seconds since the epoch") from None
        if not all(math.isfinite(t) for t in (since, until) if t is not None):
            raise _bad("since and until are finite seconds since the epoch")
        cur = cur_q(request)
        rows = await call(lambda: ledger.spend(agent, group_by=group_by, since=since,
                                               until=until, currency=cur))
        return {"object": "list", "group_by": group_by, "currency": cur or
                ledger.default_currency.code, "data": [r.to_json() for r in rows],
                "total": sum(r.amount for r in rows)}

    return router

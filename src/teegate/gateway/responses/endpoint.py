"""``POST /v1/responses`` as an endpoint adapter over the call pipeline, and the stored
responses' ``GET``/``DELETE /v1/responses/{id}``.

Each provider is sent the call in its own API (``leg``): one with ``responses_api = true``
gets the client's exact bytes (or, with a ``previous_response_id``, the request with the
stored history as its input), any other the chat completions translation
(``translate``), named in the receipt. The hold covers ``max_output_tokens`` (the
gateway's ``default_max_tokens`` when absent, then sent) over the whole input, history
included. Unless ``store`` is false the agent's answer is kept in the gateway's database,
per agent, before its last byte, so a client that got it can chain on it at once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from teegate.gateway import forwarding
from teegate.gateway.errors import GatewayRefusal, error_body
from teegate.gateway.pipeline.endpoint import Endpoint, Leg, Parsed
from teegate.gateway.pipeline.intake import (
    request_object,
    required_trust,
    stream_flag,
    token_limit,
)
from teegate.gateway.responses import translate

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.auth import Agent, Principal
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.state import Gateway


@dataclass
class _State:
    """What the legs share: the request, its whole input, the output cap."""

    req: dict[str, Any]  # as the client sent it (a model suffix stripped)
    new_input: list[dict[str, Any]]
    cap: int
    store: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    chat: dict[str, bytes] = field(default_factory=dict)  # per cap field
    native: bytes | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.history + self.new_input


def parse(gw: Gateway, body: bytes, req: Any, trust_header: bytes | None,
          agent: Agent) -> Parsed:
    req = request_object(req)
    new_input = translate.input_items(req.get("input"))
    stream = stream_flag(req)
    limit = token_limit(req, "max_output_tokens")
    store = req.get("store", True)
    if not isinstance(store, bool):
        raise GatewayRefusal(400, "'store' must be a boolean", code="invalid_request",
                             param="store")
    prev = req.get("previous_response_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        raise GatewayRefusal(400, "'previous_response_id' must be a response id",
                             code="invalid_request", param="previous_response_id")
    model, required, changed = required_trust(gw, req, trust_header, agent)
    cap = limit if limit is not None else gw.config.default_max_tokens
    state = _State(req, new_input, cap, store)
    forward = body
    if changed or limit is None:
        forward = (forwarding.encode({**req, "max_output_tokens": cap}) if changed
                   else forwarding.with_keys(body, {"max_output_tokens": cap}))
    state.native = None if prev is not None else forward
    return Parsed(body, req, model, stream, required, forward, cap, extra=state,
                  keep=_keep if store else None)


async def load(gw: Gateway, call: Parsed, agent: Agent) -> None:
    """A ``previous_response_id``'s stored history (the agent's own responses only)."""
    state: _State = call.extra
    prev = state.req.get("previous_response_id")
    if prev is None:
        return
    row = await anyio.to_thread.run_sync(_get, gw, agent.id, prev)
    if row is None:
        raise GatewayRefusal(404, f"previous response {prev!r} not found (unknown, deleted, "
                             "expired, stored with store=false, or another agent's)",
                             code="previous_response_not_found",
                             param="previous_response_id")
    doc, items = json.loads(row[0]), json.loads(row[1])
    state.history = [*items, *(o for o in doc.get("output", ()) if isinstance(o, dict))]
    # the hold's prompt bound covers the history too
    call.req = {**{k: v for k, v in state.req.items() if k != "previous_response_id"},
                "input": state.items, "max_output_tokens": state.cap}


def leg(gw: Gateway, p: ProviderRuntime, call: Parsed) -> Leg:
    state: _State = call.extra
    if p.config.responses_api:
        if state.native is None:  # the history goes in the request: re-encoded
            state.native = forwarding.encode(call.req)
        return Leg("/responses", state.native, _Native())
    field_ = p.config.max_tokens_field
    sent = state.chat.get(field_)
    if sent is None:
        sent = state.chat[field_] = forwarding.encode(
            translate.to_chat(state.req, state.items, field_, state.cap))
    shape = translate.Shape(state.req, translate.new_id("resp_"), state.store)
    return Leg("/chat/completions", sent, translate.Translation(shape), inject=call.stream)


async def _keep(gw: Gateway, record: CallRecord, call: Parsed, doc: bytes) -> None:
    """Store the agent's answer with the input it answered (``store`` was not false)."""
    try:
        obj = json.loads(doc)
        rid = obj["id"]
    except (ValueError, KeyError, TypeError):
        return  # not a response document: nothing to chain on
    if not isinstance(rid, str):
        return
    state: _State = call.extra
    await anyio.to_thread.run_sync(partial(
        gw.store.put_response, record.agent, rid, doc.decode(), json.dumps(state.items),
        now=gw.clock(), retention=gw.config.responses_retention_s))


def _get(gw: Gateway, agent: str, rid: str) -> tuple[str, str] | None:
    return gw.store.get_response(agent, rid, now=gw.clock(),
                                 retention=gw.config.responses_retention_s)


class _Native:
    """The provider speaks the Responses API: its bytes go to the agent as they are; the
    stream is watched for ``response.completed`` (what is stored)."""

    name: str | None = None

    def plain(self, data: bytes) -> bytes:
        return data

    def stream(self, usage: Callable[[], dict[str, Any] | None]) -> _Watch:
        return _Watch()


class _Watch:
    """Whole events pass unchanged (the relay hands over whole events only)."""

    def __init__(self) -> None:
        self.final: bytes | None = None

    def feed(self, events: bytes) -> bytes:
        if self.final is None and b"response.completed" in events:
            for event in translate.EVENT_END.split(events):
                data = b"".join(line[5:].strip() for line in event.splitlines()
                                if line.startswith(b"data:"))
                if b'"response.completed"' in data:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self.final = json.dumps(json.loads(data)["response"]).encode()
        return events


RESPONSES = Endpoint("responses", "/responses", "/v1/responses", parse, leg=leg, load=load)


def responses_router(gw: Gateway, principal: Callable[[Request], Any]) -> APIRouter:
    """``GET``/``DELETE /v1/responses/{id}``: an agent's own stored responses."""
    router = APIRouter()

    def missing(rid: str) -> JSONResponse:
        return JSONResponse(json.loads(error_body(
            404, f"no stored response {rid!r}", code="response_not_found")), 404)

    async def agent_of(request: Request) -> str:
        who: Principal = await principal(request)
        if who.kind != "agent":
            raise GatewayRefusal(403, "stored responses belong to agents: use the agent's "
                                 "key", code="permission_denied")
        return who.id

    @router.get("/v1/responses/{response_id}")
    async def get(response_id: str, request: Request) -> Response:
        row = await anyio.to_thread.run_sync(_get, gw, await agent_of(request), response_id)
        if row is None:
            return missing(response_id)
        return Response(row[0].encode(), media_type="application/json")

    @router.delete("/v1/responses/{response_id}")
    async def delete(response_id: str, request: Request) -> Response:
        ok = await anyio.to_thread.run_sync(partial(
            gw.store.delete_response, await agent_of(request), response_id, now=gw.clock(),
            retention=gw.config.responses_retention_s))
        if not ok:
            return missing(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    return router

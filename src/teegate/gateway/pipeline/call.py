"""The call pipeline, in order: authenticate, read the body (intake), parse (the
endpoint), route, hold, forward, relay (plain or streamed, verifying on the way), settle
and commit the receipt. Every exit — refusal, failure, disconnect, success — ends in
``settle.finish``, so each call is counted, settled or voided, and has its receipt."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from typing import TYPE_CHECKING

from teegate.gateway.calls import CallRecord
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline import hold, intake, settle
from teegate.gateway.pipeline.forward import forward
from teegate.gateway.pipeline.intake import (
    CONVERSATION_HEADER,
    EXTRA,
    TRUST_HEADER,
    VOUCHER_HEADER,
    Disconnected,
    Receive,
    Scope,
    Send,
)
from teegate.gateway.pipeline.relay_plain import relay_plain
from teegate.gateway.pipeline.relay_stream import relay_stream
from teegate.gateway.pipeline.respond import ReceiptLost, response_headers, send_error
from teegate.gateway.pipeline.route import route
from teegate.x402 import gate as x402_gate

if TYPE_CHECKING:
    from teegate.gateway.auth import Agent
    from teegate.gateway.pipeline.endpoint import Endpoint
    from teegate.gateway.state import Gateway

log = logging.getLogger("teegate.gateway")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def serve(gw: Gateway, endpoint: Endpoint, scope: Scope, receive: Receive,
                send: Send) -> None:
    """One call to ``endpoint``, as an ASGI handler: every outcome is an answer (never a
    traceback), except a client gone or a receipt lost, which end the connection."""
    t0 = time.perf_counter()
    hdrs = intake.read_headers(scope)
    counted = False  # _serve records (and counts) every call it sees
    try:
        auth = hdrs.get(b"authorization")
        if x402_gate.wants_challenge(gw, scope, auth):
            counted = True
            gw.metrics.requests.labels("", "payment_required").inc()
            await x402_gate.challenge(gw, endpoint, scope, receive, send, hdrs)
            return
        client = scope.get("client")
        agent = await gw.authenticate(auth.decode("latin-1") if auth else None,
                                      client[0] if client else None)
        body = await intake.read_body(receive, hdrs.get(b"content-length"),
                                      gw.config.max_body_bytes)
        counted = True
        await _serve(gw, endpoint, agent, body, hdrs, send, receive, t0)
    except GatewayRefusal as r:
        if not counted:
            gw.metrics.requests.labels("", "refused").inc()
        await send_error(send, gw.redacted(r),
                         gw.receipts.keyset_digest if gw.receipts is not None else None)
    except Disconnected:
        return
    except ReceiptLost as e:  # the response is left incomplete on purpose
        log.error("%s: %s; the answer was cut off before its end", endpoint.name, e)
        return
    except Exception:  # a bug or a failing store: an OpenAI-shaped 500, no traceback out
        log.exception("%s: unexpected error", endpoint.name)
        # (the _serve record, if any, was finished: its hold is settled or voided)
        with contextlib.suppress(Exception):  # fails when the response had started
            await send_error(send, GatewayRefusal(
                500, "internal error in the gateway", code="internal_error"))


async def _serve(gw: Gateway, endpoint: Endpoint, agent: Agent, body: bytes,
                 hdrs: dict[bytes, bytes], send: Send, receive: Receive, t0: float
                 ) -> CallRecord:
    conv = hdrs.get(CONVERSATION_HEADER)
    try:
        if conv is not None and not conv.strip():
            # Sent but empty: the caller meant a conversation; charging the wallet
            # instead would spend outside the budget it reserved.
            raise GatewayRefusal(400, "X-Teegate-Conversation is empty: name a "
                                 "conversation or leave the header out",
                                 code="invalid_conversation", param="x-teegate-conversation")
        call = endpoint.parse(gw, body, await intake.load_request(body),
                              hdrs.get(TRUST_HEADER), agent)
        if endpoint.load is not None:
            await endpoint.load(gw, call, agent)
    except GatewayRefusal as r:  # refused calls get a record (and receipt) too
        gw.redacted(r)  # before its hash goes into the receipt
        bad = CallRecord(agent.id, "", agent.trust.label, time.time(), _sha(body),
                         conversation=conv.decode("latin-1") if conv else None,
                         status=r.status, outcome="refused", error=r.message,
                         returned_sha256=_sha(r.body()), endpoint=endpoint.route)
        if gw.receipts is not None:
            bad.receipt_id = gw.receipts.new_id()
        await settle.finish(gw, bad, t0)
        r.receipt_id = bad.receipt_id if bad.receipt_committed else None
        raise
    record = CallRecord(agent.id, call.model, call.required.label, time.time(), _sha(body),
                        conversation=conv.decode("latin-1") if conv else None,
                        stream=call.stream, endpoint=endpoint.route)
    if VOUCHER_HEADER in hdrs:  # paid by an on-chain channel (teegate.chain.accounting)
        record.voucher = hdrs[VOUCHER_HEADER].decode("latin-1")
    record.output_cap = call.output_cap
    try:
        providers = route(gw, record, call.model, call.required)
        await hold.place(gw, record, call, providers)
        up = await forward(gw, endpoint, record, call, providers, hdrs.get(EXTRA, b""))
        p, a = up.provider, up.attested
        record.provider, record.platform = p.id, p.config.platform.name
        record.verdict_digest = a.digest if a is not None else None
        record.attestation = a.ref(record.model) if a is not None else None
        record.status = up.response.status_code
        headers = response_headers(gw, p, a, record, up.response)
        if up.is_sse:
            await relay_stream(gw, up, call, record, headers, send, receive)
        else:
            await relay_plain(gw, up, call, record, headers, send)
        return record
    except GatewayRefusal as r:
        gw.redacted(r)  # before its hash goes into the receipt
        if record.outcome == "pending":
            record.outcome = "failed"
        record.status = record.status if record.status >= 400 else r.status
        record.error = record.error or r.message
        record.returned_sha256 = _sha(r.body())
        if gw.receipts is not None:
            record.receipt_id = record.receipt_id or gw.receipts.new_id()
        await settle.finish(gw, record, t0)
        r.receipt_id = record.receipt_id if record.receipt_committed else None
        raise
    finally:
        await settle.finish(gw, record, t0)  # a no-op when concluded above

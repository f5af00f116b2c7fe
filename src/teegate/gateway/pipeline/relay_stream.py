"""Relay a streamed answer event by event (``SseRelay``): a node's inline signature, or an
endpoint signature (fetched once the provider's stream ended), is checked before ``[DONE]``
goes out, the last byte is held back until the call is settled
and its receipt committed, and a client that leaves, a hold lost mid-call or a broken
provider end the stream visibly (an error event, or a cut connection)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from teegate.errors import UpstreamError
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline import settle, verify
from teegate.gateway.pipeline.respond import ReceiptLost
from teegate.gateway.streaming import SseRelay, StreamFailure
from teegate.providers.translated import TranslatedResponse

if TYPE_CHECKING:
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.endpoint import Parsed
    from teegate.gateway.pipeline.forward import Upstream
    from teegate.gateway.pipeline.intake import Receive, Send
    from teegate.gateway.state import Gateway


class ClientGone(Exception):  # noqa: N818 - an outcome
    pass


async def relay_stream(gw: Gateway, up: Upstream, call: Parsed, record: CallRecord,
                       headers: list[tuple[bytes, bytes]], send: Send, receive: Receive
                       ) -> None:
    p, a, upstream = up.provider, up.attested, up.response
    inline = a is not None and p.config.platform.signatures == "inline"
    # An endpoint signature is checked before [DONE] unless the operator chose otherwise.
    before = (a is not None and p.config.platform.signatures == "endpoint"
              and not record.verified_after_delivery)
    relay = SseRelay(hashlib.sha256(up.sent).hexdigest(),
                     verify.inline_stream(gw, up, record) if inline else None,
                     require_signature=inline, strip_usage=up.inject,
                     pass_comment=up.sent is call.body, hold_done=before)
    headers.append((b"cache-control", b"no-cache"))
    # uvicorn drops writes to a closed connection silently: watch for http.disconnect.
    gone = asyncio.ensure_future(receive())
    returned = hashlib.sha256()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The last byte sent so far is held back: it goes out only after the call's receipt
    # is committed, so no client sees the end of an answer whose receipt may not exist.
    held = b""
    lost_cut = False
    translated = up.translation.stream(lambda: relay.usage) if up.translation else None

    async def emit(out: bytes) -> None:
        nonlocal held
        if translated is not None:
            out = translated.feed(out)
            if not out:
                return
        returned.update(out)
        await send({"type": "http.response.body", "body": held + out[:-1],
                    "more_body": True})
        held = out[-1:]

    try:
        try:
            async for chunk in _chain(up.first, up.rest):
                if gone.done():
                    raise ClientGone
                if record.hold_id in gw.lost_holds:
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
                await _verify_stream_end(gw, up, record, relay, returned, emit)
        except StreamFailure as e:
            if e.code == "hold_lost":  # not the provider's fault
                lost_cut = True
                record.outcome, record.error = "failed", str(e)
                await emit(GatewayRefusal(503, str(e), code=e.code).sse_event())
            else:
                if inline and not relay.rejected:  # missing, malformed or data after it
                    gw.manager.signature_failed(p, str(e))
                record.outcome, record.error = "failed", str(e)
                record.signature_check = f"failed: {e}"
                err = GatewayRefusal(502, gw.redact(
                    f"{p.id}: {e}; the end of the stream was withheld"), code=e.code)
                await emit(err.sse_event())
        except UpstreamError as e:
            record.outcome, record.error = "failed", f"stream broken: {e}"
            err = GatewayRefusal(502, gw.redact(f"{p.id}: stream broken: {e}"),
                                 code="upstream_error")
            await emit(err.sse_event())
        await upstream.aclose()
        _stream_facts(up, record, relay, returned)
        final = translated.final if translated is not None else None
        if call.keep is not None and final is not None and record.outcome == "success":
            await call.keep(gw, record, call, final)
        if not await settle.conclude(gw, record):
            # the client has the receipt id (a header): cut the answer off visibly
            raise ReceiptLost(f"receipt {record.receipt_id} could not be committed")
        if record.hold_lost and not lost_cut:  # found at the end: no [DONE] either
            raise ReceiptLost(f"call {record.receipt_id}: its hold was released before "
                              "it ended")
        await send({"type": "http.response.body", "body": held, "more_body": False})
    except (OSError, ClientGone):  # the client went away
        if not record.concluded:
            record.outcome = "disconnected"
    finally:
        gone.cancel()
        await upstream.aclose()
        if not record.concluded:
            _stream_facts(up, record, relay, returned)


def _stream_facts(up: Upstream, record: CallRecord, relay: SseRelay, returned: Any) -> None:
    record.usage = relay.usage
    native = up.response if isinstance(up.response, TranslatedResponse) else None
    # A translated provider's own bytes (what it answered), else what the relay saw.
    record.response_sha256 = (native.received_sha256() if native is not None else None
                              ) or relay.hasher.hexdigest()
    record.returned_sha256 = returned.hexdigest()
    record.content_events = relay.content_events
    if relay.chat_id:
        record.chat_id, record.created = relay.chat_id, relay.created
        if (up.attested is not None and up.provider.config.platform.signatures == "endpoint"
                and record.signature_check is None):
            record.signature_check = "pending"


async def _verify_stream_end(gw: Gateway, up: Upstream, record: CallRecord, relay: SseRelay,
                             returned: Any, emit: Callable[[bytes], Awaitable[None]]) -> None:
    """Everything but the stream's end went out as it came: check the endpoint signature
    over the bytes now, then send the provider's ``[DONE]``, or an error event instead
    (the answer is voided: verify.void_if_unverified)."""
    p = up.provider
    _stream_facts(up, record, relay, returned)
    if record.signature_check is None and not relay.error_event:
        verify.no_answer_id(gw, p, record)
    if record.signature_check == "pending":
        await verify.endpoint_before_delivery(gw, p, record)
    if record.signature_check is None or record.signature_check == "verified":
        if relay.held_done:
            await emit(relay.held_done)
        return
    why = record.signature_check.removeprefix("failed: ")
    err = GatewayRefusal(502, gw.redact(
        f"{p.id}: response signature check failed: {why}; the end of the stream was "
        "withheld"), code="response_signature_invalid")
    record.outcome, record.error = "failed", err.message
    await emit(err.sse_event())


async def _chain(first: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if first:
        yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk

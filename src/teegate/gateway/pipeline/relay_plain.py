"""Relay a plain (whole-body) answer: verify it (an inline or endpoint signature), settle
the call and commit its receipt, and only then send it — a withheld answer (bad signature,
lost hold) never leaves. ``verify_after_delivery`` providers: all but the last byte first."""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

from teegate import safejson
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline import settle, verify
from teegate.gateway.pipeline.respond import RECEIPT_HEADERS, ReceiptLost
from teegate.providers.translated import TranslatedResponse

if TYPE_CHECKING:
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.endpoint import Parsed
    from teegate.gateway.pipeline.forward import Upstream
    from teegate.gateway.pipeline.intake import Send
    from teegate.gateway.state import Gateway


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def relay_plain(gw: Gateway, up: Upstream, call: Parsed, record: CallRecord,
                      headers: list[tuple[bytes, bytes]], send: Send) -> None:
    upstream, data, a = up.response, up.data, up.attested
    await upstream.aclose()
    record.response_sha256 = record.returned_sha256 = _sha(data)
    if isinstance(upstream, TranslatedResponse):  # the provider's own bytes, not ours
        record.response_sha256 = upstream.received_sha256() or record.response_sha256
    mode = up.provider.config.platform.signatures
    if a is not None and mode == "inline":
        verify.inline_plain(gw, up, record, headers)
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
        if up.translation is not None:  # the provider's bytes were checked: the agent's
            data = up.translation.plain(data)
    else:
        record.outcome = "failed"
    record.returned_sha256 = _sha(data)
    headers.append((b"content-length", str(len(data)).encode()))
    if record.verified_after_delivery and data:
        await _deliver_then_conclude(gw, record, upstream.status_code, headers, data, send)
        return
    if a is not None and mode == "endpoint" and record.outcome == "success" and (
            record.signature_check is None):
        verify.no_answer_id(gw, up.provider, record)
    if record.signature_check == "pending":  # before any byte reaches the agent
        await verify.endpoint_before_delivery(gw, up.provider, record)
    if record.signature_check is not None and record.signature_check != "verified":
        refusal = gw.redacted(GatewayRefusal(
            502, f"{up.provider.id}: response signature check failed: "
            f"{record.signature_check.removeprefix('failed: ')}; the response was "
            "withheld", code="response_signature_invalid"))
        record.status, record.error = 502, refusal.message
        record.returned_sha256 = _sha(refusal.body())
        await settle.conclude(gw, record)  # voided (void_if_unverified), receipt written
        raise refusal
    if call.keep is not None and record.outcome == "success":
        await call.keep(gw, record, call, data)
    withheld = GatewayRefusal(503, "the call's hold was released before it ended (an "
                              "expiry sweep); nothing was charged and the answer is "
                              "withheld", code="hold_lost")
    record.withheld_sha256 = _sha(withheld.body())
    if not await settle.conclude(gw, record):  # nothing sent yet: settle, commit the receipt
        headers = [h for h in headers if h[0] not in RECEIPT_HEADERS]
    if record.hold_lost:
        raise withheld  # the receipt (committed) says so: failed, charged 0
    await send({"type": "http.response.start", "status": upstream.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _deliver_then_conclude(gw: Gateway, record: CallRecord, status: int,
                                 headers: list[tuple[bytes, bytes]], data: bytes,
                                 send: Send) -> None:
    """``verify_after_delivery``: the answer goes out at once but for its last byte,
    which waits for the signature check, the settlement and the receipt (a receipt id
    handed out must exist); a failure there cuts the answer off instead."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data[:-1], "more_body": True})
    if not await settle.conclude(gw, record):
        raise ReceiptLost(f"receipt {record.receipt_id} could not be committed")
    if record.hold_lost:
        raise ReceiptLost(f"call {record.receipt_id}: its hold was released before it "
                          "ended")
    await send({"type": "http.response.body", "body": data[-1:]})

"""Verify: the provider's signature over the exact request and response bytes, as its
platform delivers it — inline (a teegate node: response headers, or an SSE comment before
``[DONE]``) or at an endpoint (NEAR AI / RedPill: ``/v1/signature/{id}``) — and the replay
check of an endpoint signature. A failed check quarantines the provider (the attestation
manager) and the answer is withheld or voided, never charged."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from teegate.errors import TeegateError
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.replay import created_time, expires_at, freshness_problem, response_key
from teegate.node.signatures import signature_text

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.forward import Upstream
    from teegate.gateway.state import Gateway
    from teegate.gateway.streaming import SignatureCheck

log = logging.getLogger("teegate.gateway")

SIG_HEADERS = ("x-teegate-signature", "x-teegate-signing-address", "x-teegate-signing-algo",
               "x-teegate-text")
_SIG_FIELDS = ("text", "signature", "signing_address", "signing_algo")


def inline_plain(gw: Gateway, up: Upstream, record: CallRecord,
                 headers: list[tuple[bytes, bytes]]) -> None:
    """A teegate node's signature headers over (sent bytes, answer bytes, nonce); on
    success they are passed on when the client's own bytes were forwarded (it may check
    them too). Raises a 502 (the answer withheld) when they are missing or do not verify."""
    p, a, resp = up.provider, up.attested, up.response
    assert a is not None
    sig = resp.headers.get("x-teegate-signature")
    why: str | None
    if sig is None:
        why = "the response carries no signature"
        gw.manager.signature_failed(p, why)
    else:
        why = gw.manager.check_signature(
            p, a, text=resp.headers.get("x-teegate-text", ""), signature=sig,
            address=resp.headers.get("x-teegate-signing-address", ""),
            algo=resp.headers.get("x-teegate-signing-algo", ""),
            expected_text=signature_text(up.sent, up.data, up.nonce))
    if why is not None:
        record.outcome, record.status = "failed", 502
        record.signature_check = f"failed: {why}"
        raise GatewayRefusal(502, f"{p.id}: response signature check failed: {why}; "
                             "the response was withheld", code="response_signature_invalid")
    record.signature_check = "verified"
    record.signature = {k: resp.headers.get(k, "") for k in SIG_HEADERS}
    if record.forwarded_sha256 is None:  # client's bytes unchanged: it may check too
        headers += [(k.encode(), v.encode()) for k, v in record.signature.items()]


def inline_stream(gw: Gateway, up: Upstream, record: CallRecord) -> SignatureCheck:
    """The check a stream's signature comment goes through (``SseRelay``)."""
    p, a = up.provider, up.attested
    assert a is not None
    suffix = "" if up.nonce is None else ":" + up.nonce

    def check(sig: dict[str, Any], expected: str) -> str | None:
        record.signature = {k: str(sig.get(k, "")) for k in _SIG_FIELDS}
        return gw.manager.check_signature(
            p, a, text=str(sig.get("text", "")), signature=str(sig.get("signature", "")),
            address=str(sig.get("signing_address", "")),
            algo=str(sig.get("signing_algo", "")), expected_text=expected + suffix)

    return check


async def endpoint_before_delivery(gw: Gateway, p: ProviderRuntime, record: CallRecord
                                   ) -> None:
    """``endpoint_signature`` before delivery: a fetch that breaks (or a stop) is a
    failed check, so nothing unverified goes out as verified."""
    try:
        await endpoint_signature(gw, p, record)
    except asyncio.CancelledError:
        record.signature_check = "failed: not checked: the gateway stopped first"
        raise
    except Exception as e:
        log.exception("cannot check the response signature of %s", record.chat_id)
        record.signature_check = f"failed: not checked: {type(e).__name__}"
    check = record.signature_check or "not checked"
    if check != "verified" and not check.startswith("failed"):  # e.g. no attested key
        record.signature_check = f"failed: {check}"


def no_answer_id(gw: Gateway, p: ProviderRuntime, record: CallRecord) -> None:
    """An attested endpoint-signed answer without a completion id: its signature cannot
    be fetched, so it cannot be verified (a proxy may strip the id): a failed check."""
    why = "the answer carries no completion id to fetch its signature by"
    record.signature_check = f"failed: {why}"
    gw.manager.signature_failed(p, why)


async def endpoint_signature(gw: Gateway, p: ProviderRuntime, record: CallRecord) -> None:
    """NEAR AI / RedPill: fetch ``/v1/signature/{id}`` and check it (before delivery,
    or before the last byte with ``verify_after_delivery``); a failure quarantines the
    provider."""
    a = p.current(gw.clock()) or p.attested
    chat_id = record.chat_id
    if a is None or not chat_id:
        record.signature_check = "skipped: no attested key"
        return
    try:
        sig = await p.adapter.fetch_signature(chat_id, model=record.model)
    except TeegateError as e:
        record.signature_check = f"failed: {e}"
        gw.manager.signature_failed(p, f"signature for {chat_id} unavailable: {e}")
        return
    record.signature = {k: str(sig.get(k, "")) for k in _SIG_FIELDS}
    text = str(sig.get("text", ""))
    expected = f"{record.forwarded_sha256 or record.request_sha256}:{record.response_sha256}"
    why = gw.manager.check_signature(
        p, a, text=text, signature=str(sig.get("signature", "")),
        address=str(sig.get("signing_address", "")), algo=str(sig.get("signing_algo", "")),
        expected_text=expected)
    if why is None:
        why = await replayed(gw, p, record, str(sig.get("signing_address", "")))
    record.signature_check = "verified" if why is None else f"failed: {why}"


async def replayed(gw: Gateway, p: ProviderRuntime, record: CallRecord, address: str
                   ) -> str | None:
    """Why a verified endpoint signature does not prove this call (gateway/replay.py):
    the answer is older than the replay window, or was accepted before. A replay is a
    man in the middle: the provider is quarantined as for a bad signature."""
    window = gw.config.replay_window_s
    created = created_time(record.created)
    why = freshness_problem(created, record.started, window)
    if why is None and created is not None and record.chat_id is not None:
        key = response_key(address, record.chat_id)
        until = expires_at(created, record.started, window)
        first = await anyio.to_thread.run_sync(functools.partial(
            gw.store.claim_response, key, expires_at=until, now=int(time.time())))
        if not first:
            why = (f"the answer {record.chat_id!r} was accepted before (within the replay "
                   "window): a replay")
    if why is not None:
        gw.manager.signature_failed(p, why)
    return why


def void_if_unverified(record: CallRecord) -> None:
    """An answer whose verification failed is voided, never charged: its usage is as
    unverified as its content (a forged usage would otherwise charge the whole hold)."""
    check = record.signature_check
    if check is not None and check.startswith("failed") and record.outcome != "voided":
        record.outcome = "voided"
        record.error = f"{record.error or check}; the answer failed verification: voided, " \
            "not charged"

"""Respond: the headers every answer carries (who served it, at what trust level, on which
verdict, its receipt and request id) and OpenAI-shaped error answers."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from teegate.gateway.errors import JSON_CT, GatewayRefusal

if TYPE_CHECKING:
    from teegate.gateway.attestation import Attested, ProviderRuntime
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.intake import Message, Send
    from teegate.gateway.state import Gateway
    from teegate.providers.http11 import Http11Response

RECEIPT_HEADERS = frozenset({b"x-teegate-receipt", b"x-receipt-id"})
ACI_VERSION_HEADER = (b"x-aci-version", b"aci/1")


def receipt_headers(receipt_id: str, keyset_digest: str) -> list[tuple[bytes, bytes]]:
    """ACI §7: a paid answer names its receipt and the keyset that signs it (the digest the
    gateway's ``/v1/aci/attestation`` binds), so the agent can tie the two together."""
    rid = receipt_id.encode()
    return [(b"x-teegate-receipt", rid), (b"x-receipt-id", rid), ACI_VERSION_HEADER,
            (b"x-aci-keyset-digest", keyset_digest.encode())]


class ReceiptLost(Exception):  # noqa: N818 - an outcome
    """An answer whose receipt could not be committed: the connection is dropped before
    the last byte, so the client sees an incomplete answer, not a receipt id that does not
    exist."""


def request_id() -> tuple[bytes, bytes]:
    """An ``x-request-id`` of its own for every answer (as OpenAI's API sends), for support
    requests and logs that must name one call."""
    return b"x-request-id", b"req_" + secrets.token_hex(12).encode()


def with_request_id(send: Send) -> Send:
    """``send`` that adds ``x-request-id`` (the call pipeline adds it itself: no extra
    await per streamed event)."""
    rid = request_id()

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), rid]}
        await send(message)

    return sending


def response_headers(gw: Gateway, p: ProviderRuntime, a: Attested | None, record: CallRecord,
                     upstream: Http11Response) -> list[tuple[bytes, bytes]]:
    """A served answer's headers; allocates the call's receipt id (``x-teegate-receipt``)."""
    ct = upstream.headers.get("content-type", "application/json")
    trust = record.served_trust or ""
    if a is not None and after_delivery(p):  # the operator's choice, said where seen
        record.verified_after_delivery = True
        trust += "; verified-after-delivery"
    h = [(b"content-type", ct.encode("latin-1")), request_id(),
         (b"x-teegate-provider", p.id.encode()),
         (b"x-teegate-platform", p.config.platform.name.encode()),
         (b"x-teegate-trust", trust.encode()),
         (b"x-teegate-verdict", (a.digest if a is not None else "none").encode())]
    if a is not None and a.development:
        h.append((b"x-teegate-development", b"true"))
    # The receipt's tri-state upstream.verified claim, said where the agent sees it; a
    # plain (non-TEE) provider is marked routed, never "failed".
    if a is not None:
        h.append((b"x-teegate-upstream-verified", b"verified"))
    else:
        h.append((b"x-teegate-upstream-verified", b"not_applicable"))
        if record.served_trust == "standard":
            h.append((b"x-teegate-routed", b"true"))
    h += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers.items()
          if k.startswith("x-ratelimit-")]  # the provider's budget, as OpenAI sends it
    if gw.receipts is not None:
        record.receipt_id = gw.receipts.new_id()
        h += receipt_headers(record.receipt_id, gw.receipts.keyset_digest)
    return h


def after_delivery(p: ProviderRuntime) -> bool:
    """Whether the operator chose to deliver this provider's answers before their endpoint
    signature is checked (``verify_after_delivery``)."""
    return p.config.verify_after_delivery and p.config.platform.signatures == "endpoint"


async def send_error(send: Send, r: GatewayRefusal, keyset_digest: str | None = None) -> None:
    body = r.body()
    headers = [JSON_CT, (b"content-length", str(len(body)).encode()),
               (b"x-should-retry", b"true" if r.retry else b"false"), request_id(),
               *r.headers]
    if r.receipt_id is not None:
        if keyset_digest is not None:
            headers += receipt_headers(r.receipt_id, keyset_digest)
        else:
            rid = r.receipt_id.encode()
            headers += [(b"x-teegate-receipt", rid), (b"x-receipt-id", rid)]
    await send({"type": "http.response.start", "status": r.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The gateway's x402 door: a paid route called without an API key and without a payment
header is answered 402 with the price of its worst-case hold, computed as a keyed call's
hold is (the endpoint's parse, routing at the payer's trust level, the dearest eligible
provider's price for the prompt bound and the output cap). Refusals that come first for a
keyed call (bad JSON, unknown model, no provider at the level) come first here too."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from teegate.errors import TeegateError
from teegate.gateway.auth import Agent
from teegate.gateway.calls import CallRecord
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline import intake
from teegate.gateway.pipeline.hold import worst_case
from teegate.gateway.pipeline.route import route
from teegate.ledger.pricing import estimate_prompt_tokens

if TYPE_CHECKING:
    from teegate.gateway.pipeline.endpoint import Endpoint
    from teegate.gateway.pipeline.intake import Receive, Scope, Send
    from teegate.gateway.state import Gateway

PAYMENT_HEADERS = (b"payment-signature", b"x-payment")  # v2, v1
ANONYMOUS = "x402:anonymous"


def wants_challenge(gw: Gateway, scope: Scope, authorization: bytes | None) -> bool:
    """x402 is on, the call has no API key and carries no payment."""
    if gw.config.x402 is None or gw.config.chain is None or authorization:
        return False
    return not any(k in PAYMENT_HEADERS for k, _ in scope["headers"])


def _url(scope: Scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


async def challenge(gw: Gateway, endpoint: Endpoint, scope: Scope, receive: Receive,
                    send: Send, hdrs: dict[bytes, bytes]) -> None:
    """Answer the 402 (or the refusal a keyed call would get first)."""
    from teegate.x402.challenge import payment_required  # the SDK, only when x402 is on

    cfg, chain = gw.config.x402, gw.config.chain
    if cfg is None or chain is None:  # wants_challenge said yes: not reached
        raise GatewayRefusal(500, "x402 is not configured", code="internal_error")
    body = await intake.read_body(receive, hdrs.get(b"content-length"),
                                  gw.config.max_body_bytes)
    payer = Agent(ANONYMOUS, cfg.trust, cfg.trust, None)
    call = endpoint.parse(gw, body, await intake.load_request(body),
                          hdrs.get(intake.TRUST_HEADER), payer)
    record = CallRecord(payer.id, call.model, call.required.label, time.time(), "",
                        endpoint=endpoint.route)
    providers = route(gw, record, call.model, call.required)
    try:
        prompt = estimate_prompt_tokens(call.req)
    except UnicodeEncodeError:
        prompt = estimate_prompt_tokens(call.forward)
    try:
        amount = worst_case(providers, call.model, prompt, call.output_cap)
    except TeegateError as e:  # beyond any amount the ledger can hold, as for a keyed call
        raise GatewayRefusal(400, f"the call's worst case cannot be held: {e}",
                             code="invalid_request", param="max_tokens") from None
    headers, out = payment_required(
        cfg.offer(chain.chain_id, chain.token, chain.receiver), amount, _url(scope),
        description=f"{endpoint.route} {call.model} (worst case of the call)")
    await send({"type": "http.response.start", "status": 402,
                "headers": [(k.encode(), v.encode()) for k, v in headers]
                + [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})

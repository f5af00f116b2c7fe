"""Hold: before anything is forwarded, reserve the call's worst case (the dearest eligible
provider's price for the prompt bound and the output cap) on the agent's wallet or
conversation; settlement (``settle``) later charges what the call used, at most that."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread

from teegate.errors import TeegateError
from teegate.gateway.errors import GatewayRefusal
from teegate.ledger.accounting import FREE
from teegate.ledger.pricing import Price, estimate_prompt_tokens

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.pipeline.endpoint import Parsed
    from teegate.gateway.state import Gateway


def worst_case(providers: list[ProviderRuntime], model: str, prompt_bound: int,
               max_tokens: int) -> int:
    return max((p.config.prices.get(model, Price()).cost(prompt_bound, max_tokens)
                for p in providers), default=0)


async def place(gw: Gateway, record: CallRecord, call: Parsed,
                providers: list[ProviderRuntime]) -> None:
    """Hold the worst case (nothing without a ledger); a refused hold (funds, budget) is
    the call's refusal."""
    if gw.accounting is None:
        return
    try:
        record.prompt_estimate = estimate_prompt_tokens(call.req)
    except UnicodeEncodeError:  # a lone surrogate (valid JSON): bound by the bytes
        record.prompt_estimate = estimate_prompt_tokens(call.forward)
    try:
        worst = worst_case(providers, call.model, record.prompt_estimate, call.output_cap)
    except TeegateError as e:  # beyond any amount the ledger can hold
        record.outcome, record.status = "refused", 400
        raise GatewayRefusal(400, f"the call's worst case cannot be held: {e}",
                             code="invalid_request", param="max_tokens") from None
    if worst > 0 or record.conversation:  # a free call's conversation is checked
        try:
            record.hold_id = await anyio.to_thread.run_sync(gw.accounting.hold, record, worst)
            if record.hold_id != FREE:  # nothing held for a free call
                gw.running_holds.add(record.hold_id)
        except GatewayRefusal as r:
            record.outcome, record.status = "refused", r.status
            raise

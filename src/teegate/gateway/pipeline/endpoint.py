"""What an endpoint tells the call pipeline: how to parse its body into a ``Parsed`` call,
where the provider serves it, and how its output is capped. Everything else (routing, the
hold, failover, relay, verification, settlement, the receipt) is the pipeline's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.auth import Agent
    from teegate.gateway.state import Gateway
    from teegate.routing.trust import TrustLevel


@dataclass(slots=True)
class Parsed:
    """One call as its endpoint read it."""

    body: bytes  # the client's bytes
    req: dict[str, Any]  # the request's JSON (as forwarded: a model suffix stripped)
    model: str
    stream: bool
    required: TrustLevel
    forward: bytes  # the bytes sent to the provider (the client's own whenever possible)
    output_cap: int  # output tokens the call may produce: what the hold covers
    uncapped: bool = False  # the request names no output limit: send ``cap_field`` per provider
    inject: bool = False  # the gateway asked for stream usage: strip the usage chunk


# (gateway, body, its JSON, X-Teegate-Trust, agent) -> the call, or a GatewayRefusal
Parse = Callable[["Gateway", bytes, Any, "bytes | None", "Agent"], Parsed]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A POST endpoint served through the pipeline."""

    name: str  # in logs
    path: str  # under the provider's base URL (``.../v1``), e.g. ``/chat/completions``
    parse: Parse
    # The field that caps output at provider ``p`` (an uncapped call is sent the gateway's
    # default under it, so a provider cannot produce more than was held); None: no output.
    cap_field: Callable[[ProviderRuntime], str] | None = None
    # The per-choice cap an uncapped call is held at and sent (None: the gateway's
    # ``default_max_tokens``).
    default_cap: int | None = None

    def cap(self, default_max_tokens: int) -> int:
        return default_max_tokens if self.default_cap is None else self.default_cap

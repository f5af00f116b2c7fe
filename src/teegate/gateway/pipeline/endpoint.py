"""What an endpoint tells the call pipeline: how to parse its body into a ``Parsed`` call,
where the provider serves it, and how its output is capped. Everything else (routing, the
hold, failover, relay, verification, settlement, the receipt) is the pipeline's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from teegate.gateway.attestation import ProviderRuntime
    from teegate.gateway.auth import Agent
    from teegate.gateway.calls import CallRecord
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
    extra: Any = None  # the endpoint's own state (``Endpoint.leg`` reads it)
    # Called with the agent's final answer document before its last byte (stored
    # responses); None: nothing kept.
    keep: Callable[[Gateway, CallRecord, Parsed, bytes], Awaitable[None]] | None = None


class StreamTranslation(Protocol):
    def feed(self, events: bytes) -> bytes:
        """Whole provider events (as relayed) in, the agent's events out."""
        ...

    @property
    def final(self) -> bytes | None:
        """The agent's whole answer document once the stream completed."""
        ...


class Translation(Protocol):
    """Between the agent's API and the provider's: the provider's signed bytes are
    checked and hashed as received, the agent gets (and the receipt hashes) the result."""

    name: str | None  # in the receipt (None: the same API, observed only)

    def plain(self, data: bytes) -> bytes: ...
    def stream(self, usage: Callable[[], dict[str, Any] | None]) -> StreamTranslation: ...


@dataclass(slots=True)
class Leg:
    """How one provider is sent a call (``Endpoint.leg``)."""

    path: str
    body: bytes
    translation: Translation | None = None
    inject: bool = False  # as ``Parsed.inject``, for these bytes


# (gateway, body, its JSON, X-Teegate-Trust, agent) -> the call, or a GatewayRefusal
Parse = Callable[["Gateway", bytes, Any, "bytes | None", "Agent"], Parsed]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A POST endpoint served through the pipeline."""

    name: str  # in logs
    path: str  # under the provider's base URL (``.../v1``), e.g. ``/chat/completions``
    route: str  # the gateway's own, e.g. ``/v1/chat/completions`` (in receipts)
    parse: Parse
    # The field that caps output at provider ``p`` (an uncapped call is sent the gateway's
    # default under it, so a provider cannot produce more than was held); None: no output.
    cap_field: Callable[[ProviderRuntime], str] | None = None
    # The per-choice cap an uncapped call is held at and sent (None: the gateway's
    # ``default_max_tokens``).
    default_cap: int | None = None
    # Per provider: the path, bytes and translation (None: ``path`` and the parsed bytes,
    # capped by ``cap_field``).
    leg: Callable[[Gateway, ProviderRuntime, Parsed], Leg] | None = None
    # After parsing, before routing: what the call needs from the database (a stored
    # history); may refuse the call.
    load: Callable[[Gateway, Parsed, Agent], Awaitable[None]] | None = None

    def cap(self, default_max_tokens: int) -> int:
        return default_max_tokens if self.default_cap is None else self.default_cap

"""``POST /v1/chat/completions``: messages in, a completion or a stream of chunks out.

The body is forwarded as the client's bytes; the gateway only appends
``stream_options.include_usage`` to a stream that lacks it (and strips the usage chunk it
asked for), and rewrites the request when a ``model@level`` suffix or a partial
``stream_options`` must change. The hold covers the larger token limit for each of ``n``
choices (``default_max_tokens`` when none is named, then sent to the provider under its
``max_tokens_field``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teegate.gateway import forwarding
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline.endpoint import Endpoint, Parsed
from teegate.gateway.pipeline.intake import (
    request_object,
    required_trust,
    stream_flag,
    token_limit,
)

if TYPE_CHECKING:
    from teegate.gateway.auth import Agent
    from teegate.gateway.state import Gateway


def parse(gw: Gateway, body: bytes, req: Any, trust_header: bytes | None,
          agent: Agent) -> Parsed:
    req = request_object(req)
    if not isinstance(req.get("messages"), list):
        raise GatewayRefusal(400, "'messages' is required and must be an array",
                             code="invalid_request", param="messages")
    stream = stream_flag(req)
    limits = [token_limit(req, name) for name in ("max_completion_tokens", "max_tokens")]
    stream_options(req)
    model, required, changed = required_trust(gw, req, trust_header, agent)
    forward, inject = with_stream_usage(body, req, stream, changed)
    # The output bound the hold covers: a provider may honour either limit, and each of
    # ``n`` choices may use all of it.
    given = [n for n in limits if n is not None]
    choices = token_limit(req, "n") or 1
    out = (max(given) if given else gw.config.default_max_tokens) * choices
    return Parsed(body, req, model, stream, required, forward, out, uncapped=not given,
                  inject=inject)


def with_stream_usage(body: bytes, req: dict[str, Any], stream: bool, changed: bool
                      ) -> tuple[bytes, bool]:
    """(bytes to forward, whether the gateway asked for the usage chunk): a stream is
    always asked for its usage (what settlement charges), appended to the client's bytes
    when it names no ``stream_options``; ``changed``: ``req`` must be re-encoded anyway.
    ``stream_options`` must have been checked (``stream_options``)."""
    inject = False
    added: dict[str, Any] = {}  # keys the client did not send: appended to its bytes
    if stream:
        opts = req.get("stream_options")
        if "stream_options" not in req:
            added["stream_options"] = {"include_usage": True}
            inject = True
        elif opts is None or (isinstance(opts, dict) and not opts.get("include_usage")):
            req["stream_options"] = {**(opts or {}), "include_usage": True}
            inject = changed = True
    req.update(added)
    forward = (forwarding.encode(req) if changed
               else forwarding.with_keys(body, added) if added else body)
    return forward, inject


def stream_options(req: dict[str, Any]) -> None:
    opts = req.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or not isinstance(
            opts.get("include_usage", False), bool)):
        raise GatewayRefusal(400, "'stream_options' must be an object whose "
                             "'include_usage' is a boolean", code="invalid_request",
                             param="stream_options")


CHAT = Endpoint("chat", "/chat/completions", "/v1/chat/completions", parse,
                cap_field=lambda p: p.config.max_tokens_field)

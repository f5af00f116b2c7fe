"""``POST /v1/embeddings``: input in, vectors out, priced on input tokens only.

No output and no stream: the hold covers the prompt bound at the input price, and the
settlement charges the ``prompt_tokens`` the provider reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teegate.gateway import forwarding
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.pipeline.endpoint import Endpoint, Parsed
from teegate.gateway.pipeline.intake import request_object, required_trust

if TYPE_CHECKING:
    from teegate.gateway.auth import Agent
    from teegate.gateway.state import Gateway


def _valid_input(value: Any) -> bool:
    """A string, a non-empty array of strings, of token ids, or of arrays of token ids."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    if all(_token_ids(v) for v in value):
        return True
    return _token_ids(value)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def parse(gw: Gateway, body: bytes, req: Any, trust_header: bytes | None,
          agent: Agent) -> Parsed:
    req = request_object(req)
    if not _valid_input(req.get("input")):
        raise GatewayRefusal(400, "'input' is required: a string, or a non-empty array of "
                             "strings, of token ids or of arrays of token ids",
                             code="invalid_request", param="input")
    if req.get("stream"):  # never streamed: a stream would carry no usage to charge
        raise GatewayRefusal(400, "embeddings are not streamed", code="invalid_request",
                             param="stream")
    model, required, changed = required_trust(gw, req, trust_header, agent)
    forward = forwarding.encode(req) if changed else body
    return Parsed(body, req, model, False, required, forward, 0)


EMBEDDINGS = Endpoint("embeddings", "/embeddings", "/v1/embeddings", parse)

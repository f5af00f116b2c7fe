"""``POST /v1/completions`` (legacy): a prompt in, ``choices[].text`` out, plain or
streamed (what llama-index's default OpenAI LLM and older clients call).

As chat: the client's bytes are forwarded, a stream is asked for its usage. The output
bound is ``max_tokens`` (OpenAI's default of 16 when it is not named, then sent) for each
of ``max(n, best_of)`` generated choices: ``best_of`` are produced and charged, ``n``
returned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teegate.gateway.endpoints.chat import stream_options, with_stream_usage
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

DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for this endpoint


def _valid_prompt(value: Any) -> bool:
    """A string, an array of strings, of token ids, or of arrays of token ids."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    ids = [isinstance(t, int) and not isinstance(t, bool) for t in value]
    return all(isinstance(v, str) for v in value) or all(ids) or all(
        isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
        for v in value)


def parse(gw: Gateway, body: bytes, req: Any, trust_header: bytes | None,
          agent: Agent) -> Parsed:
    req = request_object(req)
    if not _valid_prompt(req.get("prompt")):
        raise GatewayRefusal(400, "'prompt' is required: a string, or an array of strings, "
                             "of token ids or of arrays of token ids",
                             code="invalid_request", param="prompt")
    stream = stream_flag(req)
    limit = token_limit(req, "max_tokens")
    stream_options(req)
    model, required, changed = required_trust(gw, req, trust_header, agent)
    forward, inject = with_stream_usage(body, req, stream, changed)
    n = token_limit(req, "n") or 1
    best_of = token_limit(req, "best_of") or 1
    out = (limit if limit is not None else DEFAULT_MAX_TOKENS) * max(n, best_of)
    return Parsed(body, req, model, stream, required, forward, out, uncapped=limit is None,
                  inject=inject)


COMPLETIONS = Endpoint("completions", "/completions", "/v1/completions", parse,
                       cap_field=lambda p: "max_tokens", default_cap=DEFAULT_MAX_TOKENS)

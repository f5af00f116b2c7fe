"""Intake: what every call reads before it is routed — the headers the gateway acts on or
forwards, the body (bounded), its JSON, and the trust level the call requires.

Shared by every endpoint; what an endpoint's body must hold is the endpoint's own parse
(``teegate.gateway.endpoints``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from teegate import safejson
from teegate.errors import TeegateError
from teegate.gateway.errors import GatewayRefusal
from teegate.ledger.model import MAX_AMOUNT
from teegate.routing.trust import TrustLevel, parse_trust

if TYPE_CHECKING:
    from teegate.gateway.auth import Agent
    from teegate.gateway.state import Gateway

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRUST_HEADER = b"x-teegate-trust"
CONVERSATION_HEADER = b"x-teegate-conversation"
VOUCHER_HEADER = b"x-teegate-voucher"  # paid by an on-chain channel (chain.accounting)
EXTRA = b"\0extra"  # key of the forwarded client headers, as raw header lines
# Client headers forwarded unchanged: end-to-end encryption toward the model TEE (NEAR AI
# E2EE, REFERENCE §7.5) and request correlation. Everything else stays at the gateway.
FORWARDED = frozenset({b"x-signing-algo", b"x-client-pub-key", b"x-model-pub-key",
                       b"x-encryption-version", b"x-request-id"})
_KEPT = (b"authorization", b"content-length", TRUST_HEADER, CONVERSATION_HEADER,
         VOUCHER_HEADER)


class Disconnected(Exception):  # noqa: N818 - an outcome
    """The client went away before its request body arrived."""


def read_headers(scope: Scope) -> dict[bytes, bytes]:
    """The headers the call path reads (a repeated trust header joined with commas, so
    ``required_trust`` can refuse disagreeing values) and, under ``EXTRA``, the forwarded
    ones as header lines (CR/LF-free values only)."""
    hdrs: dict[bytes, bytes] = {}
    extra: list[bytes] = []
    for k, v in scope["headers"]:
        if k == TRUST_HEADER and k in hdrs:
            hdrs[k] += b"," + v
        elif k in _KEPT:
            hdrs[k] = v
        elif k in FORWARDED and b"\r" not in v and b"\n" not in v:
            extra.append(k + b": " + v + b"\r\n")
    if extra:
        hdrs[EXTRA] = b"".join(extra)
    return hdrs


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes: by Content-Length before a
    byte is read, else as soon as the bytes received pass it."""
    if content_length is not None:
        try:
            n = int(content_length)
        except ValueError:
            raise GatewayRefusal(400, "bad Content-Length", code="invalid_request") from None
        if n > limit:
            raise GatewayRefusal(413, f"request body of {n} bytes exceeds the limit of "
                                 f"{limit} bytes", code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise GatewayRefusal(413, f"request body exceeds the limit of {limit} bytes",
                                 code="request_too_large")
        chunks.append(part)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def load_request(body: bytes) -> Any:
    """The request's JSON (a large body parsed off the event loop). A key named twice is
    refused: the body is forwarded verbatim, and the hold and routing (which would read the
    last value) must never disagree with the provider, whose parser may take the first."""
    try:
        return await safejson.aloads(body, unique_keys=True)
    except safejson.DuplicateKeyError as e:
        raise GatewayRefusal(400, f"request body names the key {e.key!r} twice in one object",
                             code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):  # too deep is a JSONDecodeError too
        raise GatewayRefusal(400, "request body is not valid JSON", code="invalid_json"
                             ) from None


def request_object(req: Any) -> dict[str, Any]:
    """The request as a JSON object with a non-empty string ``model``, or a 400."""
    if not isinstance(req, dict):
        raise GatewayRefusal(400, "request body must be a JSON object", code="invalid_json")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayRefusal(400, "'model' is required and must be a string",
                             code="invalid_request", param="model")
    return req


def token_limit(req: dict[str, Any], name: str) -> int | None:
    """A token limit (or ``n``) from the request: absent/null, or a positive integer (a
    float, a bool or a string would leave the hold guessing what the provider makes of it)."""
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise GatewayRefusal(400, f"'{name}' must be a positive integer of at most "
                             f"{MAX_AMOUNT}", code="invalid_request", param=name)
    return value


def stream_flag(req: dict[str, Any]) -> bool:
    stream = req.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise GatewayRefusal(400, "'stream' must be a boolean", code="invalid_request",
                             param="stream")
    return bool(stream)


def required_trust(gw: Gateway, req: dict[str, Any], trust_header: bytes | None,
                   agent: Agent) -> tuple[str, TrustLevel, bool]:
    """(model, the level the call requires, whether ``req['model']`` was rewritten): a
    ``model@level`` suffix (stripped from the request) or ``X-Teegate-Trust``, which must
    agree, else the agent's level; never below the agent's floor."""
    model: str = req["model"]
    changed = False
    asked: TrustLevel | None = None
    if "@" in model and model not in gw.by_model:
        base, _, suffix = model.rpartition("@")
        try:
            asked = parse_trust(suffix)
        except TeegateError as e:
            if base in gw.by_model:  # a mistyped level, not another model
                raise GatewayRefusal(400, f"model suffix: {e}", code="invalid_trust_level",
                                     param="model") from None
            asked = None
        if asked is not None:
            model, changed = base, True
            req["model"] = base
    if trust_header is not None:
        try:
            levels = {parse_trust(v) for v in trust_header.decode("latin-1").split(",")}
        except TeegateError as e:
            raise GatewayRefusal(400, f"X-Teegate-Trust: {e}", code="invalid_trust_level",
                                 param="x-teegate-trust") from None
        if len(levels) != 1:
            raise GatewayRefusal(400, "X-Teegate-Trust is repeated with different levels",
                                 code="invalid_trust_level", param="x-teegate-trust")
        from_header = levels.pop()
        if asked is not None and asked != from_header:
            raise GatewayRefusal(400, "X-Teegate-Trust and the model suffix name different "
                                 "trust levels", code="invalid_trust_level", param="model")
        asked = from_header
    return model, max(asked if asked is not None else agent.trust, agent.min_trust), changed

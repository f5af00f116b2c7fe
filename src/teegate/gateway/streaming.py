"""SSE relay between a provider and the client: pass events through as they arrive, hash
every byte the provider signed, check a teegate node's signature comment before ``[DONE]`` is
forwarded, capture (and, when the gateway asked for it, strip) the usage chunk.

Pure bookkeeping over bytes: ``feed`` takes provider bytes and returns bytes for the client;
the caller does the I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teegate import safejson
from teegate.errors import UpstreamError

SIGNATURE_COMMENT = b": teegate-signature "
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
DONE = b"data: [DONE]"

MAX_EVENT = 4 << 20
"""Longest SSE event relayed: bytes are held until their event ends, so a provider that never
ends one would otherwise grow the gateway's memory without bound."""

# Fields of a chunk that carry output (chat deltas, legacy completions' "text"): an event
# with one counts as one output token when a stream is cut before its usage arrived.
_OUTPUT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal", "tool_calls",
                  "function_call", "text")
_NAMES = b"|".join(f.encode() for f in _OUTPUT_FIELDS)
_OUTPUT = re.compile(rb'"(?:' + _NAMES + rb')"')
_EMPTY = re.compile(rb'"(?:' + _NAMES + rb')"\s*:\s*(?:""|null|\[\]|\{\})')  # empty value


def _has_output(event: bytes, loads: Callable[[bytes, int], Any] | None = None) -> bool:
    """Whether some choice of a chunk carries a non-empty output field. Only parsed when an
    empty value appears (the first chunk: ``{"role": "assistant", "content": ""}``): the
    common chunk costs two substring tests (compact JSON) or two regex scans; unparsable is
    counted (never an undercharge)."""
    try:
        obj = loads(event, 5) if loads is not None else safejson.loads(event[5:])
    except (ValueError, UnicodeDecodeError):
        return True
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        for part in (delta if isinstance(delta, dict) else {}, choice):
            if any(part.get(f) not in (None, "", [], {}) for f in _OUTPUT_FIELDS):
                return True
    return False


# (signature json) -> None when it verifies over the hashed bytes, else the reason
SignatureCheck = Callable[[dict[str, Any], str], "str | None"]


class StreamFailure(Exception):  # noqa: N818 - a stream outcome
    """The stream must end with an error event instead of ``[DONE]``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class SseRelay:
    """State of one relayed stream.

    ``require_signature``: the provider is an attested teegate node; ``[DONE]`` is forwarded
    only after its signature comment verified, and the hash stops before that comment.
    Otherwise the hash covers every byte of the stream, ``[DONE]`` included, as a provider's
    ``GET /v1/signature/{id}`` signs it. ``strip_usage``: the gateway added
    ``include_usage``, so the usage chunk is captured but not forwarded. ``pass_comment``:
    forward the node's signature comment (only when the client's request bytes were forwarded
    unchanged, so the client can check it itself). ``hold_done``: keep ``[DONE]`` back in
    ``held_done`` (the caller checks an endpoint signature first, then sends it or an error
    event instead)."""

    request_hash: str
    check: SignatureCheck | None
    require_signature: bool
    strip_usage: bool
    pass_comment: bool = False
    hold_done: bool = False
    held_done: bytes = b""
    hasher: Any = field(default_factory=hashlib.sha256)
    pending: bytearray = field(default_factory=bytearray)
    # bytes of ``pending`` already searched for an event's end; an event parsed off the loop
    _scanned: int = field(default=0, init=False, repr=False)
    _pre: tuple[bytes, tuple[bool, Any]] | None = field(default=None, init=False, repr=False)
    signed: bool = False
    verified: bool = False
    rejected: bool = False  # the signature check itself failed (it already acted on it)
    done: bool = False
    usage: dict[str, Any] | None = None
    chat_id: str | None = None
    created: Any = None  # the first chunk's 'created' (replay window)
    content_events: int = 0
    response_bytes: int = 0
    error_event: bool = False  # the provider sent an OpenAI error event mid-stream

    def feed(self, chunk: bytes) -> bytes:
        """Provider bytes in, client bytes out. Raises StreamFailure on a bad signature or a
        ``[DONE]`` without the required signature, UpstreamError on an endless event."""
        out = [e for e in map(self._event, self._split(chunk)) if e]
        return b"".join(out)

    async def afeed(self, chunk: bytes) -> bytes:
        """``feed`` for the event loop: an event larger than ``safejson.OFFLOAD_BYTES`` that
        must be parsed is parsed in a worker thread first."""
        out: list[bytes] = []
        for event in self._split(chunk):
            if len(event) > safejson.OFFLOAD_BYTES and self._parses(event):
                skip = len(SIGNATURE_COMMENT) if event.startswith(SIGNATURE_COMMENT) else 5
                self._pre = (event, await _aparse(event[skip:]))
            try:
                relayed = self._event(event)
            finally:
                self._pre = None
            if relayed:
                out.append(relayed)
        return b"".join(out)

    def _split(self, chunk: bytes) -> list[bytes]:
        """The events ``chunk`` completes. Linear in bytes whatever the chunking: the buffer
        is searched only from where the last search stopped (less the 3 bytes an event end
        can straddle), and consumed events leave the front of a bytearray in O(1)."""
        buf = self.pending
        buf += chunk
        events: list[bytes] = []
        start = 0
        for m in _EVENT_END.finditer(buf, max(self._scanned - 3, 0)):
            events.append(bytes(buf[start:m.end()]))
            start = m.end()
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > MAX_EVENT:
            raise UpstreamError(f"an SSE event exceeds {MAX_EVENT} bytes")
        return events

    def _parses(self, event: bytes) -> bool:
        """Whether ``_event`` will parse this event's JSON."""
        return event.startswith(SIGNATURE_COMMENT) or (event.startswith(b"data:") and (
            b'"error"' in event or self.chat_id is None or b'"usage"' in event
            or _EMPTY.search(event) is not None))

    def _loads(self, event: bytes, skip: int) -> Any:
        pre = self._pre
        if pre is not None and pre[0] is event:
            ok, value = pre[1]
            if not ok:
                raise value
            return value
        return safejson.loads(event[skip:])

    def _event(self, event: bytes) -> bytes | None:
        if event.startswith(SIGNATURE_COMMENT):
            if self.signed and self.require_signature:
                raise StreamFailure("the provider sent a second signature comment",
                                    "response_signature_invalid")
            self._signature(event)
            return event if self.pass_comment else None
        if event.startswith(DONE) and event.strip() == DONE:
            if self.require_signature and not self.verified:
                raise StreamFailure("the provider's stream ended without a valid response "
                                    "signature", "response_signature_missing")
            self.done = True
            if not self.require_signature:
                # No inline signature: a provider's /v1/signature/{id} covers the whole
                # stream as sent, [DONE] included (vllm-proxy, NEAR; docs/node.md).
                self.hasher.update(event)
                self.response_bytes += len(event)
            if self.hold_done:
                self.held_done = event
                return None
            return event
        if self.signed:
            if self.require_signature and event.strip():
                # Only [DONE] may follow the signature: anything else is unsigned content.
                raise StreamFailure("the provider sent data after its response signature",
                                    "response_signature_invalid")
        else:
            self.hasher.update(event)
        self.response_bytes += len(event)
        if event.startswith(b"data:"):
            return self._data(event)
        return event

    def _data(self, event: bytes) -> bytes | None:
        # compact JSON with text: two substring tests; anything else: the regexes (and the
        # parse when a value is empty)
        text = b'"content":"' in event and b'"content":""' not in event
        if text or (_OUTPUT.search(event) and (not _EMPTY.search(event)
                                               or _has_output(event, self._loads))):
            self.content_events += 1
        if b'"error"' in event and not self.error_event:
            try:
                obj = self._loads(event, 5)
                self.error_event = isinstance(obj, dict) and isinstance(obj.get("error"), dict)
            except (ValueError, UnicodeDecodeError):
                pass
        if self.chat_id is None or b'"usage"' in event:
            try:
                obj = self._loads(event, 5)
            except (ValueError, UnicodeDecodeError):
                return event
            if not isinstance(obj, dict):
                return event
            if self.chat_id is None and isinstance(obj.get("id"), str):
                self.chat_id = obj["id"]
                self.created = obj.get("created")
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.usage = usage
                if self.strip_usage and not obj.get("choices"):
                    return None
        return event

    def _signature(self, event: bytes) -> None:
        self.signed = True
        try:
            sig = self._loads(event, len(SIGNATURE_COMMENT))
        except (ValueError, UnicodeDecodeError):
            sig = None
        if not isinstance(sig, dict):
            raise StreamFailure("the provider's signature comment is malformed",
                                "response_signature_invalid")
        if self.check is None:
            return
        why = self.check(sig, self.request_hash + ":" + self.hasher.hexdigest())
        if why is not None:
            self.rejected = True
            raise StreamFailure(f"response signature check failed: {why}",
                                "response_signature_invalid")
        self.verified = True

    def finish(self) -> bytes:
        """End of the provider's stream: flush a trailing partial event; fail when a
        required signature never came."""
        tail = bytes(self.pending)
        self.pending.clear()
        self._scanned = 0
        out = self._event(tail) if tail.strip() else None
        if self.require_signature and not self.verified:
            raise StreamFailure("the provider's stream ended without a valid response "
                                "signature", "response_signature_missing")
        return out or b""


async def _aparse(data: bytes) -> tuple[bool, Any]:
    """(True, the JSON) or (False, the error ``safejson.loads`` raised), off the loop."""
    try:
        return True, await safejson.aloads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return False, e

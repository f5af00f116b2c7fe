"""The bytes the gateway forwards: the client's own bytes whenever it can, its keys added.

Re-encoding a request to add a key costs more than the rest of a streamed call's relay, and
it changes bytes the client may want to see signed; appending a top-level key the request
does not have keeps every byte the client sent and means the same to any JSON parser (the
gateway refuses requests whose keys repeat, so the added key is the only one of its name)."""

from __future__ import annotations

import json
from typing import Any


def with_keys(body: bytes, added: dict[str, Any]) -> bytes:
    """``body`` (a JSON object none of whose keys is in ``added``) with ``added`` appended."""
    end = body.rstrip(b" \t\r\n")
    if not end.endswith(b"}"):
        raise ValueError("the body is not a JSON object")
    tail = b"".join(b"," + json.dumps(k).encode() + b":"
                    + json.dumps(v, separators=(",", ":")).encode() for k, v in added.items())
    # ``{}`` has no member to follow: the first added one is not preceded by a comma.
    head = end[:-1]
    if head.rstrip(b" \t\r\n").endswith(b"{"):
        tail = tail[1:]
    return head + tail + b"}"


def encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request, separators=(",", ":")).encode()

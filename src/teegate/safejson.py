"""JSON parsing with a nesting limit, for every document teegate did not write itself.

``json.loads`` recurses in C once per nesting level and relies on the interpreter's recursion
limit to stop. Libraries raise that limit at import (``py_ecc``, pulled in by ``eth-account``,
sets 100,000), and then a body of 100,000 ``[`` overflows the C stack of a server thread:
the process dies with a segmentation fault instead of answering 400. The depth is therefore
checked before parsing, independent of the interpreter's setting.

The check is linear in the bytes whatever they hold: escapes and strings are removed with
C-speed ``replace``/``translate`` passes that never backtrack (a regex over a string that
never closes, as ``[``x130 ``"`` ``\\"``x24,000, used to be retried from every quote:
quadratic, seconds per 48 KB on the event loop). The same pass bounds how many values a
document may hold (``max_values``), so a caller can refuse a document by what parsing it
would allocate, before allocating. ``unique_keys`` refuses an object that names a key twice:
a body forwarded verbatim must not mean one thing to teegate (last value wins) and another
to the provider. ``aloads`` parses large documents in a worker thread.
"""

from __future__ import annotations

import functools
import json
from itertools import accumulate
from typing import Any

import anyio.to_thread

__all__ = ["MAX_DEPTH", "OFFLOAD_BYTES", "DuplicateKeyError", "TooLargeError", "aloads",
           "brackets", "loads", "shape"]

MAX_DEPTH = 128
"""Deeper than any request, report or collateral in use (JSON schemas in tools included)."""

OFFLOAD_BYTES = 64 << 10
"""``aloads`` parses documents larger than this in a worker thread, not on the event loop."""

# What the scan keeps: string quotes and brackets; then brackets become signed bytes for the
# depth count (opening +1, closing -1).
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_SIGNED = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_CHUNK = 128


class DuplicateKeyError(json.JSONDecodeError):
    """An object names the same key twice (``loads(..., unique_keys=True)``)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}", "", 0)
        self.key = key


class TooLargeError(json.JSONDecodeError):
    """The document holds more values than ``max_values`` (refused before parsing)."""


def brackets(raw: bytes) -> bytes:
    """The brackets of ``raw`` that lie outside strings, in order, as signed bytes (opening
    0x01, closing 0xff).

    Escape pairs go first (``\\\\`` then ``\\"``, left to right as JSON reads them), so
    every quote left delimits a string. Adjacent quotes (``""`` once the rest is dropped: an
    empty stretch between strings or inside one) collapse, then the stretches between
    remaining quote pairs are dropped with one split. Each pass is one C-speed sweep, never a
    retry. On malformed input the result is exact up to the first error, which is as far as
    ``json.loads`` reads (it does not enter a string that never closes)."""
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    s = raw.translate(None, _NOT_STRUCTURE)
    if b'"' in s:
        s = s.replace(b'""', b"")
        if b'"' in s:
            s = b"".join(s.split(b'"')[0::2])
    return s.translate(_SIGNED)


def _deeper_than(signed: bytes, limit: int) -> bool:
    """Whether the running sum of ``signed`` (bytes 0x01 / 0xff) ever exceeds ``limit``:
    chunk by chunk, with a C-speed sum only where the chunk could cross the limit."""
    mv = memoryview(signed).cast("b")
    depth = 0
    for i in range(0, len(signed), _CHUNK):
        part = signed[i:i + _CHUNK]
        opens = part.count(1)
        if depth + opens > limit and max(accumulate(mv[i:i + _CHUNK], initial=depth)) > limit:
            return True
        depth += 2 * opens - len(part)
    return False


def shape(raw: bytes, *, max_depth: int = MAX_DEPTH) -> tuple[bool, int]:
    """(nested deeper than ``max_depth``, an upper bound on the number of values): one
    linear pass. Values are at most commas + containers + 1 (object keys not counted;
    commas inside strings counted too, which only loosens the bound)."""
    signed = brackets(raw)
    return _deeper_than(signed, max_depth), raw.count(b",") + signed.count(1) + 1


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKeyError(k)
            seen.add(k)
    return obj


def loads(data: str | bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH,
          unique_keys: bool = False, max_values: int | None = None) -> Any:
    """``json.loads`` that raises ``json.JSONDecodeError`` for nesting beyond ``max_depth``,
    ``DuplicateKeyError`` for a repeated key (``unique_keys``) and ``TooLargeError`` for more
    than ``max_values`` values, the last two before anything is allocated."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # Fast path: too few brackets (or commas) to be deep (or large): almost every document.
    brackets = raw.count(b"[") + raw.count(b"{")
    large = max_values is not None and brackets + raw.count(b",") + 1 > max_values
    if brackets > max_depth or large:
        deep, values = shape(raw, max_depth=max_depth)
        if deep:
            raise json.JSONDecodeError(f"nested deeper than {max_depth} levels", "", 0)
        if max_values is not None and values > max_values:
            raise TooLargeError(f"holds up to {values} values (limit {max_values})", "", 0)
    return json.loads(data if isinstance(data, str) else raw,
                      object_pairs_hook=_unique if unique_keys else None)


async def aloads(data: str | bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH,
                 unique_keys: bool = False, max_values: int | None = None) -> Any:
    """``loads`` for async code: documents above ``OFFLOAD_BYTES`` are parsed in a worker
    thread so other requests go on meanwhile (the scan, and the duplicate-key hook, let the
    event loop in; ``json``'s C parser itself holds the GIL for as long as it runs)."""
    call = functools.partial(loads, data, max_depth=max_depth, unique_keys=unique_keys,
                             max_values=max_values)
    if len(data) <= OFFLOAD_BYTES:
        return call()
    return await anyio.to_thread.run_sync(call)

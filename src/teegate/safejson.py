"""JSON parsing with a nesting limit, for every document teegate did not write itself.

``json.loads`` recurses in C once per nesting level and relies on the interpreter's recursion
limit to stop. Libraries raise that limit at import (``py_ecc``, pulled in by ``eth-account``,
sets 100,000), and then a body of 100,000 ``[`` overflows the C stack of a server thread:
the process dies with a segmentation fault instead of answering 400. The depth is therefore
checked before parsing, independent of the interpreter's setting.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 128
"""Deeper than any request, report or collateral in use (JSON schemas in tools included)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(data: bytes) -> int:
    """Deepest bracket nesting outside strings: C-speed regex and translate, no recursion."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def loads(data: str | bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``json.JSONDecodeError`` for nesting beyond ``max_depth``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # Fast path: too few brackets to be deep (almost every document).
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(raw) > max_depth:
        raise json.JSONDecodeError(f"nested deeper than {max_depth} levels", "", 0)
    return json.loads(data if isinstance(data, str) else raw)

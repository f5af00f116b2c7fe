"""What a provider's ``usage`` object says a call used, for the shapes real providers send.

A settlement charges from these counts, so a shape that is misread is money lost (read as
zero tokens, a call on a per-token price was charged the flat fee only) or money taken. Pure:
a mapping in, ``Tokens`` or ``None`` out.

Shapes (field names of the provider's JSON; every one the gateway may relay):

- OpenAI Chat Completions, and the engines that copy it (vLLM, llama.cpp's server, Ollama's
  OpenAI API, SGLang, NEAR AI, RedPill): ``prompt_tokens``, ``completion_tokens``,
  ``total_tokens``. ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens`` are parts of those counts, not additions
  (vLLM sends ``prompt_tokens_details: null``).
- OpenAI Responses: ``input_tokens``, ``output_tokens``, ``total_tokens``; its
  ``*_tokens_details`` are parts, as above.
- Anthropic Messages: ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``. Anthropic's ``input_tokens`` counts only the tokens after the
  last cache breakpoint: the cache fields are added to it (``null`` means none).

Of input, output and total, any two give the third (``prompt_tokens`` with ``total_tokens``
is what an engine that omits the completion count sends); a total above input + output is
kept as ``unsplit`` tokens, and so is a total alone: the caller charges unsplit tokens at the
dearer of its two prices, so a missing split never undercharges. Both families at once (a
proxy adding one to the other) count the larger of each.

A count is a JSON number >= 0; a fraction is rounded up (7.9 tokens are charged as 8). A
``null`` count is an absent one. Anything else (no count at all, a negative, a string, a bool,
an output that the total does not cover) is not understood: ``None``, and the gateway charges
the hold's worst case and logs the usage it could not read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from teegate.ledger.model import MAX_AMOUNT

_FAMILIES = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))
_ANTHROPIC_CACHE = ("cache_creation_input_tokens", "cache_read_input_tokens")


class _UnreadableError(Exception):
    pass


@dataclass(frozen=True)
class Tokens:
    """Counts to charge: ``prompt`` at the input price, ``completion`` at the output price,
    ``unsplit`` (reported only as part of a total) at the dearer of the two."""

    prompt: int
    completion: int
    unsplit: int = 0


def _count(usage: Mapping[str, object], name: str) -> int | Fraction | None:
    value = usage.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _UnreadableError
    if isinstance(value, float) and not math.isfinite(value):
        raise _UnreadableError
    if value < 0 or value > MAX_AMOUNT:
        raise _UnreadableError
    # Exact, as the JSON text wrote it (a float's shortest repr: 10.9 - 2.9 is then 8, not
    # 8.000000000000002), and rounded up only at the end.
    return Fraction(repr(value)) if isinstance(value, float) else value


def _family(usage: Mapping[str, object], inp: str, out: str
            ) -> tuple[int | Fraction, int | Fraction, int | Fraction] | None:
    """(input, output, unsplit) of one family of field names, or None when it is absent."""
    i, o, total = _count(usage, inp), _count(usage, out), _count(usage, "total_tokens")
    if inp == "input_tokens" and i is not None:
        for name in _ANTHROPIC_CACHE:
            i += _count(usage, name) or 0
    if i is None and o is None:
        return None
    if total is not None:
        if i is None:
            i = total - o if o is not None else None
        elif o is None:
            o = total - i
    if i is None or o is None or i < 0 or o < 0:
        raise _UnreadableError
    return i, o, max(total - i - o, 0) if total is not None else 0


def read_usage(usage: object) -> Tokens | None:
    """The counts ``usage`` reports (module docstring), or None when it is not understood."""
    if not isinstance(usage, Mapping):
        return None
    try:
        found = [f for f in (_family(usage, *names) for names in _FAMILIES) if f is not None]
        if not found:
            total = _count(usage, "total_tokens")
            if total is None:
                return None
            found = [(0, 0, total)]
    except _UnreadableError:
        return None
    i, o, x = found[0] if len(found) == 1 else (max(f[k] for f in found) for k in range(3))
    return Tokens(math.ceil(i), math.ceil(o), math.ceil(x))

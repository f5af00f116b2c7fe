"""What a call costs, in integers: a flat price per call plus prices per million input and
output tokens, in the currency's smallest unit.

Per-million-token prices keep sub-unit prices integral (0.15 USD per million input tokens
with 6 decimals is ``150_000``). Token costs are rounded *up* to the next smallest unit, once
per call, so rounding never undercharges; the worst case uses the same formula as the
settlement, so ``actual(usage) <= worst_case(prompt, max_tokens)`` whenever the provider
reports no more tokens than the bounds.

The prompt estimate is an upper bound on what a BPE tokenizer can produce: every token
covers at least one UTF-8 byte, so the byte length of the request body (its JSON text, which
is never shorter than the message texts it contains) plus a per-message allowance for the
chat template's role and separator tokens bounds the prompt tokens. Images are the exception
(a small URL can stand for many tokens): each image part adds ``IMAGE_TOKENS``. Whatever the
estimate, the hold is the most a call can be charged: a provider reporting more is charged
at the hold (``Ledger.settle`` caps and records it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from teegate import safejson
from teegate.errors import LedgerError
from teegate.ledger.model import check_amount
from teegate.ledger.usage import Tokens, read_usage

PER = 1_000_000
MESSAGE_OVERHEAD = 16  # chat-template tokens per message (role, separators), generous
REQUEST_OVERHEAD = 64  # system prompt scaffolding and the assistant priming tokens
IMAGE_TOKENS = 2_000  # per image part; images are billed by tiles, not URL length


@dataclass(frozen=True)
class Price:
    """``per_call`` flat; ``input``/``output`` per 1,000,000 tokens (smallest units)."""

    per_call: int = 0
    input: int = 0
    output: int = 0

    def __post_init__(self) -> None:
        for name in ("per_call", "input", "output"):
            check_amount(getattr(self, name), f"price {name}", zero_ok=True)

    def cost(self, prompt_tokens: int, completion_tokens: int, unsplit_tokens: int = 0) -> int:
        """``unsplit_tokens`` (a total the provider did not split into input and output) are
        priced at the dearer of the two prices: whatever the split was, never less."""
        check_amount(prompt_tokens, "prompt_tokens", zero_ok=True)
        check_amount(completion_tokens, "completion_tokens", zero_ok=True)
        check_amount(unsplit_tokens, "unsplit tokens", zero_ok=True)
        tokens = (prompt_tokens * self.input + completion_tokens * self.output
                  + unsplit_tokens * max(self.input, self.output))
        # beyond MAX_AMOUNT no wallet could pay it: LimitExceeded (a 400), not a failed hold
        return check_amount(self.per_call + -(-tokens // PER), "the call's cost",
                            zero_ok=True)

    def charge(self, tokens: Tokens) -> int:
        """The cost of the counts a provider's usage reported (``read_usage``)."""
        return self.cost(tokens.prompt, tokens.completion, tokens.unsplit)

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> int:
        """The hold for a call: the estimated prompt and every allowed output token."""
        return self.cost(prompt_tokens, max_tokens)

    def actual(self, usage: Mapping[str, Any]) -> int:
        """The settlement from the provider's ``usage``, in any shape ``read_usage`` knows;
        usage it does not understand is a LedgerError, never a guess."""
        tokens = read_usage(usage)
        if tokens is None:
            raise LedgerError(f"usage {usage!r} is not a token count teegate understands")
        return self.charge(tokens)


@dataclass(frozen=True)
class PriceTable:
    """Prices by (provider, model); ``"*"`` in either place is a fallback."""

    prices: Mapping[tuple[str, str], Price] = field(default_factory=dict)

    def price(self, provider: str, model: str) -> Price:
        for k in ((provider, model), (provider, "*"), ("*", model), ("*", "*")):
            p = self.prices.get(k)
            if p is not None:
                return p
        raise LedgerError(f"no price for model {model!r} at provider {provider!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceTable:
        """``{"provider": {"model": {"per_call": 0, "input": 150000, "output": 600000}}}``."""
        out: dict[tuple[str, str], Price] = {}
        try:
            for prov, models in data.items():
                for model, p in models.items():
                    out[(prov, model)] = Price(**p)
        except (AttributeError, TypeError) as e:
            raise LedgerError(f"price table is malformed: {e}") from None
        return cls(out)


def estimate_prompt_tokens(request: bytes | Mapping[str, Any]) -> int:
    """An upper bound on the prompt tokens of a chat request (see the module docstring)."""
    if isinstance(request, bytes | bytearray):
        raw = bytes(request)
        try:
            body = safejson.loads(raw)
        except ValueError:
            body = {}
    else:
        body = request
        raw = json.dumps(request, ensure_ascii=False).encode()
    messages = body.get("messages") if isinstance(body, Mapping) else None
    n = len(messages) if isinstance(messages, list) else 0
    images = 0
    for m in messages or ():
        content = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(content, list):
            images += sum(1 for part in content
                          if isinstance(part, Mapping) and part.get("type") in (
                              "image_url", "input_image", "image"))
    return len(raw) + MESSAGE_OVERHEAD * n + REQUEST_OVERHEAD + IMAGE_TOKENS * images

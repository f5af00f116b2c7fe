"""Integer pricing: rounding up, worst case bounds actual, prompt estimate bounds tokens."""

from __future__ import annotations

import json

import pytest

from teegate.errors import LedgerError
from teegate.ledger import Price, PriceTable, estimate_prompt_tokens


def test_cost_rounds_up_once_per_call() -> None:
    p = Price(per_call=500, input=150_000, output=600_000)  # $0.15 / $0.60 per M tokens
    assert p.cost(0, 0) == 500
    assert p.cost(1, 0) == 501  # 0.15 units rounds up to 1
    assert p.cost(1_000_000, 1_000_000) == 500 + 750_000
    assert p.cost(3, 3) == 500 + 3  # (450_000 + 1_800_000) / 1e6 = 2.25 → 3


def test_worst_case_bounds_actual() -> None:
    p = Price(input=1_234, output=9_876)
    for prompt in (0, 7, 1000):
        for completion in (0, 1, 99, 100):
            assert p.actual({"prompt_tokens": prompt, "completion_tokens": completion}) <= (
                p.worst_case(prompt, 100))


@pytest.mark.parametrize("usage", [{"prompt_tokens": -1}, {"completion_tokens": 1.5},
                                   {"prompt_tokens": True}, "nope"])
def test_malformed_usage_is_refused(usage: object) -> None:
    with pytest.raises(LedgerError):
        Price(input=1).actual(usage)  # type: ignore[arg-type]


def test_prices_are_integers() -> None:
    with pytest.raises(LedgerError):
        Price(input=0.5)  # type: ignore[arg-type]


def test_table_fallbacks() -> None:
    t = PriceTable.from_mapping({"near": {"deepseek": {"output": 5}, "*": {"output": 1}},
                                 "*": {"*": {"per_call": 9}}})
    assert t.price("near", "deepseek").output == 5
    assert t.price("near", "other").output == 1
    assert t.price("redpill", "x").per_call == 9
    with pytest.raises(LedgerError, match="no price"):
        PriceTable().price("a", "b")
    with pytest.raises(LedgerError, match="malformed"):
        PriceTable.from_mapping({"near": {"m": {"colour": 1}}})


def test_prompt_estimate_is_an_upper_bound() -> None:
    text = "héllo wörld, 你好 " * 50
    body = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": text}]}
    raw = json.dumps(body).encode()
    est = estimate_prompt_tokens(raw)
    # no tokenizer emits more tokens than UTF-8 bytes of the text, plus template tokens
    assert est >= len(text.encode()) + len(b"be brief") + 2 * 16
    assert estimate_prompt_tokens(body) >= len(text.encode())
    img = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    assert estimate_prompt_tokens(img) >= 2_000
    assert estimate_prompt_tokens(b"not json") >= len(b"not json")

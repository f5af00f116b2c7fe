"""``read_usage``: the usage objects real providers send, and what is not understood.

The shapes are the providers' documented ones (OpenAI Chat Completions and Responses API
references, Anthropic Messages ``usage``), and what vLLM and llama.cpp's server return from
their OpenAI-compatible chat route."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.errors import LedgerError
from teegate.ledger import Price
from teegate.ledger.usage import Tokens, read_usage

SHAPES: list[tuple[str, dict[str, Any], Tokens]] = [
    ("openai chat", {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0,
                                                   "accepted_prediction_tokens": 0,
                                                   "rejected_prediction_tokens": 0}},
     Tokens(19, 10)),
    ("openai responses", {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 12},
                          "output_tokens": 87, "output_tokens_details":
                          {"reasoning_tokens": 40}, "total_tokens": 123},
     Tokens(36, 87)),
    ("anthropic", {"input_tokens": 2095, "output_tokens": 503}, Tokens(2095, 503)),
    ("anthropic with cache", {"input_tokens": 50, "output_tokens": 503,
                              "cache_creation_input_tokens": 1000,
                              "cache_read_input_tokens": 2000,
                              "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                 "ephemeral_1h_input_tokens": 0},
                              "service_tier": "standard"},
     Tokens(3050, 503)),
    ("anthropic, no cache", {"input_tokens": 50, "output_tokens": 3,
                             "cache_creation_input_tokens": None,
                             "cache_read_input_tokens": None}, Tokens(50, 3)),
    ("vllm", {"prompt_tokens": 12, "total_tokens": 19, "completion_tokens": 7,
              "prompt_tokens_details": None}, Tokens(12, 7)),
    ("llama.cpp", {"completion_tokens": 7, "prompt_tokens": 12, "total_tokens": 19,
                   "prompt_tokens_details": {"cached_tokens": 11}}, Tokens(12, 7)),
    ("total only", {"total_tokens": 40}, Tokens(0, 0, 40)),
    ("nulls and a total", {"prompt_tokens": None, "completion_tokens": None,
                           "total_tokens": 40}, Tokens(0, 0, 40)),
    ("prompt and total", {"prompt_tokens": 12, "total_tokens": 19}, Tokens(12, 7)),
    ("completion and total", {"completion_tokens": 7, "total_tokens": 19}, Tokens(12, 7)),
    ("total above the parts", {"prompt_tokens": 12, "completion_tokens": 7,
                               "total_tokens": 25}, Tokens(12, 7, 6)),
    ("total below the parts", {"prompt_tokens": 12, "completion_tokens": 7,
                               "total_tokens": 3}, Tokens(12, 7)),
    ("fractions round up", {"prompt_tokens": 7.9, "completion_tokens": 2.1}, Tokens(8, 3)),
    ("a fraction of a total", {"prompt_tokens": 2.9, "total_tokens": 10.9}, Tokens(3, 8)),
    ("whole floats", {"prompt_tokens": 7.0, "completion_tokens": 2.0}, Tokens(7, 2)),
    ("both families", {"prompt_tokens": 10, "completion_tokens": 2, "input_tokens": 4,
                       "output_tokens": 5}, Tokens(10, 5)),
    ("zero", {"prompt_tokens": 0, "completion_tokens": 0}, Tokens(0, 0)),
]


@pytest.mark.parametrize(("usage", "tokens"), [(u, t) for _, u, t in SHAPES],
                         ids=[n for n, _, _ in SHAPES])
def test_the_shapes_providers_send(usage: dict[str, Any], tokens: Tokens) -> None:
    assert read_usage(usage) == tokens


@pytest.mark.parametrize("usage", [
    {}, {"tokens": 12}, {"prompt_tokens": None, "completion_tokens": None},
    {"input_tokens": None, "output_tokens": None}, {"prompt_tokens": 12},
    {"completion_tokens": 7}, {"prompt_tokens": -5, "completion_tokens": 5},
    {"prompt_tokens": "10", "completion_tokens": "5"},
    {"prompt_tokens": True, "completion_tokens": 5},
    {"prompt_tokens": float("nan"), "completion_tokens": 5},
    {"prompt_tokens": float("inf"), "completion_tokens": 5},
    {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": "15"},
    {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": "7"},
    {"prompt_tokens": 20, "total_tokens": 10},  # an output the total does not cover
    {"total_tokens": -1}, {"prompt_tokens": 2**60, "completion_tokens": 1},
    [], "usage", None, 7,
])
def test_anything_else_is_not_understood(usage: object) -> None:
    assert read_usage(usage) is None


def test_charges_never_undercharge() -> None:
    price = Price(per_call=5, input=1_000_000, output=3_000_000)
    assert price.charge(Tokens(10, 2)) == 5 + 10 + 6
    assert price.charge(Tokens(0, 0, 7)) == 5 + 21  # unsplit at the dearer price
    assert Price(input=3_000_000, output=1_000_000).charge(Tokens(0, 0, 7)) == 21
    assert price.actual({"input_tokens": 10, "output_tokens": 2,
                         "cache_read_input_tokens": 4}) == 5 + 14 + 6
    assert price.actual({"prompt_tokens": 7.9, "completion_tokens": 0.1}) == 5 + 8 + 3
    with pytest.raises(LedgerError, match="not a token count"):
        price.actual({"total": 3})

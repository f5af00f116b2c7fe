"""[x402] is parsed strictly and needs [chain]."""

from __future__ import annotations

import pytest

from teegate.errors import ConfigError
from teegate.gateway.config import parse_config
from teegate.routing.trust import TrustLevel
from teegate.x402.config import parse_x402


def test_defaults_and_fields() -> None:
    c = parse_x402({"token_name": "USD Coin", "token_version": "2",
                    "schemes": ["exact", "batch-settlement"]})
    assert c.schemes == ("exact", "batch-settlement")
    assert c.trust is TrustLevel.ATTESTED
    assert c.max_timeout_seconds == 300
    assert c.offer(8453, "0xa", "0xb").network == "eip155:8453"


@pytest.mark.parametrize(("raw", "field"), [
    ({}, "x402.token_name"),
    ({"token_name": "T", "schemes": ["cash"]}, "x402.schemes"),
    ({"token_name": "T", "schemes": []}, "x402.schemes"),
    ({"token_name": "T", "max_timeout_seconds": 0}, "x402.max_timeout_seconds"),
    ({"token_name": "T", "trust": "nope"}, "x402.trust"),
    ({"token_name": "T", "price": 1}, "x402.price"),
])
def test_refusals_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_x402(raw)


def test_x402_needs_chain() -> None:
    with pytest.raises(ConfigError, match=r"x402: needs a \[chain\]"):
        parse_config({"x402": {"token_name": "T"}, "providers": [
            {"id": "p", "platform": "tee-node", "base_url": "http://127.0.0.1:1/v1",
             "models": ["m"], "development": True}]})

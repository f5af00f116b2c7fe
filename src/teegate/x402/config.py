"""``[x402]`` in teegate.toml: x402 payments accepted from callers without an API key, in the
token and on the chain of ``[chain]`` (which it requires), paid to the gateway's receiver.

```toml
[x402]
token_name = "DevToken"      # the token's EIP-712 domain name and version (x402 `extra`)
token_version = "1"
schemes = ["exact"]          # offered in each 402's `accepts`
max_timeout_seconds = 300
trust = "attested"           # the level an anonymous payer's calls require unless they ask
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teegate.errors import ConfigError, TeegateError
from teegate.routing.trust import TrustLevel, parse_trust
from teegate.x402.challenge import Offer

FIELDS = {"token_name", "token_version", "schemes", "max_timeout_seconds", "trust"}
SCHEMES = ("exact", "upto", "batch-settlement")


@dataclass(frozen=True)
class X402Config:
    token_name: str
    token_version: str = "1"
    schemes: tuple[str, ...] = ("exact",)
    max_timeout_seconds: int = 300
    trust: TrustLevel = TrustLevel.ATTESTED

    def offer(self, chain_id: int, token: str, receiver: str) -> Offer:
        return Offer(chain_id, token, receiver, self.token_name, self.token_version,
                     self.schemes, self.max_timeout_seconds)


def _text(raw: Mapping[str, Any], name: str, default: str | None) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"x402.{name}: required, a non-empty string")
    return value


def parse_x402(raw: Mapping[str, Any]) -> X402Config:
    """ConfigError naming the field on anything unknown or malformed."""
    extra = sorted(set(raw) - FIELDS)
    if extra:
        raise ConfigError(f"x402.{extra[0]}: unknown field (allowed: {', '.join(sorted(FIELDS))})")
    schemes = raw.get("schemes", ["exact"])
    if (not isinstance(schemes, list) or not schemes
            or any(s not in SCHEMES for s in schemes) or len(set(schemes)) != len(schemes)):
        raise ConfigError(f"x402.schemes: a non-empty list of distinct {', '.join(SCHEMES)}")
    timeout = raw.get("max_timeout_seconds", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise ConfigError("x402.max_timeout_seconds: an integer in 1..86400")
    try:
        trust = parse_trust(_text(raw, "trust", "attested"), field="x402.trust")
    except TeegateError as e:
        raise ConfigError(str(e)) from None
    return X402Config(_text(raw, "token_name", None), _text(raw, "token_version", "1"),
                      tuple(schemes), timeout, trust)

"""``[chain]`` in teegate.toml: where the channel contract lives and how the gateway acts on it.

```toml
[chain]
rpc_url = "http://127.0.0.1:8545"
chain_id = 31337
channels = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"   # ConversationChannels
token = "0x..."                     # the token channels must be in (DevToken, USDC)
receiver_key_env = "TEEGATE_RECEIVER_KEY"  # the gateway's key: receiver and receiver authorizer
confirmations = 2                   # events count once this many blocks deep
withdraw_delay_seconds = 3600       # channels the gateway accepts (the scheme allows 900..30 d)
claim_margin_seconds = 600          # claim at the latest this long before a withdrawal finalises
claim_interval_seconds = 60         # batch claims this often
```

The key itself is never in the file: only the name of the environment variable holding it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from teegate.chain.scheme import (
    MAX_WITHDRAW_DELAY,
    MIN_WITHDRAW_DELAY,
    Domain,
    address_bytes,
    address_of,
    checksum,
)
from teegate.errors import ChainError, ConfigError

FIELDS = {"rpc_url", "chain_id", "channels", "token", "receiver_key_env", "confirmations",
          "withdraw_delay_seconds", "claim_margin_seconds", "claim_interval_seconds",
          "identity", "account_registry", "account_implementation", "rewards",
          "erc3009_collector", "wallet_collector"}
_ENV = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str
    chain_id: int
    channels: str
    token: str
    receiver_key: bytes = field(repr=False)
    confirmations: int = 2
    withdraw_delay: int = 3600
    claim_margin: int = 600
    claim_interval: float = 60.0
    addresses: Mapping[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> Domain:
        return Domain.of(self.chain_id, self.channels)

    @property
    def receiver(self) -> str:
        """The gateway's address: receiver and receiver authorizer of its channels."""
        return checksum(address_of(self.receiver_key))


def _int(raw: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = raw.get(name, default)
    if value is None:
        raise ConfigError(f"chain.{name}: required")
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"chain.{name}: an integer in {low}..{high}")
    return value


def _address(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise ConfigError(f"chain.{name}: required, a 0x address")
    try:
        return checksum(address_bytes(value))
    except ChainError as e:
        raise ConfigError(f"chain.{name}: {e}") from None


def parse_chain(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ChainConfig:
    """ConfigError naming the field on anything missing or malformed; the receiver key is read
    from the environment variable the file names."""
    extra = sorted(set(raw) - FIELDS)
    if extra:
        raise ConfigError(f"chain.{extra[0]}: unknown field (allowed: {', '.join(sorted(FIELDS))})")
    rpc = raw.get("rpc_url")
    if not isinstance(rpc, str) or not rpc.startswith(("http://", "https://")):
        raise ConfigError("chain.rpc_url: required, an http(s) URL")
    key_env = raw.get("receiver_key_env", "TEEGATE_RECEIVER_KEY")
    if not isinstance(key_env, str) or not _ENV.fullmatch(key_env):
        raise ConfigError("chain.receiver_key_env: the NAME of an environment variable")
    secret = (os.environ if env is None else env).get(key_env, "")
    text = secret[2:] if secret.startswith("0x") else secret
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise ConfigError(f"chain.receiver_key_env: ${key_env} does not hold a 32-byte hex key")
    margin = _int(raw, "claim_margin_seconds", 600, 60, MAX_WITHDRAW_DELAY)
    delay = _int(raw, "withdraw_delay_seconds", 3600, MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY)
    if margin >= delay:
        raise ConfigError("chain.claim_margin_seconds: must be below withdraw_delay_seconds")
    interval = raw.get("claim_interval_seconds", 60)
    if not isinstance(interval, int | float) or isinstance(interval, bool) or not (
            0 < interval < margin):
        raise ConfigError("chain.claim_interval_seconds: a positive number below the margin")
    optional = {name: _address(raw, name) for name in
                ("identity", "account_registry", "account_implementation", "rewards",
                 "erc3009_collector", "wallet_collector") if name in raw}
    return ChainConfig(
        rpc_url=rpc, chain_id=_int(raw, "chain_id", None, 1, (1 << 63) - 1),
        channels=_address(raw, "channels"), token=_address(raw, "token"),
        receiver_key=bytes.fromhex(text),
        confirmations=_int(raw, "confirmations", 2, 0, 1000), withdraw_delay=delay,
        claim_margin=margin, claim_interval=float(interval), addresses=optional)

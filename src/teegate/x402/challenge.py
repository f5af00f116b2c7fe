"""The 402 answer for a paid route called without an API key and without payment: the x402 v2
``PAYMENT-REQUIRED`` header (base64 of the PaymentRequired JSON, CAIP-2 network) and the v1
body (``x402Version``, ``accepts``), built with the x402 SDK's own schema models so its clients
read them as the SDK's servers write them. The amount is the call's worst-case hold, in the
token's smallest unit, as an integer (never a float)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo
from x402.schemas.v1 import PaymentRequiredV1, PaymentRequirementsV1

from teegate.errors import TeegateError

PAYMENT_REQUIRED = "payment-required"  # v2 header
NO_STORE = (("cache-control", "no-store"), ("x-should-retry", "false"))


class ChallengeError(TeegateError):
    """A challenge that cannot be priced (a negative or non-integer amount)."""


@dataclass(frozen=True)
class Offer:
    """What the gateway accepts: one token on one chain, paid to the gateway's receiver."""

    chain_id: int
    asset: str  # token address
    pay_to: str
    asset_name: str  # the token's EIP-712 domain name and version (x402 `extra`)
    asset_version: str
    schemes: tuple[str, ...] = ("exact",)
    max_timeout_seconds: int = 300

    @property
    def network(self) -> str:
        return f"eip155:{self.chain_id}"


def _amount(amount: int) -> str:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ChallengeError(f"x402 amount must be a non-negative integer, not {amount!r}")
    return str(amount)


def payment_required(offer: Offer, amount: int, url: str, *, description: str = "",
                     error: str = "payment required") -> tuple[list[tuple[str, str]], bytes]:
    """(headers, JSON body) of the 402: v2 in ``PAYMENT-REQUIRED``, v1 in the body."""
    value = _amount(amount)
    extra = {"name": offer.asset_name, "version": offer.asset_version}
    v2 = PaymentRequired(
        error=error, resource=ResourceInfo(url=url, description=description or None,
                                           mime_type="application/json"),
        accepts=[PaymentRequirements(scheme=s, network=offer.network, asset=offer.asset,
                                     amount=value, pay_to=offer.pay_to,
                                     max_timeout_seconds=offer.max_timeout_seconds,
                                     extra=dict(extra)) for s in offer.schemes])
    v1 = PaymentRequiredV1(
        error=error,
        accepts=[PaymentRequirementsV1(scheme=s, network=offer.network,
                                       max_amount_required=value, resource=url,
                                       description=description or None,
                                       mime_type="application/json", pay_to=offer.pay_to,
                                       max_timeout_seconds=offer.max_timeout_seconds,
                                       asset=offer.asset, extra=dict(extra))
                 for s in offer.schemes])
    header = base64.b64encode(
        v2.model_dump_json(by_alias=True, exclude_none=True).encode()).decode("ascii")
    body: dict[str, Any] = v1.model_dump(by_alias=True, exclude_none=True)
    return ([(PAYMENT_REQUIRED, header), *NO_STORE, ("content-type", "application/json")],
            json.dumps(body, separators=(",", ":")).encode())

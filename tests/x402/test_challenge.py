"""The 402 challenge is read back by the x402 SDK's own decoders (its client's view)."""

from __future__ import annotations

import json

import pytest
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired
from x402.schemas.v1 import PaymentRequiredV1

from teegate.x402.challenge import ChallengeError, Offer, payment_required

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
GATEWAY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OFFER = Offer(31337, TOKEN, GATEWAY, "DevToken", "1", schemes=("exact", "batch-settlement"))


def test_v2_header_and_v1_body_decode_with_the_sdk() -> None:
    headers, body = payment_required(OFFER, 123_456, "http://gw/v1/chat/completions")
    h = dict(headers)
    assert h["cache-control"] == "no-store"
    assert h["x-should-retry"] == "false"
    v2 = decode_payment_required_header(h["payment-required"])
    assert isinstance(v2, PaymentRequired)
    assert v2.x402_version == 2
    assert [a.scheme for a in v2.accepts] == ["exact", "batch-settlement"]
    a = v2.accepts[0]
    assert (a.network, a.asset, a.amount, a.pay_to) == ("eip155:31337", TOKEN, "123456",
                                                        GATEWAY)
    assert a.extra == {"name": "DevToken", "version": "1"}
    assert v2.resource is not None
    assert v2.resource.url == "http://gw/v1/chat/completions"
    raw = json.loads(body)
    assert raw["x402Version"] == 1
    assert raw["accepts"][0]["maxAmountRequired"] == "123456"
    v1 = PaymentRequiredV1.model_validate(raw)
    assert v1.accepts[1].pay_to == GATEWAY
    assert v1.accepts[0].network == "eip155:31337"


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_amount_must_be_a_non_negative_integer(bad: object) -> None:
    with pytest.raises(ChallengeError):
        payment_required(OFFER, bad, "http://gw/x")  # type: ignore[arg-type]

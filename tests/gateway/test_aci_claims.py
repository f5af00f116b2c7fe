"""ACI claims on the wire: a routed (plain, non-TEE) call is ``not_applicable`` and marked
routed, never ``failed``; every paid answer, plain, streamed or refused, names its receipt
next to the ACI version and the keyset digest that signs it (ACI §7)."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, plain_upstream: Server,
       log: ReceiptLog) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin"], "development": True},
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"]}], receipt_log=log)


def _upstream(gw: Gw, log: ReceiptLog, rid: str) -> dict[str, object]:
    log.flush()
    body = httpx.get(f"{gw.url}/receipts/{rid}",
                     headers={"authorization": f"Bearer {gw.key}"}).json()
    ev = next(e for e in body["receipt"]["event_log"] if e["type"] == "upstream.verified")
    assert isinstance(ev, dict)
    return ev


def test_routed_and_verified_claims(gw: Gw, log: ReceiptLog) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    plain = client.chat.completions.with_raw_response.create(model="gpt-plain", messages=MSG)
    assert plain.headers["x-teegate-trust"] == "standard"
    assert plain.headers["x-teegate-routed"] == "true"
    assert plain.headers["x-teegate-upstream-verified"] == "not_applicable"
    up = _upstream(gw, log, plain.headers["x-receipt-id"])
    assert up["result"] == "not_applicable"
    assert up["routed"] is True
    assert up["upstream_name"] == "plain"
    assert "routed" in str(up["reason"])
    tee = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, extra_headers={"X-Teegate-Trust": "attested"})
    assert tee.headers["x-teegate-upstream-verified"] == "verified"
    assert "x-teegate-routed" not in tee.headers
    up = _upstream(gw, log, tee.headers["x-receipt-id"])
    assert up["result"] == "verified"
    assert up["session_id"] == tee.headers["x-teegate-verdict"]
    assert "routed" not in up


def test_aci_headers_on_every_paid_answer(gw: Gw, log: ReceiptLog) -> None:
    digest = log.signer.keyset_digest
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    plain = client.chat.completions.with_raw_response.create(model="gpt-plain", messages=MSG)
    stream = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=MSG)
    refused = nf.value.response.headers
    for h in (plain.headers, stream.headers, refused):
        assert h["x-receipt-id"]
        assert h["x-aci-version"] == "aci/1"
        assert h["x-aci-keyset-digest"] == digest
    # the digest is the one each receipt names
    log.flush()
    body = httpx.get(f"{gw.url}/receipts/{stream.headers['x-receipt-id']}",
                     headers={"authorization": f"Bearer {gw.key}"}).json()
    assert body["receipt"]["workload_keyset_digest"] == digest

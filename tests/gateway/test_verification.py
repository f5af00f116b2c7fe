"""Every "verified" is true under attack: an answer that fails verification is never charged,
and a provider whose signature failed serves nothing until it has been attested afresh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.ledger import Ledger
from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, Tamper, serving, tampering_proxy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
ATTESTED = {"X-Teegate-Trust": "attested"}
PRICE = {"input": 1_000_000, "output": 1_000_000}  # one unit per token


@pytest.fixture
def tamper(node_a: Server) -> Iterator[tuple[Tamper, Server]]:
    t = Tamper()
    with serving(tampering_proxy(node_a.url, t)) as proxy:
        yield t, proxy


def _client(gw: Gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)


def _agent(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def _call_event(gw: Gw, log: ReceiptLog, rid: str) -> dict[str, Any]:
    log.flush()
    r = httpx.get(f"{gw.server.url}/v1/receipts/{rid}",
                  headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    events = {e["type"]: e for e in r.json()["receipt"]["event_log"]}
    call: dict[str, Any] = events["teegate.call"]
    return call


def _node(url: str, **kw: Any) -> dict[str, Any]:
    return {"id": "node", "platform": "tee-node", "base_url": url + "/v1",
            "models": ["shared-model"], "development": True, **kw}


# ---------------------------------------------------------------- 10: failed means voided


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_that_fails_verification_is_voided(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server], ledger: Ledger,
        log: ReceiptLog, stream: bool) -> None:
    """A proxy forges the usage (999,999-fold): the signature fails, and the call is voided
    rather than charged from that usage; the receipt says so."""
    t, proxy = tamper
    gw = make_gateway([_node(proxy.url, prices={"shared-model": PRICE})], ledger=ledger,
                      receipt_log=log)
    agent = _agent(gw)
    ledger.deposit(agent, 10_000_000)
    t.replace = (b'"completion_tokens":', b'"completion_tokens":999999')
    client = _client(gw)
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model="shared-model", messages=MSG, stream=True, max_tokens=1_000_000,
            extra_headers=ATTESTED)
        rid = raw.headers["x-teegate-receipt"]
        with pytest.raises(openai.APIError):
            list(raw.parse())
    else:
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="shared-model", messages=MSG,
                                           max_tokens=1_000_000, extra_headers=ATTESTED)
        rid = e.value.response.headers["x-teegate-receipt"]
    wait(lambda: ledger.balance(agent).held == 0)
    assert ledger.balance(agent).available == 10_000_000
    assert not [x for x in ledger.transfers(agent) if x.kind == "charge"]
    call = _call_event(gw, log, rid)
    assert call["outcome"] == "voided"
    assert "failed verification" in call["error"]
    assert ledger.check().ok


# ------------------------------------------------- 9: quarantined until attested afresh


def test_after_a_quarantine_nothing_is_served_until_attested_again(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server]) -> None:
    """The quarantine ends, but the provider cannot be attested again (its report endpoint
    is down): it serves nothing, not even at its claimed level ``tee``."""
    t, proxy = tamper
    gw = make_gateway([_node(proxy.url)], gateway={"quarantine_seconds": 1})
    client = _client(gw)
    t.alter_response = True
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
    p = gw.provider("node")
    assert p.quarantined_until > time.time()
    t.alter_response = False
    t.report_status = 503
    time.sleep(1.5)  # the quarantine is over
    for level in ("tee", "standard"):
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="shared-model", messages=MSG,
                                           extra_headers={"X-Teegate-Trust": level})
        assert e.value.status_code == 503
        assert "not attested again yet" in e.value.message
    assert "chat" not in t.seen[1:]  # nothing was forwarded after the failure


def test_a_quarantined_provider_is_attested_again_as_soon_as_it_ends(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server]) -> None:
    """Not on the old refresh schedule (80 % of attestation_ttl): at once."""
    t, proxy = tamper
    gw = make_gateway([_node(proxy.url, attestation_ttl=600)],
                      gateway={"quarantine_seconds": 1})
    client = _client(gw)
    p = gw.provider("node")
    refreshes = p.refreshes
    t.alter_response = True
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
    t.alter_response = False
    wait(lambda: p.refreshes > refreshes and p.status == "attested", timeout=5)
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG,
                                                         extra_headers=ATTESTED)
    assert r.headers["x-teegate-trust"] == "attested"

"""Issue 11, point 8: providers whose response signature comes from an endpoint
(``GET /v1/signature/{id}``: tee-near-ai, tee-phala, tee-libert-ai) are verified before the
agent gets the answer: a plain answer before any byte, a stream before its ``[DONE]``. A
proxy between the gateway and the provider flips one byte of the answer; the provider's
signature endpoint (a development node behind the proxy) still signs the true bytes.
Delivering first is the operator's explicit per-provider choice, said in the trust header
and the receipt."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from teegate.errors import ConfigError
from teegate.gateway import parse_config
from teegate.ledger import Ledger
from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, Tamper, serving, tampering_proxy

ATTESTED = {"x-teegate-trust": "attested"}
PRICE = {"input": 1_000_000, "output": 1_000_000}  # one unit per token
PLATFORMS = ["tee-near-ai", "tee-phala", "tee-libert-ai"]
DEPOSIT = 10_000_000


@pytest.fixture
def tamper(node_a: Server) -> Iterator[tuple[Tamper, Server]]:
    t = Tamper()
    with serving(tampering_proxy(node_a.url, t)) as proxy:
        yield t, proxy


def _gateway(make_gateway: GatewayFactory, url: str, platform: str, ledger: Ledger,
             log: ReceiptLog, **kw: Any) -> tuple[Gw, str]:
    gw = make_gateway([{"id": "ep", "platform": platform, "base_url": url + "/v1",
                        "models": ["shared-model"], "development": True,
                        "prices": {"shared-model": PRICE}, **kw}],
                      ledger=ledger, receipt_log=log)
    assert gw.provider("ep").status == "attested", gw.provider("ep").detail
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    ledger.deposit(agent.id, DEPOSIT)
    return gw, str(agent.id)


def _post(gw: Gw, stream: bool) -> httpx.Response:
    body = json.dumps({"model": "shared-model", "stream": stream, "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hello there"}]}).encode()
    return httpx.post(gw.url + "/chat/completions", content=body, timeout=30, headers={
        "authorization": f"Bearer {gw.key}", "content-type": "application/json", **ATTESTED})


def _events(r: httpx.Response) -> list[bytes]:
    return [e.strip() for e in r.content.split(b"\n\n") if e.startswith(b"data: ")]


def _receipt(gw: Gw, log: ReceiptLog, rid: str) -> dict[str, dict[str, Any]]:
    log.flush()
    r = httpx.get(f"{gw.server.url}/v1/receipts/{rid}",
                  headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    return {e["type"]: e for e in r.json()["receipt"]["event_log"]}


def _charges(ledger: Ledger, agent: str) -> list[Any]:
    return [x for x in ledger.transfers(agent) if x.kind == "charge"]


# ------------------------------------------------------- by default: verified before delivery


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_flipped_plain_answer_is_withheld(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server], ledger: Ledger,
        log: ReceiptLog, platform: str) -> None:
    t, proxy = tamper
    gw, agent = _gateway(make_gateway, proxy.url, platform, ledger, log)
    ok = _post(gw, stream=False)  # untampered: delivered, verified, charged
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-teegate-trust"] == "attested"
    good = _receipt(gw, log, ok.headers["x-teegate-receipt"])
    assert good["teegate.call"]["outcome"] == "success"
    assert "verified_after_delivery" not in good["teegate.call"]
    assert good["teegate.provider_signature"]["verified"] is True
    charged = len(_charges(ledger, agent))
    assert charged == 1
    available = ledger.balance(agent).available

    t.flip_byte = True
    r = _post(gw, stream=False)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "response_signature_invalid"
    assert "signed text does not match the exact request and response bytes" in err["message"]
    assert "withheld" in err["message"]
    assert "choices" not in r.text  # not a byte of the answer
    events = _receipt(gw, log, r.headers["x-teegate-receipt"])
    call = events["teegate.call"]
    assert call["outcome"] == "voided"
    assert "failed verification" in call["error"]
    assert events["teegate.provider_signature"]["verified"] is False
    returned = events["response.returned"]["body_hash"]
    assert returned == "sha256:" + hashlib.sha256(r.content).hexdigest()
    wait(lambda: ledger.balance(agent).held == 0)
    assert len(_charges(ledger, agent)) == charged  # not charged
    assert ledger.balance(agent).available == available
    assert gw.provider("ep").quarantined_until > time.time()
    assert ledger.check().ok


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_flipped_stream_ends_with_an_error_event_not_done(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server], ledger: Ledger,
        log: ReceiptLog, platform: str) -> None:
    t, proxy = tamper
    gw, agent = _gateway(make_gateway, proxy.url, platform, ledger, log)
    ok = _post(gw, stream=True)
    assert ok.status_code == 200
    assert _events(ok)[-1] == b"data: [DONE]"
    assert _receipt(gw, log, ok.headers["x-teegate-receipt"])["teegate.call"][
        "outcome"] == "success"
    charged = len(_charges(ledger, agent))
    available = ledger.balance(agent).available

    t.flip_byte = True
    r = _post(gw, stream=True)
    assert r.status_code == 200  # the content went out as it came
    events = _events(r)
    assert b"data: [DONE]" not in events
    assert any(b'"content"' in e for e in events[:-1])
    last = json.loads(events[-1][len(b"data: "):])
    assert last["error"]["code"] == "response_signature_invalid"
    assert "signed text does not match" in last["error"]["message"]
    call = _receipt(gw, log, r.headers["x-teegate-receipt"])["teegate.call"]
    assert call["outcome"] == "voided"
    assert "failed verification" in call["error"]
    wait(lambda: ledger.balance(agent).held == 0)
    assert len(_charges(ledger, agent)) == charged
    assert ledger.balance(agent).available == available
    assert gw.provider("ep").quarantined_until > time.time()
    assert ledger.check().ok


def test_the_sdk_sees_the_failed_check(make_gateway: GatewayFactory,
                                       tamper: tuple[Tamper, Server], ledger: Ledger,
                                       log: ReceiptLog) -> None:
    """The real openai SDK: a plain call raises with the failed check's name; a stream
    raises at its end instead of completing."""
    t, proxy = tamper
    gw, _ = _gateway(make_gateway, proxy.url, "tee-near-ai", ledger, log)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    t.flip_byte = True
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="shared-model", max_tokens=16,
                                       messages=[{"role": "user", "content": "hi"}],
                                       extra_headers=ATTESTED)
    assert e.value.status_code == 502
    assert "response signature check failed" in e.value.message


# ------------------------------------------------------------ the operator's choice: after


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_verify_after_delivery_delivers_and_says_so(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server], ledger: Ledger,
        log: ReceiptLog, stream: bool) -> None:
    t, proxy = tamper
    gw, agent = _gateway(make_gateway, proxy.url, "tee-near-ai", ledger, log,
                         verify_after_delivery=True)
    ok = _post(gw, stream)
    assert ok.status_code == 200
    assert ok.headers["x-teegate-trust"] == "attested; verified-after-delivery"
    events = _receipt(gw, log, ok.headers["x-teegate-receipt"])
    assert events["teegate.call"]["outcome"] == "success"
    assert events["teegate.call"]["verified_after_delivery"] is True
    assert events["teegate.provider_signature"]["verified"] is True
    charged = len(_charges(ledger, agent))
    assert charged == 1

    t.flip_byte = True
    r = _post(gw, stream)
    assert r.status_code == 200  # delivered whole: the operator chose so
    assert r.headers["x-teegate-trust"] == "attested; verified-after-delivery"
    if stream:
        assert _events(r)[-1] == b"data: [DONE]"
    else:
        assert r.json()["choices"][0]["message"]["content"]
    events = _receipt(gw, log, r.headers["x-teegate-receipt"])
    call = events["teegate.call"]
    assert call["verified_after_delivery"] is True
    assert call["outcome"] == "voided"  # still never charged
    assert events["teegate.provider_signature"]["verified"] is False
    wait(lambda: ledger.balance(agent).held == 0)
    assert len(_charges(ledger, agent)) == charged
    assert gw.provider("ep").quarantined_until > time.time()


def test_verify_after_delivery_is_only_for_endpoint_signatures() -> None:
    for platform in ("tee-node", "open-ai"):
        with pytest.raises(ConfigError, match="verify_after_delivery"):
            parse_config({"providers": [{"id": "p", "platform": platform,
                                         "base_url": "http://127.0.0.1:1/v1",
                                         "models": ["m"], "verify_after_delivery": True}]})
    with pytest.raises(ConfigError, match="verify_after_delivery: expected bool"):
        parse_config({"providers": [{"id": "p", "platform": "tee-near-ai",
                                     "models": ["m"], "verify_after_delivery": "yes"}]})

"""A receipt per call (success, failed, refused) through the gateway, readable by its agent,
auditable offline with the evidence the gateway kept."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.receipts import ReceiptLog
from teegate.sim import DevTdx
from tests.gateway.conftest import GatewayFactory, Gw, admin_headers, wait
from tests.gateway.loopback import Server

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, log: ReceiptLog) -> Gw:
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin"], "development": True}], receipt_log=log)


def test_receipts_of_calls(gw: Gw, log: ReceiptLog, tmp_path: Path, dev_pki: Path) -> None:
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, extra_headers={"X-Teegate-Trust": "attested"})
    rid = raw.headers["x-teegate-receipt"]
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=MSG)
    refused = nf.value.response.headers["x-teegate-receipt"]
    stream = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=MSG, stream=True)
    srid = stream.headers["x-teegate-receipt"]
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    log.flush()
    auth = {"authorization": f"Bearer {gw.key}"}
    base = gw.server.url
    body = httpx.get(f"{base}/v1/receipts/{rid}", headers=auth).json()
    doc = body["receipt"]
    events = {e["type"]: e for e in doc["event_log"]}
    assert events["teegate.attestation"]["verdict_digest"] == raw.headers["x-teegate-verdict"]
    assert events["teegate.provider_signature"]["verified"] is True
    call = events["teegate.call"]
    assert call["outcome"] == "success"
    assert call["trust_level"] == "attested"
    no = httpx.get(f"{base}/v1/receipts/{refused}", headers=auth).json()
    assert {e["type"]: e for e in no["receipt"]["event_log"]}["teegate.call"]["outcome"] == (
        "refused")
    s = httpx.get(f"{base}/v1/receipts/{srid}", headers=auth).json()
    assert {e["type"]: e for e in s["receipt"]["event_log"]}["teegate.call"]["outcome"] == (
        "success")
    # Another agent cannot see it.
    other = gw.store.create_key("someone-else")
    assert httpx.get(f"{base}/v1/receipts/{rid}",
                     headers={"authorization": f"Bearer {other}"}).status_code == 404
    # Offline audit of the bundle, evidence re-verified under a development policy.
    bundle = tmp_path / "b.json"
    bundle.write_text(httpx.get(f"{base}/v1/receipts/{rid}/bundle", headers=auth).text)
    assert json.loads(bundle.read_text())["evidence"] is not None
    root = tmp_path / "dev-root.pem"
    root.write_text(DevTdx.load_or_create(dev_pki).root_pem)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[roots]\nintel = ["{root}"]\n')
    res = CliRunner().invoke(cli_app, ["audit", str(bundle), "--log-key", log.vkey,
                                       "--policy", str(policy), "--json"])
    assert res.exit_code == 0, res.output
    checks = {c["name"]: c["status"] for c in json.loads(res.output)["receipts"][0]["checks"]}
    assert checks["attestation.evidence"] == "ok"
    assert checks["provider.signature"] == "ok"


def test_a_stuck_log_is_visible_and_calls_fail_closed(
        make_gateway: GatewayFactory, plain_upstream: Server, log: ReceiptLog) -> None:
    """A stray leaf row past the log's head: /readyz fails, the metric says so, calls are
    refused with 503 log_unavailable (before: ready, and receipt ids never logged)."""
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                      receipt_log=log)
    headers = {"authorization": f"Bearer {gw.key}"}
    body = {"model": "gpt-plain", "messages": MSG}
    first = httpx.post(gw.url + "/chat/completions", json=body, headers=headers)
    assert first.status_code == 200
    assert httpx.get(gw.server.url + "/readyz").status_code == 200
    with log.store.db.transaction(lock_head=False):
        log.store.db.execute("INSERT INTO tlog_leaf (idx, receipt_id, agent, data) "
                             "VALUES (?, 'rcpt_stray', 'x', x'00')", (log.size() + 5,))
    second = httpx.post(gw.url + "/chat/completions", json=body, headers=headers)
    assert second.status_code == 200  # its receipt is committed (queued), not yet logged
    wait(lambda: log.stuck is not None)
    ready = httpx.get(gw.server.url + "/readyz")
    assert ready.status_code == 503
    assert "stuck" in ready.json()["receipt_log"]
    metrics = httpx.get(gw.server.url + "/metrics", headers=admin_headers()).text
    assert "teegate_receipt_log_stuck 1.0" in metrics
    assert "teegate_receipt_log_backlog 1.0" in metrics
    refused = httpx.post(gw.url + "/chat/completions", json=body, headers=headers)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "log_unavailable"
    assert refused.headers["x-should-retry"] == "true"
    lookup = httpx.get(f"{gw.url}/receipts/{second.headers['x-receipt-id']}", headers=headers)
    assert lookup.status_code == 503
    assert lookup.json()["error"]["type"] == "log_unavailable"
    with log.store.db.transaction(lock_head=False):
        log.store.db.execute("DELETE FROM tlog_leaf WHERE receipt_id = 'rcpt_stray'")
    wait(lambda: log.stuck is None, timeout=10)  # repaired: it appends again by itself
    assert httpx.get(gw.server.url + "/readyz").status_code == 200
    lookup = httpx.get(f"{gw.url}/receipts/{second.headers['x-receipt-id']}", headers=headers)
    assert lookup.status_code == 200

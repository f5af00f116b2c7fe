"""The gateway attests itself (gateway/self_attestation.py): NEAR cloud-api's gateway report
shape and gateway-kind signatures over the bytes the agent received, checked with the peers'
documented checks (tests/node/peer_checks.py), plain and streamed."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from teegate.gateway.embedded import embedded_config
from teegate.gateway.self_attestation import GatewayTee, mount_self_attestation
from teegate.node import DevTdxSource
from teegate.sim import DevTdx
from tests.gateway.conftest import GatewayFactory, Gw, admin_headers
from tests.gateway.loopback import Server
from tests.node import peer_checks as peer

MODEL = "teegate-builtin"


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, dev_pki: Path) -> tuple[Gw, GatewayTee]:
    g = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                       "models": [MODEL], "development": True}])
    tee = GatewayTee(DevTdxSource(dev_pki))
    mount_self_attestation(g.app, tee)
    return g, tee


def _root(gw: Gw) -> str:
    return gw.server.url


def _body(dev_pki: Path, attestation: dict[str, Any]) -> dict[str, str]:
    return peer.quote_body(attestation, attestation["collateral"],
                           DevTdx.load_or_create(dev_pki).root_der, int(time.time()))


def test_nears_model_verifier_checks_the_gateway_and_its_models(
    gw: tuple[Gw, GatewayTee], dev_pki: Path,
) -> None:
    g, tee = gw
    nonce = secrets.token_hex(32)
    report = requests.get(f"{_root(g)}/v1/attestation/report?model={MODEL}&nonce={nonce}"
                          "&signing_algo=ecdsa", timeout=30).json()
    gateway = report["gateway_attestation"]
    assert gateway["signing_address"] == tee.keys.get("ecdsa").signing_address
    assert isinstance(gateway["event_log"], str)  # cloud-api's gateway sends a string
    assert gateway["request_nonce"] == nonce
    assert gateway["info"]["version"].startswith("teegate-gateway/")
    assert gateway["info"]["key_custody"]["provider"] == "generated"
    assert peer.near_tcb_info(gateway) is not None
    assert peer.check_report_data(gateway, nonce, _body(dev_pki, gateway)) == {
        "binds_address": True, "embeds_nonce": True}
    models = report["model_attestations"]
    assert len(models) == 1  # the attested node serving the model, for the same nonce
    assert models[0]["signing_address"] != gateway["signing_address"]
    assert all(peer.check_report_data(models[0], nonce, _body(dev_pki, models[0])).values())
    # without a model: the gateway alone (cloud-api omits an empty list)
    alone = requests.get(f"{_root(g)}/v1/attestation/report?nonce={nonce}", timeout=30).json()
    assert "model_attestations" not in alone
    bad = requests.get(f"{_root(g)}/v1/attestation/report?nonce=zz", timeout=30)
    assert bad.status_code == 400


def _chat(g: Gw, stream: bool) -> tuple[str, str, str]:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                       "stream": stream, "max_tokens": 3})
    r = requests.post(f"{_root(g)}/v1/chat/completions", data=body, stream=stream,
                      headers={"Content-Type": "application/json",
                               "Authorization": f"Bearer {g.key}"}, timeout=30)
    assert r.status_code == 200
    if stream:
        text, chat_id = peer.stream_as_they_read_it(r)
        assert chat_id is not None
        return body, text, chat_id
    return body, r.text, r.json()["id"]


@pytest.mark.parametrize("reading", ["near", "pml"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_gateway_signatures_cover_the_bytes_the_agent_received(
    gw: tuple[Gw, GatewayTee], reading: str, stream: bool,
) -> None:
    g, tee = gw
    body, text, chat_id = _chat(g, stream)
    r = requests.get(f"{_root(g)}/v1/signature/{chat_id}?model={MODEL}&signing_algo=ecdsa",
                     headers={"Authorization": f"Bearer {g.key}"}, timeout=30)
    assert r.status_code == 200
    sig = r.json()
    assert sig["signature_kind"] == "gateway"
    assert sig["signing_address"] == tee.keys.get("ecdsa").signing_address
    assert peer.check_chat(sig, body, text, reading=reading).ok


def test_a_gateway_signature_is_for_its_agent_only(gw: tuple[Gw, GatewayTee]) -> None:
    g, tee = gw
    _, _, chat_id = _chat(g, False)
    url = f"{_root(g)}/v1/signature/{chat_id}"
    assert requests.get(url, timeout=30).status_code == 401
    other = g.store.create_key("someone-else", trust="standard")
    assert requests.get(url, headers={"Authorization": f"Bearer {other}"},
                        timeout=30).status_code == 404
    op = requests.get(url + "?signing_algo=ed25519", headers=admin_headers(), timeout=30)
    assert op.status_code == 200
    assert op.json()["signing_address"] == tee.keys.get("ed25519").signing_address


def test_the_embedded_default_runs_the_gateway_in_the_development_tee() -> None:
    assert embedded_config("http://127.0.0.1:1", host="127.0.0.1", port=8080).tee == "dev-tdx"


def test_teegate_verifies_the_gateways_own_attestation(gw: tuple[Gw, GatewayTee],
                                                     dev_pki: Path) -> None:
    """The gateway's evidence passes teegate's own verifier under the development policy
    (and only there), bound to its key and the caller's nonce."""
    from teegate.attest import Policy, verify_provider_report
    from teegate.sim import development_policy

    g, _ = gw
    nonce = secrets.token_bytes(32)
    gateway = requests.get(f"{_root(g)}/v1/attestation/report?nonce={nonce.hex()}",
                           timeout=30).json()["gateway_attestation"]
    now = int(time.time())
    verdict = verify_provider_report(gateway, nonce=nonce, policy=development_policy(dev_pki),
                                     now=now)
    assert verdict.accepted, [c for c in verdict.checks if not c.ok]
    assert not verify_provider_report(gateway, nonce=nonce, policy=Policy.default(),
                                      now=now).accepted


# ------------------------------------------- ACI §4 attestation, §9.1 and §9.3 checks (point 4)


def test_aci_attestation_binds_the_receipt_keyset_that_signs_the_receipts(
    make_gateway: GatewayFactory, node_a: Server, dev_pki: Path, log: Any,
) -> None:
    """An ACI client, written from spec/aci.md: §9.1 (keyset digest, statement, report_data in
    the quote, expiry) on the gateway's own attestation, then §9.3 (signature by the keyset's
    receipt key, keyset digest, response body hash) on the receipt of a call."""
    import hashlib

    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    g = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                       "models": [MODEL], "development": True}], receipt_log=log)
    mount_self_attestation(g.app, GatewayTee(DevTdxSource(dev_pki)), log)
    nonce = secrets.token_hex(32)
    r = requests.get(f"{_root(g)}/v1/aci/attestation?nonce={nonce}", timeout=30)
    assert r.status_code == 200
    report = r.json()
    assert r.headers["x-aci-version"] == report["api_version"] == "aci/1"
    att = report["attestation"]
    keyset = att["workload_keyset"]
    digest = "sha256:" + hashlib.sha256(rfc8785.dumps(keyset)).hexdigest()
    assert digest == report["workload_keyset_digest"] == r.headers["x-aci-keyset-digest"]
    statement = ('{"keyset_digest":"' + digest + '","nonce":"' + nonce
                 + '","purpose":"aci.report_data.v1"}').encode()
    assert hashlib.sha256(statement).hexdigest() == att["report_data"]
    quoted = _body(dev_pki, {"intel_quote": att["evidence"]["quote"]}
                   | {"collateral": att["evidence"]["collateral"]})["reportdata"]
    assert quoted == att["report_data"] + "00" * 32  # zero-padded in the report-data slot
    assert time.time() < keyset["not_after"]
    assert report["service_capabilities"]["serving"] == "aggregator"
    # §9.3 on a call's receipt
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 3})
    auth = {"Authorization": f"Bearer {g.key}"}
    answer = requests.post(f"{_root(g)}/v1/chat/completions", data=body, timeout=30,
                           headers={"Content-Type": "application/json", **auth})
    rid = answer.headers["x-receipt-id"]
    deadline = time.monotonic() + 10
    while (got := requests.get(f"{_root(g)}/v1/aci/receipts/{rid}", headers=auth,
                               timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, got.text
        time.sleep(0.1)
    doc = got.json()
    key = next(k for k in keyset["receipt_signing_keys"] if k["key_id"] == doc["key_id"])
    assert key["algo"] == "ed25519"
    unsigned = rfc8785.dumps({k: v for k, v in doc.items() if k != "signature"})
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key"])).verify(
        bytes.fromhex(doc["signature"]), unsigned)  # raises if not
    assert doc["api_version"] == "aci/1"
    assert doc["workload_keyset_digest"] == digest
    events = {e["type"]: e for e in doc["event_log"]}
    assert events["response.returned"]["body_hash"] == (
        "sha256:" + hashlib.sha256(answer.content).hexdigest())
    assert events["request.received"]["body_hash"] == (
        "sha256:" + hashlib.sha256(body.encode()).hexdigest())
    for bad in ("AB" * 32, "ab" * 31, "0x" + "ab" * 31):
        assert requests.get(f"{_root(g)}/v1/aci/attestation?nonce={bad}",
                            timeout=30).status_code == 400
    unchallenged = requests.get(f"{_root(g)}/v1/aci/attestation", timeout=30).json()
    null_statement = ('{"keyset_digest":"' + digest
                      + '","nonce":null,"purpose":"aci.report_data.v1"}').encode()
    assert unchallenged["attestation"]["report_data"] == hashlib.sha256(
        null_statement).hexdigest()


async def test_under_dstack_the_receipt_key_comes_from_the_kms_and_the_report_says_so(
    tmp_path: Path, dev_pki: Path, plain_upstream: Server, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gateway.tee = dstack: the receipt key (and the signing keys) are released by the KMS,
    the ACI keyset lists that receipt key, and evidence.key_custody carries its chain in the
    shape private-ai-gateway's dstack verifier reads (provider dstack-kms, role receipt,
    purpose aci.receipt.ed25519.v1), which checks to the KMS root."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from teegate.gateway import parse_config
    from teegate.gateway.factory import build_app
    from teegate.node.kms import RECEIPT_PATH, check_kms_custody
    from tests.node.fake_dstack import APP_ID, Agent, agent_app, serve_unix

    agent = Agent()
    with serve_unix(agent_app(dev_pki, agent)) as sock:
        monkeypatch.setenv("DSTACK_SIMULATOR_ENDPOINT", sock)
        cfg = parse_config({
            "gateway": {"database_url": f"sqlite:///{tmp_path / 'gw.db'}",
                        "data_dir": str(tmp_path), "tee": "dstack"},
            "providers": [{"id": "plain", "platform": "open-ai",
                           "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
        })
        app = build_app(cfg)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://gw") as c:
                report = (await c.get("/v1/aci/attestation",
                                      params={"nonce": "cd" * 32})).json()
                gateway = (await c.get("/v1/attestation/report")).json()["gateway_attestation"]
        finally:
            for close in app.gateway.closers:
                close()
    expected = Ed25519PrivateKey.from_private_bytes(agent.derived(RECEIPT_PATH)).public_key()
    receipt_public = expected.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    keyset = report["attestation"]["workload_keyset"]
    assert [k["public_key"] for k in keyset["receipt_signing_keys"]] == [receipt_public]
    custody = report["attestation"]["evidence"]["key_custody"]
    receipt = next(k for k in custody["keys"] if k["role"] == "receipt")
    assert receipt["purpose"] == "aci.receipt.ed25519.v1"
    root = bytes(agent.kms_root.public_key.format(compressed=True)).hex()
    assert check_kms_custody(custody, signing_address=receipt_public, app_id=APP_ID.hex(),
                             accepted_roots=[root]) is None
    # the gateway's own signing key (its NEAR-shape report) is a KMS key too
    assert gateway["info"]["key_custody"]["provider"] == "dstack-kms"
    assert check_kms_custody(gateway["info"]["key_custody"],
                             signing_address=gateway["signing_address"], app_id=APP_ID.hex(),
                             accepted_roots=[root]) is None

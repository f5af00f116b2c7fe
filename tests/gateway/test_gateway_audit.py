"""``teegate audit --gateway-attestation``: a receipt verified back to the gateway's own ACI
attestation (development TDX): evidence, keyset binding in report_data, and the receipt's
key in the attested keyset; a receipt signed by another key fails naming the check."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import openai
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.gateway.self_attestation import GatewayTee, mount_self_attestation
from teegate.node import DevTdxSource
from teegate.receipts import ReceiptLog, ReceiptSigner, SignedReceipt
from teegate.sim import DevTdx
from tests.gateway.conftest import GatewayFactory
from tests.gateway.loopback import Server


def _checks(out: str) -> dict[str, str]:
    return {c["name"]: c["status"] for c in json.loads(out)["receipts"][0]["checks"]}


def test_audit_verifies_the_receipt_key_against_the_gateways_attestation(
    make_gateway: GatewayFactory, node_a: Server, dev_pki: Path, log: ReceiptLog,
    tmp_path: Path,
) -> None:
    g = make_gateway([{"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
                       "models": ["teegate-builtin"], "development": True}], receipt_log=log)
    mount_self_attestation(g.app, GatewayTee(DevTdxSource(dev_pki)), log)
    client = openai.OpenAI(base_url=g.url, api_key=g.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=[{"role": "user", "content": "hi"}])
    rid = raw.headers["x-receipt-id"]
    log.flush()
    auth = {"authorization": f"Bearer {g.key}"}
    bundle = tmp_path / "b.json"
    bundle.write_text(httpx.get(f"{g.server.url}/v1/receipts/{rid}/bundle", headers=auth).text)
    root = tmp_path / "dev-root.pem"
    root.write_text(DevTdx.load_or_create(dev_pki).root_pem)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[roots]\nintel = ["{root}"]\n')
    base = ["audit", "--log-key", log.vkey, "--policy", str(policy), "--json",
            "--allow-skipped"]
    # fetched live with a fresh nonce
    res = CliRunner().invoke(cli_app, [*base, str(bundle), "--gateway-attestation",
                                       g.server.url])
    assert res.exit_code == 0, res.output
    checks = _checks(res.output)
    for name in ("gateway.keyset_digest", "gateway.report_data", "gateway.evidence",
                 "gateway.receipt_key"):
        assert checks[name] == "ok", (name, res.output)
    # from a file, with the nonce it was fetched with; a wrong nonce fails report_data
    nonce = secrets.token_hex(32)
    report_file = tmp_path / "aci.json"
    report_file.write_text(httpx.get(f"{g.server.url}/v1/aci/attestation",
                                     params={"nonce": nonce}).text)
    ok = CliRunner().invoke(cli_app, [*base, str(bundle), "--gateway-attestation",
                                      str(report_file), "--gateway-nonce", nonce])
    assert ok.exit_code == 0, ok.output
    wrong = CliRunner().invoke(cli_app, [*base, str(bundle), "--gateway-attestation",
                                         str(report_file), "--gateway-nonce", "ab" * 32])
    assert wrong.exit_code == 1
    assert _checks(wrong.output)["gateway.report_data"] == "fail"
    # under the production policy the development quote is not accepted
    prod = CliRunner().invoke(cli_app, ["audit", "--log-key", log.vkey, "--json", str(bundle),
                                        "--gateway-attestation", str(report_file),
                                        "--gateway-nonce", nonce])
    assert prod.exit_code == 1
    assert _checks(prod.output)["gateway.evidence"] == "fail"
    # a receipt signed by a key the gateway does not attest (trusted via --receipt-key, and
    # naming the attested keyset's digest) passes receipt.signature but not gateway.receipt_key
    doc: dict[str, Any] = json.loads(bundle.read_text())["receipt"]
    other = ReceiptSigner(Ed25519PrivateKey.generate())
    forged = {k: v for k, v in doc.items() if k not in ("signature", "key_id")}
    forged["key_id"] = other.key_id
    from teegate.receipts.receipt import jcs

    forged["signature"] = other._key.sign(jcs(forged)).hex()
    SignedReceipt.from_json(forged).verify([other.public_key])
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    bad = CliRunner().invoke(cli_app, [*base, str(forged_file), "--receipt-key",
                                       other.public_key.hex(), "--gateway-attestation",
                                       g.server.url])
    assert bad.exit_code == 1, bad.output
    checks = _checks(bad.output)
    assert checks["receipt.signature"] == "ok"
    assert checks["gateway.keyset_digest"] == "ok"
    assert checks["gateway.receipt_key"] == "fail"
    assert "not a receipt signing key of the attested keyset" in bad.output

"""The model you paid for is the one that ran: two attested development nodes serve the same
model name with different app composes; the model's policy (learned from one node with
`teegate policy learn`) lets that one serve and refuses the other by a named check; a provider
serving several models is checked per model; receipts and `teegate audit` show the identity."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app
from teegate.receipts import ReceiptLog
from teegate.sim import DevTdx
from teegate.sim.policy_file import write_development_policy
from tests.gateway.conftest import GatewayFactory, wait
from tests.gateway.loopback import Server, serving

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "which model are you?"}]
MODELS = ("llama-x", "mistral-y")


def _compose(name: str, digest: str) -> bytes:
    weights = hashlib.sha256(name.encode()).hexdigest()
    return json.dumps({"name": name, "runner": "docker-compose", "docker_compose_file": (
        f"services:\n  engine:\n    image: ghcr.io/example/{name}@sha256:{digest}\n"
        f"    environment:\n      - TEEGATE_WEIGHTS_SHA256={weights}\n")}).encode()


COMPOSE_A = _compose("llama-x", "1a" * 32)
COMPOSE_B = _compose("something-else", "2b" * 32)


def _node(pki: Path, compose: bytes) -> Iterator[Server]:
    app = create_node_app(DevTdxSource(pki, app_compose=compose), BuiltinEngine(MODELS),
                          keys=NodeKeys())
    with serving(app) as s:
        yield s


@pytest.fixture(scope="module")
def node_good(dev_pki: Path) -> Iterator[Server]:
    yield from _node(dev_pki, COMPOSE_A)


@pytest.fixture(scope="module")
def node_other(dev_pki: Path) -> Iterator[Server]:
    yield from _node(dev_pki, COMPOSE_B)


def _learn(url: str, dev_pki: Path, out: Path, model: str = "llama-x") -> Path:
    res = CliRunner().invoke(cli_app, ["policy", "learn", "--url", url, "--model", model,
                                       "--policy", str(write_development_policy(dev_pki))])
    assert res.exit_code == 0, res.output
    out.write_text(res.output)
    return out


def test_model_policy_picks_the_node_that_runs_the_model(
        make_gateway: GatewayFactory, node_good: Server, node_other: Server, log: ReceiptLog,
        dev_pki: Path, tmp_path: Path) -> None:
    good = _learn(node_good.url, dev_pki, tmp_path / "llama.toml")
    text = good.read_text()
    compose_a = hashlib.sha256(COMPOSE_A).hexdigest()
    assert f'compose_hashes = ["{compose_a}"]' in text
    assert f'image_digests = ["sha256:{"1a" * 32}"]' in text
    assert "allow_dev_os = true" in text  # said, for the operator to see
    other = _learn(node_other.url, dev_pki, tmp_path / "mistral.toml", "mistral-y")
    assert "(model mistral-y)" in other.read_text()
    gw = make_gateway([
        {"id": "node-good", "platform": "tee-node", "base_url": node_good.url + "/v1",
         "models": list(MODELS), "development": True},
        {"id": "node-other", "platform": "tee-node", "base_url": node_other.url + "/v1",
         "models": list(MODELS), "development": True},
    ], receipt_log=log, models={"llama-x": {"policy": str(good)},
                                "mistral-y": {"policy": str(other)}})
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    wait(lambda: all(gw.provider(p).attested is not None for p in ("node-good", "node-other")))
    # llama-x: only the node running compose A serves, every time.
    served = set()
    rid = ""
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="llama-x@attested",
                                                               messages=MSG)
        served.add(raw.headers["x-teegate-provider"])
        rid = raw.headers["x-teegate-receipt"]
        verdict = raw.headers["x-teegate-verdict"]
    assert served == {"node-good"}
    refusal = gw.provider("node-other").blocked(time.time(), "llama-x")
    assert refusal is not None
    assert "model policy of 'llama-x'" in refusal
    assert "dstack.compose_hash" in refusal
    # Per model: the same two providers, the other way round for mistral-y.
    raw = client.chat.completions.with_raw_response.create(model="mistral-y@attested",
                                                           messages=MSG)
    assert raw.headers["x-teegate-provider"] == "node-other"
    mistral_rid = raw.headers["x-teegate-receipt"]
    # The verdict the call relied on lists the identity, and its digest covers it.
    a = gw.provider("node-good").attested
    assert a is not None
    assert a.digest == verdict == a.verdict.digest()
    assert a.verdict.model["compose_hash"] == compose_a
    assert a.verdict.models["llama-x"].accepted
    assert not a.verdict.models["mistral-y"].accepted
    # The receipt records the identity.
    log.flush()
    auth = {"authorization": f"Bearer {gw.key}"}
    doc = httpx.get(f"{gw.server.url}/v1/receipts/{rid}", headers=auth).json()["receipt"]
    att = {e["type"]: e for e in doc["event_log"]}["teegate.attestation"]
    assert att["model_policy"] == "llama-x"
    assert att["model_identity"]["compose_hash"] == compose_a
    assert att["model_identity"]["images"] == ["sha256:" + "1a" * 32]
    assert att["model_identity"]["weights_sha256"] == hashlib.sha256(b"llama-x").hexdigest()
    # The audit shows it and checks it against a given policy.
    root = tmp_path / "dev-root.pem"
    root.write_text(DevTdx.load_or_create(dev_pki).root_pem)
    for name, receipt, policy_text, want in (
            ("llama", rid, text, "ok"), ("mistral", mistral_rid, other.read_text(), "ok"),
            ("wrong", rid, other.read_text(), "fail")):
        bundle = tmp_path / f"{name}.json"
        bundle.write_text(httpx.get(f"{gw.server.url}/v1/receipts/{receipt}/bundle",
                                    headers=auth).text)
        policy = tmp_path / f"{name}-audit.toml"
        policy.write_text(policy_text + f'\n[roots]\nintel = ["{root}"]\n')
        res = CliRunner().invoke(cli_app, ["audit", str(bundle), "--log-key", log.vkey,
                                           "--policy", str(policy), "--json"])
        report = json.loads(res.output)["receipts"][0]
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["attestation.evidence"]["status"] == want, (name, checks)
        if want == "ok":
            assert res.exit_code == 0, res.output
            assert checks["attestation.model_identity"]["status"] == "ok"
        else:
            assert res.exit_code == 1
            assert "dstack.compose_hash" in checks["attestation.evidence"]["detail"]
        assert report["model_identity"]["compose_hash"] in res.output
    human = CliRunner().invoke(cli_app, ["audit", str(tmp_path / "llama.json"), "--log-key",
                                         log.vkey, "--policy",
                                         str(tmp_path / "llama-audit.toml")],
                               terminal_width=300)
    assert "model identity the call relied on" in human.output
    assert compose_a[:40] in human.output.replace("│", "").replace(" ", "")


def test_no_provider_running_the_model_is_refused_by_name(
        make_gateway: GatewayFactory, node_other: Server, node_good: Server,
        dev_pki: Path, tmp_path: Path) -> None:
    good = _learn(node_good.url, dev_pki, tmp_path / "llama.toml")
    gw = make_gateway([
        {"id": "node-other", "platform": "tee-node", "base_url": node_other.url + "/v1",
         "models": list(MODELS), "development": True}], models={"llama-x": {"policy": str(good)}})
    wait(lambda: gw.provider("node-other").attested is not None)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="llama-x@attested", messages=MSG)
    body = e.value.response.text
    assert "dstack.compose_hash" in body
    assert "model policy" in body
    # The public provider view says what runs there and what each model policy concluded.
    view = httpx.get(gw.server.url + "/v1/providers").json()["data"][0]["attestation"]
    assert view["model_identity"]["compose_hash"] == hashlib.sha256(COMPOSE_B).hexdigest()
    assert view["model_policies"]["llama-x"]["accepted"] is False
    assert "dstack.compose_hash" in view["model_policies"]["llama-x"]["refusal"]
    # The provider's other model has no model policy and is served.
    ok = client.chat.completions.with_raw_response.create(model="mistral-y@attested",
                                                          messages=MSG)
    assert ok.headers["x-teegate-provider"] == "node-other"


def test_policy_learn_refuses_evidence_it_cannot_verify(node_good: Server) -> None:
    """Under the production policy the development node's report is not accepted, and nothing
    is learned from it."""
    res = CliRunner().invoke(cli_app, ["policy", "learn", "--url", node_good.url])
    assert res.exit_code == 1
    assert "not accepted" in res.output
    assert "tdx.root" in res.output or "tdx.development_root" in res.output
    res = CliRunner().invoke(cli_app, ["policy", "learn", "--url", "http://127.0.0.1:1"])
    assert res.exit_code == 2
    assert "Traceback" not in res.output

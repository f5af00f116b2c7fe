"""The peers' published checks (tests/node/peer_checks.py) pointed at ``teegate node``, plain
and streamed, as NEAR AI's and private-ml-sdk's users run them."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from teegate.node import BuiltinEngine, DevTdxSource, DstackSource, NodeKeys, create_node_app
from teegate.sim import DevGpu, DevTdx
from teegate.sim.compose import DEFAULT_APP_COMPOSE
from tests.node import peer_checks as peer
from tests.node.fake_dstack import Agent, agent_app, serve_unix
from tests.node.serve import serve

MODEL = "teegate-builtin"


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[str]:
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine(), keys=NodeKeys())) as url:
        yield url


def _body(stream: bool) -> str:
    # the examples' request: json.dumps of a dict, sent as the exact text hashed
    return json.dumps({"model": MODEL, "messages": [{"role": "user",
                                                     "content": "Hello, how are you?"}],
                       "stream": stream, "max_tokens": 1})


def _chat(url: str, stream: bool, headers: dict[str, str] | None = None
          ) -> tuple[str, str, str]:
    """(request body, response text as hashed, chat id), the examples' way."""
    body = _body(stream)
    r = requests.post(f"{url}/v1/chat/completions", data=body, stream=stream, timeout=30,
                      headers={"Content-Type": "application/json",
                               "Authorization": "Bearer unused", **(headers or {})})
    if stream:
        text, chat_id = peer.stream_as_they_read_it(r)
        assert chat_id is not None
        return body, text, chat_id
    return body, r.text, r.json()["id"]


def _signature(url: str, chat_id: str) -> dict[str, str]:
    sig: dict[str, str] = requests.get(
        f"{url}/v1/signature/{chat_id}?model={MODEL}&signing_algo=ecdsa", timeout=30).json()
    return sig


@pytest.mark.parametrize("reading", ["near", "pml"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_the_peers_signature_checks_pass(node: str, reading: str, stream: bool) -> None:
    body, text, chat_id = _chat(node, stream)
    verdict = peer.check_chat(_signature(node, chat_id), body, text, reading=reading)
    assert verdict == peer.SignatureVerdict(True, True, True)


def test_a_stream_the_gateway_asked_to_sign_inline_still_checks_once_the_comment_is_out(
    node: str,
) -> None:
    """A verifier behind a gateway-style caller (x-teegate-signing-algo) receives the inline
    comment too; the text by id covers every byte but that comment."""
    body, text, chat_id = _chat(node, True, {"x-teegate-signing-algo": "ecdsa"})
    assert ": teegate-signature " in text
    without = "".join(line + "\n" for line in text.split("\n")[:-1]
                      if not line.startswith(": teegate-signature "))
    without = without.replace("\n\n\n", "\n\n")  # the comment's own blank line
    assert peer.check_chat(_signature(node, chat_id), body, without, reading="near").ok


def test_a_teegate_nonce_text_is_misread_by_the_peers(node: str) -> None:
    """Documented limitation (docs/node.md): with ``x-teegate-nonce`` (only teegate's
    gateway sends it) the text is ``req:resp:nonce``; NEAR reads a 3-field text as
    ``model:req:resp`` and private-ml-sdk refuses it. Direct clients never send the nonce."""
    body, text, chat_id = _chat(node, False, {"x-teegate-nonce": "ab" * 32})
    sig = _signature(node, chat_id)
    near = peer.check_chat(sig, body, text, reading="near")
    assert near.signature_valid
    assert not near.request_hash_matches
    with pytest.raises(ValueError, match="too many values"):
        peer.check_chat(sig, body, text, reading="pml")


# ------------------------------------------------------------------ report shapes (point 2)


def _report(url: str, nonce: str, algo: str = "ecdsa", **extra: str) -> dict[str, Any]:
    q = "&".join(f"{k}={v}" for k, v in extra.items())
    r = requests.get(f"{url}/v1/attestation/report?model={MODEL}&nonce={nonce}"
                     f"&signing_algo={algo}" + (f"&{q}" if q else ""), timeout=30)
    assert r.status_code == 200, r.text
    rep: dict[str, Any] = r.json()
    return rep


def _quote_body(dev_pki: Path, attestation: dict[str, Any]) -> dict[str, str]:
    root = DevTdx.load_or_create(dev_pki).root_der
    return peer.quote_body(attestation, attestation["collateral"], root, int(time.time()))


@pytest.fixture(scope="module")
def compose_node(dev_pki: Path) -> Iterator[str]:
    """A development TDX measuring an app compose as dstack does, with two GPUs."""
    source = DevTdxSource(dev_pki, app_compose=DEFAULT_APP_COMPOSE)
    app = create_node_app(source, BuiltinEngine(), keys=NodeKeys(), gpus=2,
                          gpu=DevGpu.load_or_create(dev_pki))
    with serve(app) as url:
        yield url


@pytest.mark.parametrize("algo", ["ecdsa", "ed25519"])
def test_nears_model_verifier_finds_and_checks_the_model_attestation(
    dev_pki: Path, compose_node: str, algo: str,
) -> None:
    """NEAR's model_verifier walks ``model_attestations`` (the flat report gave it nothing
    to check): report_data binding, GPU nonce, compose against mr_config_id."""
    nonce = secrets.token_hex(32)
    report = _report(compose_node, nonce, algo)
    assert report.get("gateway_attestation") is None  # a node, not a gateway
    assert len(report["model_attestations"]) == 1
    for attestation in report["model_attestations"]:
        body = _quote_body(dev_pki, attestation)
        assert peer.check_report_data(attestation, nonce, body) == {
            "binds_address": True, "embeds_nonce": True}
        assert peer.gpu_nonce_matches(attestation, nonce)
        tcb = peer.near_tcb_info(attestation)
        assert tcb is not None
        assert tcb["app_compose"].encode() == DEFAULT_APP_COMPOSE
        assert peer.pml_compose(attestation, body["mrconfig"]) is True


def test_private_ml_sdks_attestation_walkthrough_runs_to_the_end(
    dev_pki: Path, node: str, compose_node: str,
) -> None:
    """private-ml-sdk takes ``all_attestations[0]`` and indexes ``info.tcb_info`` (it used
    to stop there with a KeyError on every source but dstack)."""
    for url, composed in ((node, False), (compose_node, True)):
        nonce = secrets.token_hex(32)
        attestation = peer.pml_first_attestation(_report(url, nonce))
        body = _quote_body(dev_pki, attestation)
        assert all(peer.check_report_data(attestation, nonce, body).values())
        assert peer.pml_compose(attestation, body["mrconfig"]) is (True if composed else None)


@pytest.mark.parametrize("reading", ["near", "pml"])
def test_the_chat_verifiers_find_the_signer_s_attestation(node: str, dev_pki: Path,
                                                          reading: str) -> None:
    """After the signature: a fresh report asked for by ``signing_address``, the entry for
    that signer picked from the list each verifier reads."""
    body, text, chat_id = _chat(node, True)
    sig = _signature(node, chat_id)
    assert peer.check_chat(sig, body, text, reading=reading).ok
    nonce = secrets.token_hex(32)
    report = _report(node, nonce, signing_address=sig["signing_address"])
    pick = peer.near_attestation_for if reading == "near" else peer.pml_attestation_for
    attestation = pick(report, sig["signing_address"])
    assert attestation is not report  # found in the list, not the fallback
    assert all(peer.check_report_data(attestation, nonce,
                                      _quote_body(dev_pki, attestation)).values())


def test_a_node_without_gpus_has_no_nvidia_payload_for_nears_gpu_check(node: str) -> None:
    """Documented limitation (docs/node.md): NEAR's model_verifier calls check_gpu on every
    model attestation, which needs ``nvidia_payload``; a node without GPUs has none to give
    (it never invents GPU evidence), so that verifier stops there with a KeyError."""
    attestation = _report(node, secrets.token_hex(32))["model_attestations"][0]
    with pytest.raises(KeyError):
        peer.gpu_nonce_matches(attestation, "00" * 32)


def test_under_dstack_the_report_carries_the_agents_tcb_info_and_parsed_event_log(
    dev_pki: Path,
) -> None:
    agent = Agent()
    with serve_unix(agent_app(dev_pki, agent)) as sock, serve(create_node_app(
            DstackSource(sock), BuiltinEngine(), keys=NodeKeys())) as url:
        nonce = secrets.token_hex(32)
        report = _report(url, nonce)
    attestation = peer.pml_first_attestation(report)
    assert attestation["event_log"][0]["event"] == "app-id"  # a list, as vllm-proxy sends
    tcb = peer.near_tcb_info(attestation)
    assert tcb is not None
    assert json.loads(tcb["app_compose"])["docker_compose_file"]
    quote = bytes.fromhex(attestation["intel_quote"])
    assert quote[568:600].rstrip(b"\0") == bytes.fromhex(
        attestation["signing_address"][2:])
    assert quote[600:632].hex() == nonce

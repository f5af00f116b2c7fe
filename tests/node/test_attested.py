"""The node with each development TEE, verified end to end by teegate.attest."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teegate.attest.policy import Policy
from teegate.attest.report import verify_provider_report
from teegate.node import (
    BuiltinEngine,
    ConfigfsTsmSource,
    DevSnpSource,
    DevTdxSource,
    NodeKeys,
    QuoteSource,
    create_node_app,
    signature_text,
    verify_response_signature,
)
from teegate.sim import DevGpu, DevTdx, development_policy
from tests.node.fake_tsm import KernelLikeTsm
from tests.node.serve import serve

KINDS = ["dev-tdx", "dev-snp", "configfs-tdx", "dev-tdx+gpu"]


def _source(kind: str, pki: Path, tmp: Path) -> QuoteSource:
    if kind.startswith("dev-tdx"):
        return DevTdxSource(pki)
    if kind == "dev-snp":
        return DevSnpSource(pki)
    tdx = DevTdx.load_or_create(pki)
    root = tmp / "report"
    root.mkdir()
    return ConfigfsTsmSource(root, fs=KernelLikeTsm(root, "tdx_guest", lambda rd: tdx.quote(rd)))


@pytest.fixture(scope="module", params=KINDS)
def node(request: pytest.FixtureRequest, dev_pki: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, NodeKeys]]:
    kind: str = request.param
    keys = NodeKeys()
    gpus = 2 if kind.endswith("+gpu") else 0
    gpu = DevGpu.load_or_create(dev_pki) if gpus else None
    source = _source(kind, dev_pki, tmp_path_factory.mktemp("tsm"))
    app = create_node_app(source, BuiltinEngine(), keys=keys, gpus=gpus, gpu=gpu)
    with serve(app) as url:
        yield kind, url, keys


@pytest.fixture(scope="module")
def dev_policy(dev_pki: Path) -> Policy:
    return development_policy(dev_pki)


def _get(url: str, nonce: bytes, algo: str = "ecdsa") -> dict[str, Any]:
    r = httpx.get(url + "/v1/attestation/report",
                  params={"nonce": nonce.hex(), "signing_algo": algo})
    assert r.status_code == 200
    report: dict[str, Any] = r.json()
    return report


@pytest.mark.parametrize("algo", ["ecdsa", "ed25519"])
def test_report_verifies_with_development_policy_only(
    node: tuple[str, str, NodeKeys], dev_policy: Policy, dev_pki: Path, algo: str
) -> None:
    kind, url, _ = node
    nonce = bytes(range(32))
    report = _get(url, nonce, algo)
    # configfs-tsm gives no collateral (a verifier fetches Intel's); for the development PKI
    # the dev platform's collateral stands in.
    collateral = DevTdx.load_or_create(dev_pki).collateral() if kind == "configfs-tdx" else None
    now = int(time.time())
    v = verify_provider_report(report, nonce=nonce, policy=dev_policy, now=now,
                               collateral=collateral)
    assert v.accepted, v.failures
    assert v.development
    if kind.endswith("+gpu"):
        assert len(json.loads(report["nvidia_payload"])["evidence_list"]) == 2
    rejected = verify_provider_report(report, nonce=nonce, policy=Policy.default(), now=now,
                                      collateral=collateral)
    assert not rejected.accepted


def test_replayed_report_is_rejected(node: tuple[str, str, NodeKeys], dev_policy: Policy,
                                     dev_pki: Path) -> None:
    kind, url, _ = node
    old = _get(url, b"\x01" * 32)
    collateral = DevTdx.load_or_create(dev_pki).collateral() if kind == "configfs-tdx" else None
    v = verify_provider_report(old, nonce=b"\x02" * 32, policy=dev_policy,
                               now=int(time.time()), collateral=collateral)
    assert not v.accepted
    assert any("nonce" in c.name for c in v.failures)


def test_swapped_signing_key_is_rejected(node: tuple[str, str, NodeKeys], dev_policy: Policy,
                                         dev_pki: Path) -> None:
    kind, url, _ = node
    nonce = b"\x03" * 32
    report = _get(url, nonce)
    report["signing_address"] = NodeKeys().get("ecdsa").signing_address
    collateral = DevTdx.load_or_create(dev_pki).collateral() if kind == "configfs-tdx" else None
    v = verify_provider_report(report, nonce=nonce, policy=dev_policy, now=int(time.time()),
                               collateral=collateral)
    assert not v.accepted


def test_responses_verify_against_the_attested_key(node: tuple[str, str, NodeKeys]) -> None:
    _, url, _ = node
    nonce = b"\x04" * 32
    address = _get(url, nonce)["signing_address"]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x y"}]}).encode()
    r = httpx.post(url + "/v1/chat/completions", content=body)
    text = signature_text(body, r.content)
    sig = r.headers["x-teegate-signature"]
    assert verify_response_signature(text, sig, address, "ecdsa")
    altered = r.content.replace(b'"usage"', b'"usagE"')
    assert not verify_response_signature(signature_text(body, altered), sig, address, "ecdsa")
    # Streaming: the comment's signature covers the bytes before it, by the attested key.
    sbody = json.dumps({"model": "m", "stream": True,
                        "messages": [{"role": "user", "content": "x y"}]}).encode()
    raw = httpx.post(url + "/v1/chat/completions", content=sbody,
                     headers={"x-teegate-signing-algo": "ecdsa"}).content
    marker = b": teegate-signature "
    pos = raw.index(marker)
    comment = json.loads(raw[pos + len(marker): raw.index(b"\n", pos)])
    assert comment["signing_address"] == address
    assert comment["text"] == signature_text(sbody, raw[:pos])
    assert verify_response_signature(comment["text"], comment["signature"], address, "ecdsa")
    tampered = raw[:pos].replace(b"data: {", b"data:  {", 1)
    assert signature_text(sbody, tampered) != comment["text"]

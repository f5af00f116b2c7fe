"""Audit re-verifies the attestation evidence a receipt cites (development TDX node)."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app
from teegate.receipts import AttestationRef, ReceiptLog, make_bundle, parse_bundle
from teegate.receipts.audit import audit_bundle
from teegate.receipts.bundle import TlogProof
from teegate.sim import development_policy

from .conftest import ORIGIN, make_receipt, provider_signature


def node_keys() -> NodeKeys:
    return _NODE_KEYS


_NODE_KEYS = NodeKeys()


@pytest.fixture(scope="module")
def node_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """(exact report bytes, nonce, dev PKI dir) from a development TDX node over HTTP."""
    pki = tmp_path_factory.mktemp("pki")
    app = create_node_app(DevTdxSource(pki), BuiltinEngine(), keys=node_keys())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    nonce = secrets.token_bytes(32)
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/attestation/report",
        params={"nonce": nonce.hex(), "signing_algo": "ecdsa"},
    )
    server.should_exit = True
    t.join(timeout=10)
    assert r.status_code == 200
    return r.content, nonce, pki


def _bundle(
    tmp: Path, report: bytes, nonce: bytes, evidence: bytes | None, signer: Any = None
) -> tuple[str, Any]:
    """A logged receipt citing ``report``, its response signed by the node's key (or ``signer``)."""
    log = ReceiptLog(f"sqlite:///{tmp / 'ev.db'}", origin=ORIGIN, key=Ed25519PrivateKey.generate())
    try:
        att = AttestationRef(
            verdict_digest="aa" * 32,
            evidence_ref="evidence://dev-node/1",
            evidence_sha256=hashlib.sha256(report).hexdigest(),
            tee="tdx",
            nonce=nonce.hex(),
        )
        ps = provider_signature(
            f"{1:064x}", f"{2:064x}", signer or node_keys().get("ecdsa")
        )
        r = make_receipt(
            1, attestation=att, time_ms=int(time.time() * 1000), provider_signature=ps
        )
        log.submit(r)
        p = log.prove(r.receipt_id)
        assert p is not None
        ev = {"provider_report": evidence.decode()} if evidence is not None else None
        b = make_bundle(
            p.receipt.document, TlogProof(p.index, p.proof, p.checkpoint.note), evidence=ev
        )
        return log.vkey, b
    finally:
        log.close()


def _statuses(rep: Any) -> dict[str, str]:
    return {c.name: c.status for c in rep.checks}


def test_evidence_reverified_under_the_development_policy(
    node_report: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    report, nonce, pki = node_report
    vkey, b = _bundle(tmp_path, report, nonce, report)
    from teegate.receipts.note import parse_vkey

    v = parse_vkey(vkey)
    bundle = parse_bundle(json.dumps(b))
    rep = audit_bundle(
        bundle, "b", log_verifiers=[v], receipt_keys=[], policy=development_policy(pki)
    )
    st = _statuses(rep)
    assert st["attestation.evidence_digest"] == "ok"
    assert st["attestation.evidence"] == "ok", rep.to_json()
    assert rep.ok
    # under the production policy the development roots are not trusted: audit fails
    rep = audit_bundle(bundle, "b", log_verifiers=[v], receipt_keys=[])
    assert _statuses(rep)["attestation.evidence"] == "fail"
    assert not rep.ok
    # the same through the CLI (production policy by default): exit 1
    path = tmp_path / "b.json"
    path.write_text(json.dumps(b))
    res = CliRunner().invoke(cli_app, ["audit", str(path), "--log-key", vkey, "--json"])
    assert res.exit_code == 1
    assert "attestation.evidence" in res.output


def test_swapped_evidence_and_missing_evidence(
    node_report: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    report, nonce, pki = node_report
    other = json.loads(report)
    other["signing_address"] = "0x" + "11" * 20
    vkey, b = _bundle(tmp_path, report, nonce, json.dumps(other).encode())
    from teegate.receipts.note import parse_vkey

    rep = audit_bundle(
        parse_bundle(json.dumps(b)),
        "b",
        log_verifiers=[parse_vkey(vkey)],
        receipt_keys=[],
        policy=development_policy(pki),
    )
    assert _statuses(rep)["attestation.evidence_digest"] == "fail"
    assert not rep.ok
    vkey, b = _bundle(tmp_path / "x", report, nonce, None)
    rep = audit_bundle(
        parse_bundle(json.dumps(b)), "b", log_verifiers=[parse_vkey(vkey)], receipt_keys=[]
    )
    assert _statuses(rep)["attestation.evidence"] == "skip"
    # skipped is not verified: only an auditor who accepts skips gets a pass
    assert not rep.ok
    assert rep.holds(allow_skipped=True)
    assert rep.to_json()["skipped"] == ["attestation.evidence"]


def test_evidence_of_another_key_than_the_response_signer_fails(
    node_report: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    """Valid evidence, valid response signature, but by a key the evidence does not bind."""
    from teegate.node.signer import EcdsaSigner
    from teegate.receipts.note import parse_vkey

    report, nonce, pki = node_report
    vkey, b = _bundle(tmp_path, report, nonce, report, signer=EcdsaSigner())
    rep = audit_bundle(
        parse_bundle(json.dumps(b)),
        "b",
        log_verifiers=[parse_vkey(vkey)],
        receipt_keys=[],
        policy=development_policy(pki),
    )
    st = _statuses(rep)
    assert st["attestation.evidence"] == "ok"
    assert st["provider.signature"] == "ok"
    assert st["attestation.key_binding"] == "fail"
    assert not rep.holds(allow_skipped=True)


def test_evidence_the_receipt_does_not_bind_is_not_accepted(
    node_report: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    """Without evidence_sha256 and nonce any valid report would pass for this call: fail."""
    from teegate.receipts.note import parse_vkey

    report, nonce, pki = node_report
    vkey, b = _bundle(tmp_path, report, nonce, report)
    for event in b["receipt"]["event_log"]:
        if event["type"] == "teegate.attestation":
            event["evidence_sha256"] = None
            event["nonce"] = None
    rep = audit_bundle(
        parse_bundle(json.dumps(b)),
        "b",
        log_verifiers=[parse_vkey(vkey)],
        receipt_keys=[],
        policy=development_policy(pki),
    )
    # (the edit also breaks the signature; the evidence check must fail on its own account)
    assert _statuses(rep)["attestation.evidence"] == "fail"
    assert "binds no evidence" in next(c.detail for c in rep.checks if c.name.endswith("evidence"))


def test_gpu_claim_needs_gpu_evidence(
    node_report: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    """A receipt saying attested+gpu over CPU-only evidence does not hold."""
    from teegate.receipts.note import parse_vkey

    report, nonce, pki = node_report
    log = ReceiptLog(f"sqlite:///{tmp_path / 'g.db'}", origin=ORIGIN,
                     key=Ed25519PrivateKey.generate())
    try:
        att = AttestationRef(
            verdict_digest="aa" * 32, evidence_sha256=hashlib.sha256(report).hexdigest(),
            tee="tdx", nonce=nonce.hex(), gpu=True,
        )
        ps = provider_signature(f"{1:064x}", f"{2:064x}", node_keys().get("ecdsa"))
        r = make_receipt(1, attestation=att, provider_signature=ps, trust_level="attested+gpu",
                         trust_required="attested+gpu", time_ms=int(time.time() * 1000))
        log.submit(r)
        p = log.prove(r.receipt_id)
        assert p is not None
        b = make_bundle(p.receipt.document, TlogProof(p.index, p.proof, p.checkpoint.note),
                        evidence={"provider_report": report.decode()})
        vkey = log.vkey
    finally:
        log.close()
    rep = audit_bundle(parse_bundle(json.dumps(b)), "b", log_verifiers=[parse_vkey(vkey)],
                       receipt_keys=[], policy=development_policy(pki))
    st = _statuses(rep)
    assert st["receipt.trust_claim"] == "ok"
    assert st["attestation.evidence"] == "ok", rep.to_json()
    assert st["attestation.gpu"] == "fail"
    assert not rep.holds(allow_skipped=True)

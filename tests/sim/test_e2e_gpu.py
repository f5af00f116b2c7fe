"""Development GPU evidence through teegate's own GPU verifier (``teegate.attest.gpu``), and a
whole development provider report (TDX quote + nvidia_payload) through ``attest.report``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from teegate.attest.gpu import appraise_gpus, verify_gpu_evidence
from teegate.attest.policy import Policy
from teegate.attest.report import verify_provider_report
from teegate.attest.verdict import Verdict
from teegate.sim import DevGpu, DevTdx, development_policy

NOW = int(time.time())


@pytest.fixture
def nonce() -> bytes:
    return os.urandom(32)


def failed(verdict: Verdict) -> dict[str, str]:
    return {c.name: c.detail for c in verdict.checks if not c.ok}


def test_accepted_under_development_policy_and_marked(
    pki_dir: Path, dev_gpu: DevGpu, nonce: bytes
) -> None:
    verdict = verify_gpu_evidence(dev_gpu.evidence(nonce), dev_gpu.cert_chain_pem(),
                                  nonce=nonce, policy=development_policy(pki_dir), now=NOW)
    assert verdict.accepted, failed(verdict)
    assert any(c.name == "gpu.0.development_root" and c.ok for c in verdict.checks)


def test_rejected_under_default_policy(dev_gpu: DevGpu, nonce: bytes) -> None:
    verdict = verify_gpu_evidence(dev_gpu.evidence(nonce), dev_gpu.cert_chain_pem(),
                                  nonce=nonce, policy=Policy.default(), now=NOW)
    assert not verdict.accepted
    assert "gpu.0.chain" in failed(verdict)


def test_other_nonce_is_rejected(pki_dir: Path, dev_gpu: DevGpu, nonce: bytes) -> None:
    verdict = verify_gpu_evidence(dev_gpu.evidence(nonce), dev_gpu.cert_chain_pem(),
                                  nonce=os.urandom(32), policy=development_policy(pki_dir),
                                  now=NOW)
    assert not verdict.accepted
    assert "gpu.0.nonce" in failed(verdict)


def test_driver_version_policy(pki_dir: Path, dev_gpu: DevGpu, nonce: bytes) -> None:
    policy = development_policy(
        pki_dir, Policy.from_mapping({"gpu": {"driver_versions": ["570.1"]}}))
    good = verify_gpu_evidence(dev_gpu.evidence(nonce, driver_version="570.1"),
                               dev_gpu.cert_chain_pem(), nonce=nonce, policy=policy, now=NOW)
    bad = verify_gpu_evidence(dev_gpu.evidence(nonce), dev_gpu.cert_chain_pem(),
                              nonce=nonce, policy=policy, now=NOW)
    assert good.accepted, failed(good)
    assert not bad.accepted


def test_tampered_evidence_is_rejected(pki_dir: Path, dev_gpu: DevGpu, nonce: bytes) -> None:
    evidence = bytearray(dev_gpu.evidence(nonce))
    evidence[37 + 8 + 7 + 10] ^= 1  # inside the digest of measurement block 1
    verdict = verify_gpu_evidence(bytes(evidence), dev_gpu.cert_chain_pem(), nonce=nonce,
                                  policy=development_policy(pki_dir), now=NOW)
    assert not verdict.accepted
    assert any("signature" in name for name in failed(verdict))


def test_payload_with_several_gpus(pki_dir: Path, dev_gpu: DevGpu, nonce: bytes) -> None:
    payload = dev_gpu.nvidia_payload(nonce, n_gpus=3)
    checks, gpus = appraise_gpus(payload, nonce=nonce, policy=development_policy(pki_dir),
                                 now=NOW)
    assert all(c.ok for c in checks)
    assert [g.accepted for g in gpus] == [True, True, True]
    _, gpus = appraise_gpus(payload, nonce=nonce, policy=Policy.default(), now=NOW)
    assert not any(g.accepted for g in gpus)


def test_whole_development_provider_report(
    pki_dir: Path, dev_tdx: DevTdx, dev_gpu: DevGpu, nonce: bytes
) -> None:
    """report_data = 20-byte signing address right-padded to 32 bytes, then the nonce."""
    address = bytes.fromhex("11" * 20)
    report = {
        "signing_address": "0x" + address.hex(),
        "signing_algo": "ecdsa",
        "request_nonce": nonce.hex(),
        "intel_quote": dev_tdx.quote(address.ljust(32, b"\0") + nonce).hex(),
        "nvidia_payload": dev_gpu.nvidia_payload(nonce, n_gpus=1),
    }
    base = Policy.from_mapping({"gpu": {"mode": "required"}})
    verdict = verify_provider_report(report, nonce=nonce, policy=development_policy(pki_dir, base),
                                     now=NOW, collateral=dev_tdx.collateral(now=NOW))
    assert verdict.accepted, (failed(verdict), [failed(c) for c in verdict.components])
    assert verdict.development
    rejected = verify_provider_report(report, nonce=nonce, policy=base, now=NOW,
                                      collateral=dev_tdx.collateral(now=NOW))
    assert not rejected.accepted
    replayed = verify_provider_report(report, nonce=os.urandom(32),
                                      policy=development_policy(pki_dir, base), now=NOW,
                                      collateral=dev_tdx.collateral(now=NOW))
    assert not replayed.accepted

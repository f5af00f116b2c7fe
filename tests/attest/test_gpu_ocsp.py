"""Revocation of GPU device chains from OCSP answers: the middle certificates are asked
about (as nvtrust does), a revoked, unknown, missing or stale answer rejects the GPU, and the
answers bound the verdict's validity."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from teegate.attest.gpu import load_device_chain, verify_gpu_evidence
from teegate.attest.gpu_ocsp import OcspStatus, asked_about, certificate_key
from teegate.attest.policy import GpuPolicy, Policy
from teegate.attest.verdict import Verdict
from teegate.sim.gpu import DevGpu

NONCE = bytes(range(32))
NOW = int(time.time())


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> DevGpu:
    return DevGpu.load_or_create(Path(tmp_path_factory.mktemp("ocsp-gpu")))


def _policy(gpu: DevGpu, require: bool) -> Policy:
    base = Policy.default().with_roots(nvidia=(gpu.root_pem,))
    return replace(base, gpu=GpuPolicy(require_ocsp=require))


def _good(gpu: DevGpu, **changes: object) -> dict[str, OcspStatus]:
    chain = load_device_chain(gpu.cert_chain_pem())
    st = replace(OcspStatus("good", NOW - 60, NOW + 3600), **changes)  # type: ignore[arg-type]
    return {certificate_key(c): st for c, _ in asked_about(chain)}


def _verify(gpu: DevGpu, answers: dict[str, OcspStatus] | None, require: bool) -> Verdict:
    return verify_gpu_evidence(gpu.evidence(NONCE), gpu.cert_chain_pem(), nonce=NONCE,
                               policy=_policy(gpu, require), now=NOW, ocsp=answers)


def test_the_middle_certificates_are_asked_about(gpu: DevGpu) -> None:
    chain = load_device_chain(gpu.cert_chain_pem())
    asked = asked_about(chain)
    assert len(chain) == 5
    assert len(asked) == 3
    assert [c for c, _ in asked] == list(chain[1:4])
    assert all(c.issuer == i.subject for c, i in asked)


def test_good_answers_pass_and_bound_the_verdict(gpu: DevGpu) -> None:
    v = _verify(gpu, _good(gpu), require=True)
    assert v.accepted, v.failures
    check = v.check("gpu.0.revocation")
    assert check is not None
    assert "3 device-chain certificate(s)" in check.detail
    assert v.not_after == NOW + 3600  # the answers expire before the certificates


@pytest.mark.parametrize(("answers", "why"), [
    ({"status": "revoked", "revocation_time": NOW - 10, "revocation_reason": "keyCompromise"},
     "is revoked at"),
    ({"status": "unknown"}, "does not know"),
    ({"this_update": NOW - 7200, "next_update": NOW - 3600}, "not at"),
])
def test_bad_answers_reject_the_gpu(gpu: DevGpu, answers: dict[str, object], why: str) -> None:
    for require in (True, False):  # an answer that was fetched is always believed
        v = _verify(gpu, _good(gpu, **answers), require=require)
        assert [c.name for c in v.failures] == ["gpu.0.revocation"]
        assert why in v.failures[0].detail


def test_a_missing_answer_or_none_at_all(gpu: DevGpu) -> None:
    partial = _good(gpu)
    partial.pop(next(iter(partial)))
    v = _verify(gpu, partial, require=False)
    assert [c.name for c in v.failures] == ["gpu.0.revocation"]
    assert "no OCSP answer for" in v.failures[0].detail
    v = _verify(gpu, None, require=True)
    assert [c.name for c in v.failures] == ["gpu.0.revocation"]
    assert "requires NVIDIA OCSP answers" in v.failures[0].detail
    v = _verify(gpu, None, require=False)  # not required and not fetched: no claim either way
    assert v.accepted
    assert v.check("gpu.0.revocation") is None

"""GPU evidence as real fleets send it (issue 13): a report without FWID (older drivers) is
"not compared" as NVIDIA's verifier does, unless the policy requires one; the payload's arch
label must be the chip the device chain names; the policy can fix the GPU count."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from teegate.attest.gpu import appraise_gpus, verify_gpu_evidence
from teegate.attest.policy import GpuPolicy
from teegate.attest.report import verify_quote_evidence
from teegate.sim import DevGpu, development_policy
from tests.attest.gpu_helpers import (
    AUDIT,
    NOW,
    ppcie_nonce,
    ppcie_payload,
    with_gpu,
)
from tests.attest.gpu_helpers import DEFAULT as DEFAULT_POLICY

NONCE = bytes(range(32))


def _by_name(checks: object) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}  # type: ignore[attr-defined]


def test_evidence_without_fwid_is_not_compared_unless_required(tmp_path: Path) -> None:
    """The development GPU stands in for an older driver: no FWID in the signed opaque data
    (no public evidence of one was found; the verifier's skip is nvtrust's own rule)."""
    policy = development_policy(tmp_path, base=AUDIT)
    dev = DevGpu.load_or_create(tmp_path)
    now = int(time.time())
    evidence = dev.evidence(NONCE, with_fwid=False)
    v = verify_gpu_evidence(evidence, dev.cert_chain_pem(), nonce=NONCE, policy=policy, now=now)
    assert v.accepted, v.failures
    fwid = v.check("gpu.0.fwid")
    assert fwid is not None
    assert "not compared" in fwid.detail
    strict = with_gpu(policy, require_fwid=True)
    v = verify_gpu_evidence(evidence, dev.cert_chain_pem(), nonce=NONCE, policy=strict, now=now)
    assert [c.name for c in v.failures] == ["gpu.0.fwid"]
    # With an FWID it is compared either way.
    v = verify_gpu_evidence(dev.evidence(NONCE), dev.cert_chain_pem(), nonce=NONCE,
                            policy=strict, now=now)
    assert v.accepted, v.failures
    assert "equals" in (v.check("gpu.0.fwid") or fwid).detail


@pytest.mark.parametrize(("label", "ok"), [("HOPPER", True), ("hopper", True),
                                           ("BLACKWELL", False)])
def test_payload_arch_is_checked_against_the_device_chain(label: str, ok: bool) -> None:
    """nvtrust's 8-GPU H100 evidence: the arch label is not signed, the chain names GH100."""
    payload = {**ppcie_payload(), "arch": label}
    _, gpus = appraise_gpus(payload, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert [g.accepted for g in gpus] == [ok] * 8
    check = gpus[0].check("gpu.0.arch")
    assert check is not None
    assert "GH100" in check.detail
    if not ok:
        assert [c.name for c in gpus[3].failures] == ["gpu.3.arch"]


@pytest.mark.parametrize(("keep", "ok"), [(8, True), (6, False), (1, False)])
def test_expected_gpu_count(keep: int, ok: bool) -> None:
    payload = ppcie_payload()
    payload = {**payload, "evidence_list": payload["evidence_list"][:keep]}
    policy = with_gpu(AUDIT, expected_count=8)
    checks, _ = appraise_gpus(payload, nonce=ppcie_nonce(), policy=policy, now=NOW)
    assert _by_name(checks)["gpu.count"] is ok
    # Without the field any number passes, as before.
    checks, _ = appraise_gpus(payload, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert "gpu.count" not in _by_name(checks)


def test_expected_count_without_gpu_evidence_fails() -> None:
    policy = dataclasses.replace(AUDIT, gpu=GpuPolicy(expected_count=2))
    checks, _ = appraise_gpus(None, nonce=None, policy=policy, now=NOW)
    assert _by_name(checks) == {"gpu.count": False}
    quote = (Path(__file__).resolve().parent.parent / "data" / "tdx" / "dcap-qvl" /
             "tdx_quote").read_bytes()
    v = verify_quote_evidence(quote, None, policy=policy, now=NOW)
    assert "gpu.count" in {c.name for c in v.failures}


def _driver_545() -> tuple[str, str, list[bytes]]:
    """nvtrust's first H100 sample (driver 545.00, 2023): hex evidence, PEM chain, and the
    driver and VBIOS RIMs published beside it, which describe exactly this GPU."""
    data = Path(__file__).resolve().parent.parent / "data" / "nvidia"
    rims = [(data / "Driver_RIM_test_no_gpu.swidtag").read_bytes(),
            (data / "1010_0200_882_96005E0001_test_no_gpu.swidtag").read_bytes()]
    return ((data / "attestationReport.txt").read_text(),
            (data / "gpuAkCertChain.txt").read_text(), rims)


def test_real_older_driver_evidence_without_fwid() -> None:
    """A genuine H100 report from driver 545.00 carries no FWID: its chain, signature and all
    33 active measurements (against the signed RIMs) verify, the FWID is "not compared", and
    only require_fwid refuses it."""
    evidence, chain, rims = _driver_545()
    policy = with_gpu(AUDIT, require_rim=True)
    v = verify_gpu_evidence(evidence, chain, nonce=None, policy=policy, now=NOW, rims=rims)
    assert v.accepted, v.failures
    checks = {c.name: c.detail for c in v.checks}
    assert "not compared" in checks["gpu.0.fwid"]
    assert "33 active measurements match" in checks["gpu.0.measurements"]
    assert "545.00" in checks["gpu.0.driver_version"]
    strict = with_gpu(policy, require_fwid=True)
    v = verify_gpu_evidence(evidence, chain, nonce=None, policy=strict, now=NOW, rims=rims)
    assert [c.name for c in v.failures] == ["gpu.0.fwid"]


def test_real_older_driver_evidence_answers_nvtrusts_default_nonce() -> None:
    """Its request nonce is nvtrust's constant default (config.py NONCE): refused as a sample
    under the default policy even when the caller claims to have sent it."""
    evidence, chain, _ = _driver_545()
    nonce = bytes.fromhex(evidence.strip()[8:72])
    assert nonce.hex().startswith("4cff7f53")
    v = verify_gpu_evidence(evidence, chain, nonce=nonce, policy=DEFAULT_POLICY, now=NOW)
    assert [c.name for c in v.failures] == ["gpu.0.nonce"]
    assert "sample nonce" in v.failures[0].detail


@pytest.mark.parametrize(("label", "ok"), [("BLACKWELL", True), ("HOPPER", False)])
def test_real_blackwell_evidence_compares_fwids_zero(label: str, ok: bool) -> None:
    """An RTX PRO 6000 Blackwell report (trustee #1551): its leaf carries a TCG DiceTcbInfo
    (2.23.133.5.4.1.1) with two FWIDs; fwids[0] equals the report's, as nvtrust compares."""
    data = Path(__file__).resolve().parent.parent / "data" / "nvidia" / "trustee"
    evidence = (data / "blackwellAttestationReport.txt").read_text()
    chain = (data / "blackwell_cert_chain_case1.txt").read_text()
    v = verify_gpu_evidence(evidence, chain, nonce=None, policy=AUDIT, now=NOW, arch=label)
    checks = {c.name: c for c in v.checks}
    assert checks["gpu.0.fwid"].ok, checks["gpu.0.fwid"].detail
    assert "equals" in checks["gpu.0.fwid"].detail
    assert checks["gpu.0.chain"].ok
    assert checks["gpu.0.signature"].ok
    assert [c.name for c in v.failures] == ([] if ok else ["gpu.0.arch"])
    strict = with_gpu(AUDIT, require_fwid=True)
    assert verify_gpu_evidence(evidence, chain, nonce=None, policy=strict, now=NOW,
                               arch="BLACKWELL").accepted

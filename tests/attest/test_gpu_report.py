"""CPU-GPU binding through the real provider-report path: a development TDX quote binding our
nonce, with development GPU evidence for the same (or another) nonce."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from teegate.attest.binding import fresh_nonce
from teegate.attest.policy import BindingPolicy, GpuPolicy, Policy
from teegate.attest.report import verify_provider_report
from teegate.attest.verdict import Verdict
from teegate.sim.gpu import DevGpu
from teegate.sim.tdx import DevTdx
from tests.attest.test_report import ADDR, node_report


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevTdx, DevGpu]:
    d = Path(tmp_path_factory.mktemp("gpu-report-pki"))
    return DevTdx.load_or_create(d), DevGpu.load_or_create(d)


def _policy(tdx: DevTdx, gpu: DevGpu, mode: str = "required") -> Policy:
    base = Policy.default().with_roots(intel=(tdx.root_pem,), nvidia=(gpu.root_pem,))
    return replace(base, gpu=GpuPolicy(mode=mode))  # type: ignore[arg-type]


def failing(v: Verdict) -> list[str]:
    return [c.name for c in v.failures]


def test_report_with_gpus_for_the_same_nonce_is_accepted(pki: tuple[DevTdx, DevGpu]) -> None:
    tdx, gpu = pki
    now, nonce = int(time.time()), fresh_nonce()
    report = node_report(tdx, nonce, now=now, nvidia_payload=gpu.nvidia_payload(nonce, 4))
    v = verify_provider_report(report, nonce=nonce, policy=_policy(tdx, gpu), now=now)
    assert v.accepted, v.failures
    assert [c.tee for c in v.components] == ["nvidia-gpu"] * 4
    assert v.check("gpu.nonce_binding").ok  # type: ignore[union-attr]
    assert v.development
    assert v.bound_key == ADDR.hex()


def test_gpu_evidence_for_another_nonce_is_not_bound(pki: tuple[DevTdx, DevGpu]) -> None:
    """The CPU quote binds our nonce; the GPU evidence (payload and SPDM) answers another."""
    tdx, gpu = pki
    now, nonce, other = int(time.time()), fresh_nonce(), fresh_nonce()
    report = node_report(tdx, nonce, now=now, nvidia_payload=gpu.nvidia_payload(other, 2))
    v = verify_provider_report(report, nonce=nonce, policy=_policy(tdx, gpu), now=now)
    assert failing(v) == ["gpu.nonce_binding", "gpu.0.nonce", "gpu.1.nonce"]


@pytest.mark.parametrize("same", [True, False])
def test_without_a_caller_nonce_gpu_and_cpu_must_still_answer_one_request(
        pki: tuple[DevTdx, DevGpu], same: bool) -> None:
    """Offline audit of a captured report (no nonce of ours, ``require_nonce`` off): the
    GPU payload's nonce must be the one the CPU quote's report_data binds, else GPU evidence
    from another request could be stapled to this quote."""
    tdx, gpu = pki
    now, nonce = int(time.time()), fresh_nonce()
    report = node_report(tdx, nonce, now=now,
                         nvidia_payload=gpu.nvidia_payload(nonce if same else fresh_nonce(), 2))
    audit = replace(_policy(tdx, gpu), binding=BindingPolicy(require_nonce=False))
    v = verify_provider_report(report, nonce=None, policy=audit, now=now)
    check = v.check("gpu.nonce_binding")
    assert check is not None
    if same:
        assert v.accepted, v.failures
        assert "the nonce the CPU quote binds" in check.detail
    else:
        assert failing(v) == ["gpu.nonce_binding"]
        assert "answer different requests" in check.detail


def test_gpu_mode_in_reports(pki: tuple[DevTdx, DevGpu]) -> None:
    tdx, gpu = pki
    now, nonce = int(time.time()), fresh_nonce()
    bare = node_report(tdx, nonce, now=now)
    v = verify_provider_report(bare, nonce=nonce, policy=_policy(tdx, gpu), now=now)
    assert failing(v) == ["gpu.required"]
    assert verify_provider_report(bare, nonce=nonce, policy=_policy(tdx, gpu, "optional"),
                                  now=now).accepted
    with_gpu = node_report(tdx, nonce, now=now, nvidia_payload=gpu.nvidia_payload(nonce))
    v = verify_provider_report(with_gpu, nonce=nonce, policy=_policy(tdx, gpu, "forbidden"),
                               now=now)
    assert failing(v) == ["gpu.forbidden"]


def test_dev_gpus_need_the_development_root(pki: tuple[DevTdx, DevGpu]) -> None:
    tdx, gpu = pki
    now, nonce = int(time.time()), fresh_nonce()
    report = node_report(tdx, nonce, now=now, nvidia_payload=gpu.nvidia_payload(nonce, 2))
    policy = replace(Policy.default().with_roots(intel=(tdx.root_pem,)),
                     gpu=GpuPolicy(mode="required"))
    v = verify_provider_report(report, nonce=nonce, policy=policy, now=now)
    assert failing(v) == ["gpu.0.chain", "gpu.1.chain"]

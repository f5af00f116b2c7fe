"""Development SNP evidence through teegate's own SNP verifier (``teegate.attest.snp``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.attest.verdict import Verdict
from teegate.sim import DevSnp, development_policy

NOW = int(time.time())
RD = bytes(range(64))


def failed(verdict: Verdict) -> dict[str, str]:
    return {c.name: c.detail for c in verdict.checks if not c.ok}


@pytest.mark.parametrize("version", [3, 5])
def test_accepted_under_development_policy_and_marked(
    pki_dir: Path, dev_snp: DevSnp, version: int
) -> None:
    verdict = verify_report(dev_snp.report(RD, version=version), dev_snp.cert_chain_pem(),
                            policy=development_policy(pki_dir), now=NOW)
    assert verdict.accepted, failed(verdict)
    assert any(c.name == "snp.development_root" and c.ok for c in verdict.checks)
    assert verdict.report_data == RD.hex()


def test_rejected_under_default_policy(dev_snp: DevSnp) -> None:
    verdict = verify_report(dev_snp.report(RD), dev_snp.cert_chain_pem(),
                            policy=Policy.default(), now=NOW)
    assert not verdict.accepted
    assert "snp.ark" in failed(verdict)
    assert not any(c.name == "snp.development_root" and c.ok for c in verdict.checks)


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"debug": True}, "snp.debug"),
        ({"reported_tcb": bytes(8)}, "snp.tcb"),
    ],
)
def test_rejected_cases_name_their_check(
    pki_dir: Path, dev_snp: DevSnp, kwargs: dict, check: str  # type: ignore[type-arg]
) -> None:
    verdict = verify_report(dev_snp.report(RD, **kwargs), dev_snp.cert_chain_pem(),
                            policy=development_policy(pki_dir), now=NOW)
    assert not verdict.accepted
    assert check in failed(verdict)


def test_measurement_policy_is_enforced(pki_dir: Path, dev_snp: DevSnp) -> None:
    base = Policy.from_mapping({"snp": {"measurement": ["11" * 48]}})
    policy = development_policy(pki_dir, base)
    good = verify_report(dev_snp.report(RD, measurement=b"\x11" * 48), dev_snp.cert_chain_pem(),
                         policy=policy, now=NOW)
    bad = verify_report(dev_snp.report(RD), dev_snp.cert_chain_pem(), policy=policy, now=NOW)
    assert good.accepted, failed(good)
    assert not bad.accepted


def test_altered_report_is_rejected(pki_dir: Path, dev_snp: DevSnp) -> None:
    report = bytearray(dev_snp.report(RD))
    report[0x50] ^= 1
    verdict = verify_report(bytes(report), dev_snp.cert_chain_pem(),
                            policy=development_policy(pki_dir), now=NOW)
    assert not verdict.accepted
    assert "snp.report_signature" in failed(verdict)

"""AMD's CRL: when given (the gateway always fetches it) a revoked ASK or VCEK rejects the
report by ``snp.revocation``; a CRL not signed by the chain's ARK, or not current, is
refused; a policy can require one."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.errors import EvidenceError
from teegate.sim.snp import DevSnp

NOW = int(time.time())


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevSnp:
    return DevSnp.load_or_create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def policy(dev: DevSnp) -> Policy:
    return Policy.default().with_roots(amd=(dev.ark_pem,))


def _verify(dev: DevSnp, policy: Policy, crl: bytes | None) -> list[str]:
    v = verify_report(dev.report(b"r" * 64), dev.cert_chain_pem(), policy=policy, now=NOW,
                      crl=crl)
    return [c.name for c in v.failures]


def test_a_current_crl_without_our_certificates_passes(dev: DevSnp, policy: Policy) -> None:
    v = verify_report(dev.report(b"r" * 64), dev.cert_chain_pem(), policy=policy, now=NOW,
                      crl=dev.crl(now=NOW - 60))
    assert v.accepted, v.failures
    check = v.check("snp.revocation")
    assert check is not None
    assert check.ok


@pytest.mark.parametrize("role", ["ask", "vcek"])
def test_a_revoked_certificate_rejects_the_report(dev: DevSnp, policy: Policy,
                                                  role: str) -> None:
    assert _verify(dev, policy, dev.crl(revoke=(role,), now=NOW - 60)) == ["snp.revocation"]


def test_a_crl_that_is_stale_or_from_the_future_is_refused(dev: DevSnp, policy: Policy) -> None:
    assert _verify(dev, policy, dev.crl(now=NOW - 10 * 86400)) == ["snp.revocation"]
    assert _verify(dev, policy, dev.crl(now=NOW + 3600)) == ["snp.revocation"]


def test_a_crl_signed_by_another_ark_is_refused(dev: DevSnp, policy: Policy,
                                                tmp_path: Path) -> None:
    other = DevSnp.load_or_create(tmp_path)
    assert _verify(dev, policy, other.crl(revoke=(), now=NOW - 60)) == ["snp.revocation"]


def test_policy_can_require_a_crl(dev: DevSnp, policy: Policy) -> None:
    strict = replace(policy, snp=replace(policy.snp, require_crl=True))
    assert _verify(dev, strict, None) == ["snp.revocation"]
    assert _verify(dev, strict, dev.crl(now=NOW - 60)) == []
    assert _verify(dev, policy, None) == []  # not required: no check


def test_garbage_crl_is_an_evidence_error(dev: DevSnp, policy: Policy) -> None:
    with pytest.raises(EvidenceError, match="CRL"):
        _verify(dev, policy, b"not a crl")

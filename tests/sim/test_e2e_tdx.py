"""Development TDX quotes through teegate's own TDX verifier (``teegate.attest.tdx``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.attest.tdx import verify_quote
from teegate.attest.verdict import Verdict
from teegate.sim import DevTdx, development_policy

NOW = int(time.time())
RD = bytes(range(64))


def failed(verdict: Verdict) -> dict[str, str]:
    return {c.name: c.detail for c in verdict.checks if not c.ok}


@pytest.fixture(scope="module")
def collateral(dev_tdx: DevTdx) -> str:
    return dev_tdx.collateral(now=NOW)


def test_accepted_under_development_policy_and_marked(
    pki_dir: Path, dev_tdx: DevTdx, collateral: str
) -> None:
    verdict = verify_quote(dev_tdx.quote(RD), collateral, policy=development_policy(pki_dir),
                           now=NOW)
    assert verdict.accepted, failed(verdict)
    assert verdict.tcb_status == "UpToDate"
    assert any(c.name == "tdx.development_root" and c.ok for c in verdict.checks)
    assert verdict.report_data == RD.hex()


def test_rejected_under_default_policy(dev_tdx: DevTdx, collateral: str) -> None:
    verdict = verify_quote(dev_tdx.quote(RD), collateral, policy=Policy.default(), now=NOW)
    assert not verdict.accepted
    assert "tdx.root" in failed(verdict)
    assert not any(c.name == "tdx.development_root" and c.ok for c in verdict.checks)


@pytest.mark.parametrize(
    ("status", "accepted"),
    [("UpToDate", True), ("SWHardeningNeeded", True), ("ConfigurationNeeded", False),
     ("OutOfDate", False), ("Revoked", False)],
)
def test_tcb_status_follows_the_production_defaults(
    pki_dir: Path, dev_tdx: DevTdx, collateral: str, status: str, accepted: bool
) -> None:
    verdict = verify_quote(dev_tdx.quote(RD, tcb_status=status), collateral,
                           policy=development_policy(pki_dir), now=NOW)
    assert verdict.accepted is accepted, failed(verdict)
    if not accepted:
        assert "tdx.tcb_status" in failed(verdict)


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [({"debug": True}, "tdx.debug"), ({"mrtd": bytes(48)}, "tdx.mrtd")],
)
def test_rejected_cases_name_their_check(
    pki_dir: Path, dev_tdx: DevTdx, collateral: str, kwargs: dict, check: str  # type: ignore[type-arg]
) -> None:
    base = Policy.from_mapping({"tdx": {"mrtd": ["11" * 48]}})
    policy = development_policy(pki_dir, base)
    good = verify_quote(dev_tdx.quote(RD, mrtd=b"\x11" * 48), collateral, policy=policy, now=NOW)
    assert good.accepted, failed(good)
    verdict = verify_quote(dev_tdx.quote(RD, **({"mrtd": b"\x11" * 48} | kwargs)), collateral,
                           policy=policy, now=NOW)
    assert not verdict.accepted
    assert check in failed(verdict)


def test_altered_report_data_is_rejected(pki_dir: Path, dev_tdx: DevTdx, collateral: str) -> None:
    quote = bytearray(dev_tdx.quote(RD))
    quote[568] ^= 1
    verdict = verify_quote(bytes(quote), collateral, policy=development_policy(pki_dir), now=NOW)
    assert not verdict.accepted
    assert "tdx.quote_signature" in failed(verdict)


def test_expired_collateral_is_rejected(pki_dir: Path, dev_tdx: DevTdx) -> None:
    old = dev_tdx.collateral(now=NOW - 40 * 86400)
    verdict = verify_quote(dev_tdx.quote(RD), old, policy=development_policy(pki_dir), now=NOW)
    assert not verdict.accepted

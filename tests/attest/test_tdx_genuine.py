"""Genuine TDX evidence teegate used to refuse: trailing bytes, TD attributes a policy admits,
and verdicts that say which checks passed before dcap-qvl stopped (issue 13, classes 1, 8, 9).

Vectors: tests/data/tdx/PROVENANCE.md (go-tdx-guest/ and zkdcap/).
"""

from __future__ import annotations

from dataclasses import replace

import dcap_qvl
import pytest

from teegate.attest.policy import Policy, TcbPolicy, TdxPolicy
from teegate.attest.tdx import parse_quote, verify_quote
from teegate.attest.tdx_collateral import parse_collateral
from teegate.attest.tdx_tcb import tdx_tcb_status
from tests.attest.test_tdx import read, text

SPR_E4 = "go-tdx-guest/tdx_prod_quote_SPR_E4.dat"
SPR_E4_COLLATERAL = "go-tdx-guest/spr_e4_collateral_assembled.json"
SPR_E4_NOW = 1688173200  # 2023-07-01T01:00:00Z, go-tdx-guest verify_test.go currentTime
NO_SEPT = "zkdcap/types_quote_v4.dat"
ZK_COLLATERAL = "zkdcap/collateral_tdx_00806f050000_assembled.json"
ZK_NOW = 1740048927
SIGNATURE_STEPS = ["tdx.root", "tdx.tcb_info", "tdx.qe_identity", "tdx.pck_chain",
                   "tdx.qe_report_signature", "tdx.qe_report_data", "tdx.qe_enclave",
                   "tdx.quote_signature"]


def _passed(verdict: object) -> list[str]:
    return [c.name for c in verdict.checks if c.ok]  # type: ignore[attr-defined]


def test_trailing_bytes_are_judged_on_content_and_reported() -> None:
    """go-tdx-guest's production quote carries 39 bytes of text after the PCK chain."""
    raw = read(SPR_E4)
    quote = parse_quote(raw)
    assert quote.trailing == b"\nextra bytes(only for testing purpose)\n"
    v = verify_quote(raw, text(SPR_E4_COLLATERAL), policy=Policy.default(), now=SPR_E4_NOW)
    note = v.check("tdx.trailing_bytes")
    assert note is not None
    assert note.ok
    assert "39 bytes follow the quote" in note.detail
    # Judged on its content: every signature verifies; the 2023 sample TCB info Google
    # ships beside it lists no level this platform reaches, which is what rejects it.
    assert [c.name for c in v.failures] == ["tdx.tcb_level"]
    assert set(SIGNATURE_STEPS) <= set(_passed(v))


def test_zero_padding_is_reported_as_padding() -> None:
    v = verify_quote(read("go-tdx-guest/cos-113-tdx-quote.dat"), text(ZK_COLLATERAL),
                     policy=Policy.default(), now=ZK_NOW)
    assert v.accepted, v.failures
    note = v.check("tdx.trailing_bytes")
    assert note is not None
    assert note.detail.startswith("3065 zero bytes of padding")


def test_dcap_stop_on_td_attributes_still_shows_the_passed_checks() -> None:
    v = verify_quote(read(NO_SEPT), text(ZK_COLLATERAL), policy=Policy.default(), now=ZK_NOW)
    assert [c.name for c in v.failures] == ["tdx.td_attributes"]
    assert "tdx.require_sept_ve_disable" in v.failures[0].detail
    assert _passed(v) == [*SIGNATURE_STEPS, "tdx.tcb_level"]


def test_policy_admits_a_td_without_sept_ve_disable_knowingly() -> None:
    lax = replace(Policy.default(), tdx=TdxPolicy(require_sept_ve_disable=False),
                  tcb=TcbPolicy(allowed_statuses=frozenset({"UpToDate", "OutOfDate"})))
    v = verify_quote(read(NO_SEPT), text(ZK_COLLATERAL), policy=lax, now=ZK_NOW)
    assert v.accepted, v.failures
    td = v.check("tdx.td_attributes")
    assert td is not None
    assert "admitted by policy tdx.require_sept_ve_disable = false" in td.detail
    # PCK CPU SVN 07 07 02 02 03 01 00 03 and TEE_TCB_SVN 04 01 07: the level dcap-qvl rates
    # UpToDate for go-tdx-guest's COS quote with the same SVNs (test below).
    assert (v.tcb_status, v.advisory_ids) == ("UpToDate", ())
    # Only the named rule is relaxed: the status policy still decides.
    only_uptodate = replace(lax, tcb=TcbPolicy(allowed_statuses=frozenset({"OutOfDate"})))
    v = verify_quote(read(NO_SEPT), text(ZK_COLLATERAL), policy=only_uptodate, now=ZK_NOW)
    assert [c.name for c in v.failures] == ["tdx.tcb_status"]


def test_service_td_rule_names_its_policy_field() -> None:
    """A v5 quote with MRSERVICETD set cannot be re-signed, so the rule is shown on the TD
    report itself; the dev-PKI path in test_tdx.py covers the verdict."""
    from teegate.attest.tdx_tcb import attribute_problems

    td = parse_quote(read("dcap-qvl/tdx_quote_outdated")).td_report
    assert td is not None
    assert td.mrservicetd == bytes(48)
    bound = replace(td, mrservicetd=b"\x01" + bytes(47))
    assert "service_td" in attribute_problems(bound)
    assert "service_td" not in attribute_problems(td)


# Every vector dcap-qvl accepts: teegate's recomputed status must equal dcap-qvl's.
AGREE = [
    ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1752919234),
    ("dcap-qvl/near_quote_hex.txt", "dcap-qvl/near_quote_collateral.json", 1759388630),
    ("dstack/verifier_fixtures_quote-report.quote.bin",
     "dcap-qvl/tdx_quote_outdated_collateral.json", 1774003274),
    ("zkdcap/quote_tdx_00806f050000.dat", ZK_COLLATERAL, ZK_NOW),
    ("go-tdx-guest/cos-113-tdx-quote.dat", ZK_COLLATERAL, ZK_NOW),
]


@pytest.mark.parametrize(("name", "collateral", "now"), AGREE)
def test_recomputed_tcb_status_equals_dcap_qvl(name: str, collateral: str, now: int) -> None:
    from teegate.attest.tdx import load_quote

    raw = load_quote(read(name))
    col = parse_collateral(text(collateral))
    theirs = dcap_qvl.verify(raw, col.qvl, now)
    quote = parse_quote(raw)
    assert quote.pck_chain_pem is not None
    ext = dcap_qvl.parse_pck_extension_from_pem(quote.pck_chain_pem)
    ours = tdx_tcb_status(quote, col.tcb_info, col.qe_identity, bytes(ext.cpu_svn),
                          int(ext.pce_svn))
    assert (ours.status, list(ours.advisories)) == (theirs.status, list(theirs.advisory_ids))

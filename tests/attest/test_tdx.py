"""Intel TDX / SGX quotes: every vector gives exactly its documented result (PROVENANCE.md)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.attest.policy import Policy, TcbPolicy, TdxPolicy
from teegate.attest.tdx import dcap_error_check, load_quote, parse_quote, verify_quote
from teegate.attest.tdx_collateral import INTEL_ROOT_SHA256, intel_root_der
from teegate.errors import EvidenceError
from teegate.sim.tdx import DevTdx

DATA = Path(__file__).resolve().parent.parent / "data" / "tdx"
POLICY = Policy.default()


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def text(name: str) -> str:
    return (DATA / name).read_text()


def allow(*statuses: str) -> Policy:
    return replace(POLICY, tcb=TcbPolicy(allowed_statuses=frozenset(statuses)))


# (quote, collateral, now, tcb status, advisories) — PROVENANCE.md "Verification summary".
ACCEPTED = [
    ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1752919234, "UpToDate", ()),
    ("dcap-qvl/near_quote_hex.txt", "dcap-qvl/near_quote_collateral.json", 1759388630,
     "UpToDate", ()),
    ("dstack/verifier_fixtures_quote-report.quote.bin",
     "dcap-qvl/tdx_quote_outdated_collateral.json", 1774003274, "UpToDate", ()),
]
# Valid under dcap-qvl, but a TCB status the default policy does not allow.
STATUS_REJECTED = [
    ("dcap-qvl/sgx_quote", "dcap-qvl/sgx_quote_collateral.json", 1752919277, "sgx",
     "ConfigurationAndSWHardeningNeeded", ("INTEL-SA-00289", "INTEL-SA-00615")),
    ("zkdcap/quote_tdx_00806f050000.dat", "zkdcap/collateral_tdx_00806f050000_assembled.json",
     1740048927, "tdx", "OutOfDate", ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")),
]
# Negative vectors and the check that must reject them.
REJECTED = [
    ("dcap-qvl/tdx_quote_outdated", "dcap-qvl/tdx_quote_outdated_collateral.json", 1774003274,
     "tdx.tcb_level", "No matching TCB level found"),
    ("zkdcap/types_quote_v4.dat", "zkdcap/collateral_tdx_00806f050000_assembled.json",
     1740048927, "tdx.td_attributes", "SEPT_VE_DISABLE is not enabled"),
    ("dstack/ra-tls_assets_tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1752919234,
     "tdx.tcb_level", "No matching TCB level found"),
    ("dcap-qvl/tdx-quote.hex", "dcap-qvl/tdx_quote_collateral.json", 1752919234,
     "tdx.tcb_level", "No matching TCB level found"),
    ("dcap-qvl/quote-from-tappd.hex", "dcap-qvl/tdx_quote_collateral.json", 1752919234,
     "tdx.tcb_level", "No matching TCB level found"),
    # Wrong time or wrong collateral for a good quote.
    ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1752919234 + 40 * 86400,
     "tdx.tcb_info", "TCBInfo expired"),
    ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1750000000,
     "tdx.tcb_info", "TCBInfo issue date is in the future"),
    ("dcap-qvl/tdx_quote", "dcap-qvl/near_quote_collateral.json", 1759388630,
     "tdx.fmspc", "Fmspc mismatch"),
    ("dcap-qvl/tdx_quote", "dcap-qvl/sgx_quote_collateral.json", 1752919277,
     "tdx.qe_identity", "QE Identity"),
    # Collateral outside the PCK leaf's validity (PROVENANCE #12): parse and replay only.
    ("dstack/verifier_fixtures_tdx-lite-getquote.quote.bin",
     "dcap-qvl/tdx_quote_outdated_collateral.json", 1774003274, "tdx.pck_chain",
     "CertNotValidYet"),
]


@pytest.mark.parametrize(("quote", "collateral", "now", "status", "advisories"), ACCEPTED)
def test_accepted_vectors(
    quote: str, collateral: str, now: int, status: str, advisories: tuple[str, ...]
) -> None:
    v = verify_quote(read(quote), text(collateral), policy=POLICY, now=now)
    assert v.accepted, v.failures
    assert v.tee == "tdx"
    assert (v.tcb_status, v.advisory_ids) == (status, advisories)
    assert not v.development
    # The documented now is the last second of the collateral window.
    assert v.not_after == now + 1
    assert v.not_before is not None
    assert v.not_before < now
    for name in ("tdx.root", "tdx.quote_signature", "tdx.qe_report_signature", "tdx.pck_chain",
                 "tdx.tcb_info", "tdx.qe_identity", "tdx.tcb_status", "tdx.debug"):
        check = v.check(name)
        assert check is not None, name
        assert check.ok, name
    q = parse_quote(load_quote(read(quote)))
    assert q.td_report is not None
    assert v.measurements["mrtd"] == q.td_report.mrtd.hex()
    assert v.report_data == q.report_data.hex()
    assert v.identity["ca"] == "platform"


def test_dcap_qvl_alone_agrees_on_accepted_vectors() -> None:
    for quote, collateral, now, status, advisories in ACCEPTED:
        col = dcap_qvl.QuoteCollateralV3.from_json(text(collateral))
        r = dcap_qvl.verify(load_quote(read(quote)), col, now)
        assert (r.status, tuple(r.advisory_ids)) == (status, advisories)


@pytest.mark.parametrize(
    ("quote", "collateral", "now", "tee", "status", "advisories"), STATUS_REJECTED
)
def test_status_is_policy(
    quote: str, collateral: str, now: int, tee: str, status: str, advisories: tuple[str, ...]
) -> None:
    v = verify_quote(read(quote), text(collateral), policy=POLICY, now=now)
    assert not v.accepted
    assert v.tee == tee
    assert (v.tcb_status, v.advisory_ids) == (status, advisories)
    assert [c.name for c in v.failures] == [f"{tee}.tcb_status"]
    # The same evidence is accepted by a policy that allows the status ...
    ok = verify_quote(read(quote), text(collateral), policy=allow(status), now=now)
    assert ok.accepted, ok.failures
    # ... unless it rejects one of the advisories.
    strict = replace(allow(status).tcb, rejected_advisories=frozenset({advisories[-1]}))
    v2 = verify_quote(read(quote), text(collateral), policy=replace(POLICY, tcb=strict), now=now)
    assert [c.name for c in v2.failures] == [f"{tee}.advisories"]


@pytest.mark.parametrize(("quote", "collateral", "now", "check", "message"), REJECTED)
def test_rejected_vectors(quote: str, collateral: str, now: int, check: str, message: str) -> None:
    v = verify_quote(read(quote), text(collateral), policy=POLICY, now=now)
    assert not v.accepted
    assert [c.name for c in v.failures] == [check]
    assert message in v.failures[0].detail
    assert v.tcb_status is None


def test_sgx_quote_fields_and_identity() -> None:
    v = verify_quote(read("dcap-qvl/sgx_quote"), text("dcap-qvl/sgx_quote_collateral.json"),
                     policy=allow("ConfigurationAndSWHardeningNeeded"), now=1752919277)
    assert v.accepted
    assert v.tee == "sgx"
    assert v.identity == {"fmspc": "00a067110000", "ca": "processor"}
    q = parse_quote(read("dcap-qvl/sgx_quote"))
    assert q.sgx_report is not None
    assert v.measurements["mrenclave"] == q.sgx_report.mrenclave.hex()
    assert v.check("sgx.quote_signature") is not None


def test_measurement_policy() -> None:
    quote, collateral, now = read("dcap-qvl/tdx_quote"), text(
        "dcap-qvl/tdx_quote_collateral.json"), 1752919234
    q = parse_quote(quote)
    assert q.td_report is not None
    good = TdxPolicy(mrtd=frozenset({q.td_report.mrtd.hex()}),
                     rtmr0=frozenset({q.td_report.rtmr0.hex()}),
                     mrconfigid=frozenset({"00" * 48}))
    v = verify_quote(quote, collateral, policy=replace(POLICY, tdx=good), now=now)
    assert v.accepted
    assert v.check("tdx.mrtd") is not None
    assert v.check("tdx.rtmr0") is not None
    bad = replace(good, rtmr2=frozenset({"ab" * 48}))
    v = verify_quote(quote, collateral, policy=replace(POLICY, tdx=bad), now=now)
    assert [c.name for c in v.failures] == ["tdx.rtmr2"]
    sgx_bad = replace(allow("ConfigurationAndSWHardeningNeeded"),
                      tdx=TdxPolicy(mrsigner=frozenset({"00" * 32})))
    v = verify_quote(read("dcap-qvl/sgx_quote"), text("dcap-qvl/sgx_quote_collateral.json"),
                     policy=sgx_bad, now=1752919277)
    assert [c.name for c in v.failures] == ["sgx.mrsigner"]


def test_collateral_age_policy() -> None:
    quote, collateral, now = read("dcap-qvl/tdx_quote"), text(
        "dcap-qvl/tdx_quote_collateral.json"), 1752919234
    young = replace(POLICY, tcb=replace(POLICY.tcb, max_collateral_age=31 * 86400))
    assert verify_quote(quote, collateral, policy=young, now=now).accepted
    old = replace(POLICY, tcb=replace(POLICY.tcb, max_collateral_age=7 * 86400))
    v = verify_quote(quote, collateral, policy=old, now=now)
    assert [c.name for c in v.failures] == ["tdx.collateral_age"]


@pytest.mark.parametrize("collateral", ["", "not json", "[]", '{"tcb_info": 1}', "{}"])
def test_unusable_collateral_is_a_failing_check(collateral: str) -> None:
    v = verify_quote(read("dcap-qvl/tdx_quote"), collateral, policy=POLICY, now=1752919234)
    assert [c.name for c in v.failures] == ["tdx.collateral"]


def test_pinned_root_is_intels_and_dcap_qvls() -> None:
    der = intel_root_der()
    assert hashlib.sha256(der).hexdigest() == INTEL_ROOT_SHA256
    assert der == read("zkdcap/Intel_SGX_Provisioning_Certification_RootCA.cer")
    quote = read("dcap-qvl/tdx_quote")
    pem = parse_quote(quote).pck_chain_pem
    assert pem is not None
    chain = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))
    assert chain[-1].public_bytes(Encoding.DER) == der
    col = dcap_qvl.QuoteCollateralV3.from_json(text("dcap-qvl/tdx_quote_collateral.json"))
    ours = dcap_qvl.verify_with_root_ca(quote, col, der, 1752919234)
    builtin = dcap_qvl.verify(quote, col, 1752919234)
    assert ours.to_json() == builtin.to_json()


def test_error_mapping_covers_documented_messages() -> None:
    table = {
        "Verification failed: TCBInfo expired": "tcb_info",
        "Verification failed: ISV enclave report signature is invalid": "quote_signature",
        "Verification failed: Signature is invalid for qe_report in quote": "qe_report_signature",
        "Verification failed: No matching TCB level found": "tcb_level",
        "Verification failed: Debug mode is enabled": "debug",
        "Verification failed: SEPT_VE_DISABLE is not enabled": "td_attributes",
        "Verification failed: TCB status is invalid: Revoked": "tcb_status",
        "Verification failed: QE Identity expired": "qe_identity",
        "Verification failed: Fmspc mismatch": "fmspc",
        "Verification failed: Failed to verify certificate chain\n\nCaused by:\n    CertRevoked":
            "pck_chain",
        "Verification failed: something new": "dcap",
    }
    for message, suffix in table.items():
        assert dcap_error_check(message)[0] == suffix, message


# ---------------------------------------------------------------- development root (sim)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevTdx:
    return DevTdx.load_or_create(tmp_path_factory.mktemp("devpki"))


def test_development_root_needs_the_policy(dev: DevTdx) -> None:
    now = int(time.time())
    quote, collateral = dev.quote(b"hello"), dev.collateral(now=now)
    v = verify_quote(quote, collateral, policy=POLICY, now=now)
    assert [c.name for c in v.failures] == ["tdx.root"]
    assert "neither Intel's" in v.failures[0].detail
    dev_policy = POLICY.with_roots(intel=(dev.root_pem,))
    v = verify_quote(quote, collateral, policy=dev_policy, now=now)
    assert v.accepted
    assert v.development
    mark = v.check("tdx.development_root")
    assert mark is not None
    assert mark.ok
    assert "not Intel's" in mark.detail
    # Real quotes still verify against Intel's root under a policy with a development root.
    real = verify_quote(read("dcap-qvl/tdx_quote"), text("dcap-qvl/tdx_quote_collateral.json"),
                        policy=dev_policy, now=1752919234)
    assert real.accepted
    assert not real.development


def test_development_quote_rejections(dev: DevTdx) -> None:
    now = int(time.time())
    policy = POLICY.with_roots(intel=(dev.root_pem,))
    collateral = dev.collateral(now=now)

    def failures(quote: bytes, col: str = collateral) -> list[str]:
        return [c.name for c in verify_quote(quote, col, policy=policy, now=now).failures]

    assert failures(dev.quote(b"x", debug=True)) == ["tdx.debug"]
    assert failures(dev.quote(b"x", tcb_status="Revoked")) == ["tdx.tcb_status"]
    assert failures(dev.quote(b"x", tcb_status="OutOfDate")) == ["tdx.tcb_status"]
    assert failures(dev.quote(b"x", tcb_status="SWHardeningNeeded")) == []
    assert failures(dev.quote(b"x"), dev.collateral(now=now, revoke_pck=True)) == [
        "tdx.pck_chain"]
    # A quote signed under the dev PKI cannot borrow Intel's collateral.
    assert failures(dev.quote(b"x"), text("dcap-qvl/tdx_quote_collateral.json")) != []


def test_verdict_json_round_trip() -> None:
    v = verify_quote(read("dcap-qvl/tdx_quote"), text("dcap-qvl/tdx_quote_collateral.json"),
                     policy=POLICY, now=1752919234)
    body = v.to_json()
    assert body["accepted"] is True
    assert body["tee"] == "tdx"
    assert all(value == value.lower() for value in body["measurements"].values())


def test_malformed_quote_is_evidence_error() -> None:
    with pytest.raises(EvidenceError):
        verify_quote(b"\x04\x00" + bytes(100), text("dcap-qvl/tdx_quote_collateral.json"),
                     policy=POLICY, now=1752919234)


# ------------------------------------------------------------------ review R3 (fail-open hunt)


def _resign(dev: DevTdx, signed: bytes) -> bytes:
    """A development quote whose header+body were edited, signed again by the dev QE."""
    from teegate.sim.tdx import _rs

    return signed + dev._signature_data(_rs(dev._keys.attestation, signed, 32))


def _with_td_attributes(dev: DevTdx, attributes: int) -> bytes:
    signed = bytearray(dev.quote(b"x")[: 48 + 584])
    signed[48 + 120 : 48 + 128] = attributes.to_bytes(8, "little")
    return _resign(dev, bytes(signed))


def _v5(dev: DevTdx, mrservicetd: bytes) -> bytes:
    """A v5 quote with a TD report 1.5 body (TEE_TCB_SVN2 = TEE_TCB_SVN)."""
    signed = dev.quote(b"x")[: 48 + 584]
    body = signed[48:]
    header = (5).to_bytes(2, "little") + signed[2:48]
    return _resign(dev, header + (3).to_bytes(2, "little") + (648).to_bytes(4, "little")
                   + body + body[:16] + mrservicetd)


def test_td_attributes_and_mrservicetd(dev: DevTdx) -> None:
    now = int(time.time())
    policy = POLICY.with_roots(intel=(dev.root_pem,))
    col = dev.collateral(now=now)

    def failures(quote: bytes, pol: Policy = policy) -> list[str]:
        return [c.name for c in verify_quote(quote, col, policy=pol, now=now).failures]

    sept = 1 << 28
    assert failures(_with_td_attributes(dev, sept)) == []
    assert failures(_with_td_attributes(dev, 0)) == ["tdx.td_attributes"]
    assert failures(_with_td_attributes(dev, sept | 1 << 29)) == ["tdx.td_attributes"]
    # allow_debug is for SEV-SNP; a debug TD is refused whatever the policy says.
    lax = replace(policy, tcb=replace(policy.tcb, allow_debug=True))
    assert failures(_with_td_attributes(dev, sept | 1), lax) == ["tdx.debug"]
    ok = verify_quote(_v5(dev, bytes(48)), col, policy=policy, now=now)
    assert ok.accepted, ok.failures
    assert ok.measurements["mrservicetd"] == "00" * 48
    assert failures(_v5(dev, b"\x01" + bytes(47))) == ["tdx.td_attributes"]


def test_td_attributes_checked_by_teegate_too(dev: DevTdx, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """If a dcap-qvl release stopped enforcing TD attributes (cf. dcap-qvl #125 for TCB
    statuses), teegate's own checks still refuse the TD."""
    now = int(time.time())
    policy = POLICY.with_roots(intel=(dev.root_pem,))
    col = dev.collateral(now=now)
    genuine = verify_quote(dev.quote(b"x"), col, policy=policy, now=now)
    assert genuine.accepted

    class Lenient:
        status = "UpToDate"
        advisory_ids: tuple[str, ...] = ()

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", lambda *a: Lenient())
    cases = {
        "no SEPT_VE_DISABLE": (_with_td_attributes(dev, 0), "tdx.td_attributes"),
        "debug": (_with_td_attributes(dev, 1 << 28 | 1), "tdx.debug"),
        "service TD": (_v5(dev, b"\x01" + bytes(47)), "tdx.td_attributes"),
    }
    for label, (quote, check) in cases.items():
        v = verify_quote(quote, col, policy=policy, now=now)
        assert check in [c.name for c in v.failures], label


def test_measurements_pinned_for_another_tee_reject_this_one() -> None:
    """A policy that pins only SGX enclaves (or only SEV-SNP / only TDX measurements) must not
    accept a quote of another kind with whatever it measured."""
    from teegate.attest.policy import SnpPolicy

    tdx_args = (read("dcap-qvl/tdx_quote"), text("dcap-qvl/tdx_quote_collateral.json"))
    sgx_args = (read("dcap-qvl/sgx_quote"), text("dcap-qvl/sgx_quote_collateral.json"))
    sgx_ok = allow("ConfigurationAndSWHardeningNeeded")
    q = parse_quote(tdx_args[0])
    assert q.td_report is not None
    mrtd = q.td_report.mrtd.hex()
    only_sgx = replace(POLICY, tdx=TdxPolicy(mrenclave=frozenset({"00" * 32})))
    v = verify_quote(*tdx_args, policy=only_sgx, now=1752919234)
    assert [c.name for c in v.failures] == ["tdx.measurements"]
    only_snp = replace(POLICY, snp=SnpPolicy(measurement=frozenset({"00" * 48})))
    v = verify_quote(*tdx_args, policy=only_snp, now=1752919234)
    assert [c.name for c in v.failures] == ["tdx.measurements"]
    only_tdx = replace(sgx_ok, tdx=TdxPolicy(mrtd=frozenset({mrtd})))
    v = verify_quote(*sgx_args, policy=only_tdx, now=1752919277)
    assert [c.name for c in v.failures] == ["sgx.measurements"]
    # A policy that pins both kinds checks each quote against its own kind's values.
    both = replace(POLICY, tdx=TdxPolicy(mrtd=frozenset({mrtd}),
                                         mrenclave=frozenset({"00" * 32})))
    assert verify_quote(*tdx_args, policy=both, now=1752919234).accepted


def test_collateral_age_counts_the_pck_crl() -> None:
    """max_collateral_age also bounds the PCK CRL (revocation data), which in this vector is
    928 s older than the TCB info."""
    quote, collateral, now = read("dcap-qvl/tdx_quote"), text(
        "dcap-qvl/tdx_quote_collateral.json"), 1752919234
    tcb_issue = 1750328163  # 2025-06-19T10:16:03Z, the older of TCB info and QE identity
    limit = replace(POLICY, tcb=replace(POLICY.tcb, max_collateral_age=now - tcb_issue))
    v = verify_quote(quote, collateral, policy=limit, now=now)
    assert [c.name for c in v.failures] == ["tdx.collateral_age"]
    assert "PCK CRL" in v.failures[0].detail
    wider = replace(POLICY, tcb=replace(POLICY.tcb, max_collateral_age=now - tcb_issue + 928))
    assert verify_quote(quote, collateral, policy=wider, now=now).accepted


def test_pck_crl_from_another_ca_does_not_stand_in() -> None:
    """Collateral may come from the provider: a PCK CRL of the other PCK CA (which cannot list
    this PCK certificate) or the root CA CRL must not pass as this chain's revocation data."""
    import json

    sgx = json.loads(text("dcap-qvl/sgx_quote_collateral.json"))  # PCK Processor CA
    tdx = json.loads(text("dcap-qvl/tdx_quote_collateral.json"))  # PCK Platform CA
    policy = allow("ConfigurationAndSWHardeningNeeded")
    for swapped in (
        dict(sgx, pck_crl=tdx["pck_crl"], pck_crl_issuer_chain=tdx["pck_crl_issuer_chain"]),
        dict(sgx, pck_crl=sgx["root_ca_crl"], pck_crl_issuer_chain=sgx["tcb_info_issuer_chain"]),
    ):
        v = verify_quote(read("dcap-qvl/sgx_quote"), json.dumps(swapped), policy=policy,
                         now=1752919277)
        assert [c.name for c in v.failures] == ["sgx.pck_chain"]
        assert "UnknownRevocationStatus" in v.failures[0].detail


def test_verdict_never_accepted_outside_its_window(dev: DevTdx,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if dcap-qvl passed a quote at a time outside the collateral window (a lenient
    release, or a part it does not check), teegate's own tdx.validity check refuses it."""
    now = int(time.time())
    policy = POLICY.with_roots(intel=(dev.root_pem,))
    quote, collateral = dev.quote(b"x"), dev.collateral(now=now)
    v = verify_quote(quote, collateral, policy=policy, now=now)
    assert v.accepted
    check = v.check("tdx.validity")
    assert check is not None
    assert check.ok

    class Lenient:
        status = "UpToDate"
        advisory_ids: tuple[str, ...] = ()

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", lambda *a: Lenient())
    assert v.not_after is not None
    late = verify_quote(quote, collateral, policy=policy, now=v.not_after + 1)
    assert [c.name for c in late.failures] == ["tdx.validity"]


def test_confidential_ai_provenance_time_for_tdx_quote() -> None:
    """confidential-ai/PROVENANCE.md re-checks dcap-qvl's tdx_quote at now 1750377600."""
    v = verify_quote(read("dcap-qvl/tdx_quote"), text("dcap-qvl/tdx_quote_collateral.json"),
                     policy=POLICY, now=1750377600)
    assert v.accepted, v.failures
    assert v.tcb_status == "UpToDate"
    # dcap-qvl's own example time is before the TCB info was issued.
    v = verify_quote(read("dcap-qvl/tdx_quote"), text("dcap-qvl/tdx_quote_collateral.json"),
                     policy=POLICY, now=1750320802)
    assert [c.name for c in v.failures] == ["tdx.tcb_info"]


def test_quote_alone_cannot_meet_dstack_or_gpu_requirements() -> None:
    """verify_quote sees no event log and no GPU evidence: a policy asking for either must
    not be met by a quote alone (callers use verify_quote_evidence / verify_provider_report)."""
    from teegate.attest.policy import DstackPolicy, GpuPolicy

    quote, collateral, now = read("dcap-qvl/tdx_quote"), text(
        "dcap-qvl/tdx_quote_collateral.json"), 1752919234
    for policy in (
        replace(POLICY, dstack=DstackPolicy(compose_hashes=frozenset({"ab" * 32}))),
        replace(POLICY, dstack=DstackPolicy(require_event_log=True)),
        replace(POLICY, gpu=GpuPolicy(mode="required")),
    ):
        v = verify_quote(quote, collateral, policy=policy, now=now)
        assert [c.name for c in v.failures] == ["tdx.context"], policy
        assert "verify_quote_evidence" in v.failures[0].detail

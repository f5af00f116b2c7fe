"""Provider attestation reports: TEE verdict + event log + binding + GPU, composed."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.attest import report as report_mod
from teegate.attest.binding import fresh_nonce
from teegate.attest.eventlog import parse_event_log, replay_rtmrs
from teegate.attest.policy import DstackPolicy, GpuPolicy, Policy
from teegate.attest.report import verify_provider_report
from teegate.attest.tdx import load_quote, parse_quote
from teegate.attest.verdict import Check, CheckList, Verdict
from teegate.errors import EvidenceError
from teegate.sim.tdx import DevTdx

DATA = Path(__file__).resolve().parent.parent / "data"
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ADDR = bytes.fromhex(ADDRESS[2:])
FIXTURE = json.loads((DATA / "tdx/dstack/verifier_fixtures_quote-report.json").read_text())
DSTACK = json.loads((DATA / "confidential-ai/dstack-tdx-attestation-report.json").read_text())
COMPOSE = (DATA / "confidential-ai/dstack-app-compose.json").read_text()
FIXTURE_COLLATERAL = (DATA / "tdx/dcap-qvl/tdx_quote_outdated_collateral.json").read_text()
FIXTURE_NOW = 1774003274


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevTdx:
    return DevTdx.load_or_create(tmp_path_factory.mktemp("devpki"))


def node_report(
    dev: DevTdx, nonce: bytes, *, event_log: str = FIXTURE["event_log"], now: int,
    key: bytes = ADDR, algo: str = "ecdsa", **extra: Any,
) -> dict[str, Any]:
    """A report as a private-ml-sdk node serves it, from the development TDX platform."""
    regs = replay_rtmrs(parse_event_log(event_log))
    quote = dev.quote(key.ljust(32, b"\0") + nonce, rtmrs=regs)
    return {
        "signing_address": ("0x" + key.hex()) if algo == "ecdsa" else key.hex(),
        "signing_algo": algo,
        "request_nonce": nonce.hex(),
        "intel_quote": quote.hex(),
        "nvidia_payload": None,
        "event_log": json.loads(event_log),
        "info": {"app_id": "whatever"},
        "collateral": dev.collateral(now=now),
        **extra,
    }


def failing(v: Verdict) -> list[str]:
    return [c.name for c in v.failures]


@pytest.fixture
def no_gpu_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_mod, "_gpu_appraiser", lambda: None)


def test_full_report_accepted(dev: DevTdx, no_gpu_module: None) -> None:
    now, nonce = int(time.time()), fresh_nonce()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    v = verify_provider_report(node_report(dev, nonce, now=now), nonce=nonce, policy=policy,
                               now=now)
    assert v.accepted, v.failures
    assert v.development
    assert v.tee == "tdx"
    assert v.tcb_status == "UpToDate"
    assert v.bound_key == ADDR.hex()
    assert v.nonce == nonce.hex()
    assert v.report_data == (ADDR.ljust(32, b"\0") + nonce).hex()
    names = [c.name for c in v.checks]
    for name in ("tdx.quote_signature", "eventlog.rtmr3", "binding.key", "binding.nonce"):
        assert name in names
    assert v.identity["compose_hash"].startswith("3763bc34")
    assert v.identity["fmspc"] == dev.fmspc.hex()
    assert v.not_before is not None
    assert v.not_before <= now <= (v.not_after or 0)
    # The pinned Intel root alone does not accept a development quote.
    v = verify_provider_report(node_report(dev, nonce, now=now), nonce=nonce,
                               policy=Policy.default(), now=now)
    assert failing(v) == ["tdx.root"]


def test_ed25519_report(dev: DevTdx, no_gpu_module: None) -> None:
    now, nonce = int(time.time()), fresh_nonce()
    key = hashlib.sha256(b"ed25519 key").digest()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    r = node_report(dev, nonce, now=now, key=key, algo="ed25519")
    v = verify_provider_report(r, nonce=nonce, policy=policy, now=now)
    assert v.accepted, v.failures
    assert v.bound_key == key.hex()


def test_rejections(dev: DevTdx, no_gpu_module: None) -> None:
    now, nonce = int(time.time()), fresh_nonce()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    good = node_report(dev, nonce, now=now)

    def verify(r: dict[str, Any], n: bytes | None = nonce, **kw: Any) -> list[str]:
        return failing(verify_provider_report(r, nonce=n, policy=policy, now=now, **kw))

    other = fresh_nonce()
    assert verify(good, other) == ["binding.nonce", "binding.request_nonce"]
    assert verify(dict(good, signing_address="0x" + "11" * 20)) == [
        "binding.key", "binding.nonce"]
    assert verify({k: v for k, v in good.items() if k != "signing_address"}) == [
        "binding.key", "binding.nonce"]
    assert verify(dict(good, request_nonce=other.hex())) == ["binding.request_nonce"]
    assert verify({k: v for k, v in good.items() if k != "collateral"}) == ["tdx.collateral"]
    # An event log that is not the TD's.
    assert verify(dict(good, event_log=DSTACK["event_log"])) == [
        f"eventlog.rtmr{i}" for i in range(4)]
    # Collateral passed by the caller wins over the report's; this one's CRLs have expired.
    expired = dev.collateral(now=now - 90 * 86400)
    assert verify(good, collateral=expired) == ["tdx.crl"]
    # A policy that names compose hashes.
    pinned = replace(policy, dstack=DstackPolicy(compose_hashes=frozenset({"ab" * 32})))
    assert failing(verify_provider_report(good, nonce=nonce, policy=pinned, now=now)) == [
        "dstack.compose_hash"]


def test_app_compose_from_report_info(dev: DevTdx, no_gpu_module: None) -> None:
    """info.tcb_info.app_compose is hashed and must be the compose the TD measured."""
    now, nonce = int(time.time()), fresh_nonce()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    info = {"tcb_info": json.dumps({"app_compose": COMPOSE})}
    r = node_report(dev, nonce, now=now, event_log=DSTACK["event_log"], info=info)
    v = verify_provider_report(r, nonce=nonce, policy=policy, now=now)
    assert v.accepted, v.failures
    assert v.identity["compose_hash"] == hashlib.sha256(COMPOSE.encode()).hexdigest()
    check = v.check("dstack.compose_hash")
    assert check is not None
    assert "app-compose document" in check.detail
    lying = dict(r, info={"tcb_info": {"app_compose": COMPOSE + "\n"}})
    v = verify_provider_report(lying, nonce=nonce, policy=policy, now=now)
    assert failing(v) == ["dstack.compose_hash"]
    # An explicit app_compose argument wins over the report's own claim.
    v = verify_provider_report(lying, nonce=nonce, policy=policy, now=now,
                               app_compose=COMPOSE.encode())
    assert v.accepted


def test_real_dstack_quote_as_report(no_gpu_module: None) -> None:
    """The dstack verifier fixture: real quote and event log verify; its report_data
    (0x1234…) binds no signing key, so binding fails and nothing else does."""
    r = {"intel_quote": FIXTURE["quote"], "event_log": FIXTURE["event_log"],
         "signing_address": ADDRESS}
    v = verify_provider_report(r, nonce=fresh_nonce(), policy=Policy.default(),
                               now=FIXTURE_NOW, collateral=FIXTURE_COLLATERAL)
    assert failing(v) == ["binding.key", "binding.nonce"]
    assert v.tcb_status == "UpToDate"
    assert v.identity["key_provider"].startswith('{"name":"local-sgx"')


def test_confidential_ai_report_without_collateral(no_gpu_module: None) -> None:
    """dstack's example report ({quote, event_log}): no collateral is stored for it, so
    the verdict fails on that alone while replay and the compose check pass."""
    v = verify_provider_report(DSTACK, nonce=None, policy=Policy.default(), now=0,
                               app_compose=COMPOSE.encode())
    assert sorted(failing(v)) == ["binding.key", "binding.nonce", "tdx.collateral"]
    passed = {c.name for c in v.checks if c.ok}
    assert {"eventlog.rtmr0", "eventlog.rtmr3", "dstack.compose_hash"} <= passed


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_snp_report(no_gpu_module: None) -> None:
    snp = DATA / "sev-snp" / "trustee"
    vcek = x509.load_der_x509_certificate((snp / "test-vcek.der").read_bytes())
    r = {"snp_report": (snp / "test-report.bin").read_bytes().hex(),
         "snp_certificates": vcek.public_bytes(Encoding.PEM).decode(),
         "signing_address": ADDRESS}
    v = verify_provider_report(r, nonce=fresh_nonce(), policy=Policy.default(),
                               now=1756684800)
    assert v.tee == "sev-snp"
    sig = v.check("snp.report_signature")
    assert sig is not None
    assert sig.ok
    assert failing(v) == ["binding.key", "binding.nonce"]
    require_log = replace(Policy.default(), dstack=DstackPolicy(require_event_log=True))
    v = verify_provider_report(r, nonce=None, policy=require_log, now=1756684800)
    assert "eventlog.present" in failing(v)


def test_gpu_required_without_verifier(dev: DevTdx, no_gpu_module: None) -> None:
    now, nonce = int(time.time()), fresh_nonce()
    policy = replace(Policy.default().with_roots(intel=(dev.root_pem,)),
                     gpu=GpuPolicy(mode="required"))
    v = verify_provider_report(node_report(dev, nonce, now=now), nonce=nonce, policy=policy,
                               now=now)
    assert failing(v) == ["gpu.verifier"]


def test_gpu_verdicts_are_composed(dev: DevTdx, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    gpu = Verdict(tee="nvidia-gpu", checks=(Check("gpu.0.signature", False, "bad"),))

    def appraise(payload: Any, *, nonce: bytes | None, policy: Policy, now: int,
                 **_: Any) -> tuple[list[Check], tuple[Verdict, ...]]:
        seen.update(payload=payload, nonce=nonce, now=now)
        return [Check("gpu.count", True, "1 GPU")], (gpu,)

    monkeypatch.setattr(report_mod, "_gpu_appraiser", lambda: appraise)
    now, nonce = int(time.time()), fresh_nonce()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    payload = json.dumps({"nonce": nonce.hex(), "evidence_list": [], "arch": "HOPPER"})
    v = verify_provider_report(node_report(dev, nonce, now=now, nvidia_payload=payload),
                               nonce=nonce, policy=policy, now=now)
    assert seen == {"payload": payload, "nonce": nonce, "now": now}
    assert v.components == (gpu,)
    assert v.check("gpu.count") is not None
    assert not v.accepted
    assert [c.name for c in v.failures] == ["gpu.0.signature"]


@pytest.mark.parametrize(("report", "message"), [
    ({}, "no CPU evidence"),
    ({"intel_quote": 5}, "must be a string"),
    ({"intel_quote": "zz"}, "neither a binary DCAP quote nor hex"),
    ({"intel_quote": FIXTURE["quote"], "snp_report": "00"}, "both"),
    ({"intel_quote": FIXTURE["quote"], "event_log": 3, "collateral": FIXTURE_COLLATERAL},
     "event_log"),
    ({"intel_quote": FIXTURE["quote"], "collateral": 5}, "collateral"),
    ({"intel_quote": FIXTURE["quote"], "event_log": "[1]", "collateral": FIXTURE_COLLATERAL},
     "not an object"),
])
def test_malformed_reports(report: dict[str, Any], message: str, no_gpu_module: None) -> None:
    with pytest.raises(EvidenceError, match=message):
        verify_provider_report(report, nonce=None, policy=Policy.default(), now=FIXTURE_NOW)


def test_not_an_object() -> None:
    with pytest.raises(EvidenceError):
        verify_provider_report([], nonce=None, policy=Policy.default(), now=0)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_dstack_pins_reject_non_tdx_evidence(no_gpu_module: None) -> None:
    """Review R3: a policy pinning dstack compose hashes was silently skipped for SEV-SNP
    evidence, so any SNP guest passed it."""
    snp = DATA / "sev-snp" / "trustee"
    vcek = x509.load_der_x509_certificate((snp / "test-vcek.der").read_bytes())
    r = {"snp_report": (snp / "test-report.bin").read_bytes().hex(),
         "snp_certificates": vcek.public_bytes(Encoding.PEM).decode(),
         "signing_address": ADDRESS}
    audit = replace(Policy.default(), binding=replace(Policy.default().binding,
                                                      require_nonce=False))
    base = failing(verify_provider_report(r, nonce=None, policy=audit, now=1756684800))
    for field in ("compose_hashes", "app_ids", "os_image_hashes"):
        change: dict[str, Any] = {field: frozenset({"ab" * 32})}
        pinned = replace(audit, dstack=replace(audit.dstack, **change))
        v = verify_provider_report(r, nonce=None, policy=pinned, now=1756684800)
        assert sorted(failing(v)) == sorted([*base, "dstack.identity", "snp.measurements"])
        check = v.check("dstack.identity")
        assert check is not None
        assert field in check.detail


def test_report_collateral_is_verified_to_the_trusted_root(dev: DevTdx,
                                                           no_gpu_module: None) -> None:
    """The report's own `collateral` field is provider-supplied; it can only help when every
    part of it verifies to the pinned (or a policy-named) root."""
    real = {"intel_quote": FIXTURE["quote"], "event_log": FIXTURE["event_log"]}
    audit = replace(Policy.default(), binding=replace(Policy.default().binding,
                                                      require_nonce=False))
    # Key binding fails for this fixture (its report_data binds no key); look at the rest.
    base = verify_provider_report(dict(real, collateral=FIXTURE_COLLATERAL), nonce=None,
                                  policy=audit, now=FIXTURE_NOW)
    assert [c for c in failing(base) if not c.startswith("binding.")] == []
    forged = dev.collateral(now=FIXTURE_NOW)  # signed by a key the attacker holds
    with_dev_root = audit.with_roots(intel=(dev.root_pem,))
    for policy in (audit, with_dev_root):
        v = verify_provider_report(dict(real, collateral=forged), nonce=None, policy=policy,
                                   now=FIXTURE_NOW)
        assert any(c.startswith("tdx.") for c in failing(v)), failing(v)
        assert not v.development
    # A development quote cannot borrow a real platform's PCK chain through the collateral.
    pck = parse_quote(load_quote(FIXTURE["quote"])).pck_chain_pem
    assert pck is not None
    now, nonce = int(time.time()), fresh_nonce()
    borrowed = json.loads(dev.collateral(now=now))
    borrowed["pck_certificate_chain"] = pck.rstrip(b"\0").decode()
    r = node_report(dev, nonce, now=now, collateral=json.dumps(borrowed))
    v = verify_provider_report(r, nonce=nonce, policy=with_dev_root, now=now)
    assert any(c.startswith("tdx.") for c in failing(v)), failing(v)


def test_verdict_without_checks_is_not_accepted() -> None:
    assert not Verdict(tee="tdx", checks=()).accepted
    ok = Verdict(tee="tdx", checks=(Check("tdx.x", True, "ok"),))
    assert ok.accepted
    assert not replace(ok, components=(Verdict(tee="nvidia-gpu", checks=()),)).accepted
    cl = CheckList()
    assert not cl.ok
    cl.passed("tdx.x", "ok")
    assert cl.ok
    cl.failed("tdx.y", "no")
    assert not cl.ok


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_tdx_only_policy_rejects_snp_reports(tmp_path: Path, no_gpu_module: None) -> None:
    """Review R3: a policy pinning only TDX measurements accepted any SEV-SNP guest."""
    from teegate.sim.snp import DevSnp

    snp = DevSnp.load_or_create(tmp_path)
    now, nonce = int(time.time()), fresh_nonce()
    r = {"snp_report": snp.report(ADDR.ljust(32, b"\0") + nonce).hex(),
         "snp_certificates": snp.cert_chain_pem().decode(), "signing_address": ADDRESS}
    base = Policy.default().with_roots(amd=(snp.ark_pem,))
    assert verify_provider_report(r, nonce=nonce, policy=base, now=now).accepted
    only_tdx = replace(base, tdx=replace(base.tdx, mrtd=frozenset({"ab" * 48})))
    v = verify_provider_report(r, nonce=nonce, policy=only_tdx, now=now)
    assert failing(v) == ["snp.measurements"]


def test_composed_window_is_the_intersection(dev: DevTdx, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """A verdict cached until not_after must not outlive any of its parts (a GPU chain or
    RIM that expires before the Intel collateral)."""
    now, nonce = int(time.time()), fresh_nonce()
    gpu = Verdict(tee="nvidia-gpu", checks=(Check("gpu.0.signature", True, "ok"),),
                  not_before=now - 10, not_after=now + 60)

    def appraise(payload: Any, *, nonce: bytes | None, policy: Policy, now: int,
                 **_: Any) -> tuple[list[Check], tuple[Verdict, ...]]:
        return [Check("gpu.present", True, "1 GPU")], (gpu,)

    monkeypatch.setattr(report_mod, "_gpu_appraiser", lambda: appraise)
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    payload = json.dumps({"nonce": nonce.hex(), "evidence_list": [], "arch": "HOPPER"})
    v = verify_provider_report(node_report(dev, nonce, now=now, nvidia_payload=payload),
                               nonce=nonce, policy=policy, now=now)
    assert v.accepted, v.failures
    assert v.not_after == now + 60
    assert v.not_before is not None
    assert v.not_before <= now - 10


def test_bound_key_only_when_bound(dev: DevTdx, no_gpu_module: None) -> None:
    now, nonce = int(time.time()), fresh_nonce()
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    r = dict(node_report(dev, nonce, now=now), signing_address="0x" + "11" * 20)
    v = verify_provider_report(r, nonce=nonce, policy=policy, now=now)
    assert "binding.key" in failing(v)
    assert v.bound_key is None

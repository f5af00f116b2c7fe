"""The policy: strict loading, and every field enforced by a named check."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.attest.binding import fresh_nonce
from teegate.attest.eventlog import parse_event_log, replay_rtmrs
from teegate.attest.gpu import verify_gpu_evidence
from teegate.attest.policy import DEFAULT_TCB_STATUSES, Policy, load_policy
from teegate.attest.report import verify_provider_report, verify_quote_evidence
from teegate.attest.snp import verify_report
from teegate.attest.tdx import verify_quote
from teegate.attest.verdict import Verdict
from teegate.errors import ConfigError
from teegate.sim.compose import dev_os_image, measure_compose
from teegate.sim.gpu import DevGpu
from teegate.sim.snp import DevSnp
from teegate.sim.tdx import DevTdx
from tests.attest.test_gpu_rim import RimSigner, _cert, dev_rims


def test_default_policy_is_strict() -> None:
    p = Policy.default()
    assert p.tcb.allowed_statuses == DEFAULT_TCB_STATUSES == {"UpToDate", "SWHardeningNeeded"}
    assert not p.tcb.allow_debug
    assert p.binding.require_nonce
    assert p.roots.intel == ()
    assert p.roots.amd == ()
    assert p.roots.nvidia == ()


def test_toml_policy_loads_and_normalises_hex(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        '[tcb]\nallowed_statuses = ["UpToDate"]\nrejected_advisories = ["INTEL-SA-00615"]\n'
        '[tdx]\nmrtd = ["0x' + "AABB" * 24 + '"]\n'
        '[snp]\nmin_tcb = { snp = 8, microcode = 115 }\nvmpl = [0]\n'
        '[gpu]\nmode = "required"\n'
    )
    p = load_policy(f)
    assert p.tcb.allowed_statuses == {"UpToDate"}
    assert p.tdx.mrtd == {"aabb" * 24}
    assert p.snp.min_tcb == {"snp": 8, "microcode": 115}
    assert p.gpu.mode == "required"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[tcb]\nallowed_status = ["UpToDate"]\n', "policy.tcb: unknown key"),
        ('[tdx]\nmrtd = ["zz"]\n', "policy.tdx.mrtd"),
        ('[tcb]\nallow_debug = "yes"\n', "policy.tcb.allow_debug"),
        ('[gpu]\nmode = "sometimes"\n', "policy.gpu.mode"),
        ('[snp]\nmin_tcb = { ucode = 1 }\n', "policy.snp.min_tcb"),
        ('[roots]\nintel = ["missing.pem"]\n', "policy.roots.intel"),
        # Review R3: values that could never match, or a typo that would never reject.
        ('[tdx]\nmrtd = ["' + "ab" * 47 + '"]\n', "policy.tdx.mrtd: .* 47 bytes"),
        ('[dstack]\napp_ids = ["' + "ab" * 32 + '"]\n', "policy.dstack.app_ids: .* 20-byte"),
        ('[tcb]\nallowed_statuses = ["Uptodate"]\n', "unknown TCB status"),
        ('[tcb]\nallowed_statuses = ["Revoked"]\n', "Revoked can never be allowed"),
        ("[tcb]\nallowed_statuses = []\n", "would refuse every platform"),
        ('[tcb]\nrejected_advisories = ["INTEL-SA-615"]\n', "not Intel advisory IDs"),
        ('[binding]\nlayouts = ["paded"]\n', "unknown report_data layout"),
        ("[sigstore]\nrequire_images = true\n", "need a trusted_root file and at least one"),
        ('[sigstore]\nidentities = [{ identity = "a" }]\n', "policy.sigstore.identities"),
        ('[sigstore]\ntrusted_root = "missing.json"\n', "cannot read Sigstore trusted root"),
    ],
)
def test_bad_policy_names_the_field(tmp_path: Path, body: str, field: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_policy(f)


def test_loading_normalises_case_and_whitespace(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('[tcb]\nrejected_advisories = [" intel-sa-00615 "]\n'
                 '[tdx]\nmrtd = ["' + "AB " * 48 + '"]\n')
    p = load_policy(f)
    assert p.tcb.rejected_advisories == {"INTEL-SA-00615"}
    assert p.tdx.mrtd == {"ab" * 48}


def test_json_policy_and_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"dstack": {"compose_hashes": ["' + "AB" * 32 + '"]}}')
    assert load_policy(f).dstack.compose_hashes == {"ab" * 32}
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "nope.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid json"):
        load_policy(bad)


# ------------------------------------------------ review R3: every policy field is enforced
# For each field: a policy setting it, evidence violating it, and the check that must reject
# it. The same evidence under a baseline policy (the field unset or relaxed) is accepted, so
# each rejection is that field's doing.

DATA = Path(__file__).resolve().parent.parent / "data"
FIXTURE = json.loads((DATA / "tdx/dstack/verifier_fixtures_tdx-lite-getquote.json").read_text())
NOW = int(time.time())
ADDR = bytes.fromhex("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
NONCE = fresh_nonce()
WRONG48, WRONG32, WRONG20 = "ab" * 48, "ab" * 32, "ab" * 20

# Fields no verifier enforces, and why that does not widen what is accepted.
NOT_ENFORCED: dict[str, str] = {}
GPU_NONCE = bytes(range(1, 33))


class Env:
    """Development TDX and SNP platforms, and the dstack lite fixture's event log."""

    def __init__(self, base: Path) -> None:
        self.tdx = DevTdx.load_or_create(base)
        self.snp = DevSnp.load_or_create(base)
        self.gpu = DevGpu.load_or_create(base)
        root_key = ec.generate_private_key(ec.SECP384R1())
        key = ec.generate_private_key(ec.SECP384R1())
        self.rim_signer = RimSigner(key, [
            _cert("Dev RIM Signer", key, "Dev CoRIM Root", root_key, ca=False),
            _cert("Dev CoRIM Root", root_key, "Dev CoRIM Root", root_key, ca=True)])
        self.rims = dev_rims(self.rim_signer)
        self.policy = Policy.default().with_roots(
            intel=(self.tdx.root_pem,), amd=(self.snp.ark_pem,), nvidia=(self.gpu.root_pem,),
            nvidia_rim=(self.rim_signer.root_pem,))
        self.collateral = self.tdx.collateral(now=NOW)
        self.rtmrs = replay_rtmrs(parse_event_log(FIXTURE["event_log"]))
        # MRCONFIGID = 0x01 || compose hash, as the fixture's TD had it.
        self.mrconfigid = bytes.fromhex(FIXTURE["quote"][232 * 2 : 280 * 2])

    def quote(self, report_data: bytes = b"", **kw: Any) -> bytes:
        return self.tdx.quote(report_data, rtmrs=self.rtmrs, mrconfigid=self.mrconfigid, **kw)


Make = Callable[[Env, Policy], Verdict]


def _tdx(**kw: Any) -> Make:
    return lambda e, p: verify_quote_evidence(e.quote(**kw), e.collateral, policy=p, now=NOW,
                                              event_log=FIXTURE["event_log"])


def _tdx_collateral(**kw: Any) -> Make:
    return lambda e, p: verify_quote_evidence(e.quote(), e.tdx.collateral(now=NOW, **kw),
                                              policy=p, now=NOW)


def _tdx_no_log(e: Env, p: Policy) -> Verdict:
    return verify_quote_evidence(e.quote(), e.collateral, policy=p, now=NOW)


def _tdx_attributes(attributes: int) -> Make:
    from tests.attest.test_tdx import _with_td_attributes

    return lambda e, p: verify_quote(_with_td_attributes(e.tdx, attributes), e.collateral,
                                     policy=p, now=NOW)


def _tdx_service_td(e: Env, p: Policy) -> Verdict:
    from tests.attest.test_tdx import _v5

    return verify_quote(_v5(e.tdx, b"\x01" + bytes(47)), e.collateral, policy=p, now=NOW)


def _snp(**kw: Any) -> Make:
    return lambda e, p: verify_report(e.snp.report(b"r" * 64, **kw), e.snp.cert_chain_pem(),
                                      policy=p, now=NOW)


def _gpu(with_rims: bool = True, with_fwid: bool = True) -> Make:
    return lambda e, p: verify_gpu_evidence(
        e.gpu.evidence(GPU_NONCE, with_fwid=with_fwid), e.gpu.cert_chain_pem(), nonce=GPU_NONCE,
        policy=p, now=NOW, rims=e.rims if with_rims else ())


def _sgx(e: Env, p: Policy) -> Verdict:
    tdx = DATA / "tdx" / "dcap-qvl"
    tcb = replace(p.tcb, allowed_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"}))
    return verify_quote((tdx / "sgx_quote").read_bytes(),
                        (tdx / "sgx_quote_collateral.json").read_text(),
                        policy=replace(p, tcb=tcb), now=1752919277)


SIGSTORE = DATA / "sigstore"
DSSE_IMAGE = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"
WEIGHTS = "cd" * 32
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
          "https://token.actions.githubusercontent.com")
COMPOSE = json.dumps({"name": "m", "runner": "docker-compose", "docker_compose_file": (
    f"services:\n  vllm:\n    image: vllm/vllm-openai@sha256:{DSSE_IMAGE}\n"
    f"    environment:\n      - TEEGATE_WEIGHTS_SHA256={WEIGHTS}\n")}).encode()


def _compose_report(e: Env, p: Policy) -> Verdict:
    """A provider report of a development TD that measured COMPOSE (compose-hash event,
    MRCONFIGID), with its development OS image manifest (is_dev)."""
    from teegate.sim.compose import measure_compose

    m = measure_compose(COMPOSE)
    quote = e.tdx.quote(ADDR.ljust(32, b"\0") + NONCE, rtmrs=m.rtmrs, mrconfigid=m.mrconfigid)
    report = {"intel_quote": quote.hex(), "collateral": e.collateral,
              "event_log": m.event_log, "signing_address": "0x" + ADDR.hex(),
              "info": {"tcb_info": m.tcb_info(bytes(48)), "os_image": m.os_image}}
    return verify_provider_report(report, nonce=NONCE, policy=p, now=NOW)


def _sig(**kw: Any) -> Callable[[Policy], Policy]:
    """A Sigstore section that the compose's image passes, with ``kw`` changed."""
    from teegate.attest.policy import SigstorePolicy

    good = SigstorePolicy(
        require_images=True, trusted_root=(SIGSTORE / "sigstage-trusted_root.json").read_text(),
        identities=(BEACON,),
        bundles=((SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_text(),))
    return lambda p: replace(p, sigstore=replace(good, **kw))


def _report(nonce: bytes | None) -> Make:
    def make(e: Env, p: Policy) -> Verdict:
        r = {"signing_address": "0x" + ADDR.hex(), "event_log": FIXTURE["event_log"],
             "intel_quote": e.quote(ADDR.ljust(32, b"\0") + NONCE).hex(),
             "collateral": e.collateral}
        return verify_provider_report(r, nonce=nonce, policy=p, now=NOW)
    return make


def _set(section: str, **values: Any) -> Callable[[Policy], Policy]:
    return lambda p: replace(p, **{section: replace(getattr(p, section), **values)})


_SAME: Callable[[Policy], Policy] = lambda p: p  # noqa: E731
_DEV_OS = _set("dstack", allow_dev_os=True)

# field -> (violating policy, baseline policy, evidence, check that rejects)
Case = tuple[Callable[[Policy], Policy], Callable[[Policy], Policy], Make, str]
CASES: dict[str, Case] = {
    "tcb.allowed_statuses": (_set("tcb", allowed_statuses=frozenset({"UpToDate"})), _SAME,
                             _tdx(tcb_status="SWHardeningNeeded"), "tdx.tcb_status"),
    "tcb.rejected_advisories": (
        _set("tcb", rejected_advisories=frozenset({"INTEL-SA-00001"})), _SAME,
        _tdx_collateral(advisory_ids=["INTEL-SA-00001"]), "tdx.advisories"),
    "tcb.max_collateral_age": (_set("tcb", max_collateral_age=86400), _SAME, _tdx(),
                               "tdx.collateral_age"),
    "tcb.allow_debug": (_SAME, _set("tcb", allow_debug=True), _snp(debug=True), "snp.debug"),
    **{f"tdx.{r}": (_set("tdx", **{r: frozenset({WRONG48})}), _SAME, _tdx(), f"tdx.{r}")
       for r in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrseam")},
    "tdx.mrenclave": (_set("tdx", mrenclave=frozenset({WRONG32})), _SAME, _sgx,
                      "sgx.mrenclave"),
    "tdx.mrsigner": (_set("tdx", mrsigner=frozenset({WRONG32})), _SAME, _sgx, "sgx.mrsigner"),
    "tdx.require_sept_ve_disable": (
        _SAME, _set("tdx", require_sept_ve_disable=False), _tdx_attributes(0),
        "tdx.td_attributes"),
    "tdx.allow_service_td": (_SAME, _set("tdx", allow_service_td=True), _tdx_service_td,
                             "tdx.td_attributes"),
    "snp.measurement": (_set("snp", measurement=frozenset({WRONG48})), _SAME, _snp(),
                        "snp.measurement"),
    "snp.host_data": (_set("snp", host_data=frozenset({WRONG32})), _SAME, _snp(),
                      "snp.host_data"),
    "snp.id_key_digest": (_set("snp", id_key_digest=frozenset({WRONG48})), _SAME, _snp(),
                          "snp.id_key_digest"),
    "snp.min_tcb": (_set("snp", min_tcb={"snp": 255}), _SAME, _snp(), "snp.min_tcb"),
    "snp.vmpl": (_set("snp", vmpl=frozenset({0})), _SAME, _snp(vmpl=2), "snp.vmpl"),
    "snp.min_guest_svn": (_set("snp", min_guest_svn=5), _SAME, _snp(guest_svn=4),
                          "snp.guest_svn"),
    "snp.products": (_set("snp", products=frozenset({"Turin"})), _SAME, _snp(),
                     "snp.product"),
    "snp.require_crl": (_set("snp", require_crl=True), _SAME, _snp(), "snp.revocation"),
    "dstack.compose_hashes": (_set("dstack", compose_hashes=frozenset({WRONG32})), _SAME,
                              _tdx(), "dstack.compose_hash"),
    "dstack.app_ids": (_set("dstack", app_ids=frozenset({WRONG20})), _SAME, _tdx(),
                       "dstack.app_id"),
    "dstack.os_image_hashes": (_set("dstack", os_image_hashes=frozenset({WRONG32})), _SAME,
                               _tdx(), "dstack.os_image_hash"),
    "dstack.require_event_log": (_set("dstack", require_event_log=True), _SAME, _tdx_no_log,
                                 "eventlog.present"),
    "dstack.image_digests": (_set("dstack", image_digests=frozenset({WRONG32}),
                                  allow_dev_os=True), _DEV_OS, _compose_report, "model.images"),
    "dstack.weights_digests": (_set("dstack", weights_digests=frozenset({WRONG32}),
                                    allow_dev_os=True), _DEV_OS, _compose_report,
                               "model.weights"),
    "dstack.allow_dev_os": (_SAME, _DEV_OS, _compose_report, "dstack.os_image_dev"),
    "dstack.dev_os_image_hashes": (
        _set("dstack", dev_os_image_hashes=frozenset({hashlib.sha256(
            dev_os_image()["sha256sum"].encode()).hexdigest()})), _SAME,
        lambda e, p: verify_quote_evidence(
            e.tdx.quote(b"", rtmrs=measure_compose(COMPOSE).rtmrs), e.collateral, policy=p,
            now=NOW, event_log=measure_compose(COMPOSE).event_log),
        "dstack.os_image_dev"),
    "dstack.os_images": (
        _set("dstack", os_images=((dev_os_image()["sha256sum"], dev_os_image()["metadata"]),)),
        _SAME,
        lambda e, p: verify_quote_evidence(
            e.tdx.quote(b"", rtmrs=measure_compose(COMPOSE).rtmrs), e.collateral, policy=p,
            now=NOW, event_log=measure_compose(COMPOSE).event_log),
        "dstack.os_image_dev"),
    "sigstore.require_images": (lambda p: _sig(bundles=())(_DEV_OS(p)),
                                lambda p: _sig(require_images=False, bundles=())(_DEV_OS(p)),
                                _compose_report, "sigstore.images"),
    "sigstore.require_os_image": (lambda p: _sig(require_os_image=True)(_DEV_OS(p)),
                                  lambda p: _sig()(_DEV_OS(p)), _compose_report,
                                  "sigstore.os_image"),
    "sigstore.trusted_root": (
        lambda p: _sig(trusted_root=(SIGSTORE / "sigstore-trusted_root.json").read_text())(
            _DEV_OS(p)), lambda p: _sig()(_DEV_OS(p)), _compose_report, "sigstore.images"),
    "sigstore.identities": (
        lambda p: _sig(identities=(("someone@else.example", BEACON[1]),))(_DEV_OS(p)),
        lambda p: _sig()(_DEV_OS(p)), _compose_report, "sigstore.images"),
    "sigstore.bundles": (
        lambda p: _sig(bundles=((SIGSTORE / "bundle_v3.txt.sigstore").read_text(),))(
            _DEV_OS(p)), lambda p: _sig()(_DEV_OS(p)), _compose_report, "sigstore.images"),
    "gpu.mode": (_set("gpu", mode="required"), _SAME, _tdx(), "gpu.required"),
    "gpu.driver_versions": (_set("gpu", driver_versions=frozenset({"999.99"})), _SAME, _gpu(),
                            "gpu.0.driver_version"),
    "gpu.vbios_versions": (_set("gpu", vbios_versions=frozenset({"99.00.00.00.00"})), _SAME,
                           _gpu(), "gpu.0.vbios_version"),
    "gpu.require_rim": (_set("gpu", require_rim=True), _SAME, _gpu(with_rims=False),
                        "gpu.0.measurements"),
    "gpu.require_ocsp": (_set("gpu", require_ocsp=True), _SAME, _gpu(), "gpu.0.revocation"),
    "gpu.require_fwid": (_set("gpu", require_fwid=True), _SAME, _gpu(with_fwid=False),
                         "gpu.0.fwid"),
    "gpu.expected_count": (_set("gpu", expected_count=2), _SAME, _tdx(), "gpu.count"),
    "binding.require_nonce": (_SAME, _set("binding", require_nonce=False), _report(None),
                              "binding.nonce"),
    "binding.layouts": (_set("binding", layouts=frozenset({"sha512"})), _SAME,
                        _report(NONCE), "binding.key"),
    "roots.intel": (_set("roots", intel=()), _SAME, _tdx(), "tdx.root"),
    "roots.amd": (_set("roots", amd=()), _SAME, _snp(), "snp.ark"),
    "roots.nvidia": (_set("roots", nvidia=()), _SAME, _gpu(), "gpu.0.chain"),
    "roots.nvidia_rim": (_set("roots", nvidia_rim=()), _SAME, _gpu(), "gpu.0.driver_rim"),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(tmp_path_factory.mktemp("pki"))


def test_every_field_is_enforced_or_explained() -> None:
    every = {f"{s.name}.{f.name}" for s in fields(Policy)
             for f in fields(getattr(Policy.default(), s.name))}
    assert set(CASES) | set(NOT_ENFORCED) == every
    assert not set(CASES) & set(NOT_ENFORCED)


@pytest.mark.parametrize("field", sorted(CASES))
def test_violating_input_is_rejected_by_the_named_check(env: Env, field: str) -> None:
    violating, baseline, make, check = CASES[field]
    good = make(env, baseline(env.policy))
    assert good.accepted, (field, good.failures)
    bad = make(env, violating(env.policy))
    assert not bad.accepted, field
    assert check in [c.name for c in bad.failures], (field, bad.failures)


def test_example_policy_is_the_default_spelled_out() -> None:
    """docs/policy.example.toml documents every field and loads to the production default."""
    path = Path(__file__).resolve().parents[2] / "docs" / "policy.example.toml"
    assert load_policy(path) == Policy.default()
    text = path.read_text()
    for s in fields(Policy):
        assert f"[{s.name}]" in text
        for f in fields(getattr(Policy.default(), s.name)):
            assert f"{f.name} = " in text, f"{s.name}.{f.name} is not documented"


def test_audit_policy_only_drops_the_nonce_requirement() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"
    audit = load_policy(path)
    assert not audit.binding.require_nonce
    assert replace(audit, binding=Policy.default().binding) == Policy.default()


def test_policy_path_may_start_with_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.toml").write_text('[tcb]\nallowed_statuses = ["UpToDate"]\n')
    assert load_policy("~/p.toml").tcb.allowed_statuses == frozenset({"UpToDate"})


def test_sigstore_log_index_is_in_the_model_identity(env: Env) -> None:
    """The compose's image digest is vouched for by a real DSSE bundle (Rekor v2 staging); the
    verdict's model identity records where the log holds it."""
    v = _compose_report(env, _sig()(_DEV_OS(env.policy)))
    assert v.accepted, v.failures
    assert v.model["images"] == ["sha256:" + DSSE_IMAGE]
    assert v.model["sigstore"] == [{"digest": "sha256:" + DSSE_IMAGE, "log_index": 4026478,
                                    "integrated_time": 0, "signer": BEACON[0],
                                    "kind": "dsse"}]
    assert v.check("sigstore.images") is not None


def test_sigstore_section_loads_files(tmp_path: Path) -> None:
    (tmp_path / "bundles").mkdir()
    for name in ("a.dsse.staging-rekor-v2.txt.sigstore.json", "bundle_v3.txt.sigstore"):
        (tmp_path / "bundles" / name).write_bytes((SIGSTORE / name).read_bytes())
    (tmp_path / "root.json").write_bytes((SIGSTORE / "sigstage-trusted_root.json").read_bytes())
    f = tmp_path / "p.toml"
    f.write_text('[sigstore]\nrequire_images = true\ntrusted_root = "root.json"\n'
                 f'identities = [{{ identity = "{BEACON[0]}", issuer = "{BEACON[1]}" }}]\n'
                 'bundles = ["bundles"]\n[dstack]\nimage_digests = ["sha256:' + DSSE_IMAGE
                 + '"]\n')
    p = load_policy(f)
    assert p.sigstore.identities == (BEACON,)
    assert len(p.sigstore.bundles) == 2
    assert p.sigstore.trusted_root.startswith("{")
    assert p.dstack.image_digests == {DSSE_IMAGE}


def test_os_image_release_directories_load(tmp_path: Path) -> None:
    """An OS image release directory (sha256sum.txt + metadata.json) tells a bare quote's
    verifier the measured image is a development one."""
    d = tmp_path / "dstack-dev-0.1"
    d.mkdir()
    (d / "sha256sum.txt").write_text(dev_os_image()["sha256sum"])
    (d / "metadata.json").write_text(dev_os_image()["metadata"])
    f = tmp_path / "p.toml"
    f.write_text('[dstack]\nos_images = ["dstack-dev-0.1"]\n')
    assert load_policy(f).dstack.os_images == ((dev_os_image()["sha256sum"],
                                                 dev_os_image()["metadata"]),)
    f.write_text('[dstack]\nos_images = ["nowhere"]\n')
    with pytest.raises(ConfigError, match="cannot read OS image hash list"):
        load_policy(f)

"""`teegate verify` as an operator runs it: real vectors, exit codes, readable and JSON output."""

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.cli import app

DATA = Path(__file__).parent.parent / "data"
TDX = DATA / "tdx" / "dcap-qvl"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", *args])
    return result.exit_code, result.output


def test_accepted_tdx_quote_exits_0_and_lists_checks() -> None:
    code, out = _run(
        "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234",
        str(TDX / "tdx_quote"),
    )
    assert code == 0, out
    assert "ACCEPTED" in out
    assert "tdx.quote_signature" in out
    assert "UpToDate" in out


def test_json_output_has_the_documented_fields() -> None:
    code, out = _run(
        "--json", "--collateral", str(TDX / "sgx_quote_collateral.json"), "--now", "1752919277",
        str(TDX / "sgx_quote"),
    )
    doc = json.loads(out)
    # ConfigurationAndSWHardeningNeeded is outside the default policy's allowed statuses.
    assert code == 1
    assert doc["accepted"] is False
    assert doc["tee"] == "sgx"
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert {"name", "ok", "detail"} <= set(doc["checks"][0])
    failed = [c["name"] for c in doc["checks"] if not c["ok"]]
    assert failed == ["sgx.tcb_status"] or "tcb_status" in failed[0]


def test_hex_quote_is_detected(tmp_path: Path) -> None:
    hexfile = tmp_path / "quote.hex"
    hexfile.write_text((TDX / "tdx_quote").read_bytes().hex())
    code, out = _run(
        "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234",
        str(hexfile),
    )
    assert code == 0, out


def test_missing_collateral_is_a_named_rejection() -> None:
    code, out = _run(str(TDX / "tdx_quote"))
    assert code == 1
    assert "tdx.collateral" in out


def test_expired_collateral_is_rejected() -> None:
    code, out = _run(
        "--json", "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1790000000",
        str(TDX / "tdx_quote"),
    )
    assert code == 1
    assert json.loads(out)["accepted"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/quote"], "cannot read"),
        (["--nonce", "abcd", "x"], "--nonce"),
        ([], "at least one EVIDENCE"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    code, out = _run(*args)
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_garbage_evidence_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "garbage.bin"
    f.write_bytes(b"\x01\x02garbage" * 10)
    code, out = _run(str(f))
    assert code == 2
    assert "unrecognised evidence" in out


# ------------------------------------------------ review R3: options a bare quote must honour
DSTACK = DATA / "tdx" / "dstack"
FIXTURE_QUOTE = DSTACK / "verifier_fixtures_quote-report.quote.bin"
FIXTURE_ARGS = ["--collateral", str(TDX / "tdx_quote_outdated_collateral.json"),
                "--now", "1774003274"]


def _fixture_log(tmp_path: Path, name: str = "verifier_fixtures_quote-report.json") -> Path:
    log = json.loads((DSTACK / name).read_text())["event_log"]
    f = tmp_path / "events.json"
    f.write_text(log if isinstance(log, str) else json.dumps(log))
    return f


def _failed(out: str) -> list[str]:
    return [c["name"] for c in json.loads(out)["checks"] if not c["ok"]]


def test_bare_quote_with_its_event_log_is_accepted(tmp_path: Path) -> None:
    code, out = _run("--json", *FIXTURE_ARGS, "--event-log", str(_fixture_log(tmp_path)),
                     str(FIXTURE_QUOTE))
    assert code == 0, out
    doc = json.loads(out)
    assert {"eventlog.rtmr0", "eventlog.rtmr3"} <= {c["name"] for c in doc["checks"]}
    assert doc["identity"]["key_provider"].startswith('{"name":"local-sgx"')


def test_bare_quote_with_a_foreign_event_log_is_rejected(tmp_path: Path) -> None:
    """--event-log was silently ignored for a bare quote: a log that is not the TD's passed."""
    other = tmp_path / "other.json"
    report = json.loads((DATA / "confidential-ai/dstack-tdx-attestation-report.json").read_text())
    other.write_text(json.dumps(report["event_log"]))
    code, out = _run("--json", *FIXTURE_ARGS, "--event-log", str(other), str(FIXTURE_QUOTE))
    assert code == 1, out
    assert _failed(out) == [f"eventlog.rtmr{i}" for i in range(4)]


def test_bare_quote_with_the_wrong_app_compose_is_rejected(tmp_path: Path) -> None:
    compose = tmp_path / "compose.json"
    compose.write_text('{"not": "the compose this TD runs"}')
    code, out = _run("--json", *FIXTURE_ARGS, "--event-log", str(_fixture_log(tmp_path)),
                     "--app-compose", str(compose), str(FIXTURE_QUOTE))
    assert code == 1, out
    assert _failed(out) == ["dstack.compose_hash"]


def test_bare_quote_with_a_nonce_it_does_not_carry_is_rejected() -> None:
    """--nonce was silently ignored for a bare quote: a stale quote passed as fresh."""
    nonce = "5a" * 16 + "a5" * 16
    code, out = _run("--json", *FIXTURE_ARGS, "--nonce", nonce, str(FIXTURE_QUOTE))
    assert code == 1, out
    assert _failed(out) == ["binding.nonce"]


def test_bare_quote_carrying_the_nonce_is_accepted(tmp_path: Path) -> None:
    from teegate.attest.binding import fresh_nonce
    from teegate.sim.tdx import DevTdx

    dev = DevTdx.load_or_create(tmp_path)
    nonce = fresh_nonce()
    quote = tmp_path / "q.bin"
    quote.write_bytes(dev.quote(bytes(32) + nonce))
    col = tmp_path / "col.json"
    now = str(int(time.time()))
    col.write_text(dev.collateral(now=int(now)))
    pol = tmp_path / "dev.toml"
    pol.write_text(f"[roots]\nintel = ['''{dev.root_pem}''']\n")
    args = ["--json", "--collateral", str(col), "--now", now, "--policy", str(pol)]
    code, out = _run(*args, "--nonce", nonce.hex(), str(quote))
    assert code == 0, out
    assert json.loads(out)["nonce"] == nonce.hex()
    code, out = _run(*args, "--nonce", fresh_nonce().hex(), str(quote))
    assert code == 1
    assert _failed(out) == ["binding.nonce"]
    # dstack GetQuote(nonce): the nonce first, then zero padding; anything after it fails.
    raw_nonce = tmp_path / "raw.bin"
    raw_nonce.write_bytes(dev.quote(nonce))
    code, out = _run(*args, "--nonce", nonce.hex(), str(raw_nonce))
    assert code == 0, out
    raw_nonce.write_bytes(dev.quote(nonce + b"\x01"))
    code, out = _run(*args, "--nonce", nonce.hex(), str(raw_nonce))
    assert _failed(out) == ["binding.nonce"]


@pytest.mark.parametrize(("policy", "failed"), [
    ('[dstack]\ncompose_hashes = ["' + "ab" * 32 + '"]\n', ["dstack.compose_hash"]),
    ('[dstack]\napp_ids = ["' + "ab" * 20 + '"]\n', ["dstack.app_id"]),
    ("[dstack]\nrequire_event_log = true\n", ["eventlog.present"]),
    ('[gpu]\nmode = "required"\n', ["gpu.required"]),
])
def test_bare_quote_honours_the_whole_policy(tmp_path: Path, policy: str,
                                             failed: list[str]) -> None:
    f = tmp_path / "p.toml"
    f.write_text(policy)
    code, out = _run("--json", *FIXTURE_ARGS, "--policy", str(f), str(FIXTURE_QUOTE))
    assert code == 1, out
    assert _failed(out)[: len(failed)] == failed


def test_dstack_quote_response_is_a_quote_with_its_event_log() -> None:
    """A dstack GetQuote answer ({quote, event_log}) names no signing key: it is verified as a
    quote with its event log, not failed for a missing signing_address."""
    code, out = _run("--json", *FIXTURE_ARGS, str(DSTACK / "verifier_fixtures_quote-report.json"))
    assert code == 0, out
    doc = json.loads(out)
    assert doc["bound_key"] is None
    assert "eventlog.rtmr3" in [c["name"] for c in doc["checks"]]


def test_response_signature_file_is_explained() -> None:
    code, out = _run(str(DATA / "confidential-ai/synthetic-nearai-style-signature.json"))
    assert code == 2
    assert "response signature" in out


def test_human_output_says_what_was_not_checked() -> None:
    code, out = _run(*FIXTURE_ARGS, str(FIXTURE_QUOTE))
    assert code == 0, out
    assert "ACCEPTED: all" in out
    assert "freshness" in out
    assert "not checked: no --nonce given" in out
    assert "report_data[32:64]" in out
    code, out = _run("--collateral", str(TDX / "tdx_quote_collateral.json"), "--now",
                     "1790000000", str(TDX / "tdx_quote"))
    assert code == 1
    assert "REJECTED: 1 failed check(s): tdx." in out
    assert "NOT verified" in out
    assert "hint: the collateral and certificates are valid" in out


def test_provider_report_without_nonce_says_how_to_proceed(tmp_path: Path) -> None:
    from teegate.attest.binding import fresh_nonce
    from teegate.sim.tdx import DevTdx

    dev = DevTdx.load_or_create(tmp_path)
    now, nonce = int(time.time()), fresh_nonce()
    addr = bytes(range(20))
    report = {"signing_address": "0x" + addr.hex(), "signing_algo": "ecdsa",
              "intel_quote": dev.quote(addr.ljust(32, b"\0") + nonce).hex(),
              "collateral": dev.collateral(now=now)}
    f = tmp_path / "report.json"
    f.write_text(json.dumps(report))
    pol = tmp_path / "dev.toml"
    pol.write_text(f"[roots]\nintel = ['''{dev.root_pem}''']\n")
    code, out = _run("--json", "--policy", str(pol), str(f))
    assert code == 1
    nonce_check = next(c for c in json.loads(out)["checks"] if c["name"] == "binding.nonce")
    assert "--nonce" in nonce_check["detail"]
    assert "require_nonce = false" in nonce_check["detail"]
    code, out = _run("--json", "--policy", str(pol), "--nonce", nonce.hex(), str(f))
    assert code == 0, out
    audit = tmp_path / "audit.toml"
    audit.write_text(pol.read_text() + "[binding]\nrequire_nonce = false\n")
    code, out = _run("--policy", str(audit), str(f))
    assert code == 0, out


def test_snp_report_under_a_tdx_only_policy_is_rejected(tmp_path: Path) -> None:
    from teegate.sim.snp import DevSnp

    snp = DevSnp.load_or_create(tmp_path)
    report, certs = tmp_path / "report.bin", tmp_path / "certs.pem"
    report.write_bytes(snp.report(bytes(64)))
    certs.write_bytes(snp.cert_chain_pem())
    dev = tmp_path / "dev.toml"
    dev.write_text(f"[roots]\namd = ['''{snp.ark_pem}''']\n")
    code, out = _run("--json", "--policy", str(dev), "--certs", str(certs), str(report))
    assert code == 0, out
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(dev.read_text() + '[tdx]\nmrtd = ["' + "ab" * 48 + '"]\n')
    code, out = _run("--json", "--policy", str(pinned), "--certs", str(certs), str(report))
    assert code == 1
    assert _failed(out) == ["snp.measurements"]


def test_one_rejected_input_among_several_exits_1(tmp_path: Path) -> None:
    bom = tmp_path / "quote.hex"
    bom.write_bytes(b"\xef\xbb\xbf" + (TDX / "tdx_quote").read_bytes().hex().encode())
    args = ["--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234"]
    code, out = _run("--json", *args, str(TDX / "tdx_quote"), str(bom))
    assert code == 0, out
    assert [d["accepted"] for d in json.loads(out)] == [True, True]
    code, out = _run("--json", *args, str(TDX / "tdx_quote"), str(TDX / "tdx-quote.hex"))
    assert code == 1
    assert [d["accepted"] for d in json.loads(out)] == [True, False]


def test_quote_response_with_gpu_evidence_is_not_a_bare_quote(tmp_path: Path) -> None:
    """GPU evidence must never be dropped silently: a {quote, event_log, nvidia_payload}
    document is a provider report (and fails for naming no signing key), not a bare quote."""
    doc = json.loads((DSTACK / "verifier_fixtures_quote-report.json").read_text())
    doc["nvidia_payload"] = json.dumps({"nonce": "ab" * 32, "arch": "HOPPER",
                                        "evidence_list": [{"evidence": "", "certificate": ""}]})
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    code, out = _run(*FIXTURE_ARGS, str(f))
    assert code != 0, out


def test_app_compose_with_sgx_evidence_is_not_ignored(tmp_path: Path) -> None:
    compose = tmp_path / "compose.json"
    compose.write_text("{}")
    args = ["--json", "--collateral", str(TDX / "sgx_quote_collateral.json"), "--now",
            "1752919277"]
    code, out = _run(*args, "--app-compose", str(compose), str(TDX / "sgx_quote"))
    assert code == 1
    assert "dstack.compose_hash" in _failed(out)


def test_bare_snp_report_honours_nonce_event_log_and_gpu_mode(tmp_path: Path) -> None:
    """Review R3: --nonce (and --event-log) were ignored for a bare SEV-SNP report."""
    from teegate.attest.binding import fresh_nonce
    from teegate.sim.snp import DevSnp

    snp = DevSnp.load_or_create(tmp_path)
    nonce = fresh_nonce()
    report, certs = tmp_path / "report.bin", tmp_path / "certs.pem"
    report.write_bytes(snp.report(bytes(32) + nonce))
    certs.write_bytes(snp.cert_chain_pem())
    dev = tmp_path / "dev.toml"
    dev.write_text(f"[roots]\namd = ['''{snp.ark_pem}''']\n")
    args = ["--json", "--policy", str(dev), "--certs", str(certs)]
    code, out = _run(*args, "--nonce", nonce.hex(), str(report))
    assert code == 0, out
    code, out = _run(*args, "--nonce", fresh_nonce().hex(), str(report))
    assert code == 1
    assert _failed(out) == ["binding.nonce"]
    code, out = _run(*args, "--event-log", str(_fixture_log(tmp_path)), str(report))
    assert code == 1
    assert _failed(out) == ["eventlog.tee"]
    gpu = tmp_path / "gpu.toml"
    gpu.write_text(dev.read_text() + '[gpu]\nmode = "required"\n')
    code, out = _run("--json", "--policy", str(gpu), "--certs", str(certs), str(report))
    assert code == 1
    assert _failed(out) == ["gpu.required"]


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_event_log_with_an_snp_provider_report_is_not_ignored(tmp_path: Path) -> None:
    snp = DATA / "sev-snp" / "trustee"
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    vcek = x509.load_der_x509_certificate((snp / "test-vcek.der").read_bytes())
    report = tmp_path / "r.json"
    report.write_text(json.dumps({
        "snp_report": (snp / "test-report.bin").read_bytes().hex(),
        "snp_certificates": vcek.public_bytes(Encoding.PEM).decode(),
        "signing_address": "0x" + "12" * 20}))
    code, out = _run("--json", "--now", "1756684800", "--event-log",
                     str(_fixture_log(tmp_path)), str(report))
    assert code == 1
    assert "eventlog.tee" in _failed(out)


WIDE = {"COLUMNS": "160"}  # the GPU summary lines below are compared unwrapped


def _run_wide(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", *args], env=WIDE)
    return result.exit_code, result.output


def test_gpu_measurements_are_summarised_in_the_table_and_listed_in_json() -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "nvidia"
    args = ["verify", str(data / "hopperAttestationReport.txt"), "--certs",
            str(data / "hopperCertChain.txt"), "--policy",
            str(Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"),
            "--now", "1750000000"]
    r = runner.invoke(app, args, env=WIDE)
    assert r.exit_code == 0, r.output
    assert "NVIDIA:GH100:48B02D92494BADF4" in r.output
    assert "driver 550.90.07, VBIOS 96.00.9F.00.01" in r.output
    assert "64 SPDM measurements (26 non-zero), NOT compared with reference values" in r.output
    assert "block_" not in r.output
    assert "responder_nonce" not in r.output
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert len([k for k in doc["measurements"] if k.startswith("block_")]) == 64
    assert doc["measurements"]["rim_comparison"] == "not compared"
    assert doc["identity"]["responder_nonce"]


def test_gpu_evidence_without_nonce_is_not_shown_as_our_nonce() -> None:
    """The sample's SPDM nonce is the GPU's, not one the operator sent: no freshness."""
    data = Path(__file__).resolve().parents[1] / "data" / "nvidia"
    code, out = _run_wide(str(data / "hopperAttestationReport.txt"), "--certs",
                     str(data / "hopperCertChain.txt"), "--policy",
                     str(Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"),
                     "--now", "1750000000")
    assert code == 0, out
    assert "our nonce" not in out
    assert "freshness  not checked" in out


def test_nvidia_payload_summarises_every_gpu_and_shows_our_nonce(tmp_path: Path) -> None:
    from teegate.sim.gpu import DevGpu
    from teegate.sim.policy_file import write_development_policy

    gpu = DevGpu.load_or_create(tmp_path / "pki")
    policy = write_development_policy(tmp_path / "pki")
    nonce = bytes(range(32))
    payload = tmp_path / "payload.json"
    payload.write_text(gpu.nvidia_payload(nonce, 3))
    args = [str(payload), "--policy", str(policy), "--nonce", nonce.hex()]
    code, out = _run_wide(*args)
    assert code == 0, out
    assert f"our nonce  {nonce.hex()}" in out
    assert "freshness" not in out
    assert "GPUs       3;" in out
    for i in range(3):
        assert f"gpu {i}  " in out
    assert out.count("64 SPDM measurements (64 non-zero), NOT compared") == 3
    assert "block_" not in out
    assert "valid  " in out
    code, out = _run("--json", *args)
    doc = json.loads(out)
    assert doc["nonce"] == nonce.hex()
    assert len(doc["components"]) == 3
    assert all(len([k for k in c["measurements"] if k.startswith("block_")]) == 64
               for c in doc["components"])


def test_online_asks_nvidia_ocsp_when_the_policy_requires_it(tmp_path: Path) -> None:
    from teegate.sim.gpu import DevGpu
    from teegate.sim.gpu_ocsp import DevGpuOcsp
    from teegate.sim.policy_file import write_development_policy
    from tests.collateral.vendor_server import vendor_server

    gpu = DevGpu.load_or_create(tmp_path / "pki")
    responder = DevGpuOcsp(tmp_path / "pki")
    base = json.loads(write_development_policy(tmp_path / "pki").read_text())
    policy = tmp_path / "ocsp-policy.json"
    policy.write_text(json.dumps({**base, "gpu": {"require_ocsp": True}}))
    nonce = bytes(range(32))
    payload = tmp_path / "payload.json"
    payload.write_text(gpu.nvidia_payload(nonce, 2))
    args = ["verify", str(payload), "--policy", str(policy), "--nonce", nonce.hex()]
    offline = runner.invoke(app, args, env=WIDE)
    assert offline.exit_code == 1
    assert "requires NVIDIA OCSP answers" in offline.output
    with vendor_server() as (url, state):
        state.ocsp = responder.respond
        env = {**WIDE, "TEEGATE_NVIDIA_OCSP_URL": url + "/ocsp"}
        good = runner.invoke(app, [*args, "--online"], env=env)
        assert good.exit_code == 0, good.output
        assert responder.requests == 4
        responder.revoked.update(responder.serials())
        revoked = runner.invoke(app, [*args, "--online", "--json"], env=env)
    assert revoked.exit_code == 1
    failed = [c for g in json.loads(revoked.output)["components"] for c in g["checks"]
              if not c["ok"]]
    assert {c["name"] for c in failed} == {"gpu.0.revocation", "gpu.1.revocation"}
    assert all("is revoked" in c["detail"] for c in failed)


def test_online_fetches_the_rims_when_the_policy_requires_the_comparison(
        tmp_path: Path) -> None:
    from teegate.attest.gpu import decode_evidence, parse_spdm_evidence, rim_ids
    from teegate.sim.gpu import DevGpu
    from teegate.sim.policy_file import write_development_policy
    from tests.attest.test_gpu_rim import dev_rims, new_signer
    from tests.collateral.vendor_server import vendor_server

    signer = new_signer()
    gpu = DevGpu.load_or_create(tmp_path / "pki")
    base = json.loads(write_development_policy(tmp_path / "pki").read_text())
    base["roots"]["nvidia_rim"] = [signer.root_pem]
    policy = tmp_path / "rim-policy.json"
    policy.write_text(json.dumps({**base, "gpu": {"require_rim": True}}))
    nonce = bytes(range(32))
    payload = tmp_path / "payload.json"
    payload.write_text(gpu.nvidia_payload(nonce, 1))
    args = ["verify", str(payload), "--policy", str(policy), "--nonce", nonce.hex(), "--json"]
    offline = runner.invoke(app, args)
    assert offline.exit_code == 1
    ids = rim_ids(parse_spdm_evidence(decode_evidence(gpu.evidence(nonce))))
    with vendor_server() as (url, state):
        state.rims = dict(zip(ids, dev_rims(signer), strict=True))
        online = runner.invoke(app, [*args, "--online"],
                               env={"TEEGATE_NVIDIA_RIM_URL": url + "/v1/rim/"})
    assert online.exit_code == 0, online.output
    (component,) = json.loads(online.output)["components"]
    assert component["measurements"]["rim_comparison"].startswith("compared")


def test_binary_ccel_event_log_is_replayed() -> None:
    """A GCP TD's quote with its /sys/firmware/acpi/tables/data/CCEL (go-tdx-guest testdata)."""
    gcp = DATA / "tdx" / "go-tdx-guest"
    code, out = _run(
        "--json", "--collateral",
        str(DATA / "tdx" / "zkdcap" / "collateral_tdx_00806f050000_assembled.json"),
        "--now", "1740048927", "--event-log", str(gcp / "ccel_data.dat"),
        str(gcp / "cos-113-tdx-quote.dat"),
    )
    assert code == 0, out
    checks = {c["name"]: c["ok"] for c in json.loads(out)["checks"]}
    assert all(checks[f"eventlog.rtmr{i}"] for i in range(4))


def test_verify_shows_the_model_identity_of_real_dstack_evidence() -> None:
    """Phala's dstack report with its app compose: the measured compose's one image is shown,
    marked as a tag (the JSON verdict lists it in ``model``)."""
    data = Path(__file__).resolve().parent.parent / "data" / "confidential-ai"
    args = ["verify", str(data / "dstack-tdx-attestation-report.json"), "--app-compose",
            str(data / "dstack-app-compose.json")]
    res = CliRunner().invoke(app, args, terminal_width=200)
    assert "quay.io/jupyter/base-notebook (a tag: not pinned by digest)" in res.output
    out = CliRunner().invoke(app, [*args, "--json"])
    doc = json.loads(out.output)
    verdict = doc[0] if isinstance(doc, list) else doc.get("verdict", doc)
    model = verdict["model"]
    assert model["unpinned_images"] == ["quay.io/jupyter/base-notebook"]
    assert model["compose_hash"].startswith("06768e6d")

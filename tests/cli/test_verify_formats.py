"""Evidence in the shapes real users have (issue 13): base64 quotes (Azure), Intel Trust
Authority JSON (GCP), Tinfoil documents, Azure HCL reports, a report with GPU evidence only;
each is verified, or named exactly, never "unrecognised"."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from teegate.attest.formats import parse_hcl_report, parse_ita_evidence
from teegate.cli import app
from teegate.errors import EvidenceError

DATA = Path(__file__).resolve().parents[1] / "data"
TEEKIT = DATA / "tdx" / "teekit"
ZKDCAP = DATA / "tdx" / "zkdcap" / "collateral_tdx_00806f050000_assembled.json"
AZ = DATA / "sev-snp" / "trustee" / "az-snp-vtpm"
AUDIT = Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"
runner = CliRunner()


def _verify(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["verify", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def _checks(doc: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in doc["checks"]}


def test_azure_base64_quote_is_verified(tmp_path: Path) -> None:
    """Azure TDX CVMs run without SEPT_VE_DISABLE: accepted once the policy admits that."""
    policy = tmp_path / "azure.toml"
    policy.write_text("[tdx]\nrequire_sept_ve_disable = false\n")
    code, doc = _verify("--policy", str(policy), "--collateral", str(ZKDCAP),
                        "--now", "1740048927", str(TEEKIT / "tdx-v4-azure"))
    assert code == 0, doc
    assert doc["tcb_status"] == "UpToDate"
    assert doc["measurements"]["mrtd"].startswith("fe27b2aa3a05ec56")
    code, doc = _verify("--collateral", str(ZKDCAP), "--now", "1740048927",
                        str(TEEKIT / "tdx-v4-azure"))
    assert code == 1
    assert [n for n, ok in _checks(doc).items() if not ok] == ["tdx.td_attributes"]


def test_gcp_trust_authority_evidence_binds_its_nonce() -> None:
    code, doc = _verify(str(TEEKIT / "tdx-v4-gcp.json"))
    checks = _checks(doc)
    assert checks["ita.report_data"] is True
    assert checks["tdx.trailing_bytes"] is True  # the 3065 bytes of padding
    assert [n for n, ok in checks.items() if not ok] == ["tdx.collateral"]
    assert code == 1
    # Our own nonce is not what this quote answers.
    _, doc = _verify("--nonce", "ab" * 32, str(TEEKIT / "tdx-v4-gcp.json"))
    assert _checks(doc)["binding.nonce"] is False


def test_trust_authority_nonce_is_bound() -> None:
    obj = json.loads((TEEKIT / "tdx-v4-gcp.json").read_text())
    ita = parse_ita_evidence(obj)
    assert ita.nonce_iat == b"2025-09-11 21:55:22 +0000 UTC"
    from teegate.attest.formats import ita_checks
    from teegate.attest.tdx import parse_quote

    td = parse_quote(ita.quote).td_report
    assert td is not None
    assert hashlib.sha512(ita.nonce_val + ita.nonce_iat).digest() == td.report_data  # type: ignore[operator]
    assert ita_checks(td.report_data, ita, None)[0].ok
    other = parse_ita_evidence({"tdx": {**obj["tdx"], "runtime_data": "AAAA"}})
    assert not ita_checks(td.report_data, other, None)[0].ok
    # Evidence beside the quote that teegate does not read is named, never skipped silently.
    with_gpu = parse_ita_evidence({**obj, "nvgpu": {"evidence": "…"}})
    unread = [c for c in ita_checks(td.report_data, with_gpu, None) if c.name == "ita.unread"]
    assert [c.ok for c in unread] == [False]
    assert "nvgpu" in unread[0].detail


@pytest.mark.parametrize("name", ["hcl-report.bin", "evidence-genoa.json"])
def test_azure_hcl_report_binds_its_runtime_data(name: str) -> None:
    code, doc = _verify("--now", "1756684800", "--policy", str(AUDIT), str(AZ / name))
    assert code == 0, doc
    checks = _checks(doc)
    assert checks["azure.hcl_report"] is True
    assert checks["azure.runtime_data"] is True
    assert "HCLAkPub" in next(c["detail"] for c in doc["checks"]
                              if c["name"] == "azure.runtime_data")


def test_hcl_runtime_data_changed_is_refused(tmp_path: Path) -> None:
    raw = bytearray((AZ / "hcl-report.bin").read_bytes())
    at = raw.index(b'"HCLAkPub"')
    raw[at + 1] = ord("X")  # a different key id, same length
    f = tmp_path / "hcl.bin"
    f.write_bytes(bytes(raw))
    code, doc = _verify("--now", "1756684800", "--policy", str(AUDIT), "--certs",
                        str(AZ / "vcek.pem"), str(f))
    assert code == 1
    assert [n for n, ok in _checks(doc).items() if not ok] == ["azure.runtime_data"]


def test_hcl_report_with_a_tdx_report_is_named(tmp_path: Path) -> None:
    """The TDX form (request type 4, a 1024-byte TDREPORT) is built from the SNP one: no
    public TDX HCL report was found. A TDREPORT is not signed for remote parties."""
    import struct

    raw = (AZ / "hcl-report.bin").read_bytes()
    runtime = raw[0x4D4 : 0x4D4 + 1110]
    header = raw[:12] + struct.pack("<I", 4) + raw[16:0x20]
    tdx = header + bytes(1024) + struct.pack("<IIIII", 1130, 1, 4, 1, 1110) + runtime
    assert parse_hcl_report(tdx).tee == "tdx"
    bad = bytearray(raw)
    bad[12] = 4  # the runtime-data header still says SNP
    with pytest.raises(EvidenceError, match="report type"):
        parse_hcl_report(bytes(bad))
    f = tmp_path / "hcl.bin"
    f.write_bytes(tdx)
    result = runner.invoke(app, ["verify", str(f)])
    assert result.exit_code == 2
    assert "TDREPORT" in " ".join(result.output.split())


def test_tinfoil_documents_are_opened(tmp_path: Path) -> None:
    code, doc = _verify("--tls-key", str(_fp(tmp_path)), "--policy", str(AUDIT),
                        str(DATA / "tinfoil" / "tdx-guest-v1.json"))
    assert code == 1
    checks = _checks(doc)
    assert checks["tinfoil.document"] is True
    assert checks["binding.key"] is True
    assert [n for n, ok in checks.items() if not ok] == ["tdx.collateral"]
    _, doc = _verify("--policy", str(AUDIT), str(DATA / "tinfoil" / "sev-snp-guest-v2.json"))
    assert doc["tee"] == "sev-snp"
    assert _checks(doc)["snp.certificates"] is False  # the VCEK comes from AMD (--online)


def _fp(tmp_path: Path) -> Path:
    f = tmp_path / "fp"
    f.write_text("d9381c169257c7558bc75d76a9e2fb90452071d7f756ef5122c88903bbb46062")
    return f


def test_report_with_only_a_gpu_payload_is_verified_as_gpu_evidence(tmp_path: Path) -> None:
    """NEAR's sample without its CPU quote: GPU evidence alone, and its nonce messages speak
    of our nonce, not of a CPU quote."""
    sample = json.loads((DATA / "nvidia" / "e2e_readme_sample_attestation.json").read_text())
    f = tmp_path / "gpu-only.json"
    f.write_text(json.dumps({"nvidia_payload": sample["nvidia_payload"]}))
    code, doc = _verify("--policy", str(AUDIT), "--now", "1735689600", str(f))
    assert doc["tee"] == "nvidia-gpu"
    assert code == 0, doc
    details = " ".join(c["detail"] for c in doc["checks"] if c["name"] == "gpu.nonce_binding")
    assert "CPU" not in details
    code, doc = _verify("--policy", str(AUDIT), "--now", "1735689600", "--nonce", "ab" * 32,
                        str(f))
    assert code == 1
    bad = next(c for c in doc["checks"] if c["name"] == "gpu.nonce_binding")
    assert not bad["ok"]
    assert "CPU" not in bad["detail"]


def test_report_with_a_base64_intel_quote() -> None:
    """NEAR's e2e sample names its quote intel_quote_b64: read, not 'no CPU evidence'."""
    code, doc = _verify("--policy", str(AUDIT), "--now", "1735689600",
                        str(DATA / "nvidia" / "e2e_readme_sample_attestation.json"))
    assert code == 1
    assert doc["tee"] == "tdx"
    assert "tdx.collateral" in {n for n, ok in _checks(doc).items() if not ok}

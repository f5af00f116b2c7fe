"""`teegate verify` on mutated real inputs, one input kind at a time: the exit code is 0, 1 or
2 and nothing escapes as a traceback (issue 13).

Each case mutates one input of a command that runs on real vectors (the others are left
intact), so the mutation reaches the parser of that input and not only the first check of
another. Mutations are structure-aware (``tests/mutate.py``: a certificate's DER inside PEM, a
quote inside hex, a value inside JSON) and seeded: a failure names the seed and the kind, and
replays exactly. ``TEEGATE_FUZZ_SCALE=N`` runs N times as many.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.cli import app
from tests.mutate import SCALE, mutants

DATA = Path(__file__).resolve().parents[1] / "data"
TDX = DATA / "tdx" / "dcap-qvl"
GOTDX = DATA / "tdx" / "go-tdx-guest"
SNP = DATA / "sev-snp" / "trustee"
GPU = DATA / "nvidia"
DOCS = Path(__file__).resolve().parents[2] / "docs"
runner = CliRunner()


@dataclass(frozen=True)
class Case:
    """A real command whose input ``target`` is replaced by each mutant."""
    kind: str
    target: Path
    args: Callable[[Path], list[str]]  # the mutant's path -> the verify arguments


def _tdx(quote: Path) -> list[str]:
    return ["--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234",
            str(quote)]


CASES = [
    Case("evidence-tdx", TDX / "tdx_quote", _tdx),
    Case("evidence-tdx-hex", TDX / "tdx-quote.hex",
         lambda p: ["--collateral", str(TDX / "near_quote_collateral.json"),
                    "--now", "1752919234", str(p)]),
    Case("evidence-snp", SNP / "test-report.bin",
         lambda p: ["--certs", str(SNP / "test-vcek.der"), "--now", "1756684800", str(p)]),
    Case("evidence-provider-report", DATA / "tdx" / "dstack" /
         "verifier_fixtures_quote-report.json",
         lambda p: ["--policy", str(DOCS / "policy.audit.toml"), str(p)]),
    Case("collateral", TDX / "tdx_quote_collateral.json",
         lambda p: ["--collateral", str(p), "--now", "1752919234", str(TDX / "tdx_quote")]),
    Case("certificates-vcek", SNP / "test-vcek.der",
         lambda p: ["--certs", str(p), "--now", "1756684800", str(SNP / "test-report.bin")]),
    Case("certificates-snp-chain", DATA / "sev-snp" / "virtee-sev" / "cert_chain_milan",
         lambda p: ["--certs", str(p), "--now", "1756684800",
                    str(DATA / "sev-snp" / "virtee-sev" / "report_milan.hex")]),
    Case("certificates-gpu", GPU / "hopperCertChain.txt",
         lambda p: ["--certs", str(p), "--policy", str(DOCS / "policy.audit.toml"),
                    "--now", "1750000000", str(GPU / "hopperAttestationReport.txt")]),
    Case("certificates-gpu-blackwell", GPU / "trustee" / "blackwell_cert_chain_case1.txt",
         lambda p: ["--certs", str(p), "--policy", str(DOCS / "policy.audit.toml"),
                    "--now", "1750000000",
                    str(GPU / "trustee" / "blackwellAttestationReport.txt")]),
    Case("policy", DOCS / "policy.example.toml",
         lambda p: ["--policy", str(p), *_tdx(TDX / "tdx_quote")]),
    Case("event-log-json", DATA / "confidential-ai" / "dstack-simulator-eventlog.json",
         lambda p: ["--event-log", str(p), "--policy", str(DOCS / "policy.audit.toml"),
                    str(DATA / "confidential-ai" / "dstack-simulator-quote.hex")]),
    Case("event-log-ccel", GOTDX / "ccel_data.dat",
         lambda p: ["--event-log", str(p), "--collateral",
                    str(DATA / "tdx" / "zkdcap" / "collateral_tdx_00806f050000_assembled.json"),
                    str(GOTDX / "cos-113-tdx-quote.dat")]),
    Case("evidence-azure-base64", DATA / "tdx" / "teekit" / "tdx-v4-azure",
         lambda p: ["--collateral", str(DATA / "tdx" / "zkdcap" /
                                        "collateral_tdx_00806f050000_assembled.json"),
                    "--now", "1740048927", str(p)]),
    Case("evidence-gcp-ita", DATA / "tdx" / "teekit" / "tdx-v4-gcp.json",
         lambda p: [str(p)]),
    Case("evidence-azure-hcl", DATA / "sev-snp" / "trustee" / "az-snp-vtpm" / "hcl-report.bin",
         lambda p: ["--certs", str(DATA / "sev-snp" / "trustee" / "az-snp-vtpm" / "vcek.pem"),
                    "--now", "1756684800", str(p)]),
    Case("evidence-tinfoil", DATA / "tinfoil" / "tdx-guest-v2.json", lambda p: [str(p)]),
    Case("gpu-payload", GPU / "ppcie_gpu_evidence.json",
         lambda p: ["--policy", str(DOCS / "policy.audit.toml"), "--now", "1750000000",
                    str(p)]),
    Case("gpu-payload-report", GPU / "e2e_readme_sample_attestation.json",
         lambda p: ["--policy", str(DOCS / "policy.audit.toml"), str(p)]),
]
COUNT = 12 * SCALE


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_mutated_input_is_a_verdict_or_malformed_never_a_crash(case: Case,
                                                               tmp_path: Path) -> None:
    data = case.target.read_bytes()
    seed = sum(case.kind.encode())
    # The unmutated command runs to a verdict: the mutants start from working input.
    base = runner.invoke(app, ["verify", *case.args(case.target)])
    assert base.exit_code in (0, 1), (case.kind, base.output)
    path = tmp_path / case.target.name
    for i, mutant in enumerate(mutants(data, seed, COUNT)):
        path.write_bytes(mutant)
        result = runner.invoke(app, ["verify", *case.args(path)])
        where = f"{case.kind} seed {seed} mutant {i}"
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            (where, repr(result.exception))
        assert result.exit_code in (0, 1, 2), (where, result.exit_code, result.output)
        assert "Traceback" not in result.output, (where, result.output)

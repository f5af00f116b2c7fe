"""SEV-SNP verification cost: ms per report, beside the bare ECDSA signature check.

Run: ``.venv/bin/python bench/verify_snp.py``. Floor (issue 2): at most 1.5 ms per report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from benchutil import per_call_ms
from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "sev-snp"
NOW = 1756684800
CASES = {
    "Milan v2": ("trustee/test-report.bin", "trustee/test-vcek.der"),
    "Milan v3 VLEK": ("trustee/test-vlek-report.bin", "trustee/test-vlek.der"),
    "Genoa v5": ("project-oak/derived-genoa-report.bin", "project-oak/derived-genoa-vcek.der"),
    "Turin v5": ("project-oak/derived-turin-report.bin", "project-oak/derived-turin-vcek.der"),
}
FLOOR_MS = 1.5


def _bare_signature(report: bytes, cert: bytes) -> Callable[[], object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = x509.load_der_x509_certificate(cert).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    sig = encode_dss_signature(int.from_bytes(report[0x2A0:0x2D0], "little"),
                               int.from_bytes(report[0x2E8:0x318], "little"))
    return lambda: key.verify(sig, report[:0x2A0], ec.ECDSA(hashes.SHA384()))


def run(runs: int = 300) -> list[tuple[str, float]]:
    """(label, ms per report) for each product, plus the bare signature baseline."""
    policy = Policy.default()
    out: list[tuple[str, float]] = []
    for label, (rep, cert) in CASES.items():
        report, vcek = (DATA / rep).read_bytes(), (DATA / cert).read_bytes()
        if not verify_report(report, vcek, policy=policy, now=NOW).accepted:
            raise SystemExit(f"{label}: vector does not verify")

        def call(r: bytes = report, c: bytes = vcek) -> object:
            return verify_report(r, c, policy=policy, now=NOW)

        out.append((f"snp full verify {label}", per_call_ms(call, runs)))
    report, vcek = (DATA / CASES["Milan v2"][0]).read_bytes(), (DATA / CASES["Milan v2"][1]
                                                                ).read_bytes()
    out.append(("baseline: ECDSA P-384 report signature only", per_call_ms(
        _bare_signature(report, vcek), runs)))
    return out


def main() -> None:
    results = run()
    for label, ms in results:
        print(f"{label:48s} {ms:7.3f} ms")
    worst = max(ms for label, ms in results if label.startswith("snp"))
    verdict = "OK" if worst <= FLOOR_MS else "ABOVE FLOOR"
    print(f"{'worst SNP report (floor 1.5 ms)':48s} {worst:7.3f} ms  {verdict}")


if __name__ == "__main__":
    main()

"""Pure attestation verification: evidence bytes + collateral + policy + now -> Verdict.

Nothing in this package touches the network, the disk or the clock; collateral and ``now``
are parameters.
"""

from teegate.attest.policy import Policy, load_policy
from teegate.attest.snp import SnpCertificates, SnpReport
from teegate.attest.snp import load_certificates as load_snp_certificates
from teegate.attest.snp import parse_report as parse_snp_report
from teegate.attest.snp import verify_report as verify_snp_report
from teegate.attest.verdict import Check, CheckList, Verdict

__all__ = [
    "Check",
    "CheckList",
    "Policy",
    "SnpCertificates",
    "SnpReport",
    "Verdict",
    "load_policy",
    "load_snp_certificates",
    "parse_snp_report",
    "verify_snp_report",
]

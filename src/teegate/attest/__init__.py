"""Pure attestation verification: evidence bytes + collateral + policy + now -> Verdict.

Nothing in this package touches the network, the disk or the clock; collateral and ``now``
are parameters.
"""

from teegate.attest.binding import KNOWN_SAMPLE_NONCES, check_report_data, fresh_nonce
from teegate.attest.eventlog import Event, check_event_log, parse_event_log, replay_rtmrs
from teegate.attest.gpu import (
    NvidiaPayload,
    Rim,
    SpdmEvidence,
    appraise_gpus,
    parse_nvidia_payload,
    parse_rim,
    parse_spdm_evidence,
    verify_gpu_evidence,
    verify_rim,
)
from teegate.attest.policy import Policy, load_policy
from teegate.attest.report import (
    verify_provider_report,
    verify_quote_evidence,
    verify_snp_evidence,
)
from teegate.attest.snp import SnpCertificates, SnpReport
from teegate.attest.snp import load_certificates as load_snp_certificates
from teegate.attest.snp import parse_report as parse_snp_report
from teegate.attest.snp import verify_report as verify_snp_report
from teegate.attest.tdx import Quote, load_quote, parse_quote, verify_quote
from teegate.attest.verdict import Check, CheckList, Verdict

__all__ = [
    "KNOWN_SAMPLE_NONCES",
    "Check",
    "CheckList",
    "Event",
    "NvidiaPayload",
    "Policy",
    "Quote",
    "Rim",
    "SnpCertificates",
    "SnpReport",
    "SpdmEvidence",
    "Verdict",
    "appraise_gpus",
    "check_event_log",
    "check_report_data",
    "fresh_nonce",
    "load_policy",
    "load_quote",
    "load_snp_certificates",
    "parse_event_log",
    "parse_nvidia_payload",
    "parse_quote",
    "parse_rim",
    "parse_snp_report",
    "parse_spdm_evidence",
    "replay_rtmrs",
    "verify_gpu_evidence",
    "verify_provider_report",
    "verify_quote",
    "verify_quote_evidence",
    "verify_rim",
    "verify_snp_evidence",
    "verify_snp_report",
]

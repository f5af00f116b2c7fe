"""Intel TDX and SGX quote verification: parse (``tdx_quote``), verify (dcap-qvl), validate.

dcap-qvl does the cryptography (quote and QE report signatures, PCK chain and CRLs, TCB info
and QE identity, TCB level matching, TD attributes) against the pinned Intel SGX Root CA, or
against a development root the policy names. Every error it can raise becomes a failing check
with a stable name and a reason an operator can act on; then teegate's own policy (allowed TCB
statuses, advisories, collateral age, debug, measurements) is applied to the verified result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import dcap_qvl

from teegate.attest.policy import Policy
from teegate.attest.tdx_collateral import (
    INTEL_ROOT_SHA256,
    Chain,
    Collateral,
    intel_root_der,
    parse_chain,
    parse_collateral,
    policy_roots,
)
from teegate.attest.tdx_quote import (
    TD_ATTR_SEPT_VE_DISABLE,
    CertificationData,
    Quote,
    QuoteHeader,
    SgxReport,
    SignatureData,
    TdReport,
    load_quote,
    parse_quote,
)
from teegate.attest.verdict import Check, CheckList, Verdict, window
from teegate.errors import EvidenceError

__all__ = [
    "CertificationData",
    "Quote",
    "QuoteHeader",
    "SgxReport",
    "SignatureData",
    "TdReport",
    "dcap_error_check",
    "load_quote",
    "parse_quote",
    "quote_measurements",
    "verify_quote",
]

# dcap-qvl error text (substring, first match wins) -> (check suffix, what it means).
_DCAP_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("TCBInfo expired", "tcb_info",
     "the TCB info collateral has expired at this time: fetch fresh collateral"),
    ("TCBInfo issue date is in the future", "tcb_info",
     "the TCB info collateral was issued after the verification time"),
    ("tcb_info in quote_collateral", "tcb_info",
     "the TCB info is not signed by Intel's TCB signing key"),
    ("TCB info in the collateral", "tcb_info",
     "the TCB info is for the other TEE type (SGX vs TDX)"),
    ("TCB Info", "tcb_info", "the TCB info collateral is unusable"),
    ("Fmspc mismatch", "fmspc",
     "the collateral is for a different platform family (FMSPC) than the quote"),
    ("QE Identity expired", "qe_identity",
     "the QE identity collateral has expired at this time: fetch fresh collateral"),
    ("QE Identity issue date is in the future", "qe_identity",
     "the QE identity collateral was issued after the verification time"),
    ("qe_identity in quote_collateral", "qe_identity",
     "the QE identity is not signed by Intel's TCB signing key"),
    ("QE Identity", "qe_identity", "the QE identity collateral does not fit this quote"),
    ("QE MRSIGNER", "qe_identity", "the quoting enclave is not signed by Intel"),
    ("QE ISVPRODID", "qe_identity", "the quoting enclave is not Intel's (product ID)"),
    ("QE MISCSELECT", "qe_identity", "the quoting enclave's MISCSELECT is not Intel's"),
    ("QE ATTRIBUTES", "qe_identity", "the quoting enclave's attributes are not Intel's"),
    ("QE TCB", "qe_identity", "the quoting enclave's TCB is too old"),
    ("QE report validation", "qe_identity", "the QE report does not match the QE identity"),
    ("No TCB levels found in QE Identity", "qe_identity", "the QE identity has no TCB levels"),
    ("ISV enclave report signature is invalid", "quote_signature",
     "the quote signature over header and report does not verify: the report was altered "
     "or was not signed by this quoting enclave"),
    ("Signature is invalid for qe_report", "qe_report_signature",
     "the QE report is not signed by the PCK key: the quoting enclave is not vouched for"),
    ("QE report hash mismatch", "qe_report_data",
     "the QE report does not bind the attestation key and QE auth data"),
    ("QE auth data", "qe_report_data", "the QE auth data is malformed"),
    ("No matching TCB level found", "tcb_level",
     "the platform's TCB (CPU SVN, PCE SVN, TDX module) is older than every level Intel "
     "lists: update the platform's firmware or use collateral that lists it"),
    ("TCB level mismatch", "tcb_level", "the platform's TCB matches no level Intel lists"),
    ("CertRevoked", "pck_chain", "a certificate in the PCK chain is revoked by Intel's CRL"),
    ("TCB status is invalid", "tcb_status", "Intel lists this platform's TCB as Revoked"),
    ("Debug mode is enabled", "debug",
     "the TD or enclave runs in debug mode: its memory is readable by the host"),
    ("SEPT_VE_DISABLE", "td_attributes",
     "TD attribute SEPT_VE_DISABLE is not set: the TD can be attacked through #VE"),
    ("Reserved bits in TD attributes", "td_attributes", "reserved TD attribute bits are set"),
    ("TD profiling", "td_attributes", "TD profiling (PERFMON) is enabled"),
    ("TD migration", "td_attributes", "TD migration is enabled"),
    ("SERVTD_EXT", "td_attributes", "SERVTD_EXT is enabled"),
    ("MR service TD", "td_attributes", "MRSERVICETD is not zero: a service TD is bound"),
    ("TDX module", "tdx_module",
     "the TDX module (MRSIGNERSEAM, SEAM attributes or ISVSVN) is not one Intel lists"),
    ("Unknown QE vendor ID", "header", "the quote was not produced by Intel's quoting enclave"),
    ("Unsupported DCAP", "header", "the quote version or attestation key type is unsupported"),
    ("Unsupported TEE type", "header", "the quote's TEE type is unsupported"),
    ("must have version", "header", "the quote version does not fit its TEE type"),
    ("CrlExpired", "crl", "a CRL in the collateral has expired: fetch fresh collateral"),
    ("revocation list", "crl", "a CRL in the collateral is unusable or expired"),
    ("CRL", "crl", "a CRL in the collateral is unusable"),
    ("CertNotValidYet", "pck_chain",
     "a certificate in the chain is not valid yet at this time"),
    ("CertExpired", "pck_chain", "a certificate in the chain has expired"),
    ("UnknownIssuer", "pck_chain", "the chain does not lead to the trusted root"),
    ("certificate", "pck_chain", "the PCK certificate chain does not verify"),
    ("Certificate", "pck_chain", "the PCK certificate chain does not verify"),
    ("cert type", "pck_chain", "the quote carries no usable PCK certificate chain"),
    ("root ca", "root", "the root CA does not parse"),
)


def dcap_error_check(message: str) -> tuple[str, str]:
    """(check suffix, operator-facing reason) for a dcap-qvl error message."""
    text = message.removeprefix("Verification failed: ")
    compact = re.sub(r"\s+", " ", text).strip()
    for needle, suffix, meaning in _DCAP_ERRORS:
        if needle in text:
            return suffix, f"{meaning} (dcap-qvl: {compact})"
    return "dcap", f"dcap-qvl rejected the quote: {compact}"


def quote_measurements(quote: Quote) -> dict[str, str]:
    """Measured identity of the TD or enclave, lower-case hex."""
    td, sgx = quote.td_report, quote.sgx_report
    if td is not None:
        out = {
            "mrtd": td.mrtd, "rtmr0": td.rtmr0, "rtmr1": td.rtmr1, "rtmr2": td.rtmr2,
            "rtmr3": td.rtmr3, "mrconfigid": td.mrconfigid, "mrowner": td.mrowner,
            "mrownerconfig": td.mrownerconfig, "mrseam": td.mrseam,
            "mrsignerseam": td.mrsignerseam, "td_attributes": td.td_attributes,
            "xfam": td.xfam, "tee_tcb_svn": td.tee_tcb_svn, "report_data": td.report_data,
        }
        if td.tee_tcb_svn2 is not None and td.mrservicetd is not None:
            out["tee_tcb_svn2"] = td.tee_tcb_svn2
            out["mrservicetd"] = td.mrservicetd
        return {k: v.hex() for k, v in out.items()}
    assert sgx is not None
    return {
        "mrenclave": sgx.mrenclave.hex(), "mrsigner": sgx.mrsigner.hex(),
        "isv_prod_id": str(sgx.isv_prod_id), "isv_svn": str(sgx.isv_svn),
        "attributes": sgx.attributes.hex(), "cpu_svn": sgx.cpu_svn.hex(),
        "config_id": sgx.config_id.hex(), "report_data": sgx.report_data.hex(),
    }


def _root(chain: Chain, policy: Policy, p: str, checks: CheckList) -> bytes | None:
    """The root DER to verify against, or None after a failing ``<tee>.root`` check."""
    der = chain.root_der
    if der == intel_root_der():
        checks.passed(f"{p}.root", f"PCK chain ends in Intel's SGX Root CA (pinned, sha256 "
                                   f"{INTEL_ROOT_SHA256[:16]}…)")
        return der
    fp = hashlib.sha256(der or b"").hexdigest()
    if der is not None and der in policy_roots(policy.roots.intel):
        checks.passed(f"{p}.root", f"PCK chain ends in {chain.root_name} (sha256 {fp[:16]}…)")
        checks.passed(
            f"{p}.development_root",
            f"rests on a development root named by the policy, not Intel's: {chain.root_name} "
            f"(sha256 {fp[:16]}…)",
        )
        return der
    checks.failed(
        f"{p}.root",
        f"PCK chain ends in {chain.root_name} (sha256 {fp[:16]}…), which is neither Intel's "
        "SGX Root CA nor a root the policy names",
    )
    return None


def _policy_checks(
    quote: Quote, measured: Mapping[str, str], status: str, advisories: tuple[str, ...],
    col: Collateral, policy: Policy, now: int, p: str, checks: CheckList,
) -> None:
    allowed = policy.tcb.allowed_statuses
    checks.add(f"{p}.tcb_status", status in allowed,
               f"TCB status {status} is allowed by the policy" if status in allowed else
               f"TCB status {status} is not allowed (policy allows {', '.join(sorted(allowed))})"
               ": the platform needs a firmware/microcode update or configuration change")
    bad = sorted(set(advisories) & policy.tcb.rejected_advisories)
    checks.add(f"{p}.advisories", not bad,
               f"rejected advisories apply: {', '.join(bad)}" if bad else
               f"no rejected advisory applies ({', '.join(advisories) or 'none listed'})")
    if policy.tcb.max_collateral_age is not None:
        issued = {"TCB info": col.tcb_issue, "QE identity": col.qe_issue}
        if col.pck_crl_issue is not None:
            issued["PCK CRL"] = col.pck_crl_issue
        oldest = min(issued, key=lambda k: issued[k])
        age = now - issued[oldest]
        ok = age <= policy.tcb.max_collateral_age
        checks.add(f"{p}.collateral_age", ok,
                   f"oldest collateral part ({oldest}) issued {age} s before now (limit "
                   f"{policy.tcb.max_collateral_age} s)"
                   + ("" if ok else ": fetch fresh collateral"))
    # Debug is refused whatever the policy says (policy.tcb.allow_debug is for SEV-SNP).
    debug = quote.debug
    checks.add(f"{p}.debug", not debug,
               "debug mode is off" if not debug else "debug mode is on: memory is readable")
    pinned = policy.pinned_tees()
    if pinned and quote.tee not in pinned:
        checks.failed(f"{p}.measurements",
                      f"the policy pins {', '.join(sorted(pinned))} measurements only, so it "
                      f"accepts no {quote.tee} evidence")
    regs: Mapping[str, frozenset[str]]
    if quote.td_report is not None:
        t = policy.tdx
        regs = {"mrtd": t.mrtd, "rtmr0": t.rtmr0, "rtmr1": t.rtmr1, "rtmr2": t.rtmr2,
                "rtmr3": t.rtmr3, "mrconfigid": t.mrconfigid, "mrseam": t.mrseam}
    else:
        regs = {"mrenclave": policy.tdx.mrenclave, "mrsigner": policy.tdx.mrsigner}
    for name, allowed_values in regs.items():
        if not allowed_values:
            continue
        value = measured[name]
        ok = value in allowed_values
        checks.add(f"{p}.{name}", ok, f"{name.upper()} {value[:24]}… is " + (
            "one the policy allows" if ok else
            f"not among the {len(allowed_values)} value(s) the policy allows"))


def _td_attribute_check(td: TdReport, p: str, checks: CheckList) -> None:
    """teegate's own TD-attribute rules, beside dcap-qvl's, so a lenient dcap-qvl release
    cannot turn them off: SEPT_VE_DISABLE set, no service TD bound (TD report 1.5)."""
    problems = []
    if not td.attributes & TD_ATTR_SEPT_VE_DISABLE:
        problems.append("SEPT_VE_DISABLE is not set: the TD can be attacked through #VE")
    if td.mrservicetd is not None and any(td.mrservicetd):
        problems.append("MRSERVICETD is not zero: a service TD is bound to this TD")
    checks.add(f"{p}.td_attributes", not problems, "; ".join(problems) if problems else
               f"TD attributes {td.td_attributes.hex()} are acceptable (SEPT_VE_DISABLE set"
               + (", no service TD)" if td.mrservicetd is not None else ")"))


def verify_quote(raw: bytes, collateral: str, *, policy: Policy, now: int) -> Verdict:
    """Verify a TDX or SGX quote with its dcap-qvl collateral JSON at time ``now``.

    Malformed quote bytes raise ``EvidenceError``; everything else, including unusable
    collateral, becomes a failing check in the returned verdict. The quote alone carries no
    event log and no GPU evidence, so a policy requiring either (dstack pins,
    ``require_event_log``, ``gpu.mode = "required"``) fails ``<tee>.context`` here; use
    ``report.verify_quote_evidence`` or ``report.verify_provider_report`` for those.
    """
    verdict = _verify_quote(raw, collateral, policy=policy, now=now)
    d = policy.dstack
    needs = [name for name, wanted in (
        ("dstack measurements", bool(d.compose_hashes or d.app_ids or d.os_image_hashes)),
        ("an event log", d.require_event_log),
        ("GPU evidence", policy.gpu.mode == "required"),
    ) if wanted]
    if not needs:
        return verdict
    return verdict.with_checks([Check(
        f"{verdict.tee}.context", False,
        f"the policy requires {', '.join(needs)}, which a quote alone does not carry: verify "
        "it with verify_quote_evidence (event log) or verify_provider_report")])


def _verify_quote(raw: bytes, collateral: str, *, policy: Policy, now: int) -> Verdict:
    """``verify_quote`` for callers that apply the dstack and GPU policy sections themselves."""
    raw = load_quote(raw)
    quote = parse_quote(raw)
    p = quote.tee
    checks = CheckList()
    measurements = quote_measurements(quote)
    identity: dict[str, str] = {}
    lo: int | None = None
    hi: int | None = None

    def verdict(status: str | None = None, advisories: tuple[str, ...] = ()) -> Verdict:
        return Verdict(tee=p, checks=checks.checks, tcb_status=status, advisory_ids=advisories,
                       measurements=measurements, identity=identity,
                       report_data=measurements["report_data"], not_before=lo, not_after=hi)

    try:
        col = parse_collateral(collateral)
    except EvidenceError as e:
        checks.failed(f"{p}.collateral", f"{e}: give Intel collateral for this quote")
        return verdict()
    chain_pem = col.pck_chain_pem or quote.pck_chain_pem
    if chain_pem is None:
        cert_type = quote.signature_data.certification.cert_type
        checks.failed(
            f"{p}.pck_chain",
            f"the quote carries certification data type {cert_type} (no PCK chain) and the "
            "collateral has no pck_certificate_chain",
        )
        return verdict()
    try:
        chain = parse_chain(chain_pem)
    except EvidenceError as e:
        checks.failed(f"{p}.pck_chain", str(e))
        return verdict()
    lo, hi = window((col.not_before, col.not_after), (chain.not_before, chain.not_after))
    if chain.fmspc:
        identity["fmspc"] = chain.fmspc
    if chain.ca:
        identity["ca"] = chain.ca
    root = _root(chain, policy, p, checks)
    if root is None:
        return verdict()
    try:
        report = dcap_qvl.verify_with_root_ca(raw, col.qvl, root, now)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # ValueError, or a Rust panic (pyo3 PanicException)
        name, detail = dcap_error_check(str(e))
        checks.failed(f"{p}.{name}", detail)
        return verdict()
    status = str(report.status)
    advisories = tuple(str(a) for a in report.advisory_ids)
    # dcap-qvl checked each part at ``now``; teegate checks the window it reports as well, so
    # a verdict is never accepted outside the window it tells callers to rely on.
    inside = (lo is None or lo <= now) and (hi is None or now <= hi)
    checks.add(f"{p}.validity", inside,
               f"collateral and certificates are valid {lo} .. {hi} (unix), now {now}"
               + ("" if inside else ": outside that window"))
    for name, detail in (
        ("pck_chain", "PCK certificate chain verifies to the root, none revoked"),
        ("tcb_info", "TCB info is signed by Intel and valid at this time"),
        ("qe_identity", "QE identity is signed by Intel and matches the quoting enclave"),
        ("qe_report_signature", "QE report is signed by the PCK key and binds the "
                                "attestation key"),
        ("quote_signature", "quote signature over header and report verifies"),
        ("tcb_level", f"platform TCB matches a level Intel lists: {status}"),
    ):
        checks.passed(f"{p}.{name}", detail)
    if quote.td_report is not None:
        _td_attribute_check(quote.td_report, p, checks)
    _policy_checks(quote, measurements, status, advisories, col, policy, now, p, checks)
    return verdict(status, advisories)

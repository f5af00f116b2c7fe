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

from teegate.attest.guard import malformed
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
    CertificationData,
    Quote,
    QuoteHeader,
    SgxReport,
    SignatureData,
    TdReport,
    load_quote,
    parse_quote,
    trailing_note,
)
from teegate.attest.tdx_tcb import attribute_problems, tdx_tcb_status
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


# dcap-qvl ``verify_impl`` step order (src/verify.rs @ 9bffe30, as in PyPI 0.7.0): a failure at
# one step means every earlier step passed, so a verdict that stops early still says so.
_DCAP_STEPS: tuple[tuple[str, str], ...] = (
    ("tcb_info", "TCB info is signed by Intel and valid at this time"),
    ("qe_identity", "QE identity is signed by Intel and valid at this time"),
    ("pck_chain", "PCK certificate chain verifies to the root, none revoked"),
    ("qe_report_signature", "QE report is signed by the PCK key"),
    ("qe_report_data", "QE report binds the attestation key and QE auth data"),
    ("qe_enclave", "the quoting enclave matches Intel's QE identity"),
    ("quote_signature", "quote signature over header and report verifies"),
)
# dcap-qvl message -> the step it stops at: the index into _DCAP_STEPS, len() for the TCB
# level, len()+1 for the TCB status, len()+2 for the TD attributes (its last check).
_STAGES: tuple[tuple[str, int], ...] = (
    ("Debug mode is enabled", 9), ("SEPT_VE_DISABLE", 9), ("Reserved bits in TD", 9),
    ("Invalid MR service TD", 9), ("TCB status is invalid", 8),
    ("No matching TCB level", 7), ("Fmspc mismatch", 7), ("TCB info in the collateral", 7),
    ("TDX module", 7), ("component count mismatch", 7),
    ("ISV enclave report signature", 6),
    ("QE MRSIGNER", 5), ("QE report validation", 5), ("QE ISVPRODID", 5),
    ("QE MISCSELECT", 5), ("QE ATTRIBUTES", 5), ("QE ISVSVN", 5),
    ("No TCB levels found in QE Identity", 5),
    ("QE report hash mismatch", 4), ("Signature is invalid for qe_report", 3),
)


_TCB_STATUS = 8
_ATTRIBUTES = 9
_LEVEL_UNREPORTED = ("platform TCB matches a level Intel lists (dcap-qvl checks this before the "
                     "step that stopped it, and does not report the status then)")


def dcap_stage(message: str) -> int:
    """How many of dcap-qvl's steps passed before ``message`` stopped it (0 when unsure)."""
    for needle, stage in _STAGES:
        if needle in message:
            return stage
    return 0


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


def _td_attribute_check(td: TdReport, policy: Policy, p: str, checks: CheckList,
                        dcap: str | None = None) -> bool:
    """teegate's TD-attribute rules, beside dcap-qvl's, so a lenient dcap-qvl release cannot
    turn them off: no debug, no reserved bits, SEPT_VE_DISABLE set and no service TD bound
    unless the policy admits them. The detail names each rule that decided."""
    t = policy.tdx
    found = attribute_problems(td)
    found.pop("debug", None)  # its own check, tdx.debug, never admitted
    admitted = {"sept_ve_disable": not t.require_sept_ve_disable,
                "service_td": t.allow_service_td}
    refused = [f"{text} (policy tdx.{_RULE[k]})" if k in _RULE else text
               for k, text in found.items() if not admitted.get(k, False)]
    allowed = [f"{text}: admitted by policy tdx.{_RULE[k]} = {str(not _DEFAULT[k]).lower()}"
               for k, text in found.items() if admitted.get(k, False)]
    if refused:
        said = f" (dcap-qvl: {dcap.removeprefix('Verification failed: ')})" if dcap else ""
        return checks.failed(f"{p}.td_attributes", "; ".join(refused + allowed) + said)
    rules = ["no debug, no reserved bits",
             "SEPT_VE_DISABLE set" if "sept_ve_disable" not in found else "",
             "no service TD" if td.mrservicetd is not None and "service_td" not in found
             else ""]
    ok = ", ".join(r for r in rules if r)
    return checks.passed(f"{p}.td_attributes",
                         f"TD attributes {td.td_attributes.hex()} are acceptable ({ok})"
                         + ("; " + "; ".join(allowed) if allowed else ""))


# Policy field per dcap-qvl rule teegate lets a policy admit, and its default.
_RULE = {"sept_ve_disable": "require_sept_ve_disable", "service_td": "allow_service_td"}
_DEFAULT = {"sept_ve_disable": True, "service_td": False}


def _admitted_attributes(
    quote: Quote, td: TdReport, message: str, chain_pem: bytes, col: Collateral,
    policy: Policy, p: str, checks: CheckList,
) -> tuple[str, tuple[str, ...]] | None:
    """(status, advisories) when dcap-qvl stopped only on a TD attribute the policy admits.

    dcap-qvl checks TD attributes after every signature, chain and TCB check (``verify_impl``
    step order) and reports no TCB status then; teegate recomputes it from the collateral that
    call verified (``tdx_tcb``). None means the dcap-qvl error stands.
    """
    found = attribute_problems(td)
    if not found or "debug" in found:  # never admitted, or a rule teegate does not know
        checks.passed(f"{p}.tcb_level", _LEVEL_UNREPORTED)
        name, detail = dcap_error_check(message)
        checks.failed(f"{p}.{name}", detail)
        return None
    if not _td_attribute_check(td, policy, p, checks, message):
        checks.passed(f"{p}.tcb_level", _LEVEL_UNREPORTED)
        return None
    try:
        ext = dcap_qvl.parse_pck_extension_from_pem(chain_pem)
        result = tdx_tcb_status(quote, col.tcb_info, col.qe_identity, bytes(ext.cpu_svn),
                                int(ext.pce_svn))
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:
        checks.failed(f"{p}.tcb_level", f"the TCB status could not be recomputed: {e}")
        return None
    checks.passed(f"{p}.tcb_level",
                  f"platform TCB matches a level Intel lists: {result.status} (recomputed by "
                  "teegate: dcap-qvl stops on the TD attribute before it reports the status)")
    return result.status, result.advisories


@malformed("the TDX/SGX quote or its collateral")
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
    note = trailing_note(quote)
    if note is not None:
        checks.passed(f"{p}.trailing_bytes", note)
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
        if col.pck_chain_pem is None:  # the quote's own certification data: malformed quote
            raise EvidenceError(f"the quote's certification data (type 5): {e}") from e
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
        report = dcap_qvl.verify_with_root_ca(raw[: quote.size], col.qvl, root, now)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # ValueError, or a Rust panic (pyo3 PanicException)
        message = str(e)
        stage = dcap_stage(message)
        for name, detail in _DCAP_STEPS[:stage]:
            checks.passed(f"{p}.{name}", detail + " (dcap-qvl checks this before the step "
                                                  "that stopped it)")
        if stage == _ATTRIBUTES and quote.td_report is not None:
            admitted = _admitted_attributes(quote, quote.td_report, message, chain_pem, col,
                                            policy, p, checks)
            if admitted is None:
                return verdict()
            status, advisories = admitted
        else:
            if stage >= _TCB_STATUS:
                checks.passed(f"{p}.tcb_level", _LEVEL_UNREPORTED)
            name, detail = dcap_error_check(message)
            checks.failed(f"{p}.{name}", detail)
            return verdict()
    else:
        status = str(report.status)
        advisories = tuple(str(a) for a in report.advisory_ids)
        for name, detail in _DCAP_STEPS:
            checks.passed(f"{p}.{name}", detail)
        checks.passed(f"{p}.tcb_level", f"platform TCB matches a level Intel lists: {status}")
        if quote.td_report is not None:
            _td_attribute_check(quote.td_report, policy, p, checks)
    # dcap-qvl checked each part at ``now``; teegate checks the window it reports as well, so
    # a verdict is never accepted outside the window it tells callers to rely on.
    inside = (lo is None or lo <= now) and (hi is None or now <= hi)
    checks.add(f"{p}.validity", inside,
               f"collateral and certificates are valid {lo} .. {hi} (unix), now {now}"
               + ("" if inside else ": outside that window"))
    _policy_checks(quote, measurements, status, advisories, col, policy, now, p, checks)
    return verdict(status, advisories)

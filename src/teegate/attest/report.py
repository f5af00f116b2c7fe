"""A provider's attestation report, verified as one verdict.

The report API of NEAR AI Cloud, RedPill/Phala and private-ml-sdk nodes (REFERENCE §7.1) hands
out the CPU evidence (``intel_quote`` hex, or ``snp_report`` + ``snp_certificates``), the
dstack ``event_log`` and ``info``, the GPU ``nvidia_payload`` and the ``signing_address`` of
the key that signs responses. The composed verdict is accepted only when the TEE evidence
verifies, the event log replays to the quote, report_data binds that key and our nonce, and
the GPU evidence satisfies the policy's GPU mode.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from teegate.attest.binding import check_report_data, identity_bytes
from teegate.attest.eventlog import check_event_log, parse_event_log
from teegate.attest.policy import Policy
from teegate.attest.tdx import load_quote, parse_quote, quote_measurements, verify_quote
from teegate.attest.verdict import Check, Verdict
from teegate.errors import EvidenceError

__all__ = ["verify_provider_report"]

GpuAppraiser = Callable[..., tuple[list[Check], tuple[Verdict, ...]]]


def _str_field(report: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = report.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise EvidenceError(f"report field {name!r} must be a string")
        return value
    return None


def _collateral_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value)
    raise EvidenceError("report field 'collateral' must be dcap-qvl collateral JSON")


def _tcb_info(report: Mapping[str, Any]) -> Mapping[str, Any]:
    info = report.get("info")
    if not isinstance(info, Mapping):
        return {}
    tcb = info.get("tcb_info")
    if isinstance(tcb, str):
        try:
            tcb = json.loads(tcb)
        except (json.JSONDecodeError, RecursionError):
            raise EvidenceError("report info.tcb_info is not JSON") from None
    return tcb if isinstance(tcb, Mapping) else {}


def _cpu_verdict(
    report: Mapping[str, Any], policy: Policy, now: int, collateral: str | None,
) -> Verdict:
    quote_hex = _str_field(report, "intel_quote", "quote")
    snp_hex = _str_field(report, "snp_report")
    if quote_hex is not None and snp_hex is not None:
        raise EvidenceError("report carries both an Intel quote and an SEV-SNP report")
    if snp_hex is not None:
        from teegate.attest.snp import verify_report

        certs = _str_field(report, "snp_certificates")
        return verify_report(snp_hex.encode("ascii", "replace"),
                             certs.encode("ascii", "replace") if certs else None,
                             policy=policy, now=now)
    if quote_hex is None:
        raise EvidenceError("report has no CPU evidence (intel_quote, quote or snp_report)")
    raw = load_quote(quote_hex)
    text = collateral if collateral is not None else _collateral_text(report.get("collateral"))
    if text is None:
        quote = parse_quote(raw)
        return Verdict(
            tee=quote.tee,
            checks=(Check(f"{quote.tee}.collateral", False,
                          "no Intel collateral for this quote: give dcap-qvl collateral JSON "
                          "(or fetch it online)"),),
            measurements=quote_measurements(quote),
            report_data=quote.report_data.hex(),
        )
    return verify_quote(raw, text, policy=policy, now=now)


def _event_checks(
    report: Mapping[str, Any], cpu: Verdict, policy: Policy, app_compose: bytes | None,
) -> tuple[list[Check], dict[str, str]]:
    if cpu.tee != "tdx":
        if policy.dstack.require_event_log:
            return [Check("eventlog.present", False,
                          f"the policy requires a dstack event log; {cpu.tee} has none")], {}
        return [], {}
    raw_log = report.get("event_log")
    if raw_log is not None and not isinstance(raw_log, (str, list)):
        raise EvidenceError("report field 'event_log' must be a JSON string or a list")
    events = parse_event_log(raw_log) if raw_log not in (None, "", []) else []
    if app_compose is None:
        doc = _tcb_info(report).get("app_compose")
        if isinstance(doc, str):
            app_compose = doc.encode("utf-8")
    return check_event_log(cpu.measurements, events, policy=policy, app_compose=app_compose)


def _gpu_appraiser() -> GpuAppraiser | None:
    """``teegate.attest.gpu.appraise_gpus``, imported lazily (it pulls in the GPU stack)."""
    try:
        module = importlib.import_module("teegate.attest.gpu")
    except ImportError:
        return None
    return cast(GpuAppraiser, module.appraise_gpus)


def _gpu_checks(
    report: Mapping[str, Any], nonce: bytes | None, policy: Policy, now: int,
) -> tuple[list[Check], tuple[Verdict, ...]]:
    payload = report.get("nvidia_payload")
    if payload is not None and not isinstance(payload, (str, Mapping)):
        raise EvidenceError("report field 'nvidia_payload' must be a JSON string or object")
    appraise = _gpu_appraiser()
    if appraise is None:
        # TODO(lead): teegate.attest.gpu is not installed in this tree; until it is, GPU
        # evidence is not appraised and a policy that requires a GPU fails closed here.
        if policy.gpu.mode == "required":
            return [Check("gpu.verifier", False,
                          "the policy requires GPU evidence but no GPU verifier is available")], ()
        return [], ()
    checks, gpus = appraise(payload or None, nonce=nonce, policy=policy, now=now)
    return list(checks), tuple(gpus)


def verify_provider_report(
    report: Mapping[str, Any],
    *,
    nonce: bytes | None,
    policy: Policy,
    now: int,
    collateral: str | None = None,
    app_compose: bytes | None = None,
) -> Verdict:
    """Verify a provider attestation report (NEAR AI / RedPill / private-ml-sdk shape).

    ``nonce`` is the one we sent; ``collateral`` (dcap-qvl JSON) overrides a ``collateral``
    field in the report; ``app_compose`` overrides ``info.tcb_info.app_compose``. Malformed
    reports raise ``EvidenceError``; everything else is a named check in the verdict.
    """
    if not isinstance(report, Mapping):
        raise EvidenceError("an attestation report must be a JSON object")
    cpu = _cpu_verdict(report, policy, now, collateral)
    event_checks, dstack = _event_checks(report, cpu, policy, app_compose)

    algo = _str_field(report, "signing_algo") or "ecdsa"
    key = _str_field(report, "signing_address", "signing_public_key")
    binding: list[Check]
    if key is None:
        binding = [Check("binding.key", False, "the report names no signing_address"),
                   Check("binding.nonce", False, "no signing key to bind the nonce to")]
    elif cpu.report_data is None:
        binding = [Check("binding.key", False, "the evidence carries no report_data"),
                   Check("binding.nonce", False, "the evidence carries no report_data")]
    else:
        binding = check_report_data(bytes.fromhex(cpu.report_data), signing_key=key,
                                    nonce=nonce, signing_algo=algo, policy=policy)
    request_nonce = _str_field(report, "request_nonce")
    if nonce is not None and request_nonce is not None:
        ok = request_nonce.lower().removeprefix("0x") == nonce.hex()
        binding.append(Check("binding.request_nonce", ok,
                             "the report answers our nonce" if ok else
                             "the report's request_nonce is not the nonce we sent"))

    gpu_checks, gpus = _gpu_checks(report, nonce, policy, now)
    raw_key = identity_bytes(key, algo) if key is not None else None
    bound = raw_key.hex() if raw_key is not None else (
        key.lower().removeprefix("0x") if key else None)
    return Verdict(
        tee=cpu.tee,
        checks=cpu.checks + tuple(event_checks) + tuple(binding) + tuple(gpu_checks),
        tcb_status=cpu.tcb_status,
        advisory_ids=cpu.advisory_ids,
        measurements=cpu.measurements,
        identity={**cpu.identity, **dstack},
        report_data=cpu.report_data,
        bound_key=bound,
        nonce=nonce.hex() if nonce is not None else None,
        not_before=cpu.not_before,
        not_after=cpu.not_after,
        components=cpu.components + gpus,
    )

"""A provider's attestation report, verified as one verdict.

The report API of NEAR AI Cloud, RedPill/Phala and private-ml-sdk nodes (REFERENCE §7.1) hands
out the CPU evidence (``intel_quote`` hex, or ``snp_report`` + ``snp_certificates``), the
dstack ``event_log`` and ``info``, the GPU ``nvidia_payload`` and the ``signing_address`` of
the key that signs responses. The composed verdict is accepted only when the TEE evidence
verifies, the event log replays to the quote, report_data binds that key and our nonce, and
the GPU evidence satisfies the policy's GPU mode.

Bare CPU evidence (a quote or SNP report with no report around it, as ``teegate verify`` is
often given) goes through ``verify_quote_evidence`` / ``verify_snp_evidence``, which apply the
same policy sections: nothing the caller or the policy asked for is skipped silently.
"""

from __future__ import annotations

import hmac
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from teegate import safejson
from teegate.attest.binding import (
    NONCE_SIZE,
    check_report_data,
    check_tls_binding,
    identity_bytes,
    is_sample_nonce,
)
from teegate.attest.eventlog import Event, check_event_log, parse_event_log
from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.attest.tdx import _verify_quote, load_quote, parse_quote, quote_measurements
from teegate.attest.tdx_quote import trailing_note
from teegate.attest.verdict import Check, Verdict, window
from teegate.errors import EvidenceError

__all__ = [
    "pin_kind_check",
    "verify_provider_report",
    "verify_quote_evidence",
    "verify_snp_evidence",
]

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
            tcb = safejson.loads(tcb)
        except json.JSONDecodeError:
            raise EvidenceError("report info.tcb_info is not JSON") from None
    return tcb if isinstance(tcb, Mapping) else {}


def pin_kind_check(verdict: Verdict, policy: Policy) -> Verdict:
    """Add a failing ``<tee>.measurements`` when the policy pins measurements only for other
    TEE kinds (``Policy.pinned_tees``); TDX/SGX quotes get this from ``verify_quote``."""
    pinned = policy.pinned_tees()
    prefix = {"sev-snp": "snp"}.get(verdict.tee, verdict.tee)
    name = f"{prefix}.measurements"
    if not pinned or verdict.tee in pinned or verdict.check(name) is not None:
        return verdict
    return verdict.with_checks([Check(
        name, False, f"the policy pins {', '.join(sorted(pinned))} measurements only, so it "
                     f"accepts no {verdict.tee} evidence")])


def _quote_verdict(raw: bytes, collateral: str | None, policy: Policy, now: int) -> Verdict:
    """The quote's own verdict, or one failing ``<tee>.collateral`` check without collateral."""
    if collateral is None:
        quote = parse_quote(raw)
        note = trailing_note(quote)
        return Verdict(
            tee=quote.tee,
            checks=((Check(f"{quote.tee}.trailing_bytes", True, note),) if note else ()) + (
                Check(f"{quote.tee}.collateral", False,
                      "no Intel collateral for this quote: give dcap-qvl collateral JSON "
                      "(teegate verify --collateral FILE, or --online to fetch it)"),),
            measurements=quote_measurements(quote),
            report_data=quote.report_data.hex(),
        )
    return _verify_quote(raw, collateral, policy=policy, now=now)


def _cpu_verdict(
    report: Mapping[str, Any], policy: Policy, now: int, collateral: str | None,
    snp_certificates: bytes | None = None,
    snp_crl: bytes | None = None,
) -> Verdict:
    quote_hex = _str_field(report, "intel_quote", "quote", "intel_quote_b64")
    snp_hex = _str_field(report, "snp_report")
    if quote_hex is not None and snp_hex is not None:
        raise EvidenceError("report carries both an Intel quote and an SEV-SNP report")
    if snp_hex is not None:
        from teegate.attest.snp import verify_report

        certs = _str_field(report, "snp_certificates")
        given = snp_certificates if snp_certificates is not None else (
            certs.encode("ascii", "replace") if certs else None)
        return pin_kind_check(verify_report(snp_hex.encode("ascii", "replace"), given,
                                            policy=policy, now=now, crl=snp_crl), policy)
    if quote_hex is None:
        raise EvidenceError("report has no CPU evidence (intel_quote, quote or snp_report)")
    raw = load_quote(quote_hex)
    # A collateral field in the report is untrusted input like the rest of the report; it is
    # safe to use because dcap-qvl verifies every part of it to the pinned (or policy) root.
    text = collateral if collateral is not None else _collateral_text(report.get("collateral"))
    return _quote_verdict(raw, text, policy, now)


def _dstack_checks(
    cpu: Verdict, events: list[Event], policy: Policy, app_compose: bytes | None,
) -> tuple[list[Check], dict[str, str]]:
    """Event-log replay and the dstack policy for ``cpu``; non-TDX evidence carries no dstack
    measurements, so a policy that pins any fails rather than being skipped."""
    if cpu.tee != "tdx":
        checks: list[Check] = []
        d = policy.dstack
        if d.require_event_log:
            checks.append(Check("eventlog.present", False,
                                f"the policy requires a dstack event log; {cpu.tee} has none"))
        pinned = [name for name, values in (("compose_hashes", d.compose_hashes),
                                            ("app_ids", d.app_ids),
                                            ("os_image_hashes", d.os_image_hashes)) if values]
        if pinned:
            checks.append(Check(
                "dstack.identity", False,
                f"the policy pins dstack {', '.join(pinned)}, which only a TDX quote with its "
                f"event log can show; this is {cpu.tee} evidence"))
        if app_compose is not None:
            checks.append(Check(
                "dstack.compose_hash", False,
                f"an app-compose document was given, but {cpu.tee} evidence measures no dstack "
                "compose hash to compare it with"))
        return checks, {}
    return check_event_log(cpu.measurements, events, policy=policy, app_compose=app_compose)


def _os_manifest(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``info.os_image``: the OS image's hash list and metadata (untrusted; compared with the
    measured os_image_hash)."""
    info = report.get("info")
    manifest = info.get("os_image") if isinstance(info, Mapping) else None
    return manifest if isinstance(manifest, Mapping) else None


def _model_checks(
    cpu: Verdict, dstack: Mapping[str, str], policy: Policy, app_compose: bytes | None,
    os_manifest: Mapping[str, Any] | None,
) -> tuple[list[Check], dict[str, Any]]:
    """The model identity of ``cpu`` + its dstack identity, and the policy's model pins
    (image digests, weights, development OS images, Sigstore bundles) against it."""
    import hashlib

    from teegate.attest.identity import identity_checks, model_identity, os_image_manifest

    os_hash = dstack.get("os_image_hash")
    if os_manifest is None and os_hash:
        # The operator's copy of the image's published hash list, if the policy names one.
        os_manifest = next(({"sha256sum": listing, "metadata": meta}
                            for listing, meta in policy.dstack.os_images
                            if hashlib.sha256(listing.encode()).hexdigest() == os_hash), None)
    identity = model_identity(cpu.tee, cpu.measurements, dstack, app_compose, os_manifest)
    problem = None
    if os_manifest is not None and os_hash:
        problem = os_image_manifest(os_manifest, os_hash)[1] or None
    checks = identity_checks(identity, policy, problem)
    s = policy.sigstore
    if s.require_images or s.require_os_image:
        from teegate.attest.transparency import sigstore_checks

        more, found = sigstore_checks(identity, s)
        checks.extend(more)
        identity["sigstore"] = found
    return checks, identity


def _compose_doc(report: Mapping[str, Any], cpu: Verdict,
                 app_compose: bytes | None) -> bytes | None:
    if app_compose is None and cpu.tee == "tdx":
        # Untrusted like the rest of the report: only compared with the measured compose hash.
        doc = _tcb_info(report).get("app_compose")
        if isinstance(doc, str):
            return doc.encode("utf-8")
    return app_compose


def _event_checks(
    report: Mapping[str, Any], cpu: Verdict, policy: Policy, app_compose: bytes | None,
) -> tuple[list[Check], dict[str, str]]:
    raw_log = report.get("event_log")
    if raw_log is not None and not isinstance(raw_log, (str, list)):
        raise EvidenceError("report field 'event_log' must be a JSON string or a list")
    events = parse_event_log(raw_log) if cpu.tee == "tdx" and raw_log not in (None, "", []) \
        else []
    return _dstack_checks(cpu, events, policy, _compose_doc(report, cpu, app_compose))


def _gpu_appraiser() -> GpuAppraiser | None:
    """``teegate.attest.gpu.appraise_gpus``, imported lazily (it pulls in the GPU stack)."""
    try:
        module = importlib.import_module("teegate.attest.gpu")
    except ImportError:
        return None
    return cast(GpuAppraiser, module.appraise_gpus)


def _gpu_checks(
    report: Mapping[str, Any], nonce: bytes | None, policy: Policy, now: int,
    cpu_binds: Callable[[bytes], bool] | None = None,
    gpu_ocsp: Mapping[str, Any] | None = None,
    gpu_rims: Sequence[bytes] = (),
) -> tuple[list[Check], tuple[Verdict, ...]]:
    payload = report.get("nvidia_payload")
    if payload is not None and not isinstance(payload, (str, Mapping)):
        raise EvidenceError("report field 'nvidia_payload' must be a JSON string or object")
    appraise = _gpu_appraiser()
    if appraise is None:  # a build without the GPU verifier: fail closed when one is required
        if policy.gpu.mode == "required":
            return [Check("gpu.verifier", False,
                          "the policy requires GPU evidence but no GPU verifier is available")], ()
        return [], ()
    checks, gpus = appraise(payload or None, nonce=nonce, policy=policy, now=now,
                            cpu_binds=cpu_binds, ocsp=gpu_ocsp, rims=gpu_rims)
    return list(checks), tuple(gpus)


@malformed("the provider report")
def verify_provider_report(
    report: Mapping[str, Any],
    *,
    nonce: bytes | None,
    policy: Policy,
    now: int,
    collateral: str | None = None,
    snp_certificates: bytes | None = None,
    snp_crl: bytes | None = None,
    app_compose: bytes | None = None,
    gpu_ocsp: Mapping[str, Any] | None = None,
    gpu_rims: Sequence[bytes] = (),
) -> Verdict:
    """Verify a provider attestation report (NEAR AI / RedPill / private-ml-sdk shape).

    ``nonce`` is the one we sent; ``collateral`` (dcap-qvl JSON) overrides a ``collateral``
    field in the report, ``snp_certificates`` (VCEK/VLEK + chain, PEM or DER) its
    ``snp_certificates``; ``snp_crl`` is AMD's CRL (DER); ``app_compose`` overrides
    ``info.tcb_info.app_compose``; ``gpu_ocsp``: verified NVIDIA OCSP answers for the GPUs'
    device chains (``teegate.collateral.nvidia.fetch_gpu_collateral``); ``gpu_rims``:
    candidate driver/VBIOS RIM files (those matching each GPU's versions are used). Malformed
    reports raise ``EvidenceError``; everything else is a named check in the verdict.
    """
    if not isinstance(report, Mapping):
        raise EvidenceError("an attestation report must be a JSON object")
    cpu = _cpu_verdict(report, policy, now, collateral, snp_certificates, snp_crl)
    event_checks, dstack = _event_checks(report, cpu, policy, app_compose)
    model_checks, model = _model_checks(cpu, dstack, policy,
                                        _compose_doc(report, cpu, app_compose),
                                        _os_manifest(report))

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

    def cpu_binds(candidate: bytes) -> bool:
        """Whether report_data binds the signing key with ``candidate`` as the nonce."""
        if key is None or cpu.report_data is None:
            return False
        return all(c.ok for c in check_report_data(
            bytes.fromhex(cpu.report_data), signing_key=key, nonce=candidate,
            signing_algo=algo, policy=policy))

    gpu_checks, gpus = _gpu_checks(report, nonce, policy, now, cpu_binds, gpu_ocsp, gpu_rims)
    # bound_key names a key only when report_data was shown to bind it.
    raw_key = identity_bytes(key, algo) if key is not None else None
    key_bound = any(c.name == "binding.key" and c.ok for c in binding)
    bound = raw_key.hex() if raw_key is not None and key_bound else None
    lo, hi = window((cpu.not_before, cpu.not_after),
                    *((g.not_before, g.not_after) for g in gpus))
    return Verdict(
        tee=cpu.tee,
        checks=cpu.checks + tuple(event_checks) + tuple(model_checks) + tuple(binding)
        + tuple(gpu_checks),
        tcb_status=cpu.tcb_status,
        advisory_ids=cpu.advisory_ids,
        measurements=cpu.measurements,
        identity={**cpu.identity, **dstack},
        report_data=cpu.report_data,
        bound_key=bound,
        nonce=nonce.hex() if nonce is not None else None,
        # The composed verdict is good only while every part is: intersect the windows.
        not_before=lo,
        not_after=hi,
        components=cpu.components + gpus,
        model=model,
    )


def _bare_nonce_check(report_data: str | None, nonce: bytes) -> Check:
    """Without a signing key only the nonce half of the padded layout can be checked."""
    rd = bytes.fromhex(report_data) if report_data else b""
    if len(nonce) != NONCE_SIZE:
        return Check("binding.nonce", False,
                     f"nonce is {len(nonce)} bytes; nonces must be {NONCE_SIZE} fresh bytes")
    if is_sample_nonce(nonce):
        return Check("binding.nonce", False,
                     f"nonce {nonce.hex()[:16]}… is a known constant sample nonce: this "
                     "evidence was not produced for a fresh request")
    if len(rd) == 64 and hmac.compare_digest(rd[32:], nonce):
        return Check("binding.nonce", True, "report_data[32:64] equals our 32-byte nonce")
    # A raw nonce quote (dstack GetQuote(nonce): the nonce, then zero padding).
    if len(rd) == 64 and hmac.compare_digest(rd[:32], nonce) and not any(rd[32:]):
        return Check("binding.nonce", True,
                     "report_data is our 32-byte nonce followed by zero padding")
    return Check(
        "binding.nonce", False,
        f"report_data[32:64] is {rd[32:].hex()[:16]}…, not our nonce {nonce.hex()[:16]}… (nor "
        "is report_data our nonce then zeros): the quote is stale or was made for someone "
        "else (a quote that hashes key and nonce together can only be checked with its key: "
        "verify the provider report)")


def _bare_context(
    cpu: Verdict, policy: Policy, nonce: bytes | None,
    event_log: str | bytes | list[Any] | None, app_compose: bytes | None,
    tls_spki: bytes | None = None,
) -> Verdict:
    """The rest of the policy for bare CPU evidence (no report around it); ``tls_spki``: the
    SHA-256 of the TLS key the evidence must name (``check_tls_binding``)."""
    given = event_log is not None and event_log not in ("", b"", [])
    events = parse_event_log(event_log) if cpu.tee == "tdx" and event_log and given else []
    checks, dstack = _dstack_checks(cpu, events, policy, app_compose)
    more, model = _model_checks(cpu, dstack, policy, app_compose, None)
    checks.extend(more)
    if given and cpu.tee != "tdx":
        checks.append(Check("eventlog.tee", False,
                            f"a dstack event log replays TDX RTMRs; {cpu.tee} evidence has none"))
    bound = None
    if tls_spki is not None:
        tls = check_tls_binding(bytes.fromhex(cpu.report_data or ""), spki_sha256=tls_spki,
                                nonce=nonce, policy=policy)
        checks.extend(tls)
        bound = tls_spki.hex() if tls[0].ok else None
    elif nonce is not None:
        checks.append(_bare_nonce_check(cpu.report_data, nonce))
    if policy.gpu.mode == "required":
        checks.append(Check("gpu.required", False,
                            "the policy requires GPU evidence and bare CPU evidence carries "
                            "none: verify the provider report with its nvidia_payload"))
    if policy.gpu.expected_count:
        checks.append(Check("gpu.count", False,
                            f"the policy expects {policy.gpu.expected_count} GPU(s) and bare CPU "
                            "evidence carries none (gpu.expected_count)"))
    return cpu.with_checks(checks, identity={**cpu.identity, **dstack}, bound_key=bound,
                           nonce=nonce.hex() if nonce is not None else None, model=model)


@malformed("the TDX/SGX quote evidence")
def verify_quote_evidence(
    raw: bytes | str,
    collateral: str | None,
    *,
    policy: Policy,
    now: int,
    nonce: bytes | None = None,
    event_log: str | bytes | list[Any] | None = None,
    app_compose: bytes | None = None,
    tls_spki: bytes | None = None,
) -> Verdict:
    """A bare TDX/SGX quote appraised under the whole policy, not only its quote checks.

    Adds to ``verify_quote``: event-log replay and the dstack policy (compose hash, app ID,
    OS image, ``require_event_log``), ``app_compose`` against the measured compose hash, the
    caller's ``nonce`` (report_data[32:64], or [0:32] then zeros) when one is given, and a
    failing ``gpu.required`` when the policy requires a GPU (a quote carries none). A bare
    quote names no signing key, so the verdict has no ``bound_key``; without ``nonce`` it
    says nothing about freshness. ``tls_spki`` (SHA-256 of a TLS key's SPKI) asks for the TLS
    binding instead of the nonce one, and the verdict's ``bound_key`` is that hash.
    """
    cpu = _quote_verdict(load_quote(raw), collateral, policy, now)
    return _bare_context(cpu, policy, nonce, event_log, app_compose, tls_spki)


@malformed("the SEV-SNP evidence")
def verify_snp_evidence(
    raw: bytes | str,
    certs: bytes | None,
    *,
    policy: Policy,
    now: int,
    nonce: bytes | None = None,
    event_log: str | bytes | list[Any] | None = None,
    app_compose: bytes | None = None,
    crl: bytes | None = None,
    tls_spki: bytes | None = None,
) -> Verdict:
    """A bare SEV-SNP report under the whole policy: as ``verify_quote_evidence`` (nonce in
    report_data, GPU mode, dstack pins, pins for other TEE kinds) around ``verify_report``."""
    from teegate.attest.snp import verify_report

    data = raw.encode("ascii", "replace") if isinstance(raw, str) else raw
    cpu = pin_kind_check(verify_report(data, certs, policy=policy, now=now, crl=crl), policy)
    return _bare_context(cpu, policy, nonce, event_log, app_compose, tls_spki)

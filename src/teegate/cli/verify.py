"""``teegate verify``: offline (or ``--online``) verdicts on attestation evidence.

The evidence type is detected from the bytes, so operators can point it at whatever a
provider handed them. Exit codes: 0 every input accepted, 1 any rejected, 2 malformed input
or usage error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from teegate import safejson
from teegate.attest.binding import spki_fingerprint
from teegate.attest.ccel import ccel_json, event_log_input
from teegate.attest.detect import EvidenceKind, detect
from teegate.attest.policy import Policy, load_policy
from teegate.attest.verdict import Check, Verdict, window
from teegate.errors import EvidenceError, TeegateError

_err = Console(stderr=True)


@dataclass(frozen=True)
class _Inputs:
    policy: Policy
    now: int
    nonce: bytes | None
    collateral: str | None
    certs: bytes | None
    event_log: str | bytes | None  # dstack JSON text, or a binary CCEL
    app_compose: bytes | None
    online: bool
    cache: Path | None
    tls_spki: bytes | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise EvidenceError(f"{what} {path}: cannot read: {e.strerror or e}") from e


def _read_text(path: Path, what: str) -> str:
    """A text input (JSON or TOML) as str; bytes that are not UTF-8 are malformed input."""
    data = _read(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvidenceError(f"{what} {path}: not UTF-8 text (byte {e.start} is "
                            f"0x{data[e.start]:02x})") from None


def _read_collateral(path: Path) -> str:
    """Intel collateral, parsed here so unusable collateral is malformed input (exit 2), not
    a rejection of the evidence it came with; the parse is cached for the verifier."""
    from teegate.attest.tdx_collateral import parse_collateral

    text = _read_text(path, "collateral")
    try:
        parse_collateral(text)
    except EvidenceError as e:
        raise EvidenceError(f"collateral {path}: {e}") from None
    return text


def _parse_nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    t = text.strip().lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(t)
    except ValueError:
        raise EvidenceError(f"--nonce: {text!r} is not hex") from None
    if len(raw) != 32:
        raise EvidenceError(f"--nonce: expected 32 bytes (64 hex digits), got {len(raw)} bytes")
    return raw


def _find_beside(path: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = path.parent / name
        if candidate.is_file():
            return candidate
    stem = path.with_suffix("")
    for suffix in (".certs.pem", ".pem", ".chain.pem"):
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def verify_one(path: Path, inputs: _Inputs) -> Verdict:
    """Detect what ``path`` holds and verify it; raises EvidenceError for malformed input."""
    data = _read(path, "evidence")
    try:
        return _verify_kind(path, data, inputs)
    except TeegateError as e:
        raise type(e)(f"evidence {path}: {e}") from e


def _verify_kind(path: Path, data: bytes, inputs: _Inputs) -> Verdict:
    kind, raw = detect(data)
    if kind is EvidenceKind.TDX_QUOTE or kind is EvidenceKind.SGX_QUOTE:
        return _verify_quote(raw, inputs)
    if kind is EvidenceKind.SNP_REPORT:
        return _verify_snp(raw, path, inputs)
    if kind is EvidenceKind.ITA_EVIDENCE:
        return _verify_ita(raw, inputs)
    if kind is EvidenceKind.TINFOIL_DOCUMENT:
        return _verify_tinfoil(raw, path, inputs)
    if kind is EvidenceKind.AZURE_HCL_REPORT:
        return _verify_hcl(raw, path, inputs)
    if kind is EvidenceKind.GPU_EVIDENCE:
        if inputs.certs is None:
            raise EvidenceError("GPU evidence needs its certificate chain: give --certs FILE")
        from teegate.attest.gpu import verify_gpu_evidence

        return verify_gpu_evidence(
            raw, inputs.certs, nonce=inputs.nonce, policy=inputs.policy, now=inputs.now
        )
    if kind is EvidenceKind.NVIDIA_PAYLOAD:
        from teegate.attest.gpu import appraise_gpus

        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EvidenceError(f"GPU evidence list is not UTF-8 JSON (byte {e.start})") \
                from None
        ocsp, rims = _fetch_gpu_collateral(payload, inputs)
        checks, gpus = appraise_gpus(
            payload, nonce=inputs.nonce, policy=inputs.policy, now=inputs.now, ocsp=ocsp,
            rims=rims, bare=True
        )
        lo, hi = window(*((g.not_before, g.not_after) for g in gpus))
        return Verdict(tee="nvidia-gpu", checks=tuple(checks), components=gpus,
                       nonce=inputs.nonce.hex() if inputs.nonce is not None else None,
                       not_before=lo, not_after=hi)
    return _verify_report(raw, inputs)


def _verify_snp(raw: bytes, path: Path, inputs: _Inputs, certs: bytes | None = None,
                nonce: bool = True) -> Verdict:
    certs = certs if certs is not None else inputs.certs
    if certs is None:
        beside = _find_beside(path, ("certs.pem", "vcek.pem", "cert_chain.pem"))
        certs = _read(beside, "certificates") if beside else None
    crl = None
    if inputs.online:
        from teegate import collateral as coll

        if certs is None:
            certs = _fetch_snp_certs(raw, inputs)
        if inputs.policy.snp.require_crl:  # the gateway always fetches it
            crl = coll.fetch_report_crl_sync(raw, cache_dir=inputs.cache, now=inputs.now)
    from teegate.attest.report import verify_snp_evidence

    return verify_snp_evidence(raw, certs, policy=inputs.policy, now=inputs.now,
                               nonce=inputs.nonce if nonce else None,
                               event_log=inputs.event_log, app_compose=inputs.app_compose,
                               crl=crl, tls_spki=inputs.tls_spki)


def _json_object(raw: bytes) -> dict[str, Any]:
    obj: Any = safejson.loads(raw)  # detect() parsed it already
    return dict(obj)


def _verify_ita(raw: bytes, inputs: _Inputs) -> Verdict:
    """GCP's / Azure's trustauthority-cli evidence: the quote, and what its REPORTDATA binds."""
    from teegate.attest.formats import ita_checks, parse_ita_evidence

    ita = parse_ita_evidence(_json_object(raw))
    verdict = _verify_quote(ita.quote, replace(inputs, nonce=None))
    rd = bytes.fromhex(verdict.report_data or "")
    return verdict.with_checks(ita_checks(rd, ita, inputs.nonce),
                               nonce=inputs.nonce.hex() if inputs.nonce else None)


def _verify_tinfoil(raw: bytes, path: Path, inputs: _Inputs) -> Verdict:
    from teegate.attest.formats import parse_tinfoil_document

    doc = parse_tinfoil_document(_json_object(raw))
    note = Check("tinfoil.document", True,
                 f"Tinfoil document {doc.format}: its body is the {doc.tee} evidence verified "
                 "here; its report_data names the enclave's TLS key (check it with --tls-key)")
    verdict = _verify_quote(doc.body, inputs) if doc.tee == "tdx" else \
        _verify_snp(doc.body, path, inputs)
    return replace(verdict, checks=(note, *verdict.checks))


def _verify_hcl(raw: bytes, path: Path, inputs: _Inputs) -> Verdict:
    """Azure's HCL report: the SNP report inside, and the runtime data REPORT_DATA binds."""
    from teegate.attest.formats import hcl_checks, parse_hcl_report

    certs = None
    if raw.lstrip().startswith(b"{"):  # trustee's az-snp-vtpm evidence {quote, report, vcek}
        obj = _json_object(raw)
        try:
            raw = bytes(obj["report"])
        except (TypeError, ValueError):
            raise EvidenceError("Azure vTPM evidence: 'report' must be a list of bytes") \
                from None
        certs = obj["vcek"].encode() if isinstance(obj.get("vcek"), str) else None
    hcl = parse_hcl_report(raw)
    if hcl.tee != "sev-snp":
        raise EvidenceError(
            "an Azure HCL report with a TDX TDREPORT: a TDREPORT is signed for no remote "
            "party; verify the TD quote Azure's IMDS (/acc/tdquote) makes from it")
    verdict = _verify_snp(hcl.hw_report, path, inputs, certs, nonce=False)
    rd = bytes.fromhex(verdict.report_data or "")
    head = Check("azure.hcl_report", True,
                 f"Azure HCL report v{hcl.version}: the {len(hcl.hw_report)}-byte SEV-SNP "
                 "report inside is verified below")
    return replace(verdict, checks=(head, *verdict.checks)).with_checks(
        hcl_checks(hcl, rd, inputs.nonce), nonce=inputs.nonce.hex() if inputs.nonce else None)


def _verify_quote(raw: bytes, inputs: _Inputs) -> Verdict:
    from teegate.attest.report import verify_quote_evidence

    collateral = inputs.collateral
    if collateral is None and inputs.online:
        collateral = _fetch_tdx_collateral(raw, inputs)
    return verify_quote_evidence(
        raw,
        collateral,
        policy=inputs.policy,
        now=inputs.now,
        nonce=inputs.nonce,
        event_log=inputs.event_log,
        app_compose=inputs.app_compose,
        tls_spki=inputs.tls_spki,
    )


def _verify_report(raw: bytes, inputs: _Inputs) -> Verdict:
    from teegate.attest.report import verify_provider_report

    try:
        report: Any = safejson.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvidenceError(f"provider report is not valid JSON: {e}") from e
    if not isinstance(report, dict):
        raise EvidenceError("provider report must be a JSON object")
    if inputs.event_log is not None:
        log = inputs.event_log
        report = {**report, "event_log": log if isinstance(log, str) else ccel_json(log)}
    if _is_dstack_quote_response(report):
        # dstack GetQuote / tappd answer: a quote and its event log, but no signing key, so
        # there is nothing to bind; verify it as a quote with its event log.
        from teegate.attest.tdx import load_quote

        raw_quote = load_quote(report["quote"])
        return _verify_quote(raw_quote, replace(inputs, event_log=_log_text(report)))
    collateral = inputs.collateral
    if collateral is None and inputs.online and isinstance(report.get("intel_quote"), str):
        from teegate.attest.tdx import load_quote

        collateral = _fetch_tdx_collateral(load_quote(report["intel_quote"].encode()), inputs)
    gpu_ocsp, gpu_rims = _fetch_gpu_collateral(report.get("nvidia_payload"), inputs)
    verdict = verify_provider_report(
        report,
        nonce=inputs.nonce,
        policy=inputs.policy,
        now=inputs.now,
        collateral=collateral,
        app_compose=inputs.app_compose,
        gpu_ocsp=gpu_ocsp,
        gpu_rims=gpu_rims,
    )
    if inputs.event_log is not None and verdict.tee != "tdx":
        verdict = verdict.with_checks([Check(
            "eventlog.tee", False,
            f"--event-log was given, but a dstack event log replays TDX RTMRs and this is "
            f"{verdict.tee} evidence")])
    return verdict


def _is_dstack_quote_response(report: dict[str, Any]) -> bool:
    keys = ("intel_quote", "snp_report", "signing_address", "signing_public_key",
            "nvidia_payload")
    return isinstance(report.get("quote"), str) and not any(k in report for k in keys)


def _log_text(report: dict[str, Any]) -> str | None:
    log = report.get("event_log")
    if log is None or isinstance(log, str):
        return log
    return json.dumps(log)


def _fetch_tdx_collateral(raw: bytes, inputs: _Inputs) -> str:
    from teegate import collateral as coll

    return coll.fetch_tdx_collateral_sync(raw, cache_dir=inputs.cache, now=inputs.now)


def _fetch_gpu_collateral(payload: Any, inputs: _Inputs
                          ) -> tuple[dict[str, Any] | None, tuple[bytes, ...]]:
    """NVIDIA's OCSP answers and the GPUs' RIMs, with --online when the policy requires them
    (as the gateway does)."""
    ocsp, rims = inputs.policy.gpu.require_ocsp, inputs.policy.gpu.require_rim
    if not (inputs.online and (ocsp or rims) and payload and isinstance(payload, (str, dict))):
        return None, ()
    import asyncio

    from teegate.collateral import CollateralCache
    from teegate.collateral.nvidia import fetch_gpu_collateral

    cache = CollateralCache(inputs.cache) if inputs.cache is not None else None
    answers, files = asyncio.run(fetch_gpu_collateral(payload, ocsp=ocsp, rims=rims,
                                                      cache=cache, now=inputs.now))
    return (dict(answers) if answers is not None else None), files


def _fetch_snp_certs(raw: bytes, inputs: _Inputs) -> bytes:
    from teegate import collateral as coll

    return coll.fetch_snp_certificates_sync(raw, cache_dir=inputs.cache, now=inputs.now)


def _verdict_table(title: str, verdict: Verdict) -> Table:
    status = "[green]ACCEPTED[/]" if verdict.accepted else "[red]REJECTED[/]"
    dev = " [yellow](development root)[/]" if verdict.development else ""
    table = Table(title=f"{escape(title)}: {escape(verdict.tee)} {status}{dev}",
                  title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")

    def rows(v: Verdict) -> None:
        for c in v.checks:
            table.add_row(escape(c.name), "[green]pass[/]" if c.ok else "[red]FAIL[/]",
                          escape(c.detail))
        for comp in v.components:
            rows(comp)

    rows(verdict)
    return table


def _hex_lines(value: str, width: int) -> str:
    """Long hex split into equal lines that fit, so a value never wraps mid-way at random."""
    if len(value) <= width or any(ch not in "0123456789abcdef" for ch in value):
        return value
    parts = 2
    while -(-len(value) // parts) > width and parts < len(value) // 16:
        parts += 1
    size = -(-len(value) // parts)
    return "\n".join(value[i : i + size] for i in range(0, len(value), size))


# 9999-12-31T23:59:59Z: the last time an X.509 certificate or CRL can name, so no evidence is
# valid after it; dcap-qvl takes a u64 and Python's time functions stop near here as well.
MAX_NOW = 253402300799


def _when(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


GPU_TEE = "nvidia-gpu"  # teegate.attest.gpu.TEE, not imported: it pulls in the GPU stack
_GPU_BLOCK = re.compile(r"block_\d+")
_RIM_NOTE = {
    "compared": "all compared with signed RIMs",
    "partly compared": "partly compared with signed RIMs (one RIM missing)",
    "not compared": "NOT compared with reference values (no RIM)",
    "failed": "RIM comparison FAILED",
}


def _gpu_rows(grid: Table, gpu: Verdict) -> None:
    """One GPU in three lines: identity, versions, measurements (--json has every field)."""
    idn, m = gpu.identity, gpu.measurements
    blocks = [v for k, v in m.items() if _GPU_BLOCK.fullmatch(k)]
    used = sum(1 for v in blocks if v.strip("0"))
    device = idn.get("device_id") or f"serial {idn.get('subject_serial', '?')}"
    board = ", ".join(f"{k.replace('_', ' ')} {idn[k]}"
                      for k in ("project", "project_sku", "chip_sku") if k in idn)
    rim = m.get("rim_comparison", "not compared")
    grid.add_row(escape(f"gpu {idn.get('gpu_index', '?')}"),
                 escape(f"{device} ({board})" if board else device))
    grid.add_row("", escape(f"driver {m.get('driver_version', '?')}, "
                            f"VBIOS {m.get('vbios_version', '?')}"))
    grid.add_row("", escape(f"{len(blocks)} SPDM measurements ({used} non-zero), "
                            f"{_RIM_NOTE.get(rim, rim)}"))


def _summary(verdict: Verdict, width: int) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    value_width = max(width - 22, 32)
    if not verdict.accepted:
        grid.add_row("[yellow]note[/]", "[yellow]rejected: the values below are read from "
                                        "the evidence and are NOT verified[/]")
    if verdict.tcb_status:
        adv = ", ".join(verdict.advisory_ids) or "none"
        grid.add_row("TCB status", escape(f"{verdict.tcb_status} (advisories: {adv})"))
    if verdict.not_before is not None or verdict.not_after is not None:
        lo = _when(verdict.not_before) if verdict.not_before is not None else "?"
        hi = _when(verdict.not_after) if verdict.not_after is not None else "?"
        grid.add_row("valid", f"{lo} .. {hi} (collateral and certificates)")
    grid.add_row("bound key",
                 escape(verdict.bound_key or "none (the evidence names no signing key)"))
    if verdict.nonce:
        grid.add_row("our nonce", escape(_hex_lines(verdict.nonce, value_width)))
    else:
        grid.add_row("freshness", "not checked: no --nonce given (the evidence may be replayed)")
    gpus = [v for v in (verdict, *verdict.components) if v.tee == GPU_TEE and v.measurements]
    if gpus:
        grid.add_row("GPUs", f"{len(gpus)}; identities, nonces and all measurements: --json")
    for gpu in gpus:
        _gpu_rows(grid, gpu)
    if verdict.tee == GPU_TEE:
        return grid
    for name, value in verdict.identity.items():
        grid.add_row(escape(name), escape(_hex_lines(value, value_width)))
    _model_rows(grid, verdict.model)
    for name, value in verdict.measurements.items():
        if name == "report_data" and len(value) == 128:
            grid.add_row(escape("report_data[0:32]"), _hex_lines(value[:64], value_width))
            grid.add_row(escape("report_data[32:64]"), _hex_lines(value[64:], value_width))
        else:
            grid.add_row(escape(name), escape(_hex_lines(value, value_width)))
    return grid


def _model_rows(grid: Table, model: Mapping[str, Any]) -> None:
    """The parts of the model identity the measurement rows do not show already."""
    for digest in model.get("images") or []:
        grid.add_row("image", escape(str(digest)))
    for ref in model.get("unpinned_images") or []:
        grid.add_row("image", escape(f"{ref} (a tag: not pinned by digest)"))
    if model.get("weights_sha256"):
        grid.add_row("weights", escape(str(model["weights_sha256"])))
    os_image = model.get("os_image") or {}
    if "is_dev" in os_image:
        grid.add_row("OS image", escape(f"{os_image.get('version', '?')}"
                                        + (" (dstack DEVELOPMENT image)" if os_image["is_dev"]
                                           else " (production image)")))
    for entry in model.get("sigstore") or []:
        grid.add_row("sigstore", escape(f"{entry.get('digest')}: log index "
                                        f"{entry.get('log_index')}, {entry.get('signer')}"))


def _window_hint(verdict: Verdict, now: int) -> str | None:
    lo, hi = verdict.not_before, verdict.not_after
    if verdict.accepted or not ((lo is not None and now < lo) or (hi is not None and now > hi)):
        return None
    return (f"hint: the collateral and certificates are valid {_when(lo) if lo else '?'} .. "
            f"{_when(hi) if hi else '?'}, and the verification time is {_when(now)}: fetch "
            "fresh collateral (--online), or audit old evidence with --now UNIX inside that "
            "window")


def _outcome(verdict: Verdict) -> str:
    failed = verdict.failures
    if verdict.accepted:
        n = len(verdict.checks) + sum(len(c.checks) for c in verdict.components)
        dev = " [yellow]on a development root (not a real TEE vendor's)[/]" \
            if verdict.development else ""
        return f"[green]ACCEPTED[/]: all {n} checks passed{dev}"
    if not failed:
        return "[red]REJECTED[/]: no checks ran"
    names = escape(", ".join(c.name for c in failed))
    return f"[red]REJECTED[/]: {len(failed)} failed check(s): {names}"


def register(app: typer.Typer) -> None:
    @app.command()
    def verify(
        evidence: Annotated[
            list[Path] | None,
            typer.Argument(help="TDX/SGX quote or SEV-SNP report (binary or hex), NVIDIA GPU "
                                "evidence, or a provider attestation report (JSON)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        policy_file: Annotated[
            Path | None, typer.Option("--policy", help="Policy file (TOML or JSON); see "
                                                 "docs/policy.example.toml.")
        ] = None,
        now: Annotated[
            int | None, typer.Option("--now", min=0, max=MAX_NOW,
                                     help="Verify as of this UNIX time (default: now); to "
                                          "audit old evidence inside its collateral window.")
        ] = None,
        collateral_file: Annotated[
            Path | None, typer.Option("--collateral", help="Intel collateral (dcap-qvl JSON).")
        ] = None,
        nonce: Annotated[
            str | None, typer.Option("--nonce", help="The 32-byte nonce (64 hex digits) you sent "
                                             "when requesting the evidence; proves freshness.")
        ] = None,
        event_log: Annotated[
            Path | None, typer.Option("--event-log", help="Event log to replay against the "
                                                     "quote's RTMRs: dstack's JSON log, or a "
                                                     "binary CCEL (/sys/firmware/acpi/tables/"
                                                     "data/CCEL).")
        ] = None,
        app_compose: Annotated[
            Path | None, typer.Option("--app-compose", help="dstack app-compose file; must be the "
                                                       "compose the TD measured.")
        ] = None,
        certs: Annotated[
            Path | None,
            typer.Option("--certs", help="Certificate chain (SNP: VCEK/ASK/ARK; GPU: device)."),
        ] = None,
        url: Annotated[
            str | None,
            typer.Option("--url", help="Fetch a fresh report from a node with our own nonce."),
        ] = None,
        online: Annotated[
            bool, typer.Option("--online", help="Fetch missing collateral from Intel/AMD "
                                "(and NVIDIA OCSP answers and RIMs when the policy requires "
                                "them).")
        ] = False,
        cache: Annotated[
            Path | None, typer.Option("--cache", help="Collateral cache directory.")
        ] = None,
        tls_key: Annotated[
            Path | None, typer.Option("--tls-key", help="The TLS key the evidence must name "
                                                   "(Tinfoil, SecretVM, ACI): certificate or "
                                                   "public key (PEM/DER), or its SPKI SHA-256 "
                                                   "in hex.")
        ] = None,
    ) -> None:
        """Verify attestation evidence and print every check with its reason."""
        try:
            policy = load_policy(policy_file) if policy_file else Policy.default()
            inputs = _Inputs(
                policy=policy,
                now=now if now is not None else int(time.time()),
                nonce=_parse_nonce(nonce),
                collateral=_read_collateral(collateral_file) if collateral_file else None,
                certs=_read(certs, "certificates") if certs else None,
                event_log=event_log_input(_read(event_log, "event log"),
                                          f"event log {event_log}") if event_log else None,
                app_compose=_read(app_compose, "app-compose") if app_compose else None,
                online=online,
                cache=cache,
                tls_spki=spki_fingerprint(_read(tls_key, "TLS key")) if tls_key else None,
            )
            results: list[tuple[str, Verdict]] = []
            if url is not None:
                from teegate.client import fetch_and_verify_report

                results.append((url, fetch_and_verify_report(url, policy=policy, now=now)))
            for path in evidence or []:
                results.append((str(path), verify_one(path, inputs)))
            if not results:
                _err.print("[red]error:[/] give at least one EVIDENCE file or --url")
                raise typer.Exit(2)
        except TeegateError as e:
            if as_json:
                typer.echo(json.dumps({"accepted": False, "error": str(e)}))
            else:
                _err.print(f"[red]error:[/] {escape(str(e))}")
            raise typer.Exit(2) from None
        _print(results, as_json, inputs.now)
        raise typer.Exit(0 if all(v.accepted for _, v in results) else 1)


def _print(results: list[tuple[str, Verdict]], as_json: bool, now: int) -> None:
    if as_json:
        out = [{"source": src, **v.to_json()} for src, v in results]
        typer.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return
    console = Console()
    for src, verdict in results:
        console.print(_verdict_table(src, verdict))
        console.print(_summary(verdict, console.width), highlight=False)
        console.print(_outcome(verdict), highlight=False)
        hint = _window_hint(verdict, now)
        if hint:
            console.print(hint, style="yellow", highlight=False)
        console.print()

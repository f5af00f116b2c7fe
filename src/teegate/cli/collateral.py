"""``teegate collateral fetch|show|prune``: fetch and manage attestation collateral.

``fetch`` gets what offline verification of a piece of evidence needs (DCAP collateral for a
TDX/SGX quote, VCEK + AMD chain for an SEV-SNP report) into the cache and prints or writes it;
``show`` lists the cache; ``prune`` deletes expired entries. Exit codes: 0 ok, 1 fetch failed,
2 malformed input or usage error.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from teegate import safejson
from teegate.errors import CollateralError, EvidenceError, TeegateError

if TYPE_CHECKING:
    from teegate.attest.detect import EvidenceKind

_err = Console(stderr=True)


def _q(value: object) -> str:
    """Paths, server answers and error texts are data: never let them be read as markup."""
    return escape(str(value))

CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Cache directory (default: $TEEGATE_HOME/collateral)."),
]
NowOpt = Annotated[
    int | None, typer.Option("--now", help="Unix time to judge expiry at (default: now).")
]


def _cache_dir(cache: Path | None) -> Path:
    if cache is not None:
        return cache
    from teegate.paths import data_dir

    return data_dir() / "collateral"


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _unwrap(kind: EvidenceKind, raw: bytes) -> tuple[EvidenceKind, bytes]:
    """The quote or report inside ITA evidence, a Tinfoil document or an Azure HCL report."""
    from teegate.attest import formats
    from teegate.attest.detect import EvidenceKind, detect

    if kind is EvidenceKind.ITA_EVIDENCE:
        return detect(formats.parse_ita_evidence(safejson.loads(raw)).quote)
    if kind is EvidenceKind.TINFOIL_DOCUMENT:
        return detect(formats.parse_tinfoil_document(safejson.loads(raw)).body)
    if kind is EvidenceKind.AZURE_HCL_REPORT:
        if raw.lstrip().startswith(b"{"):
            obj = safejson.loads(raw)
            try:
                raw = bytes(obj["report"])
            except (TypeError, ValueError, KeyError):
                raise EvidenceError("Azure vTPM evidence: 'report' must be a list of bytes") \
                    from None
        hcl = formats.parse_hcl_report(raw)
        if hcl.tee == "sev-snp":
            return EvidenceKind.SNP_REPORT, hcl.hw_report
    return kind, raw


def _fetch(data: bytes, *, pccs_url: str | None, kds_url: str | None, cache_dir: Path | None,
           now: int | None, product: str | None) -> tuple[str, bytes]:
    """(kind, payload) for one piece of evidence."""
    from teegate import collateral as coll
    from teegate.attest.detect import EvidenceKind, detect

    kind, raw = detect(data)
    if kind is EvidenceKind.PROVIDER_REPORT:
        try:
            report: Any = safejson.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise EvidenceError(f"provider report is not JSON: {e}") from e
        if not isinstance(report, dict):
            raise EvidenceError("provider report must be a JSON object")
        inner = next((report[k] for k in ("intel_quote", "quote", "intel_quote_b64",
                                          "snp_report") if report.get(k) is not None), None)
        if not isinstance(inner, str):
            raise EvidenceError("provider report has no intel_quote or snp_report (hex) to "
                                "fetch collateral for")
        kind, raw = detect(inner.encode())
    kind, raw = _unwrap(kind, raw)
    if kind in (EvidenceKind.TDX_QUOTE, EvidenceKind.SGX_QUOTE):
        text = coll.fetch_tdx_collateral_sync(raw, pccs_url=pccs_url, cache_dir=cache_dir,
                                              now=now)
        return "intel", text.encode()
    if kind is EvidenceKind.SNP_REPORT:
        pem = coll.fetch_snp_certificates_sync(raw, kds_url=kds_url, cache_dir=cache_dir,
                                               now=now, product=product)
        return "amd", pem
    raise EvidenceError(f"no collateral to fetch for {kind.value} evidence")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Fetch, list and prune attestation collateral (Intel PCS/PCCS, "
                        "AMD KDS).", no_args_is_help=True)
    app.add_typer(group, name="collateral")

    @group.command("fetch")
    def fetch(
        evidence: Annotated[Path, typer.Argument(help="Quote, SNP report or provider report.")],
        pccs_url: Annotated[str | None, typer.Option(
            "--pccs-url", help="PCCS or Intel PCS base URL (default: $TEEGATE_PCCS_URL or "
            "Phala's PCCS).")] = None,
        kds_url: Annotated[str | None, typer.Option(
            "--kds-url", help="AMD KDS base URL (default: $TEEGATE_KDS_URL or AMD).")] = None,
        cache: CacheOpt = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the cache.")] = False,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Write here (collateral JSON or PEM bundle) instead of stdout."
        )] = None,
        now: NowOpt = None,
        product: Annotated[str | None, typer.Option(
            "--product", help="SEV-SNP product (Milan, Genoa, Turin) for v2 reports.")] = None,
    ) -> None:
        """Fetch the collateral EVIDENCE needs into the cache and print it.

        DCAP collateral JSON for a TDX/SGX quote, or the VCEK plus AMD chain (PEM, usable as
        --certs) for an SEV-SNP report; EVIDENCE may also be a provider or node report JSON.
        """
        try:
            data = evidence.read_bytes()
        except OSError as e:
            _err.print(f"[red]error:[/] {_q(evidence)}: cannot read: {_q(e.strerror or e)}")
            raise typer.Exit(2) from None
        try:
            _, payload = _fetch(data, pccs_url=pccs_url, kds_url=kds_url,
                                cache_dir=None if no_cache else _cache_dir(cache), now=now,
                                product=product)
        except EvidenceError as e:
            _err.print(f"[red]malformed input:[/] {_q(e)}")
            raise typer.Exit(2) from None
        except TeegateError as e:
            _err.print(f"[red]collateral fetch failed:[/] {_q(e)}")
            raise typer.Exit(1) from None
        if out is None:
            typer.echo(payload.decode(), nl=not payload.endswith(b"\n"))
        else:
            try:
                out.write_bytes(payload)
            except OSError as e:
                _err.print(f"[red]error:[/] {_q(out)}: cannot write: {_q(e.strerror or e)}")
                raise typer.Exit(2) from None
            _err.print(f"wrote {len(payload)} bytes to {_q(out)}")

    @group.command("show")
    def show(
        cache: CacheOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        now: NowOpt = None,
    ) -> None:
        """List cached collateral with its expiry."""
        from teegate.collateral import CollateralCache

        t = int(time.time()) if now is None else now
        directory = _cache_dir(cache)
        try:
            # Listing never creates the cache directory as a side effect.
            entries = CollateralCache(directory).entries() if directory.is_dir() else []
        except CollateralError as e:
            _err.print(f"[red]error:[/] {_q(e)}")
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps([{"key": x.key, "expires": x.expires, "stored": x.stored,
                                    "size": x.size, "expired": x.expired(t)} for x in entries],
                                  indent=2))
            return
        if not entries:
            typer.echo(f"no collateral cached in {directory}")
            return
        table = Table(title=f"collateral cache {_q(directory)}", title_justify="left")
        table.add_column("key", no_wrap=True)
        for col in ("size", "stored", "expires", "state"):
            table.add_column(col)
        for entry in entries:
            state = "[red]expired[/]" if entry.expired(t) else "[green]valid[/]"
            table.add_row(_q(entry.key), str(entry.size), _when(entry.stored), _when(entry.expires),
                          state)
        Console().print(table)

    @group.command("prune")
    def prune(
        cache: CacheOpt = None,
        everything: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
        now: NowOpt = None,
    ) -> None:
        """Delete expired entries (every entry with --all)."""
        from teegate.collateral import CollateralCache

        directory = _cache_dir(cache)
        try:
            removed = (CollateralCache(directory).prune(now=now, everything=everything)
                       if directory.is_dir() else [])
        except CollateralError as e:
            _err.print(f"[red]error:[/] {_q(e)}")
            raise typer.Exit(2) from None
        for key in removed:
            typer.echo(f"removed {key}")
        typer.echo(f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'} removed")

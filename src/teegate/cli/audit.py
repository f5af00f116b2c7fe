"""``teegate audit``: verify receipts offline, or watch a log for consistency (a monitor).

Exit codes: 0 every applicable check ran and passed; 1 a check failed, or a check that applies
could not run (skipped, e.g. the attestation evidence is not in the bundle) and
``--allow-skipped`` was not given, or the log could not be reached; 2 malformed input or
usage error.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from teegate import safejson
from teegate.attest.policy import load_policy
from teegate.cli.secrets import secret_from_env
from teegate.errors import ConfigError, EvidenceError, LogError, TeegateError
from teegate.receipts.audit import AuditReport, audit_bundle, check_consistency, decode_hashes
from teegate.receipts.bundle import parse_bundle
from teegate.receipts.checkpoint import open_checkpoint
from teegate.receipts.note import NoteVerifier, parse_vkey
from teegate.receipts.receipt import public_keys_from_hex

_HEX64 = re.compile(r"[0-9a-f]{64}")
_out = Console()
_err = Console(stderr=True)
TOKEN_ENV = "TEEGATE_LOG_TOKEN"  # bearer token for --log
_STYLE = {
    "ok": "[green]ok[/green]",
    "fail": "[red]FAIL[/red]",
    "skip": "[yellow]SKIPPED[/yellow]",
    "n/a": "[dim]n/a[/dim]",
}


class HttpLogClient:
    """The log's public routes over HTTP (``--log URL``)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import httpx

        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            r = self._http.get(path, params=params)
        except httpx.HTTPError as e:
            raise LogError(f"log {path}: {e}") from None
        if r.status_code != 200:
            raise LogError(f"log {path}: HTTP {r.status_code}: {r.text[:200]}")
        return r

    def _hashes(self, path: str, params: dict[str, Any]) -> tuple[Any, list[bytes]]:
        try:
            body = safejson.loads(self._get(path, params).content)
            return body, decode_hashes(body["hashes"])
        except (ValueError, KeyError, TypeError) as e:
            raise LogError(f"log {path}: malformed answer ({type(e).__name__}: {e})") from None

    def checkpoint(self) -> str:
        return str(self._get("/v1/log/checkpoint").text)

    def inclusion(self, receipt_id: str, tree_size: int) -> tuple[int, list[bytes]]:
        path = "/v1/log/proof/inclusion"
        body, hashes = self._hashes(path, {"receipt_id": receipt_id, "tree_size": tree_size})
        index = body.get("leaf_index") if isinstance(body, dict) else None
        if not isinstance(index, int) or isinstance(index, bool):
            raise LogError(f"log {path}: malformed answer (leaf_index)")
        return index, hashes

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return self._hashes("/v1/log/proof/consistency", {"from": size1, "to": size2})[1]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvidenceError(f"{what} {path}: cannot read: {e}") from None


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise EvidenceError(f"{what} {path}: cannot read: {e}") from None


def _gateway_attestation(where: str, nonce: str | None) -> tuple[dict[str, Any], str | None]:
    """The gateway's ACI report and the nonce it answers: fetched fresh from a URL, or read
    from a file (with the nonce it was fetched with, if any)."""
    if nonce is not None and not _HEX64.fullmatch(nonce):
        raise EvidenceError("--gateway-nonce must be 64 lower-case hex digits")
    if where.startswith(("http://", "https://")):
        import httpx

        nonce = secrets.token_hex(32)
        url = where.rstrip("/")
        if not url.endswith("/v1/aci/attestation"):
            url += "/v1/aci/attestation"
        try:
            r = httpx.get(url, params={"nonce": nonce}, timeout=30.0)
        except httpx.HTTPError as e:
            raise LogError(f"--gateway-attestation {url}: {e}") from None
        if r.status_code != 200:
            raise LogError(f"--gateway-attestation {url}: HTTP {r.status_code}: {r.text[:200]}")
        text = r.text
    else:
        text = _read(Path(where), "--gateway-attestation")
    try:
        obj = safejson.loads(text)
    except ValueError as e:
        raise EvidenceError(f"--gateway-attestation: not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EvidenceError("--gateway-attestation: not a JSON object")
    return obj, nonce


def _verifiers(vkeys: list[str]) -> list[NoteVerifier]:
    out = []
    for v in vkeys:
        p = Path(v)
        text = _read(p, "--log-key").strip() if "+" not in v and p.exists() else v
        out.append(parse_vkey(text))
    return out


def _verdict_line(rep: AuditReport, allow_skipped: bool) -> str:
    if rep.failed:
        return "[bold red]receipt FAILED[/]: " + ", ".join(c.name for c in rep.failed)
    if not rep.holds(allow_skipped=True):
        return "[bold red]receipt NOT verified[/]: no check passed"
    if rep.skipped:
        names = ", ".join(c.name for c in rep.skipped)
        if allow_skipped:
            return f"[bold yellow]receipt holds, except the skipped checks[/] ({names})"
        return (
            f"[bold yellow]receipt NOT fully verified[/]: skipped {names} "
            "(exit 1; --allow-skipped accepts the checks that did run)"
        )
    return "[bold green]receipt holds[/]: every applicable check passed"


def _print_report(rep: AuditReport, allow_skipped: bool) -> None:
    table = Table(title=f"{rep.source} ({rep.receipt_id or 'unreadable'})", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in rep.checks:
        table.add_row(c.name, _STYLE[c.status], c.detail)
    _out.print(table)
    if rep.model_identity:
        _print_identity(rep.model_identity)
    _out.print(_verdict_line(rep, allow_skipped))


def _print_identity(identity: dict[str, Any]) -> None:
    """The model identity the receipt relied on, one line per part."""
    table = Table(title="model identity the call relied on", show_header=False)
    table.add_column("part")
    table.add_column("value", overflow="fold")
    for key, value in (identity.get("os_image") or {}).items():
        table.add_row(f"os_image.{key}", str(value))
    for key in ("compose_hash", "app_id", "weights_sha256"):
        if identity.get(key):
            table.add_row(key, str(identity[key]))
    for digest in identity.get("images") or []:
        table.add_row("image", str(digest))
    for ref in identity.get("unpinned_images") or []:
        table.add_row("image (not pinned)", str(ref))
    for entry in identity.get("sigstore") or []:
        table.add_row("sigstore", f"{entry.get('digest')} log index {entry.get('log_index')} "
                                  f"signed by {entry.get('signer')}")
    _out.print(table)


def _state_path(url: str, state: Path | None) -> Path:
    if state is not None:
        return state
    from teegate.filemodes import private_dir
    from teegate.paths import data_dir

    d = private_dir(data_dir() / "audit-state")
    return d / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".checkpoint")


def _monitor(
    url: str, verifiers: list[NoteVerifier], state: Path | None, token: str | None, as_json: bool
) -> int:
    client = HttpLogClient(url, token)
    path = _state_path(url, state)
    try:
        note = client.checkpoint()
    except LogError as e:
        _emit_monitor({"log": url, "ok": False, "detail": f"log unreachable: {e}"}, as_json)
        return 1
    try:
        new = open_checkpoint(note, verifiers)
    except LogError as e:
        _emit_monitor({"log": url, "ok": False, "detail": f"checkpoint rejected: {e}"}, as_json)
        return 1
    result: dict[str, Any] = {"log": url, "origin": new.origin, "size": new.size}
    status, detail = "ok", f"first sight of the log at size {new.size}; remembered"
    if path.exists():
        old = open_checkpoint(_read(path, "state file"), verifiers)
        status, detail = check_consistency(old, new, client)
        result["previous_size"] = old.size
    result.update({"ok": status == "ok", "detail": detail})
    if status == "ok":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(note, encoding="utf-8")
        tmp.replace(path)
    _emit_monitor(result, as_json)
    return 0 if status == "ok" else 1


def _emit_monitor(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _out.print_json(json.dumps(result))
        return
    style, word = ("green", "OK") if result["ok"] else ("red", "FAIL")
    where = str(result.get("origin", result["log"]))
    if "size" in result:
        where += f" size {result['size']}"
    _out.print(f"[{style}]{word}[/] {where}: {result['detail']}")


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        inputs: Annotated[
            list[Path] | None, typer.Argument(
                help="Receipt bundles (GET /v1/receipts/{id}/bundle) or receipt JSON files."
            )
        ] = None,
        log_key: Annotated[
            list[str] | None,
            typer.Option(
                "--log-key",
                help="The log's verifier key origin+hash+key (GET /v1/log/vkey), or a file "
                "holding it. Required: nothing else is trusted.",
            ),
        ] = None,
        receipt_key: Annotated[
            list[str] | None,
            typer.Option(
                "--receipt-key",
                help="Receipt Ed25519 public key (hex), if receipts use another key than the log.",
            ),
        ] = None,
        checkpoint: Annotated[
            Path | None,
            typer.Option(help="Signed checkpoint to prove inclusion in (default: the bundle's)."),
        ] = None,
        since: Annotated[
            Path | None,
            typer.Option(
                help="A checkpoint you saved earlier (older or newer): the log must be "
                "consistent with it (different sizes need --log)."
            ),
        ] = None,
        log: Annotated[
            str | None,
            typer.Option(
                "--log",
                help="Log base URL: fetches missing proofs; with no receipt files, monitors the "
                "log (consistent with the checkpoint remembered from the last run).",
            ),
        ] = None,
        state: Annotated[
            Path | None,
            typer.Option(help="Where the monitor keeps the last checkpoint (default: data dir)."),
        ] = None,
        token: Annotated[str | None, typer.Option(
            "--token", hidden=True,
            help=f"Refused (a secret on the command line shows in ps): set ${TOKEN_ENV}.")
        ] = None,
        now: Annotated[
            int | None, typer.Option(help="Unix time for evidence checks (default: the call's).")
        ] = None,
        request: Annotated[
            Path | None, typer.Option(help="Request body you sent (checks its hash).")
        ] = None,
        response: Annotated[
            Path | None, typer.Option(help="Response body you received (checks its hash).")
        ] = None,
        policy: Annotated[
            Path | None, typer.Option(help="Attestation policy for re-verifying evidence.")
        ] = None,
        gateway_attestation: Annotated[
            str | None,
            typer.Option(
                "--gateway-attestation",
                help="The gateway's ACI attestation: its URL (GET /v1/aci/attestation is "
                "fetched with a fresh nonce) or a file holding the report; checks that the "
                "receipt's key is the one the gateway's TEE evidence binds.",
            ),
        ] = None,
        gateway_nonce: Annotated[
            str | None,
            typer.Option(help="The 64-hex nonce a --gateway-attestation file was fetched with."),
        ] = None,
        allow_skipped: Annotated[
            bool,
            typer.Option(
                "--allow-skipped",
                help="Exit 0 even if a check that applies could not run (e.g. evidence not in "
                "the bundle); failures still exit 1.",
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Verify receipts offline, or monitor a log.

        Checks each receipt's signature, the provider's response signature, its inclusion in a
        checkpoint signed by --log-key, consistency with --since, and the attestation evidence
        in the bundle. Exit 0 only when every applicable check passed; 1 when a check failed or
        was skipped (see --allow-skipped); 2 for malformed input. Without receipt files,
        --log URL --log-key VKEY checks that the log only grew since the last run (monitor).
        """
        try:
            token = secret_from_env(token, "--token", TOKEN_ENV)
            verifiers = _verifiers(log_key or [])
            keys = public_keys_from_hex(receipt_key or [])
            if not inputs:
                if log is None:
                    _err.print("give receipt files, or --log URL to monitor a log")
                    raise typer.Exit(2)
                if not verifiers:
                    _err.print("--log-key is required: a log is only trusted under its key")
                    raise typer.Exit(2)
                raise typer.Exit(_monitor(log, verifiers, state, token, as_json))
            if not verifiers:
                _err.print(
                    "--log-key is required: receipts and checkpoints are only trusted under the "
                    "log's key (the log serves it at GET /v1/log/vkey; a bundle's log_vkey is "
                    "informational and never trusted)"
                )
                raise typer.Exit(2)
            cp_text = _read(checkpoint, "--checkpoint") if checkpoint else None
            since_text = _read(since, "--since") if since else None
            client = HttpLogClient(log, token) if log else None
            pol = load_policy(policy) if policy is not None else None
            req = _read_bytes(request, "--request") if request else None
            resp = _read_bytes(response, "--response") if response else None
            gw_report, gw_nonce = (_gateway_attestation(gateway_attestation, gateway_nonce)
                                   if gateway_attestation else (None, None))
            reports = []
            for path in inputs:
                try:
                    bundle = parse_bundle(_read(path, "receipt"))
                except (EvidenceError, LogError) as e:
                    msg = str(e) if str(path) in str(e) else f"{path}: {e}"
                    raise EvidenceError(msg) from None
                reports.append(
                    audit_bundle(
                        bundle,
                        str(path),
                        log_verifiers=verifiers,
                        receipt_keys=keys,
                        checkpoint=cp_text,
                        since=since_text,
                        client=client,
                        now=now,
                        policy=pol,
                        request_bytes=req,
                        response_bytes=resp,
                        gateway_attestation=gw_report,
                        gateway_nonce=gw_nonce,
                    )
                )
        except typer.Exit:
            raise
        except (EvidenceError, LogError, ConfigError) as e:
            _err.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        except OSError as e:  # e.g. the monitor's state file cannot be written
            _err.print(f"[red]error:[/] {e.strerror or e}: {e.filename or ''}")
            raise typer.Exit(2) from None
        except TeegateError as e:
            _err.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from None
        ok = all(r.holds(allow_skipped) for r in reports)
        if as_json:
            _out.print_json(
                json.dumps(
                    {
                        "ok": ok,
                        "allow_skipped": allow_skipped,
                        "receipts": [r.to_json() for r in reports],
                    }
                )
            )
        else:
            for r in reports:
                _print_report(r, allow_skipped)
            if len(reports) > 1:
                failed = sum(1 for r in reports if r.failed or not r.holds(True))
                partial = sum(1 for r in reports if r.holds(True) and r.skipped)
                whole = len(reports) - failed - partial
                _out.print(
                    f"{len(reports)} receipts: {whole} fully verified, {partial} with skipped "
                    f"checks, {failed} failed"
                )
        raise typer.Exit(0 if ok else 1)

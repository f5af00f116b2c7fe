"""``teegate policy learn --url NODE``: a policy pinning the identity a node shows now.

The node's report is fetched with a fresh nonce and verified under ``--policy`` (default: the
production policy); only an accepted verdict is learned from, so the pins are what verified
evidence proves, not what the node says. The output is TOML for an operator to review and use
as a provider's or a model's policy (``[models."NAME"] policy = "FILE"``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from teegate.attest.verdict import Verdict
from teegate.errors import TeegateError

_err = Console(stderr=True)


def _list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def learned_policy(verdict: Verdict, source: str, *, at: int) -> str:
    """TOML pinning the model identity of an accepted ``verdict``."""
    m = verdict.model
    os_image: dict[str, Any] = dict(m.get("os_image") or {})
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    lines = [f"# teegate policy learned from {source} at {when}: review it before use.",
             f"# TEE {verdict.tee}, TCB {verdict.tcb_status or 'n/a'}"
             + (" — DEVELOPMENT TEE (simulated; not confidential)" if verdict.development
                else ""),
             "# Use as a provider's policy, or a model's: [models.\"NAME\"] policy = \"FILE\"."]
    if verdict.tee == "tdx":
        lines += ["", "[tdx]", "# The OS image: firmware (MRTD) and boot chain (RTMR0-2)."]
        lines += [f"{r} = {_list([os_image[r]])}" for r in ("mrtd", "rtmr0", "rtmr1", "rtmr2")
                  if r in os_image]
    elif verdict.tee == "sev-snp" and "measurement" in os_image:
        lines += ["", "[snp]", f"measurement = {_list([os_image['measurement']])}"]
    elif verdict.tee == "sgx":
        lines += ["", "[tdx]"] + [f"{r} = {_list([os_image[r]])}"
                                  for r in ("mrenclave", "mrsigner") if r in os_image]
    dstack: list[str] = []
    if m.get("compose_hash"):
        dstack.append(f"compose_hashes = {_list([m['compose_hash']])}")
    if os_image.get("os_image_hash"):
        dstack.append(f"os_image_hashes = {_list([os_image['os_image_hash']])}")
    images, unpinned = list(m.get("images") or []), list(m.get("unpinned_images") or [])
    if images and not unpinned:
        dstack.append(f"image_digests = {_list(images)}")
    elif unpinned:
        dstack.append(f"# not pinned by digest, so not pinnable here: {', '.join(unpinned)}")
    if m.get("weights_sha256"):
        dstack.append(f"weights_digests = {_list([m['weights_sha256']])}")
    if os_image.get("is_dev"):
        dstack += ["# the node runs a dstack DEVELOPMENT OS image (SSH into the CVM possible)",
                   "allow_dev_os = true"]
    if dstack:
        lines += ["", "[dstack]", *dstack]
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Appraisal policies.", no_args_is_help=True)
    app.add_typer(group, name="policy")

    @group.command("learn")
    def learn(
        url: Annotated[str, typer.Option("--url", help="The node's base URL.")],
        policy_file: Annotated[Path | None, typer.Option(
            "--policy", help="Policy to verify the node's report under (default: production; "
            "a development node needs the development policy).")] = None,
        model: Annotated[str | None, typer.Option(
            "--model", help="Ask for the report of this model (providers whose models run "
            "in different TEEs answer per model).")] = None,
    ) -> None:
        """Print a TOML policy pinning the node's current, verified identity."""
        from teegate.attest.policy import Policy, load_policy
        from teegate.client import fetch_and_verify_report

        try:
            policy = load_policy(policy_file) if policy_file is not None else Policy.default()
            now = int(time.time())
            verdict = fetch_and_verify_report(url, policy=policy, now=now, model=model)
        except TeegateError as e:
            _err.print(f"[red]teegate policy learn:[/] {escape(str(e))}")
            raise typer.Exit(2) from None
        if not verdict.accepted:
            _err.print(f"[red]teegate policy learn:[/] the report of {escape(url)} is not "
                       "accepted, so nothing is learned from it:")
            for c in verdict.failures:
                _err.print(f"  {escape(c.name)}: {escape(c.detail)}", soft_wrap=True)
            raise typer.Exit(1)
        source = url if model is None else f"{url} (model {model})"
        typer.echo(learned_policy(verdict, source, at=now), nl=False)

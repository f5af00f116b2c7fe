"""The ``teegate`` command. Each sub-command lives in its own module and registers here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="teegate",
    help="Verifiable confidential inference for autonomous AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-commands: one line each; keep the order stable.
from teegate.cli import agent as _agent  # noqa: E402
from teegate.cli import audit as _audit  # noqa: E402
from teegate.cli import chain as _chain  # noqa: E402
from teegate.cli import collateral as _collateral  # noqa: E402
from teegate.cli import ledger as _ledger  # noqa: E402
from teegate.cli import node as _node  # noqa: E402
from teegate.cli import policy as _policy  # noqa: E402
from teegate.cli import serve as _serve  # noqa: E402
from teegate.cli import verify as _verify  # noqa: E402

_agent.register(app)
_audit.register(app)
_chain.register(app)
_collateral.register(app)
_ledger.register(app)
_node.register(app)
_policy.register(app)
_serve.register(app)
_verify.register(app)


def main() -> None:
    app()

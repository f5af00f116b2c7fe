"""``teegate verify``: offline verdicts on evidence files."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def verify() -> None:
        """Verify attestation evidence offline (being built)."""
        raise typer.Exit(2)

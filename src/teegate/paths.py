"""Where teegate keeps its state when nothing else is configured.

``TEEGATE_HOME`` overrides the default ``~/.teegate``. The database defaults to SQLite there and
the development PKI (generated per installation, never shipped) to ``dev-pki/``.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    home = os.environ.get("TEEGATE_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".teegate"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_database_url(directory: Path | None = None) -> str:
    """``$TEEGATE_DATABASE_URL``, else SQLite in ``directory`` (default: ``data_dir()``): a
    gateway configured with a data directory of its own keeps its database there too."""
    where = directory if directory is not None else data_dir()
    return os.environ.get("TEEGATE_DATABASE_URL") or f"sqlite:///{where / 'teegate.db'}"


def dev_pki_dir() -> Path:
    return data_dir() / "dev-pki"

"""``development-policy.json`` beside the development PKI: what an operator hands to
``teegate verify --policy`` or ``teegate audit --policy`` to accept this installation's
development evidence. Only public root certificates go into it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from teegate import paths
from teegate.errors import ConfigError
from teegate.sim.policy import development_policy

POLICY_FILE = "development-policy.json"


def write_development_policy(pki_dir: Path | None = None) -> Path:
    """The default policy plus this installation's development roots, written atomically;
    returns its path."""
    directory = Path(pki_dir or paths.dev_pki_dir())
    roots = development_policy(directory).roots
    data = {"roots": {"intel": list(roots.intel), "amd": list(roots.amd),
                      "nvidia": list(roots.nvidia)},
            # the development TDX runs a simulated dstack development OS image
            "dstack": {"allow_dev_os": True}}
    path = directory / POLICY_FILE
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".policy-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o600)  # a data file like any other (teegate.filemodes)
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    return path

"""Secrets for CLI commands come from the environment, never from an option: a command
line is readable by every user of the host (``ps``, ``/proc/<pid>/cmdline``) and lands in
shell histories."""

from __future__ import annotations

import os

from teegate.errors import ConfigError


def secret_from_env(given: str | None, option: str, env: str) -> str | None:
    """The secret in ``$env`` (None when unset or empty); ConfigError when it was passed as
    ``option`` instead (refused, not used: it has been exposed already)."""
    if given is not None:
        raise ConfigError(f"{option} is refused: a secret on the command line shows in ps and "
                          f"shell history; set it in the environment variable {env} instead "
                          "(and replace it if this command line was seen)")
    return os.environ.get(env) or None

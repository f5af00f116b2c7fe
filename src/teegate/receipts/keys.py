"""The gateway's log key on disk, and receipt ids."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from teegate.errors import ConfigError
from teegate.filemodes import private_dir


def load_or_create_log_key(path: str | Path) -> Ed25519PrivateKey:
    """Load the Ed25519 key (PKCS#8 PEM) at ``path``, creating it (mode 0600) if missing.

    A log must keep one key for life: a new key cannot continue an existing log.
    """
    p = Path(path).expanduser()
    if p.exists():
        return _load(p)
    private_dir(p.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Write a private temporary file, then link it into place: the key file appears whole or
    # not at all, and of two processes creating it at once the second loads the first's key.
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError:
            return _load(p)
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _load(p: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"log key {p}: not a readable PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"log key {p}: must be an Ed25519 key")
    return key


def new_receipt_id() -> str:
    """``rcpt_`` + 12 hex of milliseconds + 16 random hex: unique, roughly time-ordered."""
    return f"rcpt_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"

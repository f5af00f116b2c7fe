"""Dashboard sessions: a stateless cookie signed with HMAC-SHA256 under a secret kept in the
data directory (shared by every worker of one gateway), so no session table is written.

The cookie names who logged in and the SHA-256 of the key used; every request re-derives the
principal from the live agent table (``routes``), so a revoked or replaced key ends its
sessions within the cache's lifetime. The CSRF token travels inside the signed cookie and in
each form; with SameSite=Strict the token is the second lock, not the only one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

COOKIE = "tg_dash"
LOGIN_COOKIE = "tg_dash_login"  # pre-session CSRF token of the login form (double submit)
LIFETIME_S = 8 * 3600
SECRET_FILE = "dashboard-session.key"


@dataclass(frozen=True)
class Session:
    """``kind``: "operator", "owner" or "agent"; ``key_sha256``: hex digest of the key."""

    kind: str
    id: str
    key_sha256: str
    expires: int
    csrf: str


def load_secret(data_dir: Path) -> bytes:
    """The HMAC secret (32 random bytes, mode 0600), created once; concurrent first starts
    of several workers agree because only one ``O_EXCL`` create wins."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raw = path.read_bytes()
        if len(raw) == 32:
            return raw
        raise ValueError(f"{path}: expected 32 bytes of session secret") from None
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def issue(secret: bytes, kind: str, ident: str, key_sha256: str, now: int) -> tuple[str, Session]:
    s = Session(kind, ident, key_sha256, now + LIFETIME_S, secrets.token_urlsafe(24))
    payload = _b64(json.dumps([s.kind, s.id, s.key_sha256, s.expires, s.csrf],
                              separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}", s


def read(secret: bytes, cookie: str | None, now: int) -> Session | None:
    """The session in ``cookie`` if its MAC verifies and it has not expired, else None."""
    if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    try:
        kind, ident, digest, expires, csrf = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return None
    if not isinstance(expires, int) or expires <= now:
        return None
    if kind not in ("operator", "owner", "agent"):
        return None
    return Session(str(kind), str(ident), str(digest), expires, str(csrf))


def login_token(secret: bytes, nonce: str) -> str:
    """The login form's CSRF token: the MAC of a random nonce kept in ``LOGIN_COOKIE``."""
    return _mac(secret, "login:" + nonce)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))

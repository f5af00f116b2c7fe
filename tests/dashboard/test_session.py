"""Session cookies: what the dashboard accepts and refuses (pure)."""

from __future__ import annotations

from pathlib import Path

from teegate.dashboard import session


def test_a_session_round_trips_and_expires() -> None:
    secret = b"k" * 32
    cookie, s = session.issue(secret, "owner", "olga", "ab" * 32, now=1000)
    assert session.read(secret, cookie, now=1001) == s
    assert session.read(secret, cookie, now=s.expires) is None  # expired
    assert session.read(b"x" * 32, cookie, now=1001) is None  # another gateway's secret


def test_a_changed_cookie_is_refused() -> None:
    secret = b"k" * 32
    cookie, _ = session.issue(secret, "agent", "bob", "ab" * 32, now=1000)
    payload, mac = cookie.split(".")
    forged, _ = session.issue(b"attacker" * 4, "operator", "operator", "ab" * 32, now=1000)
    assert session.read(secret, forged.split(".")[0] + "." + mac, now=1001) is None
    assert session.read(secret, payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"),
                        now=1001) is None
    for junk in (None, "", "no-dot", "a.b.c", "x" * 5000):
        assert session.read(secret, junk, now=1001) is None


def test_the_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    a = session.load_secret(tmp_path)
    assert len(a) == 32
    assert session.load_secret(tmp_path) == a
    assert (tmp_path / session.SECRET_FILE).stat().st_mode & 0o777 == 0o600


def test_login_tokens_are_bound_to_their_nonce() -> None:
    secret = b"k" * 32
    t = session.login_token(secret, "nonce-1")
    assert session.same_token(t, session.login_token(secret, "nonce-1"))
    assert not session.same_token(t, session.login_token(secret, "nonce-2"))
    assert not session.same_token(None, t)
    assert not session.same_token("", "")

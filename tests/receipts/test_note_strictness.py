"""Signed-note and checkpoint parsing strictness (C2SP signed-note v1.0.0)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.errors import LogError
from teegate.receipts.checkpoint import (
    Checkpoint,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
)
from teegate.receipts.note import NoteSigner, NoteVerifier, parse_note, sign_note, verify_note

ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "note",
    [
        "text\n\n\u2014 a\x01 AAAAAAAA\n",  # control character in a signature line
        "text\n\n\u2014 a AAAAAAAA\x7f\n",
        "text\n\n\u2014 a AAAAAAAA\r\n",  # CRLF line ending
        "text\r\n\n\u2014 a AAAAAAAA\n",
        "text\n\n\u2014 a AAAAAAAA\n\n",  # trailing blank line
        "text\n\n\u2014 a AAAAAAAA\n\u2014 b AAAAAAAA\n\n",
        "text\n\n\u2014  a AAAAAAAA\n",  # two spaces
        "text\n\n\u2014 a  AAAAAAAA\n",
        "text\n\n\u2014 a AAAAAAAA \n",
        "text\n\n\u2014 a\u00a0b AAAAAAAA\n",  # a Unicode space in the name
    ],
)
def test_malformed_signature_blocks(note: str) -> None:
    with pytest.raises(LogError):
        parse_note(note)


def test_bytes_that_are_not_utf8_are_malformed() -> None:
    with pytest.raises(LogError):
        parse_note(b"te\xffxt\n\n\xe2\x80\x94 a AAAAAAAA\n")


def _signer(name: str = "example.com/log") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_duplicate_unknown_and_failing_signatures() -> None:
    s, other = _signer(), _signer("other")
    note = sign_note("hello\n", [s, other])
    assert verify_note(note, [s.verifier]) == [s.verifier]  # unknown key ignored
    lines = note.split("\n")
    dup = "\n".join(lines[:-1]) + "\n" + lines[2] + "\n"  # the same valid signature twice
    assert verify_note(dup, [s.verifier]) == [s.verifier]
    # a second signature under the known (name, key ID) that does not verify: reject
    raw = bytearray(base64.b64decode(lines[2].split(" ")[2]))
    raw[-1] ^= 1
    bad = note + f"\u2014 {s.name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(LogError):
        verify_note(bad, [s.verifier])
    # a known name with an unknown key ID is just an unknown key: not enough on its own
    with pytest.raises(LogError, match="no verifiable"):
        verify_note(sign_note("hello\n", [_signer()]), [s.verifier])


def test_key_id_collision_between_trusted_keys_fails_closed() -> None:
    s = _signer()
    twin = NoteVerifier(s.name, s.key_id, bytes(32))  # same name and key ID, other key
    note = sign_note("hello\n", [s])
    with pytest.raises(LogError):
        verify_note(note, [s.verifier, twin])


def test_too_many_signatures_are_malformed_but_sixteen_are_fine() -> None:
    s = _signer()
    note = sign_note("hello\n", [s])
    sig_line = note.split("\n")[2] + "\n"
    assert verify_note(note + sig_line * 15, [s.verifier])
    with pytest.raises(LogError):
        parse_note(note + sig_line * 100)


@pytest.mark.parametrize(
    ("size", "ok"),
    [("0", True), ("18446744073709551615", True), ("18446744073709551616", False),
     ("+1", False), (" 1", False), ("1 ", False), ("1_0", False), ("\u0661", False)],
)
def test_checkpoint_size_bounds(size: str, ok: bool) -> None:
    body = f"o\n{size}\n{ROOT}\n"
    if ok:
        assert parse_checkpoint_body(body).size == int(size)
    else:
        with pytest.raises(LogError):
            parse_checkpoint_body(body)


@pytest.mark.parametrize(
    "root",
    [
        ROOT[:-1] + "B",  # non-canonical: trailing bits set under the padding
        ROOT.rstrip("="),  # unpadded
        ROOT.replace("A", "-", 1),  # URL-safe alphabet
        " " + ROOT,
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
    ],
)
def test_checkpoint_root_base64_is_strict(root: str) -> None:
    with pytest.raises(LogError):
        parse_checkpoint_body(f"o\n1\n{root}\n")


def test_checkpoint_extension_lines_are_kept_and_signed() -> None:
    s = _signer("o")
    cp = Checkpoint("o", 3, bytes(32), ("ext one", "ext two"))
    note = sign_checkpoint(cp, s)
    got = open_checkpoint(note, [s.verifier])
    assert got.extensions == ("ext one", "ext two")
    with pytest.raises(LogError):
        open_checkpoint(note.replace("ext two", "ext 2"), [s.verifier])


def test_checkpoint_signed_only_by_a_key_not_named_as_origin_is_refused() -> None:
    s = _signer("someone.else")
    note = sign_note(Checkpoint("o", 1, bytes(32)).body(), [s])
    with pytest.raises(LogError, match="log key named"):
        open_checkpoint(note, [s.verifier])

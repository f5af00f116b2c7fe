"""C2SP signed notes (``c2sp.org/signed-note`` v1.0.0) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key ID ‖ signature)>``. The signed message is the text including
its final newline. Verifiers ignore signatures by unknown keys, reject the note if a known
key's signature fails, and reject it if no known key signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.errors import LogError

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # golang.org/x/mod/sumdb/note treats more as malformed
_DASH = "\u2014 "
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f]")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard padded base64 that must re-encode to exactly the same text."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise LogError(f"{what}: not valid base64") from None
    if b64(raw) != text:
        raise LogError(f"{what}: non-canonical base64")
    return raw


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LogError(f"key name {name!r}: must be non-empty, without spaces or '+'")


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: bytes) -> bytes:
    """Ed25519 key ID: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A known Ed25519 key: the only thing a note verifier trusts."""

    name: str
    key_id: bytes
    public_key: bytes

    @property
    def vkey(self) -> str:
        """The verifier key text ``name+hex(keyID)+base64(0x01 ‖ key)``."""
        return f"{self.name}+{self.key_id.hex()}+{b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """An Ed25519 note signer; the key name of a log is its origin."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._key = private_key
        pub = _raw_public(private_key.public_key())
        self.verifier = NoteVerifier(name, key_id(name, pub), pub)

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def parse_vkey(text: str) -> NoteVerifier:
    """Parse ``name+hash+base64`` strictly; only Ed25519 (type 0x01) keys are accepted."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise LogError(f"verifier key {text!r}: expected name+hash+key")
    name, hexid, keyb64 = parts
    _check_name(name)
    if len(hexid) != 8 or hexid.lower() != hexid:
        raise LogError(f"verifier key {text!r}: key hash must be 8 lower-case hex digits")
    try:
        kid = bytes.fromhex(hexid)
    except ValueError:
        raise LogError(f"verifier key {text!r}: key hash is not hex") from None
    raw = b64decode_strict(keyb64, f"verifier key {name}")
    if not raw or raw[0] != ALG_ED25519:
        raise LogError(f"verifier key {name}: unsupported algorithm (only Ed25519, 0x01)")
    if len(raw) != 33:
        raise LogError(f"verifier key {name}: Ed25519 key must be 32 bytes")
    pub = raw[1:]
    if key_id(name, pub) != kid:
        raise LogError(f"verifier key {name}: key hash {hexid} does not match the key")
    return NoteVerifier(name, kid, pub)


def parse_skey(text: str) -> NoteSigner:
    """Parse a signer key ``PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)`` (golang x/mod form)."""
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise LogError("signer key: expected PRIVATE+KEY+name+hash+key")
    name, hexid, keyb64 = parts[2:]
    raw = b64decode_strict(keyb64, f"signer key {name}")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise LogError(f"signer key {name}: expected an Ed25519 seed")
    signer = NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if signer.key_id.hex() != hexid:
        raise LogError(f"signer key {name}: key hash {hexid} does not match the key")
    return signer


def format_skey(name: str, private_key: Ed25519PrivateKey) -> str:
    """The golang x/mod signer key text for ``private_key`` (keep it secret)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    signer = NoteSigner(name, private_key)
    return f"PRIVATE+KEY+{name}+{signer.key_id.hex()}+{b64(bytes([ALG_ED25519]) + seed)}"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A parsed, not yet verified note."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise LogError("malformed note: text must end with a newline")
    if _CONTROL.search(text):
        raise LogError("malformed note: control character in the note")


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signature lines; no signature is checked here."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise LogError("malformed note: not UTF-8") from None
    # The whole message, signature lines included, must be free of control characters
    # (as golang.org/x/mod/sumdb/note checks it), not only the signed text.
    if not data.endswith("\n"):
        raise LogError("malformed note: must end with a newline")
    _check_text(data)
    split = data.rfind("\n\n")
    if split < 0:
        raise LogError("malformed note: no blank line before the signatures")
    text, sigs = data[: split + 1], data[split + 2 :]
    if not sigs.endswith("\n"):
        raise LogError("malformed note: signature block must end with a newline")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise LogError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    out: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise LogError("malformed note: signature line must start with '— '")
        rest = line[len(_DASH) :]
        name, sep, sig64 = rest.partition(" ")
        if not sep or " " in sig64:
            raise LogError("malformed note: signature line must be '— name base64'")
        _check_name(name)
        raw = b64decode_strict(sig64, f"signature by {name}")
        if len(raw) < 5:
            raise LogError(f"malformed note: signature by {name} is too short")
        out.append(NoteSignature(name, raw[:4], raw[4:]))
    if not out:
        raise LogError("malformed note: no signatures")
    return Note(text, tuple(out))


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` (which must end in a newline) with every signer."""
    _check_text(text)
    if not signers:
        raise LogError("sign_note: no signer")
    msg = text.encode()
    sigs = [NoteSignature(s.name, s.key_id, s.sign(msg)) for s in signers]
    return Note(text, tuple(sigs)).format()


def verify_note(note: Note | str | bytes, verifiers: Iterable[NoteVerifier]) -> list[NoteVerifier]:
    """Return the known keys that signed the note; raise LogError if none did or one failed."""
    if not isinstance(note, Note):
        note = parse_note(note)
    known: dict[tuple[str, bytes], NoteVerifier] = {(v.name, v.key_id): v for v in verifiers}
    msg = note.text.encode()
    ok: list[NoteVerifier] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue  # unknown keys MUST be ignored
        if not v.verify(msg, sig.signature):
            raise LogError(f"invalid signature for key {v.name}+{v.key_id.hex()}")
        if v not in ok:
            ok.append(v)
    if not ok:
        raise LogError("note has no verifiable signatures (no signature by a known key)")
    return ok

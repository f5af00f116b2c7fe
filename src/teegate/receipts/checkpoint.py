"""C2SP ``tlog-checkpoint`` bodies, signed as notes by the log key (key name = origin)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from teegate.errors import LogError
from teegate.receipts.note import (
    NoteSigner,
    NoteVerifier,
    b64,
    b64decode_strict,
    parse_note,
    sign_note,
    verify_note,
)

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Strict parse: origin, decimal size without leading zeros, base64 32-byte root, extras."""
    if not text.endswith("\n"):
        raise LogError("checkpoint: body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise LogError("checkpoint: needs origin, size and root hash lines")
    origin, size_s, root_s, *ext = lines
    if not origin or origin != origin.strip():
        raise LogError("checkpoint: empty or padded origin line")
    if not _SIZE.fullmatch(size_s) or int(size_s) >= 1 << 64:
        raise LogError(f"checkpoint: tree size {size_s!r} is not a canonical decimal")
    root = b64decode_strict(root_s, "checkpoint root hash")
    if len(root) != 32:
        raise LogError(f"checkpoint: root hash has {len(root)} bytes, expected 32")
    if any(not e for e in ext):
        raise LogError("checkpoint: empty extension line")
    return Checkpoint(origin, int(size_s), root, tuple(ext))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The signed note text of a checkpoint."""
    if signer.name != cp.origin:
        raise LogError(f"checkpoint: signer key name {signer.name!r} != origin {cp.origin!r}")
    return sign_note(cp.body(), [signer])


def open_checkpoint(
    note_text: str | bytes, verifiers: Iterable[NoteVerifier], origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint; a signature by the key named as the origin is required."""
    note = parse_note(note_text)
    ok = verify_note(note, verifiers)
    cp = parse_checkpoint_body(note.text)
    if origin is not None and cp.origin != origin:
        raise LogError(f"checkpoint: origin {cp.origin!r}, expected {origin!r}")
    if not any(v.name == cp.origin for v in ok):
        raise LogError(f"checkpoint: no valid signature by the log key named {cp.origin!r}")
    return cp

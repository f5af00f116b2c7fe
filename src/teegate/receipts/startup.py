"""Start-up verification of every signed checkpoint, incrementally.

Every checkpoint the log ever signed is verified once: its note's signature (by the log key,
for this origin, matching the row's size and root), its root in the stored tree, and its
consistency with the checkpoint before it (a consistency proof from the stored tree between
the two signed roots); the newest one must also be extended by the current tree. What has
been verified is remembered durably in ``tlog_meta`` (``verified_checkpoints``: the newest
verified size, how many checkpoints up to it, and a hash chain over their rows), so a restart
verifies only the checkpoints signed since. Re-checked at every start, because they are cheap:
the remembered newest checkpoint in full (signature, root in the tree, and it is the start of
the consistency chain through every new one to the current tree), and the rows up to it:
re-hashed against the remembered chain (``full``: any changed, added or removed row is
caught) or counted (``fast``: an added or removed row is caught, a changed older row is not).
Any failure is a ``CheckpointVerificationError`` naming the checkpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from teegate.errors import LogError
from teegate.receipts import merkle
from teegate.receipts.checkpoint import Checkpoint
from teegate.receipts.store import StoredCheckpoint, TreeStore

MARK_KEY = "verified_checkpoints"
_START = bytes(32)
PAGE = 1000


class CheckpointVerificationError(LogError):
    """A stored checkpoint failed start-up verification; ``size`` names it."""

    def __init__(self, size: int, message: str) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class VerifiedMark:
    """What earlier starts verified: every checkpoint up to ``size`` (``count`` rows, whose
    hash chain is ``digest``)."""

    size: int
    count: int
    digest: bytes

    def encode(self) -> str:
        return json.dumps({"size": self.size, "count": self.count,
                           "digest": self.digest.hex()}, sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> VerifiedMark:
        try:
            d = json.loads(text)
            mark = cls(int(d["size"]), int(d["count"]), bytes.fromhex(d["digest"]))
        except (ValueError, KeyError, TypeError) as e:
            raise LogError(f"the log's record of verified checkpoints is malformed ({e}): "
                           "tlog_meta was rewritten") from None
        if mark.size < 0 or mark.count < 1 or len(mark.digest) != 32:
            raise LogError("the log's record of verified checkpoints is malformed: "
                           "tlog_meta was rewritten")
        return mark


def chain(digest: bytes, cp: StoredCheckpoint) -> bytes:
    """The hash chain over checkpoint rows, in size order."""
    h = hashlib.sha256(digest)
    h.update(cp.size.to_bytes(8, "big"))
    h.update(cp.root)
    h.update(hashlib.sha256(cp.note.encode()).digest())
    return h.digest()


@dataclass
class StartupCheck:
    """What a start verified (also for tests and the log line)."""

    new: int = 0  # checkpoints verified for the first time
    first_new: int | None = None
    newest: StoredCheckpoint | None = None
    rechecked: StoredCheckpoint | None = None  # the remembered newest, verified again
    rehashed: int = 0  # remembered rows re-hashed (full) or counted (fast)
    mark: VerifiedMark | None = None  # what to remember now
    roots: dict[int, bytes] = field(default_factory=dict)  # size -> signed root, checked

    def describe(self) -> str:
        parts = []
        if self.new:
            assert self.newest is not None
            parts.append(f"verified {self.new} new checkpoints (sizes {self.first_new}.."
                         f"{self.newest.size}: signatures, roots in the stored tree, each "
                         "consistent with the one before)")
        if self.rechecked is not None:
            parts.append(f"re-checked checkpoint {self.rechecked.size} verified at an "
                         f"earlier start (signature, root, consistency onward) and the "
                         f"{self.rehashed} stored checkpoints up to it")
        if self.newest is not None:
            parts.append(f"the tree extends checkpoint {self.newest.size}")
        return "; ".join(parts) or "no checkpoints yet"


class _Checker:
    def __init__(self, store: TreeStore, open_cp: Callable[[StoredCheckpoint], Checkpoint]
                 ) -> None:
        self.store = store
        self.open_cp = open_cp
        self.size = store.size()

    def one(self, cp: StoredCheckpoint, prev: StoredCheckpoint | None) -> None:
        """Signature, root in the tree, consistency with ``prev``: or the error naming it."""
        try:
            self.open_cp(cp)
        except LogError as e:
            raise CheckpointVerificationError(
                cp.size, f"checkpoint {cp.size}: {e}: the checkpoint table was rewritten"
            ) from None
        if cp.size > self.size:
            self.size = self.store.size()  # another process may have appended meanwhile
        if cp.size > self.size:
            raise CheckpointVerificationError(
                cp.size, f"log database holds {self.size} receipts but checkpoint {cp.size} "
                "was signed: the database was truncated or rewritten")
        try:
            root = self.store.root(cp.size)
        except LogError as e:
            raise CheckpointVerificationError(cp.size, f"checkpoint {cp.size}: {e}") from None
        if root != cp.root:
            raise CheckpointVerificationError(
                cp.size, f"stored tree does not match signed checkpoint {cp.size}: "
                "the database was rewritten")
        if prev is not None:
            self.consistent(prev, cp.size, cp.root, f"checkpoint {cp.size}")

    def consistent(self, prev: StoredCheckpoint, size: int, root: bytes, what: str) -> None:
        if prev.size == 0 or prev.size >= size:
            return
        try:
            proof = self.store.consistency_proof(prev.size, size)
            merkle.verify_consistency(prev.size, size, proof, prev.root, root)
        except LogError as e:
            raise CheckpointVerificationError(
                prev.size, f"{what} is not consistent with checkpoint {prev.size} ({e}): "
                "the log was forked or rewritten") from None


def verify_checkpoints(store: TreeStore, open_cp: Callable[[StoredCheckpoint], Checkpoint],
                       *, full: bool, page: int = PAGE) -> StartupCheck:
    """Verify every checkpoint not verified at an earlier start, re-check the remembered
    one, and return what to remember (``mark``; the caller stores it once the rest of its
    start-up checks passed)."""
    check = _Checker(store, open_cp)
    out = StartupCheck()
    text = store.meta(MARK_KEY)
    mark = VerifiedMark.decode(text) if text is not None else None
    prev: StoredCheckpoint | None = None
    digest, count, after = _START, 0, -1
    if mark is not None:
        cp = store.checkpoint_at(mark.size)
        if cp is None:
            raise CheckpointVerificationError(
                mark.size, f"checkpoint {mark.size}, verified at an earlier start, is no "
                "longer stored: the checkpoint table was rewritten")
        check.one(cp, None)
        if full:
            got, n = _rehash(store, mark.size, page)
        else:
            got, n = mark.digest, store.count_checkpoints(mark.size)
        if (got, n) != (mark.digest, mark.count):
            raise CheckpointVerificationError(
                mark.size, f"the stored checkpoints up to {mark.size} are not the "
                f"{mark.count} verified at an earlier start ({n} stored now"
                f"{', or one was changed' if full else ''}): the checkpoint table was "
                "rewritten")
        out.rechecked, out.rehashed = cp, n
        out.roots[cp.size] = cp.root
        prev, digest, count, after = cp, mark.digest, mark.count, mark.size
    while True:
        rows = store.checkpoints_after(after, page)
        for cp in rows:
            check.one(cp, prev)
            digest, count, prev = chain(digest, cp), count + 1, cp
            out.new += 1
            if out.first_new is None:
                out.first_new = cp.size
        if len(rows) < page:
            break
        after = rows[-1].size
    if prev is not None:
        out.newest = prev
        out.roots[prev.size] = prev.root
        size = store.size()
        check.consistent(prev, size, store.root(size), f"the stored tree ({size} receipts)")
        if out.new:
            out.mark = VerifiedMark(prev.size, count, digest)
    return out


def _rehash(store: TreeStore, up_to: int, page: int) -> tuple[bytes, int]:
    digest, count, after = _START, 0, -1
    while True:
        rows = [cp for cp in store.checkpoints_after(after, page) if cp.size <= up_to]
        for cp in rows:
            digest, count = chain(digest, cp), count + 1
        if len(rows) < page:
            return digest, count
        after = rows[-1].size

"""``ReceiptLog``: the append-only transparency log of signed receipts.

``submit`` only queues (the request path never waits for the database); a background thread
signs queued receipts and appends them in batches, one transaction per batch. Checkpoints are
signed at an interval and on demand, only over receipts already committed, and only after the
new tree is proven consistent with the last signed checkpoint. On start the stored tree is
checked against the last signed checkpoint, so a database rewritten behind the log's back
stops the log instead of being signed over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.errors import EvidenceError, LogError, TeegateError
from teegate.receipts import merkle
from teegate.receipts.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from teegate.receipts.note import NoteSigner, NoteVerifier
from teegate.receipts.receipt import (
    RECEIPT_ID,
    Receipt,
    ReceiptSigner,
    SignedReceipt,
    check_document,
)
from teegate.receipts.store import Entry, StoredCheckpoint, TreeStore

_log = logging.getLogger("teegate.receipts")


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str  # the signed note text, verbatim

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


@dataclass(frozen=True)
class LoggedReceipt:
    index: int
    receipt: SignedReceipt
    agent: str


@dataclass(frozen=True)
class ReceiptProof:
    """A receipt, its leaf index, and its inclusion proof in a signed checkpoint."""

    index: int
    receipt: SignedReceipt
    agent: str
    proof: list[bytes]
    checkpoint: SignedCheckpoint


class ReceiptLog:
    """Receipts in, signed checkpoints and proofs out. Thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        origin: str,
        key: Ed25519PrivateKey,
        receipt_key: Ed25519PrivateKey | None = None,
        schema: str | None = None,
        checkpoint_interval: float = 1.0,
        flush_interval: float = 0.005,
        max_batch: int = 5000,
        max_queue: int = 1_000_000,
        verify_on_open: Literal["full", "fast"] = "full",
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.origin = origin
        self._note_signer = NoteSigner(origin, key)
        self.verifier: NoteVerifier = self._note_signer.verifier
        self.signer = ReceiptSigner(receipt_key or key, subject=origin)
        self.checkpoint_interval = checkpoint_interval
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._clock = clock
        self.store = TreeStore(url, schema=schema)
        self._queue: deque[Receipt | SignedReceipt] = deque()
        self._pending: dict[str, Receipt | SignedReceipt] = {}
        self._cond = threading.Condition()
        self._submitted = 0
        self._durable = 0
        self._stop = False
        self._flush_now = False
        self.last_error: str | None = None
        self.dropped: list[str] = []  # ids of receipts that could never be signed/encoded
        self._cp_lock = threading.Lock()
        self._last_cp_time: float | None = None  # time.monotonic(): immune to clock steps
        try:
            self._bind_identity()
            self._verify_stored_tree(full=verify_on_open == "full")
        except BaseException:
            self.store.close()
            raise
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name="teegate-receipt-log", daemon=True
            )
            self._thread.start()

    # -- identity and start-up checks -------------------------------------------------

    @property
    def vkey(self) -> str:
        """The verifier key of the log (``origin+hash+base64``): give it to auditors."""
        return self.verifier.vkey

    def _bind_identity(self) -> None:
        origin = self.store.set_meta_once("origin", self.origin)
        if origin != self.origin:
            raise LogError(f"this log's origin is {origin!r}, not {self.origin!r}")
        vkey = self.store.set_meta_once("log_vkey", self.vkey)
        if vkey != self.vkey:
            raise LogError(f"this log is signed by {vkey}; refusing to sign it with another key")

    def _open_stored(self, cp: StoredCheckpoint) -> Checkpoint:
        c = open_checkpoint(cp.note, [self.verifier], origin=self.origin)
        if c.size != cp.size or c.root_hash != cp.root:
            raise LogError(f"stored checkpoint {cp.size} does not match its signed note")
        return c

    def _verify_stored_tree(self, full: bool) -> None:
        """Refuse to run on a tree that does not extend every checkpoint it signed."""
        size = self.store.size()
        cps = self.store.checkpoints(limit=1000)
        for cp in cps:
            self._open_stored(cp)
            if cp.size > size:
                raise LogError(
                    f"log database holds {size} receipts but checkpoint {cp.size} was signed: "
                    "the database was truncated or rewritten"
                )
            if self.store.root(cp.size) != cp.root:
                raise LogError(
                    f"stored tree does not match signed checkpoint {cp.size}: "
                    "the database was rewritten"
                )
        if full and size:
            roots = self.store.roots_from_leaves(size, [cp.size for cp in cps])
            for cp in cps:
                if roots[cp.size] != cp.root:
                    raise LogError(
                        f"receipts stored under checkpoint {cp.size} do not hash to its root: "
                        "a logged receipt was rewritten"
                    )
            if roots[size] != self.store.root(size):
                raise LogError("stored subtree hashes do not match the stored receipts")
            self.store.verify_all_nodes(size)

    # -- submitting -------------------------------------------------------------------

    def submit(self, receipt: Receipt | SignedReceipt) -> str:
        """Queue a receipt (signed in the background if unsigned); returns its id at once."""
        rid = receipt.receipt_id
        with self._cond:
            if self._stop:
                raise LogError("receipt log is closed")
            if len(self._queue) >= self.max_queue:
                raise LogError(
                    f"receipt log backlog is full ({len(self._queue)} receipts not yet written: "
                    f"{self.last_error or 'database too slow'})"
                )
            self._queue.append(receipt)
            self._pending[rid] = receipt
            self._submitted += 1
            if len(self._queue) >= self.max_batch:
                self._cond.notify_all()
        return rid

    def append_many(self, receipts: Sequence[Receipt | SignedReceipt]) -> list[int]:
        """Sign and append synchronously in one transaction; returns the leaf indexes."""
        signed = [self._sign(r) for r in receipts]  # synchronous: the caller sees the error
        return self.store.append([Entry(s.receipt_id, s.agent, s.leaf) for s in signed])

    def _sign(self, r: Receipt | SignedReceipt) -> SignedReceipt:
        if isinstance(r, SignedReceipt):
            check_document(r.document)  # pre-signed: at least an aci/1 receipt shape
            if not RECEIPT_ID.fullmatch(r.receipt_id):  # it goes into URLs and headers
                raise EvidenceError(f"receipt id {r.receipt_id!r} has characters a log refuses")
            return r
        return self.signer.sign(r)

    def flush(self, timeout: float | None = 10.0) -> None:
        """Block until everything submitted so far is committed to the log."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            if self._thread is None:
                batch = list(self._queue)
            else:
                self._flush_now = True
                self._cond.notify_all()
                while self._durable < target:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise LogError(
                            f"receipt log: flush timed out ({self.last_error or 'still writing'})"
                        )
                    self._cond.wait(left if left is not None else 0.1)
                return
        # no background thread: write inline
        self._write(batch)
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            self._done(batch)

    def _done(self, batch: Sequence[Receipt | SignedReceipt]) -> None:
        for r in batch:
            self._pending.pop(r.receipt_id, None)
        self._durable += len(batch)
        self._cond.notify_all()

    @property
    def conflicts(self) -> list[str]:
        """Ids submitted again with other content than the logged receipt (not logged)."""
        return self.store.conflicts

    def _write(self, batch: Sequence[Receipt | SignedReceipt]) -> None:
        before = len(self.store.conflicts)
        self.store.append(self._entries(batch))
        for rid in self.store.conflicts[before:]:
            self.last_error = (
                f"receipt {rid}: conflict, a receipt with this id and other content is already "
                "logged; the new one was not logged"
            )
            _log.error("receipt log: %s", self.last_error)

    def _entries(self, batch: Sequence[Receipt | SignedReceipt]) -> list[Entry]:
        """Sign and encode each receipt; one that can never be encoded is dropped and reported.

        Signing is deterministic, so retrying such a receipt would stop every later append.
        """
        out: list[Entry] = []
        for r in batch:
            try:
                s = self._sign(r)
                out.append(Entry(s.receipt_id, s.agent, s.leaf))
            except TeegateError as e:
                self.dropped.append(r.receipt_id)
                self.last_error = f"receipt {r.receipt_id} dropped, cannot be logged: {e}"
                _log.error("receipt log: %s", self.last_error)
        return out

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    self._cond.wait(self.flush_interval)
                if self._stop and not self._queue:
                    return
                n = min(len(self._queue), self.max_batch)
                batch = [self._queue[i] for i in range(n)]
                self._flush_now = False
            if batch:
                try:
                    self._write(batch)
                except TeegateError as e:
                    self.last_error = str(e)
                    _log.error("receipt log append failed, will retry: %s", e)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                except Exception as e:  # database errors: keep the receipts and retry
                    self.last_error = f"{type(e).__name__}: {e}"
                    _log.exception("receipt log append failed, will retry")
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if self.last_error is not None and not self.last_error.startswith("receipt "):
                    self.last_error = None
                with self._cond:
                    for _ in batch:
                        self._queue.popleft()
                    self._done(batch)
            if self.checkpoint_interval > 0 and (
                self._last_cp_time is None
                or time.monotonic() - self._last_cp_time >= self.checkpoint_interval
            ):
                try:
                    self._checkpoint()
                except Exception as e:
                    self.last_error = f"checkpoint: {e}"
                    _log.exception("signing a checkpoint failed")
                    self._last_cp_time = time.monotonic()

    # -- checkpoints ------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """On demand: commit everything submitted, then sign (or reuse) the latest checkpoint."""
        self.flush()
        return self._checkpoint()

    def _checkpoint(self) -> SignedCheckpoint:
        with self._cp_lock, self.store.db.transaction():
            self._last_cp_time = time.monotonic()
            size = self.store.size()
            last = self.store.last_checkpoint()
            if last is not None:
                self._open_stored(last)
                if last.size == size:
                    return self._signed(last)
                if last.size > size:
                    raise LogError(
                        f"log shrank from checkpoint {last.size} to {size}: refusing to sign"
                    )
            root = self.store.root(size)
            if last is not None and last.size > 0:
                proof = self.store.consistency_proof(last.size, size)
                merkle.verify_consistency(last.size, size, proof, last.root, root)
            cp = Checkpoint(self.origin, size, root)
            note = sign_checkpoint(cp, self._note_signer)
            stored = StoredCheckpoint(size, root, note, int(self._clock() * 1000))
            self.store.insert_checkpoint(stored)
        return SignedCheckpoint(cp, note)

    def _signed(self, cp: StoredCheckpoint) -> SignedCheckpoint:
        return SignedCheckpoint(Checkpoint(self.origin, cp.size, cp.root), cp.note)

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        cp = self.store.last_checkpoint()
        return self._signed(cp) if cp else None

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        cp = self.store.checkpoint_at(size)
        return self._signed(cp) if cp else None

    # -- reads ------------------------------------------------------------------------

    def get(self, receipt_id: str) -> LoggedReceipt | None:
        """A logged receipt; a receipt still queued is committed first."""
        if receipt_id in self._pending:
            self.flush(timeout=5.0)
        row = self.store.leaf_by_id(receipt_id)
        if row is None:
            return None
        idx, agent, data = row
        return LoggedReceipt(idx, SignedReceipt.from_json(data), agent)

    def size(self) -> int:
        return self.store.size()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.store.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self.store.consistency_proof(size1, size2)

    def prove(self, receipt_id: str) -> ReceiptProof | None:
        """Receipt + inclusion proof in the smallest checkpoint covering it (signed if needed)."""
        got = self.get(receipt_id)
        if got is None:
            return None
        cp = self.store.checkpoint_covering(got.index + 1)
        scp = self._signed(cp) if cp else self._checkpoint()
        proof = self.store.inclusion_proof(got.index, scp.size)
        return ReceiptProof(got.index, got.receipt, got.agent, proof, scp)

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued, sign a final checkpoint, stop the thread, close the DB."""
        if self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(timeout=30)
            self._thread = None
        elif self._queue:
            self.flush()
        try:
            if self.store.size() and not self._queue:
                self._checkpoint()
        except TeegateError as e:  # shutting down anyway: report, do not mask the close
            self.last_error = f"final checkpoint: {e}"
            _log.error("receipt log: final checkpoint not signed: %s", e)
        finally:
            self.store.close()

    def __enter__(self) -> ReceiptLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

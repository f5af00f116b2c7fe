"""``ReceiptLog``: the append-only transparency log of signed receipts.

Two ways in. ``commit`` (and ``entry`` + ``enqueue`` inside a caller's transaction, which is
how the gateway writes a call's receipt in its settlement's transaction) makes a signed
receipt durable in ``tlog_queue`` before it returns. ``submit`` only queues in memory (a
library convenience; lost on a kill). A background thread moves both into the tree in
batches, one transaction per batch, through ``writer`` (the ledger's group commit when the
gateway shares its database), verifying the signature of every queued row it did not sign
itself; queued rows survive a restart and are appended then. Checkpoints are
signed at an interval and on demand, only over receipts already committed, and only after the
new tree is proven consistent with the last signed checkpoint. On start the stored tree is
checked against the last signed checkpoint, so a database rewritten behind the log's back
stops the log instead of being signed over.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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
from teegate.receipts.startup import (
    MARK_KEY,
    CheckpointVerificationError,
    StartupCheck,
    verify_checkpoints,
)
from teegate.receipts.store import (
    AppendResult,
    Entry,
    LogStuckError,
    StoredCheckpoint,
    TreeStore,
    Tx,
)

_log = logging.getLogger("teegate.receipts")
T = TypeVar("T")
Writer = Callable[[Callable[[Tx], Any]], Any]
_MINE_MAX = 200_000  # own-signed leaf hashes remembered (skip re-verifying them); bounded


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
    """Receipts in, signed checkpoints and proofs out. Thread-safe.

    ``writer(fn)`` runs ``fn(tx)`` in one committed write transaction (default: the log's
    own connection); the gateway passes the ledger's ``Backend.run`` when both live in one
    database, so receipts, holds and settlements share one group commit. ``stuck`` names
    why the tree cannot grow (rows past its head, a recurring storage error, a leaf not
    signed by the receipt key); it clears by itself once the cause is gone."""

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
        max_batch: int = 1000,
        max_queue: int = 1_000_000,
        verify_on_open: Literal["full", "fast"] = "full",
        background: bool = True,
        clock: Callable[[], float] = time.time,
        writer: Writer | None = None,
        stuck_after: int = 3,
    ) -> None:
        self.origin = origin
        self._note_signer = NoteSigner(origin, key)
        self.verifier: NoteVerifier = self._note_signer.verifier
        self.signer = ReceiptSigner(receipt_key or key, subject=origin)
        self.checkpoint_interval = checkpoint_interval
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.stuck_after = stuck_after
        self._clock = clock
        self.store = TreeStore(url, schema=schema)
        self._writer: Writer = writer or self._own_write
        self._queue: deque[Receipt | SignedReceipt] = deque()
        self._pending: dict[str, Receipt | SignedReceipt] = {}
        self._cond = threading.Condition()
        self._submitted = 0
        self._durable = 0
        self._gen_started = 0
        self._gen_done = 0
        self._drained_all = False
        self._stop = False
        self._flush_now = False
        self._fails = 0
        self._stuck_logged = 0.0
        self.stuck: str | None = None
        self.last_error: str | None = None
        self.dropped: list[str] = []  # ids of receipts that could never be signed/encoded
        self.quarantined: list[str] = []  # queued rows refused (not the receipt key's)
        self._mine: dict[str, bytes] = {}  # receipt id -> sha256(leaf) of what we signed
        self._vouched: set[int] = set()  # leaves appended here since the last checkpoint
        self._cp_lock = threading.Lock()
        self._last_cp_time: float | None = None  # time.monotonic(): immune to clock steps
        self.startup_check = StartupCheck()  # what the start verified (receipts.startup)
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

    def _own_write(self, fn: Callable[[Tx], T]) -> T:
        with self.store.db.transaction(lock_head=False):
            return fn(self.store.db.tx())

    def use_writer(self, writer: Writer) -> None:
        """Write through ``writer`` from now on (the ledger's group commit)."""
        self._writer = writer

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
        """Refuse to run on a tree that does not extend every checkpoint it signed: every
        checkpoint is verified once, a restart verifies only new ones and re-checks the
        remembered newest (teegate.receipts.startup); ``full`` also recomputes the tree
        from the stored receipts."""
        check = verify_checkpoints(self.store, self._open_stored, full=full)
        self.startup_check = check
        size = self.store.size()
        if full and size:
            roots = self.store.roots_from_leaves(size, list(check.roots))
            for cp_size, root in check.roots.items():
                if roots[cp_size] != root:
                    raise CheckpointVerificationError(
                        cp_size, f"receipts stored under checkpoint {cp_size} do not hash to "
                        "its root: a logged receipt was rewritten")
            if roots[size] != self.store.root(size):
                raise LogError("stored subtree hashes do not match the stored receipts")
            self.store.verify_all_nodes(size)
        if check.mark is not None:  # remembered only once everything above passed
            self.store.set_meta(MARK_KEY, check.mark.encode())
        _log.info("receipt log %s: %s", self.origin, check.describe())

    # -- submitting -------------------------------------------------------------------

    def entry(self, receipt: Receipt | SignedReceipt) -> Entry:
        """Sign (or check a pre-signed receipt) and encode: the row ``enqueue`` writes."""
        s = self._sign(receipt)
        e = Entry(s.receipt_id, s.agent, s.leaf)
        if len(self._mine) >= _MINE_MAX:
            self._mine.clear()  # only a speed-up: unknown rows are verified in full
        self._mine[e.receipt_id] = hashlib.sha256(e.data).digest()
        return e

    def enqueue(self, tx: Tx, entries: Sequence[Entry]) -> None:
        """Write signed receipts into ``tlog_queue`` inside the caller's transaction: durable
        when that transaction commits, in the tree shortly after (or after a restart)."""
        self.store.enqueue(tx, entries)

    def commit(self, receipts: Sequence[Receipt | SignedReceipt]) -> list[str]:
        """Sign and make durable (queued in the database) before returning; ids in order."""
        entries = [self.entry(r) for r in receipts]
        self._writer(lambda tx: self.store.enqueue(tx, entries))
        self.wake()
        return [e.receipt_id for e in entries]

    def wake(self) -> None:
        """Tell the writer that rows were queued (it also polls every ``flush_interval``)."""
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()

    def submit(self, receipt: Receipt | SignedReceipt) -> str:
        """Queue a receipt in memory (signed in the background if unsigned); returns its id
        at once. Not durable until written: use ``commit`` for a receipt id that is a
        promise."""
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
        entries = [self.entry(r) for r in receipts]  # synchronous: the caller sees the error
        res = self._append(entries, drain=0)
        return res.indexes

    def _sign(self, r: Receipt | SignedReceipt) -> SignedReceipt:
        if isinstance(r, SignedReceipt):
            check_document(r.document)  # pre-signed: at least an aci/1 receipt shape
            if not RECEIPT_ID.fullmatch(r.receipt_id):  # it goes into URLs and headers
                raise EvidenceError(f"receipt id {r.receipt_id!r} has characters a log refuses")
            r.verify([self.signer.public_key])  # only the receipt key's receipts are logged
            return r
        return self.signer.sign(r)

    def _verify_row(self, e: Entry) -> str | None:
        """Why a queued row may not enter the tree (None: it may). Rows this process signed
        are recognised by their hash; any other must be a receipt signed by the receipt key
        whose id and agent columns say what the signed document says."""
        mine = self._mine.pop(e.receipt_id, None)
        if mine is not None and mine == hashlib.sha256(e.data).digest():
            return None
        return self._check_leaf(e.receipt_id, e.agent, e.data)

    def _check_leaf(self, receipt_id: str, agent: str | None, data: bytes) -> str | None:
        try:
            s = SignedReceipt.from_json(data)
            s.verify([self.signer.public_key])
        except TeegateError as x:
            return f"not a receipt signed by the receipt key: {x}"
        if s.receipt_id != receipt_id:
            return f"stored under id {receipt_id!r} but the signed receipt is {s.receipt_id!r}"
        if agent is not None and s.agent != agent:
            return f"stored for agent {agent!r} but the signed receipt names {s.agent!r}"
        if s.leaf != data:
            return "not the canonical (JCS) form of the signed receipt"
        return None

    def flush(self, timeout: float | None = 10.0) -> None:
        """Block until everything submitted or queued so far is in the tree."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is None:  # no background thread: write inline
            while True:
                with self._cond:
                    batch = [self._queue[i] for i in range(min(len(self._queue),
                                                                 self.max_batch))]
                drained_all = self._cycle(batch)
                with self._cond:
                    for _ in batch:
                        self._queue.popleft()
                    self._done(batch)
                    if drained_all and not self._queue:
                        return
        with self._cond:
            target = self._submitted
            want = self._gen_started + 1  # a cycle that starts after this call
            self._flush_now = True
            self._cond.notify_all()
            while not (self._durable >= target and self._gen_done >= want
                       and self._drained_all):
                if self.stuck is not None:
                    raise LogError(f"receipt log is stuck: {self.stuck}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise LogError(
                        f"receipt log: flush timed out ({self.last_error or 'still writing'})"
                    )
                if self._thread is None or not self._thread.is_alive():
                    raise LogError("receipt log is closed")
                self._cond.wait(min(left, 0.1) if left is not None else 0.1)

    def _done(self, batch: Sequence[Receipt | SignedReceipt]) -> None:
        for r in batch:
            self._pending.pop(r.receipt_id, None)
        self._durable += len(batch)
        self._cond.notify_all()

    @property
    def conflicts(self) -> list[str]:
        """Ids submitted again with other content than the logged receipt (not logged)."""
        return self.store.conflicts

    @property
    def backlog(self) -> int:
        """Receipts not yet in the tree: queued in memory plus queued in the database."""
        return len(self._queue) + self.store.queued()

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

    def _append(self, entries: Sequence[Entry], drain: int) -> AppendResult:
        now_ms = int(self._clock() * 1000)
        with self.store._write_lock:
            try:
                res: AppendResult = self._writer(lambda tx: self.store.append_tx(
                    tx, entries, drain=drain, verify=self._verify_row, now_ms=now_ms))
            except BaseException:
                self.store.forget_edge()
                raise
            self.store.install(res)
        start = res.compact.size - res.appended
        self._vouched.update(range(start, res.compact.size))
        for rid in res.conflicts:
            self.last_error = (
                f"receipt {rid}: conflict, a receipt with this id and other content is already "
                "logged; the new one was not logged"
            )
            _log.error("receipt log: %s", self.last_error)
        for rid, why in res.quarantined:
            self.quarantined.append(rid)
            self.last_error = f"receipt {rid} quarantined (tlog_quarantine), not logged: {why}"
            _log.error("receipt log: %s", self.last_error)
        return res

    def _cycle(self, batch: Sequence[Receipt | SignedReceipt]) -> bool:
        """Append ``batch`` and the oldest queued rows; True when the queue was drained."""
        entries = self._entries(batch)
        if not entries and not self.store.has_queued():
            self._recovered()
            return True
        res = self._append(entries, drain=self.max_batch)
        self._recovered()
        return bool(res.drained < self.max_batch)

    def _recovered(self) -> None:
        self._fails = 0
        if self.stuck is not None:
            _log.warning("receipt log: appending again (was stuck: %s)", self.stuck)
            self.stuck = None
        if self.last_error is not None and not self.last_error.startswith("receipt "):
            self.last_error = None

    def _failed(self, e: BaseException, what: str) -> None:
        self._fails += 1
        msg = f"{what}: {e}" if str(e) else f"{what}: {type(e).__name__}"
        self.last_error = msg
        now = time.monotonic()
        if isinstance(e, LogStuckError) or self._fails >= self.stuck_after:
            if self.stuck is None or now - self._stuck_logged >= 30:
                _log.error("receipt log STUCK (receipts stay queued, calls are refused): %s",
                           msg)
                self._stuck_logged = now
            self.stuck = msg
            with self._cond:
                self._cond.notify_all()  # flush() waiters fail at once
        else:
            _log.error("receipt log: %s; will retry", msg)

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                if not self._queue and not self._stop and not self._flush_now:
                    self._cond.wait(self.flush_interval)
                if self._stop and (not self._queue or self.stuck is not None) and (
                        self._drained_all or self.stuck is not None):
                    break
                n = min(len(self._queue), self.max_batch)
                batch = [self._queue[i] for i in range(n)]
                self._flush_now = False
                self._gen_started += 1
                gen = self._gen_started
            try:
                drained_all = self._cycle(batch)
            except Exception as e:
                self._failed(e, "append")
                if not isinstance(e, TeegateError):
                    _log.debug("receipt log append failed", exc_info=True)
                with self._cond:
                    self._gen_done = gen
                    self._drained_all = False
                    if not self._stop:
                        self._cond.wait(backoff)  # a stop wakes it at once
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self._done(batch)
                self._gen_done = gen
                self._drained_all = drained_all
            if self.checkpoint_interval > 0 and (
                self._last_cp_time is None
                or time.monotonic() - self._last_cp_time >= self.checkpoint_interval
            ):
                try:
                    self._checkpoint()
                except Exception as e:
                    self._failed(e, "checkpoint")
                    self._last_cp_time = time.monotonic()
        self._spill()

    def _spill(self) -> None:
        """Stopping with receipts still in memory (a stuck log): queue them durably."""
        with self._cond:
            rest = list(self._queue)
        if not rest:
            return
        try:
            entries = self._entries(rest)
            self._writer(lambda tx: self.store.enqueue(tx, entries))
            with self._cond:
                for _ in rest:
                    self._queue.popleft()
                self._done(rest)
            _log.warning("receipt log: %d receipts queued in tlog_queue for the next start",
                         len(entries))
        except Exception as e:
            _log.error("receipt log: %d receipts could not be queued and are lost: %s",
                       len(rest), e)

    # -- checkpoints ------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """On demand: commit everything submitted, then sign (or reuse) the latest checkpoint."""
        self.flush()
        return self._checkpoint()

    def _checkpoint(self) -> SignedCheckpoint:
        with self._cp_lock:
            out: SignedCheckpoint = self._writer(self._checkpoint_tx)
            return out

    def _checkpoint_tx(self, tx: Tx) -> SignedCheckpoint:
        self._last_cp_time = time.monotonic()
        row = tx.one(self.store.head_sql)
        size = int(row[0]) if row else 0
        last = self.store.last_checkpoint()
        if last is not None:
            self._open_stored(last)
            if last.size == size:
                return self._signed(last)
            if last.size > size:
                raise LogError(
                    f"log shrank from checkpoint {last.size} to {size}: refusing to sign"
                )
        start = last.size if last is not None else 0
        self._verify_leaves(start, size)
        root = self.store.root(size)
        if last is not None and last.size > 0:
            proof = self.store.consistency_proof(last.size, size)
            merkle.verify_consistency(last.size, size, proof, last.root, root)
        cp = Checkpoint(self.origin, size, root)
        note = sign_checkpoint(cp, self._note_signer)
        tx.exec(
            "INSERT INTO tlog_checkpoint (size, root, note, created_ms) VALUES (?, ?, ?, ?)",
            (size, root, note, int(self._clock() * 1000)),
        )
        self._vouched = {i for i in self._vouched if i >= size}
        return SignedCheckpoint(cp, note)

    def _verify_leaves(self, start: int, end: int) -> None:
        """Before a checkpoint covers leaves ``start..end``: each one this process did not
        append itself must be a receipt signed by the receipt key, hashed into the tree."""
        todo = [i for i in range(start, end) if i not in self._vouched]
        if not todo:
            return
        for lo in range(todo[0], end, 5000):
            hi = min(end, lo + 5000)
            rows = self.store.leaves(lo, hi)
            hashes = self.store.nodes((0, i) for i, _, _ in rows)
            for idx, rid, data in rows:
                if idx in self._vouched:
                    continue
                agent = self.store.leaf_agent(idx)
                why = self._check_leaf(rid, agent, data)
                if why is None and hashes.get((0, idx)) != merkle.leaf_hash(data):
                    why = "its stored leaf hash is not the hash of its bytes"
                if why is not None:
                    raise LogStuckError(f"leaf {idx} ({rid!r}) {why}: refusing to sign a "
                                        "checkpoint over it")
            if len(rows) != hi - lo:
                raise LogStuckError(f"log storage: leaves {lo}..{hi} are incomplete")

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
        """A logged receipt, as its signed document says (never the row's own columns).

        A receipt still queued (in memory or in ``tlog_queue``) is appended first; when the
        log cannot append it (stuck, or it takes more than 5 s) this raises ``LogError``
        rather than answering "no such receipt"."""
        row = self.store.leaf_by_id(receipt_id)
        if row is None:
            queued = receipt_id in self._pending or (
                self.store.queued_entry(receipt_id) is not None)
            if not queued:
                return None
            if self.stuck is not None:
                raise LogError(f"receipt {receipt_id} is queued but the log is stuck: "
                               f"{self.stuck}")
            self.flush(timeout=5.0)
            row = self.store.leaf_by_id(receipt_id)
            if row is None:
                raise LogError(f"receipt {receipt_id} is queued but not yet logged")
        idx, _agent_column, data = row
        try:
            s = SignedReceipt.from_json(data)
        except TeegateError as e:
            raise LogError(f"stored receipt at leaf {idx} is damaged: {e}") from None
        if s.receipt_id != receipt_id:
            return None  # the row's id column names another receipt: not this one
        why = self._check_leaf(receipt_id, None, data)
        if why is not None:
            raise LogError(f"stored receipt at leaf {idx} is {why}")
        return LoggedReceipt(idx, s, s.agent)

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
        """Append what is queued (or, when the log is stuck, keep it queued in the database
        for the next start), sign a final checkpoint, stop the thread, close the database."""
        if self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(timeout=30)
            self._thread = None
        elif self._queue:
            try:
                self.flush()
            except TeegateError as e:
                _log.error("receipt log: closing: %s", e)
                self._spill()
        try:
            if self.stuck is None and self.store.size() and not self._queue:
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

"""A disk cache for collateral whose expiry comes from the collateral itself.

Each entry is one file: a JSON header line (key, expiry, when stored) then the payload bytes.
Writes go to a temporary file in the same directory and are renamed into place, so readers in
other processes see either the old entry or the new one, never half of one. A per-key lock
file (``fcntl.flock``) lets concurrent fetchers of the same collateral wait for the first one
instead of all hitting the vendor (AMD KDS rate-limits and re-signs on every fetch).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from teegate import safejson
from teegate.errors import CollateralError

_SUFFIX = ".entry"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    key: str
    expires: int
    stored: int
    size: int
    path: Path

    def expired(self, now: int) -> bool:
        return now >= self.expires


class CollateralCache:
    """Collateral by key (``amd-vcek/Milan/<hwid>/<tcb>``, ``intel/tdx/B0C06F000000/platform``).

    ``get`` returns the payload only while ``now`` is before the entry's expiry.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise CollateralError(f"collateral cache {self.dir}: cannot create: {e}") from e

    def _path(self, key: str) -> Path:
        return self.dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + _SUFFIX)

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, object], bytes] | None:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CollateralError(f"collateral cache {path}: cannot read: {e}") from e
        head, sep, payload = blob.partition(b"\n")
        try:
            meta = safejson.loads(head) if sep else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("expires"), int):
            return None  # corrupt or foreign file: treat as a miss, a fetch will replace it
        return meta, payload

    def get(self, key: str, *, now: int | None = None) -> bytes | None:
        """The cached payload for ``key`` if present and not expired at ``now``."""
        got = self._read(self._path(key))
        if got is None:
            return None
        meta, payload = got
        if meta.get("key") != key:
            return None
        t = int(time.time()) if now is None else now
        expires = meta["expires"]
        assert isinstance(expires, int)
        return payload if t < expires else None

    def put(self, key: str, payload: bytes, *, expires: int, now: int | None = None) -> None:
        """Store atomically (temp file + rename)."""
        t = int(time.time()) if now is None else now
        head = json.dumps({"key": key, "expires": int(expires), "stored": t}).encode()
        path = self._path(key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(head + b"\n" + payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            raise CollateralError(f"collateral cache {self.dir}: cannot write {key}: {e}") from e

    def entries(self) -> list[CacheEntry]:
        out: list[CacheEntry] = []
        for path in sorted(self.dir.glob("*" + _SUFFIX)):
            if path.name.startswith(".tmp-"):
                continue
            got = self._read(path)
            if got is None:
                continue
            meta, payload = got
            key, expires, stored = meta.get("key"), meta.get("expires"), meta.get("stored", 0)
            if isinstance(key, str) and isinstance(expires, int) and isinstance(stored, int):
                out.append(CacheEntry(key, expires, stored, len(payload), path))
        return out

    def prune(self, *, now: int | None = None, everything: bool = False) -> list[str]:
        """Delete expired entries (all entries with ``everything``); return their keys."""
        t = int(time.time()) if now is None else now
        removed: list[str] = []
        for e in self.entries():
            if everything or e.expired(t):
                with contextlib.suppress(FileNotFoundError):
                    e.path.unlink()
                removed.append(e.key)
        for stale in self.dir.glob(".tmp-*"):
            if time.time() - stale.stat().st_mtime > 3600:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        return removed

    @contextlib.contextmanager
    def lock(self, key: str, *, timeout: float = 60.0) -> Iterator[None]:
        """Hold the per-key lock (blocking, bounded)."""
        with self._open_lock(key) as fd:
            deadline = time.monotonic() + timeout
            while not self._try_lock(fd):
                if time.monotonic() > deadline:
                    raise CollateralError(f"collateral cache: lock for {key} held too long")
                time.sleep(0.05)
            yield

    @contextlib.asynccontextmanager
    async def alock(self, key: str, *, timeout: float = 60.0) -> AsyncIterator[None]:
        """The per-key lock for async code: polls instead of blocking the event loop."""
        with self._open_lock(key) as fd:
            deadline = time.monotonic() + timeout
            while not self._try_lock(fd):
                if time.monotonic() > deadline:
                    raise CollateralError(f"collateral cache: lock for {key} held too long")
                await asyncio.sleep(0.05)
            yield

    @contextlib.contextmanager
    def _open_lock(self, key: str) -> Iterator[int]:
        path = self._path(key).with_suffix(".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise CollateralError(f"collateral cache: cannot open lock {path}: {e}") from e
        try:
            yield fd
        finally:
            os.close(fd)  # closing releases the flock

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

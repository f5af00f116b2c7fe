"""Private file modes for teegate's data: folders 0700, files 0600.

The data folder holds the receipt log's signing key, the default agent's key, the development
PKI's private keys and the SQLite databases (API key hashes, the ledger): nobody but the
service's own user may read them. New files are created private (not left to the umask), and
at start-up an existing data folder with looser modes is tightened, with one log line saying
what changed. Symbolic links are neither followed nor changed (a link may point at something
shared on purpose)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("teegate.files")

DIR_MODE = 0o700
FILE_MODE = 0o600
_LOOSE = 0o077  # any permission for group or others
_SQLITE_SIDE = ("-wal", "-shm", "-journal")


@dataclass
class Tightened:
    """What ``tighten`` changed: (path, old mode, new mode)."""

    changed: list[tuple[Path, int, int]] = field(default_factory=list)

    def describe(self, root: Path | None = None, limit: int = 8) -> str:
        def name(p: Path) -> str:
            return "." if p == root else str(p.relative_to(root)) if root is not None and (
                p.is_relative_to(root)) else str(p)

        shown = ", ".join(f"{name(p)} {old:04o}->{new:04o}"
                          for p, old, new in self.changed[:limit])
        more = len(self.changed) - limit
        return shown + (f" and {more} more" if more > 0 else "")


def private_dir(path: Path) -> Path:
    """``path`` as a folder, created 0700 (with its missing parents) if missing. An existing
    folder is left as it is here: ``tighten`` decides that, once, at start-up."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite then opens it, and
    gives its -wal and -shm files the same mode); its folder is created 0700 if missing."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def private_sqlite(path: str) -> None:
    """A SQLite path (not ``:memory:``) made to be created 0600, its folder 0700; an existing
    database file (and its -wal/-shm/-journal) with looser modes is tightened and logged."""
    if path == ":memory:" or path.startswith("file:"):
        return
    p = Path(path).expanduser()
    existed = p.exists()
    private_file(p)
    if existed:
        done = Tightened()
        for f in (p, *(p.with_name(p.name + s) for s in _SQLITE_SIDE)):
            _fix(f, done)
        if done.changed:
            log.warning("database %s: tightened file modes (data files are 0600): %s", p,
                        done.describe(p.parent))


def _fix(path: Path, done: Tightened) -> None:
    """Drop group and other permissions of ``path`` (the owner's stay: 0755 -> 0700, 0644 ->
    0600)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return  # not ours to change (a link, or another user's file)
    mode = stat.S_IMODE(st.st_mode)
    if mode & _LOOSE:
        new = mode & 0o700
        os.chmod(path, new)
        done.changed.append((path, mode, new))


def tighten(root: Path) -> Tightened:
    """Remove group and other permissions from ``root`` and everything under it (folders
    end up 0700, files 0600 or 0700 when executable); links are skipped, not followed."""
    done = Tightened()
    if not root.is_dir() or root.is_symlink():
        return done
    _fix(root, done)
    for top, dirs, files in os.walk(root, followlinks=False):
        base = Path(top)
        for d in dirs:
            _fix(base / d, done)
        for f in files:
            _fix(base / f, done)
    return done


def secure_data_dir(root: Path) -> Tightened:
    """Start-up: create ``root`` private if missing, else tighten it; one log line (a
    warning: someone or something left the service's secrets readable) when anything
    changed."""
    if not root.exists():
        private_dir(root)
        return Tightened()
    done = tighten(root)
    if done.changed:
        log.warning("data folder %s: tightened %d modes (folders 0700, files 0600): %s",
                    root, len(done.changed), done.describe(root))
    return done

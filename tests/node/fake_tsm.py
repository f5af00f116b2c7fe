"""A configfs-tsm report directory that behaves like the kernel's, backed by the dev TEE.

It implements the source's ``TsmFs`` over a real temporary directory: ``mkdir`` creates the
attribute files, ``inblob`` accepts exactly 64 bytes (EINVAL otherwise, as both drivers do)
and bumps ``generation``, ``outblob`` is generated on read from the last inblob, and the
read-only attributes refuse writes. Knobs simulate a concurrent writer and a busy device.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path


class KernelLikeTsm:
    def __init__(self, root: Path, provider: str, make: Callable[[bytes], bytes],
                 *, aux: bytes | None = None) -> None:
        self.root = root
        self.provider = provider
        self.make = make
        self.aux = aux
        self.races = 0  # number of upcoming outblob reads preceded by a foreign inblob write
        self.busy = 0  # number of upcoming outblob reads that fail with EBUSY
        self.outblob_reads = 0

    def _entry(self, path: Path) -> Path:
        if path.parent.parent != self.root:
            raise OSError(errno.ENOENT, "No such file or directory", str(path))
        return path.parent

    def mkdir(self, path: Path) -> None:
        if path.parent != self.root:
            raise OSError(errno.EPERM, "Operation not permitted", str(path))
        os.mkdir(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(b"")
        if self.aux is not None:
            (path / "auxblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        os.rmdir(path)

    def _bump(self, entry: Path) -> None:
        gen = int((entry / "generation").read_text())
        (entry / "generation").write_text(f"{gen + 1}\n")

    def write(self, path: Path, data: bytes) -> None:
        entry = self._entry(path)
        if path.name != "inblob":
            raise OSError(errno.EACCES, "Permission denied", str(path))
        if len(data) != 64:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        path.write_bytes(data)
        self._bump(entry)

    def read(self, path: Path) -> bytes:
        entry = self._entry(path)
        if path.name == "outblob":
            self.outblob_reads += 1
            if self.busy:
                self.busy -= 1
                raise OSError(errno.EBUSY, "Device or resource busy", str(path))
            if self.races:
                self.races -= 1
                (entry / "inblob").write_bytes(b"\x99" * 64)
                self._bump(entry)
            inblob = (entry / "inblob").read_bytes()
            if len(inblob) != 64:
                raise OSError(errno.EINVAL, "Invalid argument", str(path))
            out = self.make(inblob)
            path.write_bytes(out)
            if self.aux is not None:
                (entry / "auxblob").write_bytes(self.aux)
            return out
        return path.read_bytes()

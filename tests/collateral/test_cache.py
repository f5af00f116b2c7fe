"""The collateral disk cache: expiry, atomic writes, pruning, several processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from teegate.collateral import CollateralCache
from teegate.errors import CollateralError


def test_get_returns_payload_until_expiry(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path / "c")
    cache.put("amd-vcek/Milan/x/y", b"\x00\x01payload\n", expires=1000, now=10)
    assert cache.get("amd-vcek/Milan/x/y", now=999) == b"\x00\x01payload\n"
    assert cache.get("amd-vcek/Milan/x/y", now=1000) is None
    assert cache.get("other", now=0) is None


def test_corrupt_entry_is_a_miss_and_gets_replaced(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path)
    cache.put("k", b"v", expires=100, now=0)
    (entry,) = cache.entries()
    entry.path.write_bytes(b"garbage without header")
    assert cache.get("k", now=1) is None
    cache.put("k", b"v2", expires=100, now=0)
    assert cache.get("k", now=1) == b"v2"


def test_prune_removes_only_expired(tmp_path: Path) -> None:
    cache = CollateralCache(tmp_path)
    cache.put("old", b"1", expires=50, now=0)
    cache.put("new", b"2", expires=500, now=0)
    assert cache.prune(now=100) == ["old"]
    assert [e.key for e in cache.entries()] == ["new"]
    assert cache.prune(now=100, everything=True) == ["new"]
    assert cache.entries() == []


def test_unwritable_directory_is_a_collateral_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CollateralError, match="cannot create"):
        CollateralCache(blocker / "sub")


def _writer(directory: str, n: int) -> None:
    cache = CollateralCache(directory)
    for i in range(200):
        cache.put("shared", bytes([n]) * 50_000, expires=10**10, now=0)
        got = cache.get("shared", now=1)
        assert got is not None
        assert len(got) == 50_000
        assert len(set(got)) == 1, f"torn read at {i}"


def test_several_processes_never_see_a_torn_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_lock_is_exclusive_across_open_files(tmp_path: Path) -> None:
    a, b = CollateralCache(tmp_path), CollateralCache(tmp_path)
    with a.lock("k"), pytest.raises(CollateralError, match="held too long"), b.lock(
            "k", timeout=0.2):
        pass
    with b.lock("k", timeout=0.2):
        pass

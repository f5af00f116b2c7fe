"""teegate.filemodes: data folders 0700, files 0600; looser modes tightened, links left."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from teegate.filemodes import private_sqlite, secure_data_dir, tighten


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(autouse=True)
def _open_umask() -> object:
    """A permissive umask (022 is common; 000 happens in containers): the modes must not
    depend on it."""
    old = os.umask(0o000)
    yield
    os.umask(old)


def test_a_new_data_folder_is_private(tmp_path: Path) -> None:
    root = tmp_path / "fresh" / "home"
    assert not secure_data_dir(root).changed
    assert _mode(root) == 0o700


def test_a_loose_folder_is_tightened_once_with_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for d in (root, root / "sub"):
        os.chmod(d, 0o755)
    (root / "teegate.db").write_bytes(b"x")
    (root / "sub" / "log.key").write_bytes(b"k")
    (root / "tool").write_bytes(b"#!")
    os.chmod(root / "teegate.db", 0o644)
    os.chmod(root / "sub" / "log.key", 0o640)
    os.chmod(root / "tool", 0o755)
    outside = tmp_path / "shared.txt"
    outside.write_bytes(b"s")
    os.chmod(outside, 0o644)
    (root / "link").symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="teegate.files"):
        done = secure_data_dir(root)
    assert len(done.changed) == 5
    lines = [r.getMessage() for r in caplog.records if r.name == "teegate.files"]
    assert len(lines) == 1
    assert "tightened 5 modes" in lines[0]
    assert "teegate.db 0644->0600" in lines[0]
    assert ". 0755->0700" in lines[0]
    assert "sub/log.key 0640->0600" in lines[0]
    assert (_mode(root), _mode(root / "sub")) == (0o700, 0o700)
    assert _mode(root / "teegate.db") == 0o600
    assert _mode(root / "sub" / "log.key") == 0o600
    assert _mode(root / "tool") == 0o700  # the owner keeps what it had
    assert _mode(outside) == 0o644  # a link is not followed
    caplog.clear()
    assert not secure_data_dir(root).changed  # nothing left to do: no line
    assert not caplog.records


def test_sqlite_files_are_created_private_and_tightened(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "elsewhere" / "x.db"
    private_sqlite(str(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    for p in (path, path.with_name("x.db-wal"), path.with_name("x.db-shm")):
        assert _mode(p) == 0o600, p
    assert _mode(path.parent) == 0o700
    conn.close()
    os.chmod(path, 0o644)
    private_sqlite(str(path))
    assert _mode(path) == 0o600
    private_sqlite(":memory:")  # nothing to do


def test_tighten_of_a_missing_folder_does_nothing(tmp_path: Path) -> None:
    assert not tighten(tmp_path / "nope").changed

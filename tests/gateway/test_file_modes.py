"""Issue 11, point 14: a gateway's data (databases, keys) is its user's alone: created 0600 in
0700 folders, and an existing data folder left 0755/0644 is tightened at start-up."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from teegate.gateway import parse_config
from teegate.gateway.factory import build_app


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _gateway(data: Path) -> None:
    """Build a whole gateway (store, receipt log and its key, ledger) on SQLite in ``data``
    and close it again."""
    cfg = parse_config({
        "gateway": {"data_dir": str(data), "admin_key_env": "TG_TEST_ADMIN"},
        "providers": [{"id": "p", "platform": "ollama", "base_url": "http://127.0.0.1:9/v1",
                       "models": ["m"]}],
    })
    app = build_app(cfg)
    for close in app.gateway.closers:
        close()


@pytest.fixture(autouse=True)
def _umask() -> object:
    old = os.umask(0o022)  # the usual default: files 0644, folders 0755
    yield
    os.umask(old)


def _all(data: Path) -> dict[str, int]:
    out = {".": _mode(data)}
    for p in data.rglob("*"):
        out[str(p.relative_to(data))] = _mode(p)
    return out


def test_a_fresh_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    _gateway(data)
    modes = _all(data)
    assert {"teegate.db", "log.key"} <= set(modes), modes
    for name, mode in modes.items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, (name, oct(mode))


def test_an_existing_loose_data_folder_is_tightened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    _gateway(data)
    os.chmod(data, 0o755)
    for p in data.iterdir():
        os.chmod(p, 0o644)
    (data / "notes").mkdir(mode=0o755)
    with caplog.at_level(logging.WARNING, logger="teegate.files"):
        _gateway(data)
    lines = [r.getMessage() for r in caplog.records if r.name == "teegate.files"]
    assert len(lines) == 1, lines
    assert "tightened" in lines[0]
    assert "teegate.db 0644->0600" in lines[0]
    assert "notes 0755->0700" in lines[0]
    for name, mode in _all(data).items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, (name, oct(mode))

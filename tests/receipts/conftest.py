"""Shared fixtures for the receipts tests."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "tlog"


@pytest.fixture
def tlog_data() -> Path:
    return DATA

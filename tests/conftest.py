"""Fixtures shared by every test package."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def raised_recursion_limit() -> Iterator[None]:
    """What importing eth-account does (py_ecc sets 100,000): json's C recursion is unbounded."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    yield
    sys.setrecursionlimit(before)

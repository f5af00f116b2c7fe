"""Signed receipts of every call and the transparency log they are appended to."""

from __future__ import annotations

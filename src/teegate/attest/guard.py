"""Malformed input is an ``EvidenceError`` naming the input, never a traceback.

The parsers raise ``EvidenceError`` for what they check, but the libraries beneath them raise
their own exceptions on bytes they cannot read, and ``cryptography`` parses certificate and
CRL fields lazily: ``public_key()``, ``version``, ``extensions`` or ``next_update_utc`` raise
``ValueError``, ``UnsupportedAlgorithm`` or ``InvalidVersion`` long after the load call. The
access sites that know what they read say so precisely; ``malformed`` is the one boundary, on
each public verify function and around each lazy access, that turns whatever is left into an
``EvidenceError`` (a ``TeegateError`` passes through unchanged).
"""

from __future__ import annotations

import struct
from contextlib import ContextDecorator
from types import TracebackType

from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.x509 import (
    AttributeNotFound,
    DuplicateExtension,
    ExtensionNotFound,
    InvalidVersion,
    UnsupportedGeneralNameType,
)

from teegate.errors import EvidenceError

__all__ = ["MAX_REPORT_VALUES", "PARSE_ERRORS", "malformed"]

MAX_REPORT_VALUES = 1 << 18
"""JSON values an attestation report may hold, checked before it is parsed (what parsing
would allocate: a few hundred bytes a value at worst). A report of eight replicas, each with
a 4,096-event log in list form, stays below it; 300,000 one-field events do not."""

PARSE_ERRORS: tuple[type[Exception], ...] = (
    # cryptography: lazily parsed fields, unknown algorithms and curves, OpenSSL refusals
    InvalidVersion, DuplicateExtension, ExtensionNotFound, UnsupportedGeneralNameType,
    AttributeNotFound, UnsupportedAlgorithm, InternalError,
    # the standard library on bytes of the wrong shape (UnicodeError and
    # json.JSONDecodeError are ValueErrors)
    ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error, OverflowError,
    RecursionError, ArithmeticError,
)


class malformed(ContextDecorator):  # noqa: N801 - used as a decorator and a ``with`` block
    """``@malformed("the SEV-SNP report")`` or ``with malformed("the VCEK"):`` re-raises a
    library's parse error as ``EvidenceError("<what>: malformed (…)")``."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> malformed:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None or not isinstance(exc, PARSE_ERRORS):
            return
        detail = str(exc) or "no detail"
        raise EvidenceError(f"{self.what}: malformed ({type(exc).__name__}: {detail})") \
            from exc

"""Replay detection for providers whose signature covers only ``sha256(request):sha256(response)``
(NEAR AI, RedPill/Phala, LibertAI: ``GET /v1/signature/{id}``).

Nothing in such a signature is unique to one call: a man in the middle can answer a
byte-identical request with an old answer and point the gateway at the old signature. Two
rules make each accepted answer unique, and together need only a bounded memory:

- **freshness**: the answer's own ``created`` time (signed, as part of the response bytes)
  lies within ``window`` seconds of the call's start; an answer older than that is refused
  whatever it is;
- **once**: within the window, an answer (signing key, completion id) is accepted once. The
  ids are kept in the gateway's database until their window ends, so a restarted gateway and
  every gateway sharing the database refuse the second copy too.

An answer older than the window needs no entry (freshness refuses it); an entry is dropped
when its window ends, so the table holds at most the answers of the last ``window`` seconds.
Pure rules here; the claim is one conditional insert in ``GatewayStore.claim_response``.
"""

from __future__ import annotations

import hashlib
import math

DEFAULT_WINDOW = 300


def created_time(value: object) -> float | None:
    """An answer's ``created`` field as a Unix time; None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def freshness_problem(created: float | None, started: float, window: int) -> str | None:
    """None when an answer ``created`` at that Unix time can answer a call started at
    ``started``; otherwise why not (a replay cannot be ruled out)."""
    if created is None:
        return "the answer carries no 'created' time, so a replay of an old answer cannot " \
            "be ruled out"
    if created < started - window:
        return (f"the answer was created {started - created:.0f} s before the call, more than "
                f"the replay window of {window} s: an old answer replayed")
    if created > started + window:
        return (f"the answer claims to be created {created - started:.0f} s after the call "
                f"started, more than the replay window of {window} s")
    return None


def response_key(signing_address: str, chat_id: str) -> str:
    """The identity of one signed answer: its signer and completion id (hashed: ids are the
    provider's text, of any length)."""
    return hashlib.sha256(f"{signing_address.strip().lower()}\n{chat_id}".encode()).hexdigest()


def expires_at(created: float, started: float, window: int) -> int:
    """Until when an accepted answer must be remembered: past it, freshness refuses a copy."""
    return math.ceil(max(created, started)) + window

"""Errors of the verifying client; all are ``VerificationError``s of teegate's tree."""

from __future__ import annotations

from teegate.attest.verdict import Verdict
from teegate.errors import VerificationError


class AttestationRejectedError(VerificationError):
    """The node's attestation report did not verify under the policy; ``verdict`` says why."""

    def __init__(self, message: str, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


class ResponseSignatureError(VerificationError):
    """A response was not signed by the attested key over its exact bytes."""


class ClientHaltedError(VerificationError):
    """An earlier verification failed; the client sends nothing more."""

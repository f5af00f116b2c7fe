"""Python client: verified calls straight to a teegate node (or any provider that speaks the
same attestation report API), so the gateway leaves the trust boundary."""

from teegate.client.errors import (
    AttestationRejectedError,
    ClientHaltedError,
    ResponseSignatureError,
)
from teegate.client.report import (
    AttestedKey,
    aattest_node,
    attest_node,
    fetch_and_verify_report,
    get_report,
    verify_report,
)
from teegate.client.verified import AsyncVerifiedClient, VerifiedClient

__all__ = [
    "AsyncVerifiedClient",
    "AttestationRejectedError",
    "AttestedKey",
    "ClientHaltedError",
    "ResponseSignatureError",
    "VerifiedClient",
    "aattest_node",
    "attest_node",
    "fetch_and_verify_report",
    "get_report",
    "verify_report",
]

"""Python client: verified calls straight to a teegate node (or any provider that speaks the
same attestation report API), so the gateway leaves the trust boundary."""

from teegate.client.errors import (
    AttestationRejectedError,
    ClientHaltedError,
    ResponseSignatureError,
)
from teegate.client.report import (
    AttestedKey,
    attest_node,
    fetch_and_verify_report,
    get_report,
    verify_report,
)
from teegate.client.verified import VerifiedClient

__all__ = [
    "AttestationRejectedError",
    "AttestedKey",
    "ClientHaltedError",
    "ResponseSignatureError",
    "VerifiedClient",
    "attest_node",
    "fetch_and_verify_report",
    "get_report",
    "verify_report",
]

"""ACI (Dstack-TEE/private-ai-gateway ``spec/aci.md``) statements shared by the gateway that
attests itself and the auditor that checks it: one definition of the bytes both hash."""

from __future__ import annotations

import hashlib

ACI_PURPOSE = "aci.report_data.v1"


def aci_statement(keyset_digest: str, nonce: str | None) -> bytes:
    """ACI §3.2: the exact statement whose sha256 is ``report_data`` (its own JCS form)."""
    n = "null" if nonce is None else '"' + nonce + '"'
    return (b'{"keyset_digest":"' + keyset_digest.encode() + b'","nonce":' + n.encode()
            + b',"purpose":"' + ACI_PURPOSE.encode() + b'"}')


def aci_report_data(keyset_digest: str, nonce: str | None) -> bytes:
    """The 64 report-data bytes of the gateway's quote: sha256(statement), zero-padded."""
    return hashlib.sha256(aci_statement(keyset_digest, nonce)).digest().ljust(64, b"\0")

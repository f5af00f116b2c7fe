"""Revocation of a GPU's device chain, judged from OCSP answers fetched by the collateral edge.

NVIDIA publishes revocation of device certificates only through OCSP. As nvtrust does, the
certificates asked about are the chain's middle ones: not the leaf (the attestation key the
GPU generated, unknown to the responder) and not the pinned root. The answers reach this
module already verified (responder signature, request nonce, freshness:
``teegate.collateral.nvidia``); what is decided here is whether the chain stands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attest.policy import Policy
from teegate.attest.verdict import CheckList


@dataclass(frozen=True, slots=True)
class OcspStatus:
    """A verified OCSP answer for one certificate."""

    status: str  # "good", "revoked", "unknown"
    this_update: int
    next_update: int
    revocation_time: int | None = None
    revocation_reason: str | None = None

    @property
    def good(self) -> bool:
        return self.status == "good"


def certificate_key(cert: x509.Certificate) -> str:
    """How answers are looked up: the certificate's SHA-256 fingerprint (serials alone are
    unique only per issuer)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def asked_about(chain: Sequence[x509.Certificate]) -> list[tuple[x509.Certificate,
                                                                  x509.Certificate]]:
    """(certificate, its issuer) for every certificate whose status is asked."""
    return [(chain[i], chain[i + 1]) for i in range(1, len(chain) - 1)]


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def revocation_check(cl: CheckList, prefix: str, chain: Sequence[x509.Certificate],
                     answers: Mapping[str, OcspStatus] | None, policy: Policy,
                     now: int) -> tuple[int | None, int | None]:
    """``<prefix>.revocation``; returns the window in which the answers hold."""
    name = f"{prefix}.revocation"
    if answers is None:
        if policy.gpu.require_ocsp:
            cl.failed(name, "the policy requires NVIDIA OCSP answers for the device chain and "
                      "none were fetched (the gateway fetches them when the policy requires "
                      "them; teegate verify --online)")
        return None, None
    problems: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    asked = asked_about(chain)
    for cert, _ in asked:
        st = answers.get(certificate_key(cert))
        if st is None:
            problems.append(f"no OCSP answer for {_name(cert)!r}")
            continue
        starts.append(st.this_update)
        ends.append(st.next_update)
        if st.status == "revoked":
            when = f" at {st.revocation_time}" if st.revocation_time is not None else ""
            why = f" ({st.revocation_reason})" if st.revocation_reason else ""
            problems.append(f"{_name(cert)!r} is revoked{when}{why}")
        elif st.status != "good":
            problems.append(f"the responder does not know {_name(cert)!r} ({st.status})")
        elif not st.this_update - 300 <= now < st.next_update:
            problems.append(f"the answer for {_name(cert)!r} holds {st.this_update}.."
                            f"{st.next_update}, not at {now}")
    if problems:
        cl.failed(name, "; ".join(problems))
    else:
        cl.passed(name, f"OCSP: the {len(asked)} device-chain certificate(s) below the root "
                        "are good" if asked else "no certificate between leaf and root to ask")
    return (max(starts) if starts else None, min(ends) if ends else None)

"""Single-bit mutations of the signed parts of real quotes are always rejected, never crash.

Covered: every byte from the start of the quote to the PCK certificate chain, i.e. header and
report body (signed by the attestation key), the quote signature, the attestation key, the QE
report and its signature, and the QE auth data (bound by the QE report). One bit per byte,
rotating through the bit positions.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.attest.policy import Policy, TcbPolicy
from teegate.attest.tdx import parse_quote, verify_quote
from teegate.errors import EvidenceError
from tests.attest.test_tdx import read, text

CASES = {
    "tdx-v4": ("dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", 1752919234,
               Policy.default()),
    "sgx-v3": ("dcap-qvl/sgx_quote", "dcap-qvl/sgx_quote_collateral.json", 1752919277,
               replace(Policy.default(), tcb=TcbPolicy(
                   allowed_statuses=frozenset({"ConfigurationAndSWHardeningNeeded"})))),
}


def ders(pem: bytes | None) -> list[bytes]:
    assert pem is not None
    certs = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))
    return [c.public_bytes(Encoding.DER) for c in certs]


def signed_end(raw: bytes) -> int:
    """Offset of the type-5 PEM chain: everything before it is signed or bound."""
    q = parse_quote(raw)
    chain = q.pck_chain_pem
    assert chain is not None
    return raw.index(chain)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_signed_byte(case: str) -> None:
    quote_file, collateral_file, now, policy = CASES[case]
    raw, collateral = read(quote_file), text(collateral_file)
    assert verify_quote(raw, collateral, policy=policy, now=now).accepted
    end = signed_end(raw)
    assert end > parse_quote(raw).signed_size + 500
    accepted: list[int] = []
    malformed = 0
    for i in range(end):
        mutated = bytearray(raw)
        mutated[i] ^= 1 << (i % 8)
        try:
            v = verify_quote(bytes(mutated), collateral, policy=policy, now=now)
        except EvidenceError:
            malformed += 1
            continue
        if v.accepted:
            accepted.append(i)
    assert accepted == [], f"mutations at offsets {accepted[:20]} were accepted"
    # Most mutations parse and are caught by a signature check, not by the parser.
    assert malformed < end // 4


@pytest.mark.parametrize("case", sorted(CASES))
def test_chain_mutations_never_crash(case: str) -> None:
    """The PEM chain is not signed as bytes (its certificates are); a flip there must still
    end in a verdict or an EvidenceError, and an accepted verdict needs an unchanged chain."""
    quote_file, collateral_file, now, policy = CASES[case]
    raw, collateral = read(quote_file), text(collateral_file)
    q = parse_quote(raw)
    start = signed_end(raw)
    for i in range(start, q.size, 5):
        mutated = bytearray(raw)
        mutated[i] ^= 1 << (i % 8)
        try:
            v = verify_quote(bytes(mutated), collateral, policy=policy, now=now)
        except EvidenceError:
            continue
        if v.accepted:
            # Only a flip the PEM/base64 decoding ignores may pass: same certificates.
            assert ders(parse_quote(bytes(mutated)).pck_chain_pem) == ders(q.pck_chain_pem), i


def test_every_signed_byte_of_a_v5_td15_quote(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No real v5 vector verifies (tdx_quote_outdated fails its TCB level), so a development
    v5 quote with a TD report 1.5 body stands in: every signed byte, including the v5 body
    descriptor, TEE_TCB_SVN2 and MRSERVICETD, is covered."""
    import time

    from teegate.sim.tdx import DevTdx
    from tests.attest.test_tdx import _v5

    dev = DevTdx.load_or_create(tmp_path_factory.mktemp("devpki"))
    now = int(time.time())
    policy = Policy.default().with_roots(intel=(dev.root_pem,))
    raw, collateral = _v5(dev, bytes(48)), dev.collateral(now=now)
    q = parse_quote(raw)
    assert (q.header.version, q.body_type) == (5, 3)
    assert verify_quote(raw, collateral, policy=policy, now=now).accepted
    accepted = []
    for i in range(signed_end(raw)):
        mutated = bytearray(raw)
        mutated[i] ^= 1 << (i % 8)
        try:
            if verify_quote(bytes(mutated), collateral, policy=policy, now=now).accepted:
                accepted.append(i)
        except EvidenceError:
            pass
    assert accepted == [], f"mutations at offsets {accepted[:20]} were accepted"

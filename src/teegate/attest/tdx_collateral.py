"""Intel DCAP collateral (dcap-qvl ``QuoteCollateralV3`` JSON) and the pinned Intel root.

dcap-qvl verifies the collateral's signatures; this module only reads what the verdict
reports beside that: the validity window (TCB info and QE identity issueDate..nextUpdate,
CRL thisUpdate..nextUpdate, certificate notBefore..notAfter, REFERENCE §2.5), the issue dates
for the collateral-age policy, and the FMSPC. Collateral is per platform family and reused
across many quotes, so the parsed form is cached by its exact text.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from teegate import safejson
from teegate.attest.guard import PARSE_ERRORS
from teegate.attest.verdict import window
from teegate.errors import ConfigError, EvidenceError

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


@functools.cache
def intel_root_der() -> bytes:
    """The pinned Intel SGX Root CA (``roots/intel/sgx_root_ca.pem``), checked by fingerprint."""
    pem = (resources.files("teegate.attest") / "roots" / "intel" / "sgx_root_ca.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    if hashlib.sha256(der).hexdigest() != INTEL_ROOT_SHA256:
        raise RuntimeError("pinned Intel SGX Root CA does not match its recorded fingerprint")
    return der


@dataclass(frozen=True, slots=True)
class Collateral:
    qvl: Any  # dcap_qvl.QuoteCollateralV3
    tcb_info: dict[str, Any]
    qe_identity: dict[str, Any]
    tcb_issue: int
    qe_issue: int
    not_before: int | None
    not_after: int | None
    pck_chain_pem: bytes | None
    # thisUpdate of the PCK CRL: how old the revocation data is.
    pck_crl_issue: int | None = None


def _ts(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise EvidenceError(f"collateral {where} is missing")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise EvidenceError(f"collateral {where} {value!r} is not a timestamp") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp())


def _cert_window(pem: str | bytes | None) -> tuple[int | None, int | None]:
    if not pem:
        return (None, None)
    data = pem.encode() if isinstance(pem, str) else pem
    certs = x509.load_pem_x509_certificates(data.rstrip(b"\0"))
    return window(*(
        (int(c.not_valid_before_utc.timestamp()), int(c.not_valid_after_utc.timestamp()))
        for c in certs
    ))


def _crl_window(der: bytes) -> tuple[int | None, int | None]:
    crl = x509.load_der_x509_crl(der)
    nxt = crl.next_update_utc
    return (int(crl.last_update_utc.timestamp()), int(nxt.timestamp()) if nxt else None)


@functools.lru_cache(maxsize=64)
def parse_collateral(text: str) -> Collateral:
    """Parse dcap-qvl collateral JSON; ``EvidenceError`` when it is not usable collateral."""
    try:
        data = safejson.loads(text)
    except json.JSONDecodeError as e:
        raise EvidenceError(f"collateral is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise EvidenceError("collateral must be a JSON object (dcap-qvl QuoteCollateralV3)")
    try:
        qvl = dcap_qvl.QuoteCollateralV3.from_json(text)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # ValueError, or a Rust panic (pyo3 PanicException)
        raise EvidenceError(f"collateral is not dcap-qvl QuoteCollateralV3 JSON: {e}") from None
    try:
        tcb = safejson.loads(qvl.tcb_info)
        qe = safejson.loads(qvl.qe_identity)
    except json.JSONDecodeError as e:
        raise EvidenceError(f"collateral tcb_info / qe_identity is not JSON: {e}") from None
    if not isinstance(tcb, dict) or not isinstance(qe, dict):
        raise EvidenceError("collateral tcb_info and qe_identity must be JSON objects")
    tcb_issue, tcb_next = _ts(tcb.get("issueDate"), "TCB info issueDate"), _ts(
        tcb.get("nextUpdate"), "TCB info nextUpdate")
    qe_issue, qe_next = _ts(qe.get("issueDate"), "QE identity issueDate"), _ts(
        qe.get("nextUpdate"), "QE identity nextUpdate")
    pck_chain = data.get("pck_certificate_chain")
    if pck_chain is not None and not isinstance(pck_chain, str):
        raise EvidenceError("collateral pck_certificate_chain must be PEM text")
    try:
        pck_crl = _crl_window(bytes(qvl.pck_crl))
        lo, hi = window(
            (tcb_issue, tcb_next),
            (qe_issue, qe_next),
            _crl_window(bytes(qvl.root_ca_crl)),
            pck_crl,
            _cert_window(qvl.pck_crl_issuer_chain),
            _cert_window(qvl.tcb_info_issuer_chain),
            _cert_window(qvl.qe_identity_issuer_chain),
            _cert_window(pck_chain),
        )
    except PARSE_ERRORS as e:  # cryptography reads CRL and certificate fields lazily
        raise EvidenceError(f"collateral certificates or CRLs do not parse "
                            f"({type(e).__name__}: {e})") from None
    return Collateral(
        qvl=qvl,
        tcb_info=tcb,
        qe_identity=qe,
        tcb_issue=tcb_issue,
        qe_issue=qe_issue,
        not_before=lo,
        not_after=hi,
        pck_chain_pem=pck_chain.encode() if pck_chain else None,
        pck_crl_issue=pck_crl[0],
    )


@dataclass(frozen=True, slots=True)
class Chain:
    root_der: bytes | None
    root_name: str
    ca: str | None  # "platform" / "processor" (the PCK CA that issued the leaf)
    fmspc: str | None  # from the PCK leaf's SGX extension, lower-case hex
    not_before: int | None
    not_after: int | None


@functools.lru_cache(maxsize=256)
def parse_chain(pem: bytes) -> Chain:
    """The PCK chain's root, issuing CA kind and validity; ``EvidenceError`` if unparsable."""
    try:
        certs = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))
        root = certs[-1]
        root_der, root_name = root.public_bytes(Encoding.DER), root.subject.rfc4514_string()
        issuer = certs[0].issuer.rfc4514_string()
        lo, hi = _cert_window(pem)
    except PARSE_ERRORS as e:
        raise EvidenceError(f"PCK certificate chain does not parse "
                            f"({type(e).__name__}: {e})") from None
    ca = "platform" if "Platform CA" in issuer else "processor" if "Processor CA" in issuer \
        else None
    try:
        fmspc: str | None = bytes(dcap_qvl.parse_pck_extension_from_pem(pem).fmspc).hex()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException:  # ValueError, or a Rust panic (pyo3 PanicException)
        fmspc = None
    return Chain(root_der, root_name, ca, fmspc, lo, hi)


@functools.lru_cache(maxsize=32)
def policy_roots(pems: tuple[str, ...]) -> frozenset[bytes]:
    """DER of every certificate in ``policy.roots.intel``."""
    out: set[bytes] = set()
    for pem in pems:
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError as e:
            raise ConfigError(f"policy.roots.intel holds an unparsable certificate: {e}") from None
        out.update(c.public_bytes(Encoding.DER) for c in certs)
    return frozenset(out)

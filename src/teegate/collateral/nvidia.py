"""NVIDIA collateral: RIM files from the RIM service and OCSP status of device certificates.

Both services time out in practice (nvtrust #99), so answers are cached: a RIM until the
earliest notAfter of the certificates signing it, an OCSP answer until its nextUpdate. What is
fetched here is only transported and checked for shape and freshness; the RIM's signature and
the measurement comparison belong to ``teegate.attest``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from teegate import safejson
from teegate.attest.gpu import device_chains, payload_rim_ids
from teegate.attest.gpu_ocsp import OcspStatus, asked_about, certificate_key
from teegate.collateral.cache import CollateralCache
from teegate.collateral.http import DEFAULT_RETRY, RetryPolicy, client_or, get, request
from teegate.errors import CollateralError

NVIDIA_RIM_URL = "https://rim.attestation.nvidia.com/v1/rim/"
NVIDIA_OCSP_URL = "https://ocsp.ndis.nvidia.com/"
_RIM_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_XML_CERT = re.compile(rb"<(?:\w+:)?X509Certificate>([^<]+)</(?:\w+:)?X509Certificate>")


def default_rim_url() -> str:
    return os.environ.get("TEEGATE_NVIDIA_RIM_URL") or NVIDIA_RIM_URL


def default_ocsp_url() -> str:
    return os.environ.get("TEEGATE_NVIDIA_OCSP_URL") or NVIDIA_OCSP_URL


def _rim_expiry(xml: bytes, url: str) -> int:
    ends: list[int] = []
    for m in _XML_CERT.finditer(xml):
        try:
            der = base64.b64decode(b"".join(m.group(1).split()), validate=True)
            ends.append(int(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()))
        except (binascii.Error, ValueError) as e:
            raise CollateralError(f"NVIDIA RIM from {url}: embedded certificate is bad: {e}") from e
    if not ends:
        raise CollateralError(f"NVIDIA RIM from {url}: no signing certificate inside")
    return min(ends)


async def fetch_rim(
    rim_id: str,
    *,
    rim_url: str | None = None,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bytes:
    """The SWID XML of RIM ``rim_id`` (``NV_GPU_DRIVER_GH100_550.90.07``, ``NV_GPU_VBIOS_…``).

    The service answers ``{"id", "rim": base64(XML), "sha256", …}``; a ``sha256`` present in
    the answer must match the decoded file.
    """
    if not _RIM_ID.match(rim_id):
        raise CollateralError(f"RIM id {rim_id!r} has characters a RIM id never has")
    t = int(time.time()) if now is None else now
    key = f"nvidia-rim/{rim_id}"
    base = rim_url or default_rim_url()
    url = base if base.endswith("/") else base + "/"
    url += rim_id
    if cache is not None and (hit := cache.get(key, now=t)) is not None:
        return hit
    async with client_or(client, retry) as c:
        resp = await get(c, url, what="NVIDIA RIM service", retry=retry)
    try:
        body = safejson.loads(resp.content)
        xml = base64.b64decode(body["rim"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise CollateralError(f"NVIDIA RIM service {url}: answer is not "
                              f"{{'rim': base64}} JSON: {e}") from e
    digest = body.get("sha256")
    if isinstance(digest, str) and digest.lower() != hashlib.sha256(xml).hexdigest():
        raise CollateralError(f"NVIDIA RIM service {url}: sha256 does not match the RIM file")
    if b"SoftwareIdentity" not in xml[:4096]:
        raise CollateralError(f"NVIDIA RIM service {url}: file is not a SWID tag")
    expires = _rim_expiry(xml, url)
    if expires <= t:
        raise CollateralError(f"NVIDIA RIM {rim_id}: its signing certificate expired at {expires}")
    if cache is not None:
        cache.put(key, xml, expires=expires, now=t)
    return xml


def _verify_sig(key: object, signature: bytes, data: bytes, algo: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algo)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _same_issuer(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """The answer's CertID names this issuer (name and key hash, RFC 6960 4.1.1)."""
    key = issuer.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    elif isinstance(key, rsa.RSAPublicKey):
        bits = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        return False
    try:
        algo = resp.hash_algorithm
    except UnsupportedAlgorithm:
        return False

    def digest(data: bytes) -> bytes:
        h = hashes.Hash(algo)
        h.update(data)
        return h.finalize()

    return (resp.issuer_key_hash == digest(bits)
            and resp.issuer_name_hash == digest(issuer.subject.public_bytes()))


def _check_response(resp: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate,
                    nonce: bytes | None, url: str, now: int) -> OcspStatus:
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise CollateralError(f"OCSP {url}: responder says {resp.response_status.name}")
    if resp.serial_number != cert.serial_number or not _same_issuer(resp, issuer):
        raise CollateralError(f"OCSP {url}: answer is for another certificate")
    algo = resp.signature_hash_algorithm
    if algo is None:
        raise CollateralError(f"OCSP {url}: unsupported signature algorithm")
    # Signed by the issuer itself, or by a responder certificate the issuer signed.
    signer = issuer
    if resp.certificates:
        responder = resp.certificates[0]
        if responder.public_key() != issuer.public_key():
            try:
                responder.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as e:
                raise CollateralError(f"OCSP {url}: responder certificate is not issued by "
                                      "the certificate's issuer") from e
            # RFC 6960 4.2.2.2: only a certificate issued for OCSP signing may answer for
            # its issuer; any other (another device's) must not vouch for this one.
            try:
                eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                eku = None
            if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise CollateralError(f"OCSP {url}: responder certificate is not authorised "
                                      "for OCSP signing (no id-kp-OCSPSigning)")
            nb = int(responder.not_valid_before_utc.timestamp())
            na = int(responder.not_valid_after_utc.timestamp())
            if not nb <= now <= na:
                raise CollateralError(f"OCSP {url}: responder certificate is not valid at "
                                      f"{now} ({nb}..{na})")
        signer = responder
    if not _verify_sig(signer.public_key(), resp.signature, resp.tbs_response_bytes, algo):
        raise CollateralError(f"OCSP {url}: response signature does not verify")
    if nonce is not None:
        try:
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            raise CollateralError(f"OCSP {url}: response carries no nonce") from None
        if got != nonce:
            raise CollateralError(f"OCSP {url}: response nonce does not match the request")
    this_update = int(resp.this_update_utc.timestamp())
    nxt = resp.next_update_utc
    if nxt is None:
        raise CollateralError(f"OCSP {url}: response has no nextUpdate")
    next_update = int(nxt.timestamp())
    if not this_update - 300 <= now < next_update:
        raise CollateralError(f"OCSP {url}: response valid {this_update}..{next_update}, "
                              f"not at {now}")
    status = resp.certificate_status.name.lower()
    if status == "revoked":
        rt = resp.revocation_time_utc
        reason = resp.revocation_reason
        return OcspStatus(status, this_update, next_update,
                          int(rt.timestamp()) if rt else None, reason.value if reason else None)
    return OcspStatus(status, this_update, next_update)


async def fetch_ocsp_status(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    ocsp_url: str | None = None,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> OcspStatus:
    """Ask the OCSP responder about ``cert`` (with a nonce) and verify the signed answer.

    Revoked is a valid answer, not an error; the caller decides. Signed answers are cached
    until their nextUpdate and verified again on every cache hit.
    """
    t = int(time.time()) if now is None else now
    url = ocsp_url or default_ocsp_url()
    issuer_key = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    key = f"nvidia-ocsp/{hashlib.sha256(issuer_key).hexdigest()[:32]}/{cert.serial_number:x}"
    if cache is not None and (hit := cache.get(key, now=t)) is not None:
        # The cache holds the signed answer, checked again here: a planted or stale file
        # is never believed, it only costs a fresh request.
        try:
            return _check_response(ocsp.load_der_ocsp_response(hit), cert, issuer, None,
                                   f"cache {key}", t)
        except (ValueError, CollateralError):
            pass
    nonce = os.urandom(32)
    req = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA384())
           .add_extension(x509.OCSPNonce(nonce), critical=False).build())
    body = req.public_bytes(serialization.Encoding.DER)
    async with client_or(client, retry) as c:
        resp = await request(c, "POST", url, what="NVIDIA OCSP", retry=retry, content=body,
                             headers={"Content-Type": "application/ocsp-request"})
    try:
        parsed = ocsp.load_der_ocsp_response(resp.content)
    except ValueError as e:
        raise CollateralError(f"OCSP {url}: answer is not a DER OCSP response: {e}") from e
    status = _check_response(parsed, cert, issuer, nonce, url, t)
    if cache is not None:
        cache.put(key, resp.content, expires=status.next_update, now=t)
    return status


async def fetch_chain_ocsp(
    chains: Sequence[Sequence[x509.Certificate]],
    *,
    ocsp_url: str | None = None,
    cache: CollateralCache | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> dict[str, OcspStatus]:
    """Verified OCSP answers for every certificate ``teegate.attest.gpu_ocsp`` asks about in
    these device chains (leaf first), by certificate fingerprint; each certificate is asked
    once however many GPUs share it. CollateralError when the responder fails."""
    out: dict[str, OcspStatus] = {}
    async with client_or(None, retry) as c:
        for chain in chains:
            for cert, issuer in asked_about(chain):
                key = certificate_key(cert)
                if key not in out:
                    out[key] = await fetch_ocsp_status(cert, issuer, ocsp_url=ocsp_url,
                                                       cache=cache, client=c, now=now,
                                                       retry=retry)
    return out


async def fetch_gpu_collateral(
    nvidia_payload: str | Mapping[str, Any],
    *,
    ocsp: bool,
    rims: bool,
    ocsp_url: str | None = None,
    rim_url: str | None = None,
    cache: CollateralCache | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> tuple[dict[str, OcspStatus] | None, tuple[bytes, ...]]:
    """What a policy asks for beyond a provider's ``nvidia_payload``: OCSP answers for the
    GPUs' device chains (``ocsp``; None when not asked) and each GPU's driver and VBIOS RIMs
    by the ids its evidence names (``rims``). The gateway and ``teegate verify --online``
    both fetch through here."""
    answers = await fetch_chain_ocsp(device_chains(nvidia_payload), ocsp_url=ocsp_url,
                                     cache=cache, now=now, retry=retry) if ocsp else None
    files = tuple([await fetch_rim(rim_id, rim_url=rim_url, cache=cache, now=now,
                                   retry=retry) for rim_id in payload_rim_ids(nvidia_payload)]
                  ) if rims else ()
    return answers, files

"""Fetch a node's attestation report with our own fresh nonce and verify it.

Pure checking lives in ``teegate.attest``; this module is the HTTP edge plus the few checks
that belong to the caller (the algorithm it asked for, the nonce it chose).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from teegate import safejson
from teegate.attest.guard import MAX_REPORT_VALUES
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check, Verdict
from teegate.client.errors import AttestationRejectedError
from teegate.errors import EvidenceError, UpstreamError
from teegate.node.signatures import SIGNING_ALGOS, normalize_signing_address


@dataclass(frozen=True)
class AttestedKey:
    """A signing key whose binding to verified hardware evidence was just checked."""

    signing_address: str
    signing_algo: str
    identity: bytes
    verdict: Verdict

    def matches(self, signing_address: str, signing_algo: str) -> bool:
        raw = normalize_signing_address(signing_address, signing_algo)
        return signing_algo == self.signing_algo and raw is not None and raw == self.identity


def api_root(base_url: str) -> str:
    """``http://host:port`` from ``http://host:port`` or ``http://host:port/v1``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _fresh_nonce() -> bytes:
    try:
        from teegate.attest.binding import fresh_nonce
    except ImportError:  # pragma: no cover - the attest helper is always present in releases
        return secrets.token_bytes(32)
    return fresh_nonce()


def _report_url(base_url: str) -> str:
    return api_root(base_url) + "/v1/attestation/report"


def _parse_report(url: str, resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code != 200:
        raise UpstreamError(f"attestation report from {url}: HTTP {resp.status_code}: "
                            f"{resp.text[:200]}")
    try:
        report = safejson.loads(resp.content, max_values=MAX_REPORT_VALUES)
    except safejson.TooLargeError as e:
        raise EvidenceError(f"attestation report from {url} is too large: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvidenceError(f"attestation report from {url} is not JSON: {e}") from e
    if not isinstance(report, dict):
        raise EvidenceError(f"attestation report from {url} is not a JSON object")
    return report


def get_report(
    base_url: str, *, nonce: bytes, signing_algo: str = "ecdsa",
    client: httpx.Client | None = None, timeout: float = 30.0, model: str | None = None,
) -> dict[str, Any]:
    """GET ``/v1/attestation/report`` with our nonce (and ``model=``, for providers whose
    models run in different TEEs); the JSON object, or UpstreamError."""
    url = _report_url(base_url)
    params = {"nonce": nonce.hex(), "signing_algo": signing_algo}
    if model is not None:
        params["model"] = model
    try:
        if client is not None:
            resp = client.get(url, params=params, timeout=timeout)
        else:
            resp = httpx.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as e:
        raise UpstreamError(f"attestation report from {url}: {e}") from e
    return _parse_report(url, resp)


async def aget_report(
    base_url: str, *, nonce: bytes, signing_algo: str = "ecdsa",
    client: httpx.AsyncClient, timeout: float = 30.0,
) -> dict[str, Any]:
    """Async ``get_report``."""
    url = _report_url(base_url)
    params = {"nonce": nonce.hex(), "signing_algo": signing_algo}
    try:
        resp = await client.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as e:
        raise UpstreamError(f"attestation report from {url}: {e}") from e
    return _parse_report(url, resp)


def verify_report(
    report: Mapping[str, Any], *, nonce: bytes, policy: Policy, now: int, signing_algo: str,
    collateral: str | None = None, snp_certificates: bytes | None = None,
    snp_crl: bytes | None = None, gpu_ocsp: Mapping[str, Any] | None = None,
    gpu_rims: Sequence[bytes] = (),
) -> Verdict:
    """Verify a report we asked for with ``nonce``: the attestation verdict, plus the client's
    own checks that the report speaks of the algorithm we asked for and that its report_data
    binds that identity and our nonce in a layout the provider's policy allows
    (``binding.layouts``; the default allows every key layout). ``collateral`` /
    ``snp_certificates``: fetched for a report that does not carry its own."""
    from teegate.attest.report import verify_provider_report

    verdict = verify_provider_report(report, nonce=nonce, policy=policy, now=now,
                                     collateral=collateral, snp_certificates=snp_certificates,
                                     snp_crl=snp_crl, gpu_ocsp=gpu_ocsp,
                                     gpu_rims=gpu_rims)
    extra: list[Check] = []
    algo = report.get("signing_algo", "ecdsa")
    extra.append(Check("client.signing_algo", algo == signing_algo,
                       f"asked for {signing_algo}, report is for {algo}"))
    address = report.get("signing_address")
    identity = (normalize_signing_address(address, signing_algo)
                if isinstance(address, str) else None)
    if identity is None:
        extra.append(Check("client.signing_address", False,
                           f"signing_address {address!r} is not a valid {signing_algo} identity"))
    elif verdict.report_data is not None:
        extra.append(_report_data_check(bytes.fromhex(verdict.report_data), identity, nonce,
                                        signing_algo, policy))
    return verdict.with_checks(extra)


def _report_data_check(report_data: bytes, identity: bytes, nonce: bytes, signing_algo: str,
                       policy: Policy) -> Check:
    """``client.report_data``: the identity we will check signatures against and the nonce we
    chose, in one of the policy's layouts (the padded one unless the policy allows others).
    A policy that allows only TLS layouts fails here: the client pins no TLS key."""
    from teegate.attest.binding import check_report_data

    key, bound = check_report_data(report_data, signing_key=identity, nonce=nonce,
                                   signing_algo=signing_algo, policy=policy)
    if key.ok and bound.ok:
        layout = key.detail.rsplit("(", 1)[-1].rstrip(")")
        return Check("client.report_data", True,
                     f"report_data binds the signing identity and our nonce ({layout})")
    return Check("client.report_data", False,
                 f"report_data does not bind this key and our nonce: {key.detail}")


def _check_algo(signing_algo: str) -> None:
    if signing_algo not in SIGNING_ALGOS:
        raise EvidenceError(f"signing_algo must be one of {', '.join(SIGNING_ALGOS)}")


def _accept(
    base_url: str, report: Mapping[str, Any], *, nonce: bytes, policy: Policy,
    now: int | None, signing_algo: str,
) -> AttestedKey:
    verdict = verify_report(report, nonce=nonce, policy=policy,
                            now=int(time.time()) if now is None else now,
                            signing_algo=signing_algo)
    if not verdict.accepted:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in verdict.failures) or "no checks ran"
        raise AttestationRejectedError(f"attestation of {base_url} rejected: {failed}", verdict)
    address = str(report["signing_address"])
    identity = normalize_signing_address(address, signing_algo)
    if identity is None:  # verify_report already failed such a report; never trust it here
        raise AttestationRejectedError(f"attestation of {base_url}: bad signing_address", verdict)
    return AttestedKey(address, signing_algo, identity, verdict)


def attest_node(
    base_url: str, *, policy: Policy, now: int | None = None, signing_algo: str = "ecdsa",
    client: httpx.Client | None = None,
) -> AttestedKey:
    """Fetch and verify a report; the attested key, or AttestationRejectedError."""
    _check_algo(signing_algo)
    nonce = _fresh_nonce()
    report = get_report(base_url, nonce=nonce, signing_algo=signing_algo, client=client)
    return _accept(base_url, report, nonce=nonce, policy=policy, now=now,
                   signing_algo=signing_algo)


async def aattest_node(
    base_url: str, *, policy: Policy, client: httpx.AsyncClient, now: int | None = None,
    signing_algo: str = "ecdsa",
) -> AttestedKey:
    """Async ``attest_node``."""
    _check_algo(signing_algo)
    nonce = _fresh_nonce()
    report = await aget_report(base_url, nonce=nonce, signing_algo=signing_algo, client=client)
    return _accept(base_url, report, nonce=nonce, policy=policy, now=now,
                   signing_algo=signing_algo)


def fetch_and_verify_report(
    base_url: str, *, policy: Policy, now: int | None = None, signing_algo: str = "ecdsa",
    model: str | None = None,
) -> Verdict:
    """Fetch a report with a fresh nonce and return its verdict (accepted or not); raises
    UpstreamError / EvidenceError when no report could be obtained. Used by
    ``teegate verify --url``."""
    _check_algo(signing_algo)
    nonce = _fresh_nonce()
    report = get_report(base_url, nonce=nonce, signing_algo=signing_algo, model=model)
    return verify_report(report, nonce=nonce, policy=policy,
                         now=int(time.time()) if now is None else now,
                         signing_algo=signing_algo)

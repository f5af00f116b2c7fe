"""Intel PCS / PCCS client: the DCAP collateral of a quote, as dcap-qvl QuoteCollateralV3 JSON.

Collateral is per (TEE, FMSPC, CA), not per quote, so it is cached on that key until the
earliest nextUpdate / notAfter inside it. TCB info and QE identity are kept as the exact
signed text of the response (re-serialising would break Intel's signature).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass

import dcap_qvl
import httpx
from cryptography import x509

from teegate import safejson
from teegate.attest.detect import EvidenceKind, detect
from teegate.collateral.cache import CollateralCache
from teegate.collateral.http import DEFAULT_RETRY, RetryPolicy, client_or, get
from teegate.errors import CollateralError, EvidenceError

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
PHALA_PCCS_URL = "https://pccs.phala.network"
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----(.+?)-----END X509 CRL-----", re.S)
_HEX = re.compile(rb"^[0-9a-fA-F\s]+$")


@dataclass(frozen=True, slots=True)
class IntelTarget:
    """What collateral a quote needs: TEE (``tdx``/``sgx``), FMSPC (upper hex), PCK CA."""

    tee: str
    fmspc: str
    ca: str

    @property
    def cache_key(self) -> str:
        return f"intel/{self.tee}/{self.fmspc}/{self.ca}"


def quote_target(quote: bytes) -> IntelTarget:
    """FMSPC, CA type and TEE of a quote (binary or hex)."""
    kind, raw = detect(quote)
    if kind not in (EvidenceKind.TDX_QUOTE, EvidenceKind.SGX_QUOTE):
        raise EvidenceError(f"Intel collateral needs a TDX or SGX quote, not {kind.value}")
    try:
        q = dcap_qvl.parse_quote(raw)
        fmspc, ca, tdx = str(q.fmspc()).upper(), str(q.ca()), bool(q.is_tdx())
    except (ValueError, TypeError) as e:
        raise EvidenceError(f"quote cannot be parsed for FMSPC/CA: {e}") from e
    if ca not in ("processor", "platform"):
        raise EvidenceError(f"quote names unknown PCK CA {ca!r}")
    return IntelTarget("tdx" if tdx else "sgx", fmspc, ca)


def _base(url: str) -> str:
    base = url.rstrip("/")
    for suffix in ("/sgx/certification/v4", "/tdx/certification/v4"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def top_level_members(text: str, *, what: str) -> dict[str, str]:
    """The raw text of each top-level member of a JSON object; duplicate keys are refused
    (a signed object smuggled beside an unsigned one, mobilecoinfoundation/attestation#64)."""
    dec = json.JSONDecoder()
    out: dict[str, str] = {}
    ws = " \t\r\n"
    i = len(text) - len(text.lstrip(ws))
    try:
        if text[i] != "{":
            raise ValueError("not an object")
        i += 1
        while True:
            while text[i] in ws:
                i += 1
            if text[i] == "}" and not out:
                break
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            while text[i] in ws:
                i += 1
            if text[i] != ":":
                raise ValueError("expected ':'")
            i += 1
            while text[i] in ws:
                i += 1
            _, end = dec.raw_decode(text, i)
            if key in out:
                raise CollateralError(f"{what}: duplicated top-level key {key!r}")
            out[key] = text[i:end]
            i = end
            while text[i] in ws:
                i += 1
            if text[i] == "}":
                break
            if text[i] != ",":
                raise ValueError("expected ',' or '}'")
            i += 1
        if text[i + 1 :].strip(ws):
            raise ValueError("trailing data")
    except (ValueError, IndexError) as e:
        raise CollateralError(f"{what}: body is not a JSON object: {e}") from e
    return out


def _signed_body(text: str, field: str, what: str) -> tuple[str, bytes]:
    members = top_level_members(text, what=what)
    if field not in members or "signature" not in members:
        raise CollateralError(f"{what}: body lacks {field!r} or 'signature'")
    obj = members[field]
    if not obj.startswith("{"):
        raise CollateralError(f"{what}: {field!r} is not an object")
    try:
        sig_text = safejson.loads(members["signature"])
        sig = bytes.fromhex(sig_text)
    except (ValueError, TypeError) as e:
        raise CollateralError(f"{what}: signature is not a hex string") from e
    if len(sig) != 64:
        raise CollateralError(f"{what}: signature is {len(sig)} bytes, expected 64 (r||s)")
    return obj, sig


def _chain_header(resp: httpx.Response, names: tuple[str, ...], what: str) -> str:
    for name in names:
        value = resp.headers.get(name)
        if value:
            pem = urllib.parse.unquote(value)
            try:
                certs = x509.load_pem_x509_certificates(pem.encode())
            except ValueError as e:
                raise CollateralError(f"{what}: header {name} is not a PEM chain: {e}") from e
            if not certs:
                raise CollateralError(f"{what}: header {name} holds no certificate")
            return pem
    raise CollateralError(f"{what}: response from {resp.request.url} lacks header {names[0]}")


def _crl_der(body: bytes, what: str) -> tuple[bytes, x509.CertificateRevocationList]:
    """A CRL as DER, from DER, PEM or hex text (PCCS serves the root CRL hex-encoded)."""
    der = body
    m = _PEM_CRL.search(body)
    try:
        if m:
            der = base64.b64decode(b"".join(m.group(1).split()), validate=True)
        elif body and _HEX.match(body):
            der = bytes.fromhex(body.decode())
        crl = x509.load_der_x509_crl(der)
    except (ValueError, binascii.Error) as e:
        raise CollateralError(f"{what}: body is not a CRL (DER, PEM or hex): {e}") from e
    return der, crl


def _ts(value: object, what: str) -> int:
    if not isinstance(value, str):
        raise CollateralError(f"{what}: missing date")
    try:
        return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError as e:
        raise CollateralError(f"{what}: bad date {value!r}") from e


def collateral_window(collateral_json: str) -> tuple[int, int]:
    """(usable from, usable until) of QuoteCollateralV3 JSON: max of issue dates, CRL
    thisUpdate and cert notBefore; min of nextUpdate, CRL nextUpdate and cert notAfter."""
    try:
        c = safejson.loads(collateral_json)
        starts: list[int] = []
        ends: list[int] = []
        for field in ("tcb_info", "qe_identity"):
            body = safejson.loads(c[field])
            starts.append(_ts(body.get("issueDate"), field))
            ends.append(_ts(body.get("nextUpdate"), field))
        for field in ("pck_crl", "root_ca_crl"):
            crl = x509.load_der_x509_crl(bytes.fromhex(c[field]))
            starts.append(int(crl.last_update_utc.timestamp()))
            if crl.next_update_utc is not None:
                ends.append(int(crl.next_update_utc.timestamp()))
        for field in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
            for cert in x509.load_pem_x509_certificates(c[field].encode()):
                starts.append(int(cert.not_valid_before_utc.timestamp()))
                ends.append(int(cert.not_valid_after_utc.timestamp()))
    except (KeyError, TypeError, ValueError) as e:
        raise CollateralError(f"collateral JSON is malformed: {e}") from e
    return max(starts), min(ends)


def _root_crl_dp(chain_pem: str) -> str:
    """CRL distribution point of the root certificate at the end of an Intel issuer chain."""
    root = x509.load_pem_x509_certificates(chain_pem.encode())[-1]
    try:
        dps = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound as e:
        raise CollateralError("Intel root certificate names no CRL distribution point") from e
    for dp in dps:
        for name in dp.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return str(name.value)
    raise CollateralError("Intel root certificate names no CRL distribution point URL")


async def fetch_intel_collateral(
    target: IntelTarget,
    *,
    pccs_url: str,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    root_crl_url: str | None = None,
) -> str:
    """QuoteCollateralV3 JSON for ``target`` from a PCCS or Intel PCS at ``pccs_url``.

    The root CA CRL comes from ``{base}/sgx/certification/v4/rootcacrl`` (PCCS), or from the
    root certificate's CRL distribution point when ``pccs_url`` is Intel PCS, or from
    ``root_crl_url`` when given.
    """
    t = int(time.time()) if now is None else now
    if cache is not None:
        hit = cache.get(target.cache_key, now=t)
        if hit is not None:
            return hit.decode()
        async with cache.alock(target.cache_key):
            hit = cache.get(target.cache_key, now=t)
            if hit is not None:
                return hit.decode()
            text, expires = await _fetch(target, pccs_url, client, t, retry, root_crl_url)
            cache.put(target.cache_key, text.encode(), expires=expires, now=t)
            return text
    text, _ = await _fetch(target, pccs_url, client, t, retry, root_crl_url)
    return text


async def _fetch(
    target: IntelTarget, pccs_url: str, client: httpx.AsyncClient | None, now: int,
    retry: RetryPolicy, root_crl_url: str | None,
) -> tuple[str, int]:
    base = _base(pccs_url)
    sgx = f"{base}/sgx/certification/v4"
    tee = f"{base}/{target.tee}/certification/v4"
    is_pcs = urllib.parse.urlsplit(base).hostname == urllib.parse.urlsplit(
        INTEL_PCS_URL).hostname
    async with client_or(client, retry) as c:
        try:
            async with asyncio.TaskGroup() as tg:  # the first failure cancels the others
                crl_task = tg.create_task(get(c, f"{sgx}/pckcrl", what="Intel PCK CRL",
                                              retry=retry,
                                              params={"ca": target.ca, "encoding": "der"}))
                tcb_task = tg.create_task(get(c, f"{tee}/tcb", what="Intel TCB info",
                                              retry=retry, params={"fmspc": target.fmspc}))
                qe_task = tg.create_task(get(c, f"{tee}/qe/identity", what="Intel QE identity",
                                             retry=retry, params={"update": "standard"}))
        except* CollateralError as group:
            raise group.exceptions[0] from None
        crl_resp, tcb_resp, qe_resp = crl_task.result(), tcb_task.result(), qe_task.result()
        pck_chain = _chain_header(crl_resp, ("SGX-PCK-CRL-Issuer-Chain",), "Intel PCK CRL")
        pck_crl, _ = _crl_der(crl_resp.content, f"Intel PCK CRL from {crl_resp.request.url}")
        tcb_chain = _chain_header(
            tcb_resp, ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"), "Intel TCB info")
        tcb_info, tcb_sig = _signed_body(tcb_resp.text, "tcbInfo",
                                         f"Intel TCB info from {tcb_resp.request.url}")
        qe_chain = _chain_header(qe_resp, ("SGX-Enclave-Identity-Issuer-Chain",),
                                 "Intel QE identity")
        qe_identity, qe_sig = _signed_body(qe_resp.text, "enclaveIdentity",
                                           f"Intel QE identity from {qe_resp.request.url}")
        root_url = root_crl_url or (_root_crl_dp(tcb_chain) if is_pcs else f"{sgx}/rootcacrl")
        root_resp = await get(c, root_url, what="Intel root CA CRL", retry=retry)
        root_crl, _ = _crl_der(root_resp.content, f"Intel root CA CRL from {root_url}")
    _check_fmspc(tcb_info, target, tcb_resp)
    text = json.dumps({
        "pck_crl_issuer_chain": pck_chain,
        "root_ca_crl": root_crl.hex(),
        "pck_crl": pck_crl.hex(),
        "tcb_info_issuer_chain": tcb_chain,
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig.hex(),
        "qe_identity_issuer_chain": qe_chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig.hex(),
    })
    try:
        dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as e:
        raise CollateralError(f"Intel collateral from {base} is not usable by dcap-qvl: {e}") from e
    start, end = collateral_window(text)
    if now >= end:
        raise CollateralError(
            f"Intel collateral from {base} for FMSPC {target.fmspc} expired at {end} "
            f"(now {now}): the server serves stale collateral"
        )
    del start
    return text, end


def _check_fmspc(tcb_info: str, target: IntelTarget, resp: httpx.Response) -> None:
    try:
        body = safejson.loads(tcb_info)
    except ValueError as e:  # pragma: no cover - raw_decode already parsed it
        raise CollateralError(f"Intel TCB info from {resp.request.url}: {e}") from e
    fmspc = str(body.get("fmspc", "")).upper()
    if fmspc != target.fmspc:
        raise CollateralError(
            f"Intel TCB info from {resp.request.url} is for FMSPC {fmspc or '?'}, "
            f"not the quote's {target.fmspc}"
        )
    kind = str(body.get("id", "SGX")).upper()
    if (kind == "TDX") != (target.tee == "tdx"):
        raise CollateralError(f"Intel TCB info from {resp.request.url} is {kind}, not "
                              f"{target.tee.upper()}")


async def fetch_tdx_collateral(
    quote: bytes,
    *,
    pccs_url: str = PHALA_PCCS_URL,
    cache: CollateralCache | None = None,
    client: httpx.AsyncClient | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    root_crl_url: str | None = None,
) -> str:
    """QuoteCollateralV3 JSON for a TDX or SGX quote (binary or hex)."""
    return await fetch_intel_collateral(
        quote_target(quote), pccs_url=pccs_url, cache=cache, client=client, now=now,
        retry=retry, root_crl_url=root_crl_url)


def fetch_tdx_collateral_sync(
    quote: bytes,
    *,
    pccs_url: str | None = None,
    cache: CollateralCache | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    now: int | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    root_crl_url: str | None = None,
) -> str:
    """``fetch_tdx_collateral`` for synchronous callers (the CLI). ``pccs_url`` defaults to
    ``$TEEGATE_PCCS_URL`` or Phala's PCCS; ``cache_dir`` opens a ``CollateralCache``."""
    if cache is None and cache_dir is not None:
        cache = CollateralCache(cache_dir)
    return asyncio.run(fetch_tdx_collateral(
        quote, pccs_url=pccs_url or default_pccs_url(), cache=cache, now=now, retry=retry,
        root_crl_url=root_crl_url))


def default_pccs_url() -> str:
    """The verifier's configured PCCS (never one named by the evidence, GHSA-m52x-2r7m-5p42)."""
    return os.environ.get("TEEGATE_PCCS_URL") or PHALA_PCCS_URL

"""The gateway attests itself, in NEAR AI cloud-api's gateway shape.

An agent trusts teegate's routing and receipts only as far as it trusts the gateway's
operator; run in a TEE like the node (configfs-tsm, dstack, or a development TEE), the gateway
serves its own evidence beside its providers':

- ``GET /v1/attestation/report?nonce=&signing_algo=[&model=]`` →
  ``{"gateway_attestation": {signing_address, signing_algo, intel_quote | snp_report,
  event_log (a JSON string, as cloud-api sends it), report_data, request_nonce, info,
  collateral?}, "model_attestations": [the attested providers' reports for ``model``, fetched
  with the caller's nonce]}``. ``report_data`` = the gateway's signing identity right-padded
  to 32 bytes ‖ the caller's 32-byte nonce (the node's layout, cloud-api's without TLS).
- ``GET /v1/aci/attestation?nonce=`` (ACI §4): the receipt keyset bound by ``report_data``
  = sha256 of the §3.2 statement, zero-padded, in the gateway's own quote; the receipts the
  gateway signs name that keyset's digest, so an ACI client ties each receipt to this
  attestation (§9.1, §9.3).
- ``GET /v1/signature/{chat_id}?signing_algo=`` → ``{text, signature, signing_address,
  signing_algo, signature_kind: "gateway"}`` over ``sha256(the request bytes the agent
  sent):sha256(the response bytes the agent received)``, as cloud-api's ``gateway`` kind.
  Only the agent that made the call (or the operator) gets it; anyone else gets 404.

The texts are recorded by a hook the gateway calls when a call concludes, before the answer's
last byte leaves (``Gateway.concluded_hooks``), so an agent that has read the answer finds its
signature. Keys: from the dstack KMS under dstack (``teegate.node.kms``, role ``gateway``),
else generated in memory at start; ``info.key_custody`` says which.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import teegate
from teegate.errors import TeegateError
from teegate.node.signatures import SIGNING_ALGOS
from teegate.node.signer import NodeKeys, SignedText
from teegate.node.sources import Evidence, QuoteSource, quote_tcb_info
from teegate.node.store import SignatureStore
from teegate.receipts.aci import aci_report_data

if TYPE_CHECKING:
    from teegate.gateway.app import GatewayApp
    from teegate.gateway.calls import CallRecord

GATEWAY_TEES = ("none", "auto", "configfs", "dstack", "dev-tdx", "dev-snp")


def _error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"
                                   if status < 500 else "server_error",
                                   "param": param, "code": code}}, status,
                        headers={"x-should-retry": "false"} if status < 500 else None)


def _nonce(value: str | None) -> bytes | None:
    """32 bytes from 64 hex digits (optional 0x); a fresh one when absent; None: malformed."""
    if value is None:
        return secrets.token_bytes(32)
    text = value.strip().lower().removeprefix("0x")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        return None
    return bytes.fromhex(text)


@dataclass
class GatewayTee:
    """The gateway's evidence source, its signing keys and the texts it has signed."""

    source: QuoteSource
    keys: NodeKeys = field(default_factory=NodeKeys)
    store: SignatureStore = field(default_factory=SignatureStore)
    owners: dict[str, str] = field(default_factory=dict)  # chat id -> agent
    # under dstack: the receipt key released by the KMS, and its custody entry
    receipt_key: Any = None
    receipt_custody: dict[str, Any] | None = None

    def record(self, record: CallRecord) -> None:
        """The hook: keep the text of a concluded call whose answer reaches the agent."""
        if not record.chat_id or not record.returned_sha256:
            return
        if record.receipt_id is not None and not record.receipt_committed:
            return  # the gateway cuts such an answer off before its last byte
        if record.stream and record.hold_lost:
            return
        self.store.put_text(record.chat_id,
                            f"{record.request_sha256}:{record.returned_sha256}")
        self.owners[record.chat_id] = record.agent
        while len(self.owners) > self.store.max_entries:  # insertion order: oldest first
            del self.owners[next(iter(self.owners))]

    def signature(self, chat_id: str, algo: str) -> SignedText | None:
        signed = self.store.get(chat_id, algo)
        text = self.store.text(chat_id)
        if signed is None and text is not None:
            signer = self.keys.get(algo)
            signed = SignedText(text, signer.sign(text), signer.signing_address, algo)
            self.store.add(chat_id, signed)
        return signed

    def attestation(self, evidence: Evidence, *, algo: str, nonce: bytes) -> dict[str, Any]:
        """``gateway_attestation``: cloud-api's ``DstackCpuQuote`` fields."""
        signer = self.keys.get(algo)
        out: dict[str, Any] = {"signing_address": signer.signing_address,
                               "signing_algo": algo}
        if evidence.tee == "tdx":
            out["intel_quote"] = evidence.quote.hex()
            if evidence.collateral is not None:
                out["collateral"] = evidence.collateral
        else:
            out["snp_report"] = evidence.quote.hex()
            if evidence.certificates is not None:
                out["snp_certificates"] = evidence.certificates.decode("ascii")
        info = {**evidence.info, "tee": evidence.tee, "source": evidence.source,
                "development": evidence.development,
                "version": f"teegate-gateway/{teegate.__version__}",
                "key_custody": self.keys.custody}
        if not isinstance(info.get("tcb_info"), (dict, str)):
            info["tcb_info"] = quote_tcb_info(evidence.tee, evidence.quote)
        out.update(event_log=evidence.event_log,
                   report_data=self.keys.report_data(algo, nonce).hex(),
                   request_nonce=nonce.hex(), info=info)
        return out


def build_gateway_tee(tee: str) -> GatewayTee | None:
    """The gateway's TEE for ``gateway.tee`` (None for ``none``); under dstack its keys come
    from the KMS and it does not start without them (ConfigError)."""
    if tee == "none":
        return None
    from teegate.node.sources import DstackSource, choose_source

    source = choose_source(tee)
    if not isinstance(source, DstackSource):
        return GatewayTee(source, NodeKeys())
    from teegate.node.kms import kms_keys, kms_receipt_key

    receipt_key, custody = kms_receipt_key(source.client)
    return GatewayTee(source, kms_keys(source.client, role="gateway"),
                      receipt_key=receipt_key, receipt_custody=custody)


_PROVENANCE_UNKNOWN = {"repo_url": None, "repo_commit": None, "image_digest": None,
                       "image_provenance": None}


def aci_report(tee: GatewayTee, evidence: Evidence, keyset: dict[str, Any], digest: str,
               report_data: bytes) -> dict[str, Any]:
    """ACI §4.1: the report of this workload (an aggregator, no E2EE terminated)."""
    info = evidence.info
    tcb = info.get("tcb_info")
    app_compose = tcb.get("app_compose") if isinstance(tcb, dict) else None
    ev: dict[str, Any]
    if evidence.tee == "tdx":
        ev = {"quote": evidence.quote.hex(), "quote_report_data": report_data.hex(),
              "event_log": evidence.event_log}
        if evidence.collateral is not None:
            ev["collateral"] = evidence.collateral
    else:
        ev = {"report": evidence.quote.hex(), "quote_report_data": report_data.hex()}
        if evidence.certificates is not None:
            ev["certificates"] = evidence.certificates.decode("ascii")
    if isinstance(app_compose, str):
        ev["app_compose"] = app_compose
    if tee.receipt_custody is not None:  # ACI's dstack shape: one list, roles named
        signing = tee.keys.custody.get("keys", [])
        ev["key_custody"] = {"provider": "dstack-kms",
                             "keys": [tee.receipt_custody, *signing]}
    else:
        ev["key_custody"] = {
            "receipt": {"provider": "gateway-data-dir",
                        "detail": "the receipt key is kept in the gateway's data_dir "
                                  "(log.key), not sealed to the workload"},
            "signing": tee.keys.custody,
        }
    ev["development"] = evidence.development
    return {
        "api_version": "aci/1",
        "workload_keyset_digest": digest,
        "attestation": {
            "tee_type": "tdx" if evidence.tee == "tdx" else "sev_snp",
            "workload_keyset": keyset,
            "report_data": report_data[:32].hex(),
            "source_provenance": dict(_PROVENANCE_UNKNOWN),
            "evidence": ev,
        },
        "service_capabilities": {"supported_e2ee_versions": [], "serving": "aggregator"},
    }


def mount_self_attestation(app: GatewayApp, tee: GatewayTee, receipt_log: Any = None) -> None:
    """Serve the gateway's report and signatures from ``app`` and record every call; with
    ``receipt_log`` also ACI's ``GET /v1/aci/attestation`` binding its receipt keyset."""
    gw = app.gateway
    gw.concluded_hooks.append(tee.record)
    router = APIRouter()

    async def model_attestations(model: str, nonce: bytes) -> list[dict[str, Any]]:
        from teegate.gateway.attestation import replica_reports

        out: list[dict[str, Any]] = []
        for p in gw.by_model.get(model, []):
            if not p.attestable:
                continue
            try:
                report, _ = await p.adapter.fetch_report(nonce, model=model)
            except TeegateError:
                continue  # an unreachable provider is not listed; the others still are
            for one in replica_reports(report):
                out.append({k: v for k, v in one.items()
                            if k not in ("all_attestations", "model_attestations")})
        return out

    @router.get("/v1/attestation/report")
    async def report(request: Request) -> Response:
        q = request.query_params
        algo = (q.get("signing_algo") or "ecdsa").strip().lower()
        if algo not in SIGNING_ALGOS:
            return _error(400, "signing_algo must be 'ecdsa' or 'ed25519'", "invalid_request",
                          "signing_algo")
        nonce = _nonce(q.get("nonce"))
        if nonce is None:
            return _error(400, "nonce must be 32 bytes as 64 hex digits", "invalid_request",
                          "nonce")
        rd = tee.keys.report_data(algo, nonce)
        try:
            evidence = await anyio.to_thread.run_sync(tee.source.get_evidence, rd)
            gateway = tee.attestation(evidence, algo=algo, nonce=nonce)
        except TeegateError as e:
            return _error(503, gw.redact(f"gateway evidence unavailable: {e}"),
                          "evidence_unavailable")
        body: dict[str, Any] = {"gateway_attestation": gateway}
        model = q.get("model")
        if model:
            body["model_attestations"] = await model_attestations(model, nonce)
        return Response(json.dumps(body).encode(), media_type="application/json")

    @router.get("/v1/signature/{chat_id:path}")
    async def signature(chat_id: str, request: Request) -> Response:
        principal = await request.app.state.principal(request)  # 401 without a valid key
        algo = (request.query_params.get("signing_algo") or "ecdsa").strip().lower()
        if algo not in SIGNING_ALGOS:
            return _error(400, "signing_algo must be 'ecdsa' or 'ed25519'", "invalid_request",
                          "signing_algo")
        owner = tee.owners.get(chat_id)
        allowed = owner is not None and (principal.kind == "operator"
                                         or owner in principal.agents)
        signed = tee.signature(chat_id, algo) if allowed else None
        if signed is None:  # someone else's call looks like no call (ACI §7.6)
            raise HTTPException(404, detail="no signature for this id (unknown or expired)")
        return JSONResponse({**signed.to_json(), "signature_kind": "gateway"})

    @router.get("/v1/aci/attestation")
    async def aci_attestation(request: Request) -> Response:
        nonce = request.query_params.get("nonce")
        if nonce is not None and (len(nonce) != 64
                                  or any(c not in "0123456789abcdef" for c in nonce)):
            return _error(400, "nonce must be 32 bytes as exactly 64 lower-case hex digits",
                          "invalid_request", "nonce")
        if receipt_log is None:
            return _error(404, "this gateway writes no receipts, so it has no ACI keyset",
                          "not_found")
        keyset, digest = receipt_log.signer.keyset, receipt_log.signer.keyset_digest
        rd = aci_report_data(digest, nonce)
        try:
            evidence = await anyio.to_thread.run_sync(tee.source.get_evidence, rd)
        except TeegateError as e:
            return _error(503, gw.redact(f"gateway evidence unavailable: {e}"),
                          "evidence_unavailable")
        return Response(json.dumps(aci_report(tee, evidence, keyset, digest, rd)).encode(),
                        media_type="application/json",
                        headers={"x-aci-version": "aci/1", "x-aci-keyset-digest": digest})

    app.api.include_router(router)

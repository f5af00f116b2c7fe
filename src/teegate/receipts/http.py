"""HTTP routes for receipts, checkpoints and proofs (mounted by the gateway).

Receipts are private: an agent sees its own, an owner its agents', the operator all; anything
else answers 404 exactly as for an unknown id (ACI §7.6). Checkpoints and proofs by leaf index
reveal no receipt content and are public, so monitors can watch the log.

(No ``from __future__ import annotations`` here: FastAPI must evaluate the route annotations,
which name the dependency built inside ``receipts_router``.)
"""

import base64
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from teegate.errors import LogError
from teegate.receipts.bundle import TlogProof, make_bundle
from teegate.receipts.log import LoggedReceipt, ReceiptLog, ReceiptProof

EvidenceLookup = Callable[[str], Mapping[str, Any] | None]
MAX_SIZE = (1 << 63) - 1  # BIGINT: larger numbers cannot name a tree this log holds


class Principal(Protocol):
    """Who is asking: ``kind`` is "agent", "owner" or "operator"."""

    @property
    def kind(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def agents(self) -> frozenset[str]: ...


def may_read(principal: Principal, agent: str) -> bool:
    if principal.kind == "operator":
        return True
    if principal.kind == "owner":
        return agent in principal.agents
    if principal.kind == "agent":
        return agent == principal.id
    return False


def _error(status: int, message: str, etype: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": etype, "param": None, "code": code}},
        status_code=status,
    )


def _not_found() -> JSONResponse:
    return _error(404, "no such receipt", "not_found", "receipt_not_found")


def _unavailable(e: LogError) -> JSONResponse:
    """The log cannot answer (damaged storage, a stuck writer): say so, never a bare 500."""
    return _error(503, f"transparency log unavailable: {e}", "log_unavailable", "log_error")


def _b64(hs: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hs]


def _tlog_proof(p: ReceiptProof) -> TlogProof:
    return TlogProof(p.index, p.proof, p.checkpoint.note)


def receipt_view(log: ReceiptLog, p: ReceiptProof) -> dict[str, Any]:
    """The ``GET /v1/receipts/{id}`` body: also a valid offline bundle."""
    body = make_bundle(
        p.receipt.document, _tlog_proof(p), log_vkey=log.vkey, receipt_keyset=log.signer.keyset
    )
    body.update(
        {
            "leaf_index": p.index,
            "tree_size": p.checkpoint.size,
            "inclusion_proof": _b64(p.proof),
            "checkpoint": p.checkpoint.note,
        }
    )
    return body


def receipts_router(
    log: ReceiptLog,
    principal_dependency: Callable[..., Any],
    *,
    evidence_lookup: EvidenceLookup | None = None,
) -> APIRouter:
    """Routes: receipts (access-checked), checkpoint and proofs (public)."""
    router = APIRouter()
    dep = Depends(principal_dependency)

    def _readable(rid: str, who: Principal) -> LoggedReceipt | JSONResponse:
        """The receipt if ``who`` may read it (by the agent its signed document names), else
        the 404 of an unknown id; 503 ``log_unavailable`` when the log cannot say (a queued
        receipt the log cannot append yet, a stored receipt that fails its signature)."""
        try:
            got = log.get(rid)
        except LogError as e:
            return _unavailable(e)
        if got is None or not may_read(who, got.agent):
            return _not_found()
        return got

    @router.get("/v1/receipts/{receipt_id}")
    def get_receipt(receipt_id: str, who: Annotated[Any, dep]) -> Any:
        if isinstance(got := _readable(receipt_id, who), JSONResponse):
            return got
        try:
            p = log.prove(receipt_id)
        except LogError as e:
            return _unavailable(e)
        if p is None:
            return _not_found()
        return receipt_view(log, p)

    @router.get("/v1/aci/receipts/{receipt_id}")
    def get_aci_receipt(receipt_id: str, who: Annotated[Any, dep]) -> Any:
        """ACI §7.1: the bare receipt document, for aci/1 verifiers."""
        got = _readable(receipt_id, who)
        if isinstance(got, JSONResponse):
            return got
        return JSONResponse(
            got.receipt.document,
            headers={
                "x-aci-version": "aci/1",
                "x-aci-keyset-digest": str(got.receipt.document["workload_keyset_digest"]),
            },
        )

    @router.get("/v1/receipts/{receipt_id}/bundle")
    def get_bundle(receipt_id: str, who: Annotated[Any, dep]) -> Any:
        if isinstance(got := _readable(receipt_id, who), JSONResponse):
            return got
        try:
            p = log.prove(receipt_id)
        except LogError as e:
            return _unavailable(e)
        if p is None:
            return _not_found()
        evidence = None
        att = p.receipt.event("teegate.attestation")
        if evidence_lookup is not None and att and isinstance(att.get("evidence_sha256"), str):
            found = evidence_lookup(att["evidence_sha256"])
            evidence = dict(found) if found is not None else None
        body = make_bundle(
            p.receipt.document,
            _tlog_proof(p),
            log_vkey=log.vkey,
            receipt_keyset=log.signer.keyset,
            evidence=evidence,
        )
        return JSONResponse(
            body,
            headers={"content-disposition": f'attachment; filename="{receipt_id}.bundle.json"'},
        )

    @router.get("/v1/log/checkpoint")
    def get_checkpoint() -> Any:
        try:
            cp = log.latest_checkpoint()
            if cp is None or cp.size < log.size():
                cp = log.checkpoint()
        except LogError as e:
            return _unavailable(e)
        return PlainTextResponse(cp.note, media_type="text/plain; charset=utf-8")

    @router.get("/v1/log/vkey")
    def get_vkey() -> Any:
        return PlainTextResponse(log.vkey + "\n")

    @router.get("/v1/log/proof/inclusion")
    def get_inclusion(
        who: Annotated[Any, dep],
        tree_size: Annotated[int, Query(ge=1, le=MAX_SIZE)],
        index: Annotated[int | None, Query(ge=0, le=MAX_SIZE)] = None,
        receipt_id: str | None = None,
    ) -> Any:
        if (index is None) == (receipt_id is None):
            return _error(400, "give exactly one of index or receipt_id", "invalid_request_error")
        if receipt_id is not None:
            got = _readable(receipt_id, who)
            if isinstance(got, JSONResponse):
                return got
            index = got.index
        assert index is not None
        try:
            proof = log.inclusion_proof(index, tree_size)
        except LogError as e:
            return _error(400, str(e), "invalid_request_error")
        return {"leaf_index": index, "tree_size": tree_size, "hashes": _b64(proof)}

    @router.get("/v1/log/proof/consistency")
    def get_consistency(
        from_: Annotated[int, Query(alias="from", ge=1, le=MAX_SIZE)],
        to: Annotated[int, Query(ge=1, le=MAX_SIZE)],
    ) -> Any:
        try:
            if from_ > to:
                raise LogError("from must not exceed to")
            proof = log.consistency_proof(from_, to)
        except LogError as e:
            return _error(400, str(e), "invalid_request_error")
        return {"from": from_, "to": to, "hashes": _b64(proof)}

    @router.get("/v1/log/checkpoint/{size}")
    def get_checkpoint_at(size: Annotated[int, Path(ge=0, le=MAX_SIZE)]) -> Any:
        cp = log.checkpoint_at(size)
        if cp is None:
            return _error(404, "no checkpoint of that size", "not_found", "checkpoint_not_found")
        return PlainTextResponse(cp.note, media_type="text/plain; charset=utf-8")

    return router

"""Shared fixtures for the receipts tests: receipts, keys, and logs on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.node.signer import EcdsaSigner
from teegate.receipts import AttestationRef, ProviderSignature, Receipt, ReceiptLog
from teegate.receipts.http import receipts_router

DATA = Path(__file__).resolve().parent.parent / "data" / "tlog"
PG_URL = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ORIGIN = "teegate.test/log"
PROVIDER_KEY = EcdsaSigner()  # the provider's response-signing key (a real secp256k1 key)


def provider_signature(
    forwarded: str | None, response: str | None, signer: Any = PROVIDER_KEY
) -> ProviderSignature:
    """A real signature over ``forwarded:response`` hashes, as a node makes it."""
    text = f"{forwarded}:{response}"
    return ProviderSignature(
        text=text,
        signature=signer.sign(text),
        signing_key=signer.signing_address,
        algo=signer.algo,
        verified=True,
    )


def make_receipt(i: int, **over: Any) -> Receipt:
    fields: dict[str, Any] = {
        "receipt_id": f"rcpt_{i:06d}",
        "time_ms": 1_750_000_000_000 + i,
        "agent": f"agent-{i % 3}",
        "conversation": f"conv-{i % 5}",
        "platform": "tee-near",
        "provider": "near-1",
        "model": "deepseek-v3",
        "trust_level": "attested",
        "trust_required": "attested",
        "outcome": "success",
        "request_received_sha256": f"{i:064x}",
        "request_forwarded_sha256": f"{i:064x}",
        "response_returned_sha256": f"{i + 1:064x}",
        "chat_id": f"chatcmpl-{i}",
        "attestation": AttestationRef(
            verdict_digest="ee" * 32, evidence_ref="evidence://near-1/1", tee="tdx"
        ),
        "usage": {"prompt_tokens": 10 + i, "completion_tokens": 20},
        "cost": 1234 + i,
        "currency": "USDC",
        "transfer_ids": (f"tr-{i}-hold", f"tr-{i}-settle"),
    }
    fields.update(over)
    if "provider_signature" not in over:
        response = fields.get("response_received_sha256") or fields["response_returned_sha256"]
        fields["provider_signature"] = provider_signature(
            fields["request_forwarded_sha256"], response
        )
    return Receipt(**fields)


@pytest.fixture
def tlog_data() -> Path:
    return DATA


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Connection parameters for a fresh log database (SQLite file or a unique PG schema)."""
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'ledger.db'}", "schema": None}
        return
    if not _pg_available():
        pytest.skip("PostgreSQL not reachable at TEEGATE_TEST_PG")
    import psycopg

    schema = "tlog_test_" + uuid.uuid4().hex[:12]
    yield {"url": PG_URL, "schema": schema}
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def open_log(db: dict[str, Any], log_key: Ed25519PrivateKey) -> Iterator[Callable[..., ReceiptLog]]:
    logs: list[ReceiptLog] = []

    def _open(**kw: Any) -> ReceiptLog:
        args: dict[str, Any] = {"origin": ORIGIN, "key": log_key, "schema": db["schema"]}
        args.update(kw)
        log = ReceiptLog(db["url"], **args)
        logs.append(log)
        return log

    yield _open
    for log in logs:
        with contextlib.suppress(Exception):
            log.close()


@contextlib.asynccontextmanager
async def receipts_client(log: ReceiptLog, principal: Callable[..., Any]
                          ) -> AsyncIterator[httpx.AsyncClient]:
    """The receipt routes over ``log`` in process, with ``principal`` as their auth."""
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(receipts_router(log, principal))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c

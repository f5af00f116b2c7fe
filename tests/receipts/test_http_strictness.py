"""The receipt routes: edge cases found in review (each test failed before its fix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.receipts import ReceiptLog

from .conftest import ORIGIN, make_receipt, receipts_client
from .test_http_audit import principal

AGENT1 = {"authorization": "Bearer agent:agent-1:"}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ReceiptLog]]:
    log = ReceiptLog(
        f"sqlite:///{tmp_path / 'h.db'}",
        origin=ORIGIN,
        key=Ed25519PrivateKey.generate(),
        checkpoint_interval=0,
    )
    for i in range(5):
        log.submit(make_receipt(i))
    log.checkpoint()
    async with receipts_client(log, principal) as c:
        yield c, log
    log.close()


@pytest.mark.parametrize(
    "url",
    [
        "/v1/log/checkpoint/99999999999999999999999",
        "/v1/log/checkpoint/-1",
        "/v1/log/proof/inclusion?tree_size=99999999999999999999999&index=0",
        "/v1/log/proof/inclusion?tree_size=5&index=99999999999999999999999",
        "/v1/log/proof/consistency?from=1&to=99999999999999999999999",
        "/v1/log/proof/consistency?from=4&to=3",
    ],
)
async def test_out_of_range_sizes_are_client_errors_not_500(
    served: tuple[httpx.AsyncClient, ReceiptLog], url: str
) -> None:
    c, _ = served
    r = await c.get(url, headers=AGENT1)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "Traceback" not in r.text


async def test_aci_route_carries_the_keyset_digest_header(
    served: tuple[httpx.AsyncClient, ReceiptLog],
) -> None:
    """ACI §7: every response carries X-ACI-Version and X-ACI-Keyset-Digest."""
    c, log = served
    r = await c.get("/v1/aci/receipts/rcpt_000001", headers=AGENT1)
    assert r.status_code == 200
    assert r.headers["x-aci-version"] == "aci/1"
    assert r.headers["x-aci-keyset-digest"] == log.signer.keyset_digest
    assert r.json()["workload_keyset_digest"] == log.signer.keyset_digest


async def test_other_agents_receipt_is_invisible_by_id_and_by_proof(
    served: tuple[httpx.AsyncClient, ReceiptLog],
) -> None:
    """By id: 404 as for an unknown id. By leaf index: hashes only, never receipt content."""
    c, log = served
    own, other = "rcpt_000001", "rcpt_000002"  # agent-1, agent-2
    for path in (f"/v1/receipts/{other}", f"/v1/receipts/{other}/bundle",
                 f"/v1/aci/receipts/{other}"):
        r = await c.get(path, headers=AGENT1)
        assert r.status_code == 404
        unknown = await c.get(path.replace(other, "rcpt_nope"), headers=AGENT1)
        assert r.json() == unknown.json()
    r = await c.get(
        "/v1/log/proof/inclusion", params={"receipt_id": other, "tree_size": 5}, headers=AGENT1
    )
    assert r.status_code == 404
    r = await c.get("/v1/log/proof/inclusion", params={"index": 2, "tree_size": 5},
                    headers=AGENT1)
    assert r.status_code == 200
    assert set(r.json()) == {"leaf_index", "tree_size", "hashes"}
    got = log.get(other)
    assert got is not None
    assert got.receipt.document["receipt_id"] not in r.text
    assert (await c.get(f"/v1/receipts/{own}", headers=AGENT1)).status_code == 200


async def test_damaged_storage_answers_503_json_not_a_bare_500(
    served: tuple[httpx.AsyncClient, ReceiptLog],
) -> None:
    c, log = served
    with log.store.db.transaction():
        log.store.db.execute("DELETE FROM tlog_node")
    r = await c.get("/v1/receipts/rcpt_000001", headers=AGENT1)
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "log_unavailable"
    assert "missing subtree" in r.json()["error"]["message"]

"""The wallet router through real HTTP semantics (httpx ASGI transport), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from teegate.ledger import Ledger
from teegate.ledger.http import Principal, wallet_router
from tests.ledger.conftest import assert_consistent


async def principal(request: Request) -> Principal:
    """Test authentication: ``Authorization: Bearer kind:id[:agent,agent]``."""
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        raise HTTPException(401)
    kind, _, rest = auth[7:].partition(":")
    pid, _, agents = rest.partition(":")
    return Principal(kind, pid, frozenset(a for a in agents.split(",") if a))


OPERATOR = {"authorization": "Bearer operator:op"}
OWNER = {"authorization": "Bearer owner:olga:alice,bob"}
ALICE = {"authorization": "Bearer agent:alice:alice"}
BOB = {"authorization": "Bearer agent:bob:bob"}
MALLORY = {"authorization": "Bearer agent:mallory:mallory"}


@pytest.fixture
async def client(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(wallet_router(ledger, principal))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://ledger.test") as c:
        yield c


async def test_deposit_needs_owner_or_operator(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/wallets/alice/deposits", json={"amount": 1000}, headers=ALICE)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    r = await client.post("/v1/wallets/carol/deposits", json={"amount": 1000}, headers=OWNER)
    assert r.status_code == 403  # olga does not own carol
    r = await client.post("/v1/wallets/alice/deposits", json={"amount": 1000}, headers=OWNER)
    assert r.status_code == 201
    assert r.json()["amount"] == 1000
    r = await client.post("/v1/wallets/bob/deposits", json={"amount": 5}, headers=OPERATOR)
    assert r.status_code == 201
    r = await client.get("/v1/wallets/alice", headers=ALICE)
    assert r.json()["available"] == 1000
    assert (await client.get("/v1/wallets/alice", headers=BOB)).status_code == 403


async def test_idempotency_key_deposits_once(client: httpx.AsyncClient,
                                             ledger: Ledger) -> None:
    h = {**OWNER, "Idempotency-Key": "topup-7"}
    first = await client.post("/v1/wallets/alice/deposits", json={"amount": 700}, headers=h)
    again = await client.post("/v1/wallets/alice/deposits", json={"amount": 700}, headers=h)
    assert first.json() == again.json()
    other = await client.post("/v1/wallets/alice/deposits", json={"amount": 701}, headers=h)
    assert other.status_code == 409
    assert "different request" in other.json()["error"]["message"]
    assert ledger.balance("alice").available == 700


@pytest.mark.parametrize("amount", [1.5, 10.0, True, 0, -1, None, "", "0", "-1", "1e3", " 10",
                                    "10 ", "1_000", "1.", "\u0661\u0660", "\uff11\uff10",
                                    "1.0000001", [10]])
async def test_bad_amounts_are_400(client: httpx.AsyncClient, amount: object) -> None:
    r = await client.post("/v1/wallets/alice/deposits", json={"amount": amount},
                          headers=OPERATOR)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "amount"


async def test_malformed_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/wallets/alice/deposits", content=b"{nope", headers=OPERATOR)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"


async def test_conversation_lifecycle_and_402(client: httpx.AsyncClient,
                                              ledger: Ledger) -> None:
    await client.post("/v1/wallets/alice/deposits", json={"amount": 100}, headers=OWNER)
    r = await client.post("/v1/conversations", json={"budget": 500}, headers=ALICE)
    assert r.status_code == 402
    assert r.headers["x-should-retry"] == "false"
    err = r.json()["error"]
    assert (err["type"], err["needed"], err["available"]) == ("insufficient_funds", 500, 100)
    assert "needed 500, available 100" in err["message"]
    r = await client.post("/v1/conversations", json={"budget": 60}, headers=ALICE)
    assert r.status_code == 201
    conv = r.json()
    assert (conv["agent"], conv["budget"], conv["state"]) == ("alice", 60, "open")
    r = await client.post("/v1/conversations", json={"agent": "alice", "budget": 1},
                          headers=BOB)
    assert r.status_code == 403
    h = ledger.hold("alice", 20, conversation=conv["id"])
    ledger.settle(h.id, 15, provider="near", model="m1",
                  usage={"prompt_tokens": 3, "completion_tokens": 4})
    assert (await client.post(f"/v1/conversations/{conv['id']}/close",
                              headers=BOB)).status_code == 404
    r = await client.post(f"/v1/conversations/{conv['id']}/close", headers=ALICE)
    assert r.json()["refunded"] == 45
    r = await client.post(f"/v1/conversations/{conv['id']}/close", headers=ALICE)
    assert r.status_code == 200  # derived key close:<id>: a retry returns the first result
    r = await client.get("/v1/wallets/alice", headers=ALICE)
    assert (r.json()["available"], r.json()["reserved"], r.json()["total"]) == (85, 0, 85)
    r = await client.get("/v1/wallets/alice/spend?group_by=model", headers=OWNER)
    assert r.json()["data"] == [{"key": "m1", "amount": 15, "calls": 1, "prompt_tokens": 3,
                                 "completion_tokens": 4}]
    r = await client.get("/v1/wallets/alice/spend?group_by=colour", headers=OWNER)
    assert r.status_code == 400
    assert (await client.get("/v1/conversations/conv_missing", headers=ALICE)).status_code == 404
    assert_consistent(ledger)


async def test_rewards_authorization(client: httpx.AsyncClient, ledger: Ledger) -> None:
    ledger.deposit("alice", 1000)
    ledger.deposit("pool:bounties", 50)
    conv = (await client.post("/v1/conversations", json={"budget": 10}, headers=ALICE)).json()
    url = f"/v1/conversations/{conv['id']}/rewards"
    body = {"rewards": [{"agent": "bob", "amount": 30}, {"agent": "carol", "amount": 20}]}
    assert (await client.post(url, json=body, headers=BOB)).status_code == 404
    r = await client.post(url, json={**body, "source": "pool:bounties"}, headers=ALICE)
    assert r.status_code == 403
    r = await client.post(url, json=body, headers={**ALICE, "Idempotency-Key": "r1"})
    assert r.status_code == 200
    assert [(t["credit"], t["amount"]) for t in r.json()["data"]] == [
        ("wallet:USD:bob", 30), ("wallet:USD:carol", 20)]
    await client.post(url, json=body, headers={**ALICE, "Idempotency-Key": "r1"})
    assert ledger.balance("bob").available == 30
    r = await client.post(url, json={"rewards": [{"agent": "bob", "amount": 60}],
                                     "source": "pool:bounties"}, headers=OPERATOR)
    assert r.status_code == 402
    assert ledger.balance("bob").available == 30
    r = await client.post(url, json={"rewards": [{"agent": "bob", "amount": 50}],
                                     "source": "pool:bounties"}, headers=OPERATOR)
    assert r.status_code == 200
    assert ledger.balance("bob").available == 80
    r = await client.post(url, json={"rewards": []}, headers=ALICE)
    assert r.status_code == 400


async def test_transfers_are_paged_and_private(client: httpx.AsyncClient,
                                               ledger: Ledger) -> None:
    for i in range(5):
        ledger.deposit("alice", 10 + i)
    r = await client.get("/v1/wallets/alice/transfers?limit=2", headers=ALICE)
    page = r.json()
    assert [t["amount"] for t in page["data"]] == [14, 13]
    assert page["has_more"] is True
    r = await client.get(f"/v1/wallets/alice/transfers?limit=10&before={page['next_before']}",
                         headers=ALICE)
    assert [t["amount"] for t in r.json()["data"]] == [12, 11, 10]
    assert r.json()["has_more"] is False
    assert (await client.get("/v1/wallets/alice/transfers",
                             headers=MALLORY)).status_code == 403
    assert (await client.get("/v1/wallets/alice/transfers?limit=x",
                             headers=ALICE)).status_code == 400


async def test_withdrawal_by_owner(client: httpx.AsyncClient, ledger: Ledger) -> None:
    ledger.deposit("bob", 100)
    assert (await client.post("/v1/wallets/bob/withdrawals", json={"amount": 40},
                              headers=BOB)).status_code == 403
    r = await client.post("/v1/wallets/bob/withdrawals", json={"amount": 40}, headers=OWNER)
    assert r.status_code == 201
    r = await client.post("/v1/wallets/bob/withdrawals", json={"amount": 61}, headers=OWNER)
    assert r.status_code == 402
    assert ledger.balance("bob").available == 60


async def test_one_key_limit_on_every_route_and_the_ttl_is_part_of_the_request(
        client: httpx.AsyncClient, ledger: Ledger) -> None:
    """A 200-character key (the documented limit) works on rewards too, whose scope (the
    caller and the conversation) once took the ledger's key past its own limit; reusing the
    key of an opening with another ttl is a conflict, not a replay."""
    ledger.deposit("alice", 1000)
    key = "k" * 200
    h = {**ALICE, "Idempotency-Key": key}
    conv = (await client.post("/v1/conversations", json={"budget": 100, "ttl": 60},
                              headers=h)).json()
    again = await client.post("/v1/conversations", json={"budget": 100, "ttl": 60}, headers=h)
    assert again.json() == conv
    other = await client.post("/v1/conversations", json={"budget": 100, "ttl": 3600},
                              headers=h)
    assert other.status_code == 409, other.text
    assert "different request" in other.json()["error"]["message"]
    url = f"/v1/conversations/{'c' * 190}"
    ledger.open_conversation("alice", 100, conversation_id="c" * 190)
    for path, body in ((f"/v1/conversations/{conv['id']}/rewards",
                        {"rewards": [{"agent": "bob", "amount": 7}]}),
                       (url + "/rewards", {"rewards": [{"agent": "bob", "amount": 7}]}),
                       (url + "/close", {}), ("/v1/wallets/alice/deposits", {"amount": 1})):
        headers = {**(OPERATOR if "deposits" in path else ALICE), "Idempotency-Key": key}
        first = await client.post(path, json=body, headers=headers)
        assert first.status_code in (200, 201), (path, first.text)
        assert (await client.post(path, json=body, headers=headers)).json() == first.json()
    r = await client.post("/v1/wallets/alice/deposits", json={"amount": 1},
                          headers={**OPERATOR, "Idempotency-Key": "k" * 201})
    assert r.status_code == 400
    assert ledger.balance("bob").available == 14
    assert ledger.balance("alice").reserved == 100  # the second conversation was closed
    assert_consistent(ledger)


async def test_rewards_after_close_and_to_unknown_agents_are_refused(
        client: httpx.AsyncClient, ledger: Ledger) -> None:
    class Agents:
        def has_agent(self, agent_id: str) -> bool:
            return agent_id in ("alice", "bob")

    ledger.agents = Agents()
    r = await client.post("/v1/wallets/mallory/deposits", json={"amount": 5}, headers=OPERATOR)
    assert r.status_code == 404
    assert "no agent 'mallory'" in r.json()["error"]["message"]
    assert (await client.post("/v1/wallets/alice/deposits", json={"amount": 500},
                              headers=OPERATOR)).status_code == 201
    conv = (await client.post("/v1/conversations", json={"budget": 100},
                              headers=ALICE)).json()
    url = f"/v1/conversations/{conv['id']}/rewards"
    r = await client.post(url, json={"rewards": [{"agent": "mallory", "amount": 5}]},
                          headers=ALICE)
    assert r.status_code == 404
    await client.post(f"/v1/conversations/{conv['id']}/close", headers=ALICE)
    r = await client.post(url, json={"rewards": [{"agent": "bob", "amount": 5}]},
                          headers=ALICE)
    assert r.status_code == 409, r.text
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance("bob").available == 0
    assert ledger.balance("alice").available == 500


async def test_amount_strings_use_the_cli_syntax(client: httpx.AsyncClient,
                                                 ledger: Ledger) -> None:
    """Digits are smallest units, a decimal point means currency units, in the CLI and in
    the API alike; JSON integers are smallest units."""
    for amount in (7, "7", "1.5", "0.000001", ".25"):
        r = await client.post("/v1/wallets/alice/deposits", json={"amount": amount},
                              headers=OPERATOR)
        assert r.status_code == 201, r.text
    assert ledger.balance("alice").available == 7 + 7 + 1_500_000 + 1 + 250_000
    r = await client.post("/v1/wallets/alice/deposits",
                          json={"amount": "1.5", "currency": "EUR"}, headers=OPERATOR)
    assert r.json()["amount"] == 150  # EUR has 2 decimals
    r = await client.post("/v1/wallets/alice/deposits",
                          json={"amount": "1.505", "currency": "EUR"}, headers=OPERATOR)
    assert r.status_code == 400
    assert "at most 2 decimals" in r.json()["error"]["message"]
    conv = (await client.post("/v1/conversations", json={"budget": "0.5"},
                              headers=ALICE)).json()
    assert conv["budget"] == 500_000
    r = await client.post(f"/v1/conversations/{conv['id']}/rewards",
                          json={"rewards": [{"agent": "bob", "amount": "0.1"}]}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert ledger.balance("bob").available == 100_000


async def test_amounts_beyond_the_ledger_maximum_are_400_amount_too_large(
        client: httpx.AsyncClient, ledger: Ledger) -> None:
    """On PostgreSQL this was a raw 'bigint out of range'; on SQLite a float balance."""
    from teegate.ledger.model import MAX_AMOUNT

    for amount in (2**62, 2**63, str(2**62), f"{2**62}.5"):
        r = await client.post("/v1/wallets/alice/deposits", json={"amount": amount},
                              headers=OPERATOR)
        assert r.status_code == 400, r.text
    r = await client.post("/v1/wallets/alice/deposits", json={"amount": MAX_AMOUNT},
                          headers=OPERATOR)
    assert r.status_code == 201
    r = await client.post("/v1/wallets/bob/deposits", json={"amount": 1}, headers=OPERATOR)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "amount_too_large"
    assert r.headers["x-should-retry"] == "false"
    assert ledger.balance("alice").available == MAX_AMOUNT
    assert_consistent(ledger)


async def test_a_reward_in_a_currency_the_ledger_does_not_keep_is_400(ledger: Ledger) -> None:
    """It was an unhandled LedgerError (a 500) before the route looked at any leg."""
    from teegate.ledger import open_ledger

    ledger.deposit("alice", 500, currency="EUR")
    c = ledger.open_conversation("alice", 100, currency="EUR")
    usd_only = open_ledger(ledger.backend.url, schema=getattr(ledger.backend, "schema", None))
    app = FastAPI()
    app.include_router(wallet_router(usd_only, principal))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://ledger.test") as client:
            r = await client.post(f"/v1/conversations/{c.id}/rewards", headers=ALICE,
                                  json={"rewards": [{"agent": "bob", "amount": 5}]})
    finally:
        usd_only.close()
    assert r.status_code == 400, r.text
    assert "does not keep" in r.json()["error"]["message"]
    assert ledger.balance("bob", "EUR").available == 0

"""Who may see and spend what, through a real gateway on loopback: an agent reaches only its
own wallet, conversations and receipts on every route; funding needs the owner or the
operator; the admin API needs the admin key; odd Authorization headers are 401, never 500."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.ledger import Ledger
from teegate.receipts import ReceiptLog
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
PRICE = {"input": 1_000_000, "output": 2_000_000}


@pytest.fixture
def gw(ledger: Ledger, log: ReceiptLog, make_gateway: GatewayFactory,
       plain_upstream: Server) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"], "prices": {"gpt-plain": PRICE}}],
        ledger=ledger, receipt_log=log)


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _agent_id(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def test_an_agent_reaches_only_its_own_wallet_conversations_and_receipts(
        gw: Gw, ledger: Ledger, log: ReceiptLog) -> None:
    base = gw.server.url
    alice, alice_key = _agent_id(gw), gw.key
    bob_key = gw.store.create_key("bob")
    ledger.deposit(alice, 100_000)
    ledger.deposit("bob", 100_000)
    # Alice makes a call (a receipt) and opens a conversation.
    raw = openai.OpenAI(base_url=gw.url, api_key=alice_key, max_retries=0
                        ).chat.completions.with_raw_response.create(
        model="gpt-plain", messages=MSG, max_tokens=20)
    rid = raw.headers["x-teegate-receipt"]
    wait(lambda: ledger.balance(alice).held == 0)
    log.flush()
    conv = httpx.post(base + "/v1/conversations", json={"budget": 1_000},
                      headers=_auth(alice_key))
    assert conv.status_code == 201
    cid = conv.json()["id"]

    bob = _auth(bob_key)
    # Wallet routes: forbidden, and they say nothing about Alice's money.
    for path in (f"/v1/wallets/{alice}", f"/v1/wallets/{alice}/transfers",
                 f"/v1/wallets/{alice}/spend"):
        r = httpx.get(base + path, headers=bob)
        assert r.status_code == 403, path
        assert "available" not in r.text
    assert httpx.post(f"{base}/v1/conversations", json={"agent": alice, "budget": 10},
                      headers=bob).status_code == 403
    for kind in ("deposits", "withdrawals"):
        for key in (bob_key, alice_key):  # neither another agent nor the agent itself
            assert httpx.post(f"{base}/v1/wallets/{alice}/{kind}", json={"amount": 5},
                              headers=_auth(key)).status_code == 403
    # Conversations: Bob cannot see, close or pay rewards from Alice's conversation.
    assert httpx.get(f"{base}/v1/conversations/{cid}", headers=bob).status_code == 404
    assert httpx.post(f"{base}/v1/conversations/{cid}/close", headers=bob).status_code == 404
    r = httpx.post(f"{base}/v1/conversations/{cid}/rewards", headers=bob,
                   json={"rewards": [{"agent": "bob", "amount": 10}]})
    assert r.status_code == 404
    r = httpx.post(f"{base}/v1/conversations/{cid}/rewards", headers=_auth(alice_key),
                   json={"rewards": [{"agent": "bob", "amount": 10}], "source": "pool:x"})
    assert r.status_code == 403  # only the operator pays from a pool
    # Bob cannot spend from Alice's conversation by naming it on a call.
    with pytest.raises(openai.BadRequestError):
        openai.OpenAI(base_url=gw.url, api_key=bob_key, max_retries=0).chat.completions.create(
            model="gpt-plain", messages=MSG, max_tokens=5,
            extra_headers={"X-Teegate-Conversation": cid})
    # Receipts: 404 exactly as for an unknown id, on every route that takes a receipt id.
    for path in (f"/v1/receipts/{rid}", f"/v1/receipts/{rid}/bundle",
                 f"/v1/aci/receipts/{rid}",
                 f"/v1/log/proof/inclusion?tree_size=1&receipt_id={rid}"):
        assert httpx.get(base + path, headers=bob).status_code == 404, path
        assert httpx.get(base + path, headers=_auth(alice_key)).status_code == 200, path
    # Nothing moved.
    wait(lambda: ledger.balance("bob").held == 0)
    assert ledger.balance("bob").available == 100_000
    assert ledger.conversation(cid).to_json()["state"] == "open"


def test_admin_api_needs_the_admin_key(gw: Gw) -> None:
    base = gw.server.url
    owner_key = gw.store.create_key("owner-z", kind="owner")
    for key in (gw.key, owner_key, "tgk_nope", "x" * 5000):
        for method, path in (("GET", "/admin/agents"), ("POST", "/admin/agents"),
                             ("DELETE", f"/admin/agents/{_agent_id(gw)}"),
                             ("POST", "/admin/providers/plain/reattest")):
            r = httpx.request(method, base + path, headers=_auth(key), json={"id": "evil"})
            assert r.status_code == 401, (key, path)
    assert gw.store.agent_by_key(gw.key) is not None  # not revoked


@pytest.mark.parametrize("value", [b"Bearer \xe9\xe9\xe9", b"Bearer caf\xc3\xa9", b"Basic x",
                                   b"Bearer", b"bearer x y"])
def test_odd_authorization_headers_are_401_not_500(gw: Gw, value: bytes) -> None:
    base = gw.server.url
    for method, path in (("GET", "/admin/agents"), ("GET", "/v1/wallets/x"),
                         ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, base + path, headers={b"authorization": value},
                          json={"model": "gpt-plain", "messages": []})
        assert r.status_code == 401, (value, path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_owner_acts_only_for_its_agents(gw: Gw, ledger: Ledger) -> None:
    base = gw.server.url
    owner_key = gw.store.create_key("owner-q", kind="owner")
    gw.store.create_key("bot-q", owner="owner-q")
    wait(lambda: (a := gw.gateway.keys.cached(owner_key)) is not None
          and "bot-q" in gw.gateway.keys.principal(a).agents)
    own = _auth(owner_key)
    assert httpx.post(f"{base}/v1/wallets/bot-q/deposits", json={"amount": 7},
                      headers=own).status_code == 201
    assert httpx.get(f"{base}/v1/wallets/bot-q", headers=own).json()["available"] == 7
    other = _agent_id(gw)
    assert httpx.get(f"{base}/v1/wallets/{other}", headers=own).status_code == 403
    assert httpx.post(f"{base}/v1/wallets/{other}/deposits", json={"amount": 7},
                      headers=own).status_code == 403
    admin = _auth(os.environ["TG_TEST_ADMIN"])
    assert httpx.get(f"{base}/v1/wallets/{other}", headers=admin).status_code == 200


def _shared_db(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url = os.environ.get("TEEGATE_TEST_PG")
    if not url:
        pytest.skip("TEEGATE_TEST_PG not set")
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_key_revoked_at_one_gateway_stops_working_at_another(
        make_gateway: GatewayFactory, plain_upstream: Server, tmp_path: Path,
        kind: str) -> None:
    url = _shared_db(kind, tmp_path)
    providers = [{"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
                  "models": ["gpt-plain"]}]
    a = make_gateway(providers, db=url)
    b = make_gateway(providers, db=url)
    admin = _auth(os.environ["TG_TEST_ADMIN"])
    agent = "rev-" + os.urandom(4).hex()
    key = httpx.post(a.server.url + "/admin/agents", json={"id": agent},
                     headers=admin).json()["api_key"]
    body = {"model": "gpt-plain", "messages": [{"role": "user", "content": "hi"}]}

    def status(gw: Gw) -> int:
        return httpx.post(gw.url + "/chat/completions", json=body,
                          headers=_auth(key)).status_code

    # Keys are stored only as sha256: the plaintext is nowhere in the table.
    stored = next(r for r in b.store.agents() if r.id == agent)
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(r) for r in b.store.agents())
    assert status(b) == 200  # a key created elsewhere works at once
    assert status(a) == 200
    assert httpx.delete(f"{a.server.url}/admin/agents/{agent}", headers=admin).status_code == 200
    assert status(a) == 401
    wait(lambda: status(b) == 401)  # within B's poll interval
    assert httpx.get(f"{b.server.url}/v1/models", headers=_auth(key)).status_code == 401
    row = next(r for r in b.store.agents() if r.id == agent)
    assert row.key_hash is None
    assert row.revoked_at is not None


@pytest.mark.parametrize("query", ["transfers?before=99999999999999999999999",
                                   "transfers?before=-1", "transfers?limit=0",
                                   "spend?since=nan", "spend?until=inf", "spend?group_by=x"])
def test_wallet_query_parameters_out_of_range_are_400(gw: Gw, query: str) -> None:
    r = httpx.get(f"{gw.server.url}/v1/wallets/{_agent_id(gw)}/{query}",
                  headers=_auth(gw.key))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("body", [{"id": "a:b"}, {"id": "a\x00b"}, {"id": 5}, {"id": ""},
                                  {"id": "x" * 129}, {"id": "ok", "owner": 5},
                                  {"id": "ok", "owner": "o:x"}, {"id": "ok", "kind": "operator"},
                                  [], "x"])
def test_admin_refuses_agent_ids_the_ledger_cannot_use(gw: Gw, body: object) -> None:
    admin = _auth(os.environ["TG_TEST_ADMIN"])
    r = httpx.post(gw.server.url + "/admin/agents", json=body, headers=admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert [a.id for a in gw.store.agents() if a.id != _agent_id(gw)] == []


@pytest.mark.usefixtures("raised_recursion_limit")
def test_deeply_nested_json_bodies_are_400(gw: Gw) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    admin = _auth(os.environ["TG_TEST_ADMIN"])
    for path, key in (("/admin/agents", admin), ("/v1/conversations", _auth(gw.key)),
                      (f"/v1/wallets/{_agent_id(gw)}/deposits", admin)):
        r = httpx.post(gw.server.url + path, content=deep, headers=key)
        assert r.status_code == 400, path


def test_every_route_keeps_the_body_limit(ledger: Ledger, make_gateway: GatewayFactory,
                                          plain_upstream: Server) -> None:
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                      gateway={"max_body_bytes": 4096}, ledger=ledger)
    big = b'{"budget": 5, "memo": "' + b"x" * 5000 + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield big[:3000]
        yield big[3000:]

    admin = _auth(os.environ["TG_TEST_ADMIN"])
    for path, key in (("/v1/conversations", _auth(gw.key)), ("/admin/agents", admin)):
        for content in (big, chunks()):
            r = httpx.post(gw.server.url + path, content=content, headers=key)
            assert r.status_code == 413, path
            assert r.json()["error"]["code"] == "request_too_large"
    ok = httpx.post(gw.server.url + "/admin/agents", json={"id": "small"}, headers=admin)
    assert ok.status_code == 201

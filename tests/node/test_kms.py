"""Signing keys from the dstack KMS, against a guest agent on a Unix socket speaking the
simulator's RPC shape (tests/node/fake_dstack.py): stable across restarts, bound to the app,
custody published and checkable, and no start without them."""

from __future__ import annotations

import secrets
from pathlib import Path

import coincurve
import httpx
import pytest
from dstack_sdk import DstackClient

from teegate.cli.node import build_node
from teegate.errors import ConfigError
from teegate.node import NodeKeys, verify_response_signature
from teegate.node.kms import check_kms_custody, kms_keys
from tests.node.fake_dstack import APP_ID, Agent, agent_app, serve_unix


def _root(agent: Agent) -> str:
    return bytes(agent.kms_root.public_key.format(compressed=True)).hex()


def test_keys_survive_a_restart_and_differ_per_app(dev_pki: Path) -> None:
    agent = Agent()
    with serve_unix(agent_app(dev_pki, agent)) as sock:
        first = kms_keys(DstackClient(sock))
        again = kms_keys(DstackClient(sock))  # a restarted node asks the same KMS
    for algo in ("ecdsa", "ed25519"):
        assert first.get(algo).signing_address == again.get(algo).signing_address
        assert first.get(algo).signing_address != NodeKeys().get(algo).signing_address
    assert [c["path"] for c in agent.key_calls] == [
        "teegate/node/signing-ecdsa/v1", "teegate/node/signing-ed25519/v1"] * 2
    other = Agent(app_key=coincurve.PrivateKey(b"\x07" * 32))  # another app identity
    with serve_unix(agent_app(dev_pki, other)) as sock:
        theirs = kms_keys(DstackClient(sock))
    assert theirs.get("ecdsa").signing_address != first.get("ecdsa").signing_address
    text = "a:b"
    s = first.get("ed25519")
    assert verify_response_signature(text, s.sign(text), s.signing_address, "ed25519")


def test_the_custody_chain_checks_to_the_kms_root(dev_pki: Path) -> None:
    agent = Agent()
    with serve_unix(agent_app(dev_pki, agent)) as sock:
        keys = kms_keys(DstackClient(sock))
    custody = keys.custody
    assert custody["provider"] == "dstack-kms"
    root, app = _root(agent), APP_ID.hex()
    for algo in ("ecdsa", "ed25519"):
        address = keys.get(algo).signing_address
        assert check_kms_custody(custody, signing_address=address, app_id=app,
                                 accepted_roots=[root]) is None
    ecdsa = keys.get("ecdsa").signing_address
    assert "not an accepted root" in str(check_kms_custody(
        custody, signing_address=ecdsa, app_id=app, accepted_roots=["02" + "11" * 32]))
    assert "not an accepted root" in str(check_kms_custody(  # another app's release
        custody, signing_address=ecdsa, app_id="cd" * 20, accepted_roots=[root]))
    assert "lists no key" in str(check_kms_custody(
        custody, signing_address=NodeKeys().get("ecdsa").signing_address, app_id=app,
        accepted_roots=[root]))
    # a chain copied onto another key does not make that key the released one
    stranger = NodeKeys().get("ecdsa").signing_address
    forged = {"provider": "dstack-kms", "keys": [
        {**custody["keys"][0], "public_key": stranger}]}
    assert "not the signing key" in str(check_kms_custody(
        forged, signing_address=stranger, app_id=app, accepted_roots=[root]))
    assert check_kms_custody({"provider": "generated"}, signing_address=ecdsa, app_id=app,
                             accepted_roots=[root]) == "key custody is not dstack-kms"


async def test_under_dstack_the_node_signs_with_kms_keys_and_says_so(dev_pki: Path) -> None:
    agent = Agent()
    with serve_unix(agent_app(dev_pki, agent)) as sock:
        addresses = []
        for _ in range(2):  # two starts of the node
            app, _src = build_node(engine="builtin", tee="dstack", gpus=0,
                                   dstack_endpoint=sock)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
                nonce = secrets.token_hex(32)
                rep = (await c.get("/v1/attestation/report", params={"nonce": nonce})).json()
            addresses.append(rep["signing_address"])
            assert rep["info"]["key_custody"]["provider"] == "dstack-kms"
            assert check_kms_custody(rep["info"]["key_custody"],
                                     signing_address=rep["signing_address"],
                                     app_id=rep["info"]["app_id"],
                                     accepted_roots=[_root(agent)]) is None
        assert addresses[0] == addresses[1]
        memory, _ = build_node(engine="builtin", tee="dstack", gpus=0, dstack_endpoint=sock,
                               keys="memory")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=memory),
                                     base_url="http://node") as c:
            rep = (await c.get("/v1/attestation/report")).json()
        assert rep["info"]["key_custody"]["provider"] == "generated"
        assert rep["signing_address"] != addresses[0]


def test_no_kms_key_no_start(dev_pki: Path, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def refuse(request: object) -> JSONResponse:
        return JSONResponse({"error": "KMS not enabled for this app"}, 500)

    broken = Starlette(routes=[Route("/GetKey", refuse, methods=["POST"])])
    with serve_unix(broken) as sock, pytest.raises(ConfigError, match="GetKey"):
        build_node(engine="builtin", tee="dstack", gpus=0, dstack_endpoint=sock)
    with pytest.raises(ConfigError, match="--keys kms needs the dstack source"):
        build_node(engine="builtin", tee="dev-tdx", gpus=0, pki_dir=dev_pki, keys="kms")

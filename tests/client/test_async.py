from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.client import (
    AsyncVerifiedClient,
    AttestationRejectedError,
    ClientHaltedError,
    ResponseSignatureError,
)
from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app
from teegate.sim import development_policy
from tests.client.proxy import Proxy
from tests.node.serve import serve

MSG = [{"role": "user", "content": "async and attested"}]


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[tuple[str, NodeKeys]]:
    keys = NodeKeys()
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine(), keys=keys)) as url:
        yield url, keys


async def test_async_happy_path(node: tuple[str, NodeKeys], dev_pki: Path) -> None:
    async with AsyncVerifiedClient(node[0], policy=development_policy(dev_pki),
                                   signing_algo="ed25519") as client:
        r = await client.chat.completions.create(model="m", messages=MSG, max_tokens=3)
        assert r.usage is not None
        assert r.usage.completion_tokens == 3
        assert client.signing_address == node[1].get("ed25519").signing_address
        stream = await client.chat.completions.create(model="m", messages=MSG, stream=True)
        chunks = [c async for c in stream]
        assert chunks
        assert client.halted is None


async def test_async_tampering_halts(node: tuple[str, NodeKeys], dev_pki: Path) -> None:
    proxy = Proxy(node[0])
    proxy.tamper = True
    with serve(proxy.app) as via:
        async with AsyncVerifiedClient(via, policy=development_policy(dev_pki)) as client:
            stream = await client.chat.completions.create(model="m", messages=MSG, stream=True)
            with pytest.raises(ResponseSignatureError):
                async for _ in stream:
                    pass
            with pytest.raises(ClientHaltedError):
                await client.chat.completions.create(model="m", messages=MSG)
    assert proxy.chat_requests == 1


async def test_async_default_policy_rejects_dev_node(node: tuple[str, NodeKeys]) -> None:
    async with AsyncVerifiedClient(node[0], policy=Policy.default()) as client:
        with pytest.raises(AttestationRejectedError):
            await client.attest()

"""Streams: nothing unsigned may reach the SDK after the signature comment, and the client
verifies only the routes it knows how to verify."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.client import (
    AsyncVerifiedClient,
    AttestationRejectedError,
    ResponseSignatureError,
    VerifiedClient,
)
from teegate.client.verified import _Scanner
from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app
from teegate.sim import development_policy
from tests.client.proxy import Proxy
from tests.node.serve import serve

MSG = [{"role": "user", "content": "guard the stream"}]
EVIL = b"data: " + json.dumps({
    "id": "chatcmpl-evil", "object": "chat.completion.chunk", "created": 1, "model": "m",
    "choices": [{"index": 0, "delta": {"content": " INJECTED"}, "finish_reason": None}],
}).encode() + b"\n\n"
SIG = b': teegate-signature {"text":"a:b","signature":"00","signing_address":"x",' \
      b'"signing_algo":"ecdsa"}\n\n'


@pytest.fixture(scope="module")
def dev_policy(dev_pki: Path) -> Policy:
    return development_policy(dev_pki)


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[tuple[str, NodeKeys]]:
    keys = NodeKeys()
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine(), keys=keys)) as url:
        yield url, keys


def test_event_injected_after_signature_is_refused(node: tuple[str, NodeKeys],
                                                  dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy) as client:
        proxy.inject_after_signature = EVIL
        seen: list[str] = []

        def consume() -> None:
            for c in client.chat.completions.create(model="m", messages=MSG, stream=True):
                seen.extend(ch.delta.content or "" for ch in c.choices)

        with pytest.raises(ResponseSignatureError, match="after the signature"):
            consume()
        assert "INJECTED" not in "".join(seen)
        assert client.halted is not None


async def test_async_event_injected_after_signature_is_refused(
    node: tuple[str, NodeKeys], dev_policy: Policy
) -> None:
    proxy = Proxy(node[0])
    with serve(proxy.app) as via:
        async with AsyncVerifiedClient(via, policy=dev_policy) as client:
            proxy.inject_after_signature = EVIL
            seen: list[str] = []

            async def consume() -> None:
                stream = await client.chat.completions.create(model="m", messages=MSG,
                                                              stream=True)
                async for c in stream:
                    seen.extend(ch.delta.content or "" for ch in c.choices)

            with pytest.raises(ResponseSignatureError, match="after the signature"):
                await consume()
            assert "INJECTED" not in "".join(seen)


def test_blank_lines_after_signature_are_harmless(node: tuple[str, NodeKeys],
                                                  dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy) as client:
        proxy.inject_after_signature = b"\n"
        assert list(client.chat.completions.create(model="m", messages=MSG, stream=True))
        assert client.halted is None


@pytest.mark.parametrize("tail", [
    EVIL + b"data: [DONE]\n\n",
    b"event: x\ndata: [DONE]\n\n",
    b"data: [DONE]x\n\n",
    b"data: [DO",
])
def test_scanner_refuses_anything_but_done_after_the_comment(tail: bytes) -> None:
    # Fed one byte at a time and all at once: the split must not matter.
    for pieces in ([SIG + tail], [bytes([b]) for b in SIG + tail]):
        s = _Scanner()

        def run(s: _Scanner = s, pieces: list[bytes] = pieces) -> None:
            for p in pieces:
                s.feed(p)
            s.finish()

        with pytest.raises(ResponseSignatureError):
            run()


@pytest.mark.parametrize("tail", [b"", b"data: [DONE]\n\n", b"\r\ndata: [DONE]\r\n\r\nx",
                                  b"data: [DONE]\n\ndata: late\n\n"])
def test_scanner_accepts_done_or_nothing_after_the_comment(tail: bytes) -> None:
    for pieces in ([SIG + tail], [bytes([b]) for b in SIG + tail]):
        s = _Scanner()
        found = [f for p in pieces if (f := s.feed(p)) is not None]
        s.finish()
        assert len(found) == 1
        assert found[0].signature is not None


def test_unverifiable_routes_are_not_sent(node: tuple[str, NodeKeys],
                                          dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy, max_retries=0) as c:
        assert c.models.list().data  # metadata: allowed
        before = proxy.requests
        with pytest.raises(ResponseSignatureError, match="not verified"):
            c.openai.completions.create(model="m", prompt="hi")
        with pytest.raises(ResponseSignatureError, match="not verified"):
            c.openai.embeddings.create(model="m", input="hi")
        assert proxy.requests == before  # neither request went out
        assert c.halted is None  # a usage error, not a failed verification


def test_attestation_is_not_trusted_past_its_validity(node: tuple[str, NodeKeys],
                                                      dev_policy: Policy) -> None:
    """The verdict is good until its not_after (certificates, collateral); after that the
    client attests again before it sends anything, and here the old evidence no longer
    verifies, so nothing is sent."""
    proxy = Proxy(node[0])
    clock = [int(time.time())]
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy,
                                                 now=lambda: clock[0]) as client:
        client.chat.completions.create(model="m", messages=MSG)
        verdict = client.verdict
        assert verdict is not None
        assert verdict.not_after is not None
        sent = proxy.chat_requests
        clock[0] = verdict.not_after + 1
        with pytest.raises(AttestationRejectedError):
            client.chat.completions.create(model="m", messages=MSG)
        assert proxy.chat_requests == sent

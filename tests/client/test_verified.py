from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from teegate.attest.policy import Policy, TdxPolicy
from teegate.client import (
    AttestationRejectedError,
    ClientHaltedError,
    ResponseSignatureError,
    VerifiedClient,
    fetch_and_verify_report,
)
from teegate.node import BuiltinEngine, DevSnpSource, DevTdxSource, NodeKeys, create_node_app
from teegate.sim import development_policy
from teegate.sim.tdx import DEFAULT_MRTD
from tests.client.proxy import Proxy
from tests.node.serve import bound_socket, serve

MSG = [{"role": "user", "content": "is this attested"}]


@pytest.fixture(scope="module")
def dev_policy(dev_pki: Path) -> Policy:
    return development_policy(dev_pki)


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[tuple[str, NodeKeys]]:
    keys = NodeKeys()
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine(), keys=keys)) as url:
        yield url, keys


@pytest.mark.parametrize("algo", ["ecdsa", "ed25519"])
def test_happy_path_plain_and_stream(node: tuple[str, NodeKeys], dev_policy: Policy,
                                     algo: str) -> None:
    url, keys = node
    with VerifiedClient(url, policy=dev_policy, signing_algo=algo) as client:
        r = client.chat.completions.create(model="teegate-builtin", messages=MSG, max_tokens=5)
        assert r.usage is not None
        assert r.usage.completion_tokens == 5
        assert client.verdict is not None
        assert client.verdict.accepted
        assert client.verdict.development
        assert client.signing_address == keys.get(algo).signing_address
        chunks = list(client.chat.completions.create(
            model="teegate-builtin", messages=MSG, max_tokens=5, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == r.choices[0].message.content
        assert client.halted is None


def test_tampered_plain_response_raises_and_halts(node: tuple[str, NodeKeys],
                                                  dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy) as client:
        client.chat.completions.create(model="m", messages=MSG)  # honest first
        proxy.tamper = True
        with pytest.raises(ResponseSignatureError, match="do not match"):
            client.chat.completions.create(model="m", messages=MSG)
        sent = proxy.chat_requests
        proxy.tamper = False
        with pytest.raises(ClientHaltedError):
            client.chat.completions.create(model="m", messages=MSG)
        assert proxy.chat_requests == sent  # nothing more was sent


def test_tampered_stream_raises_before_done(node: tuple[str, NodeKeys],
                                            dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    proxy.tamper = True
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy) as client:
        stream = client.chat.completions.create(model="m", messages=MSG, stream=True)
        with pytest.raises(ResponseSignatureError):
            for _ in stream:
                pass
        with pytest.raises(ClientHaltedError):
            client.models.list()


def test_signatures_fetched_by_id_when_stripped(node: tuple[str, NodeKeys],
                                                dev_policy: Policy) -> None:
    proxy = Proxy(node[0])
    proxy.strip_signatures = True
    with serve(proxy.app) as via, VerifiedClient(via, policy=dev_policy) as client:
        r = client.chat.completions.create(model="m", messages=MSG)
        assert r.choices[0].message.content
        chunks = list(client.chat.completions.create(model="m", messages=MSG, stream=True))
        assert chunks
        assert client.halted is None
        # Stripped *and* tampered: the signature by id does not cover the altered bytes.
        proxy.tamper = True
        with pytest.raises(ResponseSignatureError):
            client.chat.completions.create(model="m", messages=MSG)


def test_node_restarted_with_a_new_key(dev_pki: Path, dev_policy: Policy) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine()), port) as url:
        client = VerifiedClient(url, policy=dev_policy, max_retries=2)
        client.chat.completions.create(model="m", messages=MSG)
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine()), port) as url2:
        assert url2 == url
        with pytest.raises(ResponseSignatureError, match="not by the attested key"):
            client.chat.completions.create(model="m", messages=MSG)
        with pytest.raises(ClientHaltedError):
            client.chat.completions.create(model="m", messages=MSG)
    client.close()


def test_wrong_measurement_in_policy_sends_nothing(node: tuple[str, NodeKeys],
                                                   dev_policy: Policy) -> None:
    wrong = dataclasses.replace(dev_policy, tdx=TdxPolicy(mrtd=frozenset({"ab" * 48})))
    proxy = Proxy(node[0])
    with serve(proxy.app) as via, VerifiedClient(via, policy=wrong) as client:
        with pytest.raises(AttestationRejectedError) as info:
            client.chat.completions.create(model="m", messages=MSG)
        assert info.value.verdict is not None
        assert not info.value.verdict.accepted
        with pytest.raises(ClientHaltedError):
            client.chat.completions.create(model="m", messages=MSG)
    assert proxy.chat_requests == 0
    right = dataclasses.replace(dev_policy, tdx=TdxPolicy(mrtd=frozenset({DEFAULT_MRTD.hex()})))
    with VerifiedClient(node[0], policy=right) as client:
        assert client.attest().accepted


def test_default_policy_rejects_development_node(node: tuple[str, NodeKeys]) -> None:
    with VerifiedClient(node[0], policy=Policy.default()) as client, pytest.raises(
        AttestationRejectedError
    ):
        client.chat.completions.create(model="m", messages=MSG)


def test_fetch_and_verify_report(node: tuple[str, NodeKeys], dev_policy: Policy,
                                 dev_pki: Path) -> None:
    v = fetch_and_verify_report(node[0], policy=dev_policy)
    assert v.accepted
    assert not fetch_and_verify_report(node[0], policy=Policy.default()).accepted
    with serve(create_node_app(DevSnpSource(dev_pki), BuiltinEngine())) as snp:
        assert fetch_and_verify_report(snp, policy=dev_policy, signing_algo="ed25519").accepted


def test_plain_openai_errors_still_surface(node: tuple[str, NodeKeys],
                                           dev_policy: Policy) -> None:
    with VerifiedClient(node[0], policy=dev_policy) as client:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[])
        assert client.halted is None

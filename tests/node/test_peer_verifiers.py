"""The peers' published checks (tests/node/peer_checks.py) pointed at ``teegate node``, plain
and streamed, as NEAR AI's and private-ml-sdk's users run them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from teegate.node import BuiltinEngine, DevTdxSource, NodeKeys, create_node_app
from tests.node import peer_checks as peer
from tests.node.serve import serve

MODEL = "teegate-builtin"


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[str]:
    with serve(create_node_app(DevTdxSource(dev_pki), BuiltinEngine(), keys=NodeKeys())) as url:
        yield url


def _body(stream: bool) -> str:
    # the examples' request: json.dumps of a dict, sent as the exact text hashed
    return json.dumps({"model": MODEL, "messages": [{"role": "user",
                                                     "content": "Hello, how are you?"}],
                       "stream": stream, "max_tokens": 1})


def _chat(url: str, stream: bool, headers: dict[str, str] | None = None
          ) -> tuple[str, str, str]:
    """(request body, response text as hashed, chat id), the examples' way."""
    body = _body(stream)
    r = requests.post(f"{url}/v1/chat/completions", data=body, stream=stream, timeout=30,
                      headers={"Content-Type": "application/json",
                               "Authorization": "Bearer unused", **(headers or {})})
    if stream:
        text, chat_id = peer.stream_as_they_read_it(r)
        assert chat_id is not None
        return body, text, chat_id
    return body, r.text, r.json()["id"]


def _signature(url: str, chat_id: str) -> dict[str, str]:
    sig: dict[str, str] = requests.get(
        f"{url}/v1/signature/{chat_id}?model={MODEL}&signing_algo=ecdsa", timeout=30).json()
    return sig


@pytest.mark.parametrize("reading", ["near", "pml"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_the_peers_signature_checks_pass(node: str, reading: str, stream: bool) -> None:
    body, text, chat_id = _chat(node, stream)
    verdict = peer.check_chat(_signature(node, chat_id), body, text, reading=reading)
    assert verdict == peer.SignatureVerdict(True, True, True)


def test_a_stream_the_gateway_asked_to_sign_inline_still_checks_once_the_comment_is_out(
    node: str,
) -> None:
    """A verifier behind a gateway-style caller (x-teegate-signing-algo) receives the inline
    comment too; the text by id covers every byte but that comment."""
    body, text, chat_id = _chat(node, True, {"x-teegate-signing-algo": "ecdsa"})
    assert ": teegate-signature " in text
    without = "".join(line + "\n" for line in text.split("\n")[:-1]
                      if not line.startswith(": teegate-signature "))
    without = without.replace("\n\n\n", "\n\n")  # the comment's own blank line
    assert peer.check_chat(_signature(node, chat_id), body, without, reading="near").ok


def test_a_teegate_nonce_text_is_misread_by_the_peers(node: str) -> None:
    """Documented limitation (docs/node.md): with ``x-teegate-nonce`` (only teegate's
    gateway sends it) the text is ``req:resp:nonce``; NEAR reads a 3-field text as
    ``model:req:resp`` and private-ml-sdk refuses it. Direct clients never send the nonce."""
    body, text, chat_id = _chat(node, False, {"x-teegate-nonce": "ab" * 32})
    sig = _signature(node, chat_id)
    near = peer.check_chat(sig, body, text, reading="near")
    assert near.signature_valid
    assert not near.request_hash_matches
    with pytest.raises(ValueError, match="too many values"):
        peer.check_chat(sig, body, text, reading="pml")

"""The node's embeddings, legacy completions and ``GET /v1/models/{id}``: signed exactly as
chat (headers over the exact bytes, by id for completions), the built-in engine's answers
deterministic, and the real openai SDK reads them."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from teegate.node import (
    BuiltinEngine,
    DevTdxSource,
    HttpEngine,
    NodeKeys,
    create_node_app,
    signature_text,
    verify_response_signature,
)
from teegate.node.engine import embed, engine_app
from tests.node.serve import serve


@pytest.fixture(scope="module")
def keys() -> NodeKeys:
    return NodeKeys()


@pytest.fixture(scope="module")
def url(dev_pki: Path, keys: NodeKeys) -> Iterator[str]:
    engine = BuiltinEngine(("teegate-builtin", "org/embed-1"))
    with serve(create_node_app(DevTdxSource(dev_pki), engine, keys=keys)) as u:
        yield u


def _signed(r: httpx.Response, body: bytes, keys: NodeKeys) -> None:
    h = r.headers
    assert h["x-teegate-text"] == signature_text(body, r.content)
    assert h["x-teegate-signing-address"] == keys.get("ecdsa").signing_address
    assert verify_response_signature(h["x-teegate-text"], h["x-teegate-signature"],
                                     h["x-teegate-signing-address"], "ecdsa")


def test_embeddings_signed_and_deterministic(url: str, keys: NodeKeys) -> None:
    body = json.dumps({"model": "org/embed-1", "input": ["a b", "c"],
                       "encoding_format": "base64", "dimensions": 8}).encode()
    r = httpx.post(url + "/v1/embeddings", content=body)
    assert r.status_code == 200
    _signed(r, body, keys)
    doc = r.json()
    assert doc["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    first = struct.unpack("<8f", base64.b64decode(doc["data"][0]["embedding"]))
    assert list(first) == embed("a b", 8)
    assert math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-5)
    again = httpx.post(url + "/v1/embeddings", content=body).json()
    assert again["data"] == doc["data"]  # same input, same vectors
    bad = httpx.post(url + "/v1/embeddings", json={"model": "m", "input": [True]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "input"


def test_completions_plain_signed_by_headers_and_by_id(url: str, keys: NodeKeys) -> None:
    body = json.dumps({"model": "teegate-builtin", "prompt": "one two three",
                       "max_tokens": 4}).encode()
    r = httpx.post(url + "/v1/completions", content=body)
    assert r.status_code == 200
    _signed(r, body, keys)
    doc = r.json()
    assert doc["object"] == "text_completion"
    assert doc["id"].startswith("cmpl-")
    assert doc["usage"]["prompt_tokens"] == 3
    assert len(doc["choices"][0]["text"].split()) == doc["usage"]["completion_tokens"] <= 4
    by_id = httpx.get(f"{url}/v1/signature/{doc['id']}").json()
    assert by_id["text"] == r.headers["x-teegate-text"]


def test_completions_stream_signed_before_done(url: str, keys: NodeKeys) -> None:
    body = json.dumps({"model": "teegate-builtin", "prompt": "one two three", "stream": True,
                       "max_tokens": 4, "stream_options": {"include_usage": True}}).encode()
    with httpx.stream("POST", url + "/v1/completions", content=body,
                      headers={"x-teegate-signing-algo": "ecdsa"}) as r:
        raw = r.read()
    marker = b": teegate-signature "
    pos = raw.index(marker)
    sig = json.loads(raw[pos + len(marker): raw.index(b"\n\n", pos)])
    assert sig["text"] == signature_text(body, raw[:pos])
    assert verify_response_signature(sig["text"], sig["signature"], sig["signing_address"],
                                     "ecdsa")
    assert raw.endswith(b"data: [DONE]\n\n")
    plain = httpx.post(url + "/v1/completions", json={
        "model": "teegate-builtin", "prompt": "one two three", "max_tokens": 4}).json()
    events = [json.loads(e[6:]) for e in raw[:pos].split(b"\n\n") if e.startswith(b"data: {")]
    assert "".join(c["choices"][0]["text"] for c in events if c["choices"]) == (
        plain["choices"][0]["text"])
    assert events[-1]["usage"] == plain["usage"]


def test_openai_sdk_reads_the_new_endpoints(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    e = client.embeddings.create(model="org/embed-1", input="hello")  # base64 by default
    assert e.data[0].embedding == pytest.approx(embed("hello", 16))
    c = client.completions.create(model="teegate-builtin", prompt="hello", max_tokens=3)
    assert c.choices[0].text
    text = "".join(ch.choices[0].text for ch in client.completions.create(
        model="teegate-builtin", prompt="hello", max_tokens=3, stream=True) if ch.choices)
    assert text == c.choices[0].text
    assert client.models.retrieve("org/embed-1").id == "org/embed-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    client.close()


async def test_http_engine_forwards_the_new_paths() -> None:
    """HttpEngine posts to the engine's own /completions and /embeddings."""
    with serve(engine_app(BuiltinEngine(("m",)))) as u:
        eng = HttpEngine(u + "/v1")
        try:
            got = await eng.embeddings(b'{"model":"m","input":"x","dimensions":2}', {})
            assert got.status == 200
            assert json.loads(got.body or b"")["data"][0]["embedding"] == embed("x", 2)
            got = await eng.completions(b'{"model":"m","prompt":"x"}', {})
            assert json.loads(got.body or b"")["object"] == "text_completion"
        finally:
            await eng.aclose()

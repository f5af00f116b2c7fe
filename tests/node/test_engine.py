from __future__ import annotations

import json
from typing import Any

import pytest

from teegate.node.engine import BuiltinEngine, HttpEngine, count_tokens
from tests.node.serve import serve
from tests.node.upstream import PLAIN, SEEN, SSE_PIECES, fixed_upstream


def _req(**kw: Any) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "one two  three"}], **kw}
    return json.dumps(body).encode()


async def _collect(engine: Any, body: bytes) -> tuple[int, bytes]:
    reply = await engine.chat(body, {})
    if reply.stream is None:
        return reply.status, reply.body
    return reply.status, b"".join([c async for c in reply.stream])


async def test_plain_usage_counts_words_and_honours_max_tokens() -> None:
    eng = BuiltinEngine()
    status, body = await _collect(eng, _req(max_tokens=2))
    data = json.loads(body)
    assert status == 200
    content = data["choices"][0]["message"]["content"]
    assert count_tokens(content) == 2
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")


async def test_deterministic_text_fresh_ids() -> None:
    eng = BuiltinEngine()
    a = json.loads((await _collect(eng, _req()))[1])
    b = json.loads((await _collect(eng, _req()))[1])
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    assert a["id"] != b["id"]
    n = a["usage"]["completion_tokens"]
    assert 5 <= n <= 24
    assert a["choices"][0]["finish_reason"] == "stop"
    # A limit above the natural length changes nothing.
    c = json.loads((await _collect(eng, _req(max_tokens=100)))[1])
    assert c["choices"][0]["message"] == a["choices"][0]["message"]


async def test_stream_format_with_usage_chunk() -> None:
    eng = BuiltinEngine()
    status, raw = await _collect(
        eng, _req(stream=True, max_tokens=3, stream_options={"include_usage": True}))
    assert status == 200
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    chunks = [json.loads(e[len(b"data: "):]) for e in events[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert count_tokens(text) == 3
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3,
                                   "total_tokens": 6}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_stream_without_include_usage_has_no_usage() -> None:
    _, raw = await _collect(BuiltinEngine(), _req(stream=True))
    assert b'"usage"' not in raw


@pytest.mark.parametrize("body", [
    b"not json", b"[]", json.dumps({"model": "m", "messages": []}).encode(),
    _req(max_tokens=0), _req(max_tokens="3"), json.dumps({"messages": [{"role": "user"}]}).encode(),
])
async def test_bad_requests_are_openai_400(body: bytes) -> None:
    status, raw = await _collect(BuiltinEngine(), body)
    assert status == 400
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}


async def test_models_list() -> None:
    reply = await BuiltinEngine(("a", "b")).models()
    data = json.loads(reply.body or b"")
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["a", "b"]


async def test_http_engine_forwards_bytes_exactly() -> None:
    """HttpEngine hands back the upstream's exact bytes, plain and streamed (odd spacing,
    odd chunk boundaries), and forwards the request body unchanged."""
    with serve(fixed_upstream()) as url:
        eng = HttpEngine(url + "/v1")
        try:
            status, got = await _collect(eng, b'{"x" :  1}')
            assert (status, got) == (200, PLAIN)
            assert SEEN[-1] == b'{"x" :  1}'
            status, got = await _collect(eng, b'{"stream": true}')
            assert (status, got) == (200, b"".join(SSE_PIECES))
            models = await eng.models()
            assert models.body == b'{"object":"list","data":[]}'
        finally:
            await eng.aclose()


async def test_http_engine_unreachable_is_upstream_error() -> None:
    from teegate.errors import UpstreamError
    from tests.node.serve import bound_socket

    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    eng = HttpEngine(f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamError):
        await eng.chat(_req(), {})
    await eng.aclose()

"""The SSE relay forwards only what the node signed: the signature comment must cover every
event before ``[DONE]``, and nothing but blank lines and ``[DONE]`` may follow it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest

from teegate.gateway.streaming import SseRelay, StreamFailure
from teegate.node import NodeKeys
from teegate.node.signatures import verify_response_signature

REQUEST = b'{"model":"m","messages":[],"stream":true}'
EVENTS = [b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
          b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
          b"\n\n"]
KEYS = NodeKeys()
SIGNER = KEYS.get("ecdsa")


def _check(sig: dict[str, Any], expected: str) -> str | None:
    if sig["text"] != expected:
        return "text mismatch"
    ok = verify_response_signature(sig["text"], sig["signature"], SIGNER.signing_address,
                                   "ecdsa")
    return None if ok else "bad signature"


def _comment(signed: bytes) -> bytes:
    sig = KEYS.sign_exchange("ecdsa", REQUEST, signed).to_json()
    return b": teegate-signature " + json.dumps(sig).encode() + b"\n\n"


def _relay() -> SseRelay:
    return SseRelay(hashlib.sha256(REQUEST).hexdigest(), _check, require_signature=True,
                    strip_usage=False)


def _run(relay: SseRelay, stream: bytes, chunk: int) -> bytes:
    out = b"".join(relay.feed(stream[i:i + chunk]) for i in range(0, len(stream), chunk))
    return out + relay.finish()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_signed_stream_passes_whatever_the_chunking(chunk: int) -> None:
    body = b"".join(EVENTS)
    relay = _relay()
    out = _run(relay, body + _comment(body) + b"\n\ndata: [DONE]\n\n", chunk)
    assert relay.verified
    assert relay.done
    assert out == body + b"\n\ndata: [DONE]\n\n"  # the comment is not forwarded
    assert relay.usage == {"prompt_tokens": 1, "completion_tokens": 1}


def test_event_after_signature_is_refused() -> None:
    body = EVENTS[0]
    relay = _relay()
    with pytest.raises(StreamFailure, match="data after its response signature") as e:
        _run(relay, body + _comment(body) + EVENTS[1] + b"data: [DONE]\n\n", 4096)
    assert e.value.code == "response_signature_invalid"
    assert not relay.rejected  # the check passed; the relay refused the extra event


def test_second_signature_comment_is_refused() -> None:
    body = b"".join(EVENTS)
    relay = _relay()
    with pytest.raises(StreamFailure, match="second signature"):
        _run(relay, body + _comment(body) + _comment(body) + b"data: [DONE]\n\n", 4096)


def test_altered_event_fails_the_check() -> None:
    body = b"".join(EVENTS)
    relay = _relay()
    with pytest.raises(StreamFailure, match="text mismatch"):
        _run(relay, body.replace(b"hi", b"ho") + _comment(body) + b"data: [DONE]\n\n", 4096)
    assert relay.rejected


def test_done_without_signature_is_refused() -> None:
    relay = _relay()
    with pytest.raises(StreamFailure) as e:
        _run(relay, b"".join(EVENTS) + b"data: [DONE]\n\n", 4096)
    assert e.value.code == "response_signature_missing"


def test_an_event_that_never_ends_is_a_broken_stream() -> None:
    """Bytes are held until their event ends: an endless event must not grow memory."""
    from teegate.errors import UpstreamError
    from teegate.gateway.streaming import MAX_EVENT

    relay = _relay()
    assert relay.feed(EVENTS[0]) == EVENTS[0]
    relay.feed(b"data: " + b"x" * (MAX_EVENT - 1024))  # large, but within the limit
    with pytest.raises(UpstreamError, match="SSE event exceeds"):
        relay.feed(b"x" * 2048)


@pytest.mark.parametrize(("event", "counted"), [
    (b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
     b'"logprobs":null,"finish_reason":null}]}', False),  # OpenAI's first chunk
    (b'{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}', False),
    (b'{"choices":[{"index":0,"delta":{"role":"assistant"}}]}', False),
    (b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}', False),
    (b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}', False),
    (b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}', True),
    (b'{"choices":[{"index":0,"delta":{"content": "", "reasoning_content":"hm"}}]}', True),
    (b'{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,'
     b'"function":{"arguments":"{\\"a"}}]}}]}', True),
    (b'{"choices":[{"index":0,"text":"hi","finish_reason":null}]}', True),  # completions
    (b'{"choices":[{"index":0,"delta":{"content":""}} garbled', True),  # counted, not lost
])
def test_only_events_that_carry_output_count_as_output_tokens(event: bytes,
                                                              counted: bool) -> None:
    relay = SseRelay("0" * 64, None, require_signature=False, strip_usage=False)
    relay.feed(b"data: " + event + b"\n\n")
    assert relay.content_events == int(counted)


def test_one_byte_chunks_of_a_large_event_cost_linear_time() -> None:
    # Issue 11: each byte used to re-copy and re-scan everything pending (a 128 KB event in
    # 1-byte chunks: 28.6 s through the gateway, another agent's call stalled meanwhile).
    big = b'data: {"choices":[{"delta":{"content":"' + b"x" * (128 << 10) + b'"}}]}\n\n'
    relay = SseRelay("0" * 64, None, require_signature=False, strip_usage=False)
    t0 = time.perf_counter()
    out = b"".join(relay.feed(big[i:i + 1]) for i in range(len(big)))
    assert time.perf_counter() - t0 < 3.0  # about 0.2 s; quadratic: tens of seconds
    assert out == big
    assert relay.content_events == 1


def test_an_event_end_split_across_chunks_is_found() -> None:
    stream = b"data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: [DONE]\n\n"
    for cut in range(1, len(stream)):
        relay = SseRelay("0" * 64, None, require_signature=False, strip_usage=False)
        out = relay.feed(stream[:cut]) + relay.feed(stream[cut:])
        assert out == stream
        assert relay.done


def test_afeed_parses_a_large_usage_event_off_the_loop_as_feed_does() -> None:
    usage = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens"' \
        b':5},"pad":"' + b"p" * (100 << 10) + b'"}\n\n'

    async def run() -> SseRelay:
        relay = SseRelay("0" * 64, None, require_signature=False, strip_usage=True)
        assert await relay.afeed(usage[:1000]) == b""
        assert await relay.afeed(usage[1000:]) == b""  # captured and stripped
        return relay

    relay = asyncio.run(run())
    assert relay.usage == {"prompt_tokens": 3, "completion_tokens": 5}
    assert relay.chat_id == "c1"


@pytest.mark.parametrize("strip_usage", [False, True])
def test_without_an_inline_signature_the_whole_stream_is_hashed(strip_usage: bool) -> None:
    """A provider that signs through GET /v1/signature/{id} (vllm-proxy, NEAR) signs every
    byte it sent, [DONE] included: the relay's hash must be that one."""
    stream = b"".join(EVENTS) + b"data: [DONE]\n\n"
    relay = SseRelay(hashlib.sha256(REQUEST).hexdigest(), None, require_signature=False,
                     strip_usage=strip_usage)
    out = b"".join(relay.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    out += relay.finish()
    assert relay.hasher.hexdigest() == hashlib.sha256(stream).hexdigest()
    assert out == (stream if not strip_usage else EVENTS[0] + b"data: [DONE]\n\n")

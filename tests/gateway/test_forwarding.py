"""Keys the gateway adds to a request keep the client's bytes and mean what re-encoding would."""

from __future__ import annotations

import json

import pytest

from teegate.gateway.forwarding import with_keys

BODIES = [
    b'{"model":"m","messages":[]}',
    b'{ "model" : "m",\n  "messages": [{"role":"user","content":"}\\"\\u00e9"}] }\n\r\t ',
    b'{"model":"m","messages":[],"nested":{"a":{}}}',
    b"{}",
    b"{ }",
]


@pytest.mark.parametrize("body", BODIES)
def test_added_keys_mean_what_reencoding_means(body: bytes) -> None:
    added = {"stream_options": {"include_usage": True}, "max_tokens": 4096, "é": "\u2028"}
    out = with_keys(body, added)
    assert json.loads(out) == {**json.loads(body), **added}
    assert out.startswith(body.rstrip()[:-1])  # every byte the client sent, in order


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        with_keys(b'["model"]', {"a": 1})

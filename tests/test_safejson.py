"""Deeply nested JSON is refused by depth, whatever the interpreter's recursion limit."""

from __future__ import annotations

import json
import threading

import pytest

from teegate import safejson


@pytest.mark.parametrize("doc", [b"[" * 100_000 + b"]" * 100_000,
                                 '{"a":' * 50_000 + "1" + "}" * 50_000,
                                 b"[" * 200_000])
@pytest.mark.usefixtures("raised_recursion_limit")
def test_deep_documents_are_a_decode_error_in_a_thread(doc: str | bytes) -> None:
    # A server thread has a smaller C stack than the main thread: this used to be a segfault.
    outcome: list[BaseException | object] = []

    def parse() -> None:
        try:
            outcome.append(safejson.loads(doc))
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=parse)
    t.start()
    t.join()
    assert isinstance(outcome[0], json.JSONDecodeError)
    assert "nested deeper than 128" in str(outcome[0])


@pytest.mark.parametrize("doc", [
    '{"a": [' + ", ".join(["{}"] * 5000) + "]}",          # many brackets, shallow
    '{"s": "' + "[" * 1000 + '"}',                        # brackets inside a string
    '{"s": "\\"' + "[" * 1000 + '"}',                     # after an escaped quote
    "[" * 128 + "]" * 128,                                # exactly the limit
])
def test_shallow_documents_parse_as_json_does(doc: str) -> None:
    assert safejson.loads(doc) == json.loads(doc)
    assert safejson.loads(doc.encode()) == json.loads(doc)


def test_one_level_past_the_limit_is_refused() -> None:
    with pytest.raises(json.JSONDecodeError, match="deeper than 128"):
        safejson.loads("[" * 129 + "]" * 129)
    assert safejson.loads("[[[]]]", max_depth=3) == [[[]]]
    with pytest.raises(json.JSONDecodeError, match="deeper than 3"):
        safejson.loads("[[[[]]]]", max_depth=3)


def test_malformed_input_is_still_a_decode_error() -> None:
    for bad in (b"", b"{", b'"unterminated', b"\xff", "[" * 300):
        with pytest.raises(ValueError):  # noqa: PT011 - json's own messages vary by input
            safejson.loads(bad)

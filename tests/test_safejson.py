"""Deeply nested JSON is refused by depth, whatever the interpreter's recursion limit."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import tracemalloc
from typing import Any

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


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_TRICKY = ['', '[', ']', '{', '}', '"', '\\', '\\"', '\\\\', '\\\\"', '[[{', '"]', ',',
           'a"b', '\\u005c', '\n']


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.random()
    if depth <= 0 or kind < 0.3:
        return rng.choice([1, 2.5, None, True, "".join(rng.choices(_TRICKY, k=rng.randint(0, 6)))])
    if kind < 0.65:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {"".join(rng.choices(_TRICKY, k=rng.randint(0, 4))) + str(i):
            _random_value(rng, depth - 1) for i in range(rng.randint(0, 4))}


def test_the_scan_counts_the_depth_json_sees_whatever_the_strings_hold() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        value = _random_value(rng, rng.randint(0, 9))
        raw = json.dumps(value, indent=rng.choice([None, 1])).encode()
        depth = _depth(value)
        assert safejson.shape(raw, max_depth=depth)[0] is False, raw
        if depth:
            assert safejson.shape(raw, max_depth=depth - 1)[0] is True, raw
            with pytest.raises(json.JSONDecodeError, match="deeper than"):
                safejson.loads(raw, max_depth=depth - 1)
        assert safejson.loads(raw, max_depth=depth) == json.loads(raw)


def test_a_string_that_never_closes_is_scanned_once() -> None:
    # Issue 11: [ x130, a quote, then escaped quotes that never close the string. The old
    # regex retried it from every quote: 4.7 s for 48 KB, hours for 4 MiB.
    doc = b"[" * 130 + b'"' + b'\\"' * 64_000  # 128 KB
    t0 = time.perf_counter()
    with pytest.raises(json.JSONDecodeError):
        safejson.loads(doc)
    assert time.perf_counter() - t0 < 1.0  # the quadratic scan took ~30 s here
    big = b"[" * 130 + b'"' + b'\\"' * (2 << 20)  # 4 MiB
    t0 = time.perf_counter()
    assert safejson.shape(big) == (True, 131)
    assert time.perf_counter() - t0 < 2.0


def test_values_are_bounded_before_parsing() -> None:
    doc = b"[" + b"{}," * 99_999 + b"{}]"
    tracemalloc.start()
    try:
        with pytest.raises(safejson.TooLargeError, match="limit 1000"):
            safejson.loads(doc, max_values=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(doc)  # 100,000 dicts would be ~10 MB
    # the bound counts each container as a value and each comma as one more: 200,001
    assert len(safejson.loads(doc, max_values=200_001)) == 100_000
    # 5 values; the comma inside the string loosens the bound to 6
    assert safejson.loads('{"a":[1,2],"b":"x,y"}', max_values=6) == {"a": [1, 2], "b": "x,y"}


def test_duplicate_keys_are_refused_at_any_depth_when_asked() -> None:
    assert safejson.loads('{"a":1,"a":2}') == {"a": 2}  # json's own rule, by default
    for doc in ('{"max_tokens":100000,"max_tokens":1}', '{"m":[{"x":1,"y":2,"x":3}]}'):
        with pytest.raises(safejson.DuplicateKeyError, match="duplicate key"):
            safejson.loads(doc, unique_keys=True)
    assert safejson.loads('{"a":{"a":1},"b":[{"a":2}]}', unique_keys=True) == {
        "a": {"a": 1}, "b": [{"a": 2}]}


def test_aloads_parses_large_documents_in_a_worker_thread() -> None:
    seen: list[int] = []
    real = safejson.loads

    def spy(data: Any, **kw: Any) -> Any:
        seen.append(threading.get_ident())
        return real(data, **kw)

    async def main() -> None:
        small = await safejson.aloads(b'{"a":1}')
        large = await safejson.aloads(b'{"a":"' + b"x" * safejson.OFFLOAD_BYTES + b'"}')
        assert small == {"a": 1}
        assert len(large["a"]) == safejson.OFFLOAD_BYTES

    mp = pytest.MonkeyPatch()
    mp.setattr(safejson, "loads", spy)
    try:
        asyncio.run(main())
    finally:
        mp.undo()
    assert seen[0] == threading.get_ident()
    assert seen[1] != threading.get_ident()

"""Issue 11: what the worst input costs beside a normal one of the same size, in one run.

JSON guard: time to refuse (or pass) the worst 4 MiB bodies the scan knows, beside parsing a
normal 4 MiB chat body. SSE relay: a 128 KB event in 1-byte chunks (the slowest chunking a
provider can choose) beside the same bytes in one chunk. Run: .venv/bin/python bench/hardening.py
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from teegate import safejson
from teegate.gateway.streaming import SseRelay

M = 4 << 20


def best(f: Callable[[], Any], runs: int = 3) -> float:
    out = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        with contextlib.suppress(ValueError):  # a refusal is the outcome being timed
            f()
        out = min(out, time.perf_counter() - t0)
    return out * 1000


def main() -> None:
    normal = json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "x" * (M - 60)}]}).encode()
    worst = {
        "[x130, a never-closing string of \\\"": b"[" * 130 + b'"' + b'\\"' * ((M - 131) // 2),
        "depth 127, then [] pairs to 4 MiB": b"[" * 127 + b"[]," * ((M - 400) // 3) + b"[]"
        + b"]" * 127,
        "1M strings holding a bracket": b"[" + b'"[",' * (M // 4 - 2) + b'"["]',
        "4 MiB of [": b"[" * M,
    }
    base = best(lambda: json.loads(normal))
    print(f"{'input (4 MiB)':44s} {'safejson':>10s} {'json.loads, normal body':>24s}")
    print(f"{'normal chat body':44s} {best(lambda: safejson.loads(normal)):8.1f} ms "
          f"{base:21.1f} ms")
    for name, doc in worst.items():
        refuse = functools.partial(safejson.loads, doc)
        print(f"{name:44s} {best(refuse):8.1f} ms {base:21.1f} ms")
    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * (128 << 10) + b'"}}]}\n\n'

    def relay(chunk: int) -> None:
        r = SseRelay("0" * 64, None, require_signature=False, strip_usage=False)
        for i in range(0, len(event), chunk):
            r.feed(event[i:i + chunk])

    print(f"SSE relay, 128 KB event: 1-byte chunks {best(lambda: relay(1), 1):.0f} ms, "
          f"one chunk {best(lambda: relay(len(event))):.2f} ms")


if __name__ == "__main__":
    main()

"""The node's cost: requests/s and added latency over calling the built-in engine directly
(both served by uvicorn in their own process, same run), and the cost of signing a response.

Run: ``.venv/bin/python bench/node.py``. Floor (issue 4): signing adds at most 1 ms per
response.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchutil import per_call_ms

FLOOR_MS = 1.0
PLAIN = json.dumps({"model": "teegate-builtin", "max_tokens": 16,
                    "messages": [{"role": "user", "content": "benchmark the node please"}]})
STREAM = json.dumps({"model": "teegate-builtin", "max_tokens": 20, "stream": True,
                     "stream_options": {"include_usage": True},
                     "messages": [{"role": "user", "content": "benchmark the node please"}]})


def _serve(kind: str, port: int, pki: str) -> None:
    import uvicorn

    from teegate.node import BuiltinEngine, DevTdxSource, create_node_app, engine_app

    app = (engine_app() if kind == "engine"
           else create_node_app(DevTdxSource(Path(pki)), BuiltinEngine()))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _start(kind: str, port: int, pki: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port), pki])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


# As teegate's gateway calls a node: the signed path, a stream's inline comment included
# (without the header a stream is passed through with no comment, docs/node.md).
ASKED = {"x-teegate-signing-algo": "ecdsa"}


def _latency(url: str, body: str, n: int) -> float:
    """p50 ms at concurrency 1, reading the whole response."""
    times = []
    with httpx.Client() as c:
        for i in range(n + 20):
            t = time.perf_counter()
            r = c.post(url + "/v1/chat/completions", content=body.encode(), headers=ASKED)
            r.read()
            if i >= 20:
                times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def _rps(url: str, body: str, n: int, conc: int) -> float:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conc)) as c:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                r = await c.post(url + "/v1/chat/completions", content=body.encode(),
                                 headers=ASKED)
                await r.aread()

        await asyncio.gather(*(worker() for _ in range(conc)))  # warm-up round
        todo = iter(range(n))
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return n / (time.perf_counter() - t)


def _signing() -> None:
    from teegate.node.app import NodeState
    from teegate.node.engine import BuiltinEngine
    from teegate.node.signatures import signature_text, verify_response_signature
    from teegate.node.signer import NodeKeys
    from teegate.node.store import SignatureStore

    keys = NodeKeys()
    state = NodeState(source=None, engine=BuiltinEngine(), keys=keys,  # type: ignore[arg-type]
                      store=SignatureStore())
    req, resp = PLAIN.encode(), b"x" * 1200
    stream_resp = b"y" * 6000
    base = per_call_ms(lambda: signature_text(req, resp), 2000)
    ec = per_call_ms(lambda: keys.sign_exchange("ecdsa", req, resp), 2000)
    ed = per_call_ms(lambda: keys.sign_exchange("ed25519", req, resp), 2000)
    both = per_call_ms(lambda: state.sign_both(req, resp), 2000)
    both_stream = per_call_ms(lambda: state.sign_both(req, stream_resp), 2000)
    s = keys.sign_exchange("ecdsa", req, resp)
    ver = per_call_ms(lambda: verify_response_signature(
        s.text, s.signature, s.signing_address, "ecdsa"), 2000)
    print("signing per response (ms)        value   baseline: hashing only")
    print(f"  ecdsa (EIP-191)                  {ec:.3f}   {base:.3f}")
    print(f"  ed25519                          {ed:.3f}   {base:.3f}")
    print(f"  node: both keys, 1.2 KB body     {both:.3f}   {base:.3f}   "
          f"{'OK' if both <= FLOOR_MS else 'OVER'} (floor {FLOOR_MS} ms)")
    print(f"  node: both keys, 6 KB stream     {both_stream:.3f}")
    print(f"  client check (ecdsa recover)     {ver:.3f}")


def main() -> None:
    _signing()
    with tempfile.TemporaryDirectory() as pki:
        engine = _start("engine", 18751, pki)
        node = _start("node", 18752, pki)
        try:
            direct, via = "http://127.0.0.1:18751", "http://127.0.0.1:18752"
            print("\nlatency p50 at c=1 (ms)          direct  node   added")
            for name, body in (("plain", PLAIN), ("stream, 20 chunks", STREAM)):
                d, v = _latency(direct, body, 300), _latency(via, body, 300)
                print(f"  {name:<30} {d:6.2f}  {v:6.2f}  {v - d:+.2f}")
            print("\nthroughput at c=16 (req/s)       direct  node   ratio")
            for name, body in (("plain", PLAIN), ("stream, 20 chunks", STREAM)):
                d = asyncio.run(_rps(direct, body, 1500, 16))
                v = asyncio.run(_rps(via, body, 1500, 16))
                print(f"  {name:<30} {d:6.0f}  {v:6.0f}  {v / d:.2f}")
        finally:
            engine.terminate()
            node.terminate()
            engine.wait()
            node.wait()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()

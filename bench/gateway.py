"""Gateway benchmark: teegate serve vs the upstream directly vs LiteLLM proxy, side by side.

Runs (all on 127.0.0.1, each in its own process): a fast mock OpenAI upstream (raw asyncio,
zero latency, 20-chunk streams), a development teegate node (development TDX, built-in engine
as in the embedded default, or ``--node-engine mock`` in front of the mock; it signs every
response), the teegate gateway (one process, httptools + uvloop) with a plain provider (the
mock) and an attested provider (the node, development TDX, signature checked per response),
and LiteLLM proxy (2 workers, no database) if it can be installed into
``bench/.litellm-venv``. The gateway charges every call to the agent's wallet (ledger hold
before forwarding, settle after; ``--no-ledger`` leaves it out) and writes a signed receipt.
A separate load-generator process (raw asyncio sockets, keep-alive) drives each target at
concurrency 1, 16 and 64, plain and streaming, and reports requests/s and p50/p99 latency to
the last byte; CPU time per request of the gateway (and LiteLLM) comes from /proc.

    .venv/bin/python bench/gateway.py [--secs 3] [--no-litellm] [--no-ledger]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
LITELLM_VENV = HERE / ".litellm-venv"
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------- mock


def _completion(model: bytes) -> bytes:
    return (b'{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"'
            + model + b'","choices":[{"index":0,"message":{"role":"assistant","content":'
            b'"hello from the mock upstream"},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}')


def _stream(model: bytes, usage: bool) -> bytes:
    head = (b'{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,'
            b'"model":"' + model + b'","choices":[')
    events = []
    for i in range(20):
        events.append(b"data: " + head + b'{"index":0,"delta":{"content":"w%d "},'
                      b'"finish_reason":null}]}\n\n' % i)
    events.append(b"data: " + head + b'{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    if usage:
        events.append(b"data: " + head + b'],"usage":{"prompt_tokens":5,"completion_tokens":20,'
                      b'"total_tokens":25}}\n\n')
    events.append(b"data: [DONE]\n\n")
    body = b"".join(events)
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


class _MockProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            n = 0
            i = head.find(b"content-length:")
            if i >= 0:
                n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0
                             else len(head)].strip())
            if len(self.buf) < end + 4 + n:
                return
            body = self.buf[end + 4:end + 4 + n]
            self.buf = self.buf[end + 4 + n:]
            if head.startswith(b"get"):
                out = b'{"object":"list","data":[{"id":"mock-model","object":"model"}]}'
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(out) + out)
                continue
            model = b"mock-model"
            j = body.find(b'"model"')
            if j >= 0:
                q1 = body.find(b'"', body.find(b":", j) + 1)
                model = body[q1 + 1:body.find(b'"', q1 + 1)]
            if b'"stream":true' in body or b'"stream": true' in body:
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n"
                             + _stream(model, b"include_usage" in body))
            else:
                out = _completion(model)
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(out) + out)


def run_mock(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_MockProtocol, HOST, port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------------------------- load


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    i = low.find(b"content-length:")
    if i >= 0:
        n = int(low[i + 15:low.find(b"\r\n", i)].strip())
        await reader.readexactly(n)
    elif b"transfer-encoding: chunked" in low:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _load(url: str, conc: int, n: int, secs: float, body: bytes, key: str) -> dict[str, Any]:
    host, port = url.split("//")[1].split(":")
    port_i = int(port.split("/")[0])
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: " + host.encode()
           + b"\r\ncontent-type: application/json\r\nauthorization: Bearer " + key.encode()
           + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + secs
    remaining = [n]

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port_i, limit=1 << 20)
        try:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                t = time.perf_counter()
                writer.write(req)
                status = await _read_response(reader)
                lat.append(time.perf_counter() - t)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": len(lat), "errors": errors, "rps": len(lat) / wall if wall else 0.0,
            "p50": lat[len(lat) // 2] * 1000 if lat else 0.0,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0}


def run_load(args: argparse.Namespace) -> None:
    import uvloop

    body = json.dumps({"model": args.model, "messages": [{"role": "user", "content": "hi"}],
                       "stream": bool(args.stream), "max_tokens": 64},
                      separators=(",", ":")).encode()
    warm = uvloop.run(_load(args.load, min(args.conc, 4), 20, 5.0, body, args.key))
    if warm["errors"]:
        print(json.dumps({"error": f"{warm['errors']} errors in warm-up"}))
        return
    print(json.dumps(uvloop.run(_load(args.load, args.conc, args.n, args.secs, body, args.key))))


# ---------------------------------------------------------------------------------- orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and all its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
    seen = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        pids.extend(children.get(p, []))
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


GATEWAY_SCRIPT = """
import sys, uvicorn
from teegate.gateway import load_config
from teegate.gateway.factory import build_app
cfg = load_config(sys.argv[1])
app = build_app(cfg, dev_credit=("bench", 10**15, "bench-credit") if cfg.ledger else None)
uvicorn.run(app, host="127.0.0.1", port=cfg.listen_port, http="httptools", loop="uvloop",
            access_log=False, log_level="warning")
"""


def start_gateway(tmp: Path, mock: str, node: str, port: int, *, no_ledger: bool = False,
                  node_model: str = "teegate-builtin", durability: str = "full"
                  ) -> tuple[subprocess.Popen[bytes], str]:
    from teegate.gateway import GatewayStore

    db = f"sqlite:///{tmp / 'gw.db'}"
    (tmp / "teegate.toml").write_text(f"""
[gateway]
listen = "127.0.0.1:{port}"
database_url = "{db}"
data_dir = "{tmp}"
ledger = {"false" if no_ledger else "true"}
ledger_durability = "{durability}"
[[providers]]
id = "mock"
platform = "open-ai"
base_url = "{mock}/v1"
models = ["mock-model"]
prices.mock-model = {{ input = 100, output = 300 }}
[[providers]]
id = "node"
platform = "tee-node"
base_url = "{node}/v1"
models = ["{node_model}"]
development = true
prices.{node_model} = {{ input = 100, output = 300 }}
""")
    key = GatewayStore(db).create_key("bench", trust="standard")
    proc = subprocess.Popen([PY, "-c", GATEWAY_SCRIPT, str(tmp / "teegate.toml")],
                            env={**os.environ, "TEEGATE_HOME": str(tmp)})
    return proc, key


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print("installing litellm[proxy] into bench/.litellm-venv (one-off) ...", flush=True)
    try:
        subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"LiteLLM install failed ({e}); continuing without it")
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, tmp: Path, mock: str, port: int) -> subprocess.Popen[bytes]:
    cfg = tmp / "litellm.yaml"
    cfg.write_text(f"""model_list:
  - model_name: mock-model
    litellm_params:
      model: openai/mock-model
      api_base: {mock}/v1
      api_key: sk-mock
general_settings:
  master_key: sk-bench
litellm_settings:
  drop_params: true
""")
    env = {**os.environ, "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true"}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen([str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port),
                             "--num_workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def load(url: str, model: str, key: str, conc: int, stream: bool, secs: float,
         n: int) -> dict[str, Any]:
    out = subprocess.run([PY, __file__, "--load", url, "--model", model, "--key", key,
                          "--conc", str(conc), "--stream", str(int(stream)), "--secs", str(secs),
                          "--n", str(n)], capture_output=True, text=True, timeout=secs + 120)
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {"error": (out.stderr or out.stdout)[-300:]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mock", type=int)
    ap.add_argument("--load")
    ap.add_argument("--model", default="mock-model")
    ap.add_argument("--key", default="none")
    ap.add_argument("--conc", type=int, default=1)
    ap.add_argument("--stream", type=int, default=0)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--no-ledger", action="store_true", help="gateway without ledger holds")
    ap.add_argument("--durability", choices=("full", "normal"), default="full",
                    help="ledger SQLite durability (full: fsync per commit)")
    ap.add_argument("--node-engine", choices=("builtin", "mock"), default="builtin",
                    help="engine behind the development node (builtin, as `teegate serve` "
                    "embeds it; or the mock upstream through the node's HTTP engine)")
    args = ap.parse_args()
    if args.mock:
        run_mock(args.mock)
        return
    if args.load:
        run_load(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mock_port, node_port, gw_port, ll_port = (free_port() for _ in range(4))
        mock = f"http://{HOST}:{mock_port}"
        procs.append(subprocess.Popen([PY, __file__, "--mock", str(mock_port)]))
        node = f"http://{HOST}:{node_port}"
        teegate = shutil.which("teegate", path=str(Path(PY).parent)) or "teegate"
        procs.append(subprocess.Popen(
            [teegate, "node", "--engine", "builtin" if args.node_engine == "builtin"
             else mock + "/v1", "--tee", "dev-tdx", "--port",
             str(node_port)], env={**os.environ, "TEEGATE_HOME": str(tmp)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not (wait_http(mock + "/v1/models") and wait_http(node + "/v1/models")):
            raise SystemExit("mock or node did not start")
        node_model = "teegate-builtin" if args.node_engine == "builtin" else "node-model"
        gw_proc, key = start_gateway(tmp, mock, node, gw_port, no_ledger=args.no_ledger,
                                     node_model=node_model, durability=args.durability)
        print(f"gateway: ledger {'off' if args.no_ledger else args.durability + ' durability'}"
              f", receipts on; attested node engine: {args.node_engine}")
        procs.append(gw_proc)
        gw = f"http://{HOST}:{gw_port}"
        if not wait_http(gw + "/readyz"):
            raise SystemExit("gateway did not become ready")
        ll_proc = None
        if not args.no_litellm:
            exe = ensure_litellm()
            if exe is not None:
                ll_proc = start_litellm(exe, tmp, mock, ll_port)
                procs.append(ll_proc)
                if not wait_http(f"http://{HOST}:{ll_port}/health/liveliness", timeout=90):
                    print("LiteLLM proxy did not start; continuing without it")
                    ll_proc = None
        targets: list[tuple[str, str, str, str, int | None]] = [
            ("direct mock", mock, "mock-model", "none", None),
            ("direct node", node, node_model, "none", None),
            ("teegate plain", gw, "mock-model", key, gw_proc.pid),
            ("teegate attested", gw, node_model, key, gw_proc.pid),
        ]
        if ll_proc is not None:
            targets.append(("litellm", f"http://{HOST}:{ll_port}", "mock-model", "sk-bench",
                            ll_proc.pid))
        results: dict[tuple[str, bool, int], dict[str, Any]] = {}
        print(f"\n{'target':18} {'mode':6} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms/req':>10} {'n':>6}")
        for stream in (False, True):
            for conc in (1, 16, 64):
                for name, url, model, k, pid in targets:
                    cpu0 = proc_cpu(pid) if pid else 0.0
                    r = load(url, model, k, conc, stream, args.secs, args.n)
                    cpu = (proc_cpu(pid) - cpu0) if pid else 0.0
                    if "error" in r:
                        print(f"{name:18} {'stream' if stream else 'plain':6} {conc:>3} "
                              f"ERROR {r['error']}")
                        continue
                    r["cpu_ms"] = cpu * 1000 / r["n"] if pid and r["n"] else None
                    results[(name, stream, conc)] = r
                    cpu_s = f"{r['cpu_ms']:.2f}" if r["cpu_ms"] is not None else "-"
                    print(f"{name:18} {'stream' if stream else 'plain':6} {conc:>3} "
                          f"{r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {cpu_s:>10} "
                          f"{r['n']:>6}" + (f"  errors={r['errors']}" if r["errors"] else ""),
                          flush=True)
        summary(results)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM) if p.pid and _own_group(p) else p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _own_group(p: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(p.pid) == p.pid
    except ProcessLookupError:
        return False


def summary(results: dict[tuple[str, bool, int], dict[str, Any]]) -> None:
    def get(name: str, stream: bool, conc: int, field: str) -> float | None:
        r = results.get((name, stream, conc))
        return None if r is None else float(r[field])

    print("\nteegate's added latency at c=1 (p50 through teegate - p50 direct):")
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        for path, direct, floor in (("teegate plain", "direct mock", 2.0),
                                    ("teegate attested", "direct node", 3.0)):
            a, b = get(path, stream, 1, "p50"), get(direct, stream, 1, "p50")
            if a is not None and b is not None:
                ok = "" if stream else ("  (floor <= {:.0f} ms: {})".format(
                    floor, "met" if a - b <= floor else "NOT met"))
                print(f"  {path:17} {mode:6} +{a - b:.2f} ms{ok}")
    print("\nthroughput at c=64 vs LiteLLM (floor: >= 5x):")
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        ll = get("litellm", stream, 64, "rps")
        for path in ("teegate plain", "teegate attested"):
            tg = get(path, stream, 64, "rps")
            if tg is None:
                continue
            if ll:
                ratio = tg / ll
                print(f"  {path:17} {mode:6} {tg:8.0f} req/s vs {ll:6.0f}: {ratio:5.1f}x "
                      f"({'met' if ratio >= 5 else 'NOT met'})")
            else:
                print(f"  {path:17} {mode:6} {tg:8.0f} req/s (LiteLLM not measured)")


if __name__ == "__main__":
    main()

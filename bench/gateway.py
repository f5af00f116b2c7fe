"""Gateway benchmark: teegate beside Portkey's gateway and LiteLLM proxy, in one run.

Every gateway faces the same fast mock OpenAI upstream (raw asyncio, zero latency, 20-event
streams) and is measured alone: it is started, pinned to its own core when the machine has two
or more (the mock, the teegate node and the load generator share the other core), loaded at
concurrency 1 and 64, plain and streamed, and stopped before the next one starts. The targets:

- the upstream and a development teegate node directly (the baselines of "added latency");
- teegate with its defaults (ledger hold before forwarding and settlement after, SQLite with an
  fsync per commit, a signed receipt of every call) on the plain provider and on the attested
  one (the node: development TDX, its signature checked on every answer);
- teegate with ledger and receipts off (the plain proxy path);
- teegate's defaults on PostgreSQL, with ``--pg`` (or ``$TEEGATE_TEST_PG``);
- Portkey's open-source gateway (npm ``@portkey-ai/gateway``, pinned in ``bench/portkey``,
  installed by this script with ``npm ci``), after a warm-up;
- LiteLLM proxy with one worker (``litellm[proxy]`` pinned below, installed by this script
  into ``bench/.litellm-venv``).

Load comes from wrk (Debian package ``wrk``) where installed, otherwise (or with
``--python-load``) from the project's own asyncio load generator, which measures the fastest
paths slower than they are. CPU per request is the gateway process tree's user + system time
from /proc over the measured run.

    .venv/bin/python bench/gateway.py [--secs 5] [--pg URL] [--no-portkey] [--no-litellm]
        [--baseline REV]

``--baseline REV`` adds teegate's defaults at an older commit (checked out into a temporary
git worktree, run from its ``src`` with this environment's packages) to the same run, so a
change's cost is measured against the code before it on the same machine in the same hour:
issue 11 compares its hardening (replay protection, verify-before-delivery) with the commit
before it this way.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
LITELLM_VENV = HERE / ".litellm-venv"
LITELLM_PIN = "litellm[proxy]==1.108.7"
PORTKEY_DIR = HERE / "portkey"
PORTKEY_NOTE = ("Portkey @portkey-ai/gateway 1.15.2 with @hono/node-server pinned to 1.13.8 "
                "(npm override in bench/portkey/package.json): with the 1.19 it resolves to, "
                "Node 20 answers every streamed chat with a 500 'TypeError: immutable' "
                "(Portkey issues #1389, #1550)")
HOST = "127.0.0.1"

# ---------------------------------------------------------------------------------- mock


def _completion(model: bytes) -> bytes:
    return (b'{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"'
            + model + b'","choices":[{"index":0,"message":{"role":"assistant","content":'
            b'"hello from the mock upstream"},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}')


def _stream(model: bytes, usage: bool) -> list[bytes]:
    """A 20-event completion stream, one HTTP chunk per SSE event, then the last chunk."""
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
    return [b"%x\r\n" % len(e) + e + b"\r\n" for e in events] + [b"0\r\n\r\n"]


class _MockProtocol(asyncio.Protocol):
    per_event = True  # write each SSE event on its own (``--stream-writes``)

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
                chunks = _stream(model, b"include_usage" in body)
                head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n")
                if not self.per_event:
                    self.t.write(head + b"".join(chunks))
                    continue
                # As an engine does: each event written on its own, one loop turn apart.
                self.t.write(head)
                loop = asyncio.get_running_loop()
                for chunk in chunks:
                    loop.call_soon(self.t.write, chunk)
            else:
                out = _completion(model)
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(out) + out)


def run_mock(port: int, per_event: bool) -> None:
    import uvloop

    _MockProtocol.per_event = per_event

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_MockProtocol, HOST, port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------------------------- load


def _request(host: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body


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


async def _load(url: str, conc: int, secs: float, req: bytes) -> dict[str, Any]:
    host, port = url.split("//")[1].split(":")
    port_i = int(port.split("/")[0])
    lat: list[float] = []
    errors = 0
    deadline = time.perf_counter() + secs

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port_i, limit=1 << 20)
        try:
            while time.perf_counter() < deadline:
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


def run_python_load(args: argparse.Namespace) -> None:
    import uvloop

    host = args.load.split("//")[1].split("/")[0]
    headers = [(k, v) for k, _, v in (h.partition(": ") for h in args.header)]
    req = _request(host, args.path, headers, args.body.encode())
    warm = uvloop.run(_load(args.load, min(args.conc, 4), 1.0, req))
    if warm["errors"]:
        print(json.dumps({"error": f"{warm['errors']} of {warm['n']} warm-up calls failed"}))
        return
    print(json.dumps(uvloop.run(_load(args.load, args.conc, args.secs, req))))


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{{"n":%d,"errors":%d,"secs":%f,"p50":%f,"p99":%f}}\\n',
    summary.requests, e.connect + e.read + e.write + e.timeout + e.status,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk_load(wrk: str, url: str, path: str, headers: list[tuple[str, str]], body: str,
             conc: int, secs: float, tmp: Path, cpus: set[int] | None) -> dict[str, Any]:
    """wrk's figures for ``secs`` seconds (wrk counts whole seconds); non-2xx answers count as
    errors."""
    script = tmp / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(
        body=body, headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers)))
    duration = max(1, round(secs))
    out = subprocess.run([wrk, "-t", "1", "-c", str(conc), "-d", f"{duration}s",
                          "--timeout", "10s", "-s", str(script), url + path],
                         capture_output=True, text=True, timeout=duration + 60,
                         preexec_fn=_pinner(cpus))
    try:
        line = [x for x in out.stdout.splitlines() if x.startswith('{"n"')][-1]
        result: dict[str, Any] = json.loads(line)
    except (IndexError, ValueError):
        return {"error": (out.stderr or out.stdout)[-300:]}
    result["rps"] = result["n"] / result["secs"] if result["secs"] else 0.0
    return result


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


def _pinner(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and every thread and process it starts) to
    ``cpus`` before it execs."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cores() -> tuple[set[int] | None, set[int] | None]:
    """(the gateway's core, everyone else's) when there are two or more, else no pinning."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, None
    return {mine[-1]}, set(mine[:-1])


def spawn(cmd: list[str], cpus: set[int] | None, env: dict[str, str] | None = None,
          quiet: bool = True) -> subprocess.Popen[bytes]:
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True,
                            preexec_fn=_pinner(cpus))


def stop(target: subprocess.Popen[bytes] | Gateway) -> None:
    proc = target.proc if isinstance(target, Gateway) else target
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


KEY_SCRIPT = """
import sys
from teegate.gateway import GatewayStore
print(GatewayStore(sys.argv[1]).create_key("bench", trust="standard"))
"""
GATEWAY_SCRIPT = """
import sys, uvicorn
from teegate.gateway import load_config
from teegate.gateway.factory import build_app
cfg = load_config(sys.argv[1])
app = build_app(cfg, dev_credit=("bench", 10**15, "bench-credit") if cfg.ledger else None)
uvicorn.run(app, host="127.0.0.1", port=cfg.listen_port, http="httptools", loop="uvloop",
            access_log=False, log_level="warning")
"""


@dataclass
class Gateway:
    """A gateway under test: where it listens, how to call it, and its process."""

    name: str
    url: str
    headers: list[tuple[str, str]]
    proc: subprocess.Popen[bytes] | None = None
    models: dict[str, str] = field(default_factory=dict)  # route -> model name


def teegate_config(home: Path, slug: str, db: str, mock: str, node: str, port: int, *,
                   money: bool) -> Path:
    data = home / slug
    data.mkdir(mode=0o700)
    path = data / "teegate.toml"
    path.write_text(f"""
[gateway]
listen = "127.0.0.1:{port}"
database_url = "{db}"
data_dir = "{data}"
ledger = {str(money).lower()}
receipts = {str(money).lower()}
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
models = ["teegate-builtin"]
development = true
prices.teegate-builtin = {{ input = 100, output = 300 }}
""")
    return path


def start_teegate(home: Path, name: str, slug: str, db: str, mock: str, node: str, *,
                  money: bool, cpus: set[int] | None, src: Path | None = None) -> Gateway:
    """teegate as this checkout has it, or from another checkout's ``src`` (``--baseline``):
    its own code creates the database and the key, so its schema is its own."""
    port = free_port()
    cfg = teegate_config(home, slug, db, mock, node, port, money=money)
    # TEEGATE_HOME is the node's, so the gateway trusts the node's development PKI.
    env = {**os.environ, "TEEGATE_HOME": str(home)}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    key = subprocess.run([PY, "-c", KEY_SCRIPT, db], env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    proc = spawn([PY, "-c", GATEWAY_SCRIPT, str(cfg)], cpus, env=env, quiet=False)
    gw = Gateway(name, f"http://{HOST}:{port}", [("Authorization", f"Bearer {key}")], proc,
                 {"plain": "mock-model", "attested": "teegate-builtin"})
    if not wait_http(gw.url + "/readyz"):
        stop(gw)
        raise SystemExit(f"{name} did not become ready")
    return gw


def fresh_pg_database(admin_url: str) -> str | None:
    """A new, empty database on the server of ``admin_url`` for one run, or None."""
    try:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP DATABASE IF EXISTS teegate_bench")
            conn.execute("CREATE DATABASE teegate_bench")
    except Exception as e:  # any failure means: no PostgreSQL target
        print(f"PostgreSQL at {admin_url} is not usable ({e}); skipping that target")
        return None
    return admin_url.rsplit("/", 1)[0] + "/teegate_bench"


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing {LITELLM_PIN} into bench/.litellm-venv (one-off) ...", flush=True)
    try:
        subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"LiteLLM install failed ({e}); continuing without it")
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, tmp: Path, mock: str, cpus: set[int] | None) -> Gateway | None:
    port = free_port()
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
    proc = spawn([str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port),
                  "--num_workers", "1"], cpus, env=env)
    gw = Gateway("LiteLLM, 1 worker", f"http://{HOST}:{port}",
                 [("Authorization", "Bearer sk-bench")], proc, {"plain": "mock-model"})
    if not wait_http(gw.url + "/health/liveliness", timeout=120):
        print("LiteLLM proxy did not start; continuing without it")
        stop(proc)
        return None
    return gw


def ensure_portkey() -> Path | None:
    start = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if start.exists():
        return start
    npm = shutil.which("npm")
    if npm is None:
        print("npm is not installed; skipping Portkey")
        return None
    print("installing Portkey's gateway into bench/portkey (npm ci, one-off) ...", flush=True)
    try:
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                       cwd=PORTKEY_DIR, check=True, timeout=900, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"Portkey install failed ({e}); continuing without it")
        return None
    return start if start.exists() else None


def start_portkey(start: Path, mock: str, cpus: set[int] | None) -> Gateway | None:
    port = free_port()
    node = shutil.which("node") or "node"
    proc = spawn([node, str(start), f"--port={port}", "--headless"], cpus,
                 env={**os.environ, "NODE_ENV": "production"})
    gw = Gateway("Portkey (warm)", f"http://{HOST}:{port}",
                 [("Authorization", "Bearer sk-mock"), ("x-portkey-provider", "openai"),
                  ("x-portkey-custom-host", f"{mock}/v1")], proc, {"plain": "mock-model"})
    if not wait_http(gw.url + "/", timeout=60):
        print("Portkey did not start; continuing without it")
        stop(proc)
        return None
    return gw


# ---------------------------------------------------------------------------------- measure

Key = tuple[str, str, bool, int]  # gateway, route, stream, concurrency
CHAT = "/v1/chat/completions"


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    others: set[int] | None
    wrk: str | None
    results: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def body(self, model: str, stream: bool) -> str:
        return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                           "stream": stream, "max_tokens": 64}, separators=(",", ":"))

    def load(self, url: str, headers: list[tuple[str, str]], model: str, stream: bool,
             conc: int, secs: float) -> dict[str, Any]:
        body = self.body(model, stream)
        if self.wrk:
            return wrk_load(self.wrk, url, CHAT, headers, body, conc, secs, self.tmp,
                            self.others)
        cmd = [PY, __file__, "--load", url, "--path", CHAT, "--body", body, "--conc",
               str(conc), "--secs", str(secs)]
        for k, v in headers:
            cmd += ["--header", f"{k}: {v}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 120,
                             preexec_fn=_pinner(self.others))
        try:
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            result = {"error": (out.stderr or out.stdout)[-300:]}
        return result

    def run(self, gw: Gateway, routes: tuple[str, ...] = ("plain", "attested"),
            concs: tuple[int, ...] = (1, 64)) -> None:
        pid = gw.proc.pid if gw.proc else None
        for route in routes:
            model = gw.models.get(route)
            if model is None:
                continue
            for stream in (False, True):
                # A warm-up at c=16 for every gateway alike (Portkey's JIT needs one).
                self.load(gw.url, gw.headers, model, stream, 16, self.args.warmup)
                for conc in concs:
                    cpu0 = proc_cpu(pid) if pid else 0.0
                    r = self.load(gw.url, gw.headers, model, stream, conc, self.args.secs)
                    cpu = (proc_cpu(pid) - cpu0) if pid else 0.0
                    if "error" not in r:
                        r["cpu_ms"] = cpu * 1000 / r["n"] if pid and r["n"] else None
                        if r["n"] == 0:
                            r["error"] = "no call completed"
                        elif r["errors"] > r["n"] * 0.01:
                            r["error"] = f"{r['errors']} of {r['n']} calls failed"
                    self.results[(gw.name, route, stream, conc)] = r
                    self.print_row(gw.name, route, stream, conc, r)

    @staticmethod
    def print_row(name: str, route: str, stream: bool, conc: int, r: dict[str, Any]) -> None:
        mode = "stream" if stream else "plain"
        label = f"{name:34} {route:8} {mode:6} {conc:>3}"
        if "error" in r and "rps" not in r:
            print(f"{label} ERROR {r['error']}", flush=True)
            return
        cpu = f"{r['cpu_ms']:.3f}" if r.get("cpu_ms") is not None else "-"
        bad = f"  INVALID: {r['error']}" if "error" in r else ""
        print(f"{label} {r['rps']:>9.0f} {r['p50']:>8.3f} {r['p99']:>8.3f} {cpu:>10} "
              f"{r['n']:>7}{bad}", flush=True)

    def get(self, name: str, route: str, stream: bool, conc: int, what: str) -> float | None:
        r = self.results.get((name, route, stream, conc))
        if r is None or "error" in r or r.get(what) is None:
            return None
        return float(r[what])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--secs", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per mode")
    ap.add_argument("--pg", default=os.environ.get("TEEGATE_TEST_PG"),
                    help="PostgreSQL URL whose server gets a fresh database teegate_bench")
    ap.add_argument("--no-portkey", action="store_true")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--python-load", action="store_true", help="the asyncio loader, not wrk")
    ap.add_argument("--baseline", metavar="REV",
                    help="also run teegate's defaults at this git revision (e.g. the commit "
                    "before a change) in the same run")
    ap.add_argument("--stream-writes", choices=("event", "one"), default="event",
                    help="the mock writes each SSE event on its own (as engines do) or the "
                    "whole stream at once")
    # internal: the mock upstream and the Python load generator run as this script.
    ap.add_argument("--mock", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--path", default=CHAT, help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    ap.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--conc", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mock:
        run_mock(args.mock, args.stream_writes == "event")
        return
    if args.load:
        run_python_load(args)
        return

    gateway_core, others = cores()
    wrk = None if args.python_load else shutil.which("wrk")
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    tmp.chmod(0o700)
    bench = Bench(args, tmp, others, wrk)
    background: list[subprocess.Popen[bytes]] = []
    try:
        mock_port, node_port = free_port(), free_port()
        mock = f"http://{HOST}:{mock_port}"
        node = f"http://{HOST}:{node_port}"
        background.append(spawn([PY, __file__, "--mock", str(mock_port), "--stream-writes",
                                 args.stream_writes], others))
        teegate = shutil.which("teegate", path=str(Path(PY).parent)) or "teegate"
        background.append(spawn([teegate, "node", "--engine", "builtin", "--tee", "dev-tdx",
                                 "--port", str(node_port)], others,
                                env={**os.environ, "TEEGATE_HOME": str(tmp)}))
        if not (wait_http(mock + "/v1/models") and wait_http(node + "/v1/models")):
            raise SystemExit("the mock upstream or the teegate node did not start")
        print(f"cores: gateway under test on {sorted(gateway_core) if gateway_core else 'any'}"
              f", mock + node + load generator on {sorted(others) if others else 'any'}")
        print("load generator: " + (f"wrk ({wrk})" if wrk else
              "the asyncio load generator (install the Debian package wrk for wrk: the "
              "asyncio one measures the fastest paths slower than they are)"))
        print(f"{args.secs:g} s per figure after a {args.warmup:g} s warm-up per mode; the "
              "mock writes " + ("each of a stream's 22 SSE events on its own" if
                                args.stream_writes == "event" else "a whole stream at once")
              + "\n")
        print(f"{'target':34} {'route':8} {'mode':6} {'c':>3} {'req/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'CPU ms/req':>10} {'n':>7}")
        direct = [Gateway("direct upstream", mock, [], None, {"plain": "mock-model"}),
                  Gateway("direct node", node, [], None, {"attested": "teegate-builtin"})]
        for gw in direct:
            bench.run(gw, concs=(1,))
        teegates = [("teegate, ledger and receipts off", "off", f"sqlite:///{tmp / 'off.db'}",
                     False),
                    ("teegate, defaults", "defaults", f"sqlite:///{tmp / 'defaults.db'}", True)]
        pg = fresh_pg_database(args.pg) if args.pg else None
        if pg:
            teegates.append(("teegate, defaults, PostgreSQL", "postgres", pg, True))
        baseline = checkout(args.baseline, tmp) if args.baseline else None
        runs: list[tuple[str, str, str, bool, Path | None]] = [(*t, None) for t in teegates]
        if baseline is not None:
            runs.append((baseline_name(args.baseline), "baseline",
                         f"sqlite:///{tmp / 'baseline.db'}", True, baseline / "src"))
        for name, slug, db, money, src in runs:
            gw = start_teegate(tmp, name, slug, db, mock, node, money=money, cpus=gateway_core,
                               src=src)
            try:
                bench.run(gw)
            finally:
                stop(gw)
        if not args.no_portkey and (start := ensure_portkey()):
            print(f"\n{PORTKEY_NOTE}\n")
            if (pk := start_portkey(start, mock, gateway_core)) is not None:
                try:
                    bench.run(pk)
                finally:
                    stop(pk)
        exe = None if args.no_litellm else ensure_litellm()
        if exe and (ll := start_litellm(exe, tmp, mock, gateway_core)) is not None:
            try:
                bench.run(ll)
            finally:
                stop(ll)
        summary(bench, [n for n, _, _, _ in teegates],
                baseline_name(args.baseline) if baseline is not None else None)
    finally:
        for p in background:
            stop(p)
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "baseline-src")], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def baseline_name(rev: str) -> str:
    return f"teegate @{rev[:12]}, defaults"


def checkout(rev: str, tmp: Path) -> Path:
    """A detached worktree of ``rev`` (the repository's own history, no network)."""
    where = tmp / "baseline-src"
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where),
                           rev], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"--baseline {rev}: {done.stderr.strip()}")
    return where


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def summary(b: Bench, teegates: list[str], baseline: str | None = None) -> None:
    base_plain = b.get("direct upstream", "plain", False, 1, "p50")
    base_node = b.get("direct node", "attested", False, 1, "p50")

    def added(name: str, route: str) -> float | None:
        base = base_plain if route == "plain" else base_node
        p50 = b.get(name, route, False, 1, "p50")
        return None if p50 is None or base is None else p50 - base

    rows = [*teegates, *([baseline] if baseline else []), "Portkey (warm)", "LiteLLM, 1 worker"]
    print("\n| gateway | c=1 added p50 plain / attested | c=64 plain req/s | c=64 stream req/s "
          "| CPU ms/req plain / stream |")
    print("|---|---|---|---|---|")
    for name in rows:
        if not any(k[0] == name for k in b.results):
            continue
        for route in ("plain", "attested"):
            if not any(k[0] == name and k[1] == route for k in b.results):
                continue
            label = name if route == "plain" else f"{name}, attested node"
            lat = (f"{_fmt(added(name, 'plain'), '.2f')} / {_fmt(added(name, 'attested'), '.2f')}"
                   " ms" if route == "plain" else "")
            print(f"| {label} | {lat} | {_fmt(b.get(name, route, False, 64, 'rps'), ',.0f')} | "
                  f"{_fmt(b.get(name, route, True, 64, 'rps'), ',.0f')} | "
                  f"{_fmt(b.get(name, route, False, 64, 'cpu_ms'), '.3f')} / "
                  f"{_fmt(b.get(name, route, True, 64, 'cpu_ms'), '.3f')} |")
    print("(added p50: through the gateway minus the upstream, or the node, called directly)")

    checks: list[tuple[str, float | None, float, str]] = []  # label, value, goal, unit
    tg, pk, ll = "teegate, defaults", "Portkey (warm)", "LiteLLM, 1 worker"

    def ratio(a: float | None, c: float | None) -> float | None:
        return None if a is None or not c else a / c

    for stream in (False, True):
        mode = "stream" if stream else "plain"
        t = b.get(tg, "plain", stream, 64, "rps")
        checks.append((f"issue 20: defaults c=64 {mode} vs Portkey",
                       ratio(t, b.get(pk, "plain", stream, 64, "rps")), 1.5, "x"))
        checks.append((f"issue 20: defaults c=64 {mode} vs LiteLLM",
                       ratio(t, b.get(ll, "plain", stream, 64, "rps")), 20.0, "x"))
        if len(teegates) > 2:
            checks.append((f"issue 20: PostgreSQL c=64 {mode} vs Portkey",
                           ratio(b.get(teegates[2], "plain", stream, 64, "rps"),
                                 b.get(pk, "plain", stream, 64, "rps")), 1.0, "x"))
        checks.append((f"issue 12: defaults attested c=64 {mode} vs LiteLLM",
                       ratio(b.get(tg, "attested", stream, 64, "rps"),
                             b.get(ll, "plain", stream, 64, "rps")), 7.0, "x"))
    checks.append(("issue 20: defaults c=1 added p50, plain", added(tg, "plain"), -0.5, "ms"))
    checks.append(("issue 20: defaults c=1 added p50, attested", added(tg, "attested"), -0.8,
                   "ms"))
    off = teegates[0]
    a_on, a_off = b.get(tg, "attested", False, 1, "p50"), b.get(off, "attested", False, 1, "p50")
    cost = None if a_on is None or a_off is None else a_on - a_off
    checks.append(("issue 12: ledger + durable receipts, attested c=1 p50 cost", cost, -0.3,
                   "ms"))
    if baseline is not None:
        for route in ("plain", "attested"):
            now, then = added(tg, route), added(baseline, route)
            checks.append((f"issue 11: c=1 added p50 {route}, this vs baseline",
                           None if now is None or then is None or then <= 0 else now / then,
                           -1.1, "x"))
            for stream in (False, True):
                mode = "stream" if stream else "plain"
                checks.append((f"issue 11: c=64 {route} {mode} req/s, this vs baseline",
                               ratio(b.get(tg, route, stream, 64, "rps"),
                                     b.get(baseline, route, stream, 64, "rps")), 0.9, "x"))
    print("\ngoals (negative goal: at most; positive: at least):")
    for label, value, goal, unit in checks:
        if value is None:
            print(f"  {label:58} n/a (not measured or invalid)")
            continue
        met = value <= -goal if goal < 0 else value >= goal
        print(f"  {label:58} {value:8.2f} {unit:2}  goal {'<=' if goal < 0 else '>='} "
              f"{abs(goal):g} {unit}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Dashboard at 10^5 calls: first paint of each page in Debian's Chromium, beside the bare
API answer for the same data as a baseline.

Run: ``.venv/bin/python bench/dashboard.py [--calls 100000] [--dir DIR]``

Seeds one SQLite database as ``teegate serve`` keeps it: ``--calls`` calls, each a ledger
hold + settlement (``Ledger.hold`` / ``settle``) and a signed receipt in the log
(``ReceiptLog.append_many``), over 40 agents (one, ``heavy``, with half of all calls), 3
providers, 4 models and 5 % failed / refused outcomes. Then starts the gateway
(``build_app``, the development node), waits for the dashboard's projection to catch up and
loads each page 5 times in Chromium: first-contentful-paint from the Paint Timing API, and
the server's time to the last byte (Navigation Timing ``responseEnd``). Chromium must be at
/usr/bin/chromium (scripts/setup installs it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from teegate.dashboard.db import DashboardDB
from teegate.gateway import GatewayStore, parse_config
from teegate.gateway.embedded import start_dev_node
from teegate.gateway.factory import build_app
from teegate.ledger import open_ledger
from teegate.receipts import AttestationRef, ProviderSignature, Receipt, ReceiptLog
from teegate.receipts.keys import load_or_create_log_key

PROVIDERS = ("near-1", "phala-2", "dev-node")
MODELS = ("deepseek-v3", "llama-3.3-70b", "qwen3-32b", "teegate-builtin")


def _h(i: int, what: str) -> str:
    return hashlib.sha256(f"{what}:{i}".encode()).hexdigest()


def seed(url: str, data_dir: Path, calls: int) -> tuple[str, str]:
    """Returns (the heavy agent's key, a receipt id in the middle)."""
    rnd = random.Random(7)
    store = GatewayStore(url)
    agents = ["heavy"] + [f"agent-{i:02d}" for i in range(39)]
    heavy_key = ""
    for a in agents:
        key = store.create_key(a, trust="attested")
        heavy_key = heavy_key or key
    ledger = open_ledger(url, durability="normal", agents=store)
    for a in agents:
        ledger.deposit(a, 10**12, key=f"seed:{a}")
    log = ReceiptLog(url, origin="teegate.local/log",
                     key=load_or_create_log_key(data_dir / "log.key"), background=False)
    t0 = time.perf_counter()
    now_ms = int(time.time() * 1000) - calls * 20_000  # spread over the last ~3 weeks
    batch: list[Receipt] = []
    middle = ""
    for i in range(calls):
        agent = "heavy" if i % 2 == 0 else agents[1 + rnd.randrange(39)]
        provider, model = rnd.choice(PROVIDERS), rnd.choice(MODELS)
        roll = rnd.random()
        outcome = "failed" if roll < 0.03 else "refused" if roll < 0.05 else "success"
        tids: tuple[str, ...] = ()
        cost = 0
        if outcome != "refused":
            h = ledger.hold(agent, 5000, now=time.time())
            cost = rnd.randrange(50, 4000) if outcome == "success" else 0
            s = ledger.settle(h.id, cost, provider=provider, model=model,
                              usage={"prompt_tokens": 20, "completion_tokens": 80})
            tids = tuple(t.id for t in s.transfers)
        rid = f"rcpt_{uuid.UUID(int=rnd.getrandbits(128)).hex[:28]}"
        middle = rid if i == calls // 2 else middle
        batch.append(Receipt(
            receipt_id=rid, time_ms=now_ms + i * 20_000, agent=agent, conversation=None,
            platform="tee-near", provider=provider if outcome != "refused" else None,
            model=model, trust_level="attested" if outcome != "refused" else None,
            trust_required="attested", outcome=outcome,  # type: ignore[arg-type]
            request_received_sha256=_h(i, "req"),
            request_forwarded_sha256=_h(i, "req") if outcome != "refused" else None,
            response_returned_sha256=_h(i, "resp"),
            provider_signature=ProviderSignature(
                text=f"{_h(i, 'req')}:{_h(i, 'resp')}", signature="0x" + "ab" * 65,
                signing_key="0x" + "cd" * 20, algo="ecdsa", verified=True)
            if outcome == "success" else None,
            attestation=AttestationRef(verdict_digest=_h(0, "verdict"), evidence_sha256=None,
                                       evidence_ref="/v1/providers/near-1/attestation",
                                       tee="tdx", tcb_status="UpToDate", gpu=False)
            if outcome == "success" else None,
            usage={"prompt_tokens": 20, "completion_tokens": 80}, cost=cost, currency="USD",
            transfer_ids=tids,
            error="insufficient funds for this call" if outcome == "refused" else
            ("upstream 503" if outcome == "failed" else None)))
        if len(batch) == 5000:
            log.append_many(batch)
            batch = []
            print(f"  seeded {i + 1:,} calls ({time.perf_counter() - t0:.0f} s)", flush=True)
    if batch:
        log.append_many(batch)
    log.checkpoint()
    log.close()
    ledger.close()
    store.close()
    return heavy_key, middle


def reuse(url: str) -> tuple[str, str, int]:
    """A new key for ``heavy``, the middle receipt and the call count of a seeded database;
    the dashboard's tables dropped (derived data) so they are rebuilt as on a first start."""
    store = GatewayStore(url)
    key = store.create_key("heavy", trust="attested")
    store.close()
    db = DashboardDB(url)
    size = int(db.all("SELECT size FROM tlog_head WHERE id = 1")[0][0])
    middle = str(db.all("SELECT receipt_id FROM tlog_leaf WHERE idx = ?", (size // 2,))[0][0])
    db.all("DELETE FROM dash_meta")
    db.close()
    return key, middle, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reuse", action="store_true",
                    help="keep the calls already seeded in --dir (the dashboard's own tables "
                         "are rebuilt, so the catch-up is measured again)")
    args = ap.parse_args()
    home = args.dir or Path(tempfile.mkdtemp(prefix="teegate-dash-bench-"))
    os.environ["TEEGATE_HOME"] = str(home)
    admin = "bench-admin-" + uuid.uuid4().hex
    os.environ["TG_BENCH_ADMIN"] = admin
    url = f"sqlite:///{home / 'teegate.db'}"
    if args.reuse and (home / "teegate.db").exists():
        heavy_key, middle, args.calls = reuse(url)
        print(f"reusing {args.calls:,} calls in {url}")
    else:
        print(f"seeding {args.calls:,} calls into {url}")
        t = time.perf_counter()
        heavy_key, middle = seed(url, home, args.calls)
        print(f"seeded in {time.perf_counter() - t:.0f} s")

    node = start_dev_node(home / "dev-pki")
    cfg = parse_config({
        "gateway": {"database_url": url, "data_dir": str(home), "admin_key_env": "TG_BENCH_ADMIN",
                    "listen": "127.0.0.1:8799"},
        "providers": [{"id": "dev-node", "platform": "tee-node", "base_url": node.url + "/v1",
                       "models": ["teegate-builtin"], "development": True}],
        "collateral": {"cache_dir": str(home / "collateral")},
    })
    t = time.perf_counter()
    app = build_app(cfg)
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(f"gateway up in {time.perf_counter() - t:.1f} s (the log verifies every leaf on open)")
    probe = DashboardDB(url)
    t = time.perf_counter()
    while (p := probe.progress())[0] < p[1]:
        time.sleep(0.2)
    print(f"dashboard projection of {p[1]:,} receipts caught up in "
          f"{time.perf_counter() - t:.1f} s (background, after start)")
    probe.close()

    pages = {
        "providers": "/dashboard/providers",
        "calls (newest 50)": "/dashboard/calls",
        "calls, agent=heavy": "/dashboard/calls?agent=heavy",
        "calls, provider+outcome": "/dashboard/calls?provider=phala-2&outcome=failed",
        "calls, receipt id prefix": f"/dashboard/calls?q={middle[:10]}",
        "calls, page 1000 deep": f"/dashboard/calls?before={args.calls // 2}",
        "agent heavy (50 % of calls)": "/dashboard/agents/heavy",
        "receipt + audit": f"/dashboard/receipts/{middle}",
        "log": "/dashboard/log",
    }
    baselines = {"calls (newest 50)": "/v1/wallets/heavy/transfers?limit=50",
                 "agent heavy (50 % of calls)": "/v1/wallets/heavy/spend?group_by=day",
                 "receipt + audit": f"/v1/receipts/{middle}"}
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(base + "/dashboard/login")
        page.fill("input[name=key]", admin)
        page.click("form.login button[type=submit]")
        page.wait_for_load_state()
        for name, path in pages.items():
            fcp, server_ms = [], []
            for _ in range(args.runs):
                page.goto(base + path)
                fcp.append(page.evaluate(
                    "new Promise(r => { const f = () => { const e = performance"
                    ".getEntriesByName('first-contentful-paint')[0]; e ? r(e.startTime)"
                    " : setTimeout(f, 10); }; f(); })"))
                server_ms.append(page.evaluate(
                    "performance.getEntriesByType('navigation')[0].responseEnd"))
            base_ms = None
            if name in baselines:
                who = heavy_key if "heavy" in baselines[name] else admin
                hs = {"authorization": f"Bearer {who}"}
                ts = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    httpx.get(base + baselines[name], headers=hs, timeout=60)
                    ts.append((time.perf_counter() - t) * 1000)
                base_ms = statistics.median(ts)
            rows.append((name, statistics.median(fcp), max(fcp), statistics.median(server_ms),
                         base_ms))
        browser.close()
    print(f"\n{args.calls:,} calls; median of {args.runs} loads (ms)")
    print(f"{'page':32} {'FCP med':>8} {'FCP max':>8} {'resp end':>9} {'API baseline':>13}")
    for name, med, mx, srv, b in rows:
        print(f"{name:32} {med:8.0f} {mx:8.0f} {srv:9.0f} "
              f"{'' if b is None else f'{b:13.0f}'}")
    server.should_exit = True
    node.stop()


if __name__ == "__main__":
    main()

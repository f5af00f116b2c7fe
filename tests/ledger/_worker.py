"""A separate OS process that loads the ledger (run as ``python -m tests.ledger._worker``).

``race URL SCHEMA AGENT THREADS AMOUNT START``: THREADS threads each try one hold of AMOUNT
on AGENT's wallet at time START, settle the successful ones at full cost; prints a JSON line
``{"ok": n, "refused": m}``.
``load URL AGENT [SCHEMA]``: holds and settles forever, leaving a few holds open; prints ``ready``
after its first 50 operations (the parent then kills it with SIGKILL).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from teegate.errors import BudgetError
from teegate.ledger import open_ledger


def race(url: str, schema: str, agent: str, threads: int, amount: int, start: float) -> None:
    lg = open_ledger(url, schema=schema or None)
    ok: list[str] = []
    refused: list[int] = []
    barrier = threading.Barrier(threads)

    def one() -> None:
        barrier.wait()
        while time.time() < start:
            time.sleep(0.001)
        try:
            h = lg.hold(agent, amount)
        except BudgetError:
            refused.append(1)
            return
        lg.settle(h.id, amount, provider="p", model="m")
        ok.append(h.id)

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"ok": len(ok), "refused": len(refused)}), flush=True)


def load(url: str, agent: str, schema: str | None) -> None:
    lg = open_ledger(url, schema=schema)
    n = 0
    while True:
        h = lg.hold(agent, 10, expires_at=time.time() + 60)
        if n % 3:
            lg.settle(h.id, 4, provider="p", model="m")
        n += 1
        if n == 50:
            print("ready", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "race":
        race(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
             float(sys.argv[7]))
    else:
        load(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)

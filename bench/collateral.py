"""Collateral cost: a cache hit beside a fetch from a local PCCS/KDS (loopback HTTP).

Run: ``.venv/bin/python bench/collateral.py``. Floor (issue 3): cache hit under 1 ms.
The server is the test suite's vendor server (real HTTP on 127.0.0.1 serving the vectors).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.collateral.vendor_server import DATA, vendor_server  # noqa: E402

from teegate.collateral import CollateralCache, fetch_tdx_collateral, fetch_vcek  # noqa: E402

TDX_QUOTE = (DATA / "collateral" / "tdx_quote").read_bytes()
TURIN = (DATA / "sev-snp" / "project-oak" / "derived-turin-report.bin").read_bytes()
TDX_NOW = 1752919234 - 60
SNP_NOW = 1756684800
FLOOR_MS = 1.0


async def _per_call_ms(fn: Callable[[], Awaitable[object]], runs: int) -> float:
    await fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(runs):
            await fn()
        best = min(best, (time.perf_counter() - t) / runs * 1000)
    return best


async def _run() -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    with vendor_server() as (url, _), tempfile.TemporaryDirectory() as d:
        cache = CollateralCache(d)
        async with httpx.AsyncClient() as client:
            out.append(("Intel TDX collateral: fetch from local PCCS (4 GETs)", await _per_call_ms(
                lambda: fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=None, client=client,
                                             now=TDX_NOW), 20)))
            out.append(("Intel TDX collateral: disk cache hit", await _per_call_ms(
                lambda: fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, client=client,
                                             now=TDX_NOW), 500)))
            out.append(("AMD VCEK: fetch from local KDS (1 GET)", await _per_call_ms(
                lambda: fetch_vcek(TURIN, kds_url=url, cache=None, client=client, now=SNP_NOW),
                20)))
            out.append(("AMD VCEK: disk cache hit", await _per_call_ms(
                lambda: fetch_vcek(TURIN, kds_url=url, cache=cache, client=client, now=SNP_NOW),
                500)))
    return out


def run() -> list[tuple[str, float]]:
    """(label, ms per call) for fetches and cache hits."""
    return asyncio.run(_run())


def main() -> None:
    results = run()
    for label, ms in results:
        print(f"{label:56s} {ms:8.3f} ms")
    worst = max(ms for label, ms in results if "cache hit" in label)
    print(f"{'worst cache hit (floor 1 ms)':56s} {worst:8.3f} ms  "
          f"{'OK' if worst < FLOOR_MS else 'ABOVE FLOOR'}")


if __name__ == "__main__":
    main()

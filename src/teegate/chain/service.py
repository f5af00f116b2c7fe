"""Wiring for ``teegate serve``: the channel accounting in front of the ledger's, and a
background thread that mirrors the chain and claims in batches (at once when a payer's
withdrawal is pending). Failures are logged and retried next round; a reorg stops mirroring
and claiming, says so in the log and in ``teegate_chain_reorgs``, and leaves calls refused
only where the book no longer covers them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from teegate.chain.accounting import ChannelAccounting, ChannelCallError
from teegate.chain.book import ChannelBook, ReorgError
from teegate.chain.config import ChainConfig
from teegate.chain.edge import ChainEdge, ChainMetrics
from teegate.errors import TeegateError

log = logging.getLogger("teegate.chain")


def channel_accounting(cfg: ChainConfig, backend: Any, inner: Any,
                       refuse: Callable[[ChannelCallError], Exception]) -> ChannelAccounting:
    return ChannelAccounting(ChannelBook(backend), cfg.domain, inner, refuse=refuse)


class ClaimLoop:
    """Sync and claim every few seconds; claim batches every ``claim_interval``, urgent ones
    at once."""

    def __init__(self, edge: ChainEdge, *, tick: float = 2.0) -> None:
        self.edge = edge
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="teegate-chain", daemon=True)
        self._last_claim = time.monotonic()  # the first batch after one interval

    def start(self) -> ClaimLoop:
        self._thread.start()
        return self

    def once(self) -> None:
        self.edge.sync()
        now = time.monotonic()
        if self.edge.urgent() or now - self._last_claim >= self.edge.cfg.claim_interval:
            self._last_claim = now
            if self.edge.claim() is not None:
                self.edge.settle()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.once()
            except ReorgError:
                return  # logged and counted by the edge; an operator must look
            except (TeegateError, OSError, ValueError) as e:
                log.warning("chain: %s (retrying)", e)
            except Exception:
                log.exception("chain: unexpected error (retrying)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def start_claim_loop(cfg: ChainConfig, book: ChannelBook,
                     metrics: ChainMetrics | None = None) -> ClaimLoop:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(cfg.rpc_url, request_kwargs={"timeout": 15}))
    return ClaimLoop(ChainEdge(w3, cfg, book, metrics=metrics)).start()

"""The state one gateway process shares between its requests: configuration, providers and
their attestation, keys, metrics, the ledger and receipt bridges, and the background tasks
that keep them current (key reload, hold renewal). The call path itself lives in
``teegate.gateway.pipeline``; the HTTP routes in ``teegate.gateway.app``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable

import anyio.to_thread

from teegate.gateway.attestation import AttestationManager, ProviderRuntime
from teegate.gateway.auth import Agent, KeyCache, bearer
from teegate.gateway.calls import Accounting, CallRecord, Receipts
from teegate.gateway.collateral import CollateralSource
from teegate.gateway.config import GatewayConfig
from teegate.gateway.errors import GatewayRefusal
from teegate.gateway.metrics import Metrics
from teegate.gateway.store import GatewayStore
from teegate.gateway.throttle import AuthThrottle
from teegate.providers.translated import adapter_for
from teegate.redact import Redactor
from teegate.routing.health import Health

log = logging.getLogger("teegate.gateway")


class Gateway:
    """State shared by all requests of one gateway process."""

    def __init__(
        self, config: GatewayConfig, store: GatewayStore, *, clock: Callable[[], float] = time.time,
        accounting: Accounting | None = None, receipts: Receipts | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self.accounting = accounting
        self.receipts = receipts
        self.keys = KeyCache(store, config.admin_key)
        self.throttle = AuthThrottle(config.auth_fail_limit, config.auth_fail_window_s)
        c = config.collateral
        self.redact = Redactor([*(pc.base_url for pc in config.providers), c.pccs_url,
                                c.kds_url, c.nvidia_ocsp_url, c.nvidia_rim_url])
        self.providers: list[ProviderRuntime] = []
        for pc in config.providers:
            adapter = adapter_for(pc.id, pc.platform, pc.base_url, api_key=pc.api_key,
                                  timeout=pc.timeout, max_body=config.max_response_bytes)
            self.providers.append(ProviderRuntime(
                pc, adapter, Health(config.allowed_fails, config.cooldown_s)))
        self.by_id = {p.id: p for p in self.providers}
        self.by_model: dict[str, list[ProviderRuntime]] = {}
        for p in self.providers:
            for m in p.config.models:
                self.by_model.setdefault(m, []).append(p)
        self.manager = AttestationManager(
            self.providers, store, self.metrics, quarantine_s=config.quarantine_s,
            poll_s=config.state_poll_s, clock=clock,
            collateral=CollateralSource(config.collateral, config.data_dir)
            if any(p.attestable for p in self.providers) else None)
        self.started = False
        self.closers: list[Callable[[], None]] = []  # run after shutdown (logs, ledger)
        # called with each concluded call, before its last byte (gateway/self_attestation.py)
        self.concluded_hooks: list[Callable[[CallRecord], None]] = []
        self._poll: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        # Holds of calls not settled yet: renewed so a long call outlives its first expiry.
        self.running_holds: set[str] = set()
        self.lost_holds: set[str] = set()  # running calls whose hold is gone: cut them off
        # Settlements and receipts run here; their commits are shared (group commit).
        self.pool = concurrent.futures.ThreadPoolExecutor(64, "teegate-conclude")

    # ------------------------------------------------------------------ life cycle

    async def startup(self) -> None:
        def ensure_agents() -> None:
            for a in self.config.agents:
                self.store.ensure_agent(a.id, trust=a.trust.label, min_trust=a.min_trust.label,
                                        owner=a.owner)

        await anyio.to_thread.run_sync(ensure_agents)
        await anyio.to_thread.run_sync(self.keys.reload)
        await self.manager.start()
        self._poll = asyncio.create_task(self._reload_keys())
        if self.accounting is not None:
            self._renewer = asyncio.create_task(self._renew_holds())
        self.started = True
        for p in self.providers:
            log.info("provider %s (%s): %s, trust level %s%s", p.id, p.config.platform.name,
                     p.status, p.level(self.clock()).label,
                     " [DEVELOPMENT]" if p.config.development else "")

    async def shutdown(self) -> None:
        for task in (self._poll, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.manager.stop()
        for p in self.providers:
            await p.adapter.aclose()
        self.pool.shutdown(wait=True)
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("shutdown: closing a resource failed")

    async def _renew_holds(self) -> None:
        """Every third of ``hold_seconds``, give running calls' holds a full hold time again:
        otherwise the expiry sweep releases the hold of a call that outlives it (a slow reader
        can stretch a stream) and its settlement finds nothing to charge."""
        assert self.accounting is not None
        while True:
            await asyncio.sleep(self.config.hold_s / 3)
            running = list(self.running_holds)
            if not running:
                continue
            try:
                await anyio.to_thread.run_sync(self.accounting.renew, running)
                lost = await anyio.to_thread.run_sync(self.accounting.lost, running)
            except Exception:
                log.exception("ledger: cannot renew the holds of %d running calls",
                              len(running))
                continue
            for h in lost & self.running_holds:  # released under a running call
                log.error("ledger: hold %s was released while its call was running (an "
                          "expiry sweep, perhaps from a host whose clock runs ahead); the "
                          "call is cut off", h)
                self.lost_holds.add(h)

    async def _reload_keys(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_poll_s)
            try:
                await anyio.to_thread.run_sync(self.keys.reload)
            except Exception:
                log.exception("cannot reload agent keys")

    # ------------------------------------------------------------------ helpers

    async def authenticate(self, authorization: str | None, client: str | None = None
                           ) -> Agent:
        key = bearer(authorization)
        if key is None:
            raise GatewayRefusal(401, "missing API key: send 'Authorization: Bearer <key>'",
                                 code="invalid_api_key")
        self.check_throttle(client)
        agent = self.keys.cached(key)
        if agent is None:
            agent = await anyio.to_thread.run_sync(self.keys.lookup, key)
        if agent is None:
            self.throttle.failed(client)
        if agent is None or agent.kind != "agent":
            raise GatewayRefusal(401, "invalid API key", code="invalid_api_key")
        return agent

    def redacted(self, r: GatewayRefusal) -> GatewayRefusal:
        """``r`` without upstream addresses in what the agent reads (teegate.redact); the
        operator's log keeps them."""
        message = self.redact(r.message)
        if message != r.message:
            log.info("refusal as sent to the agent, unredacted: %s", r.message)
        r.message = message
        if r.extra:
            r.extra = self.redact.value(r.extra)  # type: ignore[assignment]
        return r

    def check_throttle(self, client: str | None) -> None:
        """429 while ``client`` has used up its failed authentications: before its key is
        checked, the right key included (teegate.gateway.throttle)."""
        wait = self.throttle.retry_after(client)
        if wait is not None:
            raise GatewayRefusal(
                429, f"too many failed authentications from this address; retry in {wait} s",
                code="too_many_failed_authentications", retry=False,
                headers=[(b"retry-after", str(wait).encode())])

"""The attestation manager: one verdict per attested provider, obtained with a fresh nonce,
cached until it expires, refreshed in the background before expiry, and dropped at once when a
response signature fails, the signing key changes or a refresh is rejected.

Attestation never runs on the request path: requests read ``ProviderRuntime.level(now)``,
a few attribute reads. Quarantines are written to the shared store so that every gateway
process sharing the database drops the provider too."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio.to_thread

from teegate.attest.binding import fresh_nonce
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check, Verdict
from teegate.errors import CollateralError, TeegateError
from teegate.gateway.collateral import CollateralSource, Fetched
from teegate.gateway.config import ProviderConfig
from teegate.gateway.metrics import Metrics
from teegate.gateway.store import GatewayStore, ProviderState
from teegate.node.signatures import normalize_signing_address, verify_response_signature
from teegate.providers.adapter import OpenAIAdapter
from teegate.routing.health import Health
from teegate.routing.trust import TrustLevel

log = logging.getLogger("teegate.gateway")
Clock = Callable[[], float]


@dataclass
class Attested:
    """An accepted verdict and the key it binds."""

    verdict: Verdict
    digest: str
    signing_address: str
    signing_algo: str
    identity: bytes
    level: TrustLevel
    expires_at: float  # wall-clock seconds
    development: bool
    report_sha256: str = ""  # sha256 of the exact report bytes (kept in the store)
    nonce: str = ""
    # Every attested key -> (signing address, verdict digest): a provider behind a load
    # balancer has one key per replica (NEAR model_attestations / merged all_attestations).
    keys: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    # Models checked with a report of their own: model -> (evidence sha256, nonce hex).
    model_evidence: dict[str, tuple[str, str]] = field(default_factory=dict)

    def knows(self, address: str, algo: str) -> bool:
        ident = normalize_signing_address(address, algo)
        return algo == self.signing_algo and ident is not None and (
            ident == self.identity or ident in self.keys)

    def ref(self, model: str | None = None) -> dict[str, Any]:
        """What a receipt cites: verdict digest, evidence hash, TEE, TCB, GPU, nonce, and the
        model identity the call relied on (from the model's own verdict where it has one)."""
        mv = self.verdict.models.get(model) if model is not None else None
        sha, nonce = self.model_evidence.get(model or "", (self.report_sha256, self.nonce))
        return {"verdict_digest": self.digest, "evidence_sha256": sha,
                "tee": self.verdict.tee, "tcb_status": self.verdict.tcb_status,
                "gpu": self.level == TrustLevel.ATTESTED_GPU, "nonce": nonce,
                "model_identity": dict((mv or self.verdict).model),
                "model_policy": model if mv is not None else None}

    def model_refusal(self, model: str) -> str | None:
        """Why this verdict may not serve ``model`` under the model's policy, or None."""
        mv = self.verdict.models.get(model)
        if mv is None or mv.accepted:
            return None
        why = "; ".join(f"{c.name}: {c.detail}" for c in mv.failures[:2]) or "no checks ran"
        return f"refused by the model policy of {model!r}: {why}"


@dataclass
class ProviderRuntime:
    """Everything the gateway knows about one provider at run time."""

    config: ProviderConfig
    adapter: OpenAIAdapter
    health: Health
    attested: Attested | None = None
    # pending attested unproven unreachable unverifiable rejected quarantined
    status: str = "pending"
    detail: str = "no attestation yet"
    last_verdict: Verdict | None = None  # the latest verdict, accepted or not
    quarantined_until: float = 0.0
    quarantine_reason: str = ""
    # Set by a quarantine, cleared only by an accepted verdict: a provider whose quarantine
    # ran out serves nothing, at any level, until it has been attested afresh.
    needs_verdict: bool = False
    refreshes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def attestable(self) -> bool:
        return self.config.platform.evidence != "none"

    def blocked(self, now: float, model: str | None = None) -> str | None:
        """Why the provider may not serve (``model``, or at all) right now, or None."""
        why = self._blocked(now)
        if why is None and model is not None and model in self.config.model_policies:
            a = self.current(now)
            why = a.model_refusal(model) if a is not None else None
        return why

    def _blocked(self, now: float) -> str | None:
        if self.quarantined_until > now:
            return (f"quarantined for {int(self.quarantined_until - now)} s: "
                    f"{self.quarantine_reason}")
        if self.status == "rejected":
            return f"attestation rejected: {self.detail}"
        if self.needs_verdict:
            return f"quarantine over, not attested again yet: {self.quarantine_reason}"
        return None

    def current(self, now: float) -> Attested | None:
        a = self.attested
        return a if a is not None and a.expires_at > now else None

    def level(self, now: float) -> TrustLevel:
        """The trust level this provider can serve at ``now`` (ignoring blocks)."""
        a = self.current(now)
        level = a.level if a is not None else self.config.platform.claimed
        cap = self.config.trust_cap
        return min(level, cap) if cap is not None else level

    def drop(self, status: str, detail: str) -> None:
        self.attested = None
        self.status = status
        self.detail = detail


def replica_reports(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The node reports inside one provider report: a load balancer's merged
    ``all_attestations``, or NEAR cloud-api's ``model_attestations`` (REFERENCE §7.1); a
    single node's report (whose two lists hold only itself) is its own one replica: the
    evidence verified is the report's own, never a copy beside it. A merged list of several
    comes first: a balancer that merges ``all_attestations`` into its first node's report
    leaves that node's one-entry ``model_attestations`` in place."""
    merged = report.get("all_attestations")
    if isinstance(merged, list) and len(merged) > 1 and all(isinstance(m, dict)
                                                            for m in merged):
        return merged
    if "intel_quote" in report or "snp_report" in report:
        return [report]
    models = report.get("model_attestations")
    if isinstance(models, list) and models and all(isinstance(m, dict) for m in models):
        return models
    return [report]


def _gpu_backed(verdict: Verdict) -> bool:
    return bool(verdict.components) and all(c.accepted for c in verdict.components)


class AttestationManager:
    """Background attestation of every provider whose platform offers evidence."""

    def __init__(self, providers: list[ProviderRuntime], store: GatewayStore, metrics: Metrics,
                 *, quarantine_s: int, poll_s: float = 1.0, clock: Clock = time.time,
                 collateral: CollateralSource | None = None) -> None:
        self.providers = providers
        self.collateral = collateral
        self.store = store
        self.metrics = metrics
        self.quarantine_s = quarantine_s
        self.poll_s = poll_s
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ life cycle

    async def start(self, *, wait: float = 10.0) -> None:
        """Attest every provider once (up to ``wait`` seconds in total), then keep them fresh
        in the background."""
        first = [asyncio.create_task(self.refresh(p)) for p in self.providers if p.attestable]
        if first:
            await asyncio.wait(first, timeout=wait)
        for p in self.providers:
            if p.attestable:
                self._tasks.append(asyncio.create_task(self._keep_fresh(p)))
        self._tasks.append(asyncio.create_task(self._poll_shared()))

    async def stop(self) -> None:
        for t in [*self._tasks, *self._bg]:
            t.cancel()
        for t in [*self._tasks, *self._bg]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ------------------------------------------------------------------ refresh

    async def refresh(self, p: ProviderRuntime) -> None:
        """Fetch a report with a fresh nonce and verify it. The old verdict keeps serving
        until this finishes; a rejection drops it at once."""
        if p.quarantined_until > self.clock():
            return
        nonce = fresh_nonce()
        try:
            report, raw = await p.adapter.fetch_report(nonce, model=p.config.models[0])
        except TeegateError as e:
            self.metrics.refreshes.labels(p.id, "unreachable").inc()
            if p.config.platform.evidence == "probe":
                p.status, p.detail = "unproven", f"no attestation report ({e})"
            elif p.current(self.clock()) is None:
                p.status, p.detail = "unreachable", str(e)
            self._publish_level(p)
            return
        now = self.clock()
        replicas = replica_reports(report)
        try:
            fetched = [await self.collateral.for_report(
                           r, now=int(now), development=p.config.development,
                           gpu_ocsp=p.config.policy is not None
                           and p.config.policy.gpu.require_ocsp,
                           gpu_rims=p.config.policy is not None
                           and p.config.policy.gpu.require_rim)
                       if self.collateral is not None else Fetched() for r in replicas]
        except CollateralError as e:
            # Not the provider's fault: no quarantine, but nothing to verify with either.
            self.metrics.refreshes.labels(p.id, "collateral_unavailable").inc()
            if p.current(self.clock()) is None:
                p.status, p.detail = "unverifiable", f"collateral unavailable: {e}"
            log.error("provider %s: collateral unavailable: %s", p.id, e)
            self._publish_level(p)
            return
        except TeegateError as e:
            self._reject(p, f"malformed report: {e}", "evidence.malformed")
            return
        try:
            verdicts = await anyio.to_thread.run_sync(
                lambda: [self._verify(p, r, nonce, int(now), f)
                         for r, f in zip(replicas, fetched, strict=True)])
        except TeegateError as e:
            self._reject(p, f"malformed report: {e}", "evidence.malformed")
            return
        p.refreshes += 1
        keys: dict[bytes, tuple[str, str]] = {}
        algo = p.adapter.signing_algo
        for i, (rep, verdict) in enumerate(zip(replicas, verdicts, strict=True)):
            p.last_verdict = verdict
            where = f"replica {i}: " if len(replicas) > 1 else ""
            if not verdict.accepted:  # every replica must verify: fail closed
                first = verdict.failures[0] if verdict.failures else None
                why = "; ".join(f"{c.name}: {c.detail}" for c in verdict.failures[:3]) or (
                    "no checks")
                self._reject(p, where + why, first.name if first else "none")
                return
            address = str(rep.get("signing_address", ""))
            identity = normalize_signing_address(address, algo)
            if identity is None or str(rep.get("signing_algo", algo)) != algo:
                self._reject(p, f"{where}report names no usable {algo} signing key",
                             "client.signing_address")
                return
            keys[identity] = (address, verdict.digest())
        models, model_evidence = await self._model_verdicts(p, replicas, fetched, nonce, raw)
        verdict = replace(verdicts[0], models=models)
        p.last_verdict = verdict
        address = str(replicas[0].get("signing_address", ""))
        identity = normalize_signing_address(address, algo) or b""
        previous = p.attested
        not_after = min((v.not_after for v in verdicts if v.not_after is not None),
                        default=int(now) + 86400)
        expires = min(float(not_after), now + p.config.attestation_ttl)
        gpu = all(_gpu_backed(v) for v in verdicts)
        level = TrustLevel.ATTESTED_GPU if gpu else TrustLevel.ATTESTED
        digest = verdict.digest()
        report_sha = hashlib.sha256(raw).hexdigest()
        p.attested = Attested(verdict, digest, address, algo, identity, level, expires,
                              any(v.development for v in verdicts), report_sha, nonce.hex(),
                              keys, {m: (h, n) for m, (h, n, _) in model_evidence.items()})
        p.needs_verdict = False
        p.status, p.detail = "attested", ("DEVELOPMENT TEE (simulated; not confidential)"
                                          if p.attested.development else "verified")
        if len(keys) > 1:
            p.detail += f"; {len(keys)} replicas, each with its own attested key"
        # The set of attested keys, not the map: its verdict digests change with every
        # refresh's nonce, so comparing them would call each re-attestation a key change.
        if previous is not None and set(previous.keys) != set(keys):
            log.warning("provider %s: signing key(s) changed %s -> %s (re-attested)", p.id,
                        ", ".join(sorted(a for a, _ in previous.keys.values())),
                        ", ".join(sorted(a for a, _ in keys.values())))
        for m, mv in models.items():
            if not mv.accepted:
                failed = mv.failures[0].name if mv.failures else "none"
                log.error("provider %s: %s", p.id, p.attested.model_refusal(m))
                self.metrics.attestation_failures.labels(p.id, f"model:{failed}").inc()
        self.metrics.refreshes.labels(p.id, "accepted").inc()
        self._publish_level(p)
        await self._store_state(p, verdict, int(not_after), report_sha, raw)
        for h, _, model_raw in model_evidence.values():
            await anyio.to_thread.run_sync(self.store.put_evidence, h, model_raw)

    async def _model_verdicts(
        self, p: ProviderRuntime, replicas: list[dict[str, Any]], fetched: list[Fetched],
        nonce: bytes, raw: bytes,
    ) -> tuple[dict[str, Verdict], dict[str, tuple[str, str, bytes]]]:
        """Per model with a model policy: its verdict under that policy, from the report the
        provider gives for that model (the one already fetched for its first model, a fresh
        one with a fresh nonce for the others). A model whose report cannot be had or
        verified gets a failing verdict: it is refused, the provider's other models are not."""
        out: dict[str, Verdict] = {}
        evidence: dict[str, tuple[str, str, bytes]] = {}
        for model, mp in p.config.model_policies.items():
            reps, got, n = replicas, fetched, nonce
            try:
                if model != p.config.models[0]:
                    n = fresh_nonce()
                    report, model_raw = await p.adapter.fetch_report(n, model=model)
                    reps = replica_reports(report)
                    got = [await self.collateral.for_report(
                               r, now=int(self.clock()), development=p.config.development,
                               gpu_ocsp=mp.gpu.require_ocsp, gpu_rims=mp.gpu.require_rim)
                           if self.collateral is not None else Fetched() for r in reps]
                    evidence[model] = (hashlib.sha256(model_raw).hexdigest(), n.hex(),
                                       model_raw)
                vs = await anyio.to_thread.run_sync(functools.partial(
                    self._verify_all, p, reps, got, n, int(self.clock()), mp))
            except TeegateError as e:
                out[model] = Verdict(tee="none", checks=(Check(
                    "model.report", False, f"no verifiable report for {model!r}: {e}"),))
                continue
            bad = [v for v in vs if not v.accepted]
            out[model] = bad[0] if bad else vs[0]
        return out, evidence

    def _verify_all(self, p: ProviderRuntime, reports: list[dict[str, Any]],
                    fetched: list[Fetched], nonce: bytes, now: int,
                    policy: Policy) -> list[Verdict]:
        return [self._verify(p, r, nonce, now, f, policy)
                for r, f in zip(reports, fetched, strict=True)]

    def _verify(self, p: ProviderRuntime, report: dict[str, Any], nonce: bytes,
                now: int, fetched: Fetched, policy: Policy | None = None) -> Verdict:
        from teegate.client.report import verify_report

        policy = policy or p.config.policy
        assert policy is not None
        return verify_report(report, nonce=nonce, policy=policy, now=now,
                             signing_algo=p.adapter.signing_algo, collateral=fetched.intel,
                             snp_certificates=fetched.snp_certificates,
                             snp_crl=fetched.snp_crl, gpu_ocsp=fetched.gpu_ocsp,
                             gpu_rims=fetched.gpu_rims)

    def _reject(self, p: ProviderRuntime, why: str, check: str) -> None:
        log.error("provider %s: attestation rejected: %s", p.id, why)
        self.metrics.refreshes.labels(p.id, "rejected").inc()
        self.metrics.attestation_failures.labels(p.id, check).inc()
        p.drop("rejected", why)
        self.quarantine(p, f"attestation rejected: {why}")

    async def _keep_fresh(self, p: ProviderRuntime) -> None:
        backoff = 1.0
        while True:
            now = self.clock()
            a = p.current(now)
            if p.quarantined_until > now:
                delay = p.quarantined_until - now
            elif a is not None:
                backoff = 1.0
                delay = max(0.5, 0.8 * (a.expires_at - now))
            else:
                delay = backoff
                backoff = min(backoff * 2, 30.0)
            p.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wake.wait(), timeout=delay)
            try:
                await self.refresh(p)
            except Exception:  # keep the loop alive; the provider stays unattested
                log.exception("provider %s: attestation refresh crashed", p.id)

    # ------------------------------------------------------------------ drop / quarantine

    def signature_failed(self, p: ProviderRuntime, why: str) -> None:
        """A response signature did not verify: drop the verdict, quarantine everywhere."""
        log.error("provider %s: response signature failed: %s", p.id, why)
        self.metrics.signature_failures.labels(p.id).inc()
        self.metrics.signature_checks.labels(p.id, "failed").inc()
        p.drop("quarantined", f"response signature failed: {why}")
        self.quarantine(p, f"response signature failed: {why}")

    def key_changed(self, p: ProviderRuntime, address: str) -> None:
        """Responses come signed by a key the verdict does not bind: drop it, re-attest now."""
        log.warning("provider %s: responses signed by unattested key %s; re-attesting", p.id,
                    address)
        p.drop("pending", f"signing key changed to {address}; re-attesting")
        self._publish_level(p)
        p.wake.set()

    def quarantine(self, p: ProviderRuntime, reason: str) -> None:
        until = self.clock() + self.quarantine_s
        p.quarantined_until = until
        p.quarantine_reason = reason
        p.needs_verdict = True
        p.wake.set()  # re-attest when the quarantine ends, not on the old schedule
        self._publish_level(p)
        bound = p.last_verdict.bound_key if p.last_verdict is not None else None
        self.spawn(anyio.to_thread.run_sync(
            lambda: self.store.quarantine(p.id, until=int(until), reason=reason,
                                          bound_key=bound)))

    async def lift(self, p: ProviderRuntime) -> None:
        """Operator action: end the quarantine (here and in the shared store); the caller
        re-attests."""
        await anyio.to_thread.run_sync(self.store.lift, p.id)
        p.quarantined_until = 0.0
        p.quarantine_reason = ""
        p.status = "pending"

    async def _store_state(self, p: ProviderRuntime, verdict: Verdict, not_after: int,
                           report_sha: str, raw: bytes) -> None:
        state = ProviderState(p.id, p.status, p.detail, verdict.digest(), verdict.bound_key,
                              not_after, 0, self.clock())

        def write() -> None:
            self.store.put_state(state)
            self.store.put_evidence(report_sha, raw)

        try:
            await anyio.to_thread.run_sync(write)
        except Exception:
            log.exception("provider %s: cannot record attestation state", p.id)

    async def _poll_shared(self) -> None:
        """Adopt quarantines written by other gateway processes."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync_shared()
            except Exception:
                log.exception("cannot read shared provider state")

    async def sync_shared(self) -> None:
        states = await anyio.to_thread.run_sync(self.store.states)
        now = self.clock()
        for p in self.providers:
            s = states.get(p.id)
            if s is None or s.quarantined_until <= now or s.quarantined_until <= (
                    p.quarantined_until):
                continue
            log.error("provider %s: quarantined by another gateway process: %s", p.id, s.detail)
            p.drop("quarantined", s.detail)
            p.quarantined_until = float(s.quarantined_until)
            p.quarantine_reason = s.detail
            p.needs_verdict = True
            p.wake.set()
            self._publish_level(p)

    def _publish_level(self, p: ProviderRuntime) -> None:
        now = self.clock()
        value = -1 if p.blocked(now) else int(p.level(now))
        self.metrics.provider_level.labels(p.id).set(value)

    # ------------------------------------------------------------------ response signatures

    def check_signature(self, p: ProviderRuntime, a: Attested, *, text: str, signature: str,
                        address: str, algo: str, expected_text: str) -> str | None:
        """None when the signature over ``expected_text`` verifies by the attested key;
        otherwise the reason (and the verdict is dropped / the provider quarantined)."""
        if not a.knows(address, algo):
            self.metrics.signature_checks.labels(p.id, "key_changed").inc()
            self.key_changed(p, address)
            return f"signed by {address} ({algo}), not the attested key {a.signing_address}"
        if text != expected_text:
            why = "signed text does not match the exact request and response bytes"
            self.signature_failed(p, why)
            return why
        if not verify_response_signature(text, signature, address, algo):
            why = "signature does not verify"
            self.signature_failed(p, why)
            return why
        self.metrics.signature_checks.labels(p.id, "verified").inc()
        return None

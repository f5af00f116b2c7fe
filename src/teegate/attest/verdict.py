"""The verdict: what teegate concluded about one piece of evidence, and why.

A verdict is accepted exactly when it has at least one check and every check passed, so no
code path can accept evidence without having said which checks it ran.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    """One named check. ``name`` is dotted and stable (``tdx.quote_signature``) so tools can
    match on it; ``detail`` is for people."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class CheckList:
    """Collects checks while a verifier runs; ``ok`` is False once any check failed, and
    False while there is none (no check run is not a pass)."""

    def __init__(self) -> None:
        self._checks: list[Check] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self._checks.append(Check(name, ok, detail))
        return ok

    def passed(self, name: str, detail: str) -> bool:
        return self.add(name, True, detail)

    def failed(self, name: str, detail: str) -> bool:
        return self.add(name, False, detail)

    def extend(self, checks: Iterable[Check]) -> None:
        self._checks.extend(checks)

    @property
    def ok(self) -> bool:
        return bool(self._checks) and all(c.ok for c in self._checks)

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(self._checks)


@dataclass(frozen=True)
class Verdict:
    """Result of verifying evidence against a policy at a given ``now``.

    ``measurements`` and ``identity`` hold lower-case hex or plain strings keyed by stable
    names (``mrtd``, ``rtmr0``, ``measurement``, ``host_data``, ``compose_hash``, ``app_id``,
    ``fmspc``, ``chip_id``, ``product`` …). ``not_before``/``not_after`` bound the window (unix
    seconds) in which the verdict may be relied upon: the intersection of the collateral and
    certificate validity. ``components`` holds sub-verdicts (one per GPU, say).

    ``model`` is the model identity the evidence shows (``teegate.attest.identity``: OS image,
    compose hash, image digests, weights, Sigstore log entries); ``models`` holds, per model
    name, the verdict under that model's policy. Neither changes ``accepted``: a model whose
    entry is not accepted is refused for that model alone. Both are in the digest.
    """

    tee: str
    checks: tuple[Check, ...]
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    measurements: Mapping[str, str] = field(default_factory=dict)
    identity: Mapping[str, str] = field(default_factory=dict)
    report_data: str | None = None
    bound_key: str | None = None
    nonce: str | None = None
    not_before: int | None = None
    not_after: int | None = None
    components: tuple[Verdict, ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Verdict] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks) and all(
            c.accepted for c in self.components
        )

    @property
    def failures(self) -> tuple[Check, ...]:
        own = tuple(c for c in self.checks if not c.ok)
        return own + tuple(f for comp in self.components for f in comp.failures)

    @property
    def development(self) -> bool:
        """True when any check rests on a development (simulated) root of trust."""
        return any(c.name.endswith(".development_root") for c in self.checks) or any(
            c.development for c in self.components
        )

    def with_checks(self, checks: Iterable[Check], **changes: Any) -> Verdict:
        """A copy with more checks (and optionally other fields changed)."""
        return replace(self, checks=self.checks + tuple(checks), **changes)

    def check(self, name: str) -> Check | None:
        for c in self.checks:
            if c.name == name:
                return c
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "tee": self.tee,
            "development": self.development,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "measurements": dict(self.measurements),
            "identity": dict(self.identity),
            "report_data": self.report_data,
            "bound_key": self.bound_key,
            "nonce": self.nonce,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "checks": [c.to_json() for c in self.checks],
            "components": [c.to_json() for c in self.components],
            "model": dict(self.model),
            "models": {k: v.to_json() for k, v in sorted(self.models.items())},
        }

    def digest(self) -> str:
        """sha256 hex of the canonical JSON form: the id receipts use to name this verdict."""
        body = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def window(*bounds: tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    """Intersect validity windows; ``None`` means unbounded on that side."""
    starts = [b[0] for b in bounds if b[0] is not None]
    ends = [b[1] for b in bounds if b[1] is not None]
    return (max(starts) if starts else None, min(ends) if ends else None)


def merge_checks(*groups: Iterable[Check]) -> tuple[Check, ...]:
    out: list[Check] = []
    for g in groups:
        out.extend(g)
    return tuple(out)


def hexstr(data: bytes) -> str:
    return data.hex()


def as_mapping(items: Mapping[str, bytes]) -> dict[str, str]:
    return {k: v.hex() for k, v in items.items()}

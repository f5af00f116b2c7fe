"""Per-provider health: consecutive failures, cool-down, and a latency average.

In-process only (a cool-down is a local, short-lived judgement); quarantines that other
processes must see are kept in the database by the gateway's store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Health:
    """Failure and latency bookkeeping of one provider (monotonic seconds)."""

    allowed_fails: int = 3
    cooldown_s: float = 30.0
    failures: int = 0
    cooldown_until: float = 0.0
    latency_ms: float = 0.0

    def success(self, latency_ms: float) -> None:
        self.failures = 0
        self.cooldown_until = 0.0
        self.latency_ms = latency_ms if self.latency_ms == 0 else (
            0.8 * self.latency_ms + 0.2 * latency_ms)

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.allowed_fails:
            self.cooldown_until = now + self.cooldown_s

    def cooling(self, now: float) -> bool:
        return self.cooldown_until > now

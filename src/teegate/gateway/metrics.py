"""Prometheus metrics of one gateway process, in their own registry (label sets are small:
provider ids and outcome classes, never agents or models, to cap cardinality)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("teegate_requests", "Chat calls by provider and outcome",
                                ["provider", "outcome"], registry=r)
        self.latency = Histogram("teegate_request_duration_seconds",
                                 "Time to the last byte of a chat call", ["stream"],
                                 buckets=_BUCKETS, registry=r)
        self.upstream_latency = Histogram("teegate_upstream_duration_seconds",
                                          "Provider time to response headers", ["provider"],
                                          buckets=_BUCKETS, registry=r)
        self.failovers = Counter("teegate_failovers", "Attempts abandoned for the next provider",
                                 ["provider", "reason"], registry=r)
        self.refreshes = Counter("teegate_attestation_refreshes",
                                 "Attestation refreshes by result", ["provider", "result"],
                                 registry=r)
        self.attestation_failures = Counter("teegate_attestation_failures",
                                            "Rejected attestations by first failed check",
                                            ["provider", "check"], registry=r)
        self.signature_failures = Counter("teegate_response_signature_failures",
                                          "Response signatures that did not verify",
                                          ["provider"], registry=r)
        self.signature_checks = Counter("teegate_response_signature_checks",
                                        "Response signature checks by result", ["provider",
                                                                                "result"],
                                        registry=r)
        self.provider_level = Gauge("teegate_provider_trust_level",
                                    "Trust level a provider serves now: -1 blocked, 0 standard, "
                                    "1 tee, 2 attested, 3 attested+gpu", ["provider"],
                                    registry=r)
        self.provider_cooled_down = Gauge("teegate_provider_cooled_down",
                                          "1 while a provider is in cool-down", ["provider"],
                                          registry=r)
        self.log_stuck = Gauge("teegate_receipt_log_stuck",
                               "1 while the receipt log cannot append (calls are refused)",
                               registry=r)
        self.log_backlog = Gauge("teegate_receipt_log_backlog",
                                 "Receipts committed but not yet in the log's tree", registry=r)
        self.receipt_failures = Counter("teegate_receipt_commit_failures",
                                        "Calls whose receipt could not be committed (answered "
                                        "without a receipt id, or cut off)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

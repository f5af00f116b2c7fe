"""NVIDIA GPU attestation: SPDM evidence, device chains, RIMs (work in progress)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from teegate.attest.policy import Policy
from teegate.attest.verdict import Check, Verdict


def appraise_gpus(
    nvidia_payload: str | Mapping[str, Any] | None,
    *,
    nonce: bytes | None,
    policy: Policy,
    now: int,
) -> tuple[list[Check], tuple[Verdict, ...]]:
    """Appraise a provider's ``nvidia_payload`` under ``policy.gpu`` (stub: fails closed)."""
    del nonce, now
    if nvidia_payload is None and policy.gpu.mode != "required":
        return [], ()
    return [Check("gpu.evidence", False, "GPU verification not implemented yet")], ()

"""Shared data for the GPU tests: the real NVIDIA vectors and their verification time."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

from teegate.attest.policy import BindingPolicy, GpuPolicy, Policy

DATA = Path(__file__).resolve().parent.parent / "data" / "nvidia"
NOW = 1735689600  # 2025-01-01: device chains and the sample RIMs' signers are all valid
SAMPLE_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
DEFAULT = Policy.default()
# Offline audit of old evidence: the vectors' nonces are published samples.
AUDIT = dataclasses.replace(DEFAULT, binding=BindingPolicy(require_nonce=False))


def with_gpu(policy: Policy, **gpu: Any) -> Policy:
    return dataclasses.replace(policy, gpu=dataclasses.replace(policy.gpu, **gpu))


def require_rim(policy: Policy) -> Policy:
    return dataclasses.replace(policy, gpu=GpuPolicy(require_rim=True))


def hopper() -> tuple[bytes, bytes]:
    """nvtrust's H100 sample: (evidence as hex text, PEM chain)."""
    return ((DATA / "hopperAttestationReport.txt").read_bytes(),
            (DATA / "hopperCertChain.txt").read_bytes())


def hopper_raw() -> bytes:
    return bytes.fromhex(hopper()[0].decode().strip())


def ppcie_items() -> list[dict[str, str]]:
    items: list[dict[str, str]] = json.loads((DATA / "ppcie_gpu_evidence.json").read_text())
    return items


def ppcie_payload() -> dict[str, Any]:
    """The 8-GPU PPCIe evidence in the provider ``nvidia_payload`` shape."""
    items = ppcie_items()
    return {"nonce": items[0]["nonce"], "arch": "HOPPER", "evidence_list": [
        {"evidence": i["evidence"], "certificate": i["certificate"]} for i in items]}


def ppcie_nonce() -> bytes:
    return bytes.fromhex(ppcie_items()[0]["nonce"])


def ppcie_gpu(i: int) -> tuple[bytes, bytes]:
    item = ppcie_items()[i]
    return base64.b64decode(item["evidence"]), base64.b64decode(item["certificate"])


def near_payload() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / "e2e_readme_sample_attestation.json").read_text())
    payload: dict[str, Any] = doc["nvidia_payload"]
    return payload


def rim(name: str) -> bytes:
    return (DATA / name).read_bytes()


DRIVER_RIM = "Driver_RIM_test_no_gpu.swidtag"
VBIOS_RIM = "1010_0200_882_96005E0001_test_no_gpu.swidtag"
VBIOS_PROD_RIM = "1010_0200_882_96005E0001_PROD.swidtag"

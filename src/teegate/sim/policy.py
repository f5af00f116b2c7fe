"""The development policy: a base policy that also trusts this installation's development roots.

Development roots are never trusted implicitly: only a policy built here (or one that names
the same PEMs under ``roots``) accepts development evidence, and verifiers mark every verdict
resting on such a root with a ``*.development_root`` check.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from teegate import paths
from teegate.attest.policy import Policy
from teegate.sim.gpu import DevGpu
from teegate.sim.snp import DevSnp
from teegate.sim.tdx import DevTdx


def development_policy(directory: Path | None = None, base: Policy | None = None) -> Policy:
    """``base`` (default ``Policy.default()``) plus the Intel, AMD and NVIDIA development roots
    stored in ``directory`` (default ``teegate.paths.dev_pki_dir()``), generated if missing."""
    pki = Path(directory) if directory is not None else paths.dev_pki_dir()
    policy = base if base is not None else Policy.default()
    tdx = DevTdx.load_or_create(pki)
    snp = DevSnp.load_or_create(pki)
    gpu = DevGpu.load_or_create(pki)
    roots = policy.roots
    # The development TDX runs a simulated dstack development OS image (sim/compose.py).
    policy = replace(policy, dstack=replace(policy.dstack, allow_dev_os=True))
    return policy.with_roots(
        intel=_plus(roots.intel, tdx.root_pem),
        amd=_plus(roots.amd, snp.ark_pem),
        nvidia=_plus(roots.nvidia, gpu.root_pem),
    )


def _plus(existing: tuple[str, ...], pem: str) -> tuple[str, ...]:
    return existing if pem in existing else (*existing, pem)

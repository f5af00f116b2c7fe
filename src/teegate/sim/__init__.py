"""Development TEEs: evidence in the real binary formats under a generated, stored PKI.

``DevTdx`` (DCAP v4 quotes + dcap-qvl collateral), ``DevSnp`` (v3/v5 SNP reports + VCEK chain)
and ``DevGpu`` (NVIDIA SPDM evidence + device chain) each keep their keys in a subdirectory of
the development PKI directory (default ``teegate.paths.dev_pki_dir()``), generated on first use
and never shipped. ``development_policy`` is the only way their roots become trusted.
"""

from teegate.sim.gpu import DevGpu
from teegate.sim.policy import development_policy
from teegate.sim.snp import DevSnp
from teegate.sim.tdx import DevTdx

__all__ = ["DevGpu", "DevSnp", "DevTdx", "development_policy"]

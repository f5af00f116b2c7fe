"""teegate's one error tree.

Every rejection names the check that failed in words an operator can act on. Callers catch
``TeegateError`` for "teegate said no" and let anything else surface as a bug.
"""

from __future__ import annotations


class TeegateError(Exception):
    """Base of every error teegate raises on purpose."""


class ConfigError(TeegateError):
    """Configuration or policy file is invalid; the message names the field."""


class EvidenceError(TeegateError):
    """Evidence is malformed: it cannot even be parsed into the structure it claims to be."""


class VerificationError(TeegateError):
    """A signature, certificate chain or binding does not verify."""


class PolicyError(TeegateError):
    """Evidence is valid but not acceptable under the policy (TCB, measurements, debug)."""


class CollateralError(TeegateError):
    """Collateral (Intel PCS/PCCS, AMD KDS, NVIDIA) could not be obtained or is unusable."""


class BudgetError(TeegateError):
    """A wallet, reserve or hold cannot cover the requested amount."""


class LedgerError(TeegateError):
    """The ledger refused an operation or found its own state inconsistent."""


class UpstreamError(TeegateError):
    """A provider or inference engine failed, or answered something that does not verify."""


class LogError(TeegateError):
    """A transparency-log proof, checkpoint or note is malformed or does not verify."""


class ChainError(TeegateError):
    """A contract build, artifact, transaction or on-chain state is not what teegate expects."""

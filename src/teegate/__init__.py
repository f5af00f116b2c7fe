"""teegate: verifiable confidential inference for autonomous AI agents."""

from teegate.errors import (
    BudgetError,
    CollateralError,
    ConfigError,
    EvidenceError,
    LedgerError,
    LogError,
    PolicyError,
    TeegateError,
    UpstreamError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "CollateralError",
    "ConfigError",
    "EvidenceError",
    "LedgerError",
    "LogError",
    "PolicyError",
    "TeegateError",
    "UpstreamError",
    "VerificationError",
    "__version__",
]

"""Trust levels a call can require, ordered: standard < tee < attested < attested+gpu."""

from __future__ import annotations

from enum import IntEnum

from teegate.errors import ConfigError


class TrustLevel(IntEnum):
    """What a caller can require of the provider that serves it (DESIGN.md, trust levels)."""

    STANDARD = 0
    TEE = 1
    ATTESTED = 2
    ATTESTED_GPU = 3

    @property
    def label(self) -> str:
        return _LABELS[self]

    def __str__(self) -> str:
        return self.label


_LABELS = {
    TrustLevel.STANDARD: "standard",
    TrustLevel.TEE: "tee",
    TrustLevel.ATTESTED: "attested",
    TrustLevel.ATTESTED_GPU: "attested+gpu",
}
_BY_NAME = {v: k for k, v in _LABELS.items()}
TRUST_NAMES = tuple(_LABELS.values())


def parse_trust(value: str, *, field: str = "trust") -> TrustLevel:
    """``standard|tee|attested|attested+gpu`` (case-insensitive; ``attested-gpu`` and
    ``attested_gpu`` accepted) or ConfigError naming ``field``."""
    text = value.strip().lower().replace("-gpu", "+gpu").replace("_gpu", "+gpu")
    level = _BY_NAME.get(text)
    if level is None:
        raise ConfigError(f"{field}: {value!r} is not a trust level; use one of "
                          f"{', '.join(TRUST_NAMES)}")
    return level

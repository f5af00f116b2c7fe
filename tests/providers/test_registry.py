"""The platform registry."""

from __future__ import annotations

import pytest

from teegate.errors import ConfigError
from teegate.providers import PLATFORM_NAMES, get_platform
from teegate.routing import TrustLevel


def test_known_platforms() -> None:
    for name in ("open-ai", "x", "mistral", "deepseek", "libert-ai", "ollama"):
        assert get_platform(name).claimed is TrustLevel.STANDARD
    libert = get_platform("tee-libert-ai")
    assert libert.claimed is TrustLevel.TEE
    assert libert.evidence == "probe"
    for name in ("tee-near-ai", "tee-phala"):
        p = get_platform(name)
        assert (p.evidence, p.signatures) == ("report", "endpoint")
    assert get_platform("tee-node").signatures == "inline"


def test_unknown_platform_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as e:
        get_platform("openai", field="providers[0].platform")
    msg = str(e.value)
    assert msg.startswith("providers[0].platform: unknown platform 'openai'")
    assert all(name in msg for name in PLATFORM_NAMES)


@pytest.mark.parametrize("name", ["amazon-bedrock"])
def test_non_openai_platforms_not_supported_yet(name: str) -> None:
    with pytest.raises(ConfigError, match="not supported yet"):
        get_platform(name)

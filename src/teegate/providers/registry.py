"""The platform registry: the platform strings agent orchestrators already store for hosted
providers, plus the ``tee-*`` family, and what teegate knows about each."""

from __future__ import annotations

from dataclasses import dataclass

from teegate.errors import ConfigError
from teegate.routing.trust import TrustLevel


@dataclass(frozen=True)
class Platform:
    """How to treat providers of one platform.

    ``claimed`` is the trust level configuration alone grants; ``evidence`` says whether the
    provider serves the attestation report API (``"report"``), may do so one day (``"probe"``:
    try, stay at ``claimed`` when it does not answer) or not at all; ``signatures`` is where
    response signatures come from: ``"inline"`` (teegate nodes: headers / SSE comment),
    ``"endpoint"`` (``GET /v1/signature/{id}``, checked before delivery) or ``"none"``;
    ``protocol`` is what its API speaks: ``"openai"`` (chat completions, forwarded as bytes)
    or ``"anthropic-messages"`` (translated both ways, ``providers/anthropic.py``);
    ``supported`` is false for a known platform teegate cannot call yet."""

    name: str
    claimed: TrustLevel
    evidence: str = "none"
    signatures: str = "none"
    protocol: str = "openai"
    supported: bool = True
    default_base_url: str | None = None
    note: str = ""


PLATFORMS: dict[str, Platform] = {p.name: p for p in (
    Platform("open-ai", TrustLevel.STANDARD, default_base_url="https://api.openai.com/v1"),
    Platform("anthropic", TrustLevel.STANDARD, protocol="anthropic-messages",
             default_base_url="https://api.anthropic.com/v1",
             note="chat completions translated to the Messages API"),
    Platform("amazon-bedrock", TrustLevel.STANDARD, supported=False,
             note="Bedrock needs AWS SigV4 and its own request shapes"),
    Platform("x", TrustLevel.STANDARD, default_base_url="https://api.x.ai/v1"),
    Platform("mistral", TrustLevel.STANDARD, default_base_url="https://api.mistral.ai/v1"),
    Platform("deepseek", TrustLevel.STANDARD, default_base_url="https://api.deepseek.com/v1"),
    Platform("libert-ai", TrustLevel.STANDARD, default_base_url="https://api.libertai.io/v1"),
    Platform("ollama", TrustLevel.STANDARD, default_base_url="http://127.0.0.1:11434/v1"),
    Platform("tee-libert-ai", TrustLevel.TEE, evidence="probe", signatures="endpoint",
             default_base_url="https://api.libertai.io/v1",
             note="unproven until LibertAI serves an attestation report that verifies"),
    Platform("tee-near-ai", TrustLevel.TEE, evidence="report", signatures="endpoint",
             default_base_url="https://cloud-api.near.ai/v1"),
    Platform("tee-phala", TrustLevel.TEE, evidence="report", signatures="endpoint",
             default_base_url="https://api.redpill.ai/v1"),
    Platform("tee-node", TrustLevel.TEE, evidence="report", signatures="inline"),
)}
PLATFORM_NAMES = tuple(PLATFORMS)


def get_platform(name: str, *, field: str = "platform") -> Platform:
    """The platform called ``name``; ConfigError listing the valid ones otherwise, or saying
    plainly that a known platform is not supported yet."""
    platform = PLATFORMS.get(name)
    if platform is None:
        raise ConfigError(f"{field}: unknown platform {name!r}; valid platforms: "
                          f"{', '.join(PLATFORM_NAMES)}")
    if not platform.supported:
        raise ConfigError(f"{field}: platform {name!r} is not supported yet ({platform.note}); "
                          "use an OpenAI-compatible endpoint for it instead")
    return platform

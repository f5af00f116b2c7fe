"""Providers: the platform registry and adapters (how to call, fetch evidence and
signatures)."""

from teegate.providers.adapter import OpenAIAdapter
from teegate.providers.registry import PLATFORM_NAMES, PLATFORMS, Platform, get_platform

__all__ = ["PLATFORMS", "PLATFORM_NAMES", "OpenAIAdapter", "Platform", "get_platform"]

"""The gateway: an OpenAI-compatible endpoint with enclave routing (docs/gateway.md)."""

from teegate.gateway.app import Gateway, GatewayApp, create_app
from teegate.gateway.attestation import AttestationManager, Attested, ProviderRuntime
from teegate.gateway.auth import Agent, Principal
from teegate.gateway.calls import Accounting, CallRecord, Receipts
from teegate.gateway.config import (
    STARTER,
    AgentConfig,
    GatewayConfig,
    ProviderConfig,
    load_config,
    parse_config,
)
from teegate.gateway.store import GatewayStore
from teegate.ledger.pricing import Price  # prices in teegate.toml

__all__ = [
    "STARTER",
    "Accounting",
    "Agent",
    "AgentConfig",
    "AttestationManager",
    "Attested",
    "CallRecord",
    "Gateway",
    "GatewayApp",
    "GatewayConfig",
    "GatewayStore",
    "Price",
    "Principal",
    "ProviderConfig",
    "ProviderRuntime",
    "Receipts",
    "create_app",
    "load_config",
    "parse_config",
]

"""The enclave side: evidence sources, signing keys, engines and the node's HTTP app."""

from teegate.node.app import ALGO_HEADER, SIGNATURE_COMMENT, build_report, create_node_app
from teegate.node.engine import (
    BUILTIN_MODEL,
    BuiltinEngine,
    Engine,
    EngineReply,
    HttpEngine,
    count_tokens,
    engine_app,
)
from teegate.node.signatures import (
    SIGNING_ALGOS,
    signature_text,
    text_matches,
    verify_response_signature,
)
from teegate.node.signer import NodeKeys, SignedText
from teegate.node.sources import (
    ConfigfsTsmSource,
    DevSnpSource,
    DevTdxSource,
    DstackSource,
    Evidence,
    QuoteSource,
    choose_source,
)
from teegate.node.store import SignatureStore

__all__ = [
    "ALGO_HEADER",
    "BUILTIN_MODEL",
    "SIGNATURE_COMMENT",
    "SIGNING_ALGOS",
    "BuiltinEngine",
    "ConfigfsTsmSource",
    "DevSnpSource",
    "DevTdxSource",
    "DstackSource",
    "Engine",
    "EngineReply",
    "Evidence",
    "HttpEngine",
    "NodeKeys",
    "QuoteSource",
    "SignatureStore",
    "SignedText",
    "build_report",
    "choose_source",
    "count_tokens",
    "create_node_app",
    "engine_app",
    "signature_text",
    "text_matches",
    "verify_response_signature",
]

"""The POST endpoints the gateway relays, each a small adapter over the call pipeline
(``teegate.gateway.pipeline``): what its body must hold, what output it may produce (the
hold's bound), where the provider serves it. ``ROUTES`` maps a gateway path to its
endpoint; a new endpoint is one module here and one line below."""

from teegate.gateway.endpoints.chat import CHAT
from teegate.gateway.endpoints.completions import COMPLETIONS
from teegate.gateway.endpoints.embeddings import EMBEDDINGS
from teegate.gateway.pipeline.endpoint import Endpoint
from teegate.gateway.responses.endpoint import RESPONSES

ROUTES: dict[str, Endpoint] = {e.route: e for e in (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)}

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "RESPONSES", "ROUTES"]

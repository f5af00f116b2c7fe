"""One call pipeline for every POST endpoint the gateway relays (docs/gateway.md).

Steps, each in its own module, in the order a call goes through them:

- ``intake``: headers, bounded body, JSON, the trust level required
- the endpoint's own parse (``teegate.gateway.endpoints``; the ``Endpoint`` it describes
  is in ``endpoint``)
- ``route``: may the call be served, and by which providers
- ``hold``: reserve the worst case on the agent's wallet or conversation
- ``forward``: send to the providers in turn until one answers
- ``relay_plain`` / ``relay_stream``: deliver, checking signatures (``verify``)
- ``settle``: settle or void the hold and commit the receipt before the last byte
- ``respond``: answer headers and errors

``call.serve`` runs them."""

"""The Responses API (``/v1/responses``) on the call pipeline: the endpoint adapter
(``endpoint``), its translation to and from chat completions for providers that do not
speak it (``translate``), and stored responses (``teegate.gateway.store``)."""

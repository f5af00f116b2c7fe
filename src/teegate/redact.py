"""Upstream addresses out of text that callers see.

The gateway's providers and the node's engine sit on an internal network; an error text
built from a socket or httpx exception carries their host, port and URL (``cannot connect to
10.0.3.7:8001: ... ('10.0.3.7', 8001)``). An agent learns nothing it can act on from them and
an attacker learns where to aim, so every text an agent can read (error bodies, SSE error
events, receipts, provider views) goes through a ``Redactor`` first; the operator's log keeps
the full text.

Two layers: the configured upstream URLs and their hosts (known needles, exact), then generic
shapes whatever their origin (URLs, IPv4 and IPv6 addresses with ports, Python's
``('host', port)`` tuples), so an address reached through DNS or a redirect is caught too.
Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "<upstream>"

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]]+")
_TUPLE = re.compile(r"\('[^'\s]*', \d+(?:, \d+, \d+)?\)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?::\d{{1,5}})?(?![\w.])")
_IPV6_BRACKET = re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.%\w]*\](?::\d{1,5})?")
# Compressed (``fe80::1``, ``::1``) or full eight-group IPv6 outside brackets.
_IPV6 = re.compile(r"(?<![\w:])(?:(?=[0-9a-fA-F:]*::)[0-9a-fA-F:]{2,39}"
                   r"|(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4})(?:%\w+)?(?![\w:])")


class Redactor:
    """``redactor(text)``: ``text`` with every upstream address replaced by ``<upstream>``."""

    def __init__(self, urls: Iterable[str] = ()) -> None:
        hosts: set[str] = set()
        for url in urls:
            try:
                parts = urlsplit(url)
            except ValueError:
                continue
            if parts.hostname:
                hosts.add(parts.hostname)
        # A name with a dot (or an IP) alone or with its port; a one-label name ("engine",
        # "vllm" on a container network) only with its port, since it is also a word.
        # Longest first, so "a.b" never eats the start of "a.b.c".
        order = sorted(hosts, key=len, reverse=True)
        alts = [re.escape(h) + (r"(?::\d{1,5})?" if "." in h or ":" in h else r":\d{1,5}")
                for h in order]
        self._known = re.compile(rf"(?<![\w.-])(?:{'|'.join(alts)})(?![\w-])",
                                 re.IGNORECASE) if alts else None

    def __call__(self, text: str) -> str:
        text = _URL.sub(MASK, text)
        text = _TUPLE.sub(MASK, text)
        if self._known is not None:
            text = self._known.sub(MASK, text)
        text = _IPV6_BRACKET.sub(MASK, text)
        text = _IPV4.sub(MASK, text)
        return _IPV6.sub(MASK, text)

    def value(self, obj: object) -> object:
        """A JSON-like value with every string in it redacted."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        return obj

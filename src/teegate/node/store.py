"""Recent response signatures, by completion id: bounded in count and in age (LRU + TTL).

NEAR AI nodes keep them 1200 s; a client asks right after the response. An entry holds the
signed text and the signatures made so far: a text stored alone (``put_text``, a stream whose
signature nobody has asked for yet) is signed when ``GET /v1/signature/{id}`` asks for it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from teegate.node.signer import SignedText

DEFAULT_TTL = 1200.0
DEFAULT_MAX_ENTRIES = 100_000


class SignatureStore:
    def __init__(
        self, *, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, str, dict[str, SignedText]]] = OrderedDict()

    def put(self, chat_id: str, signatures: dict[str, SignedText]) -> None:
        """Signatures over one text (every value signs the same ``text``)."""
        text = next(iter(signatures.values())).text
        self._put(chat_id, text, signatures)

    def put_text(self, chat_id: str, text: str) -> None:
        """The text a response's signature will cover, signed on demand."""
        self._put(chat_id, text, {})

    def _put(self, chat_id: str, text: str, signatures: dict[str, SignedText]) -> None:
        now = self._clock()
        self._items[chat_id] = (now + self.ttl, text, signatures)
        self._items.move_to_end(chat_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        # Entries are in insertion order, so expired ones sit at the front.
        while self._items:
            first = next(iter(self._items.values()))
            if first[0] > now:
                break
            self._items.popitem(last=False)

    def _live(self, chat_id: str) -> tuple[float, str, dict[str, SignedText]] | None:
        item = self._items.get(chat_id)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[chat_id]
            return None
        return item

    def get(self, chat_id: str, algo: str) -> SignedText | None:
        live = self._live(chat_id)
        return live[2].get(algo) if live is not None else None

    def text(self, chat_id: str) -> str | None:
        """The signed text of a live entry, whatever algorithm signed it (so the node can
        sign it on demand with another one)."""
        live = self._live(chat_id)
        return live[1] if live is not None else None

    def add(self, chat_id: str, signed: SignedText) -> None:
        """Keep a signature made on demand over the entry's text (its expiry unchanged)."""
        live = self._live(chat_id)
        if live is not None and live[1] == signed.text:
            live[2][signed.signing_algo] = signed

    def __len__(self) -> int:
        return len(self._items)

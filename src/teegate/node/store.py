"""Recent response signatures, by completion id: bounded in count and in age (LRU + TTL).

NEAR AI nodes keep them 1200 s; a client asks right after the response.
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
        self._items: OrderedDict[str, tuple[float, dict[str, SignedText]]] = OrderedDict()

    def put(self, chat_id: str, signatures: dict[str, SignedText]) -> None:
        now = self._clock()
        self._items[chat_id] = (now + self.ttl, signatures)
        self._items.move_to_end(chat_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        # Entries are in insertion order, so expired ones sit at the front.
        while self._items:
            first = next(iter(self._items.values()))
            if first[0] > now:
                break
            self._items.popitem(last=False)

    def get(self, chat_id: str, algo: str) -> SignedText | None:
        item = self._items.get(chat_id)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[chat_id]
            return None
        return item[1].get(algo)

    def __len__(self) -> int:
        return len(self._items)

"""A limit on failed authentications per client address (agent keys and the admin key).

A token bucket per address: ``limit`` failures at once, refilled at ``limit`` per ``window_s``.
An address with no failure left is refused (429 with ``Retry-After``) *before* its key is
checked, the right key included: answering a right key would tell a guesser which guess was
right, and the limit would only slow the wrong ones. Missing keys are not failures (nothing
was guessed); a refused attempt costs nothing more.

Memory is bounded: at most ``max_clients`` addresses are tracked, the least recently failed
dropped first (dropping one forgives it, which only an attacker holding as many addresses
could exploit, and he could spread guesses over them anyway). IPv6 addresses count per /64,
the block one host typically holds. The address is the TCP peer as uvicorn reports it (behind
a reverse proxy on the same host, uvicorn takes it from ``X-Forwarded-For``).

Pure and synchronous; ``clock`` is a parameter so tests need no sleep.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable


def client_key(address: str | None) -> str:
    """What the limit counts: an IPv4 address, an IPv6 /64, or the raw text (a unix socket
    peer has none: ``""``, one shared bucket)."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class AuthThrottle:
    def __init__(self, limit: int, window_s: float, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = float(limit)
        self.rate = limit / window_s  # failures forgiven per second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.limit
        tokens, at = entry
        return min(self.limit, tokens + (now - at) * self.rate)

    def retry_after(self, address: str | None) -> int | None:
        """Whole seconds until ``address`` may try a key again, or None if it may now."""
        key = client_key(address)
        if key not in self._buckets:
            return None
        tokens = self._tokens(key, self.clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, address: str | None) -> None:
        """Count one failed authentication from ``address``."""
        key = client_key(address)
        now = self.clock()
        tokens = max(0.0, self._tokens(key, now) - 1.0)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)

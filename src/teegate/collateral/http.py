"""Bounded HTTP GETs for collateral: timeouts, retries, Retry-After, clear errors.

Every failure becomes a ``CollateralError`` naming the URL and what went wrong; nothing here
ever returns a body from a non-200 answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from teegate.errors import CollateralError

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in total, exponential ``backoff`` seconds between them,
    and never wait longer than ``max_wait`` for a server's Retry-After."""

    attempts: int = 3
    backoff: float = 0.5
    max_wait: float = 30.0
    timeout: float = 10.0


DEFAULT_RETRY = RetryPolicy()


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    t = time.time() if now is None else now
    return max(0.0, when.timestamp() - t)


@asynccontextmanager
async def client_or(
    client: httpx.AsyncClient | None, retry: RetryPolicy
) -> AsyncIterator[httpx.AsyncClient]:
    """Use the caller's client, or a short-lived one with our timeout."""
    if client is not None:
        yield client
        return
    async with httpx.AsyncClient(timeout=retry.timeout, follow_redirects=True) as own:
        yield own


async def get(
    client: httpx.AsyncClient, url: str, *, what: str, retry: RetryPolicy = DEFAULT_RETRY,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """GET ``url``; see ``request``."""
    return await request(client, "GET", url, what=what, retry=retry, params=params)


async def request(
    client: httpx.AsyncClient, method: str, url: str, *, what: str,
    retry: RetryPolicy = DEFAULT_RETRY, params: dict[str, str] | None = None,
    content: bytes | None = None, headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send a request; retry transport errors, 5xx and 429 (honouring Retry-After) a bounded
    number of times; return only a 200 response."""
    last = ""
    for attempt in range(1, retry.attempts + 1):
        wait = retry.backoff * (2 ** (attempt - 1))
        try:
            resp = await client.request(method, url, params=params, content=content,
                                        headers=headers, timeout=retry.timeout)
        except httpx.TimeoutException:
            last = f"timed out after {retry.timeout:g} s"
        except httpx.TransportError as e:
            last = f"connection failed: {e.__class__.__name__}: {e}"
        else:
            if resp.status_code == 200:
                return resp
            body = resp.text[:200].strip() if resp.content else ""
            last = f"HTTP {resp.status_code}" + (f": {body}" if body else "")
            if resp.status_code not in _RETRY_STATUSES:
                raise CollateralError(f"{what}: {method} {resp.request.url} failed: {last}")
            ra = retry_after_seconds(resp.headers.get("Retry-After"))
            if ra is not None:
                if ra > retry.max_wait:
                    raise CollateralError(
                        f"{what}: {method} {resp.request.url} rate-limited ({last}); server "
                        f"asks to retry after {ra:.0f} s, more than the {retry.max_wait:.0f} s "
                        "allowed"
                    )
                wait = max(wait, ra)
        if attempt < retry.attempts:
            await asyncio.sleep(wait)
    shown = httpx.URL(url, params=params) if params else url
    raise CollateralError(
        f"{what}: {method} {shown} failed after {retry.attempts} attempt(s): {last}")

"""The adapter's evidence and signature fetches over real HTTP: a provider's answer is
untrusted input, bounded in size and required to be a JSON object."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.errors import EvidenceError, UpstreamError
from teegate.providers.adapter import OpenAIAdapter
from teegate.providers.registry import get_platform
from tests.gateway.loopback import Server, serving

ANSWERS = {
    "big": b'{"pad": "' + b"x" * 5000 + b'"}',
    "small": b'{"signing_address": "0xabc", "nonce": "00"}',
    "list": b"[1, 2]",
    "deep": b"[" * 10_000 + b"]" * 10_000,
    # Issue 11, point 6: an event log of 300,000 events inside the report (31 MB; gigabytes
    # once parsed, before the event log's own limit saw it).
    "flood": b'{"intel_quote":"00","event_log":[' + b",".join(
        [b'{"imr":0,"event_type":1,"digest":"' + b"ab" * 48 + b'"}'] * 300_000) + b"]}",
}


async def _report(request: Request) -> Response:
    which = request.query_params.get("model", "small")
    if which == "missing":
        return Response(b"no such thing", status_code=404)
    return Response(ANSWERS[which], media_type="application/json")


@pytest.fixture
def provider() -> Iterator[Server]:
    with serving(Starlette(routes=[Route("/v1/attestation/report", _report)])) as s:
        yield s


async def test_reports_are_bounded_and_must_be_json_objects(provider: Server) -> None:
    adapter = OpenAIAdapter("p", get_platform("tee-node"), provider.url + "/v1", max_body=1000)
    nonce = bytes(32)
    try:
        report, raw = await adapter.fetch_report(nonce, model="small")
        assert report["signing_address"] == "0xabc"
        assert raw == ANSWERS["small"]
        with pytest.raises(UpstreamError, match="attestation report: the body exceeds 1000"):
            await adapter.fetch_report(nonce, model="big")
        with pytest.raises(EvidenceError, match="not a JSON object"):
            await adapter.fetch_report(nonce, model="list")
        with pytest.raises(UpstreamError, match="HTTP 404: no such thing"):
            await adapter.fetch_report(nonce, model="missing")
        adapter.max_body = 1 << 20
        with pytest.raises(EvidenceError, match="not JSON: nested deeper"):
            await adapter.fetch_report(nonce, model="deep")
        adapter.max_body = 64 << 20  # the default: the value bound refuses it, not the size
        with pytest.raises(EvidenceError, match="attestation report is too large"):
            await adapter.fetch_report(nonce, model="flood")  # before json.loads ran
    finally:
        await adapter.aclose()

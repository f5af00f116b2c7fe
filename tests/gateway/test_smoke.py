"""End to end through the real openai SDK: attested development node and plain upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import GatewayFactory
from tests.gateway.loopback import Server


@pytest.fixture
def gw(make_gateway: GatewayFactory, node_a: Server, plain_upstream: Server):  # type: ignore[no-untyped-def]
    return make_gateway([
        {"id": "node-a", "platform": "tee-node", "base_url": node_a.url + "/v1",
         "models": ["teegate-builtin", "shared-model"], "development": True},
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain", "shared-model"]},
    ])


def test_sync_plain_attested(gw) -> None:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="teegate-builtin", messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"X-Teegate-Trust": "attested"})
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-teegate-provider"] == "node-a"
    assert raw.headers["x-teegate-trust"] == "attested"
    assert len(raw.headers["x-teegate-verdict"]) == 64
    assert raw.headers["x-teegate-development"] == "true"

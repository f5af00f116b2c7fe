"""CORS for browser agents: off by default; with ``cors_origins``, a preflight is granted
without a key to the origins named only, and the answers expose teegate's headers."""

from __future__ import annotations

import httpx
import pytest

from teegate.errors import ConfigError
from teegate.gateway import parse_config
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server

APP = "https://agent.example.com"
PREFLIGHT = {"origin": APP, "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type, x-stainless-os"}


def _gw(make_gateway: GatewayFactory, plain_upstream: Server, **gateway: object) -> Gw:
    return make_gateway([{"id": "plain", "platform": "open-ai",
                          "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                        gateway=gateway)


def _chat(gw: Gw, origin: str) -> httpx.Response:
    return httpx.post(gw.url + "/chat/completions", headers={
        "authorization": f"Bearer {gw.key}", "origin": origin},
        json={"model": "gpt-plain", "messages": [{"role": "user", "content": "hi"}]})


def test_cors_is_off_by_default(make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = _gw(make_gateway, plain_upstream)
    r = httpx.options(gw.url + "/chat/completions", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in _chat(gw, APP).headers


def test_allowed_origin_preflight_and_answers(make_gateway: GatewayFactory,
                                              plain_upstream: Server) -> None:
    gw = _gw(make_gateway, plain_upstream, cors_origins=[APP])
    r = httpx.options(gw.url + "/chat/completions", headers=PREFLIGHT)  # no key: granted
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == APP
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == PREFLIGHT[
        "access-control-request-headers"]
    answer = _chat(gw, APP)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    exposed = answer.headers["access-control-expose-headers"]
    assert "x-teegate-receipt" in exposed
    assert "x-request-id" in exposed
    refused = httpx.get(gw.url + "/models", headers={"origin": APP})  # errors too
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP
    other = httpx.options(gw.url + "/chat/completions",
                          headers={**PREFLIGHT, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in _chat(gw, "https://evil.example").headers


def test_any_origin(make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = _gw(make_gateway, plain_upstream, cors_origins=["*"])
    r = httpx.options(gw.url + "/responses", headers={**PREFLIGHT, "origin": "http://x:3000"})
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("bad", ["agent.example.com", "https://a.example/path", 3])
def test_a_bad_origin_stops_start_up(bad: object) -> None:
    with pytest.raises(ConfigError, match="cors_origins"):
        parse_config({"gateway": {"cors_origins": [bad]}, "providers": [
            {"id": "p", "platform": "open-ai", "base_url": "http://127.0.0.1:1/v1",
             "models": ["m"]}]})

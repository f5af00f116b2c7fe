"""The admin key's minimum length (refused at start-up) and the limit on failed
authentications per client address (429 with Retry-After before any key is checked), over
real HTTP on loopback; the bucket itself tested pure."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from teegate.cli import app as cli
from teegate.errors import ConfigError
from teegate.gateway import parse_config
from teegate.gateway.throttle import AuthThrottle
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server

BODY = {"model": "gpt-plain", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _config(admin_env: str) -> dict[str, object]:
    return {"gateway": {"admin_key_env": admin_env},
            "providers": [{"id": "p", "platform": "open-ai", "base_url": "http://127.0.0.1:9/v1",
                           "models": ["m"]}]}


@pytest.mark.parametrize("key", ["short-admin-key", "x" * 31, "ab" * 40])
def test_a_short_or_repetitive_admin_key_stops_start_up(monkeypatch: pytest.MonkeyPatch,
                                                        key: str) -> None:
    monkeypatch.setenv("TG_WEAK_ADMIN", key)
    with pytest.raises(ConfigError, match=r"gateway\.admin_key_env: .*at least 32"):
        parse_config(_config("TG_WEAK_ADMIN"))


def test_a_long_random_admin_key_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_GOOD_ADMIN", os.urandom(16).hex())
    assert parse_config(_config("TG_GOOD_ADMIN")).admin_key == os.environ["TG_GOOD_ADMIN"]
    monkeypatch.delenv("TG_GOOD_ADMIN")  # unset: the admin API is off, not an error
    assert parse_config(_config("TG_GOOD_ADMIN")).admin_key is None


def test_teegate_serve_refuses_a_short_admin_key(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "teegate.toml"
    conf.write_text('[gateway]\nadmin_key_env = "TG_WEAK_ADMIN"\n'
                    f'database_url = "sqlite:///{tmp_path / "t.db"}"\n'
                    '[[providers]]\nid = "p"\nplatform = "open-ai"\n'
                    'base_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n')
    monkeypatch.setenv("TG_WEAK_ADMIN", "hunter2")
    served: list[object] = []  # a gateway that started anyway would serve here, not block
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: served.append(a))
    res = CliRunner().invoke(cli, ["serve", "--config", str(conf)])
    assert not served
    assert res.exit_code == 2
    assert "gateway.admin_key_env" in res.output
    assert "hunter2" not in res.output  # the key itself is never echoed
    assert "Traceback" not in res.output


@pytest.fixture
def gw(make_gateway: GatewayFactory, plain_upstream: Server) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"]}], ledger=None,
        gateway={"auth_fail_limit": 3, "auth_fail_window_seconds": 60})


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_failed_authentications_are_limited_per_address(gw: Gw) -> None:
    base = gw.server.url
    admin = os.environ["TG_TEST_ADMIN"]
    # Three wrong keys on three kinds of route use up the address's allowance ...
    assert httpx.post(base + "/v1/chat/completions", json=BODY,
                      headers=_auth("tgk_guess1")).status_code == 401
    assert httpx.get(base + "/v1/models", headers=_auth("tgk_guess2")).status_code == 401
    assert httpx.get(base + "/admin/agents", headers=_auth("guess3")).status_code == 401
    # ... then every key is refused before it is checked, the right ones included.
    for method, path, key in (("POST", "/v1/chat/completions", gw.key),
                              ("GET", "/v1/models", gw.key),
                              ("GET", "/admin/agents", admin),
                              ("DELETE", "/admin/agents/x", "tgk_guess4")):
        r = httpx.request(method, base + path, json=BODY if method == "POST" else None,
                          headers=_auth(key))
        assert r.status_code == 429, (path, r.text)
        assert r.json()["error"]["code"] == "too_many_failed_authentications"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-should-retry"] == "false"
    # Routes that need no key stay open.
    assert httpx.get(base + "/healthz").status_code == 200
    # Another address is not affected (127.0.0.2 is loopback too).
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        r = other.post(base + "/v1/chat/completions", json=BODY, headers=_auth(gw.key))
        assert r.status_code == 200, r.text
    # Time forgives: after Retry-After the right key works again.
    throttle = gw.gateway.throttle
    wait = throttle.retry_after("127.0.0.1")
    assert wait is not None
    later = throttle.clock() + wait
    throttle.clock = lambda: later
    r = httpx.post(base + "/v1/chat/completions", json=BODY, headers=_auth(gw.key))
    assert r.status_code == 200, r.text


def test_a_missing_key_is_not_a_failed_authentication(gw: Gw) -> None:
    base = gw.server.url
    for _ in range(6):
        assert httpx.post(base + "/v1/chat/completions", json=BODY).status_code == 401
        assert httpx.get(base + "/admin/agents").status_code == 401
    r = httpx.post(base + "/v1/chat/completions", json=BODY, headers=_auth(gw.key))
    assert r.status_code == 200, r.text


def test_the_bucket_refills_and_its_memory_is_bounded() -> None:
    now = [1000.0]
    t = AuthThrottle(4, 60.0, max_clients=100, clock=lambda: now[0])
    for _ in range(4):
        assert t.retry_after("10.0.0.1") is None
        t.failed("10.0.0.1")
    assert t.retry_after("10.0.0.1") == 15  # one failure forgiven every 60/4 s
    now[0] += 14.9
    assert t.retry_after("10.0.0.1") == 1
    now[0] += 0.1
    assert t.retry_after("10.0.0.1") is None
    # IPv6 counts per /64: one host's addresses share a bucket.
    for i in range(4):
        t.failed(f"2001:db8::{i + 1:x}")
    assert t.retry_after("2001:db8::ffff") is not None
    assert t.retry_after("2001:db8:0:1::1") is None
    # 100,000 addresses failing once each: at most max_clients are remembered.
    for i in range(100_000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(t) == 100

"""Stored Responses API answers expire: after ``[gateway] responses_retention_seconds`` a
stored response is 404 on GET, DELETE and as a ``previous_response_id``, and the sweep
deletes its row (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import openai
import pytest

from teegate.errors import ConfigError
from teegate.gateway import GatewayStore
from teegate.gateway.config import GatewayConfig, parse_config
from tests.gateway.conftest import GatewayFactory
from tests.gateway.loopback import Server

RETENTION = 3600


def test_an_expired_response_is_not_found_anywhere(make_gateway: GatewayFactory,
                                                   plain_upstream: Server) -> None:
    now = [time.time()]
    gw = make_gateway([{"id": "plain", "platform": "open-ai",
                        "base_url": plain_upstream.url + "/v1", "models": ["gpt-plain"]}],
                      gateway={"responses_retention_seconds": RETENTION},
                      clock=lambda: now[0])
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    first = client.responses.create(model="gpt-plain", input="remember this")
    second = client.responses.create(model="gpt-plain", input="and this")
    now[0] += RETENTION - 1  # still kept
    assert client.responses.retrieve(first.id).id == first.id
    client.responses.create(model="gpt-plain", input="more", previous_response_id=first.id)
    now[0] += 2  # past its retention
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="gpt-plain", input="more",
                                previous_response_id=first.id)
    assert e.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)
    now[0] += 60  # the next sweep is due: it deletes the rows of both
    fresh = client.responses.create(model="gpt-plain", input="new")
    ids = {r[0] for r in gw.store._exec("SELECT id FROM tg_responses")}
    assert first.id not in ids
    assert second.id not in ids
    assert fresh.id in ids


def test_the_retention_is_configured(tmp_path: Path) -> None:
    def cfg(**gateway: object) -> GatewayConfig:
        return parse_config({"gateway": {"database_url": f"sqlite:///{tmp_path / 'g.db'}",
                                         **gateway},
                             "providers": [{"id": "p", "platform": "open-ai",
                                            "base_url": "http://127.0.0.1:1/v1",
                                            "models": ["m"]}]})

    assert cfg().responses_retention_s == 30 * 86400  # as OpenAI keeps them
    assert cfg(responses_retention_seconds=60).responses_retention_s == 60
    with pytest.raises(ConfigError, match="responses_retention_seconds"):
        cfg(responses_retention_seconds=0)


def _expiry(store: GatewayStore) -> None:
    agent = "agent-" + uuid.uuid4().hex[:8]
    store.put_response(agent, "resp_old", '{"id":"resp_old"}', "[]", now=1000,
                       retention=RETENTION)
    assert store.get_response(agent, "resp_old", now=1000 + RETENTION - 1,
                              retention=RETENTION) is not None
    store.put_response(agent, "resp_new", '{"id":"resp_new"}', "[]", now=1000 + RETENTION,
                       retention=RETENTION)
    # at its retention's end: not found, and the sweep (due: 60 s since the last) deletes it
    assert store.get_response(agent, "resp_old", now=1000 + RETENTION + 60,
                              retention=RETENTION) is None
    assert store.get_response(agent, "resp_old", now=1000 + RETENTION + 60,
                              retention=10 * RETENTION) is None  # gone, not just hidden
    assert store.get_response(agent, "resp_new", now=1000 + RETENTION + 60,
                              retention=RETENTION) == ('{"id":"resp_new"}', "[]")
    assert not store.delete_response(agent, "resp_new", now=1000 + 2 * RETENTION,
                                     retention=RETENTION)  # expired: nothing to delete


def test_expiry_sqlite(tmp_path: Path) -> None:
    store = GatewayStore(f"sqlite:///{tmp_path / 'gw.db'}")
    try:
        _expiry(store)
    finally:
        store.close()


@pytest.mark.postgres
def test_expiry_postgres() -> None:
    url = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "tg_retention_" + uuid.uuid4().hex[:10]
    store = GatewayStore(url, schema=schema)
    try:
        _expiry(store)
    finally:
        store.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

"""Fail closed: never served below the required level; expired, re-keyed, tampered and
invalidated providers are refused or failed over; quarantines reach other gateway processes."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.gateway import GatewayStore
from teegate.node import NodeKeys
from tests.gateway.conftest import GatewayFactory, Gw, admin_headers, wait
from tests.gateway.loopback import Server, Tamper, dev_node, serving, tampering_proxy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
ATTESTED = {"X-Teegate-Trust": "attested"}


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _node(pid: str, url: str, **kw: object) -> dict[str, object]:
    return {"id": pid, "platform": "tee-node", "base_url": url + "/v1",
            "models": ["shared-model"], "development": True, **kw}


def _client(gw: Gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)


def _reattest(gw: Gw, pid: str) -> dict[str, object]:
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    r = httpx.post(f"{gw.server.url}/admin/providers/{pid}/reattest", headers=admin)
    assert r.status_code == 200
    view: dict[str, object] = r.json()
    return view


@pytest.fixture
def tamper(node_a: Server) -> Iterator[tuple[Tamper, Server]]:
    t = Tamper()
    with serving(tampering_proxy(node_a.url, t)) as proxy:
        yield t, proxy


def test_attested_refused_when_only_standard_and_tee(
        make_gateway: GatewayFactory, plain_upstream: Server) -> None:
    gw = make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["shared-model"]},
        {"id": "libert", "platform": "tee-libert-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["shared-model"]},
    ])
    client = _client(gw)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
    assert e.value.response.headers["x-should-retry"] == "false"
    assert e.value.code == "trust_level_unmet"
    msg = e.value.message
    assert "plain: serves trust level standard, below attested" in msg
    assert "libert: serves trust level tee, below attested" in msg
    # LibertAI without a report endpoint stays at "tee" (unproven) and serves tee calls.
    r = client.chat.completions.with_raw_response.create(
        model="shared-model", messages=MSG, extra_headers={"X-Teegate-Trust": "tee"})
    assert (r.headers["x-teegate-provider"], r.headers["x-teegate-trust"]) == ("libert", "tee")
    assert gw.provider("libert").status == "unproven"


def test_report_expiry_refresh_and_rejection(make_gateway: GatewayFactory,
                                             node_a: Server) -> None:
    clock = Clock()
    gw = make_gateway([_node("node-a", node_a.url, attestation_ttl=600)], clock=clock)
    client = _client(gw)
    client.chat.completions.create(model="shared-model", messages=MSG, extra_headers=ATTESTED)
    clock.offset = 700  # past the verdict's expiry, before any background refresh
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
    assert e.value.status_code == 503
    assert "node-a: serves trust level tee, below attested" in e.value.message
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    r = httpx.post(gw.server.url + "/admin/providers/node-a/reattest", headers=admin)
    assert r.json()["attestation"]["status"] == "attested"
    client.chat.completions.create(model="shared-model", messages=MSG, extra_headers=ATTESTED)
    clock.offset = 90 * 86400  # development collateral has expired by then
    r = httpx.post(gw.server.url + "/admin/providers/node-a/reattest", headers=admin)
    assert r.json()["attestation"]["status"] == "quarantined"
    with pytest.raises(openai.InternalServerError, match="attestation rejected"):
        client.chat.completions.create(model="shared-model", messages=MSG)


def test_signing_key_change(make_gateway: GatewayFactory, dev_pki: Path) -> None:
    keys = NodeKeys()
    with serving(dev_node(dev_pki, ("shared-model",), keys)) as node:
        gw = make_gateway([_node("n", node.url)])
        client = _client(gw)
        old = gw.provider("n").attested.signing_address
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
        keys._signers = NodeKeys()._signers  # the node restarts with a new key
        with pytest.raises(openai.InternalServerError, match="not the attested key"):
            client.chat.completions.create(model="shared-model", messages=MSG,
                                           extra_headers=ATTESTED)
        # The verdict was dropped and the node re-attested at once with its new key.
        wait(lambda: gw.provider("n").current(time.time()) is not None)
        assert gw.provider("n").attested.signing_address != old
        r = client.chat.completions.with_raw_response.create(
            model="shared-model", messages=MSG, extra_headers=ATTESTED)
        assert r.headers["x-teegate-trust"] == "attested"


def test_tampered_response_fails_and_quarantines(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server]) -> None:
    t, proxy = tamper
    gw = make_gateway([_node("mitm", proxy.url)])
    client = _client(gw)
    client.chat.completions.create(model="shared-model", messages=MSG, extra_headers=ATTESTED)
    t.alter_response = True
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="shared-model", messages=MSG)
    assert e.value.code == "response_signature_invalid"
    assert "withheld" in e.value.message
    with pytest.raises(openai.InternalServerError, match="quarantined"):
        client.chat.completions.create(model="shared-model", messages=MSG)
    wait(lambda: gw.store.states().get("mitm") is not None and
          gw.store.states()["mitm"].quarantined_until > time.time())
    # Streams: the signature is checked before [DONE]; a bad one ends the stream with an error.
    _reattest(gw, "mitm")
    body = {"model": "shared-model", "messages": MSG, "stream": True}
    with httpx.stream("POST", gw.url + "/chat/completions", json=body,
                      headers={"authorization": f"Bearer {gw.key}"}) as r:
        raw = b"".join(r.iter_raw())
    assert b"[DONE]" not in raw
    assert b'"code": "response_signature_invalid"' in raw.split(b"\n\n")[-2]
    _reattest(gw, "mitm")
    with pytest.raises(openai.APIError, match="response signature"):
        list(client.chat.completions.create(model="shared-model", messages=MSG, stream=True))


def test_data_after_the_stream_signature_is_refused(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server]) -> None:
    """Only [DONE] may follow a node's signature comment: an event slipped in after it was
    never signed, so the stream ends with an error and the provider is quarantined."""
    t, proxy = tamper
    gw = make_gateway([_node("mitm", proxy.url)])
    client = _client(gw)
    assert list(client.chat.completions.create(model="shared-model", messages=MSG,
                                               stream=True, extra_headers=ATTESTED))
    t.inject_before_done = (b'data: {"id":"x","object":"chat.completion.chunk","choices":'
                            b'[{"index":0,"delta":{"content":"INJECTED"}}]}\n\n')
    body = {"model": "shared-model", "messages": MSG, "stream": True}
    with httpx.stream("POST", gw.url + "/chat/completions", json=body,
                      headers={"authorization": f"Bearer {gw.key}", **ATTESTED}) as r:
        raw = b"".join(r.iter_raw())
    assert b"INJECTED" not in raw
    assert b"[DONE]" not in raw
    last = raw.split(b"\n\n")[-2]
    assert b'"code": "response_signature_invalid"' in last
    assert b"data after its response signature" in last
    with pytest.raises(openai.InternalServerError, match="quarantined"):
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)


def test_invalid_evidence_mid_run_fails_over_never_below(
        make_gateway: GatewayFactory, tamper: tuple[Tamper, Server], node_a: Server,
        plain_upstream: Server) -> None:
    t, proxy = tamper
    gw = make_gateway([
        _node("mitm", proxy.url, prices={"shared-model": {"input": 1, "output": 1}}),
        _node("node-a", node_a.url, prices={"shared-model": {"input": 9, "output": 9}}),
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["shared-model"]},
    ], agent_trust="attested")
    client = _client(gw)
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG)
    assert r.headers["x-teegate-provider"] == "mitm"  # cheapest attested provider
    t.corrupt_report = True
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    view = httpx.post(gw.server.url + "/admin/providers/mitm/reattest", headers=admin).json()
    assert view["attestation"]["status"] == "quarantined"
    assert "attestation rejected" in view["attestation"]["detail"]
    for _ in range(3):
        r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG)
        assert r.headers["x-teegate-provider"] == "node-a"
        assert r.headers["x-teegate-trust"] == "attested"


def test_failover_between_attested_nodes(make_gateway: GatewayFactory, dev_pki: Path,
                                         node_a: Server, tamper: tuple[Tamper, Server]) -> None:
    t, proxy = tamper
    node_b = Server(dev_node(dev_pki, ("shared-model",)))
    gw = make_gateway([
        _node("node-b", node_b.url, prices={"shared-model": {"input": 1, "output": 1}}),
        _node("flaky", proxy.url, prices={"shared-model": {"input": 2, "output": 2}}),
        _node("node-a", node_a.url, prices={"shared-model": {"input": 9, "output": 9}}),
    ], agent_trust="attested")
    client = _client(gw)
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG)
    assert r.headers["x-teegate-provider"] == "node-b"
    node_b.stop()  # killed
    t.fail_status = 503  # and the next one answers 5xx
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG)
    assert r.headers["x-teegate-provider"] == "node-a"
    stream = client.chat.completions.create(model="shared-model", messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # A provider that dies after its headers but before any body byte is failed over too.
    t.fail_status, t.break_stream = None, True
    gw.provider("flaky").health.cooldown_until = 0.0
    gw.provider("flaky").health.failures = 0
    with httpx.stream("POST", gw.url + "/chat/completions", headers={
            "authorization": f"Bearer {gw.key}"}, json={
            "model": "shared-model", "messages": MSG, "stream": True}) as resp:
        assert resp.headers["x-teegate-provider"] == "node-a"
        assert b"data: [DONE]" in b"".join(resp.iter_raw())
    text = httpx.get(gw.server.url + "/metrics", headers=admin_headers()).text
    assert 'teegate_failovers_total{provider="flaky",reason="broken"}' in text
    assert 'teegate_failovers_total{provider="node-b",reason="connect"}' in text
    assert 'teegate_failovers_total{provider="flaky",reason="503"}' in text


def _shared_quarantine(make_gateway: GatewayFactory, proxy: Server, t: Tamper,
                       store1: GatewayStore, store2: GatewayStore) -> None:
    gw1 = make_gateway([_node("mitm", proxy.url)], store=store1)
    gw2 = make_gateway([_node("mitm", proxy.url)], store=store2)
    c1, c2 = _client(gw1), _client(gw2)
    c2.chat.completions.create(model="shared-model", messages=MSG, extra_headers=ATTESTED)
    t.alter_response = True
    with pytest.raises(openai.InternalServerError):
        c1.chat.completions.create(model="shared-model", messages=MSG)
    # The other process adopts the quarantine from the shared database within its poll.
    wait(lambda: gw2.provider("mitm").quarantined_until > time.time())
    with pytest.raises(openai.InternalServerError, match="quarantined"):
        c2.chat.completions.create(model="shared-model", messages=MSG)
    assert t.seen.count("chat") == 2  # gateway 2 never forwarded after the quarantine


def test_quarantine_shared_sqlite(make_gateway: GatewayFactory, tmp_path: Path,
                                  tamper: tuple[Tamper, Server]) -> None:
    t, proxy = tamper
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    _shared_quarantine(make_gateway, proxy, t, GatewayStore(url), GatewayStore(url))


@pytest.mark.postgres
def test_quarantine_shared_postgres(make_gateway: GatewayFactory,
                                    tamper: tuple[Tamper, Server]) -> None:
    url = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "tg_gw_" + uuid.uuid4().hex[:10]
    t, proxy = tamper
    s1, s2 = GatewayStore(url, schema=schema), GatewayStore(url, schema=schema)
    try:
        _shared_quarantine(make_gateway, proxy, t, s1, s2)
    finally:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _metric(gw: Gw, name: str) -> float:
    for line in httpx.get(gw.server.url + "/metrics", headers=admin_headers()).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_signature_endpoint_providers(make_gateway: GatewayFactory,
                                      tamper: tuple[Tamper, Server]) -> None:
    """NEAR AI / RedPill style: the signature is fetched from GET /v1/signature/{id} before
    the answer is delivered; a bad one withholds it and quarantines the provider."""
    t, proxy = tamper
    gw = make_gateway([{"id": "near", "platform": "tee-near-ai", "base_url": proxy.url + "/v1",
                        "models": ["shared-model"], "development": True}])
    client = _client(gw)
    verified = 'teegate_response_signature_checks_total{provider="near",result="verified"}'
    r = client.chat.completions.with_raw_response.create(model="shared-model", messages=MSG,
                                                         extra_headers=ATTESTED)
    assert r.headers["x-teegate-trust"] == "attested"
    wait(lambda: _metric(gw, verified) == 1.0)
    list(client.chat.completions.create(model="shared-model", messages=MSG, stream=True,
                                        extra_headers=ATTESTED))
    wait(lambda: _metric(gw, verified) == 2.0)
    t.alter_response = True
    with pytest.raises(openai.APIStatusError, match="response signature check failed"):
        client.chat.completions.create(model="shared-model", messages=MSG)
    assert gw.provider("near").quarantined_until > time.time()
    with pytest.raises(openai.InternalServerError, match="quarantined"):
        client.chat.completions.create(model="shared-model", messages=MSG)


def test_libert_ai_becomes_attested_with_a_report(make_gateway: GatewayFactory,
                                                   node_a: Server) -> None:
    gw = make_gateway([{"id": "libert", "platform": "tee-libert-ai",
                        "base_url": node_a.url + "/v1", "models": ["shared-model"],
                        "development": True}])
    r = _client(gw).chat.completions.with_raw_response.create(
        model="shared-model", messages=MSG, extra_headers=ATTESTED)
    assert r.headers["x-teegate-trust"] == "attested"
    assert gw.provider("libert").status == "attested"


def test_attested_gpu_level(make_gateway: GatewayFactory, dev_pki: Path,
                            node_a: Server) -> None:
    from teegate.node import BuiltinEngine, DevTdxSource, create_node_app
    from teegate.sim import DevGpu

    app = create_node_app(DevTdxSource(dev_pki), BuiltinEngine(("shared-model",)), gpus=1,
                          gpu=DevGpu.load_or_create(dev_pki))
    with serving(app) as gpu_node:
        gw = make_gateway([_node("cpu-only", node_a.url), _node("gpu", gpu_node.url)])
        assert gw.provider("gpu").level(time.time()).label == "attested+gpu", (
            gw.provider("gpu").detail)
        client = _client(gw)
        r = client.chat.completions.with_raw_response.create(
            model="shared-model@attested+gpu", messages=MSG)
        assert (r.headers["x-teegate-provider"], r.headers["x-teegate-trust"]) == (
            "gpu", "attested+gpu")


@pytest.mark.parametrize(("platform", "style"), [("tee-node", "merged"),
                                                 ("tee-near-ai", "near")])
def test_replicas_behind_a_load_balancer(make_gateway: GatewayFactory, dev_pki: Path,
                                         node_a: Server, platform: str, style: str) -> None:
    """Each replica has its own key: all must verify, and a response signed by any of them
    is accepted; one replica with bad evidence rejects the provider."""
    from tests.gateway.loopback import balancer

    with serving(dev_node(dev_pki, ("shared-model",))) as node_b:
        lb_app = balancer([node_a.url, node_b.url], style=style)
        with serving(lb_app) as lb:
            gw = make_gateway([{"id": "lb", "platform": platform, "base_url": lb.url + "/v1",
                                "models": ["shared-model"], "development": True}])
            a = gw.provider("lb").attested
            assert a is not None
            assert len(a.keys) == 2
            client = _client(gw)
            verified = ('teegate_response_signature_checks_total{provider="lb",'
                        'result="verified"}')
            for i in range(4):  # round robin over both replicas
                r = client.chat.completions.with_raw_response.create(
                    model="shared-model", messages=MSG, extra_headers=ATTESTED)
                assert r.headers["x-teegate-trust"] == "attested"
                wait(lambda i=i: _metric(gw, verified) == i + 1)  # type: ignore[misc]
            lb_app.state.lb["corrupt"] = 1
            view = _reattest(gw, "lb")
            assert view["attestation"]["status"] == "quarantined"  # type: ignore[index]
            assert "replica 1" in str(view["attestation"])

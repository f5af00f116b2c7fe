"""teegate.toml validation and the CLI around it (init, agents, serve with a bad config)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from teegate.cli import app
from teegate.errors import ConfigError
from teegate.gateway import STARTER, load_config, parse_config
from teegate.routing import TrustLevel

NODE = {"id": "n", "platform": "tee-node", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}


def _cfg(**over: Any) -> dict[str, Any]:
    return {"providers": [{**NODE, **over}]}


def test_starter_is_valid() -> None:
    cfg = parse_config(tomllib.loads(STARTER))
    p = cfg.providers[0]
    assert p.platform.name == "tee-node"
    assert p.development
    assert p.prices["teegate-builtin"].cost(1_000_000, 1_000_000) == 400
    assert p.prices["teegate-builtin"].cost(1, 0) == 1  # never rounds a charge down to zero


@pytest.mark.parametrize(("over", "field"), [
    ({"platform": "nope"}, "providers[0].platform: unknown platform 'nope'"),
    ({"platform": "amazon-bedrock"},
     "providers[0].platform: platform 'amazon-bedrock' is not supported"),
    ({"models": []}, "providers[0].models"),
    ({"base_url": "ftp://x"}, "providers[0].base_url"),
    ({"prices": {"other": {"input": 1}}}, "providers[0].prices.other"),
    ({"prices": {"m": {"input": 1.5}}}, "providers[0].prices.m.input: expected int"),
    ({"trust_cap": "ultra"}, "providers[0].trust_cap"),
    ({"colour": "blue"}, "providers[0].colour: unknown field"),
    ({"api_key_env": "TG_SURELY_UNSET_VAR"}, "providers[0].api_key_env: environment variable "
                                             "TG_SURELY_UNSET_VAR is not set"),
])
def test_invalid_provider_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_cfg(**over))
    assert str(e.value).startswith(field)


def test_gateway_and_agent_fields() -> None:
    with pytest.raises(ConfigError, match=r"^gateway\.listen"):
        parse_config({**_cfg(), "gateway": {"listen": "nowhere"}})
    with pytest.raises(ConfigError, match=r"^gateway\.database_url"):
        parse_config({**_cfg(), "gateway": {"database_url": "mysql://x"}})
    with pytest.raises(ConfigError, match=r"^agents\[0\]\.trust"):
        parse_config({**_cfg(), "agents": [{"id": "a", "trust": "max"}]})
    with pytest.raises(ConfigError, match=r"^providers\[1\]\.id"):
        parse_config({"providers": [NODE, NODE]})
    cfg = parse_config({**_cfg(), "agents": [{"id": "a", "trust": "standard",
                                              "min_trust": "attested"}]})
    assert cfg.agents[0].trust is TrustLevel.ATTESTED  # the floor lifts the default


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TEST_KEY", "sk-secret")
    cfg = parse_config({"providers": [{"id": "o", "platform": "open-ai", "models": ["g"],
                                       "api_key_env": "TG_TEST_KEY"}]})
    assert cfg.providers[0].api_key == "sk-secret"
    assert cfg.providers[0].base_url == "https://api.openai.com/v1"
    assert cfg.providers[0].policy is None  # no evidence for hosted providers


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_init_agents_and_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0
    assert (tmp_path / "teegate.toml").read_text() == STARTER
    assert runner.invoke(app, ["init"]).exit_code == 2  # refuses to overwrite
    db = f'database_url = "sqlite:///{tmp_path}/t.db"'
    text = STARTER.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:8080"\n{db}')
    (tmp_path / "teegate.toml").write_text(text)
    r = runner.invoke(app, ["agents", "create", "bot", "--trust", "attested"])
    assert r.exit_code == 0, r.output
    created = json.loads(r.output)
    assert created["api_key"].startswith("tgk_")
    assert created["trust"] == "attested"
    out = runner.invoke(app, ["agents", "list"]).output
    listed = [json.loads(line) for line in out.splitlines()]
    assert listed[0]["id"] == "bot"
    assert "api_key" not in listed[0]
    assert created["api_key"] not in (tmp_path / "t.db").read_bytes().decode("latin-1")
    assert runner.invoke(app, ["agents", "revoke", "bot"]).exit_code == 0
    assert runner.invoke(app, ["agents", "revoke", "ghost"]).exit_code == 1
    assert runner.invoke(app, ["agents", "create", "x", "--trust", "max"]).exit_code == 2
    # Without --trust an agent gets the gateway's default_trust, as agents made by the
    # admin API do; a new key for an existing agent reports the settings it keeps.
    (tmp_path / "teegate.toml").write_text(text.replace('default_trust = "standard"',
                                                        'default_trust = "tee"'))
    r = runner.invoke(app, ["agents", "create", "plain-bot"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["trust"] == "tee"
    r = runner.invoke(app, ["agents", "create", "plain-bot", "--trust", "attested-gpu"])
    assert json.loads(r.stdout)["trust"] == "tee"
    assert "keeps its trust tee" in r.stderr
    (tmp_path / "teegate.toml").write_text('[[providers]]\nid = "a"\nplatform = "nope"\n')
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2
    assert "providers[0].platform: unknown platform 'nope'" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(("price", "field"), [
    ({"per_call": -1}, "prices.m: prices must be >= 0"),
    ({"per_call": 1.5}, "prices.m.per_call"),
    ({"flat": 3}, "prices.m"),
])
def test_bad_prices_name_the_field(price: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        parse_config({"providers": [{"id": "p", "platform": "open-ai", "models": ["m"],
                                     "prices": {"m": price}}]})


@pytest.mark.parametrize("field", ["hold_seconds", "ledger_expire_seconds", "cooldown_seconds",
                                   "state_poll_seconds"])
@pytest.mark.parametrize("value", ["nan", "inf", "+inf"])
def test_durations_must_be_finite(field: str, value: str) -> None:
    """TOML has nan and inf: a NaN hold expiry would never be swept."""
    raw = tomllib.loads(f"[gateway]\n{field} = {value}\n")
    with pytest.raises(ConfigError, match=rf"^gateway\.{field}: must be a finite number"):
        parse_config({**_cfg(), **raw})


def test_default_max_tokens_is_bounded_like_a_request_limit() -> None:
    with pytest.raises(ConfigError, match=r"^gateway\.default_max_tokens: at most"):
        parse_config({**_cfg(), "gateway": {"default_max_tokens": 2**62}})


def test_a_currency_the_ledger_does_not_keep_is_refused_at_start_up(tmp_path: Path) -> None:
    """It used to start and then answer every priced call with a 503."""
    from teegate.gateway import create_app
    from teegate.ledger import Currency, open_ledger

    with pytest.raises(ConfigError, match=r"^gateway\.currency: 'EUR' is not a currency"):
        parse_config({**_cfg(), "gateway": {"currency": "EUR"}})
    assert parse_config({**_cfg(), "gateway": {"currency": "USD"}}).currency == "USD"
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    cfg = parse_config({**_cfg(), "gateway": {"currency": "USD", "database_url": url}})
    ledger = open_ledger(url, currencies=(Currency("EUR", 2),))
    try:
        with pytest.raises(ConfigError, match=r"^gateway\.currency: 'USD'"):
            create_app(cfg, ledger=ledger)
    finally:
        ledger.close()


def test_the_gateway_ledger_pays_only_agents_of_its_store(tmp_path: Path) -> None:
    from teegate.gateway import GatewayStore
    from teegate.gateway.factory import build_app
    from teegate.ledger import NotFound

    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = GatewayStore(url)
    store.create_key("alice")
    app = build_app(parse_config({**_cfg(), "gateway": {
        "database_url": url, "data_dir": str(tmp_path)}}), store=store)
    try:
        from teegate.ledger import LedgerAccounting

        accounting = app.gateway.accounting
        assert isinstance(accounting, LedgerAccounting)
        ledger = accounting.ledger
        ledger.deposit("alice", 5)
        with pytest.raises(NotFound, match="no agent 'bob'"):
            ledger.deposit("bob", 5)
        assert store.has_agent("alice")
        assert not store.has_agent("bob")
    finally:
        for close in app.gateway.closers:
            close()


def test_data_dir_moves_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gateways with data directories of their own and no database_url keep two
    databases; `agents create` and the ledger CLI write into the configured one."""
    monkeypatch.delenv("TEEGATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("TEEGATE_HOME", str(tmp_path / "home"))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        data = tmp_path / name / "data"
        (tmp_path / name / "teegate.toml").write_text(STARTER.replace(
            'listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:8080"\ndata_dir = "{data}"'))
        assert load_config(tmp_path / name / "teegate.toml").database_url == (
            f"sqlite:///{data / 'teegate.db'}")
    runner = CliRunner()
    monkeypatch.chdir(tmp_path / "a")
    r = runner.invoke(app, ["agents", "create", "only-in-a"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "data" / "teegate.db").is_file()
    assert not (tmp_path / "home" / "teegate.db").exists()
    monkeypatch.chdir(tmp_path / "b")
    assert "only-in-a" not in runner.invoke(app, ["agents", "list"]).output
    monkeypatch.chdir(tmp_path / "a")
    assert "only-in-a" in runner.invoke(app, ["agents", "list"]).output
    from teegate.cli.ledger import database_url

    assert database_url(None) == f"sqlite:///{tmp_path / 'a' / 'data' / 'teegate.db'}"


def test_model_policies(tmp_path: Path) -> None:
    """[models."NAME"] policy = FILE: applied to every attested provider serving NAME, with
    that provider's roots; a model no attested provider serves, or a bad table, stops loading."""
    (tmp_path / "m.toml").write_text('[dstack]\ncompose_hashes = ["' + "ab" * 32 + '"]\n')
    root = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    def cfg(models: dict[str, Any]) -> Any:
        return parse_config({"providers": [
            {**NODE, "id": "a", "models": ["m1", "m2"],
             "policy_inline": {"roots": {"intel": [root]}}},
            {"id": "b", "platform": "ollama", "base_url": "http://127.0.0.1:2/v1",
             "models": ["m1"]}], "models": models},
            base_dir=tmp_path)

    a, b = cfg({"m1": {"policy": "m.toml"}}).providers
    assert set(a.model_policies) == {"m1"}
    assert a.model_policies["m1"].dstack.compose_hashes == {"ab" * 32}
    assert a.model_policies["m1"].roots.intel == (root,)
    assert b.model_policies == {}
    with pytest.raises(ConfigError, match=r'models."m3": no provider with attestation'):
        cfg({"m3": {"policy": "m.toml"}})
    with pytest.raises(ConfigError, match=r'models."m1".polcy: unknown field'):
        cfg({"m1": {"polcy": "m.toml"}})
    with pytest.raises(ConfigError, match=r'models."m1".policy: .*cannot read'):
        cfg({"m1": {"policy": "missing.toml"}})

"""[chain] in teegate.toml: every field checked by name; the key only from the environment."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from teegate.chain.config import parse_chain
from teegate.chain.scheme import address_of, checksum
from teegate.errors import ConfigError
from teegate.gateway.config import load_config

KEY = os.urandom(32)
ENV = {"TEEGATE_RECEIVER_KEY": "0x" + KEY.hex()}
GOOD: dict[str, Any] = {
    "rpc_url": "http://127.0.0.1:8545", "chain_id": 31337,
    "channels": "0x4020074e9df2ce1dee5a9c1b5c3f541d02a10003", "token": "0x" + "44" * 20,
    "confirmations": 3, "withdraw_delay_seconds": 7200, "claim_margin_seconds": 900,
    "claim_interval_seconds": 30,
}


def test_a_good_section() -> None:
    cfg = parse_chain(GOOD, ENV)
    assert cfg.channels == "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
    assert cfg.receiver == checksum(address_of(KEY))
    assert (cfg.confirmations, cfg.withdraw_delay, cfg.claim_margin) == (3, 7200, 900)
    assert cfg.domain.chain_id == 31337
    assert KEY.hex() not in repr(cfg)


@pytest.mark.parametrize(("change", "field"), [
    ({"rpc_url": "ftp://x"}, "chain.rpc_url"),
    ({"chain_id": 0}, "chain.chain_id"),
    ({"chain_id": None}, "chain.chain_id"),
    ({"channels": "0x1234"}, "chain.channels"),
    ({"token": None}, "chain.token"),
    ({"confirmations": -1}, "chain.confirmations"),
    ({"withdraw_delay_seconds": 899}, "chain.withdraw_delay_seconds"),
    ({"claim_margin_seconds": 7200}, "chain.claim_margin_seconds"),
    ({"claim_interval_seconds": 0}, "chain.claim_interval_seconds"),
    ({"receiver_key_env": "lower"}, "chain.receiver_key_env"),
    ({"receiver_key_env": "NOT_SET_ANYWHERE"}, "chain.receiver_key_env"),
    ({"surprise": 1}, "chain.surprise"),
])
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_chain(raw, ENV)


def test_the_gateway_config_reads_the_section(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEEGATE_RECEIVER_KEY", KEY.hex())
    lines = [f'{k} = {v!r}' if isinstance(v, str) else f"{k} = {v}" for k, v in GOOD.items()]
    provider = ('[[providers]]\nid = "p"\nplatform = "open-ai"\n'
                'base_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n')
    text = provider + "\n[chain]\n" + "\n".join(
        line.replace("'", '"') for line in lines) + "\n"
    assert tomllib.loads(text)["chain"]["chain_id"] == 31337
    path = tmp_path / "teegate.toml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.chain is not None
    assert cfg.chain.receiver == checksum(address_of(KEY))
    path.write_text(provider, encoding="utf-8")
    assert load_config(path).chain is None

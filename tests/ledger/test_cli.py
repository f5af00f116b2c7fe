"""``teegate wallet|conversation|ledger`` against a real SQLite file: output and exit codes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.cli import app
from teegate.cli.ledger import _Usage, parse_amount
from teegate.gateway.store import GatewayStore

runner = CliRunner()


def _agents(url: str, *ids: str) -> None:
    """The gateway's agents (the ledger pays only agents that exist); creates the file."""
    store = GatewayStore(url)
    for agent in ids:
        store.create_key(agent)
    store.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _agents(url, "alice", "bob", "carol")
    return url


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.output


def test_wallet_conversation_reward_and_check(db: str) -> None:
    code, out = run("wallet", "deposit", "alice", "12.5", "--db", db, "--key", "d1")
    assert code == 0, out
    assert "12.500000 USD" in out
    assert run("wallet", "deposit", "alice", "12.5", "--db", db, "--key", "d1")[0] == 0
    code, out = run("conversation", "open", "alice", "2.0", "--db", db)
    assert code == 0, out
    conv = out.strip()
    assert conv.startswith("conv_")
    code, out = run("conversation", "reward", conv, "bob=1.25", "carol=0.000001", "--db", db)
    assert code == 0, out
    assert "rewarded bob 1.250000 USD" in out
    code, out = run("conversation", "close", conv, "--db", db)
    assert code == 0, out
    assert "returned 2.000000 USD" in out
    code, out = run("wallet", "balance", "alice", "--db", db, "--json")
    assert code == 0, out
    assert json.loads(out)["available"] == 12_500_000 - 1_250_001
    code, out = run("wallet", "history", "alice", "--db", db)
    assert code == 0
    assert "reward" in out
    assert "deposit" in out
    code, out = run("ledger", "check", "--db", db)
    assert code == 0, out
    assert "ok" in out
    code, out = run("ledger", "expire", "--db", db)
    assert code == 0
    assert "released 0 expired holds" in out


def test_refusals_exit_1_and_usage_errors_exit_2(db: str) -> None:
    run("wallet", "deposit", "alice", "1.0", "--db", db)
    code, out = run("conversation", "open", "alice", "5.0", "--db", db)
    assert code == 1
    assert "needed 5000000, available 1000000" in out.replace("\n", "")
    assert run("wallet", "deposit", "alice", "1.0000001", "--db", db)[0] == 2
    assert run("wallet", "deposit", "alice", "-3", "--db", db)[0] == 2
    assert run("wallet", "deposit", "alice", "abc", "--db", db)[0] == 2
    assert run("wallet", "deposit", "a:b", "1", "--db", db)[0] == 2
    assert run("conversation", "close", "conv_missing", "--db", db)[0] == 1
    assert run("conversation", "reward", "conv_x", "bob", "--db", db)[0] == 2
    assert run("wallet", "balance", "alice", "--db", "mysql://nope")[0] == 2
    code, out = run("wallet", "withdraw", "alice", "2.0", "--db", db)
    assert code == 1


def test_check_exits_1_on_a_corrupted_ledger(db: str, tmp_path: Path) -> None:
    run("wallet", "deposit", "alice", "1.0", "--db", db)
    conn = sqlite3.connect(tmp_path / "cli.db", isolation_level=None)
    conn.execute("UPDATE tl_accounts SET balance = balance + 7 WHERE kind = 'wallet'")
    conn.close()
    code, out = run("ledger", "check", "--db", db)
    assert code == 1
    assert "cached balance 1000007" in out


def test_parse_amount_is_exact() -> None:
    assert parse_amount("1.5", 6) == 1_500_000
    assert parse_amount("0.000001", 6) == 1
    assert parse_amount("7", 0) == 7
    assert parse_amount(".5", 2) == 50
    assert parse_amount("5", 6) == 5  # digits alone: smallest units, as in the HTTP API
    assert parse_amount("5.0", 6) == 5_000_000  # a decimal point: currency units
    for bad in ("1.5", "1e3", "", "0", "0.0", "1.", "nan", "\u0665", "\u0661.\u0665",
                "\uff15", "1_000", " 5", "5 ", "+5", "-5", "0x10", "\u00b2", "9" * 41):
        with pytest.raises(_Usage):
            parse_amount(bad, 0 if bad == "1.5" else 2)


def test_one_amount_syntax_with_the_http_api(db: str) -> None:
    """``5`` was 5,000,000 units on the CLI and 5 units in the HTTP API."""
    assert run("wallet", "deposit", "alice", "5", "--db", db)[0] == 0
    assert json.loads(run("wallet", "balance", "alice", "--db", db, "--json")[1])[
        "available"] == 5
    assert run("wallet", "deposit", "alice", "5.0", "--db", db)[0] == 0
    code, out = run("wallet", "deposit", "alice", "\u0665", "--db", db)  # Arabic-Indic 5
    assert code == 2
    assert "ASCII digits" in out
    assert json.loads(run("wallet", "balance", "alice", "--db", db, "--json")[1])[
        "available"] == 5_000_005


def test_without_db_the_gateway_config_in_the_working_directory_names_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEEGATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("TEEGATE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    (tmp_path / "teegate.toml").write_text(f'[gateway]\ndatabase_url = "{url}"\n')
    _agents(url, "alice")
    code, out = run("wallet", "deposit", "alice", "3")
    assert code == 0, out
    rows = sqlite3.connect(tmp_path / "gateway.db").execute(
        "SELECT COUNT(*) FROM tl_transfers").fetchone()
    assert rows[0] == 1
    assert not (tmp_path / "home" / "teegate.db").exists()
    (tmp_path / "teegate.toml").write_text("[gateway\n")  # broken: said, not ignored
    code, out = run("wallet", "balance", "alice")
    assert code != 0
    assert "teegate.toml" in out


def test_a_missing_database_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in (("wallet", "balance", "alice"), ("wallet", "history", "alice"),
                 ("wallet", "spend", "alice"), ("ledger", "check"), ("ledger", "expire"),
                 ("wallet", "deposit", "alice", "1"), ("conversation", "close", "c")):
        code, out = run(*args, "--db", f"sqlite:///{missing}")
        assert code == 2, (args, out)
        assert "no database at" in out
        assert not missing.exists()


def test_deposits_and_rewards_to_unknown_agents_are_refused(db: str) -> None:
    code, out = run("wallet", "deposit", "mallory", "1", "--db", db)
    assert code == 1
    assert "no agent 'mallory'" in out
    assert run("wallet", "deposit", "alice", "1.0", "--db", db)[0] == 0
    conv = run("conversation", "open", "alice", "0.5", "--db", db)[1].strip()
    code, out = run("conversation", "reward", conv, "bob=0.1", "mallory=0.1", "--db", db)
    assert code == 1
    assert "no agent 'mallory'" in out
    assert run("conversation", "close", conv, "--db", db)[0] == 0
    code, out = run("conversation", "reward", conv, "bob=0.1", "--db", db)
    assert code == 1
    assert "is closed" in out
    assert json.loads(run("wallet", "balance", "bob", "--db", db, "--json")[1])[
        "available"] == 0


@pytest.mark.parametrize("ttl", ["nan", "inf", "-inf", "0", "-5"])
def test_a_ttl_must_be_finite_and_positive(db: str, ttl: str) -> None:
    run("wallet", "deposit", "alice", "1.0", "--db", db)
    code, out = run("conversation", "open", "alice", "0.5", "--ttl", ttl, "--db", db)
    assert code == 2, out
    assert "--ttl must be a finite number" in out
    assert json.loads(run("wallet", "balance", "alice", "--db", db, "--json")[1])[
        "reserved"] == 0


def test_keys_are_1_to_200_characters_and_cannot_block_a_close(db: str) -> None:
    assert run("wallet", "deposit", "alice", "1", "--db", db, "--key", "k" * 201)[0] == 2
    assert run("wallet", "deposit", "alice", "1.0", "--db", db, "--key", "k" * 200)[0] == 0
    conv = run("conversation", "open", "alice", "0.5", "--db", db)[1].strip()
    code, out = run("wallet", "deposit", "alice", "1", "--db", db, "--key", f"close:{conv}")
    assert code == 0, out
    code, out = run("conversation", "close", conv, "--db", db)
    assert code == 0, out
    assert "returned 0.500000 USD" in out


def test_a_history_cursor_beyond_64_bits_is_a_usage_error(db: str) -> None:
    code, out = run("wallet", "history", "alice", "--db", db, "--before", str(2**70))
    assert code == 2, out
    assert "before must be a transfer seq" in out


@pytest.mark.parametrize("opts", [["--currency", "EUR"], ["--decimals", "2"],
                                  ["--currency", "EUR", "--decimals", "2"]])
def test_only_the_currency_the_gateway_keeps(db: str, opts: list[str]) -> None:
    """``--decimals 2`` read 1.5 as 150 micro-dollars; ``--currency EUR`` filled accounts
    that no gateway charges."""
    code, out = run("wallet", "deposit", "alice", "1.5", "--db", db, *opts)
    assert code == 2, out
    assert "keeps USD with 6 decimals" in out.replace("\n", "")
    assert run("wallet", "deposit", "alice", "1.5", "--db", db, "--currency", "USD",
               "--decimals", "6")[0] == 0

"""`teegate agent mint|wallet|deposit` on a real anvil with teegate's contracts deployed: the
chain shows what each command printed; keys only from the environment or the devnet file's
development key; every refusal a message and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from typer.testing import CliRunner, Result
from web3 import Web3

from teegate.chain.agents import AgentChain, Deployment
from teegate.chain.artifacts import load_artifact
from teegate.chain.book import ChannelBook
from teegate.chain.devnet import dev_key
from teegate.chain.reverts import RevertError
from teegate.chain.scheme import ChannelConfig, Domain
from teegate.cli import app
from teegate.ledger.db import open_backend
from tests.chain.anvil import anvil, deployed, free_port, needs_anvil

pytestmark = needs_anvil
__all__ = ["anvil", "deployed"]  # fixtures
NO_DB = {"TEEGATE_DATABASE_URL": "", "TEEGATE_OWNER_KEY": ""}


def run(home: Path, *args: str, **env: str) -> Result:
    res = CliRunner().invoke(app, list(args), env={"TEEGATE_HOME": str(home), **NO_DB, **env})
    assert "Traceback" not in res.output
    return res


def balance(data: dict[str, Any], who: str) -> int:
    w3 = Web3(Web3.HTTPProvider(data["rpc_url"]))
    token = w3.eth.contract(address=data["token"]["address"], abi=load_artifact("DevToken").abi)
    return int(token.functions.balanceOf(who).call())


def test_mint_deposit_wallet_with_the_development_key(deployed: tuple[Path, dict[str, Any]]
                                                      ) -> None:
    home, data = deployed
    res = run(home, "agent", "mint", "--uri", "https://example.test/a.json", "--json")
    assert res.exit_code == 0, res.output
    assert "DEVELOPMENT owner key from devnet.json" in res.stderr
    minted = json.loads(res.stdout)
    assert minted["owner"] == data["owner"]["address"]
    w3 = Web3(Web3.HTTPProvider(data["rpc_url"]))
    identity = w3.eth.contract(address=data["contracts"]["identity"],
                               abi=load_artifact("AgentIdentityRegistry").abi)
    assert identity.functions.ownerOf(minted["token_id"]).call() == data["owner"]["address"]
    assert identity.functions.tokenURI(minted["token_id"]).call() == "https://example.test/a.json"
    assert len(w3.eth.get_code(minted["wallet"])) > 0  # the ERC-6551 account exists
    account = w3.eth.contract(address=minted["wallet"], abi=load_artifact("AgentAccount").abi)
    assert account.functions.owner().call() == data["owner"]["address"]

    owner_before = balance(data, data["owner"]["address"])
    res = run(home, "agent", "deposit", str(minted["token_id"]), "1.5", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["amount"], out["wallet"], out["chain_balance"]) == (
        1_500_000, minted["wallet"], 1_500_000)
    res = run(home, "agent", "deposit", str(minted["token_id"]), "25")  # smallest units
    assert res.exit_code == 0, res.output
    assert balance(data, minted["wallet"]) == 1_500_025
    assert owner_before - balance(data, data["owner"]["address"]) == 1_500_025

    res = run(home, "agent", "wallet", str(minted["token_id"]), "--json")
    assert res.exit_code == 0, res.output
    view = json.loads(res.stdout)
    assert view == {"token_id": minted["token_id"], "owner": data["owner"]["address"],
                    "wallet": minted["wallet"], "wallet_deployed": True,
                    "chain_balance": 1_500_025, "decimals": 6, "ledger": None}
    res = run(home, "agent", "wallet", str(minted["token_id"]))
    assert "1.500025" in res.stdout
    assert "no gateway database configured" in res.stdout


def test_keys_come_from_the_environment(deployed: tuple[Path, dict[str, Any]]) -> None:
    home, _data = deployed
    other = dev_key(6)  # funded with gas by anvil, holds no tokens, owns no agent yet
    res = run(home, "agent", "mint", "--signer", dev_key(4).address, "--json",
              TEEGATE_OWNER_KEY=other.private_key)
    assert res.exit_code == 0, res.output
    assert "key from $TEEGATE_OWNER_KEY" in res.stderr
    minted = json.loads(res.stdout)
    assert minted["owner"] == other.address
    assert len(minted["transactions"]) == 3  # register, createAccount, setSigner
    # this owner holds no tokens: the deposit is refused before any transaction
    res = run(home, "agent", "deposit", str(minted["token_id"]), "1",
              TEEGATE_OWNER_KEY=other.private_key)
    assert res.exit_code == 1
    assert "insufficient funds" in res.stderr
    assert other.address in res.stderr
    # a malformed key is refused without being echoed
    res = run(home, "agent", "mint", TEEGATE_OWNER_KEY="0xnot-a-key-deadbeef")
    assert res.exit_code == 2
    assert "TEEGATE_OWNER_KEY: not a 32-byte hex private key" in res.stderr
    assert "deadbeef" not in res.output


def test_refusals(deployed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    home, data = deployed
    res = run(home, "agent", "wallet", "999")
    assert res.exit_code == 1
    assert "unknown agent #999" in res.stderr
    res = run(home, "agent", "deposit", "999", "1")
    assert res.exit_code == 1
    assert "unknown agent #999" in res.stderr
    for bad in ("1.5.3", "-1", "1.1234567", "0"):
        res = run(home, "agent", "deposit", "1", bad)
        assert res.exit_code == 2, (bad, res.output)
    res = run(home, "agent", "mint", "--signer", "nope")
    assert res.exit_code == 2
    assert "not an address" in res.stderr
    gone = tmp_path / "devnet.json"
    gone.write_text(json.dumps({**data, "rpc_url": f"http://127.0.0.1:{free_port()}"}))
    for args in (["mint"], ["wallet", "1"], ["deposit", "1", "1"]):
        res = run(home, "agent", *args, "--devnet", str(gone))
        assert res.exit_code == 2, res.output
        assert "no chain answers" in res.stderr
    res = run(tmp_path / "empty", "agent", "wallet", "1")
    assert res.exit_code == 2
    assert "no devnet file" in res.stderr


def test_a_revert_is_named(deployed: tuple[Path, dict[str, Any]]) -> None:
    home, _ = deployed
    chain = AgentChain(Deployment.load(home / "devnet.json"))
    poor = dev_key(7)
    with pytest.raises(RevertError) as e:
        chain.send("transfer", chain.token.functions.transfer(dev_key(1).address, 5),
                   Account.from_key(poor.private_key))
    assert e.value.name == "ERC20InsufficientBalance"
    assert f"sender={poor.address}" in str(e.value)
    assert "needed=5" in str(e.value)


def test_the_ledgers_view_beside_the_chains(deployed: tuple[Path, dict[str, Any]],
                                            tmp_path: Path) -> None:
    home, data = deployed
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    backend = open_backend(url)
    book = ChannelBook(backend)
    config = ChannelConfig.of(payer=data["agent"]["wallet"],
                              payer_authorizer=data["agent"]["signer_address"],
                              receiver=data["gateway"]["address"],
                              receiver_authorizer=data["gateway"]["address"],
                              token=data["token"]["address"], withdraw_delay=3600,
                              salt=os.urandom(32))
    cid = config.channel_id(Domain.of(data["chain_id"], data["contracts"]["channels"]))
    book.register(config, cid, conversation="c1", agent=str(data["agent"]["token_id"]))
    backend.close()
    res = run(home, "agent", "wallet", str(data["agent"]["token_id"]), "--db", url, "--json")
    assert res.exit_code == 0, res.output
    view = json.loads(res.stdout)
    assert view["chain_balance"] == balance(data, data["agent"]["wallet"])
    assert view["ledger"] == {"channels": 1, "open_channels": 1, "escrowed": 0, "charged": 0,
                              "claimed": 0}

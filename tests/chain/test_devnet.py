"""`teegate chain deploy|status` on a real anvil (the pinned npm one), then an agent's
conversation paid on it end to end without the gateway process: the agent wallet deposits by
EIP-3009 (its signer key, ERC-1271), the signer's vouchers cover three calls, the book settles
them, the edge claims, settles and refunds the rest, a facilitator rewards two agents at once.
The chain shows exactly: the gateway got the sum of the costs, the wallet the rest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak
from typer.testing import CliRunner
from web3 import Web3
from web3.exceptions import ContractCustomError

from teegate.chain.artifacts import load_artifact
from teegate.chain.book import ChannelBook
from teegate.chain.config import ChainConfig
from teegate.chain.devnet import ERC3009_COLLECTOR, dev_key
from teegate.chain.edge import ChainEdge
from teegate.chain.scheme import ChannelConfig, Domain, sign_digest, voucher_digest
from teegate.chain.vouchers import Voucher, check_voucher
from teegate.cli import app
from teegate.ledger.db import open_backend
from tests.chain.anvil import anvil, deployed, free_port, needs_anvil

pytestmark = needs_anvil
SHAPE = {"rpc_url", "chain_id", "token", "contracts", "agent", "owner", "gateway", "facilitator",
         "_comment"}
__all__ = ["anvil", "deployed"]  # fixtures


@pytest.fixture(scope="module")
def devnet(deployed: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    home, data = deployed
    runner = CliRunner()
    assert (home / "devnet.json").stat().st_mode & 0o777 == 0o600
    res = runner.invoke(app, ["chain", "status", "--json", "--devnet", str(home / "devnet.json")])
    assert res.exit_code == 0, res.output
    data["_status"] = json.loads(res.output)
    return data


def test_devnet_json_has_the_issues_shape(devnet: dict[str, Any]) -> None:
    assert set(devnet) - {"_status"} == SHAPE
    assert set(devnet["token"]) == {"address", "name", "version", "decimals"}
    assert set(devnet["contracts"]) >= {"identity", "account_registry",
                                        "account_implementation", "channels", "rewards"}
    assert set(devnet["agent"]) == {"token_id", "wallet", "signer_address", "signer_private_key"}
    assert set(devnet["owner"]) == {"address", "private_key"}
    assert devnet["chain_id"] == 31337
    assert devnet["contracts"]["channels"] == "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
    assert devnet["contracts"]["account_registry"] == "0x000000006551c19487814612e58FE06813775758"
    assert Account.from_key(devnet["agent"]["signer_private_key"]).address == (
        devnet["agent"]["signer_address"])
    status = devnet["_status"]
    assert status["agent_wallet_balance"] == 10_000 * 10**6
    assert status["channels_contract_balance"] == 0


def test_status_fails_closed_without_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "devnet.json"
    path.write_text(json.dumps({"rpc_url": f"http://127.0.0.1:{free_port()}"}))
    res = CliRunner().invoke(app, ["chain", "status", "--devnet", str(path)])
    assert res.exit_code == 2
    assert "no chain answers" in res.output
    assert "Traceback" not in res.output


def test_a_conversation_paid_from_the_agent_wallet_on_anvil(devnet: dict[str, Any],
                                                           anvil: str, tmp_path: Path) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil))
    token = w3.eth.contract(address=devnet["token"]["address"], abi=load_artifact("DevToken").abi)
    channels = w3.eth.contract(address=devnet["contracts"]["channels"],
                               abi=load_artifact("ConversationChannels").abi)
    wallet = devnet["agent"]["wallet"]
    signer = bytes.fromhex(devnet["agent"]["signer_private_key"][2:])
    gateway = dev_key(2)
    assert gateway.address == devnet["gateway"]["address"]
    domain = Domain.of(devnet["chain_id"], channels.address)
    config = ChannelConfig.of(payer=wallet, payer_authorizer=devnet["agent"]["signer_address"],
                              receiver=gateway.address, receiver_authorizer=gateway.address,
                              token=token.address, withdraw_delay=3600, salt=os.urandom(32))
    cid = config.channel_id(domain)
    deposit, costs = 1_000_000, [123_456, 78_901, 5]

    # the agent's signer authorises the deposit from the wallet (ERC-1271 on the token)
    salt = int.from_bytes(os.urandom(32), "big")
    valid_before = int(w3.eth.get_block("latest")["timestamp"]) + 600
    nonce = keccak(abi_encode(["bytes32", "uint256"], [cid, salt]))
    typed = Account.sign_typed_data(signer, {
        "name": devnet["token"]["name"], "version": devnet["token"]["version"],
        "chainId": devnet["chain_id"], "verifyingContract": token.address}, {
        "ReceiveWithAuthorization": [
            {"name": n, "type": t} for n, t in (
                ("from", "address"), ("to", "address"), ("value", "uint256"),
                ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"))]},
        {"from": wallet, "to": ERC3009_COLLECTOR, "value": deposit, "validAfter": 0,
         "validBefore": valid_before, "nonce": nonce})
    data = abi_encode(["uint256", "uint256", "uint256", "bytes"],
                      [0, valid_before, salt, bytes(typed.signature)])
    wallet_before = int(token.functions.balanceOf(wallet).call())
    gateway_before = int(token.functions.balanceOf(gateway.address).call())
    relay = dev_key(4).address  # anyone may relay the deposit (the facilitator here)
    tx = channels.functions.deposit(config.as_tuple(), deposit, ERC3009_COLLECTOR, data
                                    ).transact({"from": relay})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1

    cfg = ChainConfig(rpc_url=anvil, chain_id=devnet["chain_id"], channels=channels.address,
                      token=token.address, receiver_key=bytes.fromhex(gateway.private_key[2:]),
                      confirmations=1)
    book = ChannelBook(open_backend(f"sqlite:///{tmp_path / 'ledger.db'}"))
    edge = ChainEdge(w3, cfg, book)
    book.register(config, cid, conversation="conv-anvil", agent=str(devnet["agent"]["token_id"]))
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    edge.sync()
    hold = 200_000
    charged = 0
    for i, cost in enumerate(costs):
        ceiling = charged + hold
        header = Voucher(cid, ceiling, sign_digest(signer, voucher_digest(domain, cid, ceiling))
                         ).as_header()
        channel = book.get(cid)
        assert channel is not None
        voucher = Voucher.from_header(header)
        check_voucher(domain, channel.view(), voucher, hold)
        charged = book.settle(f"hold-{i}", voucher, cost).charged
    assert charged == sum(costs)
    result = edge.claim()
    assert result is not None
    assert result.status == 1
    edge.settle()
    channel = book.get(cid)
    assert channel is not None
    assert edge.refund_rest(channel) is not None
    assert int(token.functions.balanceOf(gateway.address).call()) - gateway_before == sum(costs)
    assert wallet_before - int(token.functions.balanceOf(wallet).call()) == sum(costs)
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    edge.sync()
    channel = book.get(cid)
    assert channel is not None
    assert (channel.mirror.balance, channel.mirror.total_claimed) == (sum(costs), sum(costs))
    assert book.claim_tx_of(cid) == result.tx_hash

    # rewards: a facilitator pays two agents' wallets in one transaction, or none of them
    rewards = w3.eth.contract(address=devnet["contracts"]["rewards"],
                              abi=load_artifact("AgentRewards").abi)
    fac = devnet["facilitator"]["address"]
    assert w3.eth.wait_for_transaction_receipt(token.functions.approve(
        rewards.address, 10**6).transact({"from": fac}))["status"] == 1
    conv = keccak(b"conv-anvil")
    unknown = rewards.functions.distribute(token.address, conv, os.urandom(32), [1, 999], [5, 5])
    with pytest.raises(ContractCustomError) as refused:
        unknown.transact({"from": fac})
    assert "0x" + keccak(text="ERC721NonexistentToken(uint256)")[:4].hex() in str(refused.value)
    assert int(token.functions.balanceOf(wallet).call()) == wallet_before - sum(costs)
    tx = rewards.functions.distribute(token.address, conv, os.urandom(32), [1], [7]
                                      ).transact({"from": fac})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert int(token.functions.balanceOf(wallet).call()) == wallet_before - sum(costs) + 7

"""End to end on a real anvil through real `teegate serve` processes: the devnet's agent wallet
deposits into a conversation channel, the agent makes N calls paid by vouchers, the gateway is
SIGKILLed after the calls settled and before any claim, restarted: the chain then shows exactly
one claim of the sum of the calls' costs, the gateway paid that sum, the wallet keeps the rest
after the cooperative refund; the receipts state the same costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak
from web3 import Web3

from teegate.chain.artifacts import load_artifact
from teegate.chain.book import ChannelBook
from teegate.chain.config import ChainConfig
from teegate.chain.devnet import ERC3009_COLLECTOR, deploy_devnet, dev_key
from teegate.chain.edge import ChainEdge
from teegate.chain.scheme import ChannelConfig, Domain, sign_digest, voucher_digest
from teegate.chain.vouchers import Voucher
from teegate.gateway import GatewayStore
from teegate.ledger.db import open_backend
from teegate.node import BuiltinEngine, engine_app
from tests.chain.anvil import HAVE_ANVIL, anvil, free_port
from tests.gateway.loopback import Server, serving

__all__ = ["anvil"]  # the shared module-scoped fixture

pytestmark = pytest.mark.skipif(not HAVE_ANVIL, reason="anvil not installed (scripts/setup)")
EXE = Path(sys.executable).parent / "teegate"
ADMIN = "admin-e2e-" + "0123456789abcdef" * 2
CALLS = 4


class Serve:
    def __init__(self, config: Path, home: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [str(EXE), "serve", "--config", str(config), "--port", str(self.port),
             "--log-level", "warning"],
            env={**os.environ, "TEEGATE_HOME": str(home), "TG_E2E_ADMIN": ADMIN, **env},
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.2)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert "Traceback" not in self.log.read_text(), self.log.read_text()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serving(engine_app(BuiltinEngine(("m",)))) as s:
        yield s


def config_file(tmp_path: Path, db: str, upstream: str, devnet: dict[str, Any],
                claim_interval: int) -> Path:
    path = tmp_path / f"teegate-{claim_interval}.toml"
    path.write_text(f"""
[gateway]
database_url = "{db}"
data_dir = "{tmp_path / 'data'}"
admin_key_env = "TG_E2E_ADMIN"

[[providers]]
id = "up"
platform = "ollama"
base_url = "{upstream}/v1"
models = ["m"]
[providers.prices.m]
input = 0
output = 1000000

[chain]
rpc_url = "{devnet['rpc_url']}"
chain_id = {devnet['chain_id']}
channels = "{devnet['contracts']['channels']}"
token = "{devnet['token']['address']}"
receiver_key_env = "TEEGATE_RECEIVER_KEY"
confirmations = 0
withdraw_delay_seconds = 3600
claim_margin_seconds = 600
claim_interval_seconds = {claim_interval}
""")
    return path


def wallet_deposit(w3: Web3, devnet: dict[str, Any], config: ChannelConfig, cid: bytes,
                   amount: int) -> None:
    """The agent's signer authorises the wallet's EIP-3009 deposit (ERC-1271); anyone relays."""
    signer = devnet["agent"]["signer_private_key"]
    token = devnet["token"]["address"]
    salt = int.from_bytes(os.urandom(32), "big")
    before = int(w3.eth.get_block("latest")["timestamp"]) + 600
    nonce = keccak(abi_encode(["bytes32", "uint256"], [cid, salt]))
    fields = (("from", "address"), ("to", "address"), ("value", "uint256"),
              ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"))
    signed = Account.sign_typed_data(signer, {
        "name": devnet["token"]["name"], "version": devnet["token"]["version"],
        "chainId": devnet["chain_id"], "verifyingContract": token},
        {"ReceiveWithAuthorization": [{"name": n, "type": t} for n, t in fields]},
        {"from": devnet["agent"]["wallet"], "to": ERC3009_COLLECTOR, "value": amount,
         "validAfter": 0, "validBefore": before, "nonce": nonce})
    data = abi_encode(["uint256", "uint256", "uint256", "bytes"],
                      [0, before, salt, bytes(signed.signature)])
    channels = w3.eth.contract(address=devnet["contracts"]["channels"],
                               abi=load_artifact("ConversationChannels").abi)
    tx = channels.functions.deposit(config.as_tuple(), amount, ERC3009_COLLECTOR, data
                                    ).transact({"from": devnet["facilitator"]["address"]})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def until(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_paid_by_vouchers_through_teegate_serve_killed_before_the_claim(
        anvil: str, upstream: Server, tmp_path: Path) -> None:
    devnet = deploy_devnet(anvil)
    w3 = Web3(Web3.HTTPProvider(anvil))
    token = w3.eth.contract(address=devnet["token"]["address"], abi=load_artifact("DevToken").abi)
    channels = w3.eth.contract(address=devnet["contracts"]["channels"],
                               abi=load_artifact("ConversationChannels").abi)
    wallet, gateway = devnet["agent"]["wallet"], dev_key(2)
    db = f"sqlite:///{tmp_path / 'teegate.db'}"
    store = GatewayStore(db)
    key = store.create_key("agent-chain", trust="standard")
    store.close()
    domain = Domain.of(devnet["chain_id"], channels.address)
    config = ChannelConfig.of(payer=wallet, payer_authorizer=devnet["agent"]["signer_address"],
                              receiver=gateway.address, receiver_authorizer=gateway.address,
                              token=token.address, withdraw_delay=3600, salt=os.urandom(32))
    cid = config.channel_id(domain)
    wallet_start = int(token.functions.balanceOf(wallet).call())
    gateway_start = int(token.functions.balanceOf(gateway.address).call())
    deposit = 10_000
    wallet_deposit(w3, devnet, config, cid, deposit)
    book = ChannelBook(open_backend(db))
    book.register(config, cid, conversation="conv-e2e", agent="agent-chain")
    env = {"TEEGATE_RECEIVER_KEY": gateway.private_key}
    home = tmp_path / "home"

    first = Serve(config_file(tmp_path, db, upstream.url, devnet, claim_interval=500), home, env)
    until(lambda: book.get(cid).mirror.balance == deposit)  # type: ignore[union-attr]
    signer = bytes.fromhex(devnet["agent"]["signer_private_key"][2:])
    charged, costs, receipts = 0, [], []
    for _ in range(CALLS):
        ceiling = charged + 100
        header = Voucher(cid, ceiling, sign_digest(signer, voucher_digest(domain, cid, ceiling))
                         ).as_header()
        r = httpx.post(first.url + "/v1/chat/completions", timeout=60, json={
            "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {key}", "x-teegate-conversation": "conv-e2e",
                     "x-teegate-voucher": header})
        assert r.status_code == 200, r.text
        cost = int(r.json()["usage"]["completion_tokens"])  # 1 unit per output token
        costs.append(cost)
        charged += cost
        receipts.append(r.headers["x-teegate-receipt"])
        until(lambda want=charged: book.get(cid).mirror.charged == want)  # type: ignore[union-attr]
    first.kill()  # settled in the book, not yet claimed
    assert [int(x) for x in channels.functions.channels(cid).call()] == [deposit, 0]

    second = Serve(config_file(tmp_path, db, upstream.url, devnet, claim_interval=1), home, env)
    try:
        until(lambda: int(channels.functions.channels(cid).call()[1]) == sum(costs))
        until(lambda: int(token.functions.balanceOf(gateway.address).call()) - gateway_start
              == sum(costs))
        time.sleep(3)  # a few more loop rounds: nothing claimed twice
        claimed = channels.events.Claimed().get_logs(from_block=0)
        assert [int(e.args.newTotalClaimed) for e in claimed
                if bytes(e.args.channelId) == cid] == [sum(costs)]
        auth = {"authorization": f"Bearer {key}"}
        receipt_costs = []
        for rid in receipts:
            doc = httpx.get(f"{second.url}/v1/receipts/{rid}", headers=auth,
                            timeout=30).json()["receipt"]
            receipt_costs.append({e["type"]: e for e in doc["event_log"]}[
                "teegate.settlement"]["cost"])
        assert receipt_costs == costs
    finally:
        second.stop()

    # close: the gateway returns the rest on chain
    cfg = ChainConfig(rpc_url=anvil, chain_id=devnet["chain_id"], channels=channels.address,
                      token=token.address, receiver_key=bytes.fromhex(gateway.private_key[2:]),
                      confirmations=0)
    edge = ChainEdge(w3, cfg, book)
    channel = book.get(cid)
    assert channel is not None
    assert edge.refund_rest(channel) is not None
    assert int(token.functions.balanceOf(wallet).call()) == wallet_start - sum(costs)
    assert int(token.functions.balanceOf(gateway.address).call()) - gateway_start == sum(costs)
    edge.sync()
    channel = book.get(cid)
    assert channel is not None
    assert (channel.mirror.balance, channel.mirror.total_claimed,
            channel.mirror.charged) == (sum(costs), sum(costs), sum(costs))
    assert json.dumps(book.claims())  # the claims the processes planned are on record

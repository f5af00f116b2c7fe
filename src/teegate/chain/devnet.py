"""A local development chain: anvil (pinned in contracts/package.json, installed by scripts/setup)
with teegate's contracts deployed, development accounts funded and a development agent minted.

The channel contract and its EIP-3009 collector are placed at the x402 SDK's canonical addresses
(``anvil_setCode`` with the runtime code compiled from teegate's sources), and the ERC-6551
registry at its canonical address, so x402 clients and ERC-6551 tooling find them where they look.
Every key here is anvil's public development mnemonic or derived from it: DEVELOPMENT ONLY.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from teegate.chain.artifacts import load_artifact
from teegate.errors import ChainError

#: anvil's default development mnemonic (public, printed by anvil at start): development only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
CHANNELS = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
ERC3009_COLLECTOR = "0x4020806089470a89826cB9fB1f4059150b550004"
ERC6551_REGISTRY = "0x000000006551c19487814612e58FE06813775758"
ACCOUNT_SALT = b"\0" * 32
TOKEN = ("Dev 6022", "D6022", "2", 6)


@dataclass(frozen=True)
class DevKey:
    address: str
    private_key: str


def dev_key(index: int) -> DevKey:
    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return DevKey(str(acct.address), "0x" + bytes(acct.key).hex())


def anvil_binary() -> Path:
    """The pinned anvil binary under contracts/node_modules (scripts/setup installs it)."""
    root = Path(__file__).resolve().parents[3] / "contracts" / "node_modules" / "@foundry-rs"
    path = root / "anvil-linux-amd64" / "bin" / "anvil"
    if path.is_file():
        return path
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ChainError(f"anvil not found at {path}: run scripts/setup (it installs @foundry-rs/anvil "
                     "from the npm registry)")


def start_anvil(port: int = 8545, *, block_time: float | None = None) -> subprocess.Popen[bytes]:
    """Starts anvil on 127.0.0.1:``port`` and waits until it answers."""
    args = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(port), "--silent"]
    if block_time:
        args += ["--block-time", str(block_time)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 2}))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ChainError(f"anvil exited at start: {err.strip()[:300]}")
        try:
            _ = w3.eth.block_number
            return proc
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise ChainError(f"anvil did not answer on port {port} within 20 s")


class _Deployer:
    def __init__(self, w3: Web3, sender: str) -> None:
        self.w3 = w3
        self.sender = sender

    def deploy(self, name: str, *args: Any) -> Contract:
        art = load_artifact(name)
        tx = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(
            *args).transact({"from": self.sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1 or receipt["contractAddress"] is None:
            raise ChainError(f"deploying {name} failed")
        return self.at(name, str(receipt["contractAddress"]))

    def place(self, name: str, address: str, *args: Any) -> Contract:
        """Deploys ``name`` once, then copies its runtime code to ``address``."""
        scratch = self.deploy(name, *args)
        code = self.w3.eth.get_code(scratch.address)
        self.w3.provider.make_request("anvil_setCode", [address, "0x" + bytes(code).hex()])  # type: ignore[arg-type]
        return self.at(name, address)

    def at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address),
                                    abi=load_artifact(name).abi)

    def send(self, call: Any, sender: str | None = None) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(
            call.transact({"from": sender or self.sender}))
        if receipt["status"] != 1:
            raise ChainError(f"transaction {receipt['transactionHash'].hex()} reverted")
        return receipt


def deploy_devnet(rpc_url: str, *, agent_funds: int = 10_000 * 10**6) -> dict[str, Any]:
    """Deploys everything on a fresh anvil at ``rpc_url`` and returns devnet.json's content."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    deployer, owner, gateway, facilitator, signer = (dev_key(i) for i in range(5))
    d = _Deployer(w3, deployer.address)
    token = d.deploy("DevToken", *TOKEN)
    channels = d.place("ConversationChannels", CHANNELS)
    d.place("ERC3009DepositCollector", ERC3009_COLLECTOR, CHANNELS)
    wallet_collector = d.deploy("WalletDepositCollector", CHANNELS)
    identity = d.deploy("AgentIdentityRegistry", "Teegate Agents", "AGENT")
    registry = d.place("ERC6551Registry", ERC6551_REGISTRY)
    implementation = d.deploy("AgentAccount")
    rewards = d.deploy("AgentRewards", registry.address, implementation.address, ACCOUNT_SALT,
                       identity.address)
    chain_id = int(w3.eth.chain_id)
    receipt = d.send(identity.functions.register("https://teegate.dev/agents/dev.json"),
                     owner.address)
    registered = identity.events.Registered().process_receipt(receipt, errors=DISCARD)
    agent_id = int(registered[0].args.agentId)
    args = (implementation.address, ACCOUNT_SALT, chain_id, identity.address, agent_id)
    d.send(registry.functions.createAccount(*args), owner.address)
    wallet = d.at("AgentAccount", registry.functions.account(*args).call())
    d.send(wallet.functions.setSigner(signer.address, True), owner.address)
    for who in (wallet.address, owner.address, signer.address, facilitator.address):
        d.send(token.functions.mint(who, agent_funds))
    return {
        "_comment": "DEVELOPMENT ONLY: keys from anvil's public mnemonic; never use with value",
        "rpc_url": rpc_url,
        "chain_id": chain_id,
        "token": {"address": token.address, "name": TOKEN[0], "version": TOKEN[2],
                  "decimals": TOKEN[3]},
        "contracts": {"identity": identity.address, "account_registry": registry.address,
                      "account_implementation": implementation.address,
                      "channels": channels.address, "rewards": rewards.address,
                      "erc3009_collector": ERC3009_COLLECTOR,
                      "wallet_collector": wallet_collector.address},
        "agent": {"token_id": agent_id, "wallet": wallet.address,
                  "signer_address": signer.address, "signer_private_key": signer.private_key},
        "owner": {"address": owner.address, "private_key": owner.private_key},
        "gateway": {"address": gateway.address},
        "facilitator": {"address": facilitator.address},
    }


def write_devnet(home: Path, data: dict[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "devnet.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path

"""Gas per contract operation, measured on the in-process EVM (eth-tester / py-evm, Prague rules).

Run: ``.venv/bin/python bench/chain.py`` (a few seconds; prints one line per operation and a JSON
summary). Figures are the receipts' gasUsed, so they include the 21000 base and calldata.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chain.evm import Chain, events, new_account, sign_typed

AUTH_FIELDS = [
    ("from", "address"), ("to", "address"), ("value", "uint256"),
    ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"),
]


def main() -> int:
    c = Chain()
    gas: dict[str, int] = {}
    admin, owner, facilitator = c.accounts[0], c.accounts[1], c.accounts[2]

    token = c.deploy("DevToken", "Dev 6022", "D6022", "2", 6)
    identity = c.deploy("AgentIdentityRegistry", "Teegate Agents", "AGENT")
    registry = c.deploy("ERC6551Registry")
    implementation = c.deploy("AgentAccount")
    salt = b"\x00" * 32
    rewards = c.deploy("AgentRewards", registry.address, implementation.address, salt,
                       identity.address)

    receipt = c.transact(identity.functions.register("https://a.example/1.json"), owner)
    gas["identity.register(agentURI)"] = receipt["gasUsed"]
    agent = int(events(identity, "Registered", receipt)[0].args.agentId)
    receipt = c.transact(registry.functions.createAccount(
        implementation.address, salt, c.chain_id, identity.address, agent), owner)
    gas["registry.createAccount"] = receipt["gasUsed"]
    wallet = c.at("AgentAccount", rewards.functions.walletOf(agent).call())
    signer = new_account()
    gas["account.setSigner"] = c.transact(wallet.functions.setSigner(signer.address, True),
                                          owner)["gasUsed"]
    gas["token.mint"] = c.transact(token.functions.mint(wallet.address, 10**9), admin)["gasUsed"]
    pay = token.functions.transfer(facilitator, 1)._encode_transaction_data()
    gas["account.execute(token.transfer)"] = c.transact(
        wallet.functions.execute(token.address, 0, pay, 0), owner)["gasUsed"]
    domain = {"name": "Dev 6022", "version": "2", "chainId": c.chain_id,
              "verifyingContract": token.address}
    payer = new_account()
    c.transact(token.functions.mint(payer.address, 10**9), admin)
    for label, source, key in (("EOA", payer.address, payer), ("agent wallet ERC-1271",
                                                                 wallet.address, signer)):
        message = {"from": source, "to": facilitator, "value": 5, "validAfter": 0,
                   "validBefore": c.now() + 600, "nonce": os.urandom(32)}
        sig = sign_typed(key, domain, "TransferWithAuthorization", AUTH_FIELDS, message)
        gas[f"token.transferWithAuthorization ({label})"] = c.transact(
            token.functions.transferWithAuthorization(*message.values(), sig), admin)["gasUsed"]
    gas["token.transfer"] = c.transact(token.functions.transfer(owner, 1), facilitator)["gasUsed"]
    agents = [agent]
    for i in range(4):
        r = c.transact(identity.functions.register(f"https://a.example/{i}.json"), owner)
        agents.append(int(events(identity, "Registered", r)[0].args.agentId))
    c.transact(token.functions.mint(facilitator, 10**6), admin)
    c.transact(token.functions.approve(rewards.address, 10**6), facilitator)
    for legs in (1, 5):
        gas[f"rewards.distribute ({legs} legs)"] = c.transact(rewards.functions.distribute(
            token.address, os.urandom(32), os.urandom(32), agents[:legs], [10] * legs),
            facilitator)["gasUsed"]
    gas["identity.transferFrom (wallet moves)"] = c.transact(
        identity.functions.transferFrom(owner, admin, agent), owner)["gasUsed"]
    for name, used in gas.items():
        print(f"{name:56} {used:>9}")
    print(json.dumps(gas))
    return 0


if __name__ == "__main__":
    sys.exit(main())

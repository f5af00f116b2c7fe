"""Gas per contract operation, measured on the in-process EVM (eth-tester / py-evm, Prague rules).

Run: ``.venv/bin/python bench/chain.py`` (under a minute; prints one line per operation and a JSON
summary). Figures are the receipts' gasUsed, so they include the 21000 base and calldata.
``--vouchers`` adds voucher verification in process: teegate's ``check_voucher`` beside the x402
SDK's server-side check (channel config binding + EIP-712 recovery), p50/p99 over 2000 runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chain.channels import World
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
    gas.update(channel_gas())
    for name, used in gas.items():
        print(f"{name:56} {used:>9}")
    print(json.dumps(gas))
    if "--vouchers" in sys.argv[1:]:
        print(json.dumps(voucher_timings()))
    return 0


def channel_gas() -> dict[str, int]:
    """ConversationChannels at the canonical address, as the x402 SDK expects it."""
    w = World()
    c = w.chain
    f = w.channels.functions
    gas: dict[str, int] = {}
    configs = [w.config() for _ in range(10)]
    w.mint(w.payer.address, 10**9)
    gas["channels.deposit (EIP-3009, new channel)"] = w.deposit(configs[0], 1000)["gasUsed"]
    gas["channels.deposit (EIP-3009, top-up)"] = w.deposit(configs[0], 1000)["gasUsed"]
    for config in configs[1:]:
        w.deposit(config, 1000)
    gas["channels.claim (1 row)"] = c.transact(f.claim([w.row(configs[0], 10)]),
                                               w.receiver.address)["gasUsed"]
    rows = [w.row(config, 20) for config in configs]
    gas["channels.claim (10 rows)"] = c.transact(f.claim(rows), w.receiver.address)["gasUsed"]
    one = [w.row(configs[0], 30)]
    gas["channels.claimWithSignature (1 row)"] = c.transact(
        f.claimWithSignature(one, w.claim_signature(one)), w.stranger.address)["gasUsed"]
    rows = [w.row(config, 40) for config in configs]
    gas["channels.claimWithSignature (10 rows)"] = c.transact(
        f.claimWithSignature(rows, w.claim_signature(rows)), w.stranger.address)["gasUsed"]
    gas["channels.settle"] = c.transact(f.settle(w.receiver.address, w.token.address),
                                        w.stranger.address)["gasUsed"]
    gas["channels.refund"] = c.transact(f.refund(configs[1].as_tuple(), 100),
                                        w.receiver.address)["gasUsed"]
    gas["channels.refundWithSignature"] = c.transact(f.refundWithSignature(
        configs[2].as_tuple(), 100, 0, w.refund_signature(configs[2], 0, 100)),
        w.stranger.address)["gasUsed"]
    gas["channels.initiateWithdraw"] = c.transact(f.initiateWithdraw(configs[3].as_tuple(), 500),
                                                  w.payer.address)["gasUsed"]
    c.travel(900)
    gas["channels.finalizeWithdraw"] = c.transact(f.finalizeWithdraw(configs[3].as_tuple()),
                                                  w.payer.address)["gasUsed"]
    payer = w.party()
    config = w.config(payer=payer)
    w.mint(payer.address, 1000)
    c.transact(w.token.functions.approve(w.wallet_collector.address, 1000), payer.address)
    gas["walletCollector.depositFrom (new channel)"] = c.transact(
        w.wallet_collector.functions.depositFrom(config.as_tuple(), 1000), payer.address)["gasUsed"]
    return gas


def voucher_timings(runs: int = 2000) -> dict[str, float]:
    """p50 / p99 in ms of one voucher check, teegate's and the x402 SDK's, same voucher."""
    import statistics
    import time

    from x402.mechanisms.evm.batch_settlement.facilitator.utils import (
        validate_channel_config,
        verify_batch_settlement_voucher_typed_data,
    )
    from x402.mechanisms.evm.batch_settlement.types import ChannelConfig as SdkConfig
    from x402.schemas import PaymentRequirements

    from teegate.chain import scheme
    from teegate.chain.vouchers import ChannelView, Voucher, check_voucher

    key = os.urandom(32)
    authorizer = scheme.checksum(scheme.address_of(key))
    chain_id = 8453
    domain = scheme.Domain.of(chain_id, "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003")
    parties = [scheme.checksum(os.urandom(20)) for _ in range(4)]
    salt = "0x" + os.urandom(32).hex()
    config = scheme.ChannelConfig.of(payer=parties[0], payer_authorizer=authorizer,
                                     receiver=parties[1], receiver_authorizer=parties[2],
                                     token=parties[3], withdraw_delay=900, salt=salt)
    cid = config.channel_id(domain)
    signature = scheme.sign_digest(key, scheme.voucher_digest(domain, cid, 5000))
    header = Voucher(cid, 5000, signature).as_header()
    view = ChannelView(config, cid, balance=10**6, total_claimed=1000, charged=4000)

    def ours() -> None:
        check_voucher(domain, view, Voucher.from_header(header), hold=1000)

    sdk_config = SdkConfig(payer=parties[0], payer_authorizer=authorizer, receiver=parties[1],
                           receiver_authorizer=parties[2], token=parties[3], withdraw_delay=900,
                           salt=salt)
    requirements = PaymentRequirements(
        scheme="batch-settlement", network=f"eip155:{chain_id}", asset=parties[3],
        amount="1000", pay_to=parties[1], max_timeout_seconds=60,
        extra={"receiverAuthorizer": parties[2], "withdrawDelay": 900, "name": "USDC",
               "version": "2"})
    cid_hex, sig_hex = "0x" + cid.hex(), "0x" + signature.hex()

    def sdk() -> None:
        assert validate_channel_config(sdk_config, cid_hex, requirements) is None
        assert verify_batch_settlement_voucher_typed_data(
            None, cid_hex, "5000", authorizer, parties[0], sig_hex, chain_id)  # type: ignore[arg-type]

    out: dict[str, float] = {}
    for name, fn in (("teegate.check_voucher", ours), ("x402 SDK server-side", sdk)):
        for _ in range(50):
            fn()
        samples = []
        for _ in range(runs if name.startswith("teegate") else runs // 4):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        out[f"{name} p50 ms"] = round(statistics.median(samples), 4)
        out[f"{name} p99 ms"] = round(samples[int(len(samples) * 0.99) - 1], 4)
    return out


if __name__ == "__main__":
    sys.exit(main())

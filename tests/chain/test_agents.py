"""Agent identity (ERC-8004 shape), ERC-6551 wallets and rewards, on one in-process EVM."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.crypto import keccak
from web3.contract import Contract

from tests.chain.evm import Chain, events, high_s, new_account, revert_of, sign_typed

SALT = b"\x00" * 32
WALLET_FIELDS = [("agentId", "uint256"), ("newWallet", "address"), ("owner", "address"),
                 ("deadline", "uint256")]
AUTH_FIELDS = [
    ("from", "address"), ("to", "address"), ("value", "uint256"),
    ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"),
]


class World:
    def __init__(self) -> None:
        self.chain = c = Chain()
        self.token = c.deploy("DevToken", "Dev 6022", "D6022", "2", 6)
        self.identity = c.deploy("AgentIdentityRegistry", "Teegate Agents", "AGENT")
        self.registry = c.deploy("ERC6551Registry")
        self.implementation = c.deploy("AgentAccount")
        self.rewards = c.deploy("AgentRewards", self.registry.address,
                                self.implementation.address, SALT, self.identity.address)

    def mint_agent(self, owner: str) -> tuple[int, Contract]:
        receipt = self.chain.transact(self.identity.functions.register("https://a.example/1.json"),
                                      owner)
        (registered,) = events(self.identity, "Registered", receipt)
        agent_id = int(registered.args.agentId)
        self.chain.transact(self.registry.functions.createAccount(
            self.implementation.address, SALT, self.chain.chain_id, self.identity.address,
            agent_id), owner)
        address = self.registry.functions.account(
            self.implementation.address, SALT, self.chain.chain_id, self.identity.address,
            agent_id).call()
        return agent_id, self.chain.at("AgentAccount", address)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def wallet_proof(world: World, signer: LocalAccount, agent_id: int, wallet: str, owner: str,
                 deadline: int) -> bytes:
    domain = {"name": "Teegate Agents", "version": "1", "chainId": world.chain.chain_id,
              "verifyingContract": world.identity.address}
    message = {"agentId": agent_id, "newWallet": wallet, "owner": owner, "deadline": deadline}
    return sign_typed(signer, domain, "AgentWalletSet", WALLET_FIELDS, message)


def test_registration_and_agent_wallet_proof(world: World) -> None:
    c, ident = world.chain, world.identity
    owner, stranger = c.accounts[1], c.accounts[2]
    agent_id, _ = world.mint_agent(owner)
    assert ident.functions.tokenURI(agent_id).call() == "https://a.example/1.json"
    assert ident.functions.getAgentWallet(agent_id).call() == owner
    got = revert_of(ident, ident.functions.setAgentURI(agent_id, "x"), stranger)
    assert (got.name, got.args) == ("NotAuthorized", (stranger, agent_id))
    got = revert_of(ident, ident.functions.setMetadata(agent_id, "agentWallet", b"\x01" * 20),
                    owner)
    assert got.name == "ReservedMetadataKey"
    c.transact(ident.functions.setMetadata(agent_id, "tee", b"tdx"), owner)
    assert ident.functions.getMetadata(agent_id, "tee").call() == b"tdx"

    new = new_account()
    deadline = c.now() + 120
    proof = wallet_proof(world, new, agent_id, new.address, owner, deadline)
    forged = wallet_proof(world, new_account(), agent_id, new.address, owner, deadline)
    for sig in (forged, high_s(proof)):
        got = revert_of(ident, ident.functions.setAgentWallet(agent_id, new.address, deadline, sig),
                        owner)
        assert got.name == "InvalidWalletSignature"
    got = revert_of(ident, ident.functions.setAgentWallet(agent_id, new.address, deadline, proof),
                    stranger)
    assert got.name == "NotAuthorized"
    far = c.now() + 3600
    got = revert_of(ident, ident.functions.setAgentWallet(
        agent_id, new.address, far, wallet_proof(world, new, agent_id, new.address, owner, far)),
        owner)
    assert (got.name, got.args) == ("DeadlineTooFar", (far,))
    past = c.now() - 1
    got = revert_of(ident, ident.functions.setAgentWallet(
        agent_id, new.address, past, wallet_proof(world, new, agent_id, new.address, owner, past)),
        owner)
    assert got.name == "DeadlineExpired"
    c.transact(ident.functions.setAgentWallet(agent_id, new.address, deadline, proof), owner)
    assert ident.functions.getAgentWallet(agent_id).call() == new.address
    # a transfer clears the wallet; the old proof names the old owner, so it no longer verifies
    c.transact(ident.functions.transferFrom(owner, stranger, agent_id), owner)
    assert ident.functions.getAgentWallet(agent_id).call() == "0x" + "00" * 20
    got = revert_of(ident, ident.functions.setAgentWallet(agent_id, new.address, deadline, proof),
                    stranger)
    assert got.name == "InvalidWalletSignature"


def test_account_is_erc6551_and_follows_the_nft(world: World) -> None:
    c, ident = world.chain, world.identity
    owner, buyer = c.accounts[3], c.accounts[4]
    agent_id, account = world.mint_agent(owner)
    f = account.functions
    assert f.token().call() == [c.chain_id, ident.address, agent_id]
    assert f.owner().call() == owner
    for interface in ("01ffc9a7", "6faff5f1", "51945447", "1626ba7e", "150b7a02"):
        assert f.supportsInterface(bytes.fromhex(interface)).call(), interface
    assert not f.supportsInterface(bytes.fromhex("ffffffff")).call()
    assert f.isValidSigner(owner, b"").call() == bytes.fromhex("523e3260")
    # creating again returns the same account without a new deployment
    receipt = c.transact(world.registry.functions.createAccount(
        world.implementation.address, SALT, c.chain_id, ident.address, agent_id), buyer)
    assert events(world.registry, "ERC6551AccountCreated", receipt) == []
    # the owner deposits tokens; only the owner executes; state moves on every execution
    c.transact(world.token.functions.mint(account.address, 1000), c.accounts[0])
    pay = world.token.functions.transfer(buyer, 10)._encode_transaction_data()
    got = revert_of(account, f.execute(world.token.address, 0, pay, 0), buyer)
    assert (got.name, got.args) == ("NotOwner", (buyer,))
    got = revert_of(account, f.execute(world.token.address, 0, pay, 1), owner)
    assert got.name == "UnsupportedOperation"
    before = f.state().call()
    c.transact(f.execute(world.token.address, 0, pay, 0), owner)
    assert f.state().call() == before + 1
    assert world.token.functions.balanceOf(buyer).call() == 10
    # an inner revert is bubbled up unchanged
    too_much = world.token.functions.transfer(buyer, 10**9)._encode_transaction_data()
    got = revert_of(world.token, f.execute(world.token.address, 0, too_much, 0), owner)
    assert got.name == "ERC20InsufficientBalance"
    # ERC-1271: the owner's key and an authorised signer key; a stranger, high-s refused
    signer = new_account()
    digest = Hash32(keccak(b"voucher"))
    assert f.isValidSignature(digest, bytes(signer.unsafe_sign_hash(digest).signature)).call() \
        == bytes.fromhex("ffffffff")
    got = revert_of(account, f.setSigner(signer.address, True), buyer)
    assert got.name == "NotOwner"
    c.transact(f.setSigner(signer.address, True), owner)
    sig = bytes(signer.unsafe_sign_hash(digest).signature)
    assert f.isValidSignature(digest, sig).call() == bytes.fromhex("1626ba7e")
    assert f.isValidSignature(digest, high_s(sig)).call() == bytes.fromhex("ffffffff")
    # the agent's wallet pays by EIP-3009 with its signer key (the token checks ERC-1271)
    message = {"from": account.address, "to": buyer, "value": 5, "validAfter": 0,
               "validBefore": c.now() + 600, "nonce": os.urandom(32)}
    domain = {"name": "Dev 6022", "version": "2", "chainId": c.chain_id,
              "verifyingContract": world.token.address}
    auth = sign_typed(signer, domain, "TransferWithAuthorization", AUTH_FIELDS, message)
    c.transact(world.token.functions.transferWithAuthorization(*message.values(), auth), buyer)
    assert world.token.functions.balanceOf(buyer).call() == 15
    # transferring the NFT transfers the wallet: the buyer executes, the old owner and the old
    # owner's signer key no longer count
    c.transact(ident.functions.transferFrom(owner, buyer, agent_id), owner)
    assert f.owner().call() == buyer
    assert f.isValidSignature(digest, sig).call() == bytes.fromhex("ffffffff")
    got = revert_of(account, f.execute(world.token.address, 0, pay, 0), owner)
    assert got.name == "NotOwner"
    c.transact(f.execute(world.token.address, 0, pay, 0), buyer)
    assert world.token.functions.balanceOf(buyer).call() == 25
    # the account refuses to own its own NFT
    got = revert_of(account, ident.functions.safeTransferFrom(buyer, account.address, agent_id),
                    buyer)
    assert got.name == "OwnershipCycle"
    # the implementation alone belongs to no NFT and no one
    assert world.implementation.functions.owner().call() == "0x" + "00" * 20


def distribute(world: World, facilitator: str, conversation: bytes, distribution: bytes,
               agents: list[int], amounts: list[int]) -> Any:
    return world.rewards.functions.distribute(world.token.address, conversation, distribution,
                                              agents, amounts)


def test_rewards_all_legs_or_none(world: World) -> None:
    c, rewards, token = world.chain, world.rewards, world.token
    facilitator = c.accounts[5]
    agents = [world.mint_agent(c.accounts[6])[0], world.mint_agent(c.accounts[7])[0]]
    wallets = [rewards.functions.walletOf(a).call() for a in agents]
    c.transact(token.functions.mint(facilitator, 100), c.accounts[0])
    c.transact(token.functions.approve(rewards.address, 1000), facilitator)
    conversation = keccak(b"conversation-1")
    balances = [token.functions.balanceOf(w).call() for w in wallets]
    # an unknown agent, a zero leg, too little balance: each reverts every leg
    for ids, amounts, error in (
        ([agents[0], 10**6], [10, 10], "ERC721NonexistentToken"),
        (agents, [10, 0], "ZeroAmount"),
        (agents, [10, 91], "ERC20InsufficientBalance"),
        (agents, [10], "LengthMismatch"),
        ([], [], "EmptyDistribution"),
    ):
        got = revert_of(rewards, distribute(world, facilitator, conversation, os.urandom(32), ids,
                                            amounts), facilitator, also=(token, world.identity))
        assert got.name == error
    assert [token.functions.balanceOf(w).call() for w in wallets] == balances
    distribution = os.urandom(32)
    receipt = c.transact(distribute(world, facilitator, conversation, distribution, agents,
                                    [30, 70]), facilitator)
    assert [token.functions.balanceOf(w).call() for w in wallets] == [30, 70]
    paid = events(rewards, "RewardPaid", receipt)
    assert [(e.args.conversationId, e.args.agentId, e.args.wallet, e.args.amount) for e in paid] \
        == [(conversation, agents[0], wallets[0], 30), (conversation, agents[1], wallets[1], 70)]
    (summary,) = events(rewards, "RewardsDistributed", receipt)
    assert (summary.args.facilitator, summary.args.total, summary.args.legs) == (
        facilitator, 100, 2)
    # a retried distribution never pays twice
    c.transact(token.functions.mint(facilitator, 100), c.accounts[0])
    got = revert_of(rewards, distribute(world, facilitator, conversation, distribution, agents,
                                        [30, 70]), facilitator)
    assert (got.name, got.args) == ("AlreadyDistributed", (facilitator, distribution))

"""ConversationChannels (x402 batch-settlement) on an in-process EVM: every refusal by name."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_utils.crypto import keccak
from web3.contract import Contract

from teegate.chain import scheme
from teegate.chain.scheme import ChannelConfig, ClaimEntry
from teegate.errors import ChainError
from tests.chain.channels import DELAY, ERC3009_COLLECTOR, World
from tests.chain.evm import events, high_s, revert_of

U128 = (1 << 128) - 1


@pytest.fixture(scope="module")
def w() -> World:
    return World()


def refused(w: World, call: Any, sender: str, also: tuple[Contract, ...] = ()) -> str:
    return revert_of(w.channels, call, sender, also=(w.token, w.collector, *also)).name


# ------------------------------------------------------------------------- type hashes, digests


def test_type_hashes_and_domain_are_the_schemes(w: World) -> None:
    f = w.channels.functions
    assert f.CHANNEL_CONFIG_TYPEHASH().call() == scheme.CHANNEL_CONFIG_TYPEHASH
    assert f.VOUCHER_TYPEHASH().call() == scheme.VOUCHER_TYPEHASH
    assert f.REFUND_TYPEHASH().call() == scheme.REFUND_TYPEHASH
    assert f.CLAIM_ENTRY_TYPEHASH().call() == scheme.CLAIM_ENTRY_TYPEHASH
    assert f.CLAIM_BATCH_TYPEHASH().call() == scheme.CLAIM_BATCH_TYPEHASH
    assert f.MIN_WITHDRAW_DELAY().call() == 900
    assert f.MAX_WITHDRAW_DELAY().call() == 2_592_000
    fields = f.eip712Domain().call()
    assert fields[1:5] == ["x402 Batch Settlement", "1", w.chain.chain_id, w.channels.address]


def test_digests_match_the_contracts_views(w: World) -> None:
    config = w.config()
    cid = w.cid(config)
    f = w.channels.functions
    assert f.getChannelId(config.as_tuple()).call() == cid
    assert f.getVoucherDigest(cid, 12345).call() == scheme.voucher_digest(w.domain, cid, 12345)
    assert f.getRefundDigest(cid, 7, 99).call() == scheme.refund_digest(w.domain, cid, 7, 99)
    other = w.config()
    rows = [w.row(config, 10, 4), w.row(other, 20, 20)]
    entries = [ClaimEntry(cid, 10, 4), ClaimEntry(w.cid(other), 20, 20)]
    assert f.getClaimBatchDigest(rows).call() == scheme.claim_batch_digest(w.domain, entries)
    assert f.getClaimBatchDigest([]).call() == scheme.claim_batch_digest(w.domain, [])
    # one config, another deployment: another channel
    assert config.channel_id(scheme.Domain.of(w.chain.chain_id, w.token.address)) != cid


def test_channel_config_parsing_refuses_what_deposit_refuses(w: World) -> None:
    good = w.config().as_json()
    args: dict[str, Any] = {
        "payer": good["payer"], "payer_authorizer": good["payerAuthorizer"],
        "receiver": good["receiver"], "receiver_authorizer": good["receiverAuthorizer"],
        "token": good["token"], "withdraw_delay": DELAY, "salt": good["salt"]}
    assert ChannelConfig.of(**args).as_json() == good
    for field in ("payer", "receiver", "receiver_authorizer", "token"):
        with pytest.raises(ChainError, match=f"{field} is the zero address"):
            ChannelConfig.of(**{**args, field: "0x" + "00" * 20})
    for delay in (899, 2_592_001):
        with pytest.raises(ChainError, match="withdraw delay"):
            ChannelConfig.of(**{**args, "withdraw_delay": delay})
    with pytest.raises(ChainError, match="20-byte address"):
        ChannelConfig.of(**{**args, "payer": "0x1234"})


# ---------------------------------------------------------------------------------- deposits


def test_deposit_by_eip3009_opens_the_channel(w: World) -> None:
    config = w.config()
    w.mint(w.payer.address, 500)
    before = w.balance(w.channels.address)
    receipt = w.deposit(config, 300)
    (created,) = events(w.channels, "ChannelCreated", receipt)
    assert created.args.channelId == w.cid(config)
    (dep,) = events(w.channels, "Deposited", receipt)
    assert (dep.args.amount, dep.args.newBalance) == (300, 300)
    assert w.state(config) == (300, 0)
    assert w.balance(w.channels.address) == before + 300
    assert w.balance(ERC3009_COLLECTOR) == 0
    receipt = w.deposit(config, 200)  # top-up: no second ChannelCreated
    assert events(w.channels, "ChannelCreated", receipt) == []
    assert w.state(config) == (500, 0)


def test_deposit_refusals(w: World) -> None:
    base = w.config()
    zero = "0x" + "00" * 20
    f = w.channels.functions
    s = w.stranger.address
    for index in (0, 2, 3, 4):
        t = list(base.as_tuple())
        t[index] = zero
        assert refused(w, f.deposit(tuple(t), 1, ERC3009_COLLECTOR, b""), s) == "InvalidChannel"
    for delay in (899, 30 * 86400 + 1):
        t = list(base.as_tuple())
        t[5] = delay
        assert refused(w, f.deposit(tuple(t), 1, ERC3009_COLLECTOR, b""),
                       s) == "WithdrawDelayOutOfRange"
    assert refused(w, f.deposit(base.as_tuple(), 0, ERC3009_COLLECTOR, b""), s) == "ZeroDeposit"
    assert refused(w, f.deposit(base.as_tuple(), 1, zero, b""), s) == "InvalidCollector"
    # a collector that delivers less than the amount: the balance check refuses
    short = w.chain.deploy("ShortCollector")
    w.mint(short.address, 10)
    assert refused(w, f.deposit(base.as_tuple(), 5, short.address, b""),
                   s) == "DepositCollectionFailed"


def test_deposit_overflow_is_refused(w: World) -> None:
    config = w.config()
    w.mint(w.payer.address, U128)
    w.deposit(config, U128 - 5)
    data = w.authorization(config, 6)
    assert refused(w, w.channels.functions.deposit(config.as_tuple(), 6, ERC3009_COLLECTOR, data),
                   w.stranger.address) == "DepositOverflow"
    w.chain.transact(w.channels.functions.refund(config.as_tuple(), U128), w.receiver.address)
    w.chain.transact(w.token.functions.transfer(w.stranger.address, w.balance(w.payer.address)),
                     w.payer.address)


def test_eip3009_deposit_refusals(w: World) -> None:
    config = w.config()
    w.mint(w.payer.address, 100)
    f = w.channels.functions
    s = w.stranger.address
    forged = w.authorization(config, 10, signer=w.stranger)
    assert refused(w, f.deposit(config.as_tuple(), 10, ERC3009_COLLECTOR, forged),
                   s) == "InvalidSignature"
    # an authorization for another channel does not fund this one (the nonce binds the channel)
    other = w.config()
    elsewhere = w.authorization(config, 10, channel_id=w.cid(other))
    assert refused(w, f.deposit(config.as_tuple(), 10, ERC3009_COLLECTOR, elsewhere),
                   s) == "InvalidSignature"
    # an amount other than the signed one
    signed = w.authorization(config, 10)
    assert refused(w, f.deposit(config.as_tuple(), 11, ERC3009_COLLECTOR, signed),
                   s) == "InvalidSignature"
    expired = w.authorization(config, 10, valid_before=w.chain.now() - 1)
    assert refused(w, f.deposit(config.as_tuple(), 10, ERC3009_COLLECTOR, expired),
                   s) == "AuthorizationExpired"
    w.chain.transact(f.deposit(config.as_tuple(), 10, ERC3009_COLLECTOR, signed), s)
    assert refused(w, f.deposit(config.as_tuple(), 10, ERC3009_COLLECTOR, signed),
                   s) == "AuthorizationUsedOrCanceled"
    assert w.state(config) == (10, 0)


def test_only_the_channel_contract_may_collect(w: World) -> None:
    config = w.config()
    w.mint(w.payer.address, 10)
    data = w.authorization(config, 10)
    call = w.collector.functions.collect(w.payer.address, w.token.address, 10, w.cid(config), data)
    assert revert_of(w.collector, call, w.stranger.address).name == "OnlyChannels"
    wc = w.wallet_collector
    call = wc.functions.collect(w.payer.address, w.token.address, 10, w.cid(config), b"")
    assert revert_of(wc, call, w.stranger.address).name == "OnlyChannels"


def test_deposit_from_the_payers_own_call_and_not_in_its_name(w: World) -> None:
    payer = w.party()
    config = w.config(payer=payer)
    wc = w.wallet_collector
    w.mint(payer.address, 100)
    w.chain.transact(w.token.functions.approve(wc.address, 100), payer.address)
    # someone else cannot spend the payer's allowance into a channel of their choosing
    assert revert_of(wc, wc.functions.depositFrom(config.as_tuple(), 40),
                     w.stranger.address).name == "NotPayer"
    # nor through the channel contract with the wallet collector directly (nothing armed)
    assert refused(w, w.channels.functions.deposit(config.as_tuple(), 40, wc.address, b""),
                   w.stranger.address, also=(wc,)) == "NotArmed"
    w.chain.transact(wc.functions.depositFrom(config.as_tuple(), 40), payer.address)
    assert w.state(config) == (40, 0)
    assert w.balance(payer.address) == 60


# ------------------------------------------------------------------------------------ claims


def test_claims_in_one_batch_and_settle(w: World) -> None:
    a, b = w.open(1000), w.open(500)
    rows = [w.row(a, 300, 250), w.row(b, 500)]
    receipt = w.chain.transact(w.channels.functions.claim(rows), w.receiver.address)
    claimed = events(w.channels, "Claimed", receipt)
    assert [(e.args.claimAmount, e.args.newTotalClaimed) for e in claimed] == [(250, 250),
                                                                               (500, 500)]
    assert w.state(a) == (1000, 250)
    assert w.state(b) == (500, 500)
    due = w.channels.functions.receivers(w.receiver.address, w.token.address).call()
    before = w.balance(w.receiver.address)
    receipt = w.chain.transact(w.channels.functions.settle(w.receiver.address, w.token.address),
                               w.stranger.address)
    (settled,) = events(w.channels, "Settled", receipt)
    assert settled.args.amount == due[0] - due[1]
    assert w.balance(w.receiver.address) == before + due[0] - due[1]
    receipt = w.chain.transact(w.channels.functions.settle(w.receiver.address, w.token.address),
                               w.stranger.address)
    assert events(w.channels, "Settled", receipt) == []  # nothing new to sweep: a no-op
    # the receiver authorizer may claim too
    w.chain.transact(w.channels.functions.claim([w.row(a, 400)]), w.receiver_auth.address)
    assert w.state(a) == (1000, 400)


def test_claim_refusals(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    r = w.receiver.address
    assert refused(w, f.claim([]), r) == "EmptyBatch"
    assert refused(w, f.claim([w.row(config, 10)]), w.stranger.address) == "NotAuthorizedToClaim"
    assert refused(w, f.claim([w.row(config, 10, 11)]), r) == "ClaimExceedsCeiling"
    # a voucher above the deposit cannot be claimed above the deposit
    assert refused(w, f.claim([w.row(config, 101)]), r) == "ClaimExceedsBalance"
    w.chain.transact(f.claim([w.row(config, 500, 100)]), r)  # up to the deposit, it can
    assert w.state(config) == (100, 100)


def test_voucher_signatures(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    r = w.receiver.address
    good = w.voucher(config, 10)
    assert refused(w, f.claim([w.row(config, 10, signature=w.voucher(config, 10, w.payer))]),
                   r) == "InvalidSignature"  # the payer is not the channel's authorizer
    assert refused(w, f.claim([w.row(config, 10, signature=high_s(good))]), r) == "InvalidSignature"
    assert refused(w, f.claim([w.row(config, 10, signature=good[:64])]), r) == "InvalidSignature"
    assert refused(w, f.claim([w.row(config, 11, 10, signature=good)]), r) == "InvalidSignature"
    w.chain.transact(f.claim([w.row(config, 10, signature=good)]), r)
    assert w.state(config) == (100, 10)
    # the pure recovery refuses the same twin
    digest = scheme.voucher_digest(w.domain, w.cid(config), 10)
    assert scheme.recover(digest, good) == bytes.fromhex(w.payer_auth.address[2:])
    with pytest.raises(ChainError, match="high-s"):
        scheme.recover(digest, high_s(good))


def test_replayed_and_stale_vouchers_change_nothing(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    r = w.receiver.address
    w.chain.transact(f.claim([w.row(config, 60)]), r)
    for row in (w.row(config, 60), w.row(config, 30), w.row(config, 90, 40)):
        receipt = w.chain.transact(f.claim([row]), r)
        assert events(w.channels, "Claimed", receipt) == []
        assert w.state(config) == (100, 60)
    # even a stale row with a bad signature is a no-op, not a revert (the batch still lands)
    other = w.open(50)
    receipt = w.chain.transact(f.claim([w.row(config, 30, signature=b"\0" * 65),
                                        w.row(other, 50)]), r)
    assert [e.args.claimAmount for e in events(w.channels, "Claimed", receipt)] == [50]


def test_claim_with_signature_is_relayable(w: World) -> None:
    a, b = w.open(100), w.open(100)
    f = w.channels.functions
    rows = [w.row(a, 30), w.row(b, 40)]
    s = w.stranger.address
    assert refused(w, f.claimWithSignature([], b""), s) == "EmptyBatch"
    assert refused(w, f.claimWithSignature(rows, w.claim_signature(rows, w.stranger)),
                   s) == "InvalidSignature"
    assert refused(w, f.claimWithSignature(rows, w.claim_signature(rows[:1])),
                   s) == "InvalidSignature"
    good = w.claim_signature(rows)
    assert refused(w, f.claimWithSignature(rows, high_s(good)), s) == "InvalidSignature"
    # every row must share the first row's receiver authorizer
    foreign = w.open(100, receiver_auth=w.stranger)
    mixed = [w.row(a, 30), w.row(foreign, 10)]
    assert refused(w, f.claimWithSignature(mixed, w.claim_signature(mixed)),
                   s) == "NotReceiverAuthorizer"
    w.chain.transact(f.claimWithSignature(rows, good), s)
    assert w.state(a) == (100, 30)
    assert w.state(b) == (100, 40)
    receipt = w.chain.transact(f.claimWithSignature(rows, good), s)  # replay: no-op
    assert events(w.channels, "Claimed", receipt) == []


def test_vouchers_of_an_agent_wallet_without_payer_authorizer(w: World) -> None:
    """payerAuthorizer zero: the payer itself signs, here an ERC-6551 account via ERC-1271."""
    c = w.chain
    identity = c.deploy("AgentIdentityRegistry", "Teegate Agents", "AGENT")
    registry = c.deploy("ERC6551Registry")
    impl = c.deploy("AgentAccount")
    owner, signer = w.party(), w.party()
    c.transact(identity.functions.register("https://a.example/1.json"), owner.address)
    args = (impl.address, b"\0" * 32, c.chain_id, identity.address, 1)
    c.transact(registry.functions.createAccount(*args), owner.address)
    wallet = c.at("AgentAccount", registry.functions.account(*args).call())
    c.transact(wallet.functions.setSigner(signer.address, True), owner.address)
    zero = "0x" + "00" * 20
    config = w.config(payer_auth=zero)
    config = ChannelConfig(bytes.fromhex(wallet.address[2:]), *(
        getattr(config, k) for k in ("payer_authorizer", "receiver", "receiver_authorizer",
                                     "token", "withdraw_delay", "salt")))
    # the wallet deposits by EIP-3009 too: its signer key's signature, checked by ERC-1271
    w.mint(wallet.address, 100)
    data = w.authorization(config, 100, signer=signer)
    data_payer = w.authorization(config, 100, signer=w.stranger)
    f = w.channels.functions
    assert refused(w, f.deposit(config.as_tuple(), 100, ERC3009_COLLECTOR, data_payer),
                   w.stranger.address) == "InvalidSignature"
    # the stranger's EIP-3009 signature above named the wallet as "from" but the stranger
    # signed: refused. With the wallet's own signer:
    c.transact(f.deposit(config.as_tuple(), 100, ERC3009_COLLECTOR, data), w.stranger.address)
    r = w.receiver.address
    assert refused(w, f.claim([w.row(config, 10, signature=w.voucher(config, 10, w.stranger))]),
                   r) == "InvalidSignature"
    c.transact(f.claim([w.row(config, 10, signature=w.voucher(config, 10, signer))]), r)
    assert w.state(config) == (100, 10)


# ---------------------------------------------------------------------------------- refunds


def test_cooperative_refund(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    cid = w.cid(config)
    assert refused(w, f.refund(config.as_tuple(), 10),
                   w.stranger.address) == "NotAuthorizedToRefund"
    assert refused(w, f.refund(config.as_tuple(), 0), w.receiver.address) == "ZeroRefund"
    w.chain.transact(f.claim([w.row(config, 30)]), w.receiver.address)
    before = w.balance(w.payer.address)
    receipt = w.chain.transact(f.refund(config.as_tuple(), 1000), w.receiver_auth.address)
    (ref,) = events(w.channels, "Refunded", receipt)
    assert ref.args.amount == 70  # capped to the unclaimed escrow
    assert events(w.channels, "ChannelClosed", receipt) == []  # claims were made
    assert w.balance(w.payer.address) == before + 70
    assert w.state(config) == (30, 30)
    assert f.refundNonce(cid).call() == 1
    receipt = w.chain.transact(f.refund(config.as_tuple(), 5), w.receiver.address)
    assert events(w.channels, "Refunded", receipt) == []  # nothing left: no transfer...
    assert f.refundNonce(cid).call() == 2  # ...but the nonce advanced


def test_full_refund_closes_an_unclaimed_channel(w: World) -> None:
    config = w.open(100)
    receipt = w.chain.transact(w.channels.functions.refund(config.as_tuple(), 100),
                               w.receiver.address)
    assert len(events(w.channels, "ChannelClosed", receipt)) == 1
    assert w.state(config) == (0, 0)


def test_refund_with_signature(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    s = w.stranger.address
    t = config.as_tuple()
    assert refused(w, f.refundWithSignature(t, 10, 1, w.refund_signature(config, 1, 10)),
                   s) == "InvalidRefundNonce"
    assert refused(w, f.refundWithSignature(t, 10, 0, w.refund_signature(config, 0, 10,
                                                                           w.stranger)),
                   s) == "InvalidSignature"
    assert refused(w, f.refundWithSignature(t, 11, 0, w.refund_signature(config, 0, 10)),
                   s) == "InvalidSignature"
    good = w.refund_signature(config, 0, 10)
    assert refused(w, f.refundWithSignature(t, 10, 0, high_s(good)), s) == "InvalidSignature"
    w.chain.transact(f.refundWithSignature(t, 10, 0, good), s)
    assert w.state(config) == (90, 0)
    assert refused(w, f.refundWithSignature(t, 10, 0, good), s) == "InvalidRefundNonce"
    # a direct refund voids a signature made for the nonce it consumed
    presigned = w.refund_signature(config, 1, 10)
    w.chain.transact(f.refund(t, 1), w.receiver.address)
    assert refused(w, f.refundWithSignature(t, 10, 1, presigned), s) == "InvalidRefundNonce"


def test_claim_then_refund_in_one_multicall(w: World) -> None:
    """The scheme's refund flow: claimWithSignature then refundWithSignature, one transaction."""
    config = w.open(100)
    f = w.channels.functions
    rows = [w.row(config, 40)]
    claim = f.claimWithSignature(rows, w.claim_signature(rows))._encode_transaction_data()
    refund = f.refundWithSignature(config.as_tuple(), 60, 0,
                                   w.refund_signature(config, 0, 60))._encode_transaction_data()
    before = w.balance(w.payer.address)
    w.chain.transact(f.multicall([bytes.fromhex(claim[2:]), bytes.fromhex(refund[2:])]),
                     w.stranger.address)
    assert w.state(config) == (40, 40)
    assert w.balance(w.payer.address) == before + 60


# ------------------------------------------------------------------------------ withdrawals


def test_timed_withdrawal_refusals_and_escape(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    t = config.as_tuple()
    s = w.stranger.address
    assert refused(w, f.initiateWithdraw(t, 10), s) == "NotAuthorizedToInitiateWithdraw"
    assert refused(w, f.initiateWithdraw(t, 0), w.payer.address) == "NothingToWithdraw"
    assert refused(w, f.initiateWithdraw(t, 101),
                   w.payer.address) == "WithdrawAmountExceedsAvailable"
    assert refused(w, f.finalizeWithdraw(t), w.payer.address) == "WithdrawalNotPending"
    receipt = w.chain.transact(f.initiateWithdraw(t, 100), w.payer_auth.address)
    (init,) = events(w.channels, "WithdrawInitiated", receipt)
    started = w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert init.args.finalizeAfter == started + DELAY
    assert refused(w, f.initiateWithdraw(t, 1), w.payer.address) == "WithdrawalAlreadyPending"
    assert refused(w, f.finalizeWithdraw(t), s) == "NotAuthorizedToFinalizeWithdraw"
    w.chain.tester.time_travel(started + DELAY - 1)
    assert refused(w, f.finalizeWithdraw(t), w.payer.address) == "WithdrawDelayNotElapsed"
    w.chain.tester.time_travel(started + DELAY)
    before = w.balance(w.payer.address)
    receipt = w.chain.transact(f.finalizeWithdraw(t), w.payer.address)
    assert [e.args.amount for e in events(w.channels, "WithdrawFinalized", receipt)] == [100]
    assert len(events(w.channels, "ChannelClosed", receipt)) == 1
    assert w.balance(w.payer.address) == before + 100
    assert w.channels.functions.pendingWithdrawals(w.cid(config)).call() == [0, 0]


def test_a_claim_during_the_delay_wins_over_the_withdrawal(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    t = config.as_tuple()
    w.chain.transact(f.initiateWithdraw(t, 100), w.payer.address)
    w.chain.transact(f.claim([w.row(config, 70)]), w.receiver.address)
    w.chain.travel(DELAY)
    before = w.balance(w.payer.address)
    receipt = w.chain.transact(f.finalizeWithdraw(t), w.payer.address)
    assert [e.args.amount for e in events(w.channels, "WithdrawFinalized", receipt)] == [30]
    assert w.balance(w.payer.address) == before + 30
    assert w.state(config) == (70, 70)


def test_a_withdrawal_finalised_before_the_claim_leaves_the_voucher_unclaimable(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    t = config.as_tuple()
    row = w.row(config, 70)  # signed, held by the gateway, not yet claimed
    w.chain.transact(f.initiateWithdraw(t, 100), w.payer.address)
    w.chain.travel(DELAY)
    w.chain.transact(f.finalizeWithdraw(t), w.payer.address)
    assert refused(w, f.claim([row]), w.receiver.address) == "ClaimExceedsBalance"


def test_a_refund_shrinks_or_cancels_a_pending_withdrawal(w: World) -> None:
    config = w.open(100)
    f = w.channels.functions
    t = config.as_tuple()
    cid = w.cid(config)
    w.chain.transact(f.initiateWithdraw(t, 50), w.payer.address)
    w.chain.transact(f.refund(t, 20), w.receiver.address)
    assert f.pendingWithdrawals(cid).call()[0] == 30
    w.chain.transact(f.refund(t, 30), w.receiver.address)
    assert f.pendingWithdrawals(cid).call() == [0, 0]
    assert w.state(config) == (50, 0)


# -------------------------------------------------------------------------- hostile tokens


@pytest.fixture(scope="module")
def hostile(w: World) -> Contract:
    return w.chain.deploy("ReentrantToken")


def _arm(w: World, token: Contract, call: Any) -> None:
    data = call._encode_transaction_data()
    w.chain.transact(token.functions.arm(w.channels.address, bytes.fromhex(data[2:]), False),
                     w.stranger.address)


def _disarm(w: World, token: Contract) -> None:
    zero = "0x" + "00" * 20
    w.chain.transact(token.functions.arm(zero, b"", False), w.stranger.address)


def test_reentrancy_from_a_hostile_token_is_refused(w: World, hostile: Contract) -> None:
    config = w.config(token=hostile.address)
    t = config.as_tuple()
    f = w.channels.functions
    w.mint(w.payer.address, 1000, hostile)
    data = w.authorization(config, 100, token=hostile)
    c = w.chain
    c.transact(f.deposit(t, 100, ERC3009_COLLECTOR, data), w.stranger.address)
    c.transact(f.claim([w.row(config, 60)]), w.receiver.address)
    also = (hostile,)
    # during a refund's transfer the token re-enters refund (a second payout)
    _arm(w, hostile, f.refund(t, 40))
    assert refused(w, f.refund(t, 40), w.receiver.address, also) == "ReentrancyGuardReentrantCall"
    # during settle's transfer it re-enters settle, claim or finalize
    for inner in (f.settle(w.receiver.address, hostile.address), f.claim([w.row(config, 60)]),
                  f.finalizeWithdraw(t)):
        _arm(w, hostile, inner)
        assert refused(w, f.settle(w.receiver.address, hostile.address), w.stranger.address,
                       also) == "ReentrancyGuardReentrantCall"
    # during a deposit's pull it re-enters deposit
    _arm(w, hostile, f.deposit(t, 1, ERC3009_COLLECTOR, w.authorization(config, 1, token=hostile)))
    data = w.authorization(config, 5, token=hostile)
    assert refused(w, f.deposit(t, 5, ERC3009_COLLECTOR, data), w.stranger.address,
                   also) == "ReentrancyGuardReentrantCall"
    _disarm(w, hostile)
    assert w.state(config) == (100, 60)
    assert w.balance(w.channels.address, hostile) == 100
    c.transact(f.settle(w.receiver.address, hostile.address), w.stranger.address)
    assert w.balance(w.receiver.address, hostile) == 60


# ------------------------------------------------------------------------------- rounding


def test_amounts_are_exact_to_the_unit(w: World) -> None:
    """No division exists in the contract: one-unit steps add up exactly, the uint128 edges hold."""
    config = w.open(7)
    f = w.channels.functions
    for total in range(1, 8):
        w.chain.transact(f.claim([w.row(config, total)]), w.receiver.address)
    assert w.state(config) == (7, 7)
    with pytest.raises(ChainError, match="uint128"):
        scheme.voucher_digest(w.domain, w.cid(config), U128 + 1)
    assert scheme.voucher_digest(w.domain, w.cid(config), U128) == f.getVoucherDigest(
        w.cid(config), U128).call()


def test_random_salts_never_collide_in_ids(w: World) -> None:
    ids = {w.cid(w.config()) for _ in range(50)}
    assert len(ids) == 50
    assert keccak(os.urandom(8)) not in ids

"""The x402 SDK's own batch-settlement code against teegate's contract, unchanged.

The SDK's client builds an EIP-3009 deposit and signs vouchers, its authorizer helpers sign claim
batches and refunds, its encoders build the contract arguments: teegate's contract (placed at the
canonical address the SDK hard-codes) accepts each, and teegate's in-process voucher check and the
SDK's server-side check agree on each other's vouchers.
"""

from __future__ import annotations

import os

import pytest
from x402.mechanisms.evm.batch_settlement.authorizer_signer import (
    LocalAuthorizerSigner,
    sign_claim_batch,
    sign_refund,
)
from x402.mechanisms.evm.batch_settlement.client.eip3009 import (
    create_batch_settlement_eip3009_deposit_payload,
)
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.batch_settlement.constants import (
    BATCH_SETTLEMENT_ADDRESS,
    CHANNEL_CONFIG_TYPEHASH,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
)
from x402.mechanisms.evm.batch_settlement.encoding import build_erc3009_collector_data
from x402.mechanisms.evm.batch_settlement.facilitator.claim import build_voucher_claim_args
from x402.mechanisms.evm.batch_settlement.facilitator.utils import (
    to_contract_channel_config,
    validate_channel_config,
    verify_batch_settlement_voucher_typed_data,
)
from x402.mechanisms.evm.batch_settlement.types import ChannelConfig as SdkConfig
from x402.mechanisms.evm.batch_settlement.types import VoucherClaim
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from teegate.chain import scheme
from teegate.chain.vouchers import ChannelView, Voucher, check_voucher
from tests.chain.channels import CHANNELS, DELAY, ERC3009_COLLECTOR, World
from tests.chain.evm import events


@pytest.fixture(scope="module")
def w() -> World:
    return World()


def test_canonical_addresses_and_type_hash_are_the_sdks() -> None:
    assert BATCH_SETTLEMENT_ADDRESS == CHANNELS
    assert ERC3009_DEPOSIT_COLLECTOR_ADDRESS == ERC3009_COLLECTOR
    assert bytes(CHANNEL_CONFIG_TYPEHASH) == scheme.CHANNEL_CONFIG_TYPEHASH


def test_the_sdks_client_deposit_vouchers_claims_and_refund_are_accepted(w: World) -> None:
    network = f"eip155:{w.chain.chain_id}"
    payer = EthAccountSigner(w.payer.key)
    voucher_key = EthAccountSigner(w.payer_auth.key)
    requirements = PaymentRequirements(
        scheme="batch-settlement", network=network, asset=w.token.address, amount="100",
        pay_to=w.receiver.address, max_timeout_seconds=3600,
        extra={"receiverAuthorizer": w.receiver_auth.address, "withdrawDelay": DELAY,
               "name": "Dev 6022", "version": "2"})
    config = SdkConfig(payer=w.payer.address, payer_authorizer=w.payer_auth.address,
                       receiver=w.receiver.address, receiver_authorizer=w.receiver_auth.address,
                       token=w.token.address, withdraw_delay=DELAY,
                       salt="0x" + os.urandom(32).hex())
    channel_id = compute_channel_id(config, network)
    f = w.channels.functions
    assert f.getChannelId(to_contract_channel_config(config)).call().hex() == channel_id[2:]

    w.mint(w.payer.address, 1000)
    payload = create_batch_settlement_eip3009_deposit_payload(
        payer, requirements, config, deposit_amount=1000, max_claimable_amount=100,
        voucher_signer=voucher_key)
    assert payload.deposit is not None
    assert payload.voucher is not None
    auth = payload.deposit.authorization.erc3009_authorization
    assert auth is not None
    data = build_erc3009_collector_data(auth.valid_after, auth.valid_before, auth.salt,
                                        auth.signature)
    receipt = w.chain.transact(f.deposit(to_contract_channel_config(config), 1000,
                                         ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data),
                               w.stranger.address)
    assert len(events(w.channels, "ChannelCreated", receipt)) == 1

    # teegate's check accepts the SDK's voucher; the SDK's server-side check accepts teegate's
    ours = scheme.ChannelConfig.of(
        payer=config.payer, payer_authorizer=config.payer_authorizer, receiver=config.receiver,
        receiver_authorizer=config.receiver_authorizer, token=config.token,
        withdraw_delay=config.withdraw_delay, salt=config.salt)
    cid = bytes.fromhex(channel_id[2:])
    assert ours.channel_id(w.domain) == cid
    sdk_voucher = sign_voucher(voucher_key, channel_id, 250, network)
    view = ChannelView(ours, cid, balance=1000, total_claimed=0, charged=150)
    check_voucher(w.domain, view, Voucher.from_json(sdk_voucher.to_dict()), hold=100)
    teegate_sig = scheme.sign_digest(w.payer_auth.private_key,
                                     scheme.voucher_digest(w.domain, cid, 250))
    assert teegate_sig == bytes.fromhex(sdk_voucher.signature.removeprefix("0x"))  # RFC 6979
    assert validate_channel_config(config, channel_id, requirements) is None
    assert verify_batch_settlement_voucher_typed_data(
        None, channel_id, "250", config.payer_authorizer, config.payer,  # type: ignore[arg-type]
        "0x" + teegate_sig.hex(), w.chain.chain_id)

    # the SDK's claim batch, signed by its authorizer helper, relayed by anyone
    authorizer = LocalAuthorizerSigner(w.receiver_auth.key)
    claims = [VoucherClaim(channel=config, max_claimable_amount="250",
                           signature=sdk_voucher.signature, total_claimed="180")]
    claim_sig = sign_claim_batch(authorizer, claims, network)
    receipt = w.chain.transact(f.claimWithSignature(build_voucher_claim_args(claims),
                                                    bytes.fromhex(claim_sig[2:])),
                               w.stranger.address)
    assert [e.args.newTotalClaimed for e in events(w.channels, "Claimed", receipt)] == [180]

    # the SDK's signed refund of the rest
    refund_sig = sign_refund(authorizer, channel_id, 820, 0, network)
    before = w.balance(w.payer.address)
    w.chain.transact(f.refundWithSignature(to_contract_channel_config(config), 820, 0,
                                           bytes.fromhex(refund_sig[2:])), w.stranger.address)
    assert w.balance(w.payer.address) == before + 820
    w.chain.transact(f.settle(w.receiver.address, w.token.address), w.stranger.address)
    assert f.channels(cid).call() == [180, 180]  # deposited 1000, refunded 820, claimed 180

"""The in-process voucher check: every rule by its scheme error code, and the header format."""

from __future__ import annotations

import base64
import json
import os

import pytest

from teegate.chain import scheme
from teegate.chain.vouchers import ChannelView, Voucher, VoucherError, check_voucher
from teegate.errors import ChainError
from tests.chain.evm import high_s

KEY = os.urandom(32)
DOMAIN = scheme.Domain.of(8453, "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003")
CONFIG = scheme.ChannelConfig.of(
    payer="0x" + "11" * 20, payer_authorizer=scheme.address_of(KEY), receiver="0x" + "22" * 20,
    receiver_authorizer="0x" + "33" * 20, token="0x" + "44" * 20, withdraw_delay=900,
    salt="0x" + "00" * 32)
CID = CONFIG.channel_id(DOMAIN)
VIEW = ChannelView(CONFIG, CID, balance=1000, total_claimed=100, charged=300)


def voucher(amount: int, key: bytes = KEY, cid: bytes = CID) -> Voucher:
    return Voucher(cid, amount, scheme.sign_digest(key, scheme.voucher_digest(DOMAIN, cid, amount)))


def refusal(v: Voucher, hold: int = 50, view: ChannelView = VIEW) -> str:
    with pytest.raises(VoucherError) as e:
        check_voucher(DOMAIN, view, v, hold)
    return e.value.check


def test_a_voucher_covering_charged_plus_hold_passes() -> None:
    check_voucher(DOMAIN, VIEW, voucher(350), 50)
    check_voucher(DOMAIN, VIEW, voucher(1000), 50)  # more than needed: the payer's risk only


def test_each_rule_names_its_check() -> None:
    p = "invalid_batch_settlement_evm_"
    assert refusal(voucher(349)) == p + "cumulative_amount_mismatch"
    assert refusal(voucher(1001)) == p + "cumulative_exceeds_balance"
    assert refusal(voucher(350), view=ChannelView(CONFIG, CID, 1000, 350, 0)) == (
        p + "cumulative_below_claimed")
    assert refusal(voucher(350, cid=os.urandom(32))) == p + "channel_id_mismatch"
    assert refusal(voucher(350), view=ChannelView(CONFIG, CID, 0, 0, 0)) == p + "channel_not_found"
    assert refusal(voucher(350, key=os.urandom(32))) == p + "voucher_signature"
    good = voucher(350)
    assert refusal(Voucher(CID, 350, high_s(good.signature))) == p + "voucher_signature"
    assert refusal(Voucher(CID, 360, good.signature)) == p + "voucher_signature"
    assert refusal(Voucher(CID, 350, good.signature[:64] + b"\x05")) == p + "voucher_signature"
    no_key = scheme.ChannelConfig(CONFIG.payer, scheme.ZERO_ADDRESS, CONFIG.receiver,
                                  CONFIG.receiver_authorizer, CONFIG.token, 900, CONFIG.salt)
    view = ChannelView(no_key, no_key.channel_id(DOMAIN), 1000, 0, 0)
    assert refusal(voucher(350, cid=view.channel_id), view=view) == "payer_authorizer_required"


def test_the_header_round_trips_and_refuses_junk() -> None:
    v = voucher(350)
    assert Voucher.from_header(v.as_header()) == v
    urlsafe = base64.urlsafe_b64encode(json.dumps(v.as_json()).encode()).decode().rstrip("=")
    assert Voucher.from_header(urlsafe) == v
    p = "invalid_batch_settlement_evm_voucher_payload"
    for junk in ("%%%", base64.b64encode(b"[1]").decode(), "A" * 2000,
                 base64.b64encode(json.dumps({**v.as_json(), "maxClaimableAmount": 5}).encode()
                                  ).decode(),
                 base64.b64encode(json.dumps({**v.as_json(), "maxClaimableAmount": "-5"}).encode()
                                  ).decode(),
                 base64.b64encode(json.dumps({**v.as_json(), "maxClaimableAmount": str(1 << 128)}
                                             ).encode()).decode(),
                 base64.b64encode(json.dumps({**v.as_json(), "signature": "0x00"}).encode()
                                  ).decode(),
                 base64.b64encode(json.dumps({**v.as_json(), "channelId": "0x12"}).encode()
                                  ).decode()):
        with pytest.raises(VoucherError) as e:
            Voucher.from_header(junk)
        assert e.value.check == p, junk


def test_recover_refuses_malformed_signatures() -> None:
    digest = os.urandom(32)
    sig = scheme.sign_digest(KEY, digest)
    assert scheme.recover(digest, sig) == scheme.address_of(KEY)
    for bad, why in ((sig[:64], "65 bytes"), (sig[:64] + b"\x01", "v is not"),
                     (b"\0" * 32 + sig[32:], "out of range"), (high_s(sig), "high-s")):
        with pytest.raises(ChainError, match=why):
            scheme.recover(digest, bad)

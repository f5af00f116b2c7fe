"""DevToken: ERC-20 with EIP-2612 permit and EIP-3009 authorizations, on an in-process EVM."""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import Signature
from eth_utils.crypto import keccak
from web3.contract import Contract

from tests.chain.evm import (
    Chain,
    events,
    high_s,
    new_account,
    revert_of,
    sign_typed,
    split_signature,
)

AUTH_FIELDS = [
    ("from", "address"), ("to", "address"), ("value", "uint256"),
    ("validAfter", "uint256"), ("validBefore", "uint256"), ("nonce", "bytes32"),
]
PERMIT_FIELDS = [
    ("owner", "address"), ("spender", "address"), ("value", "uint256"),
    ("nonce", "uint256"), ("deadline", "uint256"),
]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(scope="module")
def token(chain: Chain) -> Contract:
    return chain.deploy("DevToken", "Dev 6022", "D6022", "2", 6)


def domain(chain: Chain, token: Contract) -> dict[str, Any]:
    return {"name": "Dev 6022", "version": "2", "chainId": chain.chain_id,
            "verifyingContract": token.address}


def funded(chain: Chain, token: Contract, amount: int = 1_000_000) -> LocalAccount:
    holder = new_account()
    chain.transact(token.functions.mint(holder.address, amount), chain.accounts[0])
    return holder


def authorization(
    chain: Chain, token: Contract, signer: LocalAccount, to: str, value: int, *,
    kind: str = "TransferWithAuthorization", valid_after: int | None = None,
    valid_before: int | None = None, nonce: bytes | None = None,
) -> tuple[dict[str, Any], bytes]:
    message = {
        "from": signer.address, "to": to, "value": value,
        "validAfter": chain.now() - 60 if valid_after is None else valid_after,
        "validBefore": chain.now() + 3600 if valid_before is None else valid_before,
        "nonce": os.urandom(32) if nonce is None else nonce,
    }
    return message, sign_typed(signer, domain(chain, token), kind, AUTH_FIELDS, message)


def args(m: dict[str, Any]) -> list[Any]:
    return [m["from"], m["to"], m["value"], m["validAfter"], m["validBefore"], m["nonce"]]


def test_metadata_and_public_type_hashes_are_the_eips(chain: Chain, token: Contract) -> None:
    f = token.functions
    assert (f.name().call(), f.symbol().call(), f.decimals().call(), f.version().call()) == (
        "Dev 6022", "D6022", 6, "2")
    assert f.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call() == keccak(
        text="TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
        "uint256 validBefore,bytes32 nonce)")
    assert f.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call().hex() == (
        "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267")
    assert f.RECEIVE_WITH_AUTHORIZATION_TYPEHASH().call().hex() == (
        "d099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8")
    assert f.CANCEL_AUTHORIZATION_TYPEHASH().call().hex() == (
        "158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429")
    assert f.PERMIT_TYPEHASH().call().hex() == (
        "6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9")
    separator = keccak(chain.w3.codec.encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(text="EIP712Domain(string name,string version,uint256 chainId,"
                "address verifyingContract)"),
         keccak(text="Dev 6022"), keccak(text="2"), chain.chain_id, token.address]))
    assert f.DOMAIN_SEPARATOR().call() == separator


def test_only_the_deployer_mints(chain: Chain, token: Contract) -> None:
    other = chain.accounts[1]
    got = revert_of(token, token.functions.mint(other, 1), other)
    assert (got.name, got.args) == ("NotMinter", (other,))


def test_transfer_with_authorization_relayed_once(chain: Chain, token: Contract) -> None:
    payer, payee, relayer = funded(chain, token), new_account().address, chain.accounts[2]
    message, sig = authorization(chain, token, payer, payee, 250_000)
    v, r, s = split_signature(sig)
    receipt = chain.transact(token.functions.transferWithAuthorization(*args(message), v, r, s),
                             relayer)
    assert token.functions.balanceOf(payee).call() == 250_000
    assert token.functions.balanceOf(payer.address).call() == 750_000
    assert token.functions.authorizationState(payer.address, message["nonce"]).call()
    used = events(token, "AuthorizationUsed", receipt)
    assert [(e.args.authorizer, e.args.nonce) for e in used] == [(payer.address, message["nonce"])]
    # the same authorization again, in either form, is refused
    for call in (token.functions.transferWithAuthorization(*args(message), v, r, s),
                 token.functions.transferWithAuthorization(*args(message), sig)):
        got = revert_of(token, call, relayer)
        assert (got.name, got.args) == ("AuthorizationUsedOrCanceled",
                                        (payer.address, message["nonce"]))
    assert token.functions.balanceOf(payee).call() == 250_000


def test_bytes_signature_form(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token), new_account().address
    message, sig = authorization(chain, token, payer, payee, 7)
    call = token.functions.transferWithAuthorization(*args(message), sig)
    chain.transact(call, chain.accounts[3])
    assert token.functions.balanceOf(payee).call() == 7


def test_validity_window_is_enforced(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token), new_account().address
    early, sig = authorization(chain, token, payer, payee, 1, valid_after=chain.now() + 3600,
                               valid_before=chain.now() + 7200)
    got = revert_of(token, token.functions.transferWithAuthorization(
        *args(early), sig), chain.accounts[0])
    assert (got.name, got.args) == ("AuthorizationNotYetValid", (early["validAfter"],))
    late, sig2 = authorization(chain, token, payer, payee, 1, valid_after=0,
                               valid_before=chain.now())
    got = revert_of(token, token.functions.transferWithAuthorization(
        *args(late), sig2), chain.accounts[0])
    assert (got.name, got.args) == ("AuthorizationExpired", (late["validBefore"],))
    # the early one becomes valid once its time has come
    chain.travel(3601)
    chain.transact(token.functions.transferWithAuthorization(*args(early), sig), chain.accounts[0])
    assert token.functions.balanceOf(payee).call() == 1


def test_forged_tampered_and_high_s_signatures_are_refused(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token), new_account().address
    message, sig = authorization(chain, token, payer, payee, 100)
    forger = new_account()
    _, forged = authorization(chain, token, forger, payee, 100, nonce=message["nonce"])
    tampered = {**message, "value": 101}
    malleable = high_s(sig)
    # the malleated signature is a valid ECDSA signature of the same digest by the same key, so a
    # contract that accepted both would let one authorization be presented twice
    digest = keccak(b"\x19\x01" + token.functions.DOMAIN_SEPARATOR().call() + keccak(
        chain.w3.codec.encode(["bytes32", "address", "address", "uint256", "uint256", "uint256",
                               "bytes32"],
                              [token.functions.TRANSFER_WITH_AUTHORIZATION_TYPEHASH().call(),
                               *args(message)])))
    v, r, s = split_signature(malleable)
    alt = Signature(vrs=(v - 27, int.from_bytes(r, "big"), int.from_bytes(s, "big")))
    assert alt.recover_public_key_from_msg_hash(digest).to_checksum_address() == payer.address
    for m, signature in ((message, forged), (tampered, sig), (message, malleable)):
        got = revert_of(token, token.functions.
                        transferWithAuthorization(*args(m), signature), chain.accounts[0])
        assert (got.name, got.args) == ("InvalidSignature", (payer.address,))
        vv, rr, ss = split_signature(signature)
        got = revert_of(token, token.functions.
                        transferWithAuthorization(*args(m), vv, rr, ss), chain.accounts[0])
        assert got.name == "InvalidSignature"
    assert not token.functions.authorizationState(payer.address, message["nonce"]).call()


def test_a_failed_transfer_does_not_burn_the_nonce(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token, 10), new_account().address
    message, sig = authorization(chain, token, payer, payee, 11)
    got = revert_of(token, token.functions.transferWithAuthorization(
        *args(message), sig), chain.accounts[0])
    assert (got.name, got.args) == ("ERC20InsufficientBalance", (payer.address, 10, 11))
    assert not token.functions.authorizationState(payer.address, message["nonce"]).call()


def test_receive_with_authorization_only_by_the_payee(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token), chain.accounts[4]
    message, sig = authorization(chain, token, payer, payee, 40, kind="ReceiveWithAuthorization")
    v, r, s = split_signature(sig)
    got = revert_of(token, token.functions.receiveWithAuthorization(
        *args(message), sig), chain.accounts[5])
    assert (got.name, got.args) == ("CallerNotPayee", (chain.accounts[5], payee))
    # a receive authorization is not a transfer authorization (type hashes differ)
    got = revert_of(token, token.functions.transferWithAuthorization(
        *args(message), sig), payee)
    assert got.name == "InvalidSignature"
    got = revert_of(token, token.functions.receiveWithAuthorization(
        *args(message), high_s(sig)), payee)
    assert got.name == "InvalidSignature"
    before = token.functions.balanceOf(payee).call()
    chain.transact(token.functions.receiveWithAuthorization(*args(message), v, r, s), payee)
    assert token.functions.balanceOf(payee).call() == before + 40
    got = revert_of(token, token.functions.receiveWithAuthorization(
        *args(message), sig), payee)
    assert got.name == "AuthorizationUsedOrCanceled"
    # and the v, r, s form of receive refuses a third party too
    m2, sig2 = authorization(chain, token, payer, payee, 1, kind="ReceiveWithAuthorization")
    v2, r2, s2 = split_signature(sig2)
    got = revert_of(token, token.functions.receiveWithAuthorization(
        *args(m2), v2, r2, s2), chain.accounts[5])
    assert got.name == "CallerNotPayee"


def test_cancel_authorization(chain: Chain, token: Contract) -> None:
    payer, payee = funded(chain, token), new_account().address
    message, sig = authorization(chain, token, payer, payee, 5)
    cancel = {"authorizer": payer.address, "nonce": message["nonce"]}
    fields = [("authorizer", "address"), ("nonce", "bytes32")]
    forged = sign_typed(new_account(), domain(chain, token), "CancelAuthorization", fields, cancel)
    got = revert_of(token, token.functions.cancelAuthorization(
        payer.address, message["nonce"], forged), chain.accounts[0])
    assert got.name == "InvalidSignature"
    good = sign_typed(payer, domain(chain, token), "CancelAuthorization", fields, cancel)
    got = revert_of(token, token.functions.cancelAuthorization(
        payer.address, message["nonce"], high_s(good)), chain.accounts[0])
    assert got.name == "InvalidSignature"
    v, r, s = split_signature(good)
    receipt = chain.transact(token.functions.cancelAuthorization(
        payer.address, message["nonce"], v, r, s), chain.accounts[0])
    assert len(events(token, "AuthorizationCanceled", receipt)) == 1
    for call in (token.functions.transferWithAuthorization(*args(message), sig),
                 token.functions.cancelAuthorization(payer.address, message["nonce"], good)):
        got = revert_of(token, call, chain.accounts[0])
        assert got.name == "AuthorizationUsedOrCanceled"
    assert token.functions.balanceOf(payee).call() == 0


def test_permit(chain: Chain, token: Contract) -> None:
    owner, spender = funded(chain, token), chain.accounts[6]
    deadline = chain.now() + 600

    def signed(nonce: int, value: int = 300, when: int = deadline) -> bytes:
        message = {"owner": owner.address, "spender": spender, "value": value, "nonce": nonce,
                   "deadline": when}
        return sign_typed(owner, domain(chain, token), "Permit", PERMIT_FIELDS, message)

    sig = signed(0)
    got = revert_of(token, token.functions.permit(
        owner.address, spender, 300, deadline, high_s(sig)), spender)
    assert got.name == "InvalidSignature"
    v, r, s = split_signature(sig)
    chain.transact(token.functions.permit(owner.address, spender, 300, deadline, v, r, s), spender)
    assert token.functions.allowance(owner.address, spender).call() == 300
    assert token.functions.nonces(owner.address).call() == 1
    # the same permit again: its nonce is spent, so it no longer verifies
    got = revert_of(token, token.functions.permit(
        owner.address, spender, 300, deadline, v, r, s), spender)
    assert (got.name, got.args) == ("InvalidSignature", (owner.address,))
    past = chain.now() - 1
    got = revert_of(token, token.functions.permit(
        owner.address, spender, 1, past, signed(1, 1, past)), spender)
    assert (got.name, got.args) == ("PermitExpired", (past,))
    chain.transact(token.functions.permit(owner.address, spender, 9, deadline, signed(1, 9)),
                   spender)
    assert token.functions.allowance(owner.address, spender).call() == 9
    chain.transact(token.functions.transferFrom(owner.address, spender, 9), spender)
    assert token.functions.balanceOf(spender).call() == 9

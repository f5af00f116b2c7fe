from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from teegate.node.signatures import signature_text, text_matches, verify_response_signature
from teegate.node.signer import NodeKeys

VECTOR = json.loads(
    (Path(__file__).parents[1] / "data/node/synthetic-nearai-style-signature.json").read_text()
)
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_vector_text_and_signature() -> None:
    text = signature_text(VECTOR["request_body"].encode(), VECTOR["response_body"].encode())
    assert text == VECTOR["text"]
    assert verify_response_signature(
        VECTOR["text"], VECTOR["signature"], VECTOR["signing_address"], "ecdsa"
    )
    # Address case and 0x prefix do not matter; the bytes do.
    assert verify_response_signature(
        VECTOR["text"], VECTOR["signature"], VECTOR["signing_address"].lower()[2:], "ecdsa"
    )


def test_vector_rejects_other_text_key_or_algo() -> None:
    other = VECTOR["text"][:-1] + ("0" if VECTOR["text"][-1] != "0" else "1")
    assert not verify_response_signature(
        other, VECTOR["signature"], VECTOR["signing_address"], "ecdsa")
    assert not verify_response_signature(
        VECTOR["text"], VECTOR["signature"], "0x" + "11" * 20, "ecdsa")
    assert not verify_response_signature(
        VECTOR["text"], VECTOR["signature"], VECTOR["signing_address"], "ed25519")
    assert not verify_response_signature(
        VECTOR["text"], VECTOR["signature"], VECTOR["signing_address"], "rsa")


@pytest.mark.parametrize("algo", ["ecdsa", "ed25519"])
def test_node_keys_sign_and_verify(algo: str) -> None:
    keys = NodeKeys()
    signed = keys.sign_exchange(algo, b'{"req":1}', b'{"resp":2}')
    assert signed.text == signature_text(b'{"req":1}', b'{"resp":2}')
    assert text_matches(signed.text, b'{"req":1}', b'{"resp":2}')
    assert not text_matches(signed.text, b'{"req":1}', b'{"resp":2} ')
    assert verify_response_signature(
        signed.text, signed.signature, signed.signing_address, algo)
    # Another process (a restarted node) has other keys.
    other = NodeKeys().get(algo).signing_address
    assert not verify_response_signature(signed.text, signed.signature, other, algo)
    assert not verify_response_signature(
        signature_text(b"x", b"y"), signed.signature, signed.signing_address, algo)


def test_ecdsa_is_eip191_personal_sign() -> None:
    keys = NodeKeys()
    signed = keys.sign_exchange("ecdsa", b"a", b"b")
    recovered = Account.recover_message(encode_defunct(text=signed.text),
                                        signature=signed.signature)
    assert recovered == signed.signing_address
    assert signed.signature.startswith("0x")
    assert len(bytes.fromhex(signed.signature[2:])) == 65


def test_ed25519_identity_is_32_byte_public_key() -> None:
    keys = NodeKeys()
    signer = keys.get("ed25519")
    assert len(bytes.fromhex(signer.signing_address)) == 32
    nonce = bytes(range(32))
    assert keys.report_data("ed25519", nonce) == signer.identity + nonce
    ecdsa = keys.get("ecdsa")
    assert keys.report_data("ecdsa", nonce) == ecdsa.identity + bytes(12) + nonce


def test_high_s_malleated_signature_rejected() -> None:
    sig = bytes.fromhex(VECTOR["signature"][2:])
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    assert not verify_response_signature(
        VECTOR["text"], "0x" + flipped.hex(), VECTOR["signing_address"], "ecdsa")


@pytest.mark.parametrize("signature", ["", "0x", "zz", "0x" + "00" * 65, "0x" + "ff" * 64])
def test_malformed_signatures_are_false_not_errors(signature: str) -> None:
    assert not verify_response_signature(
        VECTOR["text"], signature, VECTOR["signing_address"], "ecdsa")
    assert not verify_response_signature(VECTOR["text"], signature, "00" * 32, "ed25519")


def test_unknown_algo_on_keys_is_config_error() -> None:
    from teegate.errors import ConfigError

    with pytest.raises(ConfigError):
        NodeKeys().get("rsa")

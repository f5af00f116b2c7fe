"""report_data binding: the layouts in use, full-length nonce compare, sample nonces."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from teegate.attest.binding import (
    KNOWN_SAMPLE_NONCES,
    check_report_data,
    fresh_nonce,
    is_sample_nonce,
)
from teegate.attest.policy import BindingPolicy, Policy
from teegate.attest.verdict import Check

DATA = Path(__file__).resolve().parent.parent / "data" / "confidential-ai"
POLICY = Policy.default()
SYNTHETIC = json.loads((DATA / "synthetic-nearai-style-signature.json").read_text())
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ADDR = bytes.fromhex(ADDRESS[2:])
ED_KEY = bytes(range(1, 33))


def names(checks: list[Check]) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}


def check(rd: bytes, key: str | bytes = ADDRESS, nonce: bytes | None = None,
          algo: str = "ecdsa", policy: Policy = POLICY) -> dict[str, bool]:
    return names(check_report_data(rd, signing_key=key, nonce=nonce, signing_algo=algo,
                                   policy=policy))


def test_padded_ecdsa_layout() -> None:
    nonce = fresh_nonce()
    rd = ADDR.ljust(32, b"\0") + nonce
    assert check(rd, nonce=nonce) == {"binding.key": True, "binding.nonce": True}
    assert check(rd, key=ADDRESS.lower(), nonce=nonce) == {"binding.key": True,
                                                            "binding.nonce": True}
    assert check(rd, key=ADDR, nonce=nonce)["binding.nonce"]


def test_padded_ed25519_layout() -> None:
    nonce = fresh_nonce()
    rd = ED_KEY + nonce
    assert check(rd, key=ED_KEY.hex(), nonce=nonce, algo="ed25519") == {
        "binding.key": True, "binding.nonce": True}
    # The same bytes do not pass as an ecdsa address.
    assert check(rd, key=ED_KEY.hex(), nonce=nonce)["binding.key"] is False


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
def test_hashed_layouts(algo: str) -> None:
    nonce = fresh_nonce()
    digest = hashlib.new(algo, ADDR + nonce).digest().ljust(64, b"\0")
    assert check(digest, nonce=nonce) == {"binding.key": True, "binding.nonce": True}
    assert check(digest, nonce=fresh_nonce()) == {"binding.key": False, "binding.nonce": False}
    only_padded = replace(POLICY, binding=BindingPolicy(layouts=frozenset({"padded"})))
    assert check(digest, nonce=nonce, policy=only_padded)["binding.key"] is False


def test_wrong_nonce_and_prefix_only_nonce() -> None:
    nonce = fresh_nonce()
    rd = ADDR.ljust(32, b"\0") + nonce
    assert check(rd, nonce=fresh_nonce()) == {"binding.key": True, "binding.nonce": False}
    # Same first 16 bytes (a prefix-only compare would pass), different tail.
    prefix = nonce[:16] + bytes(b ^ 0xFF for b in nonce[16:])
    assert check(rd, nonce=prefix)["binding.nonce"] is False
    last_bit = nonce[:31] + bytes([nonce[31] ^ 1])
    assert check(rd, nonce=last_bit)["binding.nonce"] is False
    assert check(rd, nonce=nonce[:16])["binding.nonce"] is False


def test_wrong_key() -> None:
    nonce = fresh_nonce()
    rd = ADDR.ljust(32, b"\0") + nonce
    other = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert check(rd, key=other, nonce=nonce) == {"binding.key": False, "binding.nonce": False}
    # The address must be followed by zero padding, not merely start the field.
    dirty = ADDR + b"\x01" + bytes(11) + nonce
    assert check(dirty, nonce=nonce)["binding.key"] is False
    assert check(rd, key="0x1234", nonce=nonce)["binding.key"] is False
    assert check(rd, key="not hex", nonce=nonce)["binding.key"] is False
    assert check(rd, nonce=nonce, algo="rsa")["binding.key"] is False


@pytest.mark.parametrize("sample", sorted(KNOWN_SAMPLE_NONCES))
def test_sample_nonces_rejected(sample: bytes) -> None:
    rd = ADDR.ljust(32, b"\0") + sample
    assert check(rd, nonce=sample) == {"binding.key": True, "binding.nonce": False}


def test_sample_nonce_list() -> None:
    assert bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb") \
        in KNOWN_SAMPLE_NONCES
    assert is_sample_nonce(b"\x42" * 32)
    assert not is_sample_nonce(fresh_nonce())
    assert fresh_nonce() != fresh_nonce()
    assert len(fresh_nonce()) == 32


def test_missing_nonce() -> None:
    nonce = fresh_nonce()
    rd = ADDR.ljust(32, b"\0") + nonce
    assert check(rd, nonce=None) == {"binding.key": True, "binding.nonce": False}
    audit = replace(POLICY, binding=BindingPolicy(require_nonce=False))
    checks = check_report_data(rd, signing_key=ADDRESS, nonce=None, signing_algo="ecdsa",
                               policy=audit)
    assert names(checks) == {"binding.key": True, "binding.nonce": True}
    assert "not checked" in checks[1].detail


def test_report_data_must_be_64_bytes() -> None:
    nonce = fresh_nonce()
    assert check((ADDR.ljust(32, b"\0") + nonce)[:63], nonce=nonce) == {
        "binding.key": False, "binding.nonce": False}


def test_synthetic_nearai_vector() -> None:
    """The synthetic NEAR-style vector: its report_data is exactly our padded layout, its
    signature recovers to the bound address, and its constant 0x11… nonce is refused."""
    rd = bytes.fromhex(SYNTHETIC["attestation_report_data"]["report_data_hex"])
    nonce = bytes.fromhex(SYNTHETIC["attestation_report_data"]["request_nonce_hex"])
    assert rd == bytes.fromhex(SYNTHETIC["signing_address"][2:]).ljust(32, b"\0") + nonce
    recovered = Account.recover_message(encode_defunct(text=SYNTHETIC["text"]),
                                        signature=SYNTHETIC["signature"])
    assert recovered == SYNTHETIC["signing_address"]
    result = check(rd, key=SYNTHETIC["signing_address"], nonce=nonce)
    assert result == {"binding.key": True, "binding.nonce": False}
    assert check(rd, key=SYNTHETIC["signing_address"],
                 nonce=fresh_nonce()) == {"binding.key": True, "binding.nonce": False}


def test_padded_ecdsa_address_does_not_bind_as_an_ed25519_key() -> None:
    """Review R3: the padded layout is ambiguous across algorithms. A quote binding the
    ecdsa address A (A || 12 zero bytes) must not bind "ed25519 key A || 0^12": the report's
    signing_algo is provider-chosen, and the verdict would name a key nobody holds."""
    nonce = fresh_nonce()
    rd = ADDR.ljust(32, b"\0") + nonce
    fake = ADDR.ljust(32, b"\0").hex()
    assert check(rd, key=fake, nonce=nonce, algo="ed25519") == {
        "binding.key": False, "binding.nonce": False}
    # A real Ed25519 key still binds.
    assert check(ED_KEY + nonce, key=ED_KEY.hex(), nonce=nonce, algo="ed25519") == {
        "binding.key": True, "binding.nonce": True}


def test_sha512_nonce_then_key_layout() -> None:
    """x25519 tunnel keys: report_data = sha512(nonce || key); not confused with key || nonce."""
    nonce = fresh_nonce()
    rd = hashlib.sha512(nonce + ED_KEY).digest()
    checks = check_report_data(rd, signing_key=ED_KEY.hex(), nonce=nonce, signing_algo="ed25519",
                               policy=POLICY)
    assert names(checks) == {"binding.key": True, "binding.nonce": True}
    assert "sha512_nonce_key" in checks[0].detail
    key_first = replace(POLICY, binding=BindingPolicy(layouts=frozenset({"sha512"})))
    assert check(rd, key=ED_KEY.hex(), nonce=nonce, algo="ed25519",
                 policy=key_first)["binding.key"] is False
    chosen = replace(POLICY, binding=BindingPolicy(layouts=frozenset({"sha512_nonce_key"})))
    assert check(rd, key=ED_KEY.hex(), nonce=nonce, algo="ed25519", policy=chosen) == {
        "binding.key": True, "binding.nonce": True}
    assert check(hashlib.sha512(ED_KEY + nonce).digest(), key=ED_KEY.hex(), nonce=nonce,
                 algo="ed25519", policy=chosen)["binding.key"] is False


def test_every_sample_nonce_is_documented_with_its_source() -> None:
    from teegate.attest.binding import SAMPLE_NONCES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "verify.md").read_text()
    for value, source in SAMPLE_NONCES:
        assert source
        if len(set(value)) > 2 and not value.endswith("00" * 20):  # the others by pattern
            assert f"`{value}`" in doc, value
    # nvtrust's local GPU verifier default nonce (its config.py) is refused.
    nvtrust_default = bytes.fromhex(
        "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e")
    assert is_sample_nonce(nvtrust_default)
    rd = ADDR.ljust(32, b"\0") + nvtrust_default
    assert check(rd, nonce=nvtrust_default) == {"binding.key": True, "binding.nonce": False}

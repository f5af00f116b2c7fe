"""Receipts and the log writer: edge cases found in review (each test failed before its fix)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import EvidenceError
from teegate.receipts import AttestationRef, ProviderSignature, ReceiptLog, ReceiptSigner

from .conftest import make_receipt

OpenLog = Callable[..., ReceiptLog]


def test_text_that_is_not_unicode_cannot_block_the_log(open_log: OpenLog) -> None:
    """An agent's ``"model": "\\ud800"`` (json.loads accepts it) used to stop every append."""
    log = open_log(checkpoint_interval=0)
    bad = make_receipt(1, model="\ud800x", error="\udfff")
    log.submit(bad)
    log.submit(make_receipt(2))
    log.flush(timeout=5)
    assert log.size() == 2
    got = log.get(bad.receipt_id)
    assert got is not None
    assert got.receipt.document["model"] == "\ufffdx"
    got.receipt.verify([log.signer.public_key])


def test_unsignable_signed_receipt_is_dropped_not_retried_forever(open_log: OpenLog) -> None:
    """A pre-signed document JCS refuses (a float NaN) is dropped, not retried forever."""
    from teegate.receipts import SignedReceipt

    log = open_log(checkpoint_interval=0)
    good = log.signer.sign(make_receipt(3))
    doc = dict(good.document)
    doc["receipt_id"] = "rcpt_nan"
    doc["extra"] = float("nan")
    log.submit(SignedReceipt(doc))
    log.submit(make_receipt(4))
    log.flush(timeout=5)
    assert log.size() == 1
    assert log.get("rcpt_nan") is None
    assert log.dropped == ["rcpt_nan"]
    assert log.last_error is not None
    assert "rcpt_nan" in log.last_error


@pytest.mark.parametrize("rid", ["has space", "nul\x00", "a/b", "quote\"", "x" * 201])
def test_receipt_ids_are_url_and_header_safe(rid: str) -> None:
    with pytest.raises(EvidenceError):
        make_receipt(1, receipt_id=rid)


@pytest.mark.parametrize("agent", ["", "a\x00b", "a\nb"])
def test_agent_must_be_a_plain_identifier(agent: str) -> None:
    """The agent decides who may read the receipt; NUL also poisons PostgreSQL TEXT."""
    with pytest.raises(EvidenceError):
        make_receipt(1, agent=agent)


_text = st.text(max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    model=_text,
    error=_text,
    conv=_text,
    ref=_text,
    usage_key=st.text(st.characters(max_codepoint=127), min_size=1, max_size=6),
)
def test_signed_leaf_is_rfc8785_for_any_text(
    model: str, error: str, conv: str, ref: str, usage_key: str
) -> None:
    """The spliced fast leaf must be exactly what every other JCS implementation produces."""
    r = make_receipt(
        5,
        model=model,
        error=error,
        conversation=conv,
        usage={usage_key: 3},
        attestation=AttestationRef(verdict_digest="ab" * 32, evidence_ref=ref),
        provider_signature=ProviderSignature(
            text=ref, signature=model, signing_key="0x" + "11" * 20, algo="ecdsa", verified=True
        ),
    )
    signer = ReceiptSigner(_KEY)
    s = signer.sign(r)
    assert s.leaf == rfc8785.dumps(s.document)
    s.verify([signer.public_key])


_KEY = Ed25519PrivateKey.generate()




@pytest.mark.parametrize("change", [str.upper, lambda s: s[:64] + " " + s[64:], lambda s: s[:-2]])
def test_signature_encoding_is_canonical(change: Callable[[str], str]) -> None:
    """The signature is outside what it signs: a re-encoded one would make a second, different
    leaf for the same receipt. Only 128 lower-case hex digits are accepted."""
    from teegate.receipts import SignedReceipt

    signer = ReceiptSigner(_KEY)
    doc = dict(signer.sign(make_receipt(9)).document)
    doc["signature"] = change(doc["signature"])
    with pytest.raises(EvidenceError):
        SignedReceipt.from_json(doc).verify([signer.public_key])


def test_session_id_is_bare_lower_case_hex_as_aci_requires() -> None:
    """aci/1 §7.5/§8: session_id is bare 64-hex; a prefixed or upper-case digest passed
    validation but went into the document as given."""
    att = AttestationRef(verdict_digest="sha256:" + "AB" * 32, evidence_sha256="CD" * 32)
    doc = ReceiptSigner(_KEY).sign(make_receipt(1, attestation=att)).document
    upstream = next(e for e in doc["event_log"] if e["type"] == "upstream.verified")
    assert upstream["session_id"] == "ab" * 32
    cited = next(e for e in doc["event_log"] if e["type"] == "teegate.attestation")
    assert cited["verdict_digest"] == "ab" * 32
    assert cited["evidence_sha256"] == "cd" * 32


def test_keys_that_would_sort_differently_in_jcs_cannot_enter_a_receipt() -> None:
    """JCS sorts keys by UTF-16 units, Python by code points: they differ beyond the BMP
    (U+10000 sorts before U+FFFF in JCS). The fast signer relies on ASCII keys."""
    with pytest.raises(EvidenceError):
        make_receipt(1, usage={"\U00010000": 1, "\uffff": 2})
    from teegate.receipts.receipt import jcs_trusted

    ascii_doc: dict[str, Any] = {"b": 1, "a": {"z": "\U00010000", "y": "\uffff\u2028\x7f\x00"}}
    assert jcs_trusted(ascii_doc) == rfc8785.dumps(ascii_doc)


def test_presigned_document_that_is_not_a_receipt_is_dropped(open_log: OpenLog) -> None:
    """``submit`` accepts a SignedReceipt as is; one that is not an aci/1 receipt used to be
    logged and then made every read of it raise (a 500 on GET /v1/receipts/{id})."""
    from teegate.receipts import SignedReceipt

    log = open_log(checkpoint_interval=0)
    log.submit(SignedReceipt({"receipt_id": "rcpt_junk", "api_version": "aci/1"}))
    quoted = dict(log.signer.sign(make_receipt(2)).document, receipt_id='a"b\r\nx: y')
    log.submit(SignedReceipt(quoted))  # would be echoed into a content-disposition header
    log.submit(make_receipt(1))
    log.flush(timeout=5)
    assert log.size() == 1
    assert log.dropped == ["rcpt_junk", 'a"b\r\nx: y']
    assert log.get("rcpt_junk") is None

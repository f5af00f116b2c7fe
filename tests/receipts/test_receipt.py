"""Receipt documents: aci/1 shape, JCS signatures, tampering, canonical form."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import EvidenceError, VerificationError
from teegate.receipts import ReceiptSigner, SignedReceipt
from teegate.receipts.receipt import jcs_trusted, sha256_hex

from .conftest import make_receipt


def _signer() -> ReceiptSigner:
    return ReceiptSigner(Ed25519PrivateKey.generate(), subject="teegate.test/log")


def test_document_is_aci_v1_with_teegate_extensions() -> None:
    s = _signer()
    doc = s.sign(make_receipt(1)).document
    assert doc["api_version"] == "aci/1"
    assert doc["v"] == "teegate-receipt/1"
    types = [e["type"] for e in doc["event_log"]]
    assert types[0] == "request.received"
    assert types[:4] == [
        "request.received",
        "request.forwarded",
        "upstream.verified",
        "response.returned",
    ]
    assert {"teegate.call", "teegate.settlement", "teegate.attestation"} <= set(types)
    up = doc["event_log"][2]
    assert up["result"] == "verified"
    assert up["session_id"] == "ee" * 32
    assert doc["event_log"][0]["body_hash"] == "sha256:" + f"{1:064x}"
    assert doc["workload_keyset_digest"] == "sha256:" + sha256_hex(rfc8785.dumps(s.keyset))
    settle = next(e for e in doc["event_log"] if e["type"] == "teegate.settlement")
    assert settle["cost"] == 1235
    assert settle["transfer_ids"] == ["tr-1-hold", "tr-1-settle"]


def test_signature_is_over_jcs_without_signature_aci_style() -> None:
    """What an independent aci/1 verifier does: strip signature, JCS, Ed25519 verify (hex)."""
    s = _signer()
    doc = s.sign(make_receipt(2)).document
    pretty = json.dumps(doc, indent=2)  # any encoding of the same document verifies
    parsed = json.loads(pretty)
    sig = bytes.fromhex(parsed.pop("signature"))
    key = next(k for k in s.keyset["receipt_signing_keys"] if k["key_id"] == parsed["key_id"])
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key"])).verify(
        sig, rfc8785.dumps(parsed)
    )


def test_leaf_bytes_equal_rfc8785_of_signed_document() -> None:
    signed = _signer().sign(make_receipt(3, error='quote "x"\n\u00e9\u2028'))
    assert signed.leaf == rfc8785.dumps(signed.document)
    assert SignedReceipt.from_json(signed.leaf).leaf == signed.leaf


def test_every_field_change_breaks_the_signature() -> None:
    s = _signer()
    doc = s.sign(make_receipt(4)).document
    SignedReceipt.from_json(doc).verify([s.public_key])
    mutations = []
    for k, v in doc.items():
        if k in ("signature", "event_log", "api_version", "v"):
            continue
        mutations.append((k, (v + "x") if isinstance(v, str) else (v or 0) + 1))
    for k, v in mutations:
        bad = copy.deepcopy(doc)
        bad[k] = v
        with pytest.raises((VerificationError, EvidenceError)):
            SignedReceipt.from_json(bad).verify([s.public_key])
    for i, ev in enumerate(doc["event_log"]):
        for field, value in ev.items():
            if field == "type":
                continue
            bad = copy.deepcopy(doc)
            bad["event_log"][i][field] = (
                not value
                if isinstance(value, bool)
                else value + 1
                if isinstance(value, int)
                else "changed"
            )
            with pytest.raises((VerificationError, EvidenceError)):
                SignedReceipt.from_json(bad).verify([s.public_key])


def test_wrong_key_and_malformed_documents() -> None:
    s = _signer()
    doc = s.sign(make_receipt(5)).document
    with pytest.raises(VerificationError, match="key_id"):
        SignedReceipt.from_json(doc).verify([_signer().public_key])
    bads: list[dict[str, object]] = [
        {"api_version": "aci/2"},
        {"v": "teegate-receipt/9"},
        {"event_log": []},
    ]
    for bad in bads:
        d = {**doc, **bad}
        with pytest.raises(EvidenceError):
            SignedReceipt.from_json(d)
    with pytest.raises(EvidenceError):
        SignedReceipt.from_json(b"{not json")


def test_refused_and_standard_receipts() -> None:
    s = _signer()
    refused = make_receipt(
        6,
        outcome="refused",
        trust_level=None,
        request_forwarded_sha256=None,
        provider=None,
        attestation=None,
        provider_signature=None,
        error="no provider meets attested",
        cost=0,
        transfer_ids=(),
    )
    doc = s.sign(refused).document
    types = [e["type"] for e in doc["event_log"]]
    assert "request.forwarded" not in types
    up = next(e for e in doc["event_log"] if e["type"] == "upstream.verified")
    assert up["result"] == "failed"
    assert up["required"] is True
    std = s.sign(make_receipt(7, trust_level="standard", trust_required="standard")).document
    up = next(e for e in std["event_log"] if e["type"] == "upstream.verified")
    assert up["result"] == "not_applicable"  # routed to a plain provider: nothing failed
    assert up["routed"] is True
    assert up["required"] is False
    tee = s.sign(make_receipt(8, trust_level="tee", trust_required="standard",
                              attestation=None)).document
    up = next(e for e in tee["event_log"] if e["type"] == "upstream.verified")
    assert up["result"] == "not_applicable"
    assert "routed" not in up
    # an attested level claimed without a verdict is a failure, whatever was required
    bad = s.sign(make_receipt(9, trust_level="attested", trust_required="standard",
                              attestation=None)).document
    up = next(e for e in bad["event_log"] if e["type"] == "upstream.verified")
    assert up["result"] == "failed"


@pytest.mark.parametrize(
    "over",
    [
        {"outcome": "maybe"},
        {"trust_level": "super"},
        {"cost": 1.5},
        {"cost": 1 << 60},
        {"request_received_sha256": "zz"},
        {"usage": {"prompt_tokens": 1.0}},
        {"receipt_id": ""},
    ],
)
def test_bad_receipt_fields_rejected(over: dict[str, object]) -> None:
    with pytest.raises(EvidenceError):
        make_receipt(8, **over)


_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 53) + 1, (1 << 53) - 1),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fast_canonical_form_equals_rfc8785(obj: Any) -> None:
    try:
        want = rfc8785.dumps(obj)
    except Exception:
        return  # rfc8785 refuses (e.g. lone surrogates): the fast path falls back to it
    assert jcs_trusted(obj) == want

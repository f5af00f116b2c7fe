"""C2SP signed-note and tlog-checkpoint vectors, plus the real Rekor bundles."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.errors import LogError
from teegate.receipts import merkle
from teegate.receipts.checkpoint import (
    Checkpoint,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
)
from teegate.receipts.note import (
    NoteSigner,
    format_skey,
    parse_note,
    parse_skey,
    parse_vkey,
    sign_note,
    verify_note,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "tlog"
VEC: dict[str, Any] = json.loads(
    (DATA / "c2sp" / "signed-note-and-checkpoint-vectors.json").read_text()
)


@pytest.mark.parametrize("case", VEC["signed_notes"], ids=lambda c: c["id"])
def test_signed_note_vectors(case: dict[str, Any]) -> None:
    verifiers = [parse_vkey(v) for v in case["vkeys"]]
    for v, text in zip(verifiers, case["vkeys"], strict=True):
        assert v.vkey == text
    if case["expect"] == "valid":
        ok = verify_note(case["note"], verifiers)
        assert sorted(f"{v.name}+{v.key_id.hex()}" for v in ok) == sorted(case["verified_by"])
    else:
        with pytest.raises(LogError):
            verify_note(case["note"], verifiers)


def test_go_signer_key_reproduces_signature() -> None:
    case = next(c for c in VEC["signed_notes"] if c["id"] == "go-note-sign-peter")
    signer = parse_skey(case["skey_go_format"])
    assert signer.vkey == case["vkeys"][0]
    assert sign_note(case["text"], [signer]) == case["note"]


@pytest.mark.parametrize("bad", VEC["bad_vkeys"], ids=lambda b: b["why"])
def test_bad_vkeys_rejected(bad: dict[str, str]) -> None:
    with pytest.raises(LogError):
        parse_vkey(bad["vkey"])


def test_every_single_bit_flip_of_a_note_signature_fails() -> None:
    case = VEC["signed_notes"][0]
    v = parse_vkey(case["vkeys"][0])
    note = parse_note(case["note"])
    sig = note.signatures[0].signature
    for bit in range(len(sig) * 8):
        bad = bytearray(sig)
        bad[bit // 8] ^= 1 << (bit % 8)
        text = note.text + "\n\u2014 " + note.signatures[0].name + " "
        text += base64.b64encode(note.signatures[0].key_id + bytes(bad)).decode() + "\n"
        with pytest.raises(LogError):
            verify_note(text, [v])
    # and a changed text
    with pytest.raises(LogError):
        verify_note(case["note"].replace("example", "exbmple", 1), [v])


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n\u2014 a AAAAAAA=\n",
        "text\n\n",
        "text\n\n- a AAAAAAAA\n",
        "text\n\n\u2014 a AAAAAAA\n",  # bad base64
        "text\n\n\u2014 a AAAA\n",  # too short
        "te\x01xt\n\n\u2014 a AAAAAAAA\n",
        "text\n\n\u2014 a+b AAAAAAAA\n",
        "text\n\n\u2014 a AAAAAAAA",  # no final newline
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(LogError):
        parse_note(note)


def test_checkpoint_vectors_parse() -> None:
    for c in VEC["checkpoints"]:
        text = c.get("text") or parse_note(c["note"]).text
        cp = parse_checkpoint_body(text)
        if "origin" in c:
            assert cp.origin == c["origin"]
            assert cp.size == c["size"]
        assert cp.body() == text
    go = VEC["checkpoints"][0]
    assert parse_checkpoint_body(go["text"]).root_hash == merkle.leaf_hash(b"hello world")


def test_rekor_v2_checkpoint_verifies() -> None:
    c = next(x for x in VEC["checkpoints"] if x["id"] == "rekor-v2-staging-checkpoint")
    v = parse_vkey(c["vkeys"][0])
    cp = open_checkpoint(c["note"], [v])
    assert (cp.origin, cp.size) == ("log2025-alpha1.rekor.sigstage.dev", 646)
    with pytest.raises(LogError):
        open_checkpoint(c["note"].replace("646", "647"), [v])


@pytest.mark.parametrize(
    "body",
    [
        "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1\nAAAA\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
        "o\n1\n",
    ],
)
def test_bad_checkpoint_bodies(body: str) -> None:
    with pytest.raises(LogError):
        parse_checkpoint_body(body)


def test_sign_and_open_own_checkpoint() -> None:
    key = Ed25519PrivateKey.generate()
    signer = NoteSigner("teegate.test/log", key)
    cp = Checkpoint("teegate.test/log", 5, merkle.leaf_hash(b"x"))
    text = sign_checkpoint(cp, signer)
    assert open_checkpoint(text, [parse_vkey(signer.vkey)], origin="teegate.test/log") == cp
    other = NoteSigner("teegate.test/log", Ed25519PrivateKey.generate())
    with pytest.raises(LogError):
        open_checkpoint(text, [other.verifier])
    with pytest.raises(LogError):
        sign_checkpoint(cp, NoteSigner("elsewhere", key))
    assert parse_skey(format_skey("teegate.test/log", key)).vkey == signer.vkey


# --- real Rekor bundles: inclusion proofs verified with our Merkle code ---------------------


def _entry(name: str) -> dict[str, Any]:
    bundle = json.loads((DATA / "sigstore-python" / name).read_text())
    entry: dict[str, Any] = bundle["verificationMaterial"]["tlogEntries"][0]
    return entry


@pytest.mark.parametrize("name", ["staging-rekor-v2.txt.sigstore.json", "bundle_v3.txt.sigstore"])
def test_rekor_bundle_inclusion(name: str) -> None:
    e = _entry(name)
    p = e["inclusionProof"]
    leaf = merkle.leaf_hash(base64.b64decode(e["canonicalizedBody"]))
    proof = [base64.b64decode(h) for h in p["hashes"]]
    root = base64.b64decode(p["rootHash"])
    idx, size = int(p["logIndex"]), int(p["treeSize"])
    merkle.verify_inclusion(leaf, idx, size, proof, root)
    cp = parse_checkpoint_body(parse_note(p["checkpoint"]["envelope"]).text)
    assert (cp.size, cp.root_hash) == (size, root)
    with pytest.raises(LogError):
        merkle.verify_inclusion(leaf, idx + 1, size, proof, root)
    bad = bytearray(proof[-1])
    bad[0] ^= 1
    with pytest.raises(LogError):
        merkle.verify_inclusion(leaf, idx, size, [*proof[:-1], bytes(bad)], root)


def test_rekor_v2_checkpoint_key_from_trusted_root() -> None:
    """Derive the vkey from the trusted root ourselves and check the bundle's checkpoint."""
    root = json.loads((DATA / "sigstore-python" / "sigstage-trusted_root.json").read_text())
    e = _entry("staging-rekor-v2.txt.sigstore.json")
    keyid = base64.b64decode(e["logId"]["keyId"])
    for tlog in root["tlogs"]:
        if "log2025-alpha1" not in tlog["baseUrl"]:
            continue
        der = base64.b64decode(tlog["publicKey"]["rawBytes"])
        pub = serialization.load_der_public_key(der)
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        name = "log2025-alpha1.rekor.sigstage.dev"
        full = hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()
        assert full == keyid
        keyb64 = base64.b64encode(bytes([1]) + raw).decode()
        vkey = f"{name}+{full[:4].hex()}+{keyb64}"
        cp = open_checkpoint(e["inclusionProof"]["checkpoint"]["envelope"], [parse_vkey(vkey)])
        assert cp.size == 646
        return
    pytest.fail("log2025-alpha1 key not in trusted root")


def test_rekor_v1_checkpoint_ecdsa_signature() -> None:
    """The v1 checkpoint is an ECDSA note; our parser hands out the exact signed bytes."""
    root = json.loads((DATA / "sigstore-python" / "sigstage-trusted_root.json").read_text())
    e = _entry("bundle_v3.txt.sigstore")
    note = parse_note(e["inclusionProof"]["checkpoint"]["envelope"])
    logid = base64.b64decode(e["logId"]["keyId"])
    tlog = next(t for t in root["tlogs"] if base64.b64decode(t["logId"]["keyId"]) == logid)
    pub = serialization.load_der_public_key(base64.b64decode(tlog["publicKey"]["rawBytes"]))
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    sig = note.signatures[0]
    assert sig.key_id == logid[:4]
    pub.verify(sig.signature, note.text.encode(), ec.ECDSA(hashes.SHA256()))

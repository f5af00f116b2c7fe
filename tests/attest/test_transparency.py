"""Sigstore bundles: real public bundles verify offline for their digest and signer; a
tampered bundle, another digest, another signer or another trust root do not."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from teegate.attest.policy import SigstorePolicy
from teegate.attest.transparency import (
    BundleError,
    match_bundles,
    sigstore_checks,
    verify_bundle,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sigstore"
STAGING = (DATA / "sigstage-trusted_root.json").read_text()
PRODUCTION = (DATA / "sigstore-trusted_root.json").read_text()
GITHUB = "https://github.com/login/oauth"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
          "https://token.actions.githubusercontent.com")
DSSE_SUBJECT = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"


def _sha(name: str) -> str:
    return hashlib.sha256((DATA / name).read_bytes()).hexdigest()


# (bundle file, digest, signer, kind, log index)
CASES = [
    ("bundle_v3.txt.sigstore", _sha("bundle_v3.txt"), ("william@yossarian.net", GITHUB),
     "hashedrekord", 25915956),
    ("staging-rekor-v2.txt.sigstore.json", _sha("staging-rekor-v2.txt"),
     ("jku@goto.fi", GITHUB), "hashedrekord", 645),
    ("a.dsse.staging-rekor-v2.txt.sigstore.json", DSSE_SUBJECT, BEACON, "dsse", 4026478),
]


@pytest.mark.parametrize(("bundle", "digest", "signer", "kind", "index"), CASES)
def test_real_bundle_verifies_offline(bundle: str, digest: str, signer: tuple[str, str],
                                      kind: str, index: int) -> None:
    m = verify_bundle(digest, (DATA / bundle).read_text(), trusted_root=STAGING,
                      identities=[signer])
    assert (m.digest, m.kind, m.log_index, m.signer) == (digest, kind, index, signer[0])


def _tamper_signature(text: str) -> str:
    doc = json.loads(text)
    where = doc.get("messageSignature") or doc["dsseEnvelope"]["signatures"][0]
    key = "signature" if "signature" in where else "sig"
    raw = bytearray(base64.b64decode(where[key]))
    raw[10] ^= 0x01
    where[key] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(doc)


@pytest.mark.parametrize(("bundle", "digest", "signer", "kind", "index"), CASES)
def test_tampered_signature_fails(bundle: str, digest: str, signer: tuple[str, str],
                                  kind: str, index: int) -> None:
    with pytest.raises(BundleError, match=r"verification failed|malformed"):
        verify_bundle(digest, _tamper_signature((DATA / bundle).read_text()),
                      trusted_root=STAGING, identities=[signer])


def test_tampered_digest_claim_fails() -> None:
    """A bundle edited to claim another digest no longer verifies (signature and log entry
    cover the real one)."""
    doc = json.loads((DATA / "bundle_v3.txt.sigstore").read_text())
    other = hashlib.sha256(b"another image").digest()
    doc["messageSignature"]["messageDigest"]["digest"] = base64.b64encode(other).decode()
    with pytest.raises(BundleError, match="verification failed"):
        verify_bundle(other.hex(), json.dumps(doc), trusted_root=STAGING,
                      identities=[CASES[0][2]])


def test_wrong_digest_fails() -> None:
    with pytest.raises(BundleError, match="the bundle is for"):
        verify_bundle("ab" * 32, (DATA / "bundle_v3.txt.sigstore").read_text(),
                      trusted_root=STAGING, identities=[CASES[0][2]])
    with pytest.raises(BundleError, match="the bundle is for"):
        verify_bundle(_sha("a.dsse.staging-rekor-v2.txt"),
                      (DATA / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_text(),
                      trusted_root=STAGING, identities=[BEACON])


def test_other_signer_or_root_fails() -> None:
    text = (DATA / "bundle_v3.txt.sigstore").read_text()
    with pytest.raises(BundleError, match="verification failed"):
        verify_bundle(CASES[0][1], text, trusted_root=STAGING,
                      identities=[("someone@else.example", GITHUB)])
    with pytest.raises(BundleError, match="verification failed"):
        verify_bundle(CASES[0][1], text, trusted_root=PRODUCTION, identities=[CASES[0][2]])
    with pytest.raises(BundleError, match="names no signer identity"):
        verify_bundle(CASES[0][1], text, trusted_root=STAGING, identities=[])


def test_checks_record_log_index_and_name_the_missing_bundle() -> None:
    policy = SigstorePolicy(require_images=True, trusted_root=STAGING, identities=(BEACON,),
                            bundles=((DATA / "a.dsse.staging-rekor-v2.txt.sigstore.json")
                                     .read_text(),))
    checks, found = sigstore_checks({"images": ["sha256:" + DSSE_SUBJECT]}, policy)
    assert [(c.name, c.ok) for c in checks] == [("sigstore.images", True)]
    assert found == [{"digest": "sha256:" + DSSE_SUBJECT, "log_index": 4026478,
                      "integrated_time": 0, "signer": BEACON[0], "kind": "dsse"}]
    checks, found = sigstore_checks({"images": ["sha256:" + DSSE_SUBJECT, "sha256:" + "ab" * 32]},
                                    policy)
    assert not checks[0].ok
    assert "no Sigstore bundle for sha256:abab" in checks[0].detail
    checks, _ = sigstore_checks({"images": [], "unpinned_images": ["redis:7"]}, policy)
    assert not checks[0].ok
    assert "not pinned by digest" in checks[0].detail
    assert match_bundles("cd" * 32, policy)[0] is None

"""Build transparency: a digest counts as released only with a valid Sigstore bundle.

NEAR's verifier looks the compose's image digests up in Sigstore; Tinfoil checks measurements
against Sigstore-logged releases. Here the bundles and the trust root come from the policy
(files an operator pinned), so verification is offline and needs no clock: the signing
certificate is checked at the time the transparency log (or a timestamp authority) attests.

A bundle matches a digest when it signs the digest itself (``hashedrekord``: the message
digest is the artifact's SHA-256) or carries an in-toto statement (DSSE) with that digest
among its subjects, as build-provenance attestations of container images do. Verification is
``sigstore`` (sigstore-python): certificate chain to the pinned Fulcio roots, the signer's
identity and issuer, the signature, and the log entry's inclusion proof and signed checkpoint
(or promise). The verdict records each digest's log index.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from teegate import safejson
from teegate.attest.policy import SigstorePolicy
from teegate.attest.verdict import Check

__all__ = ["BundleMatch", "match_bundles", "sigstore_checks", "verify_bundle"]

_IN_TOTO = "application/vnd.in-toto+json"


@dataclass(frozen=True, slots=True)
class BundleMatch:
    """A bundle that verified for a digest: where the log holds it and who signed."""

    digest: str  # sha256 hex
    log_index: int
    integrated_time: int
    signer: str
    kind: str  # "hashedrekord" or "dsse"

    def to_json(self) -> dict[str, Any]:
        return {"digest": "sha256:" + self.digest, "log_index": self.log_index,
                "integrated_time": self.integrated_time, "signer": self.signer,
                "kind": self.kind}


class BundleError(Exception):
    """Why one bundle does not vouch for one digest (words for the check's detail)."""


def _bundle_digests(bundle_json: str) -> tuple[str, set[str]]:
    """("hashedrekord" | "dsse", the sha256 digests the bundle claims), read without trust:
    only used to pick which bundles to verify for a digest."""
    try:
        doc = safejson.loads(bundle_json)
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError):
        return "", set()
    if not isinstance(doc, dict):
        return "", set()
    sig = doc.get("messageSignature")
    if isinstance(sig, dict):
        md = sig.get("messageDigest")
        try:
            raw = base64.b64decode(md["digest"], validate=True) if isinstance(md, dict) else b""
        except (ValueError, TypeError, KeyError):
            raw = b""
        return "hashedrekord", {raw.hex()} if len(raw) == 32 else set()
    env = doc.get("dsseEnvelope")
    if isinstance(env, dict):
        return "dsse", _statement_digests(env.get("payload"))
    return "", set()


def _statement_digests(payload_b64: Any) -> set[str]:
    try:
        statement = safejson.loads(base64.b64decode(payload_b64, validate=True))
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        return set()
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    out = set()
    for s in subjects if isinstance(subjects, list) else []:
        d = s.get("digest") if isinstance(s, dict) else None
        v = d.get("sha256") if isinstance(d, dict) else None
        if isinstance(v, str):
            out.add(v.lower())
    return out


def verify_bundle(digest: str, bundle_json: str, *, trusted_root: str,
                  identities: Sequence[tuple[str, str]]) -> BundleMatch:
    """Verify that ``bundle_json`` is a valid Sigstore bundle for sha256 ``digest`` (hex),
    signed by one of ``identities`` under ``trusted_root``; BundleError says why not."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import AnyOf, Identity

    if not identities:
        raise BundleError("the policy names no signer identity (sigstore.identities): a "
                          "bundle signed by anyone proves nothing")
    kind, claimed = _bundle_digests(bundle_json)
    if digest not in claimed:
        raise BundleError(f"the bundle is for {', '.join(sorted(claimed))[:40] or 'nothing'}, "
                          f"not sha256:{digest[:16]}…")
    try:
        bundle = Bundle.from_json(bundle_json)
        verifier = Verifier(trusted_root=_trusted_root(trusted_root))
        policy = AnyOf([Identity(identity=i, issuer=iss) for i, iss in identities])
        if kind == "hashedrekord":
            from sigstore_models.common.v1 import HashAlgorithm

            verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256,
                                            digest=bytes.fromhex(digest)), bundle, policy)
        else:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            if payload_type != _IN_TOTO:
                raise BundleError(f"the DSSE payload is {payload_type}, not an in-toto "
                                  "statement")
            verified = _statement_digests(base64.b64encode(payload).decode())
            if digest not in verified:
                raise BundleError("the verified in-toto statement does not name this digest")
    except BundleError:
        raise
    except SigstoreError as e:
        raise BundleError(f"Sigstore verification failed: {_words(e)}") from None
    except Exception as e:  # malformed bundles raise pydantic/ValueError/KeyError
        raise BundleError(f"the bundle is malformed: {type(e).__name__}: {_words(e)}"
                          ) from None
    entry: Any = bundle.log_entry
    inner = getattr(entry, "_inner", entry)
    cert = bundle.signing_certificate
    return BundleMatch(digest, int(inner.log_index), int(inner.integrated_time or 0),
                       _signer(cert), kind)


def _words(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _signer(cert: Any) -> str:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.UniformResourceIdentifier) + \
            san.get_values_for_type(x509.RFC822Name)
        return str(names[0]) if names else ""
    except x509.ExtensionNotFound:
        return ""


_ROOTS: dict[str, Any] = {}


def _trusted_root(text: str) -> Any:
    """A parsed TrustedRoot, kept per text (parsing one costs milliseconds per refresh)."""
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot.v1 import TrustedRoot as RawTrustedRoot

    key = hashlib.sha256(text.encode()).hexdigest()
    root = _ROOTS.get(key)
    if root is None:
        if not text:
            raise BundleError("the policy pins no Sigstore trust root (sigstore.trusted_root)")
        try:
            root = TrustedRoot(RawTrustedRoot.from_json(text.encode()))
        except Exception as e:  # pydantic ValidationError, sigstore Error
            raise BundleError(f"the policy's Sigstore trust root does not parse: "
                              f"{_words(e)}") from None
        _ROOTS[key] = root
    return root


@functools.lru_cache(maxsize=256)
def _verified(digest: str, bundle_json: str, trusted_root: str,
              identities: tuple[tuple[str, str], ...]) -> tuple[BundleMatch | None, str]:
    """``verify_bundle``, remembered: its outcome depends on these inputs only (no clock), and
    every attestation refresh would otherwise re-verify the same bundles (20-40 ms each)."""
    try:
        return verify_bundle(digest, bundle_json, trusted_root=trusted_root,
                             identities=identities), ""
    except BundleError as e:
        return None, str(e)


def match_bundles(digest: str, policy: SigstorePolicy) -> tuple[BundleMatch | None, str]:
    """The first of the policy's bundles that verifies for ``digest``, or (None, why not)."""
    reasons: list[str] = []
    for text in policy.bundles:
        _kind, claimed = _bundle_digests(text)
        if digest not in claimed:
            continue
        match, why = _verified(digest, text, policy.trusted_root, policy.identities)
        if match is not None:
            return match, ""
        reasons.append(why)
    if not reasons:
        return None, f"no Sigstore bundle for sha256:{digest[:16]}… among the policy's " \
                     f"{len(policy.bundles)}"
    return None, "; ".join(reasons[:2])


def sigstore_checks(identity: dict[str, Any], policy: SigstorePolicy,
                    ) -> tuple[list[Check], list[dict[str, Any]]]:
    """``sigstore.images`` / ``sigstore.os_image`` when the policy requires them, and the
    matches (with log indexes) for the verdict's model identity."""
    checks: list[Check] = []
    found: list[dict[str, Any]] = []

    def run(name: str, digests: Iterable[str], what: str) -> None:
        items = list(digests)
        if not items:
            checks.append(Check(name, False, f"the policy requires Sigstore bundles for {what}"
                                f" and the evidence shows none"))
            return
        missing = []
        for d in items:
            match, why = match_bundles(d, policy)
            if match is None:
                missing.append(f"sha256:{d[:16]}…: {why}")
            else:
                found.append(match.to_json())
        checks.append(Check(name, not missing, "; ".join(missing[:3]) if missing else
                            f"{len(items)} {what} digest(s) have valid Sigstore bundles "
                            f"(log index {', '.join(str(f['log_index']) for f in found)})"))

    if policy.require_images:
        run("sigstore.images", [i.removeprefix("sha256:") for i in identity.get("images", [])]
            if not identity.get("unpinned_images") else [], "container image")
        if identity.get("unpinned_images"):
            checks[-1] = Check("sigstore.images", False,
                               f"image(s) {', '.join(identity['unpinned_images'][:3])} are not "
                               "pinned by digest, so no bundle can vouch for them")
    if policy.require_os_image:
        os_hash = (identity.get("os_image") or {}).get("os_image_hash")
        run("sigstore.os_image", [os_hash] if isinstance(os_hash, str) else [],
            "OS image release")
    return checks, found

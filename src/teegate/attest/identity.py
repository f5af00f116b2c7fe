"""A model's identity: what the evidence proves runs in the TEE.

The identity is read from verified evidence only: the OS image (TDX MRTD and RTMR0-2, or SNP
MEASUREMENT, plus dstack's ``os_image_hash``), the app compose hash the TD measured (RTMR3
``compose-hash`` event or MRCONFIGID), the container image digests that compose pins, and the
weights' digest where the compose publishes one (``TEEGATE_WEIGHTS_SHA256``). An app-compose
document contributes images and weights only when it hashes to the measured compose hash: the
document is untrusted input, the hash is the evidence.

``identity_checks`` compares an identity with the policy's model pins (image digests, weights,
development OS images); all of it is pure: bytes in, checks out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from teegate import safejson
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check

__all__ = [
    "compose_images",
    "compose_weights",
    "identity_checks",
    "model_identity",
    "os_image_manifest",
]

_IMAGE_LINE = re.compile(r"""^\s*-?\s*image:\s*["']?([^"'\s#]+)""", re.MULTILINE)
_PINNED = re.compile(r"@sha256:([0-9a-f]{64})$")
_WEIGHTS = re.compile(
    r"""(?:TEEGATE_WEIGHTS_SHA256|teegate\.weights\.sha256)["']?\s*[:=]\s*["']?"""
    r"""(?:sha256:)?([0-9a-fA-F]{64})\b""")
_OS_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2")
MAX_COMPOSE_BYTES = 1 << 20


def _compose_file(app_compose: bytes) -> str:
    """The docker compose text inside a dstack app-compose document ("" if none)."""
    if len(app_compose) > MAX_COMPOSE_BYTES:
        return ""
    try:
        doc = safejson.loads(app_compose)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return ""
    text = doc.get("docker_compose_file") if isinstance(doc, dict) else None
    return text if isinstance(text, str) else ""


def compose_images(app_compose: bytes) -> tuple[list[str], list[str]]:
    """(pinned digests ``sha256:<hex>``, unpinned image references) of the compose's services,
    in order, without repeats. A reference pinned by digest names exactly one image; a tag
    names whatever the registry serves today."""
    pinned: list[str] = []
    unpinned: list[str] = []
    for ref in _IMAGE_LINE.findall(_compose_file(app_compose)):
        m = _PINNED.search(ref.lower())
        target, value = (pinned, "sha256:" + m.group(1)) if m else (unpinned, ref)
        if value not in target:
            target.append(value)
    return pinned, unpinned


def compose_weights(app_compose: bytes) -> str | None:
    """The weights' SHA-256 the compose publishes (``TEEGATE_WEIGHTS_SHA256``), if exactly
    one value is given."""
    values = {v.lower() for v in _WEIGHTS.findall(_compose_file(app_compose))}
    return values.pop() if len(values) == 1 else None


def os_image_manifest(manifest: Mapping[str, Any], os_image_hash: str) -> tuple[
        dict[str, Any] | None, str]:
    """(metadata, problem) of a dstack OS image's published hash list.

    ``manifest`` holds ``sha256sum`` (the text of the image's ``sha256sum.txt``, whose SHA-256
    is the ``os_image_hash`` dstack measures) and ``metadata`` (the text of its
    ``metadata.json``, which that list must name with its own hash). Both come from untrusted
    hands; they say something only when the hashes tie them to the measured value."""
    listing, metadata = manifest.get("sha256sum"), manifest.get("metadata")
    if not isinstance(listing, str) or not isinstance(metadata, str):
        return None, "the OS image manifest needs sha256sum and metadata texts"
    if hashlib.sha256(listing.encode()).hexdigest() != os_image_hash:
        return None, (f"the OS image hash list hashes to "
                      f"{hashlib.sha256(listing.encode()).hexdigest()[:16]}…, not the measured "
                      f"os_image_hash {os_image_hash[:16]}…")
    want = hashlib.sha256(metadata.encode()).hexdigest()
    listed = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = parts[0].lower()
    if listed.get("metadata.json") != want:
        return None, "the OS image hash list does not name this metadata.json"
    try:
        meta = safejson.loads(metadata)
    except (json.JSONDecodeError, ValueError):
        return None, "the OS image metadata.json is not JSON"
    if not isinstance(meta, dict):
        return None, "the OS image metadata.json is not an object"
    return meta, ""


def model_identity(
    tee: str, measurements: Mapping[str, str], dstack: Mapping[str, str],
    app_compose: bytes | None, os_manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The identity the evidence shows (meaningful only in an accepted verdict)."""
    os_image: dict[str, Any] = {}
    if tee == "tdx":
        os_image = {k: measurements[k] for k in _OS_REGISTERS if k in measurements}
    elif tee == "sev-snp" and "measurement" in measurements:
        os_image = {"measurement": measurements["measurement"]}
    elif tee == "sgx":
        os_image = {k: measurements[k] for k in ("mrenclave", "mrsigner") if k in measurements}
    out: dict[str, Any] = {"os_image": os_image}
    os_hash = dstack.get("os_image_hash")
    if os_hash:
        os_image["os_image_hash"] = os_hash
        if os_manifest is not None:
            meta, _ = os_image_manifest(os_manifest, os_hash)
            if meta is not None:
                os_image["is_dev"] = meta.get("is_dev") is True
                if isinstance(meta.get("version"), str):
                    os_image["version"] = meta["version"]
    compose = dstack.get("compose_hash") or _config_compose(measurements)
    out["compose_hash"] = compose
    if dstack.get("app_id"):
        out["app_id"] = dstack["app_id"]
    out["images"] = []
    out["unpinned_images"] = []
    out["weights_sha256"] = None
    if compose and app_compose is not None and hashlib.sha256(app_compose).hexdigest() == compose:
        out["images"], out["unpinned_images"] = compose_images(app_compose)
        out["weights_sha256"] = compose_weights(app_compose)
    return out


def _config_compose(measurements: Mapping[str, str]) -> str | None:
    """dstack MRCONFIGID v1: 0x01 || compose hash, zero padded."""
    value = measurements.get("mrconfigid", "")
    if len(value) == 96 and value.startswith("01") and not any(
            c != "0" for c in value[66:]):
        return value[2:66]
    return None


def identity_checks(identity: Mapping[str, Any], policy: Policy,
                    os_manifest_problem: str | None = None) -> list[Check]:
    """The policy's model pins against an identity: container image digests, weights'
    digest, development OS images."""
    d = policy.dstack
    checks: list[Check] = []
    images: list[str] = list(identity.get("images") or [])
    unpinned: list[str] = list(identity.get("unpinned_images") or [])
    if d.image_digests:
        allowed = {"sha256:" + v for v in d.image_digests}
        problems = []
        if not images and not unpinned:
            problems.append("no container image is known: the evidence shows no app-compose "
                            "document that hashes to the measured compose hash")
        if unpinned:
            problems.append(f"image(s) {', '.join(unpinned[:3])} are not pinned by digest")
        foreign = [i for i in images if i not in allowed]
        if foreign:
            problems.append(f"image digest(s) {', '.join(f[:23] + '…' for f in foreign[:3])} "
                            f"are not among the {len(allowed)} the policy allows")
        checks.append(Check("model.images", not problems, "; ".join(problems) if problems
                            else f"all {len(images)} image digest(s) of the measured compose "
                                 "are allowed"))
    if d.weights_digests:
        w = identity.get("weights_sha256")
        ok = isinstance(w, str) and w in d.weights_digests
        checks.append(Check("model.weights", ok,
                            f"weights digest {w} is allowed by the policy" if ok else
                            f"weights digest {w or '(none published by the measured compose)'}"
                            f" is not among the {len(d.weights_digests)} the policy allows"))
    os_image = identity.get("os_image") or {}
    os_hash = os_image.get("os_image_hash")
    if isinstance(os_hash, str):
        listed = os_hash in d.dev_os_image_hashes
        flagged = os_image.get("is_dev") is True
        if listed or flagged:
            why = ("its metadata.json says is_dev" if flagged else
                   "it is on the policy's list of development images")
            checks.append(Check(
                "dstack.os_image_dev", d.allow_dev_os,
                f"OS image {os_hash[:16]}… is a dstack development image ({why})"
                + ("; the policy allows development images" if d.allow_dev_os else
                   ": development images allow SSH into the CVM and are not hardened "
                   "(set dstack.allow_dev_os to accept them)")))
        elif os_manifest_problem:
            checks.append(Check("dstack.os_image_dev", False,
                                f"the OS image manifest given does not describe the measured "
                                f"image: {os_manifest_problem}"))
        elif "is_dev" in os_image:
            checks.append(Check("dstack.os_image_dev", True,
                                f"OS image {os_hash[:16]}… is a production image "
                                f"({os_image.get('version', 'no version')})"))
    return checks

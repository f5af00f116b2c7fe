"""The model identity: read from real dstack evidence, covered by the verdict digest, and the
development OS image refused unless allowed."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from teegate.attest.eventlog import check_event_log, parse_event_log
from teegate.attest.identity import (
    compose_images,
    compose_weights,
    identity_checks,
    model_identity,
    os_image_manifest,
)
from teegate.attest.policy import Policy
from teegate.attest.tdx import parse_quote, quote_measurements
from teegate.attest.verdict import Check, Verdict
from teegate.sim.compose import dev_os_image

DATA = Path(__file__).resolve().parent.parent / "data" / "confidential-ai"


def test_identity_of_real_dstack_evidence() -> None:
    """Phala's dstack report: the compose hash RTMR3 measured, the OS registers of the quote,
    and the compose's one image, which is a tag (not pinned by digest)."""
    report = json.loads((DATA / "dstack-tdx-attestation-report.json").read_text())
    compose = (DATA / "dstack-app-compose.json").read_bytes()
    measurements = quote_measurements(parse_quote(bytes.fromhex(report["quote"])))
    checks, dstack = check_event_log(measurements, parse_event_log(report["event_log"]),
                                     policy=Policy.default(), app_compose=compose)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    ident = model_identity("tdx", measurements, dstack, compose)
    assert ident["compose_hash"] == hashlib.sha256(compose).hexdigest()
    assert ident["compose_hash"].startswith("06768e6d")
    assert ident["compose_hash"].endswith(
        "653aff")
    assert ident["os_image"] == {k: measurements[k] for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2")}
    assert ident["images"] == []
    assert ident["unpinned_images"] == ["quay.io/jupyter/base-notebook"]
    # A compose document that is not the measured one contributes nothing.
    other = model_identity("tdx", measurements, dstack, compose + b" ")
    assert other["unpinned_images"] == []
    assert other["compose_hash"] == ident["compose_hash"]
    # A policy pinning image digests refuses an unpinned image, by name.
    pinned = replace(Policy.default(), dstack=replace(Policy.default().dstack,
                                                      image_digests=frozenset({"ab" * 32})))
    (check,) = identity_checks(ident, pinned)
    assert (check.name, check.ok) == ("model.images", False)
    assert "quay.io/jupyter/base-notebook are not pinned" in check.detail


def test_compose_images_and_weights() -> None:
    digest = "12" * 32
    doc = json.dumps({"docker_compose_file": (
        "services:\n  a:\n    image: ghcr.io/x/vllm@sha256:" + digest + "\n"
        "  b:\n    image: 'redis:7'\n  c:\n    image: ghcr.io/x/vllm@sha256:" + digest + "\n"
        "    labels:\n      teegate.weights.sha256: " + "EF" * 32 + "\n")}).encode()
    assert compose_images(doc) == (["sha256:" + digest], ["redis:7"])
    assert compose_weights(doc) == "ef" * 32
    assert compose_images(b"not json") == ([], [])


def test_verdict_digest_covers_the_model_identity() -> None:
    v = Verdict(tee="tdx", checks=(Check("x", True, ""),), model={"compose_hash": "aa"})
    assert v.digest() != replace(v, model={"compose_hash": "bb"}).digest()
    assert v.digest() != replace(v, models={"m": v}).digest()
    assert v.to_json()["model"] == {"compose_hash": "aa"}


def test_os_image_manifest_binds_to_the_measured_hash() -> None:
    m = dev_os_image()
    h = hashlib.sha256(m["sha256sum"].encode()).hexdigest()
    meta, problem = os_image_manifest(m, h)
    assert meta is not None
    assert meta["is_dev"] is True
    assert problem == ""
    assert os_image_manifest(m, "00" * 32)[0] is None
    forged = {**m, "metadata": m["metadata"].replace("true", "false")}
    meta, problem = os_image_manifest(forged, h)
    assert meta is None
    assert "does not name this metadata.json" in problem
    ident = model_identity("tdx", {}, {"os_image_hash": h}, None, m)
    (check,) = identity_checks(ident, Policy.default())
    assert (check.name, check.ok) == ("dstack.os_image_dev", False)
    (check,) = identity_checks(ident, Policy.default(), None)
    assert "is_dev" in check.detail
    ident = model_identity("tdx", {}, {"os_image_hash": h}, None, forged)
    (check,) = identity_checks(ident, Policy.default(), problem)
    assert (check.name, check.ok) == ("dstack.os_image_dev", False)

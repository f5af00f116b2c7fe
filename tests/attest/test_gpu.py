"""GPU evidence verification on NVIDIA's real evidence (nvtrust, PPCIe 8xH100, NEAR sample)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attest import gpu as gpu_mod
from teegate.attest.gpu import (
    appraise_gpus,
    decode_evidence,
    parse_nvidia_payload,
    parse_spdm_evidence,
    verify_gpu_evidence,
)
from teegate.attest.verdict import Verdict
from teegate.errors import EvidenceError
from tests.attest.gpu_helpers import (
    AUDIT,
    DEFAULT,
    NOW,
    SAMPLE_NONCE,
    hopper,
    hopper_raw,
    near_payload,
    ppcie_gpu,
    ppcie_items,
    ppcie_nonce,
    ppcie_payload,
    with_gpu,
)


def failed(v: Verdict) -> list[str]:
    return [c.name for c in v.failures]


def pem_of(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_parse_hopper_sample() -> None:
    ev = parse_spdm_evidence(hopper_raw())
    assert ev.request_nonce == SAMPLE_NONCE
    assert len(ev.blocks) == 64
    assert [b.index for b in ev.blocks] == list(range(1, 65))
    assert ev.driver_version == "550.90.07"
    assert ev.vbios_version == "96.00.9F.00.01"
    assert (ev.project, ev.project_sku, ev.chip_sku) == ("1010", "0200", "882")
    assert ev.fwid is not None
    assert ev.fwid.hex().startswith("f5c384aebb5792")
    assert ev.trailing == 0
    assert len(ev.signed) == len(hopper_raw()) - 96
    assert ev.signature == hopper_raw()[-96:]


def test_hopper_sample_documented_result() -> None:
    """Chain 5/5 and SPDM signature verify; the nonce is nvtrust's constant, so the default
    policy rejects the evidence on exactly that check."""
    evidence, chain = hopper()
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=DEFAULT, now=NOW)
    assert v.tee == "nvidia-gpu"
    assert failed(v) == ["gpu.0.nonce"]
    assert "sample nonce" in v.check("gpu.0.nonce").detail  # type: ignore[union-attr]
    for name in ("gpu.0.chain", "gpu.0.cert_validity", "gpu.0.signature", "gpu.0.fwid"):
        assert v.check(name).ok, name  # type: ignore[union-attr]
    assert v.measurements["driver_version"] == "550.90.07"
    assert v.measurements["vbios_version"] == "96.00.9F.00.01"
    assert len([k for k in v.measurements if k.startswith("block_")]) == 64
    assert v.identity["device_id"] == "NVIDIA:GH100:48B02D92494BADF4"
    assert v.identity["fwid"] == parse_spdm_evidence(hopper_raw()).fwid.hex()  # type: ignore[union-attr]
    assert v.nonce == SAMPLE_NONCE.hex()
    assert v.not_before == 1646092800  # the ICA's notBefore, 2022-03-01
    assert not v.development
    # Offline audit of the same evidence: accepted, and the detail says why the nonce passed.
    audit = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
    assert audit.accepted, audit.failures
    assert "offline audit" in audit.check("gpu.0.nonce").detail  # type: ignore[union-attr]


def test_measurements_not_compared_without_rims_is_said_and_can_be_required() -> None:
    evidence, chain = hopper()
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
    m = v.check("gpu.0.measurements")
    assert m is not None
    assert m.ok
    assert "NOT compared" in m.detail
    strict = with_gpu(AUDIT, require_rim=True)
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=strict, now=NOW)
    assert failed(v) == ["gpu.0.measurements"]


def test_all_eight_ppcie_gpus_pass_with_their_nonce() -> None:
    checks, gpus = appraise_gpus(ppcie_payload(), nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert [c.name for c in checks] == ["gpu.present", "gpu.nonce_binding", "gpu.distinct"]
    assert all(c.ok for c in checks)
    assert len(gpus) == 8
    assert all(g.accepted for g in gpus), [g.failures for g in gpus]
    assert [g.identity["gpu_index"] for g in gpus] == [str(i) for i in range(8)]
    assert len({g.identity["device_id"] for g in gpus}) == 8  # eight distinct devices
    assert len({g.identity["leaf_serial"] for g in gpus}) == 8
    assert len({g.identity["fwid"] for g in gpus}) == 1  # running the same firmware
    assert {g.measurements["driver_version"] for g in gpus} == {"590.12"}
    assert {g.measurements["vbios_version"] for g in gpus} == {"96.00.A5.00.01"}
    # The published nonce itself is refused under the default policy, on every GPU.
    _, strict = appraise_gpus(ppcie_payload(), nonce=ppcie_nonce(), policy=DEFAULT, now=NOW)
    assert [failed(g) for g in strict] == [[f"gpu.{i}.nonce"] for i in range(8)]


def test_ppcie_list_shape_is_accepted_too() -> None:
    payload = parse_nvidia_payload(json.dumps(ppcie_items()))
    assert payload.nonce == ppcie_nonce()
    assert payload.arch == "HOPPER"
    assert len(payload.gpus) == 8


def test_near_sample_payload_hex_text_evidence() -> None:
    payload = near_payload()
    nonce = bytes.fromhex(payload["nonce"])
    # evidence is base64 of ASCII hex here; decoding must still yield SPDM bytes.
    raw = decode_evidence(payload["evidence_list"][0]["evidence"])
    assert raw[:2] == b"\x11\xe0"
    checks, gpus = appraise_gpus(json.dumps(payload), nonce=nonce, policy=AUDIT, now=NOW)
    assert all(c.ok for c in checks)
    assert len(gpus) == 1
    assert gpus[0].accepted
    assert gpus[0].measurements["driver_version"] == "550.135"
    assert gpus[0].measurements["vbios_version"] == "96.00.9D.00.02"
    assert gpus[0].identity["project"] == "G520"


def test_wrong_nonce_is_rejected_by_the_nonce_checks() -> None:
    other = bytes(range(32))
    evidence, chain = hopper()
    v = verify_gpu_evidence(evidence, chain, nonce=other, policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.nonce"]
    checks, gpus = appraise_gpus(ppcie_payload(), nonce=other, policy=AUDIT, now=NOW)
    assert [c.name for c in checks if not c.ok] == ["gpu.nonce_binding"]
    assert all(failed(g) == [f"gpu.{i}.nonce"] for i, g in enumerate(gpus))


def test_nonce_compare_is_full_length() -> None:
    evidence, chain = hopper()
    prefix_only = SAMPLE_NONCE[:16] + bytes(16)
    v = verify_gpu_evidence(evidence, chain, nonce=prefix_only, policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.nonce"]
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE[:16], policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.nonce"]


def test_missing_nonce_fails_unless_auditing() -> None:
    evidence, chain = hopper()
    assert failed(verify_gpu_evidence(evidence, chain, nonce=None, policy=DEFAULT,
                                      now=NOW)) == ["gpu.0.nonce"]
    assert verify_gpu_evidence(evidence, chain, nonce=None, policy=AUDIT, now=NOW).accepted


def test_verdict_nonce_is_ours_and_the_gpus_nonce_is_identity() -> None:
    """Like every verdict, ``nonce`` is the caller's; the SPDM request nonce is the GPU's
    claim, recorded as ``spdm_nonce`` (showing it as ours would fake freshness)."""
    evidence, chain = hopper()
    v = verify_gpu_evidence(evidence, chain, nonce=None, policy=AUDIT, now=NOW)
    assert v.nonce is None
    assert v.identity["spdm_nonce"] == SAMPLE_NONCE.hex()
    assert v.measurements["rim_comparison"] == "not compared"


def test_payload_nonce_differing_from_the_spdm_nonce_is_caught() -> None:
    """A payload that claims our nonce but carries evidence for another one."""
    payload = ppcie_payload()
    ours = bytes(range(32))
    payload["nonce"] = ours.hex()
    checks, gpus = appraise_gpus(payload, nonce=ours, policy=AUDIT, now=NOW)
    assert all(c.ok for c in checks)
    assert all(failed(g) == [f"gpu.{i}.nonce"] for i, g in enumerate(gpus))


def test_tampered_measurement_fails_the_signature() -> None:
    raw = bytearray(hopper_raw())
    raw[37 + 8 + 2 * 55 + 10] ^= 0x01  # a byte inside block 3's SHA-384 value
    v = verify_gpu_evidence(bytes(raw), hopper()[1], nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.signature"]


def test_truncated_chain_is_rejected_by_the_chain_check() -> None:
    certs = x509.load_pem_x509_certificates(hopper()[1])
    for n in (1, 2, 3):
        v = verify_gpu_evidence(hopper()[0], pem_of(certs[:n]), nonce=SAMPLE_NONCE,
                                policy=AUDIT, now=NOW)
        assert failed(v) == ["gpu.0.chain"], n
        assert "does not chain" in v.check("gpu.0.chain").detail  # type: ignore[union-attr]
    # Without the root appended (it is pinned anyway) the chain is complete.
    v = verify_gpu_evidence(hopper()[0], pem_of(certs[:4]), nonce=SAMPLE_NONCE, policy=AUDIT,
                            now=NOW)
    assert v.accepted


@pytest.mark.parametrize("missing", [1, 2, 3])
def test_chain_missing_an_intermediate_is_rejected(missing: int) -> None:
    certs = x509.load_pem_x509_certificates(hopper()[1])
    del certs[missing]
    v = verify_gpu_evidence(hopper()[0], pem_of(certs), nonce=SAMPLE_NONCE, policy=AUDIT,
                            now=NOW)
    assert failed(v) == ["gpu.0.chain"]
    assert "intermediate" in v.check("gpu.0.chain").detail  # type: ignore[union-attr]


def test_another_gpus_chain_fails_the_signature() -> None:
    evidence, _ = ppcie_gpu(0)
    _, chain1 = ppcie_gpu(1)
    v = verify_gpu_evidence(evidence, chain1, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.signature"]


def test_firmware_id_must_match_the_leaf() -> None:
    """Evidence from the H100 sample firmware under a PPCIe GPU's chain: FWIDs differ."""
    _, chain = ppcie_gpu(0)
    v = verify_gpu_evidence(hopper()[0], chain, nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
    assert failed(v) == ["gpu.0.signature", "gpu.0.fwid"]


def test_certificate_validity_depends_on_now() -> None:
    evidence, chain = hopper()
    before_ica = 1640995200  # 2022-01-01, before "GH100 Provisioner ICA 1" is valid
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=AUDIT, now=before_ica)
    assert failed(v) == ["gpu.0.cert_validity"]


def test_version_policy() -> None:
    evidence, chain = hopper()
    ok = with_gpu(AUDIT, driver_versions=frozenset({"550.90.07"}),
                  vbios_versions=frozenset({"96.00.9f.00.01"}))
    assert verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=ok, now=NOW).accepted
    bad = with_gpu(AUDIT, driver_versions=frozenset({"570.1"}),
                   vbios_versions=frozenset({"96.00.A5.00.01"}))
    v = verify_gpu_evidence(evidence, chain, nonce=SAMPLE_NONCE, policy=bad, now=NOW)
    assert failed(v) == ["gpu.0.driver_version", "gpu.0.vbios_version"]


def test_trailing_bytes_after_the_signature_are_tolerated_and_unsigned() -> None:
    raw = hopper_raw() + b"\x00"
    ev = parse_spdm_evidence(raw)
    assert ev.trailing == 1
    assert ev.signature == hopper_raw()[-96:]
    v = verify_gpu_evidence(raw, hopper()[1], nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
    assert v.accepted


def test_one_bad_gpu_fails_the_payload() -> None:
    payload = ppcie_payload()
    raw = bytearray(base64.b64decode(payload["evidence_list"][5]["evidence"]))
    raw[200] ^= 0x80
    payload["evidence_list"][5]["evidence"] = base64.b64encode(bytes(raw)).decode()
    checks, gpus = appraise_gpus(payload, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    verdict = Verdict(tee="nvidia-gpu", checks=tuple(checks), components=gpus)
    assert not verdict.accepted
    assert [c.name for c in verdict.failures] == ["gpu.5.signature"]


def test_gpu_mode() -> None:
    required = with_gpu(AUDIT, mode="required")
    forbidden = with_gpu(AUDIT, mode="forbidden")
    assert appraise_gpus(None, nonce=None, policy=AUDIT, now=NOW) == ([], ())
    checks, gpus = appraise_gpus(None, nonce=None, policy=required, now=NOW)
    assert [(c.name, c.ok) for c in checks] == [("gpu.required", False)]
    assert gpus == ()
    checks, gpus = appraise_gpus("", nonce=None, policy=required, now=NOW)
    assert [(c.name, c.ok) for c in checks] == [("gpu.required", False)]
    checks, gpus = appraise_gpus(ppcie_payload(), nonce=ppcie_nonce(), policy=forbidden,
                                 now=NOW)
    assert [(c.name, c.ok) for c in checks] == [("gpu.forbidden", False)]
    assert gpus == ()
    checks, gpus = appraise_gpus(ppcie_payload(), nonce=ppcie_nonce(), policy=required,
                                 now=NOW)
    assert all(c.ok for c in checks)
    assert all(g.accepted for g in gpus)
    assert len(gpus) == 8


def test_payload_without_nonce_is_not_bound() -> None:
    payload = ppcie_payload()
    del payload["nonce"]
    checks, _ = appraise_gpus(payload, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert [(c.name, c.ok) for c in checks] == [("gpu.present", True),
                                                ("gpu.nonce_binding", False),
                                                ("gpu.distinct", True)]


def test_one_gpus_evidence_listed_twice_is_not_two_gpus() -> None:
    """Every listed GPU verifies on its own, but GPUs 2 and 6 are one device."""
    payload = ppcie_payload()
    payload["evidence_list"][6] = payload["evidence_list"][2]
    checks, gpus = appraise_gpus(payload, nonce=ppcie_nonce(), policy=AUDIT, now=NOW)
    assert all(g.accepted for g in gpus)
    verdict = Verdict(tee="nvidia-gpu", checks=tuple(checks), components=gpus)
    assert [c.name for c in verdict.failures] == ["gpu.distinct"]
    assert "GPUs 2 and 6" in verdict.check("gpu.distinct").detail  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [
    "not json", "[]", "{}", '{"evidence_list": []}', '{"evidence_list": [1]}',
    '{"nonce": "zz", "evidence_list": [{"evidence": "11e0", "certificate": "x"}]}',
    '{"evidence_list": [{"evidence": "!!", "certificate": "x"}]}',
    '{"evidence_list": [{"evidence": "EeAB/w==", "certificate": 5}]}',
    '"a string"',
])
def test_malformed_payloads_raise_evidence_error(bad: str) -> None:
    with pytest.raises(EvidenceError):
        appraise_gpus(bad, nonce=None, policy=AUDIT, now=NOW)


def test_malformed_chain_raises_evidence_error() -> None:
    with pytest.raises(EvidenceError):
        verify_gpu_evidence(hopper()[0], b"no certificates", nonce=None, policy=AUDIT, now=NOW)
    pem = hopper()[1]
    broken = pem.replace(b"MII", b"MIX", 1)
    with pytest.raises(EvidenceError):
        verify_gpu_evidence(hopper()[0], broken, nonce=None, policy=AUDIT, now=NOW)


def test_pinned_root_is_the_documented_one() -> None:
    from teegate.attest.gpu_chain import DEVICE_ROOT_FILE, RIM_ROOT_FILE, fingerprint, pinned_root

    assert fingerprint(pinned_root(DEVICE_ROOT_FILE)) == (
        "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48")
    assert fingerprint(pinned_root(RIM_ROOT_FILE)) == (
        "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1")
    assert gpu_mod.TEE == "nvidia-gpu"


def test_chain_and_evidence_encodings() -> None:
    """Raw, hex and base64 evidence; PEM bytes, PEM text and base64(PEM) chains."""
    raw, chain = hopper_raw(), hopper()[1]
    for ev in (raw, raw.hex(), raw.hex().upper().encode(), base64.b64encode(raw).decode()):
        for c in (chain, chain.decode(), base64.b64encode(chain), base64.b64encode(chain).decode()):
            v = verify_gpu_evidence(ev, c, nonce=SAMPLE_NONCE, policy=AUDIT, now=NOW)
            assert v.accepted, (type(ev), type(c))

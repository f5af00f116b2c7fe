"""Every single-bit change of the signed part of real GPU evidence is rejected, and garbage in
any GPU input only ever raises ``EvidenceError``."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.attest.gpu import (
    appraise_gpus,
    decode_evidence,
    parse_nvidia_payload,
    parse_rim,
    parse_spdm_evidence,
    verify_gpu_evidence,
)
from teegate.errors import EvidenceError
from tests.attest.gpu_helpers import (
    AUDIT,
    DRIVER_RIM,
    NOW,
    ppcie_gpu,
    ppcie_nonce,
    ppcie_payload,
    rim,
)

EVIDENCE, CHAIN = ppcie_gpu(2)
NONCE = ppcie_nonce()
SIGNED = len(parse_spdm_evidence(EVIDENCE).signed)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(data: bytes) -> str:
    """"error" (EvidenceError), "accepted", or the sorted failed check names."""
    try:
        v = verify_gpu_evidence(data, CHAIN, nonce=NONCE, policy=AUDIT, now=NOW, index=2)
    except EvidenceError:
        return "error"
    return "accepted" if v.accepted else ",".join(sorted(c.name for c in v.failures))


def test_unmodified_evidence_is_accepted() -> None:
    assert _outcome(EVIDENCE) == "accepted"


def test_every_signed_byte_with_one_bit_flipped_is_rejected() -> None:
    """One flip per byte of request || response (the bit rotates with the offset), plus every
    bit of the request nonce and of one measurement value, where tampering matters most."""
    positions = [(i, i % 8) for i in range(SIGNED)]
    positions += [(i, b) for i in range(4, 36) for b in range(8)]  # request nonce
    positions += [(i, b) for i in range(37 + 8 + 7, 37 + 8 + 55) for b in range(8)]  # block 1
    outcomes: dict[str, int] = {}
    for i, bit in positions:
        data = bytearray(EVIDENCE)
        data[i] ^= 1 << bit
        result = _outcome(bytes(data))
        assert result == "error" or "gpu.2.signature" in result.split(","), (i, bit, result)
        outcomes[result] = outcomes.get(result, 0) + 1
    # Most flips keep the structure intact and are caught by the signature itself.
    assert outcomes.get("gpu.2.signature", 0) > SIGNED // 2


def test_every_signature_byte_flip_is_rejected() -> None:
    for i in range(SIGNED, SIGNED + 96):
        data = bytearray(EVIDENCE)
        data[i] ^= 0x40
        assert _outcome(bytes(data)) == "gpu.2.signature", i


@FUZZ
@given(st.binary(max_size=5000))
def test_random_evidence_bytes(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_spdm_evidence(data)
    with contextlib.suppress(EvidenceError):
        decode_evidence(data)
    result = _outcome(data)
    assert result == "error" or "gpu.2.signature" in result.split(",")


@FUZZ
@given(st.integers(min_value=0, max_value=len(EVIDENCE) - 1))
def test_truncated_evidence(cut: int) -> None:
    assert _outcome(EVIDENCE[:cut]) == "error"  # the signature is the last thing


@FUZZ
@given(st.integers(min_value=0, max_value=len(EVIDENCE) - 1), st.binary(min_size=1, max_size=40))
def test_spliced_evidence(at: int, junk: bytes) -> None:
    data = EVIDENCE[:at] + junk + EVIDENCE[at + len(junk):]
    if data != EVIDENCE:
        result = _outcome(data)
        signed_changed = data[:SIGNED + 96] != EVIDENCE[:SIGNED + 96]
        assert result != "accepted" or not signed_changed


@FUZZ
@given(st.binary(max_size=3000), st.text(max_size=300))
def test_random_chain_and_text_evidence(chain: bytes, text: str) -> None:
    for ev in (EVIDENCE, text.encode("utf-8", "replace")):
        with contextlib.suppress(EvidenceError):
            v = verify_gpu_evidence(ev, chain, nonce=NONCE, policy=AUDIT, now=NOW)
            assert not v.accepted


_json: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@FUZZ
@given(_json)
def test_random_json_payloads(doc: Any) -> None:
    with contextlib.suppress(EvidenceError):
        parse_nvidia_payload(json.dumps(doc))
    with contextlib.suppress(EvidenceError):
        checks, gpus = appraise_gpus(json.dumps(doc), nonce=NONCE, policy=AUDIT, now=NOW)
        assert not (all(c.ok for c in checks) and gpus and all(g.accepted for g in gpus))


@FUZZ
@given(st.sampled_from(["nonce", "arch", "evidence_list"]), _json)
def test_payload_fields_replaced_by_garbage(key: str, value: Any) -> None:
    payload = ppcie_payload()
    payload[key] = value
    with contextlib.suppress(EvidenceError):
        appraise_gpus(json.dumps(payload), nonce=NONCE, policy=AUDIT, now=NOW)


@FUZZ
@given(st.binary(max_size=64))
def test_base64_garbage_evidence_in_a_payload(junk: bytes) -> None:
    payload = ppcie_payload()
    payload["evidence_list"][0]["evidence"] = base64.b64encode(junk).decode()
    with contextlib.suppress(EvidenceError):
        _, gpus = appraise_gpus(payload, nonce=NONCE, policy=AUDIT, now=NOW)
        assert not gpus[0].accepted


RIM_XML = rim(DRIVER_RIM)


@FUZZ
@given(st.integers(min_value=0, max_value=len(RIM_XML) - 1), st.binary(min_size=1, max_size=8))
def test_rim_garbage(at: int, junk: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_rim(RIM_XML[:at] + junk + RIM_XML[at + len(junk):])
    with contextlib.suppress(EvidenceError):
        parse_rim(RIM_XML[:at])


@FUZZ
@given(st.binary(max_size=2000))
def test_rim_random_bytes(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_rim(data)

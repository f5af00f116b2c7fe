import base64
import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teegate.attest.detect import SNP_REPORT_SIZE, EvidenceKind, detect
from teegate.errors import EvidenceError


def _quote_header(version: int, tee_type: int) -> bytes:
    return struct.pack("<HHI", version, 2, tee_type) + bytes(40)


@pytest.mark.parametrize(
    ("blob", "kind"),
    [
        (_quote_header(4, 0x81) + bytes(600), EvidenceKind.TDX_QUOTE),
        (_quote_header(5, 0x81) + bytes(600), EvidenceKind.TDX_QUOTE),
        (_quote_header(3, 0) + bytes(600), EvidenceKind.SGX_QUOTE),
        (struct.pack("<I", 3) + bytes(SNP_REPORT_SIZE - 4), EvidenceKind.SNP_REPORT),
        (bytes([0x11, 0xE0]) + bytes(100), EvidenceKind.GPU_EVIDENCE),
    ],
)
def test_binary_hex_and_base64_are_detected(blob: bytes, kind: EvidenceKind) -> None:
    assert detect(blob) == (kind, blob)
    assert detect(blob.hex().encode() + b"\n") == (kind, blob)
    assert detect(b"0x" + blob.hex().upper().encode()) == (kind, blob)
    b64 = base64.b64encode(blob)
    assert detect(b64) == (kind, blob)
    assert detect(b"\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))) == (kind, blob)


def test_json_kinds() -> None:
    assert detect(b'{"intel_quote": "00", "signing_address": "0x"}')[0] is (
        EvidenceKind.PROVIDER_REPORT
    )
    assert detect(b' {"nonce": "aa", "evidence_list": []}')[0] is EvidenceKind.NVIDIA_PAYLOAD
    assert detect(b'{"tdx": {"quote": "BAAC"}}')[0] is EvidenceKind.ITA_EVIDENCE
    assert detect(b'{"format": "https://tinfoil.sh/predicate/tdx-guest/v2", "body": ""}')[0] \
        is EvidenceKind.TINFOIL_DOCUMENT
    assert detect(b'{"report": [72, 67], "vcek": ""}')[0] is EvidenceKind.AZURE_HCL_REPORT
    assert detect(b"HCLA" + bytes(60))[0] is EvidenceKind.AZURE_HCL_REPORT
    # GPU evidence alone in a report: its payload, verified as GPU evidence.
    payload = {"nonce": "aa", "evidence_list": []}
    assert detect(json.dumps({"nvidia_payload": payload}).encode()) == (
        EvidenceKind.NVIDIA_PAYLOAD, json.dumps(payload).encode())
    assert detect(json.dumps({"nvidia_payload": payload, "intel_quote_b64": "BAAC"}).encode()
                  )[0] is EvidenceKind.PROVIDER_REPORT


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b'{"tcb_info": "x"}', "collateral"),
        (b"{not json", "does not parse"),
        (b'{"hello": 1}', "not a provider attestation report"),
        (b"hello world", "unrecognised evidence"),
        (b"", "unrecognised evidence"),
    ],
)
def test_unrecognised_input_is_a_clear_evidence_error(blob: bytes, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        detect(blob)


@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_evidence_error(blob: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        detect(blob)


@pytest.mark.parametrize(("doc", "message"), [
    ({"gateway_attestation": {}, "model_attestations": []}, "NEAR AI cloud-api"),
    ({"all_attestations": [{}]}, "one per replica"),
    ({"text": "a:b", "signature": "0x00", "signing_address": "0x00"}, "response signature"),
])
def test_related_json_documents_are_explained(doc: dict[str, object], message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        detect(json.dumps(doc).encode())


def test_nvtrust_ppcie_files_and_neighbours_of_evidence() -> None:
    """nvtrust's PPCIe GPU evidence list is a GPU payload; NVSwitch evidence, certificate
    chains and RIM files are named for what they are, not called unrecognised."""
    from pathlib import Path

    from teegate.attest.gpu import parse_nvidia_payload

    nvidia = Path(__file__).parent.parent / "data" / "nvidia"
    gpus = (nvidia / "ppcie_gpu_evidence.json").read_bytes()
    kind, raw = detect(gpus)
    assert kind is EvidenceKind.NVIDIA_PAYLOAD
    assert len(parse_nvidia_payload(raw).gpus) == 8
    switches = (nvidia / "ppcie_switch_evidence.json").read_bytes()
    assert detect(switches)[0] is EvidenceKind.NVIDIA_PAYLOAD
    with pytest.raises(EvidenceError, match="NVSwitch"):
        parse_nvidia_payload(switches)
    with pytest.raises(EvidenceError, match="certificate chain, not evidence: pass it with"):
        detect((nvidia / "hopperCertChain.txt").read_bytes())
    with pytest.raises(EvidenceError, match="RIM"):
        detect((nvidia / "Driver_RIM_test_no_gpu.swidtag").read_bytes())
    with pytest.raises(EvidenceError, match="list of GPU evidence objects"):
        detect(b'[{"quote": "00"}]')

"""Tell what kind of evidence a blob of bytes is, so the CLI needs no ``--type`` flag.

Detection only routes; it proves nothing. Each verifier parses strictly afterwards.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import string
import struct
from typing import Any

from teegate import safejson
from teegate.errors import EvidenceError

SNP_REPORT_SIZE = 0x4A0
_HEXDIGITS = frozenset(string.hexdigits.encode())
_WHITESPACE = frozenset(b" \t\r\n")
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_CPU_FIELDS = ("intel_quote", "intel_quote_b64", "snp_report", "quote")


class EvidenceKind(enum.Enum):
    TDX_QUOTE = "tdx"
    SGX_QUOTE = "sgx"
    SNP_REPORT = "sev-snp"
    GPU_EVIDENCE = "nvidia-gpu"
    NVIDIA_PAYLOAD = "nvidia-payload"
    PROVIDER_REPORT = "provider-report"
    ITA_EVIDENCE = "ita-evidence"  # GCP/Azure trustauthority-cli: {"tdx": {"quote", …}}
    TINFOIL_DOCUMENT = "tinfoil-document"  # {"format": "https://tinfoil.sh/predicate/…"}
    AZURE_HCL_REPORT = "azure-hcl-report"  # "HCLA" report, or {"report": [bytes], "vcek"}


def _unhex(data: bytes) -> bytes | None:
    text = bytes(b for b in data if b not in _WHITESPACE)
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    if not text or len(text) % 2 or not all(b in _HEXDIGITS for b in text):
        return None
    return bytes.fromhex(text.decode())


def _unbase64(data: bytes) -> bytes | None:
    """A base64 quote or report (Azure and ITA hand quotes out so); None if it is not."""
    text = bytes(b for b in data if b not in _WHITESPACE)
    if len(text) < 64 or any(b not in _BASE64 for b in text):
        return None
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _kind_of_binary(raw: bytes) -> EvidenceKind | None:
    if raw[:4] == b"HCLA":
        return EvidenceKind.AZURE_HCL_REPORT
    if len(raw) >= 48:
        version, key_type, tee_type = struct.unpack_from("<HHI", raw, 0)
        if version in (4, 5) and tee_type == 0x81 and key_type in (2, 3):
            return EvidenceKind.TDX_QUOTE
        if version == 3 and tee_type == 0 and key_type in (2, 3):
            return EvidenceKind.SGX_QUOTE
    if len(raw) >= 2 and raw[0] in (0x10, 0x11, 0x12) and raw[1] == 0xE0:
        return EvidenceKind.GPU_EVIDENCE
    if len(raw) >= SNP_REPORT_SIZE and struct.unpack_from("<I", raw, 0)[0] in (2, 3, 4, 5):
        return EvidenceKind.SNP_REPORT
    return None


def _kind_of_json_list(text: bytes) -> EvidenceKind:
    """nvtrust's PPCIe evidence file: a list of ``{evidence, certificate, nonce, …}``."""
    try:
        items: Any = safejson.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvidenceError(f"input looks like JSON but does not parse: {e}") from e
    if items and all(isinstance(i, dict) and "evidence" in i and "certificate" in i
                     for i in items):
        return EvidenceKind.NVIDIA_PAYLOAD
    raise EvidenceError("a JSON list is evidence only as a list of GPU evidence objects "
                        "({evidence, certificate, nonce}, as nvtrust writes them)")


def detect(data: bytes) -> tuple[EvidenceKind, bytes]:
    """Return the evidence kind and its raw bytes (hex decoded; JSON left as text)."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM from editors on Windows
    stripped = data.strip()
    if stripped.startswith(b"["):
        return _kind_of_json_list(stripped), stripped
    if stripped.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise EvidenceError("this is a certificate chain, not evidence: pass it with --certs "
                            "next to the GPU evidence or SEV-SNP report it belongs to")
    if b"SoftwareIdentity" in stripped[:4096] and stripped.startswith(b"<"):
        raise EvidenceError("this is an NVIDIA RIM (SWID tag) with reference measurements, "
                            "not evidence")
    if stripped.startswith(b"{"):
        try:
            obj: Any = safejson.loads(stripped)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvidenceError(f"input looks like JSON but does not parse: {e}") from e
        if not isinstance(obj, dict):
            raise EvidenceError("JSON evidence must be an object")
        if "evidence_list" in obj and "intel_quote" not in obj:
            return EvidenceKind.NVIDIA_PAYLOAD, stripped
        if isinstance(obj.get("tdx"), dict) and "quote" in obj["tdx"]:
            return EvidenceKind.ITA_EVIDENCE, stripped
        if isinstance(obj.get("format"), str) and obj["format"].startswith(
                "https://tinfoil.sh/predicate/"):
            return EvidenceKind.TINFOIL_DOCUMENT, stripped
        if isinstance(obj.get("report"), list) and "vcek" in obj:
            return EvidenceKind.AZURE_HCL_REPORT, stripped
        if "nvidia_payload" in obj and not any(k in obj for k in _CPU_FIELDS):
            # A report with GPU evidence only: verified as the GPU payload it carries.
            payload = obj["nvidia_payload"]
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return EvidenceKind.NVIDIA_PAYLOAD, text.encode("utf-8", "surrogatepass")
        if any(k in obj for k in (*_CPU_FIELDS, "nvidia_payload")):
            return EvidenceKind.PROVIDER_REPORT, stripped
        if "signature" in obj and ("text" in obj or "signing_address" in obj):
            raise EvidenceError(
                "this is a response signature ({text, signature, signing_address}), not "
                "attestation evidence: verify the provider's attestation report, whose "
                "signing_address must be the address that made this signature"
            )
        if "gateway_attestation" in obj or "model_attestations" in obj:
            raise EvidenceError(
                "this is a NEAR AI cloud-api attestation (gateway_attestation, "
                "model_attestations): save gateway_attestation, or one entry of "
                "model_attestations, to its own file and verify that with the same --nonce"
            )
        if "all_attestations" in obj:
            raise EvidenceError(
                "this report lists all_attestations (one per replica) but has no top-level "
                "evidence: save each entry to its own file and verify each with the same --nonce"
            )
        if "tcb_info" in obj or "qe_identity" in obj:
            raise EvidenceError("this is collateral, not evidence: pass it with --collateral")
        raise EvidenceError(
            "JSON object is not a provider attestation report (no intel_quote, snp_report "
            "or nvidia_payload field) nor an nvidia_payload (no evidence_list)"
        )
    for candidate in (_unhex(data), data, _unbase64(data)):
        if candidate is None:
            continue
        kind = _kind_of_binary(candidate)
        if kind is not None:
            return kind, candidate
    raise EvidenceError(
        f"unrecognised evidence ({len(data)} bytes): not a TDX/SGX quote, SEV-SNP report, "
        "Azure HCL report, NVIDIA SPDM evidence or provider report JSON, in binary, hex or "
        "base64"
    )

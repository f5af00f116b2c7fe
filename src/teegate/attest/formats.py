"""Evidence wrappers real users hand over, opened to the quote or report inside.

Each wrapper is parsed strictly, its inner evidence goes to the usual verifier, and what the
wrapper itself binds is a named check:

- Intel Trust Authority evidence, as ``trustauthority-cli evidence --tdx`` prints it on GCP and
  Azure (``{"tdx": {"quote", "runtime_data", "verifier_nonce", "event_log"}}``): REPORTDATA is
  SHA-512(verifier_nonce.val || verifier_nonce.iat || runtime_data).
- Tinfoil attestation documents (``{"format": "https://tinfoil.sh/predicate/<tee>/vN",
  "body"}``): the body is the quote or SNP report, base64 (v1) or base64 of gzip (v2).
- Azure's HCL report (``HCLA`` header, as the vTPM NV index holds it, or trustee's
  ``{"report": [bytes], "vcek"}`` evidence): a 32-byte header, the hardware report, then the
  runtime data whose hash REPORT_DATA carries.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teegate import safejson
from teegate.attest.guard import malformed
from teegate.attest.verdict import Check
from teegate.errors import EvidenceError

__all__ = [
    "HclReport",
    "ItaEvidence",
    "TinfoilDocument",
    "hcl_checks",
    "ita_checks",
    "parse_hcl_report",
    "parse_ita_evidence",
    "parse_tinfoil_document",
]

HCL_SIGNATURE = b"HCLA"
HCL_HEADER_SIZE = 0x20
SNP_REPORT_SIZE = 0x4A0
TDX_REPORT_SIZE = 0x400
_HCL_REPORT_TYPES = {2: "sev-snp", 4: "tdx"}
# IGVM request data: report_data_hash_type (1 SHA-256, 2 SHA-384, 3 SHA-512).
_HCL_HASHES = {1: "sha256", 2: "sha384", 3: "sha512"}
MAX_WRAPPED = 1 << 20
TINFOIL_PREFIX = "https://tinfoil.sh/predicate/"


def b64decode(value: Any, where: str) -> bytes:
    """Standard or URL-safe base64, padding optional; anything else is malformed."""
    if not isinstance(value, str):
        raise EvidenceError(f"{where}: expected a base64 string")
    text = "".join(value.split())
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{where}: not base64") from None


# --- Intel Trust Authority ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItaEvidence:
    quote: bytes
    runtime_data: bytes
    nonce_val: bytes | None
    nonce_iat: bytes | None
    event_log: bytes | None
    unread: tuple[str, ...] = ()  # other evidence beside "tdx" (e.g. "nvgpu")


@malformed("the Intel Trust Authority evidence")
def parse_ita_evidence(obj: Mapping[str, Any]) -> ItaEvidence:
    tdx = obj.get("tdx")
    if not isinstance(tdx, Mapping):
        raise EvidenceError("Intel Trust Authority evidence: 'tdx' must be an object")
    unknown = sorted(set(tdx) - {"quote", "runtime_data", "verifier_nonce", "event_log",
                                 "user_data"})
    if unknown:
        raise EvidenceError(f"Intel Trust Authority evidence: unknown field(s) {unknown}")
    quote = b64decode(tdx.get("quote"), "Intel Trust Authority evidence 'tdx.quote'")
    runtime = tdx.get("runtime_data") or tdx.get("user_data")
    data = b64decode(runtime, "'tdx.runtime_data'") if runtime else b""
    nonce = tdx.get("verifier_nonce")
    val = iat = None
    if nonce is not None:
        if not isinstance(nonce, Mapping):
            raise EvidenceError("Intel Trust Authority evidence: 'verifier_nonce' must be an "
                                "object {val, iat, signature}")
        val = b64decode(nonce.get("val"), "'tdx.verifier_nonce.val'")
        iat = b64decode(nonce.get("iat"), "'tdx.verifier_nonce.iat'")
    log = tdx.get("event_log")
    event_log = b64decode(log, "'tdx.event_log'") if log else None
    return ItaEvidence(quote, data, val, iat, event_log, tuple(sorted(set(obj) - {"tdx"})))


def ita_checks(report_data: bytes, ita: ItaEvidence, nonce: bytes | None) -> list[Check]:
    """What the ITA wrapper binds: REPORTDATA = SHA-512(val || iat || runtime_data) (the
    trustauthority-client's adapter computes it so). ITA's signature over its nonce is not
    checked: teegate pins no ITA key; the quote's own signature is what is verified."""
    checks: list[Check] = []
    if ita.nonce_val is None or ita.nonce_iat is None:
        want = hashlib.sha512(ita.runtime_data).digest()
        ok = hmac.compare_digest(report_data, want)
        checks.append(Check("ita.report_data", ok,
                            "report_data = SHA-512(runtime_data) (no verifier_nonce)" if ok else
                            "report_data is not SHA-512(runtime_data): the quote does not "
                            "bind the runtime data it came with"))
    else:
        want = hashlib.sha512(ita.nonce_val + ita.nonce_iat + ita.runtime_data).digest()
        ok = hmac.compare_digest(report_data, want)
        iat = ita.nonce_iat.decode("utf-8", "replace")
        checks.append(Check(
            "ita.report_data", ok,
            f"report_data = SHA-512(verifier_nonce.val || iat || runtime_data): the quote "
            f"answers Intel Trust Authority's nonce issued {iat} (ITA's signature over that "
            "nonce is not checked)" if ok else
            "report_data is not SHA-512(verifier_nonce.val || iat || runtime_data): the quote "
            "was not made for the nonce it came with"))
    if nonce is not None:
        checks.append(Check("binding.nonce", False,
                            "this quote answers an Intel Trust Authority nonce, not ours: its "
                            "freshness is ITA's to judge (see ita.report_data)"))
    if ita.unread:
        checks.append(Check("ita.unread", False,
                            f"the evidence also carries {', '.join(ita.unread)}, which teegate "
                            "does not read in this form: nothing in it was verified (verify "
                            "GPU evidence as an nvidia_payload)"))
    if ita.event_log is not None:
        checks.append(Check("ita.event_log", True,
                            f"{len(ita.event_log)} bytes of event log came with the quote; "
                            "not replayed (give the CCEL with --event-log)"))
    return checks


# --- Tinfoil ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TinfoilDocument:
    format: str
    tee: str  # "tdx" or "sev-snp"
    body: bytes


@malformed("the Tinfoil attestation document")
def parse_tinfoil_document(obj: Mapping[str, Any]) -> TinfoilDocument:
    fmt = obj.get("format")
    if not isinstance(fmt, str) or not fmt.startswith(TINFOIL_PREFIX):
        raise EvidenceError("Tinfoil attestation document: unknown 'format'")
    kind, _, version = fmt.removeprefix(TINFOIL_PREFIX).partition("/")
    tee = {"tdx-guest": "tdx", "sev-snp-guest": "sev-snp", "sev-guest": "sev-snp"}.get(kind)
    if tee is None or version not in ("v1", "v2"):
        raise EvidenceError(f"Tinfoil attestation document format {fmt!r} is not one teegate "
                            "reads (tdx-guest or sev-snp-guest, v1 or v2)")
    body = b64decode(obj.get("body"), "Tinfoil attestation document 'body'")
    if body[:2] == b"\x1f\x8b":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = d.decompress(body, MAX_WRAPPED)
            if d.unconsumed_tail:
                raise EvidenceError("Tinfoil attestation document 'body' is over 1 MiB unzipped")
        except (zlib.error, gzip.BadGzipFile):
            raise EvidenceError("Tinfoil attestation document 'body' is not valid gzip") \
                from None
    return TinfoilDocument(fmt, tee, body)


# --- Azure HCL report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HclReport:
    version: int
    tee: str
    hw_report: bytes
    hash_name: str
    runtime_data: bytes
    trailing: bytes

    def runtime_json(self) -> Mapping[str, Any]:
        try:
            doc: Any = safejson.loads(self.runtime_data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return doc if isinstance(doc, Mapping) else {}


@malformed("the Azure HCL report")
def parse_hcl_report(raw: bytes) -> HclReport:
    """``HCLA`` header (signature, version, report size, request type, status, reserved),
    the hardware report (SNP 1184 bytes, TDX TDREPORT 1024), then the IGVM request data
    (data size, version, report type, hash type, runtime-data size, runtime data)."""
    if raw[:4] != HCL_SIGNATURE or len(raw) < HCL_HEADER_SIZE:
        raise EvidenceError("not an Azure HCL report (no 'HCLA' header)")
    version, _, request_type = struct.unpack_from("<III", raw, 4)
    hw_size = SNP_REPORT_SIZE if request_type == 2 else TDX_REPORT_SIZE \
        if request_type == 4 else None
    if hw_size is None:
        raise EvidenceError(f"Azure HCL report: unknown report type {request_type}")
    hw = raw[HCL_HEADER_SIZE:HCL_HEADER_SIZE + hw_size]
    at = HCL_HEADER_SIZE + hw_size
    if len(hw) != hw_size or len(raw) < at + 20:
        raise EvidenceError(f"Azure HCL report: {len(raw)} bytes is too short for its "
                            f"{_HCL_REPORT_TYPES[request_type]} report and runtime-data header")
    data_size, _version, report_type, hash_type, var_size = struct.unpack_from(
        "<IIIII", raw, at)
    if report_type != request_type:
        raise EvidenceError(f"Azure HCL report: runtime data is for report type {report_type}, "
                            f"the header says {request_type}")
    hash_name = _HCL_HASHES.get(hash_type)
    if hash_name is None:
        raise EvidenceError(f"Azure HCL report: unknown runtime-data hash type {hash_type}")
    if data_size != 20 + var_size or len(raw) < at + 20 + var_size:
        raise EvidenceError("Azure HCL report: runtime-data sizes disagree with the data")
    runtime = raw[at + 20 : at + 20 + var_size]
    return HclReport(version, _HCL_REPORT_TYPES[request_type], hw, hash_name, runtime,
                     raw[at + 20 + var_size :])


def hcl_checks(hcl: HclReport, report_data: bytes, nonce: bytes | None) -> list[Check]:
    """REPORT_DATA = hash(runtime data), zero padded (what Azure's HCL writes and MAA checks);
    the runtime data names the vTPM key (HCLAkPub) and the guest's 64-byte ``user-data``."""
    digest = hashlib.new(hcl.hash_name, hcl.runtime_data).digest()
    want = digest.ljust(64, b"\0")
    ok = hmac.compare_digest(report_data, want)
    keys = [k.get("kid") for k in hcl.runtime_json().get("keys", []) if isinstance(k, Mapping)]
    checks = [Check(
        "azure.runtime_data", ok,
        f"REPORT_DATA = {hcl.hash_name}(runtime data) ({len(hcl.runtime_data)} bytes, keys "
        f"{', '.join(str(k) for k in keys) or 'none'}): the HCL runtime data is bound" if ok else
        f"REPORT_DATA is not {hcl.hash_name}(runtime data): the runtime data (and the vTPM key "
        "in it) is not the one this report was made with")]
    if hcl.trailing.strip(b"\0"):
        checks.append(Check("azure.trailing_bytes", True,
                            f"{len(hcl.trailing)} bytes follow the runtime data (ignored)"))
    if nonce is not None:
        user = hcl.runtime_json().get("user-data")
        try:
            user_data = bytes.fromhex(user) if isinstance(user, str) else b""
        except ValueError:
            user_data = b""
        bound = ok and len(user_data) >= 32 and hmac.compare_digest(user_data[:32], nonce)
        checks.append(Check(
            "binding.nonce", bound,
            "the runtime data's user-data begins with our nonce" if bound else
            "the runtime data's user-data is not our nonce: the report was made for another "
            "request"))
    return checks

"""NVIDIA Hopper GPU attestation: SPDM evidence + device chain (+ RIMs) -> Verdict.

Pure: evidence, chain, RIMs, policy and ``now`` are parameters. One verdict per GPU (``tee``
"nvidia-gpu"); ``appraise_gpus`` applies the policy's GPU mode to a provider's
``nvidia_payload`` and checks that every GPU answered the caller's nonce, which is the same
nonce the CPU quote binds in its report_data (REFERENCE §4.5, §7.2).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate import safejson
from teegate.attest.binding import NONCE_SIZE, is_sample_nonce
from teegate.attest.gpu_chain import (
    DEVICE_ROOT_FILE,
    development_roots,
    load_pem_chain,
    p384_key,
    pinned_root,
    verify_chain,
)
from teegate.attest.gpu_ocsp import OcspStatus, revocation_check
from teegate.attest.gpu_rim import Rim, compare, parse_rim, select_rims, verify_rim
from teegate.attest.gpu_spdm import SpdmEvidence, parse_spdm_evidence
from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check, CheckList, Verdict, window
from teegate.errors import EvidenceError

__all__ = [
    "NvidiaPayload",
    "Rim",
    "SpdmEvidence",
    "appraise_gpus",
    "decode_evidence",
    "device_chains",
    "load_device_chain",
    "parse_nvidia_payload",
    "parse_rim",
    "parse_spdm_evidence",
    "payload_rim_ids",
    "rim_ids",
    "verify_gpu_evidence",
    "verify_rim",
]

TEE = "nvidia-gpu"
TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
# Blackwell leaves carry a TCG DiceTcbInfo under this OID (nvtrust cc_admin_utils.extract_fwid
# looks for both OIDs, as this module does).
DICE_TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1.1")
NVIDIA_SAN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
_SHA384_OID_DER = bytes.fromhex("0609608648016503040202")
MAX_GPUS = 64


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    """One GPU's entry of an ``nvidia_payload``: raw SPDM bytes and its PEM chain."""

    evidence: bytes
    certificate: bytes


@dataclass(frozen=True)
class NvidiaPayload:
    nonce: bytes | None
    arch: str | None
    gpus: tuple[GpuEvidence, ...]


def decode_evidence(text: str | bytes) -> bytes:
    """Evidence as providers publish it: base64 of the SPDM bytes, or base64 of their ASCII
    hex (NEAR's e2e sample), or plain hex. Returns the SPDM bytes."""
    if isinstance(text, bytes):
        if text[:2] == b"\x11\xe0":
            return text
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as e:
            raise EvidenceError("GPU evidence is neither SPDM bytes nor ASCII text") from e
    s = "".join(text.split())
    if s[:4].lower() == "11e0" and len(s) % 2 == 0:
        try:
            return bytes.fromhex(s)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EvidenceError("GPU evidence is neither base64 nor hex") from e
    if raw[:4].lower() == b"11e0":
        try:
            return bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            raise EvidenceError("GPU evidence: base64 of hex text that is not hex") from e
    return raw


def _decode_certificate(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{where}: 'certificate' must be a string")
    if "-----BEGIN" in value:
        return value.encode("ascii", "replace")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise EvidenceError(f"{where}: 'certificate' is neither PEM nor base64(PEM)") from e


def _hex_nonce(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceError(f"{where} must be a hex string")
    try:
        return bytes.fromhex(value.strip().lower().removeprefix("0x"))
    except ValueError as e:
        raise EvidenceError(f"{where} is not hex") from e


@malformed("the nvidia_payload")
def parse_nvidia_payload(payload: str | bytes | Mapping[str, Any] | Sequence[Any]) -> NvidiaPayload:
    """Parse a provider ``nvidia_payload``: a JSON string or object ``{nonce, arch,
    evidence_list: [{evidence, certificate}, …]}`` (the NRAS request body). nvtrust's PPCIe
    list of ``{evidence, certificate, nonce, …}`` objects is accepted too; its per-GPU nonces
    must agree."""
    data: Any = payload
    if isinstance(payload, (str, bytes)):
        try:
            data = safejson.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvidenceError(f"nvidia_payload is not valid JSON: {e}") from e
    nonce: bytes | None = None
    arch: str | None = None
    if isinstance(data, Mapping):
        items = data.get("evidence_list")
        if "nonce" in data and data["nonce"] is not None:
            nonce = _hex_nonce(data["nonce"], "nvidia_payload 'nonce'")
        arch = data.get("arch") if isinstance(data.get("arch"), str) else None
    elif isinstance(data, list):
        items = data
    else:
        raise EvidenceError("nvidia_payload must be a JSON object with an evidence_list")
    if not isinstance(items, list) or not items:
        raise EvidenceError("nvidia_payload: 'evidence_list' must be a non-empty list")
    archs = {arch} | {i["arch"] for i in items
                       if isinstance(i, Mapping) and isinstance(i.get("arch"), str)}
    if any(isinstance(a, str) and a.upper().startswith("LS") for a in archs):
        raise EvidenceError("this is NVSwitch (LS10) evidence: teegate verifies GPU evidence "
                            "only; NVSwitch attestation is not supported")
    if len(items) > MAX_GPUS:
        raise EvidenceError(f"nvidia_payload: more than {MAX_GPUS} GPUs")
    gpus = []
    for i, item in enumerate(items):
        where = f"nvidia_payload evidence_list[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("evidence"), str):
            raise EvidenceError(f"{where}: expected {{'evidence': str, 'certificate': str}}")
        if not isinstance(data, Mapping):
            item_nonce = _hex_nonce(item.get("nonce"), f"{where} 'nonce'")
            if nonce is not None and item_nonce != nonce:
                raise EvidenceError(f"{where}: its nonce differs from the other GPUs'")
            nonce = item_nonce
            if arch is None and isinstance(item.get("arch"), str):
                arch = item["arch"]
        gpus.append(GpuEvidence(decode_evidence(item["evidence"]),
                                _decode_certificate(item.get("certificate"), where)))
    return NvidiaPayload(nonce, arch, tuple(gpus))


# --- one GPU ------------------------------------------------------------------------------


def _fwid_of(cert: x509.Certificate) -> bytes | None:
    """The SHA-384 FWID in the leaf's TCB info extension: Hopper's (2.23.133.5.4.1, the FWID
    its one SHA-384 entry), or Blackwell's TCG DiceTcbInfo (2.23.133.5.4.1.1, ``fwids[0]``, the
    entry nvtrust and trustee compare; later entries are other layers)."""
    for oid in (TCB_INFO_OID, DICE_TCB_INFO_OID):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        if not isinstance(ext, x509.UnrecognizedExtension):
            return None
        der = ext.value
        return _dice_fwid(der) if oid == DICE_TCB_INFO_OID else _hopper_fwid(der)
    return None


def _hopper_fwid(der: bytes) -> bytes | None:
    # An FWID is SEQUENCE { OID sha384, OCTET STRING (48) }: its DER is fixed, so find it.
    marker = _SHA384_OID_DER + b"\x04\x30"
    at = der.find(marker)
    if at < 2 or der.find(marker, at + 1) != -1 or der[at - 2:at] != b"\x30\x3d":
        return None
    value = der[at + len(marker):at + len(marker) + 48]
    return value if len(value) == 48 else None


def _tlv(data: bytes, at: int) -> tuple[int, bytes, int] | None:
    """One DER TLV at ``at``: (tag, value, offset after it), or None if it does not fit."""
    if at + 2 > len(data):
        return None
    tag, size, at = data[at], data[at + 1], at + 2
    if size & 0x80:
        n = size & 0x7F
        if n == 0 or n > 3 or at + n > len(data):
            return None
        size, at = int.from_bytes(data[at:at + n], "big"), at + n
    if at + size > len(data):
        return None
    return tag, data[at:at + size], at + size


def _dice_fwid(der: bytes) -> bytes | None:
    """``fwids[0]`` of a DiceTcbInfo: SEQUENCE { …, [6] IMPLICIT SEQUENCE OF FWID, … } with
    FWID ::= SEQUENCE { hashAlg OID, digest OCTET STRING }; only a SHA-384 digest counts."""
    outer = _tlv(der, 0)
    if outer is None or outer[0] != 0x30 or outer[2] != len(der):
        return None
    body, at = outer[1], 0
    while at < len(body):
        field = _tlv(body, at)
        if field is None:
            return None
        tag, value, at = field
        if tag != 0xA6:  # [6] constructed: fwids
            continue
        first = _tlv(value, 0)
        if first is None or first[0] != 0x30:
            return None
        alg = _tlv(first[1], 0)
        digest = _tlv(first[1], alg[2]) if alg is not None else None
        if alg is None or digest is None or alg[0] != 0x06 or digest[0] != 0x04:
            return None
        if b"\x06" + bytes([len(alg[1])]) + alg[1] != _SHA384_OID_DER or len(digest[1]) != 48:
            return None
        return digest[1]
    return None


# The chip prefix NVIDIA's device certificates name (leaf "GH100 A01 GSP FMC LF") and the
# architecture the nvidia_payload's ``arch`` names for it.
_CHIP_ARCH = {"GH": "HOPPER", "GB": "BLACKWELL"}


def _chip(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value.split()[0] if isinstance(value, str) and value.split() else None


def _arch_check(cl: CheckList, name: str, arch: str, leaf: x509.Certificate) -> None:
    """The payload's ``arch`` label against the chip the (verified) device chain names: the
    label chooses reference values, so H100 evidence labelled BLACKWELL is refused."""
    chip = _chip(leaf)
    actual = _CHIP_ARCH.get(chip[:2].upper()) if chip else None
    if actual is None:
        cl.passed(name, f"payload arch {arch}: not compared, the device certificate names chip "
                        f"{chip or 'none'}, which teegate maps to no architecture")
    else:
        ok = arch.upper() == actual
        cl.add(name, ok, f"payload arch {arch} matches the {chip} the device chain names" if ok
               else f"the payload says arch {arch}, but the device chain names a {chip} "
                    f"({actual})")


def _device_id(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for name in san.get_values_for_type(x509.OtherName):
        if name.type_id == NVIDIA_SAN_OID and len(name.value) > 2 and name.value[0] == 0x0C:
            return name.value[2:].decode("utf-8", "replace")
    return None


def _subject_serial(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    if not attrs:
        return None
    value = attrs[0].value
    return (value if isinstance(value, str) else value.decode("ascii", "replace")).lower()


def _spdm_signature_ok(key: ec.EllipticCurvePublicKey, signed: bytes, signature: bytes) -> bool:
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    if r <= 0 or s <= 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        return False
    return True


def _nonce_check(cl: CheckList, name: str, ev: SpdmEvidence, nonce: bytes | None,
                 policy: Policy) -> None:
    got = ev.request_nonce
    if nonce is None:
        if policy.binding.require_nonce:
            cl.failed(name, "no nonce was given: the GPU evidence's freshness cannot be checked")
        else:
            cl.passed(name, f"not checked (no nonce given, offline audit); evidence nonce "
                            f"{got.hex()}")
        return
    if len(nonce) != NONCE_SIZE or not hmac.compare_digest(got, nonce):
        cl.failed(name, f"the SPDM request nonce {got.hex()} is not the nonce we sent "
                        f"{nonce.hex()}")
    elif is_sample_nonce(nonce) and policy.binding.require_nonce:
        cl.failed(name, f"nonce {nonce.hex()[:16]}… is a known constant sample nonce: this "
                        "evidence was not produced for a fresh request")
    else:
        sample = " (a published sample nonce; accepted for offline audit only)" if (
            is_sample_nonce(nonce)) else ""
        cl.passed(name, f"the SPDM request nonce equals our nonce {nonce.hex()}{sample}")


def _version_check(cl: CheckList, name: str, what: str, value: str | None,
                   allowed: frozenset[str]) -> None:
    if value is None:
        cl.failed(name, f"the evidence's opaque data carries no {what}")
    elif not allowed:
        cl.passed(name, f"{what} {value} (policy allows any)")
    elif value.lower() in {a.lower() for a in allowed}:
        cl.passed(name, f"{what} {value} is allowed by the policy")
    else:
        cl.failed(name, f"{what} {value} is not in the policy's allowed {sorted(allowed)}")


def _rim_checks(cl: CheckList, p: str, ev: SpdmEvidence, rims: Sequence[bytes | Rim],
                policy: Policy, now: int) -> tuple[str, tuple[int | None, int | None]]:
    """RIM checks and the comparison's outcome for the verdict's ``rim_comparison``:
    "compared", "partly compared", "not compared" or "failed"."""
    parsed = [r if isinstance(r, Rim) else parse_rim(r) for r in rims]
    chosen = select_rims(parsed, driver=ev.driver_version, vbios=ev.vbios_version)
    bounds: list[tuple[int | None, int | None]] = []
    for kind in ("driver", "vbios"):
        rim = chosen.get(kind)
        if rim is None:
            continue
        result = verify_rim(rim, policy=policy, now=now)
        cl.add(f"{p}.{kind}_rim", result.ok, result.detail)
        if not result.ok:
            del chosen[kind]  # golden values from an unverified RIM are not compared
        if result.chain is not None and result.chain.ok:
            bounds.append((result.chain.not_before, result.chain.not_after))
            if result.chain.development:
                cl.passed(f"{p}.{kind}_rim.development_root",
                          f"the {kind} RIM rests on a development RIM root from the policy")
    missing = [k for k in ("driver", "vbios") if k not in chosen]
    if not chosen and len(missing) == 2 and cl.checks and any(
            c.name.endswith("_rim") and not c.ok for c in cl.checks):
        cl.failed(f"{p}.measurements", "measurements were not compared: the matching RIMs "
                                       "do not verify")
        return "failed", (None, None)
    runtime = {b.index: b.value for b in ev.blocks}
    status = "not compared"
    if chosen:
        ok, detail = compare(runtime, chosen)
        status = "compared" if ok else "failed"
        if ok and missing:
            detail += (f"; no verified {' or '.join(missing)} RIM was supplied, so those "
                       "were not compared")
            ok = not policy.gpu.require_rim
            status = "partly compared"
        cl.add(f"{p}.measurements", ok, detail)
    else:
        note = (f"{len(ev.blocks)} measurements were NOT compared with reference values: no "
                f"RIM for driver {ev.driver_version} / VBIOS {ev.vbios_version} was supplied")
        if policy.gpu.require_rim:
            cl.failed(f"{p}.measurements", note + " and the policy requires RIM comparison")
        else:
            cl.passed(f"{p}.measurements", note)
    return status, (window(*bounds) if bounds else (None, None))


@malformed("the GPU certificate chain")
def load_device_chain(cert_chain: bytes | str) -> tuple[x509.Certificate, ...]:
    """A GPU's device chain, leaf first, from PEM text or base64(PEM)."""
    if isinstance(cert_chain, (bytes, bytearray)) and b"-----BEGIN" in cert_chain:
        return load_pem_chain(bytes(cert_chain))
    if isinstance(cert_chain, (str, bytes, bytearray)):
        text = cert_chain if isinstance(cert_chain, str) else bytes(cert_chain).decode(
            "ascii", "replace")
        return load_pem_chain(_decode_certificate(text, "GPU certificate chain"))
    raise EvidenceError("GPU certificate chain must be PEM text or base64(PEM)")


def device_chains(nvidia_payload: str | Mapping[str, Any]
                  ) -> list[tuple[x509.Certificate, ...]]:
    """Every GPU's device chain in a provider's ``nvidia_payload``: what the collateral edge
    asks NVIDIA's OCSP responder about."""
    return [load_device_chain(g.certificate) for g in parse_nvidia_payload(nvidia_payload).gpus]


def rim_ids(evidence: SpdmEvidence, arch: str | None = None) -> list[str]:
    """The NVIDIA RIM service ids of this GPU's driver and VBIOS reference measurements
    (``NV_GPU_DRIVER_GH100_<driver>``, ``NV_GPU_VBIOS_<project>_<SKU>_<chip SKU>_<VBIOS>``);
    none for what the evidence does not name. Driver RIMs are published for Hopper only."""
    ids = []
    if evidence.driver_version and (arch or "HOPPER").upper() == "HOPPER":
        ids.append(f"NV_GPU_DRIVER_GH100_{evidence.driver_version}")
    parts = (evidence.project, evidence.project_sku, evidence.chip_sku, evidence.vbios_version)
    if all(parts):
        project, sku, chip, vbios = (str(x).strip().upper() for x in parts)
        ids.append(f"NV_GPU_VBIOS_{project}_{sku}_{chip}_{vbios.replace('.', '')}")
    return ids


def payload_rim_ids(nvidia_payload: str | Mapping[str, Any]) -> list[str]:
    """Every RIM id the GPUs of a provider's ``nvidia_payload`` need, each once."""
    payload = parse_nvidia_payload(nvidia_payload)
    ids: dict[str, None] = {}
    for g in payload.gpus:
        ids.update(dict.fromkeys(rim_ids(parse_spdm_evidence(decode_evidence(g.evidence)),
                                         payload.arch)))
    return list(ids)


@malformed("the GPU evidence or its certificate chain")
def verify_gpu_evidence(
    evidence: bytes | str,
    cert_chain: bytes | str,
    *,
    nonce: bytes | None,
    policy: Policy,
    now: int,
    index: int = 0,
    rims: Sequence[bytes | Rim] = (),
    ocsp: Mapping[str, OcspStatus] | None = None,
    arch: str | None = None,
) -> Verdict:
    """Verify one GPU's SPDM evidence and device chain; ``rims`` are candidate driver/VBIOS
    RIM XML documents (those matching the evidence's versions are used). ``evidence`` may be
    raw SPDM bytes, hex or base64; ``cert_chain`` PEM (leaf first) or base64 of it.

    ``ocsp``: verified OCSP answers for the device chain by certificate fingerprint
    (``gpu_ocsp.certificate_key``), None when none were fetched. ``arch``: the architecture
    the payload claims, checked against the chip the device chain names.

    Malformed evidence, chain or RIMs raise ``EvidenceError``; every judgement is a check
    named ``gpu.<index>.…``.
    """
    p = f"gpu.{index}"
    ev = parse_spdm_evidence(decode_evidence(evidence))
    certs = load_device_chain(cert_chain)
    cl = CheckList()
    dev = development_roots(policy.roots.nvidia) if policy.roots.nvidia else ()
    chain = verify_chain(certs, pinned=pinned_root(DEVICE_ROOT_FILE), development=dev,
                         now=now, what="device chain")
    cl.add(f"{p}.chain", chain.ok, chain.detail)
    if chain.ok:
        if chain.development:
            cl.passed(f"{p}.development_root",
                      "the device chain ends at a development root from the policy")
        cl.add(f"{p}.cert_validity", chain.validity_ok, chain.validity_detail)
    ocsp_window = revocation_check(cl, p, certs, ocsp, policy, now) if chain.ok else (
        None, None)
    leaf = certs[0]
    key = p384_key(leaf)
    if key is None:
        cl.failed(f"{p}.signature", "the leaf certificate has no ECDSA P-384 key")
    elif _spdm_signature_ok(key, ev.signed, ev.signature):
        cl.passed(f"{p}.signature", f"SPDM measurements signed by the leaf over "
                                    f"{len(ev.signed)} bytes (request || response)")
    else:
        cl.failed(f"{p}.signature", "the SPDM signature does not verify with the leaf key")
    cert_fwid = _fwid_of(leaf)
    if ev.fwid is None:
        # NVIDIA's verifier (cc_admin_utils.verify_gpu_certificate_chain) skips the compare
        # when the report has no FWID, as older drivers' reports do.
        cl.add(f"{p}.fwid", not policy.gpu.require_fwid,
               "the evidence carries no FWID (older driver): not compared, and the policy "
               "requires one (gpu.require_fwid)" if policy.gpu.require_fwid else
               "not compared: the evidence carries no FWID (older driver), as NVIDIA's "
               "verifier allows; gpu.require_fwid refuses such evidence")
    elif cert_fwid is None:
        cl.failed(f"{p}.fwid", "the evidence carries an FWID but the leaf certificate none")
    else:
        cl.add(f"{p}.fwid", hmac.compare_digest(ev.fwid, cert_fwid),
               "the evidence FWID equals the leaf certificate's" if ev.fwid == cert_fwid else
               "the evidence FWID differs from the leaf certificate's TcbInfo FWID")
    _nonce_check(cl, f"{p}.nonce", ev, nonce, policy)
    if arch is not None:
        _arch_check(cl, f"{p}.arch", arch, leaf)
    rim_status, rim_window = _rim_checks(cl, p, ev, rims, policy, now)
    _version_check(cl, f"{p}.driver_version", "driver version", ev.driver_version,
                   policy.gpu.driver_versions)
    _version_check(cl, f"{p}.vbios_version", "VBIOS version", ev.vbios_version,
                   policy.gpu.vbios_versions)
    measurements: dict[str, str] = {f"block_{b.index:02d}": b.value.hex() for b in ev.blocks}
    for k, v in (("driver_version", ev.driver_version), ("vbios_version", ev.vbios_version)):
        if v is not None:
            measurements[k] = v
    measurements["rim_comparison"] = rim_status
    identity = {
        "gpu_index": str(index),
        "leaf_serial": format(leaf.serial_number, "x"),
        "subject_serial": _subject_serial(leaf),
        "device_id": _device_id(leaf),
        "fwid": ev.fwid.hex() if ev.fwid is not None else None,
        "project": ev.project,
        "project_sku": ev.project_sku,
        "chip_sku": ev.chip_sku,
        "responder_nonce": ev.responder_nonce.hex(),
        # The nonce the GPU answered; ``nonce`` below is the caller's, as in every verdict.
        "spdm_nonce": ev.request_nonce.hex(),
    }
    not_before, not_after = window((chain.not_before, chain.not_after), rim_window,
                                   ocsp_window)
    return Verdict(
        tee=TEE,
        checks=cl.checks,
        measurements=measurements,
        identity={k: v for k, v in identity.items() if v is not None},
        nonce=nonce.hex() if nonce is not None else None,
        not_before=not_before,
        not_after=not_after,
    )


# --- a provider's nvidia_payload ----------------------------------------------------------


def _distinct_check(gpus: Sequence[GpuEvidence]) -> Check:
    """One device's evidence listed twice must not count as two GPUs: leaf keys differ."""
    seen: dict[bytes, int] = {}
    for i, g in enumerate(gpus):
        try:
            leaf = load_pem_chain(g.certificate)[0]
            key = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        except (EvidenceError, ValueError, TypeError, UnsupportedAlgorithm):
            continue  # the GPU's own chain check reports it
        if key in seen:
            return Check("gpu.distinct", False, f"GPUs {seen[key]} and {i} are the same device "
                                                "(same leaf key): evidence listed twice")
        seen[key] = i
    return Check("gpu.distinct", True, f"{len(gpus)} distinct device key(s)")


@malformed("the nvidia_payload")
def appraise_gpus(
    nvidia_payload: str | Mapping[str, Any] | None,
    *,
    nonce: bytes | None,
    policy: Policy,
    now: int,
    rims: Sequence[bytes | Rim] = (),
    cpu_binds: Callable[[bytes], bool] | None = None,
    ocsp: Mapping[str, OcspStatus] | None = None,
    bare: bool = False,
) -> tuple[list[Check], tuple[Verdict, ...]]:
    """Apply ``policy.gpu.mode`` to a provider's ``nvidia_payload`` and verify every GPU.

    Returns top-level checks (``gpu.required`` / ``gpu.forbidden``, ``gpu.present``,
    ``gpu.nonce_binding``, ``gpu.distinct``) and one verdict per GPU. ``nonce`` is the
    caller's nonce, the one the CPU quote's report_data carries, so GPU and CPU evidence
    answer the same request. Without one (an offline look at a captured report),
    ``cpu_binds`` says whether the CPU quote's report_data binds a given nonce: GPU and CPU
    must still answer the same request, even if its freshness cannot be judged. ``bare``: the
    payload came without CPU evidence, so the nonce is compared with the caller's alone.
    """
    mode = policy.gpu.mode
    if nvidia_payload is None or nvidia_payload == "":
        missing = []
        if mode == "required":
            missing.append(Check("gpu.required", False,
                                 "the policy requires GPU evidence but the report has none"))
        if policy.gpu.expected_count:
            missing.append(Check("gpu.count", False,
                                 f"the report carries no GPU evidence, the policy expects "
                                 f"{policy.gpu.expected_count} GPU(s) (gpu.expected_count)"))
        return missing, ()
    if mode == "forbidden":
        return [Check("gpu.forbidden", False,
                      "the report carries GPU evidence but the policy forbids GPUs")], ()
    payload = parse_nvidia_payload(nvidia_payload)
    checks = [Check("gpu.present", True,
                    f"{len(payload.gpus)} GPU(s), arch {payload.arch or 'unknown'}")]
    if payload.nonce is None:
        checks.append(Check("gpu.nonce_binding", False, "the nvidia_payload names no nonce"))
    elif nonce is None and cpu_binds is not None:
        same = cpu_binds(payload.nonce)
        checks.append(Check(
            "gpu.nonce_binding", same,
            "the GPU payload answers the nonce the CPU quote binds (no caller nonce: its "
            "freshness is not judged)" if same else
            f"the GPU payload's nonce {payload.nonce.hex()} is not the one the CPU quote's "
            "report_data binds: GPU and CPU evidence answer different requests"))
    elif nonce is None:
        checks.append(Check(
            "gpu.nonce_binding", not policy.binding.require_nonce,
            "no caller nonce: the GPU payload's freshness cannot be judged (give the nonce "
            "you sent)" if bare else
            "no caller nonce: the GPU evidence cannot be bound to the CPU quote"))
    else:
        bound = hmac.compare_digest(payload.nonce, nonce)
        checks.append(Check(
            "gpu.nonce_binding", bound,
            ("the GPU payload answers our nonce" if bare else
             "the GPU payload answers the nonce the CPU quote binds") if bound else
            f"the GPU payload's nonce {payload.nonce.hex()} is not ours ({nonce.hex()})"))
    checks.append(_distinct_check(payload.gpus))
    want = policy.gpu.expected_count
    if want is not None:
        checks.append(Check("gpu.count", len(payload.gpus) == want,
                            f"{len(payload.gpus)} GPU(s), as the policy expects" if
                            len(payload.gpus) == want else
                            f"the report carries {len(payload.gpus)} GPU(s), the policy expects "
                            f"{want} (gpu.expected_count)"))
    parsed_rims = [r if isinstance(r, Rim) else parse_rim(r) for r in rims]
    # Each GPU's SPDM nonce must be the caller's; without one (offline audit, where
    # gpu.nonce_binding has already decided) at least the payload's own.
    gpu_nonce = nonce if nonce is not None else payload.nonce
    verdicts = tuple(
        verify_gpu_evidence(g.evidence, g.certificate, nonce=gpu_nonce, policy=policy,
                            now=now, index=i, rims=parsed_rims, ocsp=ocsp, arch=payload.arch)
        for i, g in enumerate(payload.gpus)
    )
    return checks, verdicts

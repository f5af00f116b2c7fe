"""Verify AMD SEV-SNP attestation reports: parse, verify the AMD chain and signature, validate.

Order: the ARK must be a pinned AMD root (or a development root named in the policy), ARK ->
ASK/ASVK -> VCEK/VLEK signatures (RSA-PSS SHA-384), every certificate valid at ``now``, the
report's ECDSA P-384 signature over bytes [0, 0x2A0), the VCEK's TCB and hwID extensions equal
the report's REPORTED_TCB and CHIP_ID, then the policy. Every step is a named check, so a
rejection always says what failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.attest.snp_certs import (
    AmdCert,
    KeyExtensions,
    SnpCertificates,
    amd_signed,
    any_signed,
    crl_signed_by,
    development_roots,
    key_extensions,
    load_certificates,
    load_crl,
    pinned_roots,
)
from teegate.attest.snp_report import (
    PRODUCTS,
    REPORT_SIZE,
    SIGNED_SIZE,
    GuestPolicy,
    SnpReport,
    TcbVersion,
    load_report,
    parse_report,
    split_report,
    trailing_note,
)
from teegate.attest.verdict import CheckList, Verdict

__all__ = [
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "GuestPolicy",
    "SnpCertificates",
    "SnpReport",
    "TcbVersion",
    "load_certificates",
    "load_report",
    "parse_report",
    "verify_report",
]

TEE = "sev-snp"
_ECDSA = ec.ECDSA(hashes.SHA384())


@dataclass(frozen=True, slots=True)
class _Chain:
    leaf: AmdCert
    intermediate: AmdCert
    root: AmdCert
    development: bool


def _product_of_cert(leaf: AmdCert, ext: KeyExtensions) -> str | None:
    if ext.product_name:
        name = ext.product_name.split("-", 1)[0]
        if name in PRODUCTS:
            return name
    issuer_cn = leaf.cert.issuer.rfc4514_string()
    for p in PRODUCTS:
        if p in issuer_cn:
            return p
    return None


def _supplied_note(bundle: SnpCertificates, chain: _Chain) -> str:
    """Say which supplied chain certificates were not used: the pinned roots decide, so an
    ARK or ASK that came with the evidence is only ever a copy, never the trust anchor."""
    notes = []
    ark = bundle.ark
    if ark is not None:
        notes.append("the supplied ARK is the same certificate" if ark == chain.root else
                     f"the supplied {ark.describe()} was ignored: the pinned root decided")
    inter = bundle.get("ask" if chain.leaf.role == "vcek" else "asvk")
    if inter is not None and inter != chain.intermediate:
        notes.append(f"the supplied {inter.describe()} was ignored: the pinned one was used")
    return f"; {'; '.join(notes)}" if notes else ""


def _find_chain(
    leaf: AmdCert, bundle: SnpCertificates, product: str | None, dev: tuple[AmdCert, ...]
) -> tuple[_Chain | None, str, str]:
    """Return (chain, failure-check-name, reason) for the leaf; chain None on failure."""
    inter_role = "ask" if leaf.role == "vcek" else "asvk"
    pinned = pinned_roots().get(product) if product else None
    roots: list[tuple[AmdCert, bool]] = []
    if pinned:
        roots.append((pinned.ark, False))
    roots += [(c, True) for c in dev if c.self_signed]
    inters: list[AmdCert] = []
    for c in (bundle.get(inter_role), pinned and getattr(pinned, inter_role), *dev):
        if isinstance(c, AmdCert) and not c.self_signed and c not in inters:
            inters.append(c)
    issuers = [i for i in inters if i.cert.subject == leaf.cert.issuer]
    label = inter_role.upper()
    if not issuers:
        return None, "snp.vcek_chain", (
            f"no {label} named {leaf.cert.issuer.rfc4514_string()!r} for product "
            f"{product or 'unknown'}: supply it with the certificates"
        )
    reasons: list[str] = []
    unknown_root = ""
    for inter in issuers:
        candidates = [(r, d) for r, d in roots if r.cert.subject == inter.cert.issuer]
        if not candidates:
            unknown_root = (
                f"chain ends at {inter.cert.issuer.rfc4514_string()!r}, which is neither the "
                f"pinned AMD ARK for {product or 'an unknown product'} nor a development root "
                "in policy.roots.amd"
            )
            continue
        for root, is_dev in candidates:
            sig = any_signed if is_dev else amd_signed
            if not sig(root, root):
                reasons.append(f"{root.describe()} self-signature does not verify")
            elif not sig(inter, root):
                reasons.append(f"{inter.describe()} is not signed by {root.describe()}")
            elif not sig(leaf, inter):
                reasons.append(
                    f"{leaf.role.upper()} signature by {inter.describe()} does not verify"
                    + ("" if is_dev else " (AMD requires RSA-PSS SHA-384, salt 48)")
                )
            else:
                return _Chain(leaf, inter, root, is_dev), "", ""
    supplied_ark = bundle.ark
    if supplied_ark is not None and all(supplied_ark != r for r, _ in roots):
        return None, "snp.ark", (
            f"supplied {supplied_ark.describe()} is neither the pinned AMD ARK for "
            f"{product or 'an unknown product'} nor a development root in policy.roots.amd"
        )
    if reasons:
        return None, "snp.vcek_chain", "; ".join(reasons)
    return None, "snp.ark", unknown_root


@lru_cache(maxsize=512)
def _ec_key(c: AmdCert) -> ec.EllipticCurvePublicKey | None:
    key = c.cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    return None


def _report_signature(report: SnpReport, leaf: AmdCert) -> tuple[bool, str]:
    key = _ec_key(leaf)
    if key is None:
        return False, f"{leaf.describe()} key is not ECDSA P-384"
    if any(report.signature_r[48:]) or any(report.signature_s[48:]):
        return False, "signature R/S are not zero-extended 48-byte values"
    r = int.from_bytes(report.signature_r[:48], "little")
    s = int.from_bytes(report.signature_s[:48], "little")
    if not (r and s):
        return False, "signature is zero (MASK_CHIP_KEY or unsigned report)"
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, _ECDSA)
    except InvalidSignature:
        return False, f"ECDSA P-384 signature over bytes 0..0x2A0 does not verify with the " \
            f"{leaf.role.upper()}"
    return True, f"ECDSA P-384/SHA-384 by the {leaf.role.upper()} verifies"


def _hexset_check(cl: CheckList, name: str, value: bytes, allowed: frozenset[str]) -> None:
    if not allowed:
        return
    v = value.hex()
    if v in allowed:
        cl.passed(name, f"{v} is allowed by policy")
    else:
        cl.failed(name, f"{v} is not among the {len(allowed)} value(s) the policy allows")


def _policy_checks(cl: CheckList, report: SnpReport, policy: Policy) -> None:
    sp = policy.snp
    if report.policy.debug and not policy.tcb.allow_debug:
        cl.failed("snp.debug", "guest POLICY.DEBUG is set: the host can read guest memory")
    else:
        cl.passed("snp.debug", "debug allowed by policy" if report.policy.debug
                  else "guest POLICY.DEBUG is clear")
    # go-sev-guest rejects MIGRATE_MA unless the caller opts in; teegate's policy has no
    # such option, so a guest that may be migrated by an agent is never accepted.
    if report.policy.migrate_ma:
        cl.failed("snp.migrate_ma", "guest POLICY.MIGRATE_MA is set: a migration agent may "
                  "move the guest and its memory off the attested platform")
    else:
        cl.passed("snp.migrate_ma", "guest POLICY allows no migration agent")
    if sp.measurement:
        _hexset_check(cl, "snp.measurement", report.measurement, sp.measurement)
    else:
        cl.passed("snp.measurement", f"{report.measurement.hex()} (policy pins no measurement)")
    _hexset_check(cl, "snp.host_data", report.host_data, sp.host_data)
    _hexset_check(cl, "snp.id_key_digest", report.id_key_digest, sp.id_key_digest)
    if sp.vmpl:
        cl.add("snp.vmpl", report.vmpl in sp.vmpl,
               f"VMPL {report.vmpl}; policy allows {sorted(sp.vmpl)}")
    if sp.min_guest_svn:
        cl.add("snp.guest_svn", report.guest_svn >= sp.min_guest_svn,
               f"GUEST_SVN {report.guest_svn}; policy minimum {sp.min_guest_svn}")
    if sp.min_tcb:
        parts = report.reported_tcb.parts()
        low = []
        for comp, floor in sorted(sp.min_tcb.items()):
            have = parts.get(comp)
            if have is None or have < floor:
                low.append(f"{comp} {'absent' if have is None else have} < {floor}")
        cl.add("snp.min_tcb", not low,
               "; ".join(low) if low else f"REPORTED_TCB {report.reported_tcb} meets the floor")


def _key_checks(cl: CheckList, report: SnpReport, leaf: AmdCert, ext: KeyExtensions) -> None:
    want = report.reported_tcb.parts()
    diffs = [f"{k}: report {v}, certificate {ext.tcb.get(k, 'absent')}"
             for k, v in want.items() if ext.tcb.get(k) != v]
    cl.add("snp.tcb", not diffs, "; ".join(diffs) if diffs else
           f"{leaf.role.upper()} TCB extensions equal REPORTED_TCB ({report.reported_tcb})")
    if leaf.role == "vlek":
        cl.passed("snp.chip_id", f"VLEK carries no hwID; the CSP {ext.csp_id or '?'} "
                  "vouches for the chip")
    elif ext.hwid is None:
        cl.failed("snp.chip_id", "VCEK has no hwID extension")
    elif report.chip_id_masked:
        cl.failed("snp.chip_id", "report CHIP_ID is masked (all zero): cannot match the VCEK")
    else:
        used = report.chip_id_used
        cl.add("snp.chip_id", ext.hwid == used,
               f"CHIP_ID {used.hex()[:16]}… matches the VCEK hwID" if ext.hwid == used else
               f"CHIP_ID {used.hex()[:16]}… differs from the VCEK hwID {ext.hwid.hex()[:16]}…")


@malformed("the SEV-SNP report or its certificates")
def verify_report(
    raw: bytes,
    certs: bytes | SnpCertificates | None,
    *,
    policy: Policy,
    now: int,
    product: str | None = None,
    crl: bytes | None = None,
) -> Verdict:
    """Verify an SEV-SNP report (binary or hex) with its VCEK/VLEK (+ optional ASK/ARK).

    Malformed report, certificates or CRL raise ``EvidenceError``; everything else becomes a
    named check in the returned verdict. ``product`` is needed only for v2 reports whose
    certificate does not name one. ``crl``: AMD's CRL for the product (DER or PEM), checked
    for the chain's intermediate and leaf (``snp.revocation``).
    """
    body, extra = split_report(load_report(raw))
    report = parse_report(body, product=product)
    bundle = certs if isinstance(certs, SnpCertificates) else (
        load_certificates(certs) if certs else SnpCertificates())
    dev = development_roots(tuple(policy.roots.amd)) if policy.roots.amd else ()
    cl = CheckList()
    note = trailing_note(extra)
    if note:
        cl.passed("snp.trailing_bytes", note)

    kind = report.signing_key
    leaf = bundle.vlek if kind == "vlek" else bundle.vcek
    if kind not in ("vcek", "vlek"):
        cl.failed("snp.signer", f"SIGNER_INFO names signing key {kind!r}, not VCEK or VLEK")
    elif report.mask_chip_key:
        cl.failed("snp.signer", "MASK_CHIP_KEY is set: the report is not signed")
    else:
        cl.passed("snp.signer", f"report signed by the {kind.upper()}")

    ext: KeyExtensions | None = None
    if leaf is None:
        cl.failed("snp.certificates",
                  "VLEK not supplied; it comes with the provider's evidence (give --certs)"
                  if kind == "vlek" else
                  "VCEK not supplied; fetch with --online or give --certs")
    else:
        ext = key_extensions(leaf)
        cl.passed("snp.certificates", f"{leaf.describe()}")

    # Product: CPUID (v3+) or the caller; otherwise the certificate names it.
    cert_product = _product_of_cert(leaf, ext) if leaf and ext else None
    prod = report.product or cert_product
    if prod is None:
        cl.failed("snp.product", "product unknown: v2 report and no certificate naming it")
    elif cert_product and cert_product != prod:
        cl.failed("snp.product", f"report is {prod} but the {kind.upper()} is for {cert_product}")
    elif policy.snp.products and prod not in policy.snp.products:
        cl.failed("snp.product", f"{prod} is not among {sorted(policy.snp.products)}")
    else:
        cl.passed("snp.product", prod)
    if report.product is None and prod is not None:
        report = parse_report(report.raw, product=prod)

    not_before: int | None = None
    not_after: int | None = None
    if leaf is not None and ext is not None:
        chain, fail_name, reason = _find_chain(leaf, bundle, prod, dev)
        if chain is None:
            cl.failed(fail_name, reason)
        else:
            cl.passed("snp.ark", f"{chain.root.describe()} self-signed"
                      + (" (development root from policy)" if chain.development
                         else f", pinned AMD root for {prod}")
                      + _supplied_note(bundle, chain))
            if chain.development:
                cl.passed("snp.development_root",
                          f"chain rests on development root {chain.root.describe()} from "
                          "policy.roots.amd, not on AMD")
            cl.passed("snp.vcek_chain", f"{chain.root.common_name} -> "
                      f"{chain.intermediate.common_name} -> {leaf.common_name} signatures verify")
            used = (chain.root, chain.intermediate, leaf)
            not_before = max(c.not_before for c in used)
            not_after = min(c.not_after for c in used)
            bad = [f"{c.describe()} valid {c.not_before}..{c.not_after}" for c in used
                   if not c.not_before <= now <= c.not_after]
            cl.add("snp.cert_validity", not bad,
                   f"not valid at {now}: " + "; ".join(bad) if bad
                   else f"all certificates valid at {now}")
            _revocation(cl, crl, chain, now, policy)
        if leaf.role != kind:
            cl.failed("snp.report_signature",
                      f"report says {kind.upper()} but the certificate is a {leaf.role.upper()}")
        else:
            cl.add("snp.report_signature", *_report_signature(report, leaf))
        _key_checks(cl, report, leaf, ext)
    else:
        cl.failed("snp.report_signature", "not verified: no signing certificate")
    if policy.snp.require_crl and all(c.name != "snp.revocation" for c in cl.checks):
        cl.failed("snp.revocation", "the policy requires AMD's CRL, and no chain was verified "
                  "to check it against")

    reserved = [f"{a:#x}..{b:#x}" for a, b in report.reserved_nonzero()]
    if report.signer_info >> 5:
        reserved.append(f"SIGNER_INFO bits 5-31 ({report.signer_info:#x})")
    cl.add("snp.reserved", not reserved,
           "must-be-zero fields are not zero: " + ", ".join(reserved)
           if reserved else "reserved fields are zero")
    _policy_checks(cl, report, policy)

    return Verdict(
        tee=TEE,
        checks=cl.checks,
        measurements=_measurements(report),
        identity=_identity(report, prod, kind, ext),
        report_data=report.report_data.hex(),
        not_before=not_before,
        not_after=not_after,
    )


def _revocation(cl: CheckList, crl_data: bytes | None, chain: _Chain, now: int,
                policy: Policy) -> None:
    """``snp.revocation``: the ARK's CRL lists neither the ASK/ASVK nor the VCEK/VLEK."""
    if crl_data is None:
        if policy.snp.require_crl:
            cl.failed("snp.revocation", "the policy requires AMD's CRL (fetch it with "
                      "--online; the gateway always does)")
        return
    crl = load_crl(crl_data)
    if not crl_signed_by(crl, chain.root):
        cl.failed("snp.revocation", f"the CRL is not signed by {chain.root.describe()}")
        return
    this = int(crl.last_update_utc.timestamp())
    nxt = crl.next_update_utc
    if not this <= now or nxt is None or int(nxt.timestamp()) < now:
        cl.failed("snp.revocation", f"the CRL is not current at {now} (thisUpdate {this}, "
                  f"nextUpdate {int(nxt.timestamp()) if nxt else 'none'})")
        return
    revoked = [c.describe() for c in (chain.intermediate, chain.leaf)
               if crl.get_revoked_certificate_by_serial_number(c.cert.serial_number)]
    cl.add("snp.revocation", not revoked,
           "revoked by AMD: " + ", ".join(revoked) if revoked else
           f"{chain.intermediate.common_name} and {chain.leaf.common_name} are not on "
           f"{chain.root.common_name}'s CRL")


def _measurements(r: SnpReport) -> dict[str, str]:
    return {
        "measurement": r.measurement.hex(),
        "host_data": r.host_data.hex(),
        "id_key_digest": r.id_key_digest.hex(),
        "author_key_digest": r.author_key_digest.hex(),
        "family_id": r.family_id.hex(),
        "image_id": r.image_id.hex(),
        "report_data": r.report_data.hex(),
    }


def _identity(
    r: SnpReport, product: str | None, signer: str, ext: KeyExtensions | None
) -> dict[str, str]:
    out = {
        "product": product or "unknown",
        "chip_id": r.chip_id_used.hex(),
        "signer": signer,
        "version": str(r.version),
        "vmpl": str(r.vmpl),
        "guest_svn": str(r.guest_svn),
        "policy": f"{r.policy.raw:x}",
        "reported_tcb": r.reported_tcb.raw.hex(),
        "current_tcb": r.current_tcb.raw.hex(),
    }
    for k, v in r.reported_tcb.parts().items():
        out[f"reported_tcb.{k}"] = str(v)
    if ext is not None and ext.csp_id:
        out["csp_id"] = ext.csp_id
    return out

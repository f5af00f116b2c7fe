"""TDX TCB status from collateral dcap-qvl has already verified, and dcap-qvl's TD-attribute rules.

dcap-qvl refuses a TD without SEPT_VE_DISABLE, or with a service TD bound, after every signature,
chain and TCB-level check has passed, and with no switch in its Python API; its error then
carries no TCB status. A policy may admit such TDs knowingly (every Azure TDX CVM lacks
SEPT_VE_DISABLE; Alibaba binds service TDs), so teegate needs the status dcap-qvl would have
reported. This module recomputes it as dcap-qvl's ``match_platform_tcb``,
``match_tdx_module_identity``, ``match_qe_tcb_level`` and ``TcbStatusWithAdvisory::merge`` do
(``src/verify.rs``, ``src/tcb_info.rs`` at 9bffe30), over the TCB info and QE identity text whose
signatures dcap-qvl verified in the same call. It is used for nothing else, and the tests check
it against dcap-qvl on every vector dcap-qvl itself accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from teegate.attest.tdx_quote import Quote, TdReport
from teegate.errors import EvidenceError

# dcap-qvl's TcbStatus::severity: a merge keeps the worse status.
_SEVERITY = {
    "UpToDate": 0, "SWHardeningNeeded": 1, "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3, "OutOfDate": 4,
    "OutOfDateConfigurationNeeded": 5, "Revoked": 6,
}


@dataclass(frozen=True, slots=True)
class TcbResult:
    status: str
    advisories: tuple[str, ...]

    def merge(self, other: TcbResult) -> TcbResult:
        worse = other.status if _SEVERITY[other.status] > _SEVERITY[self.status] else self.status
        ids = list(self.advisories)
        ids += [a for a in other.advisories if a not in ids]
        return TcbResult(worse, tuple(ids))


def attribute_problems(td: TdReport) -> dict[str, str]:
    """dcap-qvl's ``validate_attrs`` rules, each by name: ``reserved``, ``debug``,
    ``sept_ve_disable``, ``service_td``. Empty when dcap-qvl would accept the attributes."""
    a = td.td_attributes
    out: dict[str, str] = {}
    reserved_lower = ((a[3] & 0x0F) << 16) | (a[2] << 8) | a[1]
    reserved_other = (a[7] << 24) | (a[6] << 16) | (a[5] << 8) | (a[4] & 0x7F)
    if a[0] & 0xFE or reserved_lower or a[3] & 0x20 or reserved_other:
        out["reserved"] = f"reserved TD attribute bits are set ({a.hex()})"
    if a[0] & 0x01:
        out["debug"] = "DEBUG is set: the host can read the TD's memory and CPU state"
    if not a[3] & 0x10:
        out["sept_ve_disable"] = ("SEPT_VE_DISABLE is not set: the TD takes #VE on pending "
                                  "pages and must defend itself against the host's EPT changes")
    if td.mrservicetd is not None and any(td.mrservicetd):
        out["service_td"] = (f"MRSERVICETD is {td.mrservicetd.hex()[:16]}…, not zero: a service "
                             "TD (migration or vTPM TD, say) is bound to this TD")
    return out


def _svns(components: Any, what: str) -> list[int]:
    if not isinstance(components, list):
        raise EvidenceError(f"TCB info {what} is not a list")
    out = []
    for c in components:
        svn = c.get("svn") if isinstance(c, Mapping) else None
        if not isinstance(svn, int) or isinstance(svn, bool):
            raise EvidenceError(f"TCB info {what} has a component without an integer svn")
        out.append(svn)
    return out


def _level(level: Any) -> tuple[list[int], int, list[int], TcbResult]:
    if not isinstance(level, Mapping) or not isinstance(level.get("tcb"), Mapping):
        raise EvidenceError("TCB info level is not an object with a tcb")
    tcb = level["tcb"]
    status = level.get("tcbStatus")
    if status not in _SEVERITY:
        raise EvidenceError(f"TCB info level has unknown status {status!r}")
    pce = tcb.get("pcesvn")
    if not isinstance(pce, int):
        raise EvidenceError("TCB info level has no integer pcesvn")
    ids = level.get("advisoryIDs", [])
    return (_svns(tcb.get("sgxtcbcomponents"), "sgxtcbcomponents"), pce,
            _svns(tcb.get("tdxtcbcomponents", []), "tdxtcbcomponents"),
            TcbResult(status, tuple(str(i) for i in ids)))


def _module_status(info: Mapping[str, Any], td: TdReport) -> TcbResult | None:
    isvsvn, version = td.tee_tcb_svn[0], td.tee_tcb_svn[1]
    module = info.get("tdxModule")
    if not isinstance(module, Mapping):
        raise EvidenceError("TDX TCB info has no tdxModule")
    identities = info.get("tdxModuleIdentities") or []
    levels: Sequence[Any] | None = None
    if version > 0 and identities:
        wanted = f"TDX_{version:02X}"
        found = [i for i in identities if isinstance(i, Mapping)
                 and str(i.get("id", "")).upper() == wanted]
        if not found:
            raise EvidenceError(f"no TDX module identity {wanted} in the TCB info")
        module = found[0]
        levels = module.get("tcbLevels") or []
    try:
        signer = bytes.fromhex(module["mrsigner"])
        expected = bytes.fromhex(module["attributes"])
        mask = bytes.fromhex(module["attributesMask"])
    except (KeyError, TypeError, ValueError):
        raise EvidenceError("TDX module identity is malformed") from None
    if signer != td.mrsignerseam:
        raise EvidenceError("TDX module MRSIGNER does not match the TCB info")
    for e, m, actual in zip(expected, mask, td.seam_attributes, strict=False):
        if (e & m) != (actual & m) or actual & ~m & 0xFF:
            raise EvidenceError("TDX module SEAMATTRIBUTES do not match the TCB info")
    if levels is None:
        return None
    for level in levels:
        if not isinstance(level, Mapping):
            continue
        need = level.get("tcb", {}).get("isvsvn") if isinstance(level.get("tcb"), Mapping) else None
        if isinstance(need, int) and isvsvn >= need:
            status = level.get("tcbStatus")
            if status not in _SEVERITY:
                raise EvidenceError(f"TDX module level has unknown status {status!r}")
            return TcbResult(status, tuple(str(i) for i in level.get("advisoryIDs", [])))
    raise EvidenceError(f"TDX module ISVSVN {isvsvn} is below every TDX module TCB level")


def tdx_tcb_status(quote: Quote, info: Mapping[str, Any], qe: Mapping[str, Any],
                   cpu_svn: bytes, pce_svn: int) -> TcbResult:
    """The merged platform, TDX module and QE status dcap-qvl computes for this TD quote.

    ``cpu_svn`` and ``pce_svn`` come from the PCK leaf dcap-qvl verified; ``info`` and ``qe``
    are the (parsed) signed TCB info and QE identity of the same collateral.
    """
    td = quote.td_report
    if td is None:
        raise EvidenceError("TCB status recomputation is for TDX quotes only")
    levels = [_level(lv) for lv in info.get("tcbLevels") or []]
    # canonicalize_tcb_levels: highest SGX components first, then PCE SVN, then TDX components.
    levels.sort(key=lambda lv: (lv[0], lv[1], lv[2]), reverse=True)
    platform: TcbResult | None = None
    for sgx, pce, tdx, result in levels:
        if pce_svn < pce:
            continue
        if len(sgx) != len(cpu_svn) or len(tdx) != len(td.tee_tcb_svn):
            raise EvidenceError("TCB info component count does not match the platform")
        if any(a < b for a, b in zip(cpu_svn, sgx, strict=True)):
            continue
        # With a TDX module version (TEE_TCB_SVN[1] > 0) the module's own SVNs (indices 0, 1)
        # are judged by its module identity below, not by the platform level (Intel QVL;
        # dcap-qvl 0.7.0 agrees on every vector, tests/attest/test_tdx_genuine.py).
        start = 2 if td.tee_tcb_svn[1] > 0 else 0
        if any(a < b for a, b in zip(td.tee_tcb_svn[start:], tdx[start:], strict=True)):
            continue
        platform = result
        module = _module_status(info, td)
        if module is not None:
            platform = platform.merge(module)
        break
    if platform is None:
        raise EvidenceError("no TCB level matches the platform")
    qe_result: TcbResult | None = None
    isv_svn = quote.signature_data.qe_report.isv_svn
    for level in qe.get("tcbLevels") or []:
        tcb = level.get("tcb") if isinstance(level, Mapping) else None
        need = tcb.get("isvsvn") if isinstance(tcb, Mapping) else None
        if isinstance(need, int) and isv_svn >= need:
            status = level.get("tcbStatus")
            if status not in _SEVERITY:
                raise EvidenceError(f"QE identity level has unknown status {status!r}")
            qe_result = TcbResult(status, tuple(str(i) for i in level.get("advisoryIDs", [])))
            break
    if qe_result is None:
        raise EvidenceError(f"QE ISVSVN {isv_svn} is below every QE identity level")
    return platform.merge(qe_result)

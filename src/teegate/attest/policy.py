"""The declarative appraisal policy.

One policy says what evidence teegate accepts: which TCB statuses and advisories, which
measurements, whether debug is allowed, whether a GPU is required, and which roots of trust
besides the pinned vendor roots. Empty sets mean "any value"; the defaults are the production
defaults (UpToDate and SWHardeningNeeded only, no debug, vendor roots only).

Loading is strict: an unknown key or a wrong type stops with a ``ConfigError`` naming the
field, because a typo in a policy must never silently widen what is accepted.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from teegate import safejson
from teegate.errors import ConfigError

DEFAULT_TCB_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded"})
GpuMode = Literal["required", "optional", "forbidden"]
SNP_TCB_FIELDS = ("bootloader", "tee", "snp", "microcode", "fmc")


@dataclass(frozen=True)
class TcbPolicy:
    allowed_statuses: frozenset[str] = DEFAULT_TCB_STATUSES
    rejected_advisories: frozenset[str] = frozenset()
    # Reject collateral issued longer ago than this, in seconds: Intel TCB info, QE identity
    # and PCK CRL (the root CA CRL is reissued about yearly and is not counted). TDX/SGX only.
    max_collateral_age: int | None = None
    # SEV-SNP only: debug TDs and debug SGX enclaves are always refused.
    allow_debug: bool = False


@dataclass(frozen=True)
class TdxPolicy:
    mrtd: frozenset[str] = frozenset()
    rtmr0: frozenset[str] = frozenset()
    rtmr1: frozenset[str] = frozenset()
    rtmr2: frozenset[str] = frozenset()
    rtmr3: frozenset[str] = frozenset()
    mrconfigid: frozenset[str] = frozenset()
    mrseam: frozenset[str] = frozenset()
    # SGX enclaves: allowed MRENCLAVE / MRSIGNER values.
    mrenclave: frozenset[str] = frozenset()
    mrsigner: frozenset[str] = frozenset()
    # TD attributes. Without SEPT_VE_DISABLE the TD must handle #VE on pending pages itself
    # (every Azure TDX CVM runs so); a non-zero MRSERVICETD binds a service TD (Alibaba's
    # migration / vTPM TDs). Debug TDs and reserved attribute bits are always refused.
    require_sept_ve_disable: bool = True
    allow_service_td: bool = False


@dataclass(frozen=True)
class SnpPolicy:
    measurement: frozenset[str] = frozenset()
    host_data: frozenset[str] = frozenset()
    id_key_digest: frozenset[str] = frozenset()
    # Minimum reported TCB per component: bootloader, tee, snp, microcode, fmc (Turin).
    min_tcb: Mapping[str, int] = field(default_factory=dict)
    # Allowed VMPLs; empty means any.
    vmpl: frozenset[int] = frozenset()
    min_guest_svn: int = 0
    # Allowed products ("Milan", "Genoa", "Turin"); empty means any the verifier knows.
    products: frozenset[str] = frozenset()
    # Require AMD's CRL (ASK/ASVK and VCEK/VLEK not revoked). A CRL that is given is always
    # checked; the gateway always fetches one.
    require_crl: bool = False


@dataclass(frozen=True)
class DstackPolicy:
    compose_hashes: frozenset[str] = frozenset()
    app_ids: frozenset[str] = frozenset()
    os_image_hashes: frozenset[str] = frozenset()
    # Require an event log that replays to the quote's RTMRs.
    require_event_log: bool = False
    # Model pins: the container image digests (sha256 hex) the measured compose may pin (every
    # image must be pinned by digest and allowed), and the weights' digests it may publish.
    image_digests: frozenset[str] = frozenset()
    weights_digests: frozenset[str] = frozenset()
    # dstack development OS images (metadata.json is_dev, or listed here) are refused unless
    # allowed: they let the host's operator SSH into the CVM.
    allow_dev_os: bool = False
    dev_os_image_hashes: frozenset[str] = frozenset()
    # dstack OS image releases (directories holding the image's sha256sum.txt and
    # metadata.json, as dstack publishes them), loaded as (sha256sum, metadata) texts: what
    # tells a verifier whether a measured os_image_hash is a development image when the report
    # carries no info.os_image.
    os_images: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SigstorePolicy:
    """Build transparency: digests that must come with a valid Sigstore bundle.

    ``trusted_root`` is a Sigstore TrustedRoot (JSON text, read from the file the policy names)
    pinned by the operator: verification is offline. ``identities`` are (signer identity,
    OIDC issuer) pairs, one of which must have signed; ``bundles`` the bundle documents (files
    or directories of ``*.sigstore.json`` / ``*.sigstore``) to look digests up in.
    """

    require_images: bool = False
    require_os_image: bool = False
    trusted_root: str = ""
    identities: tuple[tuple[str, str], ...] = ()
    bundles: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuPolicy:
    mode: GpuMode = "optional"
    driver_versions: frozenset[str] = frozenset()
    vbios_versions: frozenset[str] = frozenset()
    # Require the evidence's measurements to be compared with signed RIMs.
    require_rim: bool = False
    # Require NVIDIA OCSP answers saying the device chain is not revoked.
    require_ocsp: bool = False
    # Require each GPU's evidence to carry an FWID (compared with its leaf certificate's).
    # Evidence from older drivers carries none, and NVIDIA's verifier then skips the compare.
    require_fwid: bool = False
    # The number of GPUs a report must carry (None: any number, at least one).
    expected_count: int | None = None


@dataclass(frozen=True)
class BindingPolicy:
    # A report must bind the caller's fresh nonce; turning this off is for offline audit of
    # old evidence only.
    require_nonce: bool = True
    # Allowed report_data layouts; empty means every layout teegate knows.
    layouts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RootsPolicy:
    """Extra roots of trust, as PEM text, trusted *in addition to* the pinned vendor roots.

    Anything here other than a vendor root is a development root: verdicts that rest on one
    carry a ``*.development_root`` check, and the default policy has none.
    """

    intel: tuple[str, ...] = ()
    amd: tuple[str, ...] = ()
    nvidia: tuple[str, ...] = ()
    nvidia_rim: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    tcb: TcbPolicy = field(default_factory=TcbPolicy)
    tdx: TdxPolicy = field(default_factory=TdxPolicy)
    snp: SnpPolicy = field(default_factory=SnpPolicy)
    dstack: DstackPolicy = field(default_factory=DstackPolicy)
    gpu: GpuPolicy = field(default_factory=GpuPolicy)
    binding: BindingPolicy = field(default_factory=BindingPolicy)
    roots: RootsPolicy = field(default_factory=RootsPolicy)
    sigstore: SigstorePolicy = field(default_factory=SigstorePolicy)

    @classmethod
    def default(cls) -> Policy:
        """The production policy: vendor roots only, UpToDate/SWHardeningNeeded, no debug."""
        return cls()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Policy:
        policy: Policy = _build(cls, data, "policy", base_dir)
        s = policy.sigstore
        if (s.require_images or s.require_os_image) and not (s.trusted_root and s.identities):
            # Every digest would fail: say so at load time, not as a refused provider later.
            raise ConfigError("policy.sigstore: require_images / require_os_image need a "
                              "trusted_root file and at least one signer in identities")
        return policy

    def with_roots(self, **roots: tuple[str, ...]) -> Policy:
        return replace(self, roots=replace(self.roots, **roots))

    def pinned_tees(self) -> frozenset[str]:
        """TEE kinds (``tdx``, ``sgx``, ``sev-snp``) whose measurements this policy pins.

        Verifiers refuse evidence of a kind outside a non-empty result: a policy that pins only
        SGX enclaves must not accept a TD with whatever it measured. dstack pins count as TDX.
        """
        t, d, n = self.tdx, self.dstack, self.snp
        kinds = set()
        if (t.mrtd or t.rtmr0 or t.rtmr1 or t.rtmr2 or t.rtmr3 or t.mrconfigid or t.mrseam
                or d.compose_hashes or d.app_ids or d.os_image_hashes or d.image_digests
                or d.weights_digests):
            kinds.add("tdx")
        if t.mrenclave or t.mrsigner:
            kinds.add("sgx")
        if n.measurement or n.host_data or n.id_key_digest:
            kinds.add("sev-snp")
        return frozenset(kinds)


def load_policy(path: str | Path) -> Policy:
    """Load a policy from a ``.toml`` or ``.json`` file; root entries may name PEM files
    relative to the policy file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"policy file {p}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"policy file {p}: not UTF-8 text (byte {e.start})") from None
    try:
        data: Any = safejson.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = p.suffix.lstrip(".") or "TOML"
        raise ConfigError(f"policy file {p}: not valid {kind}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"policy file {p}: top level must be a table/object")
    return Policy.from_mapping(data, base_dir=p.parent)


# Byte length of every hex-valued field: a truncated or over-long paste would never match,
# and an operator should hear that at load time rather than see every provider rejected.
_HEX_SIZES = {
    "mrtd": 48, "rtmr0": 48, "rtmr1": 48, "rtmr2": 48, "rtmr3": 48, "mrconfigid": 48,
    "mrseam": 48, "mrenclave": 32, "mrsigner": 32, "measurement": 48, "host_data": 32,
    "id_key_digest": 48, "compose_hashes": 32, "app_ids": 20, "os_image_hashes": 32,
    "image_digests": 32, "weights_digests": 32, "dev_os_image_hashes": 32,
}
_HEX_SETS = set(_HEX_SIZES)
# Statuses dcap-qvl reports; Revoked always fails verification, so it cannot be allowed.
TCB_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded",
})
BINDING_LAYOUTS = frozenset({"padded", "sha256", "sha512", "sha512_nonce_key", "tls_spki",
                             "tls_spki_hex"})
_ADVISORY = re.compile(r"INTEL-SA-\d{5}")


def _normalise_hex(value: str, where: str, size: int | None = None) -> str:
    v = "".join(value.split()).lower().removeprefix("0x")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not hex") from None
    if size is not None and len(raw) != size:
        raise ConfigError(
            f"{where}: {value!r} is {len(raw)} bytes; this field holds {size}-byte values "
            f"({2 * size} hex digits)"
        )
    return v


def _check_names(name: str, values: frozenset[str], where: str) -> frozenset[str]:
    """Closed vocabularies: a typo must stop loading, not silently never match (or, for a
    rejected advisory, silently never reject)."""
    if name == "allowed_statuses":
        if not values:
            raise ConfigError(f"{where}: an empty list would refuse every platform; name the "
                              "statuses to accept (the default is UpToDate, SWHardeningNeeded)")
        unknown = sorted(values - TCB_STATUSES)
        if unknown:
            raise ConfigError(f"{where}: unknown TCB status(es) {unknown}; known: "
                              f"{sorted(TCB_STATUSES)} (Revoked can never be allowed)")
    elif name == "rejected_advisories":
        values = frozenset(v.strip().upper() for v in values)
        bad = sorted(v for v in values if not _ADVISORY.fullmatch(v))
        if bad:
            raise ConfigError(f"{where}: {bad} are not Intel advisory IDs (INTEL-SA-NNNNN)")
    elif name == "layouts":
        unknown = sorted(values - BINDING_LAYOUTS)
        if unknown:
            raise ConfigError(f"{where}: unknown report_data layout(s) {unknown}; known: "
                              f"{sorted(BINDING_LAYOUTS)}")
    return values


def _read_root(entry: str, where: str, base_dir: Path | None) -> str:
    if "-----BEGIN" in entry:
        return entry
    p = Path(entry)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read root certificate file {p}: {e}") from e
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{where}: {p} holds no PEM certificate")
    return text


def _read_text(entry: str, where: str, base_dir: Path | None, what: str) -> str:
    p = Path(entry).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read {what} {p}: {e}") from e


def _bundle_files(entries: Any, where: str, base_dir: Path | None) -> tuple[str, ...]:
    """Sigstore bundle texts from files, or directories of ``*.sigstore.json`` /
    ``*.sigstore`` files (sorted, so a policy loads the same way every time)."""
    if not isinstance(entries, list) or not all(isinstance(v, str) for v in entries):
        raise ConfigError(f"{where}: expected a list of bundle files or directories")
    out: list[str] = []
    for entry in entries:
        p = Path(entry).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        files = sorted(f for f in p.iterdir() if f.name.endswith((".sigstore.json",
                                                                     ".sigstore"))
                       ) if p.is_dir() else [p]
        out.extend(_read_text(str(f), where, None, "Sigstore bundle") for f in files)
    return tuple(out)


def _os_images(value: Any, where: str, base_dir: Path | None) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of OS image directories")
    out = []
    for entry in value:
        d = Path(entry).expanduser()
        if not d.is_absolute() and base_dir is not None:
            d = base_dir / d
        out.append((_read_text(str(d / "sha256sum.txt"), where, None, "OS image hash list"),
                    _read_text(str(d / "metadata.json"), where, None, "OS image metadata")))
    return tuple(out)


def _identities(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, dict) and set(v) == {"identity", "issuer"}
            and all(isinstance(x, str) and x for x in v.values()) for v in value):
        raise ConfigError(f"{where}: expected a list of {{identity = \"…\", issuer = \"…\"}} "
                          "tables (the signer's certificate identity and its OIDC issuer)")
    return tuple((v["identity"], v["issuer"]) for v in value)


def _convert(name: str, annotation: str, value: Any, where: str, base_dir: Path | None) -> Any:
    if name == "trusted_root":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected the path of a Sigstore trusted_root.json")
        return _read_text(value, where, base_dir, "Sigstore trusted root")
    if name == "bundles":
        return _bundle_files(value, where, base_dir)
    if name == "identities":
        return _identities(value, where)
    if name == "os_images":
        return _os_images(value, where, base_dir)
    if annotation.startswith("frozenset[str]"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        if name in _HEX_SETS:
            # image digests are often written as docker does: sha256:<hex>
            return frozenset(_normalise_hex(v.strip().removeprefix("sha256:"), where,
                                            _HEX_SIZES[name]) for v in value)
        return _check_names(name, frozenset(value), where)
    if annotation.startswith("frozenset[int]"):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{where}: expected a list of integers")
        return frozenset(value)
    if annotation.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of PEM texts or file paths")
        return tuple(_read_root(v, where, base_dir) for v in value)
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if annotation in ("int", "int | None"):
        if value is None and annotation.endswith("None"):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer")
        return value
    if annotation.startswith("Mapping[str, int]"):
        if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
        ):
            raise ConfigError(f"{where}: expected a table of non-negative integers")
        unknown = set(value) - set(SNP_TCB_FIELDS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown TCB component(s) {sorted(unknown)}; "
                f"known: {list(SNP_TCB_FIELDS)}"
            )
        return dict(value)
    if annotation == "GpuMode":
        if value not in ("required", "optional", "forbidden"):
            raise ConfigError(f"{where}: expected one of required, optional, forbidden")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation}")  # pragma: no cover


def _build(cls: Any, data: Mapping[str, Any], where: str, base_dir: Path | None) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table/object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = known[key]
        sub = f"{where}.{key}"
        annotation = str(f.type)
        if annotation.endswith("Policy"):
            kwargs[key] = _build(_SECTIONS[annotation], value, sub, base_dir)
        else:
            kwargs[key] = _convert(key, annotation, value, sub, base_dir)
    return cls(**kwargs)


_SECTIONS: dict[str, type] = {
    "TcbPolicy": TcbPolicy,
    "TdxPolicy": TdxPolicy,
    "SnpPolicy": SnpPolicy,
    "DstackPolicy": DstackPolicy,
    "GpuPolicy": GpuPolicy,
    "BindingPolicy": BindingPolicy,
    "RootsPolicy": RootsPolicy,
    "SigstorePolicy": SigstorePolicy,
}

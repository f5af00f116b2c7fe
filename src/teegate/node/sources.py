"""Where the node's hardware evidence comes from.

A ``QuoteSource`` turns 64 bytes of report_data into evidence: a TDX quote, or an SEV-SNP
report with its certificate chain. Implementations: the Linux configfs-tsm interface (TDX and
SNP guests, kernel >= 6.7), the dstack guest agent (via ``dstack-sdk``), and the development
TEEs of ``teegate.sim``. ``choose_source("auto")`` never picks a development TEE: that has to
be asked for by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from teegate.errors import ConfigError, EvidenceError, UpstreamError

TeeKind = Literal["tdx", "snp"]
CONFIGFS_TSM_ROOT = Path("/sys/kernel/config/tsm/report")
# The TDX firmware's boot event log (ACPI CCEL table data), as GCP and Azure TDX guests have it.
CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
DSTACK_SOCKETS = (
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
    "/run/dstack/dstack.sock",
)
TEE_CHOICES = ("auto", "configfs", "dstack", "dev-tdx", "dev-snp")


@dataclass(frozen=True)
class Evidence:
    """One piece of CPU evidence over the report_data the node asked for."""

    tee: TeeKind
    # TDX: the DCAP quote; SNP: the 1184-byte attestation report.
    quote: bytes
    source: str
    development: bool = False
    # SNP: the VCEK/VLEK, ASK and ARK certificates as PEM, when the platform supplied them.
    certificates: bytes | None = None
    # Development TDX only: dcap-qvl collateral JSON under the development PKI.
    collateral: str | None = None
    # JSON text of the event log (dstack); "[]" when there is none.
    event_log: str = "[]"
    info: Mapping[str, Any] = field(default_factory=dict)


class QuoteSource(Protocol):
    """Produces evidence binding ``report_data`` (exactly 64 bytes). Blocking: call it from a
    worker thread."""

    name: str
    development: bool

    def get_evidence(self, report_data: bytes) -> Evidence: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != 64:
        raise EvidenceError(f"report_data must be exactly 64 bytes, got {len(report_data)}")


# ---------------------------------------------------------------- configfs-tsm


class TsmFs(Protocol):
    """The four file operations configfs-tsm needs; the default is the real filesystem."""

    def mkdir(self, path: Path) -> None: ...
    def rmdir(self, path: Path) -> None: ...
    def read(self, path: Path) -> bytes: ...
    def write(self, path: Path, data: bytes) -> None: ...


class OsFs:
    """Plain ``os`` calls: configfs attributes are read and written whole, unbuffered."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)


_PROVIDERS: dict[str, TeeKind] = {"tdx_guest": "tdx", "sev_guest": "snp"}
# GHCB extended-report certificate table GUIDs (AMD spec 56421): VCEK, VLEK, ASK, ARK.
_CERT_GUIDS = {
    "63da758d-e664-4564-adc5-f4b93be8accd": 0,
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": 0,
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": 1,
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": 2,
}


def parse_snp_cert_table(aux: bytes) -> bytes | None:
    """PEM chain (leaf, ASK, ARK) from an SNP extended-report certificate table, or None when
    the host supplied none."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certs: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 24 <= len(aux):
        guid_raw = aux[pos : pos + 16]
        if guid_raw == bytes(16):
            break
        offset = int.from_bytes(aux[pos + 16 : pos + 20], "little")
        length = int.from_bytes(aux[pos + 20 : pos + 24], "little")
        pos += 24
        order = _CERT_GUIDS.get(str(uuid.UUID(bytes_le=guid_raw)))
        if order is None:
            order = _CERT_GUIDS.get(str(uuid.UUID(bytes=guid_raw)))
        if order is None or offset + length > len(aux) or length == 0:
            continue
        try:
            cert = x509.load_der_x509_certificate(aux[offset : offset + length])
        except ValueError as e:
            raise EvidenceError(f"configfs-tsm auxblob: certificate is not DER: {e}") from e
        certs.append((order, cert.public_bytes(Encoding.PEM)))
    if not certs:
        return None
    return b"".join(pem for _, pem in sorted(certs, key=lambda c: c[0]))


class ConfigfsTsmSource:
    """Linux configfs-tsm: one report directory per request, generation checked for races.

    Flow (Documentation/ABI/testing/configfs-tsm-report): mkdir an entry, read
    ``generation``, write the 64-byte ``inblob``, read ``outblob`` (generated on read),
    ``provider`` and ``generation`` again; if another writer touched the entry in between the
    generation has moved by more than one and the report is discarded and retried.
    """

    development = False

    def __init__(
        self, root: Path = CONFIGFS_TSM_ROOT, *, fs: TsmFs | None = None, attempts: int = 3,
        backoff: float = 0.5, sleep: Callable[[float], object] = time.sleep,
        ccel: Path | None = CCEL_PATH,
    ) -> None:
        self.root = Path(root)
        self.ccel = ccel
        self._ccel_json: str | None = None
        self.fs: TsmFs = fs or OsFs()
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep
        self.name = "configfs-tsm"

    @staticmethod
    def available(root: Path = CONFIGFS_TSM_ROOT) -> bool:
        return Path(root).is_dir()

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        last = "no attempt made"
        for attempt in range(max(1, self.attempts)):
            if attempt:  # busy or raced: an immediate retry would meet the same state
                self._sleep(self.backoff * attempt)
            entry = self.root / f"teegate-{os.getpid()}-{secrets.token_hex(6)}"
            try:
                self.fs.mkdir(entry)
            except OSError as e:
                raise UpstreamError(f"configfs-tsm: cannot create {entry}: {e}") from e
            try:
                result = self._one(entry, report_data)
            finally:
                with contextlib.suppress(OSError):
                    self.fs.rmdir(entry)
            if isinstance(result, Evidence):
                return result
            last = result
        raise UpstreamError(f"configfs-tsm: {last}")

    def _read_int(self, path: Path) -> int:
        try:
            return int(self.fs.read(path).decode().strip())
        except ValueError as e:
            raise UpstreamError(f"configfs-tsm: {path.name} is not a number") from e

    def _one(self, entry: Path, report_data: bytes) -> Evidence | str:
        try:
            before = self._read_int(entry / "generation")
            self.fs.write(entry / "inblob", report_data)
            out = self.fs.read(entry / "outblob")
            provider = self.fs.read(entry / "provider").decode().strip()
            after = self._read_int(entry / "generation")
            aux = b""
            try:  # through ``self.fs`` like every other attribute; absent on TDX
                aux = self.fs.read(entry / "auxblob")
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EINVAL):
                    raise
        except OSError as e:
            if e.errno == errno.EBUSY:
                return "device busy (a previous quote request is still in flight)"
            raise UpstreamError(f"configfs-tsm: {e.strerror or e} ({e.filename})") from e
        if after != before + 1:
            return f"generation moved from {before} to {after}: a concurrent writer raced us"
        tee = _PROVIDERS.get(provider)
        if tee is None:
            raise UpstreamError(f"configfs-tsm: unsupported provider {provider!r}")
        if not out:
            raise UpstreamError("configfs-tsm: empty outblob")
        certs = parse_snp_cert_table(aux) if tee == "snp" and aux else None
        return Evidence(
            tee=tee, quote=out, source=f"configfs-tsm/{provider}", certificates=certs,
            event_log=self._event_log() if tee == "tdx" else "[]",
            info={"tee": tee, "source": "configfs-tsm", "provider": provider},
        )

    def _event_log(self) -> str:
        """The TD's CCEL as a JSON event log, so verifiers can replay RTMR0-2; ``[]`` when the
        guest exposes none. Read once: firmware writes it before the OS boots."""
        if self._ccel_json is None:
            if self.ccel is None:
                return "[]"
            from teegate.attest.ccel import ccel_json

            try:
                data = self.ccel.read_bytes()
            except FileNotFoundError:
                return "[]"
            except OSError as e:
                raise UpstreamError(f"CCEL {self.ccel}: cannot read: {e.strerror or e}") from e
            try:
                self._ccel_json = ccel_json(data)
            except EvidenceError as e:
                raise UpstreamError(f"CCEL {self.ccel}: {e}") from e
        return self._ccel_json


# ---------------------------------------------------------------- dstack


def find_dstack_endpoint() -> str | None:
    """The guest-agent endpoint dstack-sdk would use, if one is present."""
    sim = os.environ.get("DSTACK_SIMULATOR_ENDPOINT")
    if sim:
        return sim
    for path in DSTACK_SOCKETS:
        if os.path.exists(path):
            return path
    return None


class DstackSource:
    """dstack guest agent (``GetQuote`` + ``Info``) over its Unix socket or an HTTP URL.

    ``Info()`` (app id, ``tcb_info`` with the app compose) is asked once and kept once it
    answers. Until it has, every report fails closed (503): a report without ``tcb_info``
    binds no compose for teegate's verifier, and the peers' verifiers stop on it. A failed
    ``Info()`` is asked again no sooner than ``info_backoff`` seconds later, the pause
    doubling up to ``info_backoff_max``, so a down agent is not hammered by report requests.
    """

    development = False

    def __init__(
        self, endpoint: str | None = None, *, timeout: float = 10.0,
        info_backoff: float = 1.0, info_backoff_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from dstack_sdk import DstackClient

        self.endpoint = endpoint or find_dstack_endpoint()
        if self.endpoint is None:
            raise ConfigError("dstack: no guest-agent socket found (looked in "
                              + ", ".join(DSTACK_SOCKETS) + ")")
        try:
            self._client = DstackClient(self.endpoint, timeout=timeout)
        except Exception as e:  # the SDK raises plain errors for a missing socket path
            raise ConfigError(f"dstack: cannot use endpoint {self.endpoint}: {e}") from e
        self.name = "dstack"
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()
        self._clock = clock
        self._backoff = (info_backoff, info_backoff_max)
        self._info_delay = info_backoff
        self._info_retry_at = 0.0
        self._info_error = ""

    @property
    def client(self) -> Any:
        """The ``dstack_sdk.DstackClient`` (the node's KMS keys come through it too)."""
        return self._client

    def _fetch_info(self) -> dict[str, Any]:
        with self._info_lock:
            if self._info is not None:
                return self._info
            now = self._clock()
            if now < self._info_retry_at:
                raise UpstreamError(
                    f"dstack: Info() failed ({self._info_error}); asked again in "
                    f"{self._info_retry_at - now:.1f} s")
            try:
                raw: Any = self._client.info()
                info = dict(raw.model_dump(mode="json"))
            except Exception as e:  # httpx, socket and pydantic errors alike
                self._info_error = f"{type(e).__name__}: {e}"
                self._info_retry_at = now + self._info_delay
                self._info_delay = min(self._info_delay * 2, self._backoff[1])
                raise UpstreamError(f"dstack: Info() failed: {self._info_error}") from e
            self._info, self._info_delay = info, self._backoff[0]
            return info

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        info = {"tee": "tdx", "source": "dstack", **self._fetch_info()}
        try:
            resp: Any = self._client.get_quote(report_data)
            quote = bytes.fromhex(str(resp.quote).removeprefix("0x"))
            event_log = str(resp.event_log or "[]")
        except ValueError as e:
            raise UpstreamError(f"dstack: malformed GetQuote answer: {e}") from e
        except Exception as e:  # httpx errors, socket errors: the agent is unreachable
            raise UpstreamError(f"dstack: GetQuote failed: {e}") from e
        return Evidence(tee="tdx", quote=quote, source="dstack", event_log=event_log, info=info)


def quote_tcb_info(tee: TeeKind, quote: bytes) -> dict[str, Any]:
    """``info.tcb_info`` for a source without a dstack guest agent: the registers the
    evidence measures, copied from it as dstack's ``Info()`` copies them (verifiers read the
    verified quote, never this). No ``app_compose``: nothing measured one."""
    if tee == "tdx":
        from teegate.attest import parse_quote

        td = parse_quote(quote).td_report
        if td is None:
            raise EvidenceError("the TDX source returned a quote without a TD report")
        return {"mrtd": td.mrtd.hex(), "rtmr0": td.rtmr0.hex(), "rtmr1": td.rtmr1.hex(),
                "rtmr2": td.rtmr2.hex(), "rtmr3": td.rtmr3.hex(),
                "mr_config_id": td.mrconfigid.hex()}
    from teegate.attest import parse_snp_report

    r = parse_snp_report(quote)
    return {"measurement": r.measurement.hex(), "host_data": r.host_data.hex()}


# ---------------------------------------------------------------- development TEEs


class DevTdxSource:
    """The development TDX of ``teegate.sim``: real quote format, development PKI.

    With ``app_compose`` (the raw bytes of a dstack app-compose file) the TD measures it as
    dstack does (``teegate.sim.compose``): compose-hash event in RTMR3, MRCONFIGID, an event
    log replaying RTMR0-3, and ``info.tcb_info`` carrying the compose document."""

    development = True

    def __init__(self, pki_dir: Path, *, app_compose: bytes | None = None) -> None:
        from teegate.sim.compose import measure_compose
        from teegate.sim.tdx import DEFAULT_MRTD, DevTdx

        self._tdx = DevTdx.load_or_create(pki_dir)
        self._collateral = self._tdx.collateral()
        self._collateral_at = time.monotonic()
        self.name = "dev-tdx"
        self.measured = measure_compose(app_compose) if app_compose is not None else None
        self._mrtd = DEFAULT_MRTD

    def _current_collateral(self) -> str:
        # Development collateral is valid for 30 days around its issue time: renew daily.
        if time.monotonic() - self._collateral_at > 86_400:
            self._collateral = self._tdx.collateral()
            self._collateral_at = time.monotonic()
        return self._collateral

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        m = self.measured
        info: dict[str, Any] = {"tee": "tdx", "source": "dev-tdx", "development": True}
        if m is None:
            quote = self._tdx.quote(report_data)
            return Evidence(tee="tdx", quote=quote, source="dev-tdx", development=True,
                            collateral=self._current_collateral(), info=info)
        quote = self._tdx.quote(report_data, mrtd=self._mrtd, rtmrs=m.rtmrs,
                                mrconfigid=m.mrconfigid)
        info.update(app_id=m.app_id, instance_id=m.instance_id, compose_hash=m.compose_hash,
                    os_image_hash=m.os_image_hash, tcb_info=m.tcb_info(self._mrtd),
                    os_image=m.os_image)
        return Evidence(tee="tdx", quote=quote, source="dev-tdx", development=True,
                        collateral=self._current_collateral(), event_log=m.event_log,
                        info=info)


class DevSnpSource:
    """The development SEV-SNP of ``teegate.sim``: real report format, development ARK."""

    development = True

    def __init__(self, pki_dir: Path, *, version: int = 3) -> None:
        from teegate.sim.snp import DevSnp

        self._snp = DevSnp.load_or_create(pki_dir)
        self._chain = self._snp.cert_chain_pem()
        self.version = version
        self.name = "dev-snp"

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        report = self._snp.report(report_data, version=self.version)
        return Evidence(
            tee="snp", quote=report, source="dev-snp", development=True,
            certificates=self._chain,
            info={"tee": "snp", "source": "dev-snp", "development": True},
        )


def choose_source(
    tee: str, *, pki_dir: Path | None = None, configfs_root: Path = CONFIGFS_TSM_ROOT,
    dstack_endpoint: str | None = None, app_compose: bytes | None = None,
) -> QuoteSource:
    """Build the source named by ``--tee``. ``auto``: configfs-tsm, else the dstack socket,
    else a ConfigError; it never falls back to a development TEE. ``app_compose`` is measured
    by the development TDX only (a real TD's compose is measured by dstack itself)."""
    if tee not in TEE_CHOICES:
        raise ConfigError(f"--tee must be one of {', '.join(TEE_CHOICES)}, not {tee!r}")
    if app_compose is not None and tee != "dev-tdx":
        raise ConfigError("--app-compose is measured by the development TDX (--tee dev-tdx); "
                          "under dstack the guest agent measures the deployed compose itself")
    if tee == "auto":
        if ConfigfsTsmSource.available(configfs_root):
            return ConfigfsTsmSource(configfs_root)
        if dstack_endpoint or find_dstack_endpoint():
            return DstackSource(dstack_endpoint)
        raise ConfigError(
            f"no TEE found: neither configfs-tsm ({configfs_root}) nor a dstack guest-agent "
            "socket is present. Run inside a TDX/SEV-SNP confidential VM, or choose a "
            "development TEE explicitly with --tee dev-tdx or --tee dev-snp (not confidential)."
        )
    if tee == "configfs":
        if not ConfigfsTsmSource.available(configfs_root):
            raise ConfigError(f"configfs-tsm: {configfs_root} does not exist")
        return ConfigfsTsmSource(configfs_root)
    if tee == "dstack":
        return DstackSource(dstack_endpoint)
    from teegate.paths import dev_pki_dir

    directory = pki_dir or dev_pki_dir()
    if tee == "dev-tdx":
        return DevTdxSource(directory, app_compose=app_compose)
    return DevSnpSource(directory)


from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from teegate.errors import ConfigError, EvidenceError, UpstreamError
from teegate.node.sources import (
    ConfigfsTsmSource,
    DevSnpSource,
    DevTdxSource,
    DstackSource,
    choose_source,
)
from teegate.sim.snp import DevSnp
from teegate.sim.tdx import DevTdx
from tests.node.fake_tsm import KernelLikeTsm
from tests.node.serve import serve

TDX_REPORT_DATA = slice(48 + 520, 48 + 584)
SNP_REPORT_DATA = slice(0x50, 0x90)
RD = bytes(range(64))


def _tsm(tmp_path: Path, dev_pki: Path, tee: str, aux: bytes | None = None) -> KernelLikeTsm:
    root = tmp_path / "report"
    root.mkdir()
    if tee == "tdx":
        tdx = DevTdx.load_or_create(dev_pki)
        return KernelLikeTsm(root, "tdx_guest", lambda rd: tdx.quote(rd), aux=aux)
    snp = DevSnp.load_or_create(dev_pki)
    return KernelLikeTsm(root, "sev_guest", lambda rd: snp.report(rd), aux=aux)


@pytest.mark.parametrize(("tee", "where"), [("tdx", TDX_REPORT_DATA), ("snp", SNP_REPORT_DATA)])
def test_configfs_report_carries_report_data(
    tmp_path: Path, dev_pki: Path, tee: str, where: slice
) -> None:
    fs = _tsm(tmp_path, dev_pki, tee)
    src = ConfigfsTsmSource(fs.root, fs=fs)
    ev = src.get_evidence(RD)
    assert ev.tee == tee
    assert ev.quote[where] == RD
    assert not ev.development
    assert ev.source == f"configfs-tsm/{fs.provider}"
    assert list(fs.root.iterdir()) == []  # the report entry was removed


def test_configfs_rejects_wrong_report_data_length(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "tdx")
    with pytest.raises(EvidenceError):
        ConfigfsTsmSource(fs.root, fs=fs).get_evidence(b"short")


def test_configfs_detects_a_racing_writer_and_retries(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "tdx")
    fs.races = 1
    ev = ConfigfsTsmSource(fs.root, fs=fs, backoff=0).get_evidence(RD)
    # The raced report (over someone else's inblob) was discarded, the retry is ours.
    assert fs.outblob_reads == 2
    assert ev.quote[TDX_REPORT_DATA] == RD


def test_configfs_gives_up_when_always_raced(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "tdx")
    fs.races = 10
    with pytest.raises(UpstreamError, match="generation"):
        ConfigfsTsmSource(fs.root, fs=fs, attempts=3, backoff=0).get_evidence(RD)
    assert list(fs.root.iterdir()) == []


def test_configfs_busy_device(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "tdx")
    fs.busy = 5
    with pytest.raises(UpstreamError, match="busy"):
        ConfigfsTsmSource(fs.root, fs=fs, attempts=2, backoff=0).get_evidence(RD)


def test_configfs_unknown_provider(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "tdx")
    fs.provider = "arm_cca_guest"
    with pytest.raises(UpstreamError, match="unsupported provider"):
        ConfigfsTsmSource(fs.root, fs=fs).get_evidence(RD)


def _cert_table(snp: DevSnp) -> bytes:
    pems = {"63da758d-e664-4564-adc5-f4b93be8accd": snp.vcek_pem,
            "4ab7b379-bbac-4fe4-a02f-05aef327c782": snp.ask_pem,
            "c0b406a4-a803-4952-9743-3fb6014cd0ae": snp.ark_pem}
    ders = {g: x509.load_pem_x509_certificate(p.encode()).public_bytes(Encoding.DER)
            for g, p in pems.items()}
    order = ["c0b406a4-a803-4952-9743-3fb6014cd0ae", "63da758d-e664-4564-adc5-f4b93be8accd",
             "4ab7b379-bbac-4fe4-a02f-05aef327c782"]
    offset = 24 * (len(order) + 1)
    table, blobs = b"", b""
    for g in order:
        table += uuid.UUID(g).bytes_le + (offset + len(blobs)).to_bytes(4, "little")
        table += len(ders[g]).to_bytes(4, "little")
        blobs += ders[g]
    return table + bytes(24) + blobs


def test_configfs_snp_certificates_from_auxblob(tmp_path: Path, dev_pki: Path) -> None:
    snp = DevSnp.load_or_create(dev_pki)
    fs = _tsm(tmp_path, dev_pki, "snp", aux=_cert_table(snp))
    ev = ConfigfsTsmSource(fs.root, fs=fs).get_evidence(RD)
    assert ev.certificates == snp.cert_chain_pem()  # VCEK, ASK, ARK order


def test_configfs_snp_without_auxblob_has_no_certificates(tmp_path: Path, dev_pki: Path) -> None:
    fs = _tsm(tmp_path, dev_pki, "snp")
    assert ConfigfsTsmSource(fs.root, fs=fs).get_evidence(RD).certificates is None


def test_dev_sources(dev_pki: Path) -> None:
    tdx = DevTdxSource(dev_pki).get_evidence(RD)
    assert tdx.development
    assert tdx.collateral is not None
    assert tdx.quote[TDX_REPORT_DATA] == RD
    snp = DevSnpSource(dev_pki).get_evidence(RD)
    assert snp.development
    assert snp.certificates is not None
    assert snp.quote[SNP_REPORT_DATA] == RD


def test_auto_prefers_configfs_and_never_picks_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSTACK_SIMULATOR_ENDPOINT", raising=False)
    monkeypatch.setattr("teegate.node.sources.DSTACK_SOCKETS", ())
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="--tee dev-tdx"):
        choose_source("auto", configfs_root=missing)
    root = tmp_path / "report"
    root.mkdir()
    assert isinstance(choose_source("auto", configfs_root=root), ConfigfsTsmSource)
    with pytest.raises(ConfigError):
        choose_source("configfs", configfs_root=missing)
    with pytest.raises(ConfigError):
        choose_source("sgx")


def _fake_agent(dev_pki: Path, seen: list[dict[str, Any]]) -> Starlette:
    """A dstack guest agent speaking its HTTP RPC (POST /GetQuote, /Info), dev-TDX backed."""
    tdx = DevTdx.load_or_create(dev_pki)
    log = [{"imr": 3, "event_type": 134217729, "digest": "", "event": "app-id",
            "event_payload": "00" * 20}]

    async def get_quote(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        rd = bytes.fromhex(body["report_data"])
        return JSONResponse({"quote": tdx.quote(rd).hex(), "event_log": json.dumps(log),
                             "report_data": rd.hex(), "vm_config": ""})

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"app_id": "ab" * 20, "instance_id": "cd" * 20, "app_cert": "",
                             "tcb_info": json.dumps({"mrtd": "", "rtmr0": "", "rtmr1": "",
                                                     "rtmr2": "", "rtmr3": "",
                                                     "app_compose": "{}", "event_log": [],
                                                     "mr_aggregated": "", "os_image_hash": "",
                                                     "compose_hash": "ef" * 32,
                                                     "device_id": ""}),
                             "app_name": "demo", "device_id": "", "key_provider_info": "",
                             "compose_hash": "ef" * 32})

    return Starlette(routes=[Route("/GetQuote", get_quote, methods=["POST"]),
                             Route("/Info", info, methods=["POST"])])


def test_dstack_source_against_a_guest_agent(
    dev_pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    with serve(_fake_agent(dev_pki, seen)) as url:
        monkeypatch.setenv("DSTACK_SIMULATOR_ENDPOINT", url)
        src = choose_source("auto", configfs_root=Path("/nonexistent/tsm"))
        assert isinstance(src, DstackSource)
        ev = src.get_evidence(RD)
    assert seen == [{"report_data": RD.hex()}]  # raw, not hashed
    assert ev.tee == "tdx"
    assert ev.quote[TDX_REPORT_DATA] == RD
    assert json.loads(ev.event_log)[0]["event"] == "app-id"
    assert ev.info["app_id"] == "ab" * 20
    assert not ev.development


def test_dstack_unreachable_is_upstream_error() -> None:
    from tests.node.serve import bound_socket

    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with pytest.raises(UpstreamError):
        DstackSource(url, timeout=2).get_evidence(RD)


def test_dstack_missing_socket_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        DstackSource(str(tmp_path / "no.sock"))


def test_configfs_busy_device_is_retried_after_a_pause(tmp_path: Path, dev_pki: Path) -> None:
    """EBUSY means an earlier quote request is still in flight: retrying at once can only
    fail again, so the source waits (growing pauses) before each new attempt."""
    fs = _tsm(tmp_path, dev_pki, "tdx")
    fs.busy = 2
    pauses: list[float] = []
    src = ConfigfsTsmSource(fs.root, fs=fs, attempts=3, backoff=0.25, sleep=pauses.append)
    ev = src.get_evidence(RD)
    assert ev.quote[TDX_REPORT_DATA] == RD
    assert pauses == [0.25, 0.5]


def test_configfs_tdx_evidence_carries_the_ccel(tmp_path: Path) -> None:
    """On a TDX guest with a CCEL (GCP's COS 113 TD, go-tdx-guest testdata) the evidence's
    event log is that CCEL, and it replays to the quote's RTMRs."""
    from teegate.attest.policy import Policy
    from teegate.attest.report import verify_quote_evidence

    data = Path(__file__).resolve().parents[1] / "data" / "tdx"
    quote = (data / "go-tdx-guest" / "cos-113-tdx-quote.dat").read_bytes()
    ccel = tmp_path / "CCEL"
    ccel.write_bytes((data / "go-tdx-guest" / "ccel_data.dat").read_bytes())
    root = tmp_path / "report"
    root.mkdir()
    fs = KernelLikeTsm(root, "tdx_guest", lambda rd: quote)
    ev = ConfigfsTsmSource(root, fs=fs, ccel=ccel).get_evidence(RD)
    assert len(json.loads(ev.event_log)) == 43
    v = verify_quote_evidence(
        ev.quote, (data / "zkdcap" / "collateral_tdx_00806f050000_assembled.json").read_text(),
        policy=Policy.default(), now=1740048927, event_log=ev.event_log)
    assert v.accepted, v.failures
    assert v.check("eventlog.rtmr2") is not None
    # No CCEL on the guest: an empty log, as before.
    assert ConfigfsTsmSource(root, fs=fs, ccel=tmp_path / "absent").get_evidence(RD
                                                                              ).event_log == "[]"
    ccel.write_bytes(b"\x01" * 64)
    with pytest.raises(UpstreamError, match="CCEL"):
        ConfigfsTsmSource(root, fs=fs, ccel=ccel).get_evidence(RD)


def test_dstack_info_failure_fails_closed_then_is_retried_with_backoff(dev_pki: Path) -> None:
    """A failed Info() used to be cached as {} for good: every report after it lacked
    tcb_info. Now reports fail closed (UpstreamError, a 503) and Info() is asked again
    only after a pause that doubles, until it answers; then it is kept."""
    from tests.node.fake_dstack import Agent, agent_app, serve_unix

    agent = Agent(info_failures=3)
    now = [100.0]
    with serve_unix(agent_app(dev_pki, agent)) as sock:
        src = DstackSource(sock, info_backoff=1.0, info_backoff_max=3.0, clock=lambda: now[0])
        with pytest.raises(UpstreamError, match="Info"):
            src.get_evidence(RD)
        assert agent.info_calls == 1
        now[0] += 0.5  # within the pause: not asked again, still closed
        with pytest.raises(UpstreamError, match=r"asked again in 0\.5 s"):
            src.get_evidence(RD)
        assert agent.info_calls == 1
        now[0] += 0.5
        with pytest.raises(UpstreamError):
            src.get_evidence(RD)  # second failure: the pause doubles to 2 s
        now[0] += 1.9
        with pytest.raises(UpstreamError, match="asked again"):
            src.get_evidence(RD)
        now[0] += 0.1
        with pytest.raises(UpstreamError):
            src.get_evidence(RD)  # third failure: pause capped at 3 s
        assert agent.info_calls == 3
        now[0] += 3.0
        ev = src.get_evidence(RD)
        assert agent.info_calls == 4
        assert ev.info["app_id"] == "ab" * 20
        assert json.loads(ev.info["tcb_info"]["app_compose"])["name"] == "demo"
        src.get_evidence(RD)
        assert agent.info_calls == 4  # kept once it answered

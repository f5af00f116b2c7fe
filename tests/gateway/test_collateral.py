"""Hosted providers send bare quotes: the gateway fetches the Intel collateral itself from
the configured PCCS (a local server speaking the PCCS protocol), caches it on disk for every
gateway sharing the cache, and never accepts a report it has nothing to verify with."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.collateral.http import RetryPolicy
from teegate.sim.tdx import DEV_FMSPC, DevTdx
from tests.collateral.vendor_server import DATA, Fault, VendorState, vendor_server
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server, Tamper, serving, tampering_proxy

MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
ATTESTED = {"X-Teegate-Trust": "attested"}
TCB = "/tdx/certification/v4/tcb"
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=5, timeout=2)


@pytest.fixture
def bare_node(node_a: Server) -> Iterator[Server]:
    with serving(tampering_proxy(node_a.url, Tamper(strip_collateral=True))) as proxy:
        yield proxy


@pytest.fixture
def pccs(dev_pki: Path) -> Iterator[tuple[str, VendorState]]:
    fmspc = DEV_FMSPC.hex().upper()
    with vendor_server() as (url, state):
        state.intel = {fmspc: json.loads(DevTdx.load_or_create(dev_pki).collateral())}
        state.intel_ca = {"platform": fmspc, "processor": fmspc}
        yield url, state


def _gateway(make_gateway: GatewayFactory, node: Server, **collateral: object) -> Gw:
    return make_gateway([{"id": "bare", "platform": "tee-node", "base_url": node.url + "/v1",
                          "models": ["shared-model"], "development": True}],
                        collateral=collateral)


def _reattest(gw: Gw) -> dict[str, object]:
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    view: dict[str, object] = httpx.post(gw.server.url + "/admin/providers/bare/reattest",
                                         headers=admin).json()["attestation"]
    return view


def test_bare_quote_is_attested_with_fetched_collateral_cached_for_all_gateways(
        make_gateway: GatewayFactory, bare_node: Server, pccs: tuple[str, VendorState]
) -> None:
    url, state = pccs
    gw = _gateway(make_gateway, bare_node, pccs_url=url)
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    r = client.chat.completions.with_raw_response.create(
        model="shared-model", messages=MSG, extra_headers=ATTESTED)
    assert r.headers["x-teegate-trust"] == "attested"
    assert state.count(TCB) == 1
    assert state.count("/sgx/certification/v4/pckcrl") == 1
    assert _reattest(gw)["status"] == "attested"  # a cache hit, not a second fetch
    second = _gateway(make_gateway, bare_node, pccs_url=url)  # shares the disk cache
    assert second.provider("bare").status == "attested"
    assert state.count(TCB) == 1


def test_without_collateral_the_bare_quote_is_rejected_by_name(
        make_gateway: GatewayFactory, bare_node: Server) -> None:
    gw = _gateway(make_gateway, bare_node, online=False)
    view = _reattest(gw)
    assert view["status"] == "quarantined"
    assert "tdx.collateral" in str(view["detail"])
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError, match="attestation rejected"):
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)


def test_pccs_failure_leaves_the_provider_unverified_not_quarantined(
        make_gateway: GatewayFactory, bare_node: Server, pccs: tuple[str, VendorState]
) -> None:
    url, state = pccs
    state.faults["/"] = Fault("500")
    gw = _gateway(make_gateway, bare_node, pccs_url=url)
    p = gw.provider("bare")
    assert p.status == "unverifiable"
    assert "collateral unavailable" in p.detail
    assert p.quarantined_until == 0.0  # the provider did nothing wrong
    client = openai.OpenAI(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="shared-model", messages=MSG,
                                       extra_headers=ATTESTED)
    assert "below attested" in e.value.message
    state.faults.clear()  # the PCCS is back: the next refresh attests
    assert _reattest(gw)["status"] == "attested"


SNP_NOW = 1756684800  # inside the derived Genoa VCEK's validity


def _snp_report() -> dict[str, object]:
    raw = (DATA / "sev-snp/project-oak/derived-genoa-report.bin").read_bytes()
    return {"snp_report": raw.hex(), "signing_address": "0x" + "00" * 20}


async def test_snp_vcek_is_fetched_and_amd_crl_is_required_from_real_providers(
        tmp_path: Path) -> None:
    """A production SEV-SNP provider's report is verified with AMD's CRL: when KDS has none
    to give (or gives one the pinned ARK did not sign) the report is not verifiable."""
    from teegate.errors import CollateralError
    from teegate.gateway.collateral import CollateralSource
    from teegate.gateway.config import CollateralConfig
    from teegate.sim.snp import DevSnp

    with vendor_server() as (url, state):
        source = CollateralSource(CollateralConfig(kds_url=url), tmp_path, retry=FAST)
        dev = await source.for_report(_snp_report(), now=SNP_NOW, development=True)
        assert dev.snp_certificates is not None  # the VCEK, fetched for the report
        assert b"BEGIN CERTIFICATE" in dev.snp_certificates
        assert dev.snp_crl is None
        assert state.count("/vcek/v1/Genoa/crl") == 0
        with pytest.raises(CollateralError, match="CRL"):  # the fake KDS has no CRL
            await source.for_report(_snp_report(), now=SNP_NOW)
        forged = DevSnp.load_or_create(tmp_path / "pki").crl(now=SNP_NOW - 60)
        state.faults["/vcek/v1/Genoa/crl"] = Fault("body", body=forged)
        with pytest.raises(CollateralError, match="not signed"):
            await source.for_report(_snp_report(), now=SNP_NOW)


def test_gpu_chain_revocation_is_checked_when_the_policy_requires_it(
        make_gateway: GatewayFactory, dev_pki: Path, tmp_path: Path) -> None:
    """gpu.require_ocsp: the gateway asks the configured NVIDIA OCSP responder about every
    GPU's device chain; good answers give attested+gpu, a revoked certificate quarantines the
    provider by name, a responder that is down leaves it unverified (not quarantined)."""
    import time

    from teegate.node import BuiltinEngine, DevTdxSource, create_node_app
    from teegate.sim import DevGpu
    from teegate.sim.gpu_ocsp import DevGpuOcsp

    responder = DevGpuOcsp(dev_pki)
    app = create_node_app(DevTdxSource(dev_pki), BuiltinEngine(("gpu-model",)), gpus=2,
                          gpu=DevGpu.load_or_create(dev_pki))
    with vendor_server() as (url, state), serving(app) as node:
        state.ocsp = responder.respond

        def gateway(cache: str) -> Gw:  # each with a cache of its own
            return make_gateway(
                [{"id": "bare", "platform": "tee-node", "base_url": node.url + "/v1",
                  "models": ["gpu-model"], "development": True,
                  "policy_inline": {"gpu": {"mode": "required", "require_ocsp": True}}}],
                collateral={"nvidia_ocsp_url": url + "/ocsp",
                            "cache_dir": str(tmp_path / cache)})

        p = gateway("first").provider("bare")
        assert p.level(time.time()).label == "attested+gpu", p.detail
        assert responder.requests == 4  # BROM x2, ICA, identity
        verdict = p.last_verdict
        assert verdict is not None
        checks = {c.name: c.ok for g in verdict.components for c in g.checks}
        assert checks["gpu.0.revocation"]
        assert checks["gpu.1.revocation"]

        responder.revoked.update(responder.serials())  # everything revoked from now on
        # Cached answers stay good until their nextUpdate: a new cache sees the revocation.
        view = _reattest(gateway("second"))
        assert view["status"] == "quarantined"
        assert "gpu.0.revocation" in str(view["detail"])
        assert "is revoked" in str(view["detail"])

        state.ocsp = None  # responder down, no cache: nothing to verify with
        gw3 = gateway("third")
        assert gw3.provider("bare").status == "unverifiable"
        assert "collateral unavailable" in gw3.provider("bare").detail


def test_gpu_measurements_are_compared_with_rims_fetched_when_the_policy_requires_them(
        make_gateway: GatewayFactory, dev_pki: Path, tmp_path: Path) -> None:
    """gpu.require_rim: the gateway fetches each GPU's driver and VBIOS RIMs by the ids the
    evidence names from the configured RIM service, verifies them to the policy's RIM root
    and compares the measurements; without the RIMs the provider stays unverified."""
    import time

    from teegate.attest.gpu import decode_evidence, parse_spdm_evidence, rim_ids
    from teegate.node import BuiltinEngine, DevTdxSource, create_node_app
    from teegate.sim import DevGpu
    from tests.attest.test_gpu_rim import dev_rims, new_signer

    signer = new_signer()
    gpu = DevGpu.load_or_create(dev_pki)
    driver_id, vbios_id = rim_ids(parse_spdm_evidence(decode_evidence(gpu.evidence(
        bytes(32)))))
    assert driver_id.startswith("NV_GPU_DRIVER_GH100_")
    assert vbios_id.startswith("NV_GPU_VBIOS_")
    app = create_node_app(DevTdxSource(dev_pki), BuiltinEngine(("gpu-model",)), gpus=2,
                          gpu=gpu)
    with vendor_server() as (url, state), serving(app) as node:

        def gateway(cache: str) -> Gw:
            return make_gateway(
                [{"id": "bare", "platform": "tee-node", "base_url": node.url + "/v1",
                  "models": ["gpu-model"], "development": True,
                  "policy_inline": {"gpu": {"mode": "required", "require_rim": True},
                                    "roots": {"nvidia_rim": [signer.root_pem]}}}],
                collateral={"nvidia_rim_url": url + "/v1/rim/",
                            "cache_dir": str(tmp_path / cache)})

        state.rims = dict(zip((driver_id, vbios_id), dev_rims(signer), strict=True))
        p = gateway("first").provider("bare")
        assert p.level(time.time()).label == "attested+gpu", p.detail
        assert state.count("/v1/rim/") == 2  # two GPUs, one driver and one VBIOS RIM
        assert p.last_verdict is not None
        details = {c.name: c.detail for g in p.last_verdict.components for c in g.checks}
        assert "64 active measurements match" in details["gpu.1.measurements"]

        state.rims = {}  # the RIM service does not know this VBIOS (nvtrust #66)
        unknown = gateway("second").provider("bare")
        assert unknown.status == "unverifiable"
        assert "HTTP 404" in unknown.detail

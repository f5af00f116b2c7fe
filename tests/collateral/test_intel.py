"""Intel PCCS/PCS client against a real local HTTP server serving the vector collateral."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.attest.policy import Policy
from teegate.attest.tdx import verify_quote
from teegate.collateral import (
    CollateralCache,
    RetryPolicy,
    collateral_window,
    fetch_tdx_collateral,
    fetch_tdx_collateral_sync,
    quote_target,
)
from teegate.collateral.intel import _signed_body, top_level_members
from teegate.errors import CollateralError, EvidenceError
from tests.collateral.vendor_server import DATA, Fault, VendorState, vendor_server

TDX_QUOTE = (DATA / "collateral" / "tdx_quote").read_bytes()
SGX_QUOTE = (DATA / "collateral" / "sgx_quote").read_bytes()
TDX_NOW = 1752919234
SGX_NOW = 1752919277
FAST = RetryPolicy(attempts=2, backoff=0.01, max_wait=5, timeout=2)


@pytest.fixture
def pccs() -> Iterator[tuple[str, VendorState]]:
    with vendor_server() as s:
        yield s


def test_quote_target_reads_fmspc_ca_and_tee() -> None:
    t = quote_target(TDX_QUOTE)
    assert (t.tee, t.fmspc, t.ca) == ("tdx", "B0C06F000000", "platform")
    s = quote_target(SGX_QUOTE.hex().encode())
    assert (s.tee, s.fmspc, s.ca) == ("sgx", "00A067110000", "processor")
    with pytest.raises(EvidenceError):
        quote_target(b"not a quote")


async def test_tdx_fetch_verifies_with_dcap_qvl(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    text = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=None, now=TDX_NOW)
    col = json.loads(text)
    vector = json.loads((DATA / "collateral" / "tdx_quote_collateral.json").read_text())
    assert col == vector  # the exact signed texts survived the round trip
    report = dcap_qvl.verify(TDX_QUOTE, dcap_qvl.QuoteCollateralV3.from_json(text), TDX_NOW)
    assert report.status == "UpToDate"
    verdict = verify_quote(TDX_QUOTE, text, policy=Policy.default(), now=TDX_NOW)
    assert verdict.accepted, verdict.failures
    assert verdict.tcb_status == "UpToDate"
    assert sorted(state.requests) == sorted([
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        "/tdx/certification/v4/qe/identity?update=standard",
        "/sgx/certification/v4/rootcacrl",
    ])


async def test_sgx_fetch_uses_processor_ca_and_sgx_paths(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    # A PCCS base given the way dcap-qvl spells it (with /sgx/certification/v4) also works.
    text = await fetch_tdx_collateral(SGX_QUOTE, pccs_url=url + "/sgx/certification/v4/",
                                      now=SGX_NOW)
    report = dcap_qvl.verify(SGX_QUOTE, dcap_qvl.QuoteCollateralV3.from_json(text), SGX_NOW)
    assert report.status == "ConfigurationAndSWHardeningNeeded"
    assert "/sgx/certification/v4/pckcrl?ca=processor&encoding=der" in state.requests
    assert "/sgx/certification/v4/tcb?fmspc=00A067110000" in state.requests


async def test_cache_hit_makes_no_request(pccs: tuple[str, VendorState], tmp_path: Path) -> None:
    url, state = pccs
    cache = CollateralCache(tmp_path)
    first = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, now=TDX_NOW - 3600)
    n = len(state.requests)
    second = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, now=TDX_NOW)
    assert second == first
    assert len(state.requests) == n == 4
    # The entry expires with the collateral itself (earliest nextUpdate/notAfter).
    (entry,) = cache.entries()
    assert entry.expires == collateral_window(first)[1] == TDX_NOW + 1


async def test_expired_entry_is_refetched(pccs: tuple[str, VendorState], tmp_path: Path) -> None:
    url, state = pccs
    cache = CollateralCache(tmp_path)
    key = quote_target(TDX_QUOTE).cache_key
    cache.put(key, b'{"old": true}', expires=TDX_NOW - 100, now=TDX_NOW - 200)
    text = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, now=TDX_NOW)
    assert json.loads(text)["tcb_info"].startswith('{"id":"TDX"')
    assert state.count("/tdx/certification/v4/tcb") == 1
    assert cache.get(key, now=TDX_NOW) == text.encode()


async def test_collateral_past_its_next_update_is_refused(
    pccs: tuple[str, VendorState], tmp_path: Path
) -> None:
    url, _ = pccs
    cache = CollateralCache(tmp_path)
    with pytest.raises(CollateralError, match="expired"):
        await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, now=TDX_NOW + 10)
    assert cache.entries() == []


async def test_429_with_retry_after_is_honoured(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    state.faults["/tdx/certification/v4/tcb"] = Fault("429", times=1, retry_after="1")
    import time
    t0 = time.monotonic()
    text = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, now=TDX_NOW, retry=FAST)
    assert time.monotonic() - t0 >= 1.0
    assert state.count("/tdx/certification/v4/tcb") == 2
    assert json.loads(text)["tcb_info_signature"]


async def test_429_asking_too_long_fails_at_once(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    state.faults["/tdx/certification/v4/tcb"] = Fault("429", retry_after="3600")
    with pytest.raises(CollateralError, match=r"rate-limited.*3600 s"):
        await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, now=TDX_NOW, retry=FAST)
    assert state.count("/tdx/certification/v4/tcb") == 1


@pytest.mark.parametrize(
    ("prefix", "fault", "message"),
    [
        ("/tdx/certification/v4/tcb", Fault("garbage"), "Intel TCB info .* not a JSON object"),
        ("/sgx/certification/v4/pckcrl", Fault("garbage"), "PCK CRL .* not a CRL"),
        ("/sgx/certification/v4/rootcacrl", Fault("garbage"), "root CA CRL .* not a CRL"),
        ("/tdx/certification/v4/qe/identity", Fault("no-header"),
         "lacks header SGX-Enclave-Identity-Issuer-Chain"),
        ("/tdx/certification/v4/tcb", Fault("dup-key"), "duplicated top-level key 'tcbInfo'"),
        ("/tdx/certification/v4/tcb", Fault("404"), r"GET http://127\.0\.0\.1:\d+/tdx/.*404"),
        ("/tdx/certification/v4/tcb", Fault("500"), "failed after 2 attempt"),
    ],
)
async def test_bad_answers_become_collateral_errors(
    pccs: tuple[str, VendorState], tmp_path: Path, prefix: str, fault: Fault, message: str
) -> None:
    url, state = pccs
    state.faults[prefix] = fault
    cache = CollateralCache(tmp_path)
    with pytest.raises(CollateralError, match=message):
        await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, cache=cache, now=TDX_NOW, retry=FAST)
    assert cache.entries() == []  # nothing bad is ever cached


async def test_older_tcb_issuer_chain_header_is_accepted(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    state.faults["/tdx/certification/v4/tcb"] = Fault("old-header")
    text = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, now=TDX_NOW)
    assert dcap_qvl.verify(TDX_QUOTE, dcap_qvl.QuoteCollateralV3.from_json(text),
                           TDX_NOW).status == "UpToDate"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_server_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(CollateralError, match=r"127\.0\.0\.1.*connection failed"):
        fetch_tdx_collateral_sync(TDX_QUOTE, pccs_url=url, now=TDX_NOW, retry=FAST)


async def test_slow_server_times_out(pccs: tuple[str, VendorState]) -> None:
    url, state = pccs
    state.faults["/tdx/certification/v4/qe"] = Fault("slow", delay=1.5)
    with pytest.raises(CollateralError, match="timed out"):
        await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, now=TDX_NOW,
                                   retry=RetryPolicy(attempts=1, timeout=0.3))


async def test_root_crl_from_explicit_url(pccs: tuple[str, VendorState]) -> None:
    url, _state = pccs
    text = await fetch_tdx_collateral(TDX_QUOTE, pccs_url=url, now=TDX_NOW,
                                      root_crl_url=url + "/sgx/certification/v4/rootcacrl")
    assert json.loads(text)["root_ca_crl"].startswith("30")


def test_intel_pcs_root_crl_comes_from_the_root_distribution_point() -> None:
    from teegate.collateral.intel import _root_crl_dp

    chain = json.loads((DATA / "collateral" / "tdx_quote_collateral.json").read_text())[
        "tcb_info_issuer_chain"]
    assert _root_crl_dp(chain) == (
        "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_bodies_only_raise_collateral_error(text: str) -> None:
    with contextlib.suppress(CollateralError):
        top_level_members(text, what="test")
    with contextlib.suppress(CollateralError):
        _signed_body(text, "tcbInfo", "test")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["tcbInfo", "signature", "x"]),
                       st.one_of(st.integers(), st.text(max_size=5), st.just({"a": 1})),
                       max_size=3))
def test_members_keep_exact_text(obj: dict[str, object]) -> None:
    text = " { " + " , ".join(f'"{k}" :  {json.dumps(v)}' for k, v in obj.items()) + " } "
    members = top_level_members(text, what="test")
    assert {k: json.loads(v) for k, v in members.items()} == obj

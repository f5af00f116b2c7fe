"""The caller's own report_data check (``client.report_data``, what the gateway and
``attest_node`` rely on) follows the provider's policy layouts: a node that binds its key as
SHA-512(nonce || key) (x25519 tunnel style) is accepted when its policy allows that layout, and
refused when the policy allows only the padded one. A gateway provider whose policy allows only
TLS layouts is refused at start-up: the gateway binds signing keys and pins no TLS key."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from teegate.attest.policy import BindingPolicy, Policy
from teegate.client import AttestationRejectedError, attest_node
from teegate.errors import ConfigError
from teegate.gateway import parse_config
from teegate.sim import development_policy
from teegate.sim.tdx import DevTdx
from tests.node.serve import serve

ADDRESS = bytes(range(1, 21))  # the node's 20-byte signing address


def _hashed_node(pki: Path) -> Starlette:
    """A node whose quote's report_data is SHA-512(our nonce || its address)."""
    tdx = DevTdx.load_or_create(pki)

    async def report(request: Request) -> JSONResponse:
        nonce = bytes.fromhex(request.query_params["nonce"])
        quote = tdx.quote(hashlib.sha512(nonce + ADDRESS).digest())
        return JSONResponse({"intel_quote": quote.hex(),
                             "collateral": tdx.collateral(now=int(time.time())),
                             "signing_address": "0x" + ADDRESS.hex(), "signing_algo": "ecdsa"})

    return Starlette(routes=[Route("/v1/attestation/report", report)])


@pytest.fixture(scope="module")
def node(dev_pki: Path) -> Iterator[str]:
    with serve(_hashed_node(dev_pki)) as url:
        yield url


def _layouts(policy: Policy, *names: str) -> Policy:
    return dataclasses.replace(policy, binding=BindingPolicy(layouts=frozenset(names)))


@pytest.mark.parametrize("layouts", [(), ("sha512_nonce_key",), ("padded", "sha512_nonce_key")])
def test_a_hashed_layout_the_policy_allows_is_accepted(node: str, dev_pki: Path,
                                                       layouts: tuple[str, ...]) -> None:
    key = attest_node(node, policy=_layouts(development_policy(dev_pki), *layouts))
    assert key.identity == ADDRESS
    check = key.verdict.check("client.report_data")
    assert check is not None
    assert check.ok
    assert "sha512_nonce_key" in check.detail


def test_a_layout_the_policy_does_not_allow_is_refused(node: str, dev_pki: Path) -> None:
    with pytest.raises(AttestationRejectedError) as e:
        attest_node(node, policy=_layouts(development_policy(dev_pki), "padded"))
    verdict = e.value.verdict
    assert verdict is not None
    failed = {c.name for c in verdict.failures}
    assert failed == {"binding.key", "binding.nonce", "client.report_data"}


def test_a_gateway_provider_with_only_tls_layouts_is_refused_at_start_up() -> None:
    node = {"id": "n", "platform": "tee-node", "base_url": "http://127.0.0.1:1/v1",
            "models": ["m"], "policy_inline": {"binding": {"layouts": ["tls_spki"]}}}
    with pytest.raises(ConfigError, match=r"^providers\[0\]\.policy: binding\.layouts "
                                          r"\['tls_spki'\] allows only TLS layouts"):
        parse_config({"providers": [node]})
    node["policy_inline"] = {"binding": {"layouts": ["tls_spki", "sha512_nonce_key"]}}
    cfg = parse_config({"providers": [node]})
    assert cfg.providers[0].policy is not None

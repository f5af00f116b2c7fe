"""Re-attestation logs a signing-key change only when the attested keys really changed (each
refresh has a new nonce and so a new verdict digest, which is not a key change)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest

from teegate.node import NodeKeys
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import dev_node, serving

CHANGED = "signing key(s) changed"


def _reattest(gw: Gw, pid: str) -> None:
    admin = {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}
    r = httpx.post(f"{gw.server.url}/admin/providers/{pid}/reattest", headers=admin)
    assert r.status_code == 200
    assert r.json()["attestation"]["status"] == "attested"


def test_key_change_logged_only_when_keys_change(
        make_gateway: GatewayFactory, dev_pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = NodeKeys()
    with serving(dev_node(dev_pki, ("shared-model",), keys)) as node:
        gw = make_gateway([{"id": "n", "platform": "tee-node", "base_url": node.url + "/v1",
                            "models": ["shared-model"], "development": True}])
        old = gw.provider("n").attested.signing_address
        caplog.set_level(logging.WARNING, logger="teegate.gateway")
        for _ in range(3):
            _reattest(gw, "n")
        assert not [r for r in caplog.records if CHANGED in r.getMessage()]
        keys._signers = NodeKeys()._signers  # the node restarts with a new key
        _reattest(gw, "n")
        new = gw.provider("n").attested.signing_address
        assert new != old
        changed = [r.getMessage() for r in caplog.records if CHANGED in r.getMessage()]
        assert changed == [f"provider n: {CHANGED} {old} -> {new} (re-attested)"]

"""``teegate node --tee dev-tdx --app-compose FILE``: the development TDX measures the compose
as dstack does, and a verifier sees it as the model identity."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from teegate.attest.policy import Policy, load_policy
from teegate.cli import app
from teegate.client import fetch_and_verify_report
from tests.node.serve import serve

runner = CliRunner()
DATA = Path(__file__).resolve().parent.parent / "data" / "confidential-ai"


def test_node_measures_the_app_compose(dev_pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compose = DATA / "dstack-app-compose.json"
    served: dict[str, Any] = {}
    monkeypatch.setattr("teegate.serving.run", lambda asgi, **kw: served.update(kw, app=asgi))
    res = runner.invoke(app, ["node", "--tee", "dev-tdx", "--pki-dir", str(dev_pki),
                              "--port", "9125", "--app-compose", str(compose)],
                        terminal_width=400)
    assert res.exit_code == 0, res.output
    want = hashlib.sha256(compose.read_bytes()).hexdigest()
    assert f"measured app compose {want}" in res.output
    m = re.search(r"--policy (\S+)", res.output)
    assert m is not None
    policy = load_policy(m.group(1))
    with serve(served["app"]) as url:
        v = fetch_and_verify_report(url, policy=policy)
        assert v.accepted, v.failures
        names = {c.name for c in v.checks if c.ok}
        assert {"eventlog.rtmr3", "dstack.compose_hash", "dstack.mrconfigid"} <= names
        assert v.model["compose_hash"] == want
        assert v.measurements["mrconfigid"] == "01" + want + "00" * 15
        assert v.model["unpinned_images"] == ["quay.io/jupyter/base-notebook"]
        assert v.model["os_image"]["is_dev"] is True
        # The production defaults refuse the development OS image by name (and the roots).
        strict = Policy.default().with_roots(intel=policy.roots.intel)
        refused = fetch_and_verify_report(url, policy=strict)
        assert "dstack.os_image_dev" in {c.name for c in refused.failures}


@pytest.mark.parametrize("tee", ["dev-snp", "configfs"])
def test_app_compose_needs_the_development_tdx(tee: str, dev_pki: Path, tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    res = runner.invoke(app, ["node", "--tee", tee, "--pki-dir", str(dev_pki),
                              "--configfs-root", str(tmp_path / "report"),
                              "--app-compose", str(DATA / "dstack-app-compose.json")])
    assert res.exit_code == 2
    assert "--app-compose" in res.output
    res = runner.invoke(app, ["node", "--tee", "dev-tdx", "--pki-dir", str(dev_pki),
                              "--app-compose", str(tmp_path / "missing.json")])
    assert res.exit_code == 2
    assert "cannot read" in res.output

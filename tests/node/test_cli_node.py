from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from teegate.cli import app
from teegate.serving import ServerLimits

runner = CliRunner()


@pytest.fixture
def no_tee(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("DSTACK_SIMULATOR_ENDPOINT", raising=False)
    monkeypatch.setattr("teegate.node.sources.DSTACK_SOCKETS", ())
    monkeypatch.setattr("teegate.node.sources.CONFIGFS_TSM_ROOT", tmp_path / "none")
    return tmp_path


def test_auto_without_a_tee_refuses_to_start(no_tee: Path) -> None:
    res = runner.invoke(app, ["node", "--configfs-root", str(no_tee / "none")])
    assert res.exit_code == 2
    assert "no TEE found" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--tee", "sgx"], "--tee must be one of"),
    (["--tee", "dev-tdx", "--engine", "ftp://x"], "--engine must be"),
    (["--tee", "dev-tdx", "--gpus", "-1"], "--gpus"),
    (["--tee", "dev-tdx", "--gpus", "99"], "at most"),
])
def test_bad_options_exit_2(args: list[str], message: str, dev_pki: Path) -> None:
    res = runner.invoke(app, ["node", "--pki-dir", str(dev_pki), *args])
    assert res.exit_code == 2
    assert message in res.output


def test_gpus_need_a_development_tee(tmp_path: Path) -> None:
    root = tmp_path / "report"
    root.mkdir()
    res = runner.invoke(app, ["node", "--tee", "configfs", "--configfs-root", str(root),
                              "--gpus", "1"])
    assert res.exit_code == 2
    assert "development TEE" in res.output


def test_dev_tee_prints_banner_and_serves(dev_pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}

    def fake_run(asgi: Any, **kw: Any) -> None:
        served.update(kw, app=asgi)

    monkeypatch.setattr("teegate.serving.run", fake_run)
    res = runner.invoke(app, ["node", "--tee", "dev-snp", "--pki-dir", str(dev_pki),
                              "--port", "9123", "--gpus", "1"])
    assert res.exit_code == 0, res.output
    assert "NOT CONFIDENTIAL" in res.output
    assert served["port"] == 9123
    assert served["host"] == "127.0.0.1"
    assert served["limits"] == ServerLimits()  # head/body deadlines, keep-alive, a cap


def test_connection_limits_and_body_limit_are_options(dev_pki: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr("teegate.serving.run", lambda asgi, **kw: served.update(kw, app=asgi))
    res = runner.invoke(app, ["node", "--tee", "dev-tdx", "--pki-dir", str(dev_pki),
                              "--header-timeout", "2", "--body-timeout", "3",
                              "--keep-alive", "4", "--max-connections", "50",
                              "--max-body-bytes", "1000"])
    assert res.exit_code == 0, res.output
    assert served["limits"] == ServerLimits(2, 3, 4, 50)
    from tests.node.serve import serve

    with serve(served["app"]) as url:
        r = httpx.post(url + "/v1/chat/completions", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    bad = runner.invoke(app, ["node", "--tee", "dev-tdx", "--pki-dir", str(dev_pki),
                              "--body-timeout", "0"])
    assert bad.exit_code == 2
    assert "--body-timeout" in bad.output


def test_dev_tee_banner_says_how_to_verify(dev_pki: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A new user's first `teegate verify --url` against a development node must be able to
    succeed: the banner names a policy file that trusts this installation's development roots
    (and only those), and that policy accepts the node's report."""
    import re

    from teegate.attest.policy import load_policy
    from teegate.client import fetch_and_verify_report
    from tests.node.serve import serve

    served: dict[str, Any] = {}
    monkeypatch.setattr("teegate.serving.run", lambda asgi, **kw: served.update(kw, app=asgi))
    res = runner.invoke(app, ["node", "--tee", "dev-tdx", "--pki-dir", str(dev_pki),
                              "--port", "9124"], terminal_width=400)
    assert res.exit_code == 0, res.output
    m = re.search(r"teegate verify --url http://127\.0\.0\.1:9124 --policy (\S+)", res.output)
    assert m is not None, res.output
    policy = load_policy(m.group(1))
    assert policy.roots.intel
    with serve(served["app"]) as url:
        assert fetch_and_verify_report(url, policy=policy).accepted
    verify = runner.invoke(app, ["verify", "--url", "http://127.0.0.1:1", "--policy",
                                 m.group(1)])
    assert "Traceback" not in verify.output


def test_messages_with_markup_characters_print_literally(tmp_path: Path) -> None:
    odd = tmp_path / "x[/]y"
    res = runner.invoke(app, ["node", "--tee", "configfs", "--configfs-root", str(odd)])
    assert res.exit_code == 2
    assert isinstance(res.exception, SystemExit)
    assert "x[/]y" in res.output

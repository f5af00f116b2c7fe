"""``teegate collateral fetch|show|prune`` against the local vendor server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl
import pytest
from typer.testing import CliRunner

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.cli import app
from tests.collateral.vendor_server import DATA, VendorState, vendor_server

runner = CliRunner()
TDX = DATA / "collateral" / "tdx_quote"
TDX_NOW = 1752919234
MILAN = DATA / "sev-snp" / "trustee" / "test-report.bin"
SNP_NOW = 1756684800


@pytest.fixture
def server() -> Iterator[tuple[str, VendorState]]:
    with vendor_server() as s:
        yield s


def test_fetch_show_prune_tdx(server: tuple[str, VendorState], tmp_path: Path) -> None:
    url, state = server
    cache, out = tmp_path / "cache", tmp_path / "col.json"
    args = ["collateral", "fetch", str(TDX), "--pccs-url", url, "--cache", str(cache),
            "--now", str(TDX_NOW - 60), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert dcap_qvl.verify(TDX.read_bytes(), dcap_qvl.QuoteCollateralV3.from_json(text),
                           TDX_NOW).status == "UpToDate"
    # Second fetch: served from the cache, printed to stdout.
    r = runner.invoke(app, args[:-2])
    assert r.exit_code == 0
    assert json.loads(r.stdout) == json.loads(text)
    assert state.count("/tdx/certification/v4/tcb") == 1

    r = runner.invoke(app, ["collateral", "show", "--cache", str(cache), "--json",
                            "--now", str(TDX_NOW)])
    assert r.exit_code == 0
    (entry,) = json.loads(r.stdout)
    assert entry["key"] == "intel/tdx/B0C06F000000/platform"
    assert entry["expired"] is False
    r = runner.invoke(app, ["collateral", "show", "--cache", str(cache)])
    assert r.exit_code == 0
    assert "intel/tdx" in r.stdout

    r = runner.invoke(app, ["collateral", "prune", "--cache", str(cache), "--now", str(TDX_NOW)])
    assert "0 entries removed" in r.stdout
    r = runner.invoke(app, ["collateral", "prune", "--cache", str(cache),
                            "--now", str(TDX_NOW + 2)])
    assert "removed intel/tdx/B0C06F000000/platform" in r.stdout


def test_fetch_snp_gives_certs_that_verify(server: tuple[str, VendorState],
                                           tmp_path: Path) -> None:
    url, _ = server
    out = tmp_path / "certs.pem"
    r = runner.invoke(app, ["collateral", "fetch", str(MILAN), "--kds-url", url, "--product",
                            "Milan", "--no-cache", "--now", str(SNP_NOW), "-o", str(out)])
    assert r.exit_code == 0, r.output
    v = verify_report(MILAN.read_bytes(), out.read_bytes(), policy=Policy.default(),
                      now=SNP_NOW, product="Milan")
    assert v.accepted


def test_fetch_errors_have_exit_codes(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"hello")
    r = runner.invoke(app, ["collateral", "fetch", str(garbage), "--no-cache"])
    assert r.exit_code == 2
    assert "malformed input" in r.output
    r = runner.invoke(app, ["collateral", "fetch", str(MILAN), "--no-cache"])
    assert r.exit_code == 2  # v2 report without --product
    assert "say which product" in r.output


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = runner.invoke(app, ["collateral", "fetch", str(TDX), "--pccs-url",
                            f"http://127.0.0.1:{port}", "--no-cache", "--now", str(TDX_NOW)])
    assert r.exit_code == 1
    assert "collateral fetch failed" in r.output
    assert f"127.0.0.1:{port}" in r.output


def test_verify_online_fetches_the_vcek_from_the_configured_kds(
    server: tuple[str, VendorState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = server
    monkeypatch.setenv("TEEGATE_KDS_URL", url)
    report = tmp_path / "report.bin"
    report.write_bytes((DATA / "sev-snp/project-oak/derived-turin-report.bin").read_bytes())
    args = ["verify", "--json", "--online", "--cache", str(tmp_path / "cache"),
            "--now", str(SNP_NOW), str(report)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert '"accepted": true' in r.stdout
    r = runner.invoke(app, args)
    assert r.exit_code == 0
    assert state.count("/vcek/v1/Turin/3b42092f69c656d3") == 1  # second run: cache hit
    r = runner.invoke(app, ["verify", "--json", "--now", str(SNP_NOW), str(report)])
    assert r.exit_code == 1
    assert "VCEK not supplied" in r.stdout


def test_show_and_prune_of_a_missing_cache_do_not_create_it(tmp_path: Path) -> None:
    cache = tmp_path / "never-used"
    r = runner.invoke(app, ["collateral", "show", "--cache", str(cache)])
    assert r.exit_code == 0, r.output
    assert "no collateral cached" in r.output
    r = runner.invoke(app, ["collateral", "show", "--cache", str(cache), "--json"])
    assert json.loads(r.stdout) == []
    r = runner.invoke(app, ["collateral", "prune", "--cache", str(cache)])
    assert r.exit_code == 0
    assert "0 entries removed" in r.stdout
    assert not cache.exists()


def test_fetch_for_a_node_snp_report_json(server: tuple[str, VendorState],
                                          tmp_path: Path) -> None:
    """`teegate node` with an SNP source puts the report under ``snp_report``."""
    url, _ = server
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"signing_address": "0x" + "11" * 20,
                                  "snp_report": MILAN.read_bytes().hex()}))
    out = tmp_path / "certs.pem"
    r = runner.invoke(app, ["collateral", "fetch", str(report), "--kds-url", url, "--product",
                            "Milan", "--no-cache", "--now", str(SNP_NOW), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert verify_report(MILAN.read_bytes(), out.read_bytes(), policy=Policy.default(),
                         now=SNP_NOW, product="Milan").accepted
    report.write_text(json.dumps({"signing_address": "0x" + "11" * 20, "snp_report": 5}))
    r = runner.invoke(app, ["collateral", "fetch", str(report), "--no-cache"])
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_messages_with_markup_characters_print_literally(tmp_path: Path) -> None:
    """File names and server answers are data, not console markup: a '[/]' in them must not
    turn an error message into a traceback."""
    odd = tmp_path / "no[/]such[bold]"
    r = runner.invoke(app, ["collateral", "fetch", str(odd), "--no-cache"])
    assert r.exit_code == 2
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "[/]such[bold]" in r.output


def test_verify_online_with_a_policy_requiring_the_crl_fails_closed_without_it(
    server: tuple[str, VendorState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = server
    monkeypatch.setenv("TEEGATE_KDS_URL", url)
    report = tmp_path / "report.bin"
    report.write_bytes((DATA / "sev-snp/project-oak/derived-turin-report.bin").read_bytes())
    policy = tmp_path / "policy.toml"
    policy.write_text("[snp]\nrequire_crl = true\n")
    r = runner.invoke(app, ["verify", "--json", "--online", "--cache", str(tmp_path / "c"),
                            "--policy", str(policy), "--now", str(SNP_NOW), str(report)])
    assert r.exit_code == 2, r.output  # the KDS has no CRL for it: no verdict, not a pass
    assert "/vcek/v1/Turin/crl" in r.stdout
    assert state.count("/vcek/v1/Turin/crl") >= 1


@pytest.mark.parametrize("wrap", ["base64", "ita", "tinfoil"])
def test_fetch_for_a_wrapped_quote(server: tuple[str, VendorState], tmp_path: Path,
                                   wrap: str) -> None:
    """A quote inside the wrappers users have (Azure base64, GCP's ITA JSON, a Tinfoil
    document) gets the same collateral as the bare quote."""
    import base64

    url, _ = server
    b64 = base64.b64encode(TDX.read_bytes()).decode()
    body = {"base64": b64,
            "ita": json.dumps({"tdx": {"quote": b64, "runtime_data": None}}),
            "tinfoil": json.dumps({"format": "https://tinfoil.sh/predicate/tdx-guest/v1",
                                   "body": b64})}[wrap]
    f = tmp_path / "evidence"
    f.write_text(body)
    r = runner.invoke(app, ["collateral", "fetch", str(f), "--pccs-url", url, "--no-cache",
                            "--now", str(TDX_NOW - 60)])
    assert r.exit_code == 0, r.output
    assert dcap_qvl.verify(TDX.read_bytes(), dcap_qvl.QuoteCollateralV3.from_json(r.stdout),
                           TDX_NOW).status == "UpToDate"

"""`teegate verify` as an operator runs it: real vectors, exit codes, readable and JSON output."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.cli import app

DATA = Path(__file__).parent.parent / "data"
TDX = DATA / "tdx" / "dcap-qvl"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["verify", *args])
    return result.exit_code, result.output


def test_accepted_tdx_quote_exits_0_and_lists_checks() -> None:
    code, out = _run(
        "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234",
        str(TDX / "tdx_quote"),
    )
    assert code == 0, out
    assert "ACCEPTED" in out
    assert "tdx.quote_signature" in out
    assert "UpToDate" in out


def test_json_output_has_the_documented_fields() -> None:
    code, out = _run(
        "--json", "--collateral", str(TDX / "sgx_quote_collateral.json"), "--now", "1752919277",
        str(TDX / "sgx_quote"),
    )
    doc = json.loads(out)
    # ConfigurationAndSWHardeningNeeded is outside the default policy's allowed statuses.
    assert code == 1
    assert doc["accepted"] is False
    assert doc["tee"] == "sgx"
    assert doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert {"name", "ok", "detail"} <= set(doc["checks"][0])
    failed = [c["name"] for c in doc["checks"] if not c["ok"]]
    assert failed == ["sgx.tcb_status"] or "tcb_status" in failed[0]


def test_hex_quote_is_detected(tmp_path: Path) -> None:
    hexfile = tmp_path / "quote.hex"
    hexfile.write_text((TDX / "tdx_quote").read_bytes().hex())
    code, out = _run(
        "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234",
        str(hexfile),
    )
    assert code == 0, out


def test_missing_collateral_is_a_named_rejection() -> None:
    code, out = _run(str(TDX / "tdx_quote"))
    assert code == 1
    assert "tdx.collateral" in out


def test_expired_collateral_is_rejected() -> None:
    code, out = _run(
        "--json", "--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1790000000",
        str(TDX / "tdx_quote"),
    )
    assert code == 1
    assert json.loads(out)["accepted"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/quote"], "cannot read"),
        (["--nonce", "abcd", "x"], "--nonce"),
        ([], "at least one EVIDENCE"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    code, out = _run(*args)
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_garbage_evidence_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "garbage.bin"
    f.write_bytes(b"\x01\x02garbage" * 10)
    code, out = _run(str(f))
    assert code == 2
    assert "unrecognised evidence" in out

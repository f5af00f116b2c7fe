"""A real NEAR AI Cloud attestation (nearai-cloud-verifier's fixture, CPU quote and 8 GPUs):
each part is read and judged on its content, and the constant nonce it was made for is refused
as a published sample, in the CPU binding and in every GPU's SPDM request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from teegate.cli import app

REPORT = (Path(__file__).resolve().parents[1] / "data" / "confidential-ai" /
          "nearai-cloud-verifier_report_gpt_oss_120b.json")
NONCE = "deadbeef" + "00" * 27 + "01"
runner = CliRunner()


def _verify(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["verify", "--json", *args, str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def test_the_whole_cloud_answer_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--nonce", NONCE, str(REPORT)])
    assert result.exit_code == 2
    assert "model_attestations" in result.output
    assert "Traceback" not in result.output


def test_the_model_attestation_is_refused_for_its_sample_nonce(tmp_path: Path) -> None:
    model = json.loads(REPORT.read_text())["model_attestations"][0]
    f = tmp_path / "model.json"
    f.write_text(json.dumps(model))
    code, doc = _verify(f, "--nonce", NONCE)
    assert code == 1
    checks = {c["name"]: c for c in doc["checks"]}
    gpu = {c["name"]: c for part in doc["components"] for c in part["checks"]}
    # Everything the evidence itself says is read: the event log replays, the padded key
    # binding holds, 8 GPUs with genuine chains and SPDM signatures.
    assert all(checks[f"eventlog.rtmr{i}"]["ok"] for i in range(4))
    assert checks["dstack.mrconfigid"]["ok"]
    assert checks["binding.key"]["ok"]
    assert len(doc["components"]) == 8
    assert all(gpu[f"gpu.{i}.chain"]["ok"] and gpu[f"gpu.{i}.signature"]["ok"]
               for i in range(8))
    # The nonce it answers is a published constant: refused where it is bound.
    assert not checks["binding.nonce"]["ok"]
    assert "sample nonce" in checks["binding.nonce"]["detail"]
    assert all(not gpu[f"gpu.{i}.nonce"]["ok"] for i in range(8))
    assert not checks["tdx.collateral"]["ok"]  # no collateral offline: named, not guessed

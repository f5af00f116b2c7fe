"""Malformed input to `teegate verify` is exit 2 with a message naming the input, never a
traceback: each case below crashed once (issue 13), and is derived from a real vector."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from teegate.cli import app

DATA = Path(__file__).resolve().parents[1] / "data"
TDX = DATA / "tdx" / "dcap-qvl"
SNP = DATA / "sev-snp" / "trustee"
GPU = DATA / "nvidia"
AUDIT = Path(__file__).resolve().parents[2] / "docs" / "policy.audit.toml"
QUOTE_ARGS = ["--collateral", str(TDX / "tdx_quote_collateral.json"), "--now", "1752919234"]
runner = CliRunner()


def _run(*args: str) -> Result:
    return runner.invoke(app, ["verify", *args])


def assert_malformed(result: Result, *names: str) -> None:
    """Exit 2, no exception escaped, and the message names each of ``names``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for name in names:
        assert name.lower() in flat.lower(), (name, flat)


def _version_at(der: bytes) -> int:
    """Offset of the version value in a v3 certificate's TBS (``a0 03 02 01 02``)."""
    i = der.find(b"\xa0\x03\x02\x01\x02")
    assert i > 0
    return i + 4


def _pem_blocks(data: bytes) -> list[re.Match[bytes]]:
    return list(re.finditer(rb"-----BEGIN CERTIFICATE-----\r?\n(.+?)-----END", data, re.S))


def _replace_der(data: bytes, m: re.Match[bytes], der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    body = b"".join(b64[i : i + 64] + b"\n" for i in range(0, len(b64), 64))
    return data[: m.start(1)] + body + data[m.end(1) :]


@pytest.mark.parametrize("option", ["--event-log", "--collateral", "--policy"])
def test_text_inputs_that_are_not_utf8(tmp_path: Path, option: str) -> None:
    f = tmp_path / "input.json"
    f.write_bytes(b'{"a": "\xff\xfe"}')
    assert_malformed(_run(option, str(f), str(TDX / "tdx_quote")), str(f), "not UTF-8")


def test_gpu_evidence_list_that_is_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "gpus.json"
    f.write_bytes((GPU / "ppcie_gpu_evidence.json").read_bytes().replace(b'"arch"', b'"\xffa"', 1))
    assert_malformed(_run("--policy", str(AUDIT), str(f)), str(f), "UTF-8")


@pytest.mark.parametrize("text", ["not json", "", "[1, 2]", '{"tcb_info": 1}'])
def test_collateral_that_is_not_collateral_is_malformed(tmp_path: Path, text: str) -> None:
    f = tmp_path / "collateral.json"
    f.write_text(text)
    assert_malformed(_run("--collateral", str(f), str(TDX / "tdx_quote")), f"collateral {f}")


def test_collateral_with_a_version_0_crl(tmp_path: Path) -> None:
    col = json.loads((TDX / "tdx_quote_collateral.json").read_text())
    crl = bytes.fromhex(col["root_ca_crl"])
    i = crl.find(b"\x02\x01\x01")  # TBSCertList version v2, near the start
    assert 0 < i < 12
    col["root_ca_crl"] = (crl[:i] + b"\x02\x01\x00" + crl[i + 3 :]).hex()
    f = tmp_path / "collateral.json"
    f.write_text(json.dumps(col))
    assert_malformed(_run("--collateral", str(f), str(TDX / "tdx_quote")), f"collateral {f}",
                     "CRL version")


def test_quote_with_a_malformed_pck_certificate(tmp_path: Path) -> None:
    quote = (TDX / "tdx_quote").read_bytes()
    m = _pem_blocks(quote)[0]
    der = base64.b64decode(b"".join(m.group(1).split()))
    v = _version_at(der)
    bad = _replace_der(quote, m, der[:v] + b"\x05" + der[v + 1 :])
    assert len(bad) == len(quote)
    f = tmp_path / "quote"
    f.write_bytes(bad)
    assert_malformed(_run(*QUOTE_ARGS, str(f)), f"evidence {f}", "certification data",
                     "X509 version")


def _vcek(tmp_path: Path, old: bytes, new: bytes) -> Path:
    vcek = (SNP / "test-vcek.der").read_bytes()
    assert vcek.count(old) == 1
    f = tmp_path / "vcek.der"
    f.write_bytes(vcek.replace(old, new))
    return f


@pytest.mark.parametrize(("old", "new", "why"), [
    (b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x07", "X509 version"),
    # id-ecPublicKey -> id-ecDH-style OID cryptography does not know as a key type
    (bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0203"), "key type"),
])
def test_malformed_vcek(tmp_path: Path, old: bytes, new: bytes, why: str) -> None:
    f = _vcek(tmp_path, old, new)
    report = SNP / "test-report.bin"
    assert_malformed(_run("--certs", str(f), "--now", "1756684800", str(report)),
                     f"evidence {report}", "certificate 1 of 1", why)


def _device_chain(tmp_path: Path, index: int, old: bytes, new: bytes) -> Path:
    chain = (GPU / "hopperCertChain.txt").read_bytes()
    m = _pem_blocks(chain)[index]
    der = base64.b64decode(b"".join(m.group(1).split()))
    assert old in der  # the first is the subject key (an extension may hold another)
    f = tmp_path / "chain.pem"
    f.write_bytes(_replace_der(chain, m, der.replace(old, new, 1)))
    return f


P384 = bytes.fromhex("06072a8648ce3d0201" "06052b81040022")  # id-ecPublicKey, secp384r1
P521 = bytes.fromhex("06072a8648ce3d0201" "06052b81040023")  # id-ecPublicKey, secp521r1


@pytest.mark.parametrize(("index", "old", "new"), [
    (0, P384, P521),  # the leaf names P-521 but carries a P-384 point
    (1, P384, P521),  # so does an intermediate: the leaf's signature cannot be checked
    (2, b"\x03\x62\x00\x04", b"\x03\x62\x00\x05"),  # a point in no known encoding
])
def test_malformed_gpu_device_certificate(tmp_path: Path, index: int, old: bytes,
                                          new: bytes) -> None:
    f = _device_chain(tmp_path, index, old, new)
    evidence = GPU / "hopperAttestationReport.txt"
    assert_malformed(_run("--certs", str(f), "--policy", str(AUDIT), "--now", "1750000000",
                          str(evidence)),
                     f"evidence {evidence}", f"certificate {index + 1} of 5")


@pytest.mark.parametrize("now", ["-5", str(2**64), str(2**64 + 1), "nan", "1e9", "253402300800"])
def test_now_outside_unix_time_is_a_usage_error(now: str) -> None:
    result = _run(*QUOTE_ARGS[:2], "--now", now, str(TDX / "tdx_quote"))
    assert_malformed(result, "--now")
    assert "dcap" not in result.output


def test_markup_in_evidence_is_printed_not_interpreted(tmp_path: Path) -> None:
    """rich reads ``[...]`` as markup: an unmatched closing tag from evidence raised."""
    report = json.loads((DATA / "tdx" / "dstack" /
                         "verifier_fixtures_quote-report.json").read_text())
    f = tmp_path / "report.json"
    f.write_text(json.dumps({**report, "signing_address": "0x" + "12" * 20,
                             "signing_algo": "[/oops]"}))
    result = _run(str(f))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert "'[/oops]'" in result.output

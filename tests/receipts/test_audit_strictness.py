"""``teegate audit`` edge cases found in review (each test failed before its fix)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.receipts import ProviderSignature, Receipt, ReceiptLog, make_bundle, parse_bundle
from teegate.receipts.audit import audit_bundle
from teegate.receipts.bundle import TlogProof
from teegate.receipts.note import NoteSigner

from .conftest import ORIGIN, make_receipt
from .test_http_audit import served  # noqa: F401 - fixture


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ReceiptLog]:
    lg = ReceiptLog(
        f"sqlite:///{tmp_path / 'a.db'}",
        origin=ORIGIN,
        key=Ed25519PrivateKey.generate(),
        checkpoint_interval=0,
    )
    yield lg
    lg.close()


def _bundle(log: ReceiptLog, r: Receipt) -> dict[str, Any]:
    log.submit(r)
    p = log.prove(r.receipt_id)
    assert p is not None
    return make_bundle(p.receipt.document, TlogProof(p.index, p.proof, p.checkpoint.note))


def _audit(log: ReceiptLog, b: dict[str, Any], **kw: Any) -> dict[str, str]:
    rep = audit_bundle(
        parse_bundle(json.dumps(b)), "t", log_verifiers=[log.verifier], receipt_keys=[], **kw
    )
    return {c.name: c.status for c in rep.checks}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), catch_exceptions=False)


def test_since_may_be_newer_than_the_receipts_checkpoint(log: ReceiptLog) -> None:
    """An auditor remembering a later checkpoint used to get 'log went back' for old receipts."""
    b = _bundle(log, make_receipt(0))
    same = log.latest_checkpoint()
    assert same is not None
    for i in range(1, 5):
        log.submit(make_receipt(i))
    later = log.checkpoint()

    class Client:
        def checkpoint(self) -> str:
            return later.note

        def inclusion(self, receipt_id: str, tree_size: int) -> tuple[int, list[bytes]]:
            raise AssertionError("not needed")

        def consistency(self, size1: int, size2: int) -> list[bytes]:
            return log.consistency_proof(size1, size2)

    st = _audit(log, b, since=later.note, client=Client())
    assert st["checkpoint.consistency"] == "ok"
    assert st["receipt.inclusion"] == "ok"
    # remembering exactly the receipt's own checkpoint is trivially consistent
    st = _audit(log, b, since=same.note)
    assert st["checkpoint.consistency"] == "ok"


def test_provider_signature_is_reverified_offline(log: ReceiptLog) -> None:
    """The receipt's claim 'verified' is checked, not trusted: bad signature or text fails."""
    good = make_receipt(1)
    assert good.provider_signature is not None
    st = _audit(log, _bundle(log, good))
    assert st["provider.signature"] == "ok"

    forged = ProviderSignature(
        text=good.provider_signature.text,
        signature="0x" + "ab" * 65,
        signing_key=good.provider_signature.signing_key,
        algo="ecdsa",
        verified=True,
    )
    st = _audit(log, _bundle(log, make_receipt(2, provider_signature=forged)))
    assert st["receipt.signature"] == "ok"  # the gateway did sign this receipt...
    assert st["provider.signature"] == "fail"  # ...but its claim does not hold

    # a real signature over other hashes than the ones the receipt records
    other = make_receipt(3, request_forwarded_sha256="ff" * 32)
    assert other.provider_signature is not None
    moved = make_receipt(4, provider_signature=other.provider_signature)
    st = _audit(log, _bundle(log, moved))
    assert st["provider.signature"] == "fail"


def test_attested_claim_without_verdict_or_signature_fails(log: ReceiptLog) -> None:
    st = _audit(log, _bundle(log, make_receipt(5, attestation=None)))
    assert st["receipt.trust_claim"] == "fail"
    st = _audit(log, _bundle(log, make_receipt(6, provider_signature=None)))
    assert st["receipt.trust_claim"] == "fail"
    # attested+gpu citing an attestation without GPU evidence
    st = _audit(log, _bundle(log, make_receipt(16, trust_level="attested+gpu")))
    assert st["receipt.trust_claim"] == "fail"
    # a standard call claims nothing: not applicable, and that is no reason to fail
    plain = make_receipt(
        7, trust_level="standard", trust_required="standard", attestation=None,
        provider_signature=None,
    )
    st = _audit(log, _bundle(log, plain))
    assert st["receipt.trust_claim"] == "n/a"
    assert st["attestation.evidence"] == "n/a"
    assert st["provider.signature"] == "n/a"
    rep = audit_bundle(
        parse_bundle(json.dumps(_bundle(log, make_receipt(
            8, trust_level="standard", trust_required="standard", attestation=None,
            provider_signature=None,
        )))),
        "t", log_verifiers=[log.verifier], receipt_keys=[],
    )
    assert rep.ok, rep.to_json()


@pytest.mark.parametrize(
    "body",
    [
        '{"receipt": {"api_version": "aci/1"}, "inclusion_proof": ["AA=="], '
        '"checkpoint": "x", "leaf_index": 1e999}',
        '{"receipt": {"api_version": "aci/1"}, "inclusion_proof": 5, "checkpoint": "x", '
        '"leaf_index": 1}',
        '{"receipt": {"api_version": "aci/1"}, "inclusion_proof": [], "checkpoint": "x", '
        '"leaf_index": -1}',
        '{"receipt": {"api_version": "aci/1"}, "inclusion_proof": [], "checkpoint": "x", '
        '"leaf_index": "7"}',
        '{"receipt": {"api_version": "aci/1"}, "tlog_proof": "c2sp.org/tlog-proof@v1"}',
        "[1]",
    ],
)
def test_malformed_bundles_exit_2_naming_the_file(tmp_path: Path, body: str) -> None:
    p = tmp_path / "odd.json"
    p.write_text(body)
    key = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).vkey
    res = _cli("audit", str(p), "--log-key", key)
    assert res.exit_code == 2, res.output
    assert "odd.json" in res.output
    assert "Traceback" not in res.output


def test_unreadable_receipt_fails_with_its_reason(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text('{"api_version": "aci/1", "v": "other/9"}')
    key = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).vkey
    res = _cli("audit", str(p), "--log-key", key)
    assert res.exit_code == 1
    assert "receipt.format" in res.output
    assert "FAILED" in res.output


def test_monitor_of_an_unreachable_log_fails_with_exit_1(tmp_path: Path) -> None:
    """A monitor that cannot reach the log has not verified anything: 1, not 'bad input'."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    key = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).vkey
    state = tmp_path / "state"
    res = _cli("audit", "--log", f"http://127.0.0.1:{port}", "--log-key", key,
               "--state", str(state))
    assert res.exit_code == 1, res.output
    assert "unreachable" in res.output
    assert not state.exists()


def test_several_receipts_get_a_summary_line(log: ReceiptLog, tmp_path: Path) -> None:
    plain = {"trust_level": "standard", "trust_required": "standard", "attestation": None,
             "provider_signature": None}
    files = []
    for i, over in enumerate([plain, {}]):
        p = tmp_path / f"{i}.json"
        p.write_text(json.dumps(_bundle(log, make_receipt(20 + i, **over))))
        files.append(str(p))
    res = _cli("audit", *files, "--log-key", log.vkey)
    assert res.exit_code == 1  # the attested one lacks its evidence
    assert "2 receipts: 1 fully verified, 1 with skipped checks, 0 failed" in res.output


def test_an_empty_checkpoint_must_have_the_empty_root() -> None:
    """'Every tree extends the empty tree' holds only for a size-0 checkpoint with MTH({})."""
    from teegate.receipts import Checkpoint, merkle
    from teegate.receipts.audit import check_consistency

    bogus = Checkpoint(ORIGIN, 0, bytes(32))
    new = Checkpoint(ORIGIN, 3, bytes(32))
    status, detail = check_consistency(bogus, new, None)
    assert status == "fail", detail
    empty = Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT)
    assert check_consistency(empty, new, None)[0] == "ok"


def test_monitor_state_that_cannot_be_written_is_an_error_not_a_traceback(
    served: tuple[str, ReceiptLog], tmp_path: Path  # noqa: F811 - the fixture
) -> None:
    url, lg = served
    lg.submit(make_receipt(1))
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = CliRunner().invoke(
        cli_app, ["audit", "--log", url, "--log-key", lg.vkey, "--state", str(blocker / "st")]
    )
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "error" in res.output

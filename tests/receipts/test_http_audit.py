"""Routes over real HTTP (uvicorn on loopback) and ``teegate audit`` on what they serve."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Header, HTTPException
from typer.testing import CliRunner

from teegate.cli import app as cli_app
from teegate.receipts import ReceiptLog
from teegate.receipts.http import receipts_router
from teegate.receipts.note import NoteSigner

from .conftest import ORIGIN, make_receipt


@dataclass(frozen=True)
class Who:
    kind: str
    id: str
    agents: frozenset[str]


def principal(authorization: str | None = Header(default=None)) -> Who:
    """Test credentials: ``Bearer kind:id:agent1,agent2``."""
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "no credential")
    kind, pid, agents = authorization[len("Bearer ") :].split(":")
    return Who(kind, pid, frozenset(a for a in agents.split(",") if a))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ReceiptLog]]:
    log = ReceiptLog(
        f"sqlite:///{tmp_path / 'gw.db'}",
        origin=ORIGIN,
        key=Ed25519PrivateKey.generate(),
        checkpoint_interval=0,
    )
    app = FastAPI()
    app.include_router(receipts_router(log, principal))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", log
    server.should_exit = True
    t.join(timeout=10)
    log.close()


def _auth(kind: str, pid: str, agents: str = "") -> dict[str, str]:
    return {"authorization": f"Bearer {kind}:{pid}:{agents}"}


def test_receipt_access_control(served: tuple[str, ReceiptLog]) -> None:
    url, log = served
    for i in range(6):
        log.submit(make_receipt(i))  # agents agent-0, agent-1, agent-2
    rid = "rcpt_000001"  # agent-1
    with httpx.Client(base_url=url) as c:
        assert c.get(f"/v1/receipts/{rid}").status_code == 401
        assert c.get(f"/v1/receipts/{rid}", headers=_auth("agent", "agent-1")).status_code == 200
        r = c.get(f"/v1/receipts/{rid}", headers=_auth("agent", "agent-2"))
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found"
        ok = c.get(f"/v1/receipts/{rid}", headers=_auth("owner", "o1", "agent-1,agent-0"))
        assert ok.status_code == 200
        no = c.get(f"/v1/receipts/{rid}", headers=_auth("owner", "o2", "agent-0"))
        assert no.status_code == 404
        assert c.get(f"/v1/receipts/{rid}", headers=_auth("operator", "op")).status_code == 200
        assert c.get("/v1/receipts/nope", headers=_auth("operator", "op")).status_code == 404
        body = ok.json()
        assert body["receipt"]["receipt_id"] == rid
        assert body["checkpoint"].startswith(ORIGIN + "\n")
        assert body["tlog_proof"].startswith("c2sp.org/tlog-proof@v1\nindex 1\n")


def _cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli_app, list(args), catch_exceptions=False, env=env)


def test_audit_n_receipts_and_monitor(served: tuple[str, ReceiptLog], tmp_path: Path) -> None:
    url, log = served
    n = 12
    for i in range(n):
        log.submit(make_receipt(i))
    op = _auth("operator", "op")
    files = []
    with httpx.Client(base_url=url, headers=op) as c:
        old_cp = c.get("/v1/log/checkpoint").text
        (tmp_path / "old.checkpoint").write_text(old_cp)
        for i in range(n):
            rid = f"rcpt_{i:06d}"
            p = tmp_path / f"{rid}.json"
            p.write_text(c.get(f"/v1/receipts/{rid}/bundle").text)
            files.append(str(p))
        vkey = c.get("/v1/log/vkey").text.strip()
    assert vkey == log.vkey
    # the bundles carry no attestation evidence: a skipped check is not a pass by default
    res = _cli("audit", *files, "--log-key", vkey)
    assert res.exit_code == 1, res.output
    assert "NOT fully verified" in res.output
    assert "attestation.evidence" in res.output
    res = _cli("audit", *files, "--log-key", vkey, "--json", "--allow-skipped")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["ok"]
    assert out["receipts"][0]["skipped"] == ["attestation.evidence"]
    assert len(out["receipts"]) == n
    names = {c["name"]: c["status"] for c in out["receipts"][0]["checks"]}
    assert names["receipt.signature"] == "ok"
    assert names["provider.signature"] == "ok"
    assert names["receipt.trust_claim"] == "ok"
    assert names["receipt.inclusion"] == "ok"
    assert names["checkpoint.signature"] == "ok"
    assert names["attestation.evidence"] == "skip"

    # no log key: fail closed
    res = _cli("audit", files[0])
    assert res.exit_code == 2
    assert "--log-key is required" in res.output
    # a different log key: the checkpoint does not verify
    wrong = NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).vkey
    assert _cli("audit", files[0], "--log-key", wrong).exit_code == 1

    # a receipt altered in one field fails
    doc = json.loads(Path(files[3]).read_text())
    doc["receipt"]["model"] = "gpt-cheap"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    res = _cli("audit", str(bad), "--log-key", vkey, "--json")
    assert res.exit_code == 1
    checks = {c["name"]: c["status"] for c in json.loads(res.output)["receipts"][0]["checks"]}
    assert checks["receipt.signature"] == "fail"
    assert checks["receipt.inclusion"] == "fail"

    # more receipts, then consistency with the remembered checkpoint via --log
    for i in range(n, n + 9):
        log.submit(make_receipt(i))
    new_cp = log.checkpoint()
    (tmp_path / "new.checkpoint").write_text(new_cp.note)
    res = _cli(
        "audit",
        files[0],
        "--log-key",
        vkey,
        "--checkpoint",
        str(tmp_path / "new.checkpoint"),
        "--since",
        str(tmp_path / "old.checkpoint"),
        "--log",
        url,
        "--json",
        "--allow-skipped",
        env={"TEEGATE_LOG_TOKEN": "operator:op:"},  # a secret never goes on a command line
    )
    assert res.exit_code == 0, res.output
    checks = {c["name"]: c["status"] for c in json.loads(res.output)["receipts"][0]["checks"]}
    assert checks["checkpoint.consistency"] == "ok"

    # monitor: first sight, then growth, both consistent
    state = tmp_path / "state.checkpoint"
    assert _cli("audit", "--log", url, "--log-key", vkey, "--state", str(state)).exit_code == 0
    log.submit(make_receipt(100))
    log.checkpoint()
    res = _cli("audit", "--log", url, "--log-key", vkey, "--state", str(state), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["previous_size"] == n + 9


def test_audit_usage_errors(tmp_path: Path) -> None:
    assert _cli("audit").exit_code == 2
    junk = tmp_path / "junk.json"
    junk.write_text("{nope")
    assert _cli("audit", str(junk), "--log-key", "a+00000000+AAAA").exit_code == 2


def test_aci_route_and_body_hashes(served: tuple[str, ReceiptLog], tmp_path: Path) -> None:
    import hashlib

    url, log = served
    req, resp = b'{"model":"m","messages":[]}', b'{"id":"chatcmpl-1","choices":[]}'
    log.submit(
        make_receipt(
            1,
            request_received_sha256=hashlib.sha256(req).hexdigest(),
            response_returned_sha256=hashlib.sha256(resp).hexdigest(),
        )
    )
    with httpx.Client(base_url=url, headers=_auth("agent", "agent-1")) as c:
        doc = c.get("/v1/aci/receipts/rcpt_000001")
        assert doc.status_code == 200
        assert doc.headers["x-aci-version"] == "aci/1"
        assert doc.json()["api_version"] == "aci/1"
        assert c.get("/v1/aci/receipts/rcpt_000001", headers=_auth("agent", "x")).status_code == 404
        bundle = tmp_path / "b.json"
        bundle.write_text(c.get("/v1/receipts/rcpt_000001/bundle").text)
    (tmp_path / "req").write_bytes(req)
    (tmp_path / "resp").write_bytes(resp)
    (tmp_path / "other").write_bytes(resp + b" ")
    base = ["audit", str(bundle), "--log-key", log.vkey, "--request", str(tmp_path / "req")]
    base.append("--allow-skipped")
    assert _cli(*base, "--response", str(tmp_path / "resp")).exit_code == 0
    res = _cli(*base, "--response", str(tmp_path / "other"), "--json")
    assert res.exit_code == 1
    checks = {c["name"]: c["status"] for c in json.loads(res.output)["receipts"][0]["checks"]}
    assert checks["receipt.response_hash"] == "fail"
    assert checks["receipt.request_hash"] == "ok"

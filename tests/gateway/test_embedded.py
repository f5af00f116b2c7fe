"""`teegate serve` with no configuration: the embedded development default, end to end with
the openai SDK, as a newcomer would run it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_embedded_default(tmp_path: Path, dev_pki: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dev-pki").symlink_to(dev_pki)
    port = _free_port()
    exe = Path(sys.executable).parent / "teegate"
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], cwd=tmp_path,
                            env={**os.environ, "TEEGATE_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "teegate serve did not become ready"
            time.sleep(0.2)
        key = (home / "default-agent.key").read_text().strip()
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        r = client.chat.completions.with_raw_response.create(
            model="teegate-builtin", messages=[{"role": "user", "content": "hello"}])
        assert r.parse().choices[0].message.content
        assert r.headers["x-teegate-trust"] == "attested"
        assert r.headers["x-teegate-development"] == "true"
        assert r.headers["x-teegate-receipt"].startswith("rcpt_")
        # The gateway runs in the development TEE too: its own report is there at once.
        own = httpx.get(base + "/v1/attestation/report",
                        params={"nonce": "ab" * 32, "model": "teegate-builtin"}).json()
        assert own["gateway_attestation"]["info"]["development"] is True
        assert own["gateway_attestation"]["request_nonce"] == "ab" * 32
        assert len(own["model_attestations"]) == 1
        providers = httpx.get(base + "/v1/providers").json()["data"]
        assert providers[0]["label"].startswith("DEVELOPMENT")
        wallet = httpx.get(base + "/v1/wallets/default",
                           headers={"authorization": f"Bearer {key}"}).json()
        assert 0 < wallet["available"] + wallet["held"] < 10_000_000  # the call was charged
        # The banner's audit recipe: the call's bundle verifies offline, evidence included.
        receipt = r.headers["x-teegate-receipt"]
        auth = {"authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 20
        while (b := httpx.get(f"{base}/v1/receipts/{receipt}/bundle", headers=auth)
               ).status_code != 200:
            assert time.monotonic() < deadline, b.text
            time.sleep(0.2)
        (tmp_path / "call.json").write_bytes(b.content)
        vkey = httpx.get(base + "/v1/log/vkey").text.strip()
        policy = home / "dev-pki" / "development-policy.json"
        audit = subprocess.run([str(exe), "audit", str(tmp_path / "call.json"), "--log-key",
                                vkey, "--policy", str(policy), "--json"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "TEEGATE_HOME": str(home)})
        assert audit.returncode == 0, audit.stdout + audit.stderr
        verdict = json.loads(audit.stdout)["receipts"][0]
        assert verdict["ok"] is True
        assert verdict["skipped"] == []
        assert "attestation.evidence" in [c["name"] for c in verdict["checks"]]
        # The default shows its own model identity: the compose its development TD measured.
        from teegate.sim.compose import DEFAULT_APP_COMPOSE

        assert verdict["model_identity"]["compose_hash"] == hashlib.sha256(
            DEFAULT_APP_COMPOSE).hexdigest()
        assert verdict["model_identity"]["unpinned_images"] == ["teegate-node:development"]
        assert "attestation.model_identity" in [c["name"] for c in verdict["checks"]]
        # The production policy refuses the same development evidence.
        strict = subprocess.run([str(exe), "audit", str(tmp_path / "call.json"), "--log-key",
                                 vkey], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "TEEGATE_HOME": str(home)})
        assert strict.returncode == 1
        assert "attestation.evidence" in strict.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    text = out.decode()
    assert "DEVELOPMENT" in text
    assert f'base_url="http://127.0.0.1:{port}/v1"' in text
    assert "Traceback" not in text
    assert f"--policy {home / 'dev-pki' / 'development-policy.json'}" in text

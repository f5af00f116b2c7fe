"""A dstack guest agent as the simulator serves it: HTTP RPC (``POST /GetQuote``, ``/Info``,
``/GetKey``, ``/Version``) on a Unix socket or a loopback port, dev-TDX backed.

Written from dstack's formats (REFERENCE §5.1; Dstack-TEE/dstack ``sdk/curl/api.md``), not
its code. ``GetKey(path, purpose)`` releases a 32-byte secp256k1 scalar derived from this
app's key and the path (the derivation is ours: only its stability matters), with the KMS
signature chain dstack publishes: ``[app key's signature over "<purpose>:<derived public key,
compressed hex>", KMS root's signature over "dstack-kms-issued:" ‖ app_id ‖ app public key
(compressed)]``, both recoverable secp256k1 over keccak256 of the message, 65 bytes r‖s‖v.
"""

from __future__ import annotations

import hashlib
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coincurve
import uvicorn
from eth_hash.auto import keccak
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from teegate.sim import DevTdx

APP_ID = bytes.fromhex("ab" * 20)
EVENT_LOG = [{"imr": 3, "event_type": 134217729, "digest": "", "event": "app-id",
              "event_payload": "ab" * 20}]
APP_COMPOSE = json.dumps({"manifest_version": 2, "name": "demo", "runner": "docker-compose",
                          "docker_compose_file": "services: {}\n"})


def recoverable_sign(key: coincurve.PrivateKey, message: bytes) -> bytes:
    return key.sign_recoverable(bytes(keccak(message)), hasher=None)


@dataclass
class Agent:
    """Knobs and counters of the fake agent."""

    info_failures: int = 0  # Info() answers 500 this many times first
    info_calls: int = 0
    key_calls: list[dict[str, Any]] = field(default_factory=list)
    app_key: coincurve.PrivateKey = field(
        default_factory=lambda: coincurve.PrivateKey(hashlib.sha256(b"fake app key").digest()))
    kms_root: coincurve.PrivateKey = field(
        default_factory=lambda: coincurve.PrivateKey(hashlib.sha256(b"fake kms root").digest()))

    def derived(self, path: str) -> bytes:
        return hashlib.sha256(self.app_key.secret + b"/" + path.encode()).digest()

    def get_key(self, path: str, purpose: str) -> dict[str, Any]:
        secret = self.derived(path)
        pub = coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()
        app_sig = recoverable_sign(self.app_key, f"{purpose}:{pub}".encode())
        root_sig = recoverable_sign(self.kms_root, b"dstack-kms-issued:" + APP_ID
                                    + self.app_key.public_key.format(compressed=True))
        return {"key": secret.hex(), "signature_chain": [app_sig.hex(), root_sig.hex()]}


def agent_app(dev_pki: Path, agent: Agent) -> Starlette:
    tdx = DevTdx.load_or_create(dev_pki)

    async def get_quote(request: Request) -> Response:
        rd = bytes.fromhex((await request.json())["report_data"])
        return JSONResponse({"quote": tdx.quote(rd.ljust(64, b"\0")).hex(),
                             "event_log": json.dumps(EVENT_LOG), "report_data": rd.hex(),
                             "vm_config": ""})

    async def info(request: Request) -> Response:
        agent.info_calls += 1
        if agent.info_failures > 0:
            agent.info_failures -= 1
            return JSONResponse({"error": "agent not ready"}, 500)
        tcb = {"mrtd": "00" * 48, "rtmr0": "00" * 48, "rtmr1": "00" * 48, "rtmr2": "00" * 48,
               "rtmr3": "00" * 48, "app_compose": APP_COMPOSE, "event_log": EVENT_LOG,
               "mr_aggregated": "", "os_image_hash": "", "compose_hash": "ef" * 32,
               "device_id": ""}
        return JSONResponse({"app_id": APP_ID.hex(), "instance_id": "cd" * 20, "app_cert": "",
                             "tcb_info": json.dumps(tcb), "app_name": "demo", "device_id": "",
                             "key_provider_info": "", "compose_hash": "ef" * 32})

    async def get_key(request: Request) -> Response:
        body = await request.json()
        agent.key_calls.append(body)
        if body.get("algorithm", "secp256k1") not in ("secp256k1", "k256", ""):
            return JSONResponse({"error": "unsupported algorithm"}, 400)
        return JSONResponse(agent.get_key(body.get("path", ""), body.get("purpose", "")))

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.5.4", "rev": "fake"})

    return Starlette(routes=[Route("/GetQuote", get_quote, methods=["POST"]),
                             Route("/Info", info, methods=["POST"]),
                             Route("/GetKey", get_key, methods=["POST"]),
                             Route("/Version", version, methods=["POST"])])


@contextmanager
def serve_unix(app: Any) -> Iterator[str]:
    """Serve ``app`` on a Unix socket, as the guest agent listens; yields its path."""
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "dstack.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                               access_log=False, timeout_graceful_shutdown=1))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        try:
            yield path
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()

"""The embedded default of ``teegate serve`` without configuration: SQLite in the data
directory and one in-process development TEE node (built-in engine, development TDX) on a
loopback port. Everything it serves is labelled DEVELOPMENT: the TEE is simulated."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from teegate import paths
from teegate.errors import ConfigError
from teegate.gateway.config import GatewayConfig, parse_config
from teegate.gateway.store import GatewayStore

log = logging.getLogger("teegate.gateway")
DEFAULT_AGENT = "default"
KEY_FILE = "default-agent.key"
DEV_CREDIT = 10_000_000  # 10 USD in micro-units: development credit of the default agent
DEV_CREDIT_KEY = "embedded:default-agent:development-credit"


@dataclass
class DevNode:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def start_dev_node(pki_dir: Path | None = None) -> DevNode:
    """The teegate node app (development TDX, built-in engine) on 127.0.0.1:<free port>, in a
    thread of this process."""
    from teegate.node import BuiltinEngine, DevTdxSource, create_node_app
    from teegate.sim.compose import DEFAULT_APP_COMPOSE

    # The default measures its own compose, so its verdicts and receipts show an identity.
    app = create_node_app(DevTdxSource(pki_dir or paths.dev_pki_dir(),
                                       app_compose=DEFAULT_APP_COMPOSE), BuiltinEngine())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="teegate-dev-node")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise ConfigError("the embedded development node did not start")
        time.sleep(0.01)
    return DevNode(f"http://127.0.0.1:{port}", server, thread)


def embedded_config(node_url: str, *, host: str, port: int) -> GatewayConfig:
    from teegate.node import BUILTIN_MODEL

    return parse_config({
        # the gateway runs in the development TEE too, so it can be verified at once
        "gateway": {"listen": f"{host}:{port}", "admin_key_env": "TEEGATE_ADMIN_KEY",
                    "tee": "dev-tdx"},
        "providers": [{
            "id": "dev-node", "platform": "tee-node", "base_url": node_url + "/v1",
            "models": [BUILTIN_MODEL], "development": True,
            "prices": {BUILTIN_MODEL: {"input": 100, "output": 300}},
        }],
        "agents": [{"id": DEFAULT_AGENT, "trust": "attested"}],
    })


def default_agent_key(store: GatewayStore, data_dir: Path) -> str:
    """The default agent's key, kept in ``data_dir/default-agent.key`` (mode 0600); a new one
    is created when the file is missing or the stored key is no longer valid."""
    path = data_dir / KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if store.agent_by_key(key) is not None:
            return key
    key = store.create_key(DEFAULT_AGENT, trust="attested")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def banner(base_url: str, key: str, *, key_path: Path, policy_path: Path) -> str:
    return f"""
teegate gateway (embedded DEVELOPMENT default: simulated TEE, not confidential)
  OpenAI base URL : {base_url}/v1
  API key         : {key}   (stored in {key_path})
  model           : teegate-builtin  (trust level: attested, development TDX)
  wallet          : development credit for agent "default" (GET /v1/wallets/default)
  dashboard       : {base_url}/dashboard  (log in with the API key above)

  from openai import OpenAI
  client = OpenAI(base_url="{base_url}/v1", api_key="{key}")
  r = client.chat.completions.with_raw_response.create(
      model="teegate-builtin", messages=[{{"role": "user", "content": "hello"}}])
  print(r.parse().choices[0].message.content, r.headers["x-teegate-trust"])

  audit a call offline (its id is in the x-teegate-receipt header):
  curl -H "authorization: Bearer $(cat {key_path})" \\
      {base_url}/v1/receipts/RECEIPT_ID/bundle > call.json
  teegate audit call.json --log-key "$(curl -s {base_url}/v1/log/vkey)" \\
      --policy {policy_path}
"""

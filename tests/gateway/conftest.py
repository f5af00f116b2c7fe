"""Fixtures: development nodes, a plain hosted-style upstream and gateways on loopback."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from teegate.gateway import GatewayStore, create_app, parse_config
from teegate.ledger import Ledger, open_ledger
from teegate.node import BuiltinEngine, engine_app
from teegate.receipts import ReceiptLog
from tests.gateway.loopback import Server, dev_node, serving


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev-pki")


@pytest.fixture(scope="session", autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, dev_pki: Path) -> Iterator[None]:
    """Development policies read the PKI from TEEGATE_HOME/dev-pki: point it at ours."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    (home / "dev-pki").symlink_to(dev_pki)
    mp.setenv("TEEGATE_HOME", str(home))
    mp.setenv("TG_TEST_ADMIN", "admin-" + uuid.uuid4().hex)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def plain_upstream() -> Iterator[Server]:
    with serving(engine_app(BuiltinEngine(("gpt-plain", "shared-model")))) as s:
        yield s


@pytest.fixture(scope="module")
def node_a(dev_pki: Path) -> Iterator[Server]:
    with serving(dev_node(dev_pki, ("teegate-builtin", "shared-model"))) as s:
        yield s


class Gw:
    """A running gateway and an agent key for it."""

    def __init__(self, server: Server, app: Any, key: str, store: GatewayStore) -> None:
        self.server = server
        self.app = app
        self.gateway = app.gateway
        self.key = key
        self.store = store
        self.url = server.url + "/v1"

    def provider(self, pid: str) -> Any:
        return self.gateway.by_id[pid]


GatewayFactory = Callable[..., Gw]


@pytest.fixture
def make_gateway(tmp_path: Path, request: pytest.FixtureRequest) -> GatewayFactory:
    """Each gateway stops when its test ends, before any fixture it was given (a ledger, a
    receipt log) is closed: closing SQLite under the settle thread can crash the process."""

    def make(providers: list[dict[str, Any]], *, agent_trust: str = "standard",
             gateway: dict[str, Any] | None = None, db: str | None = None,
             collateral: dict[str, Any] | None = None, **kwargs: Any) -> Gw:
        url = db or f"sqlite:///{tmp_path / ('gw-' + uuid.uuid4().hex[:8] + '.db')}"
        cfg = parse_config({
            "gateway": {"database_url": url, "state_poll_seconds": 0.2,
                        "admin_key_env": "TG_TEST_ADMIN", **(gateway or {})},
            "providers": providers,
            "collateral": {"cache_dir": str(tmp_path / "collateral"), **(collateral or {})},
            **({"models": kwargs.pop("models")} if "models" in kwargs else {}),
        })
        store = kwargs.pop("store", None) or GatewayStore(url)
        key = store.create_key("agent-" + uuid.uuid4().hex[:8], trust=agent_trust)
        app = create_app(cfg, store=store, **kwargs)
        server = Server(app, lifespan="on")
        request.node.addfinalizer(server.stop)  # runs before the item's fixtures close
        return Gw(server, app, key, store)

    return make


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    lg = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield lg
    lg.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[ReceiptLog]:
    rl = ReceiptLog(f"sqlite:///{tmp_path / 'log.db'}", origin="teegate.test/log",
                    key=Ed25519PrivateKey.generate(), checkpoint_interval=0)
    yield rl
    rl.close()


def wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``cond()`` holds (settlement and receipts run after the response)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def admin_headers() -> dict[str, str]:
    """The operator's Authorization header (the admin key the session fixture set)."""
    return {"authorization": f"Bearer {os.environ['TG_TEST_ADMIN']}"}

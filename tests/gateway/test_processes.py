"""Money through real `teegate serve` processes: 64 concurrent calls against a wallet that
affords only some of them (one process on SQLite, two processes sharing PostgreSQL), and a
gateway killed with SIGKILL mid-load, after which `teegate ledger check` passes and the
restarted gateway releases the holds the dead one left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from teegate.gateway import GatewayStore
from teegate.ledger import Ledger, open_ledger
from teegate.ledger.pricing import Price
from teegate.node import BuiltinEngine, engine_app
from tests.gateway.loopback import Server, serving
from tests.gateway.test_errors import SlowStream

EXE = Path(sys.executable).parent / "teegate"
PG_URL = os.environ.get("TEEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# One unit per output token, input free, and max_tokens below the built-in engine's shortest
# answer (5 words): every call's worst-case hold equals its cost, so exactly deposit // cost
# calls can succeed however the 64 race.
PRICE = Price(input=0, output=1_000_000)
PROC_ADMIN = "admin-proc-" + "0123456789abcdef" * 2  # the admin key needs 32+ characters
BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]}
CALLS = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """One `teegate serve --config FILE` process."""

    def __init__(self, config: Path, home: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.parent / f"gateway-{self.port}.log"
        self.proc = subprocess.Popen(
            [str(EXE), "serve", "--config", str(config), "--port", str(self.port),
             "--log-level", "warning"],
            env={**os.environ, "TEEGATE_HOME": str(home), "TG_PROC_ADMIN": PROC_ADMIN},
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert "Traceback" not in self.log.read_text(), self.log.read_text()


def _config(tmp_path: Path, db: str, upstream: str, **gateway: object) -> Path:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in gateway.items())
    path = tmp_path / "teegate.toml"
    path.write_text(f"""
[gateway]
database_url = "{db}"
data_dir = "{tmp_path / 'data'}"
admin_key_env = "TG_PROC_ADMIN"
{extra}
[[providers]]
id = "up"
platform = "ollama"
base_url = "{upstream}/v1"
models = ["m"]
[providers.prices.m]
input = {PRICE.input}
output = {PRICE.output}
""")
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with serving(engine_app(BuiltinEngine(("m",)))) as s:
        yield s


@pytest.fixture
def pg_db() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = "tg_proc_" + uuid.uuid4().hex[:10]
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {e}")
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _call(url: str, key: str) -> tuple[int, dict[str, object]]:
    r = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=60,
                   headers={"authorization": f"Bearer {key}"})
    body: dict[str, object] = r.json()
    return r.status_code, body


def _race(urls: list[str], key: str) -> list[tuple[int, dict[str, object]]]:
    with ThreadPoolExecutor(CALLS) as pool:
        return list(pool.map(lambda i: _call(urls[i % len(urls)], key), range(CALLS)))


def _assert_money(ledger: Ledger, agent: str, deposit: int,
                  results: list[tuple[int, dict[str, object]]]) -> int:
    ok = [body for status, body in results if status == 200]
    refused = [body for status, body in results if status != 200]
    assert len(ok) + len(refused) == CALLS
    for status, body in results:
        if status != 200:
            assert status == 402, body
            error = body["error"]
            assert isinstance(error, dict)
            assert error["code"] == "insufficient_funds"
    costs = set()
    for body in ok:
        usage = body["usage"]
        assert isinstance(usage, dict)
        costs.add(PRICE.cost(usage["prompt_tokens"], usage["completion_tokens"]))
    assert len(costs) == 1  # the built-in engine is deterministic
    cost = costs.pop()
    assert len(ok) == deposit // cost < CALLS  # the wallet affords only some of the calls
    deadline = time.monotonic() + 20
    while ledger.balance(agent).held:  # settlement runs just after each response
        assert time.monotonic() < deadline, ledger.balance(agent)
        time.sleep(0.05)
    b = ledger.balance(agent)
    spent = sum(r.amount for r in ledger.spend(agent))
    assert spent == len(ok) * cost <= deposit  # the number of calls matches the money
    assert b.available == deposit - spent >= 0
    assert (b.reserved, b.held) == (0, 0)
    assert ledger.check().ok
    return len(ok)


def _ledger_check(db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), "ledger", "check", "--db", db], capture_output=True,
                          text=True, timeout=60)


def _setup(db: str, deposit: int) -> tuple[Ledger, str, str]:
    agent = "agent-" + uuid.uuid4().hex[:8]
    store = GatewayStore(db)
    key = store.create_key(agent, trust="standard")
    store.close()
    ledger = open_ledger(db)
    ledger.deposit(agent, deposit)
    return ledger, agent, key


def test_64_calls_through_one_gateway_process_on_sqlite(tmp_path: Path,
                                                       upstream: Server) -> None:
    db = f"sqlite:///{tmp_path / 'teegate.db'}"
    cfg = _config(tmp_path, db, upstream.url)
    ledger, agent, key = _setup(db, deposit=90)
    gw = Gateway(cfg, tmp_path)
    try:
        results = _race([gw.url], key)
    finally:
        gw.stop()
    _assert_money(ledger, agent, 90, results)
    ledger.close()
    check = _ledger_check(db)
    assert check.returncode == 0, check.stdout + check.stderr


def test_64_calls_through_two_gateway_processes_sharing_postgresql(
        tmp_path: Path, upstream: Server, pg_db: str) -> None:
    cfg = _config(tmp_path, pg_db, upstream.url)
    ledger, agent, key = _setup(pg_db, deposit=90)
    a = Gateway(cfg, tmp_path)
    b = Gateway(cfg, tmp_path)
    try:
        results = _race([a.url, b.url], key)
    finally:
        a.stop()
        b.stop()
    _assert_money(ledger, agent, 90, results)
    ledger.close()
    check = _ledger_check(pg_db)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'teegate.db'}"
    return str(request.getfixturevalue("pg_db"))


def test_sigkill_mid_load_then_check_passes_and_restart_releases_holds(
        tmp_path: Path, any_db: str) -> None:
    slow = SlowStream()
    db = any_db
    with serving(slow.app()) as up:
        cfg = _config(tmp_path, db, up.url, hold_seconds=2, ledger_expire_seconds=0.2)
        ledger, agent, key = _setup(db, deposit=1_000_000)
        gw = Gateway(cfg, tmp_path)
        body = {**BODY, "stream": True, "max_tokens": 100}

        def stream() -> None:
            try:
                with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {key}"}, timeout=30) as r:
                    for _ in r.iter_raw():
                        pass
            except httpx.HTTPError:
                pass  # the gateway dies under it

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(stream)
            deadline = time.monotonic() + 10
            while ledger.balance(agent).held == 0:
                assert time.monotonic() < deadline, "no hold was placed"
                time.sleep(0.02)
            time.sleep(0.2)
            os.kill(gw.proc.pid, signal.SIGKILL)
            gw.proc.wait(timeout=10)
        held = ledger.balance(agent).held
        assert held > 0  # the dead gateway left its holds behind
        check = _ledger_check(db)
        assert check.returncode == 0, check.stdout + check.stderr
        time.sleep(2.1)  # past hold_seconds
        again = Gateway(cfg, tmp_path)  # sweeps expired holds at start
        try:
            deadline = time.monotonic() + 10
            while ledger.balance(agent).held:
                assert time.monotonic() < deadline, ledger.balance(agent)
                time.sleep(0.05)
        finally:
            again.stop()
    b = ledger.balance(agent)
    spent = sum(r.amount for r in ledger.spend(agent))
    assert b.available + spent == 1_000_000
    assert ledger.check().ok
    ledger.close()
    check = _ledger_check(db)
    assert check.returncode == 0, check.stdout + check.stderr

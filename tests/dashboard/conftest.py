"""A real gateway on loopback (development TEE node, SQLite ledger and receipt log, the
dashboard mounted by ``build_app``) with agents, an owner and calls made through the real
``openai`` SDK; and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from teegate.gateway import GatewayStore, parse_config
from teegate.gateway.factory import build_app
from tests.gateway.loopback import Server, dev_node

ADMIN = "admin-" + uuid.uuid4().hex  # 38 characters, as start-up requires
CHROMIUM = os.environ.get("TEEGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "dashboard-screenshots"
# TEEGATE_DOC_SHOTS=1: also refresh the README's screenshots (the visible part of the page)
DOC_SHOTS = {"providers", "provider", "agent", "calls", "receipt", "receipt-tampered", "log"}
PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output


@dataclass
class Site:
    url: str
    app: Any
    keys: dict[str, str]
    receipts: dict[str, list[str]] = field(default_factory=dict)

    def api(self, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"authorization": f"Bearer {key}"},
                             timeout=10, **kw)


def _wait(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("dash-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("TEEGATE_HOME", str(home))  # development policies read TEEGATE_HOME/dev-pki
    mp.setenv("TG_DASH_ADMIN", ADMIN)
    node = Server(dev_node(home / "dev-pki", ("teegate-builtin",)))
    url = f"sqlite:///{home / 'gateway.db'}"
    cfg = parse_config({
        "gateway": {"database_url": url, "data_dir": str(home), "state_poll_seconds": 0.2,
                    "admin_key_env": "TG_DASH_ADMIN"},
        "providers": [{"id": "dev-node", "platform": "tee-node", "base_url": node.url + "/v1",
                       "models": ["teegate-builtin"], "development": True,
                       "prices": {"teegate-builtin": PRICE}}],
        "collateral": {"cache_dir": str(home / "collateral")},
    })
    store = GatewayStore(url)
    keys = {
        "olga": store.create_key("olga", kind="owner"),
        "alice": store.create_key("alice", trust="attested", owner="olga"),
        "bob": store.create_key("bob", trust="attested"),
        "poor": store.create_key("poor", trust="attested", owner="olga"),
    }
    app = build_app(cfg, store=store)
    server = Server(app, lifespan="on")
    s = Site(server.url, app, keys)
    try:
        for agent in ("alice", "bob"):
            r = s.api("POST", f"/v1/wallets/{agent}/deposits", ADMIN, json={"amount": "5.0"})
            assert r.status_code == 201, r.text
        for agent, n in (("alice", 3), ("bob", 1), ("poor", 1)):
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=keys[agent],
                                   max_retries=0)
            for i in range(n):
                rid: str | None
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="teegate-builtin",
                        messages=[{"role": "user", "content": f"hello {agent} {i}"}])
                    rid = raw.headers["x-teegate-receipt"]
                except openai.APIStatusError as e:  # poor: 402, still a receipt
                    if agent != "poor" or e.status_code != 402:
                        raise
                    rid = e.response.headers.get("x-teegate-receipt")
                if rid:
                    s.receipts.setdefault(agent, []).append(rid)
        for agent, ids in s.receipts.items():  # every receipt in a signed checkpoint
            for rid in ids:
                _wait(lambda a=agent, r=rid: s.api("GET", f"/v1/receipts/{r}",
                                                   keys[a]).status_code == 200)
        yield s
    finally:
        server.stop()
        node.stop()
        store.close()
        mp.undo()


# Module scope, not session: while sync_playwright() is open it keeps an asyncio loop running
# on the main thread, and every later asyncio test in the run would fail to start its own.
@pytest.fixture(scope="module")
def playwright_() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/setup installs Debian's chromium "
                    "(apt-get install chromium)")
    b = playwright_.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def login(page: Page, site: Site, key: str) -> None:
    page.goto(site.url + "/dashboard/")
    page.fill("input[name=key]", key)
    page.click("form.login button[type=submit]")
    page.wait_for_load_state()


def shot(page: Page, name: str, *, full: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    if os.environ.get("TEEGATE_DOC_SHOTS") and name in DOC_SHOTS:
        if name.startswith("receipt"):  # the audit is what this page is for
            page.evaluate("document.querySelector('.card.audit').scrollIntoView();"
                          "window.scrollBy(0, -72)")  # below the sticky header
        page.screenshot(path=str(ROOT / "docs" / "img" / f"dashboard-{name}.png"))
    return path

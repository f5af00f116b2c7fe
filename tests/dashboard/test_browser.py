"""The dashboard in Debian's Chromium: login per role, every page, the in-browser audit (a
genuine receipt passes, tampered ones fail at the check that catches them), authorization,
forms. Screenshots land in build/dashboard-screenshots/."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from tests.dashboard.conftest import ADMIN, Site, login, shot


def _audit(page: Page) -> dict[str, str]:
    page.wait_for_selector("#audit-result[data-result]", timeout=15_000)
    return {li.get_attribute("data-check") or "": li.get_attribute("data-result") or ""
            for li in page.query_selector_all("#audit-steps li")}


def test_login_per_role_and_cookie_flags(page: Page, site: Site) -> None:
    login(page, site, ADMIN)
    assert page.url.endswith("/dashboard/providers")
    expect(page.locator("header .who")).to_contain_text("operator")
    cookie = next(c for c in page.context.cookies() if c["name"] == "tg_dash")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable from JS
    page.click("form.logout button")
    assert page.url.endswith("/dashboard/login")
    page.goto(site.url + "/dashboard/providers")
    assert page.url.endswith("/dashboard/login")  # the session is gone

    login(page, site, site.keys["olga"])  # an owner sees its agents only
    page.goto(site.url + "/dashboard/agents")
    expect(page.locator("main")).to_contain_text("alice")
    expect(page.locator("main")).not_to_contain_text("bob")
    shot(page, "agents-owner")

    page.context.clear_cookies()
    login(page, site, site.keys["bob"])  # an agent lands on its own wallet
    assert page.url.endswith("/dashboard/agents/bob")
    expect(page.locator("header .who")).to_contain_text("bob")


def test_wrong_key_is_refused(page: Page, site: Site) -> None:
    page.goto(site.url + "/dashboard/login")
    page.fill("input[name=key]", "tgk_not-a-key")
    with page.expect_response(lambda r: r.request.method == "POST") as resp:
        page.click("form.login button[type=submit]")
    assert resp.value.status == 401
    expect(page.locator(".flash.bad")).to_contain_text("not valid")
    assert not [c for c in page.context.cookies() if c["name"] == "tg_dash"]
    shot(page, "login-refused", full=False)


def test_providers_show_the_verdict(page: Page, site: Site) -> None:
    login(page, site, ADMIN)
    card = page.locator(".card.provider").first
    expect(card).to_contain_text("dev-node")
    expect(card).to_contain_text("UpToDate")
    expect(card.locator(".countdown")).to_have_text(re.compile(r"\d+ min \d+ s"))
    shot(page, "providers", full=False)
    page.click("text=dev-node")
    main = page.locator("main")
    for check in ("tdx.quote_signature", "tdx.tcb_status", "binding.nonce"):
        expect(main).to_contain_text(check)  # every check with its reason
    expect(main).to_contain_text("mrtd")  # measurements
    expect(main.locator("table.checks .badge.bad")).to_have_count(0)
    expect(main).to_contain_text(site.app.gateway.config.providers[0].base_url)  # operator
    shot(page, "provider")
    page.once("dialog", lambda d: d.accept())
    page.click("text=Re-attest now")
    expect(page.locator(".flash.ok")).to_contain_text("re-attested: attested")


def test_agent_cannot_reattest_or_see_the_button(page: Page, site: Site) -> None:
    login(page, site, site.keys["alice"])
    page.goto(site.url + "/dashboard/providers/dev-node")
    expect(page.locator("text=Re-attest now")).to_have_count(0)
    upstream = site.app.gateway.config.providers[0].base_url
    assert upstream.split("//")[1].split("/")[0] not in page.content()  # redacted for agents
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value")
    r = page.request.post(site.url + "/dashboard/providers/dev-node/reattest",
                          form={"csrf": csrf or ""})
    assert r.status == 403


def test_money_page_and_deposit_by_owner(page: Page, site: Site) -> None:
    login(page, site, site.keys["olga"])
    page.goto(site.url + "/dashboard/agents/alice")
    main = page.locator("main")
    expect(main.locator(".stat").nth(3)).to_contain_text("3")  # three calls
    expect(main.locator("svg.chart.bars rect")).to_have_count(30)  # one bar per day
    expect(main.locator("svg.hbars")).to_have_count(2)  # per model, per provider
    before = main.locator(".stat .value").first.inner_text()
    deposit = page.locator("form.fund").first
    deposit.locator("input[name=amount]").fill("1.25")
    deposit.locator("input[name=memo]").fill("top-up from the dashboard")
    deposit.locator("button").click()
    expect(page.locator(".flash.ok")).to_contain_text("deposit of 1.250000 USD done")
    after = main.locator(".stat .value").first.inner_text()
    assert before != after
    expect(main).to_contain_text("top-up from the dashboard")
    shot(page, "agent")
    withdraw = page.locator("form.fund").nth(1)
    withdraw.locator("input[name=amount]").fill("9999.0")  # currency units: more than there is
    withdraw.locator("button").click()
    expect(page.locator(".flash.bad")).to_contain_text("withdraw refused")
    shot(page, "agent-withdraw-refused")

    page.goto(site.url + "/dashboard/agents/poor")  # a 402 shows up with its receipt
    expect(page.locator("main")).to_contain_text("insufficient funds")


def test_an_agent_cannot_see_another(page: Page, site: Site) -> None:
    login(page, site, site.keys["bob"])
    r = page.goto(site.url + "/dashboard/agents/alice")
    assert r is not None
    assert r.status == 404
    expect(page.locator("main")).not_to_contain_text("available")
    r = page.goto(site.url + f"/dashboard/receipts/{site.receipts['alice'][0]}")
    assert r is not None
    assert r.status == 404
    r = page.goto(site.url + f"/dashboard/receipts/{site.receipts['alice'][0]}/bundle.json")
    assert r is not None
    assert r.status == 404
    page.goto(site.url + "/dashboard/calls")
    text = page.locator("main").inner_text()
    assert all(rid[:14] not in text for rid in site.receipts["alice"])
    assert page.locator("table.grid tbody tr").count() == len(site.receipts["bob"])
    expect(page.locator("form.fund")).to_have_count(0)
    page.goto(site.url + "/dashboard/agents/bob")
    expect(page.locator("form.fund")).to_have_count(0)  # agents do not fund themselves
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value")
    r2 = page.request.post(site.url + "/dashboard/agents/bob/deposit",
                           form={"csrf": csrf or "", "amount": "100"})
    assert r2.status == 403
    shot(page, "agent-denied")


def test_forms_need_the_csrf_token_and_a_session(page: Page, site: Site) -> None:
    login(page, site, ADMIN)
    r = page.request.post(site.url + "/dashboard/agents/alice/deposit",
                          form={"csrf": "forged", "amount": "100"})
    assert r.status == 403
    page.context.clear_cookies()
    r = page.request.post(site.url + "/dashboard/agents/alice/deposit", form={"amount": "1"})
    assert r.status == 401  # refused before the body is read


def test_calls_list_search_and_paging(page: Page, site: Site) -> None:
    login(page, site, ADMIN)
    page.goto(site.url + "/dashboard/calls")
    rows = page.locator("table.grid tbody tr")
    assert rows.count() == sum(len(v) for v in site.receipts.values())
    expect(page.locator("main")).to_contain_text("refused")
    shot(page, "calls", full=False)
    page.select_option("select[name=agent]", "alice")
    page.click("form.filters button")
    assert rows.count() == 3
    page.fill("input[name=q]", site.receipts["alice"][1])
    page.click("form.filters button")
    assert rows.count() == 1
    page.click("table.grid tbody a")
    assert "/dashboard/receipts/" in page.url


def test_in_browser_audit_passes(page: Page, site: Site) -> None:
    login(page, site, site.keys["alice"])
    page.goto(site.url + f"/dashboard/receipts/{site.receipts['alice'][-1]}")
    steps = _audit(page)
    assert page.get_attribute("#audit-result", "data-result") == "pass"
    inclusion = page.locator("#audit-steps li[data-check='receipt.inclusion'] .why")
    assert " 0 hashes " not in inclusion.inner_text()  # a real path, not a 1-leaf tree
    for check in ("log.key", "receipt.format", "receipt.signature", "receipt.trust_claim",
                  "checkpoint.signature", "receipt.inclusion"):
        assert steps[check] == "ok", steps
    assert steps["provider.signature"] == "skip"  # secp256k1: WebCrypto has none
    shot(page, "receipt")


def test_in_browser_audit_fails_on_a_tampered_receipt(page: Page, site: Site) -> None:
    """The gateway (or anything on the path) changes the receipt it sends: the page's own
    checks catch it."""
    rid = site.receipts["alice"][-1]

    def tamper(route: object) -> None:
        resp = route.fetch()  # type: ignore[attr-defined]
        body = resp.text()
        m = re.search(r'"cost":(\d+)', body)
        assert m is not None
        body = body.replace(m.group(0), f'"cost":{int(m.group(1)) + 1}', 1)
        route.fulfill(response=resp, body=body)  # type: ignore[attr-defined]

    login(page, site, site.keys["alice"])
    page.route(f"**/dashboard/receipts/{rid}", tamper)
    page.goto(site.url + f"/dashboard/receipts/{rid}")
    steps = _audit(page)
    assert page.get_attribute("#audit-result", "data-result") == "fail"
    assert steps["receipt.signature"] == "fail"
    assert steps["receipt.inclusion"] == "fail"  # its leaf is no longer the logged one
    assert steps["checkpoint.signature"] == "ok"
    expect(page.locator("#audit-result")).to_contain_text("FAILED")
    shot(page, "receipt-tampered")


def test_pasted_bundle_audit_catches_proof_and_key_tampering(page: Page, site: Site) -> None:
    rid = site.receipts["bob"][0]
    bundle = site.api("GET", f"/v1/receipts/{rid}/bundle", site.keys["bob"]).json()
    login(page, site, site.keys["bob"])
    page.goto(site.url + "/dashboard/audit")
    page.fill("#bundle-text", json.dumps(bundle))
    page.click("#run-audit")
    assert _audit(page)["receipt.inclusion"] == "ok"
    assert page.get_attribute("#audit-result", "data-result") == "pass"

    lines = bundle["tlog_proof"].split("\n")  # flip the first proof hash
    i = next(n for n, line in enumerate(lines) if line.startswith("index ")) + 1
    assert len(lines[i]) == 44
    lines[i] = ("B" if lines[i][0] == "A" else "A") + lines[i][1:]
    page.fill("#bundle-text", json.dumps({**bundle, "tlog_proof": "\n".join(lines)}))
    page.click("#run-audit")
    steps = _audit(page)
    assert steps["receipt.signature"] == "ok"
    assert steps["receipt.inclusion"] == "fail"

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from teegate.receipts.note import NoteSigner

    other = NoteSigner("teegate.local/log", Ed25519PrivateKey.generate()).vkey
    page.fill("#bundle-text", json.dumps(bundle))
    page.fill("#vkey", other)  # a key the auditor trusts that did not sign this log
    page.click("#run-audit")
    steps = _audit(page)
    assert steps["receipt.signature"] == "fail"
    assert steps["checkpoint.signature"] == "fail"
    shot(page, "audit-paste")


def test_log_page_and_browser_monitor(page: Page, site: Site) -> None:
    login(page, site, ADMIN)
    page.goto(site.url + "/dashboard/log")
    page.wait_for_selector("#monitor-result[data-result]")
    assert page.get_attribute("#monitor-result", "data-result") == "pass"
    expect(page.locator("main")).to_contain_text("appending")
    rows = page.locator("table.grid tbody tr")
    assert rows.count() >= 2
    expect(page.locator("table.grid .badge.bad")).to_have_count(0)  # signatures, consistency
    # a call later, the monitor checks the new checkpoint extends the one it remembered
    first = page.locator("#monitor-steps").inner_text()
    assert "trust on first use" in first
    r = site.api("POST", "/v1/chat/completions", site.keys["alice"], json={
        "model": "teegate-builtin", "messages": [{"role": "user", "content": "one more"}]})
    assert r.status_code == 200
    rid = r.headers["x-teegate-receipt"]
    import time

    deadline = time.monotonic() + 20
    while site.api("GET", f"/v1/receipts/{rid}", site.keys["alice"]).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page.reload()
    page.wait_for_selector("#monitor-result[data-result]")
    assert page.get_attribute("#monitor-result", "data-result") == "pass"
    expect(page.locator("#monitor-steps")).to_contain_text("is one history")
    shot(page, "log")


def test_a_revoked_key_ends_its_sessions(page: Page, site: Site) -> None:
    store = site.app.gateway.store
    key = store.create_key("carol", trust="attested")
    login(page, site, key)
    assert page.url.endswith("/dashboard/agents/carol")
    r = site.api("DELETE", "/admin/agents/carol", ADMIN)
    assert r.status_code == 200
    page.wait_for_timeout(2500)  # the dashboard's view of the key table lives 2 s
    page.goto(site.url + "/dashboard/agents/carol")
    assert page.url.endswith("/dashboard/login")

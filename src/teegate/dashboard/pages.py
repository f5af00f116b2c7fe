"""Page bodies: plain data in, escaped HTML out (no I/O, so each page is testable alone)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from teegate.dashboard.html import (
    Markup,
    badge,
    bar_chart,
    esc,
    form,
    hbar_chart,
    join,
    json_script,
    kv,
    line_chart,
    link,
    money,
    mono,
    status_badge,
    table,
    tag,
    trust_badge,
    url,
    when,
)

BASE = "/dashboard"


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page: the principal's kind and id, and the session's CSRF token."""

    kind: str
    id: str
    csrf: str


@dataclass(frozen=True)
class Money:
    code: str
    decimals: int

    def __call__(self, amount: int | None) -> Markup:
        return money(amount, self.decimals, self.code)

    def text(self, amount: int) -> str:
        if not self.decimals:
            return f"{amount}"
        whole, frac = divmod(amount, 10 ** self.decimals)
        return f"{whole}.{frac:0{self.decimals}d}"


def layout(title: str, body: object, *, viewer: Viewer | None, active: str = "",
           scripts: Sequence[str] = ()) -> str:
    nav: list[object] = []
    if viewer is not None:
        items = [("providers", "Providers"),
                 ("agents", "My wallet" if viewer.kind == "agent" else "Agents & money"),
                 ("calls", "Calls"), ("log", "Log"), ("audit", "Audit a bundle")]
        nav = [link(f"{BASE}/{k}", label, class_="on" if k == active else None)
               for k, label in items]
        who = tag("span", badge(viewer.kind, "info"), " ", viewer.id, class_="who")
        nav.append(tag("div", who, form(f"{BASE}/logout", viewer.csrf, button="Log out",
                                        cls="logout"), class_="right"))
    head = Markup(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} · teegate</title>'
        f'<link rel="stylesheet" href="{BASE}/static/dashboard.css"></head><body>')
    brand = tag("a", tag("span", "◆", class_="logo"), " teegate", href=f"{BASE}/",
                class_="brand")
    header = tag("header", brand, tag("nav", *nav), class_="top")
    js = join(Markup(f'<script src="{BASE}/static/{esc(s)}" defer></script>')
              for s in ("dashboard.js", *scripts))
    return str(join([head, header, tag("main", tag("h1", title), body), js,
                     Markup("</body></html>")]))


def card(title: object, *body: object, cls: str = "") -> Markup:
    return tag("section", tag("h2", title), *body, class_=f"card {cls}".strip())


def flash(message: str | None, tone: str = "ok") -> Markup:
    return tag("div", message, class_=f"flash {tone}", role="status") if message else Markup()


def countdown(expires_at: float | None, now: float) -> Markup:
    if expires_at is None:
        return Markup("—")
    left = int(expires_at - now)
    return tag("span", f"{left} s" if left > 0 else "expired", class_="countdown",
               data_expires=str(int(expires_at)))


# ------------------------------------------------------------------ login

def login(token: str, error: str | None = None) -> str:
    body = tag(
        "div",
        flash(error, "bad"),
        tag("form",
            tag("input", type="hidden", name="csrf", value=token),
            tag("label", "API key", tag("input", type="password", name="key", required=True,
                                        autocomplete="current-password", autofocus=True,
                                        placeholder="tgk_… or the admin key")),
            tag("button", "Log in", type="submit"),
            method="post", action=f"{BASE}/login", class_="login"),
        tag("p", "The admin key shows everything; an owner key its agents; an agent key "
                 "its own wallet and calls: the same rules as the API. The key is checked "
                 "once and never stored; the session cookie is HttpOnly and SameSite=Strict.",
            class_="hint"),
        class_="login-box")
    return layout("Log in", body, viewer=None)


def error_page(status: int, message: str, viewer: Viewer | None) -> str:
    return layout(f"{status}", tag("p", message, class_="flash bad"), viewer=viewer)


# ------------------------------------------------------------------ providers

def _checks(checks: Sequence[dict[str, Any]]) -> Markup:
    return table(["check", "result", "reason"],
                 [(mono(c["name"]), status_badge("ok" if c["ok"] else "fail"), c["detail"])
                  for c in checks], empty="no checks (no verdict yet)", cls="checks")


def provider_card(v: dict[str, Any], now: float) -> Markup:
    a = v["attestation"]
    rows: list[tuple[object, object]] = [
        ("platform", v["platform"]),
        ("trust served / claimed", join([trust_badge(v["trust_level"]), " / ",
                                         trust_badge(v["claimed_trust_level"])])),
        ("verdict", join([status_badge(a["status"]), " ",
                          mono(a["verdict"], short=16) if a["verdict"] else ""])),
        ("TCB status", v.get("tcb_status") or "—"),
        ("GPUs attested", str(v.get("gpus", 0))),
        ("expires in", countdown(a["expires_at"], now)),
        ("models", ", ".join(v["models"])),
    ]
    if v.get("base_url"):  # the operator's view only (as /v1/providers)
        rows.append(("upstream", mono(v["base_url"])))
    title = join([link(f"{BASE}/providers/{v['id']}", v["id"]), " ",
                  badge("DEVELOPMENT", "dev") if v["development"] else ""])
    return card(title, kv(rows), tag("p", a["detail"], class_="detail"), cls="provider")


def providers(views: Sequence[dict[str, Any]], now: float, viewer: Viewer) -> str:
    intro = tag("p", "Each provider's trust level is what the gateway verified itself, not "
                     "what the provider claims. Countdowns run to the verdict's expiry; the "
                     "gateway re-attests before then.", class_="lead")
    grid = tag("div", *(provider_card(v, now) for v in views), class_="cards")
    return layout("Providers", join([intro, grid]), viewer=viewer, active="providers")


def provider_detail(v: dict[str, Any], verdict: dict[str, Any] | None,
                    events: Sequence[tuple[Any, ...]], now: float, viewer: Viewer,
                    message: str | None = None) -> str:
    parts: list[object] = [flash(message)]
    if viewer.kind == "operator":
        parts.append(form(f"{BASE}/providers/{v['id']}/reattest", viewer.csrf,
                          button="Re-attest now", cls="right-action",
                          confirm="Lift any quarantine and attest this provider again?"))
    parts.append(provider_card(v, now))
    q_rows: list[tuple[object, ...]] = [
        (when(t), status_badge(s), d) for t, s, d in events]
    if v.get("quarantined_until", 0) > now:
        q_rows.insert(0, (join(["until ", when(v["quarantined_until"])]),
                          status_badge("quarantined"), v.get("quarantine_reason", "")))
    parts.append(card("Quarantine and status history",
                      table(["when", "status", "reason"], q_rows,
                            empty="never quarantined (since the dashboard started watching)")))
    if verdict is None:
        parts.append(card("Attestation verdict", tag("p", "no verdict yet", class_="empty")))
    else:
        meta = [("accepted", status_badge("ok" if verdict["accepted"] else "fail")),
                ("TEE", verdict["tee"]), ("TCB status", verdict.get("tcb_status") or "—"),
                ("advisories", ", ".join(verdict.get("advisory_ids") or []) or "none"),
                ("valid", join([when(verdict.get("not_before")), " → ",
                                when(verdict.get("not_after"))])),
                ("bound key", mono(verdict.get("bound_key"), short=24)),
                ("verdict digest", mono(v.get("verdict_digest")))]
        parts.append(card("Attestation verdict", kv(meta), _checks(verdict["checks"])))
        meas = sorted((verdict.get("measurements") or {}).items())
        parts.append(card("Measurements", table(["register", "value"],
                                                [(mono(k), mono(val)) for k, val in meas],
                                                empty="none reported")))
        for comp in verdict.get("components") or ():
            parts.append(card(join(["Component: ", comp["tee"], " ",
                                    status_badge("ok" if comp["accepted"] else "fail")]),
                              _checks(comp["checks"])))
    return layout(f"Provider {v['id']}", join(parts), viewer=viewer, active="providers")


# ------------------------------------------------------------------ agents and money

def agents(rows: Sequence[dict[str, Any]], viewer: Viewer, m: Money) -> str:
    body = table(["agent", "kind", "owner", "trust", "available", "reserved", "held", "state"],
                 [(link(f"{BASE}/agents/{r['id']}", r["id"]), r["kind"], r["owner"] or "—",
                   trust_badge(r["trust"]), m(r.get("available")), m(r.get("reserved")),
                   m(r.get("held")),
                   status_badge("revoked") if r["revoked"] else badge("active", "ok"))
                  for r in rows], empty="no agents you may read")
    return layout("Agents & money", card("Agents", body), viewer=viewer, active="agents")


def _days(rows: Sequence[tuple[str, int, int]], days: int) -> list[tuple[str, int]]:
    """Every day of the window, zero where nothing was spent (so one day is one bar)."""
    import datetime as dt

    got = {k: c for k, c, _ in rows}
    today = dt.datetime.now(dt.UTC).date()
    keys = [(today - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    return [(k, got.get(k, 0)) for k in keys]


def agent_page(d: dict[str, Any], viewer: Viewer, m: Money, *, message: str | None,
               tone: str, idem: str) -> str:
    b = d["balance"]
    aid = d["id"]
    stats = tag("div", *(tag("div", tag("div", label, class_="label"), tag("div", val,
                                                                            class_="value"),
                             class_="stat")
                         for label, val in (("available", m(b.available)),
                                            ("reserved in conversations", m(b.reserved)),
                                            ("held by running calls", m(b.held)),
                                            ("calls", str(sum(v for k, v in d["counts"].items()
                                                              if k != "402"))),
                                            ("402 refusals", str(d["counts"].get("402", 0))))),
                class_="stats")
    parts: list[object] = [flash(message, tone), stats]
    if d["may_fund"]:
        def fund(kind: str, label: str) -> Markup:
            return form(f"{BASE}/agents/{aid}/{kind}", viewer.csrf,
                        tag("input", type="hidden", name="idem", value=f"{idem}-{kind}"),
                        tag("label", "amount", tag("input", name="amount", required=True,
                                                   inputmode="decimal",
                                                   placeholder=f"e.g. 1.5 {m.code}")),
                        tag("label", "memo", tag("input", name="memo", maxlength="200")),
                        button=label, cls="fund")
        parts.append(card("Deposit / withdraw", tag("div", fund("deposit", "Deposit"),
                                                    fund("withdraw", "Withdraw"),
                                                    class_="fund-row"),
                          tag("p", "Amounts in currency units (1.5) or smallest units "
                                   "(1500000), as in the CLI.", class_="hint")))

    parts.append(card("Spend per day (30 days)",
                      bar_chart(_days(d["spend_day"], 30), label="spend per day",
                                fmt=m.text)))
    parts.append(tag("div",
                     card("Spend per model", hbar_chart([(k, c) for k, c, _ in d["spend_model"]],
                                                        label="spend per model", width=520,
                                                        fmt=m.text)),
                     card("Spend per provider",
                          hbar_chart([(k, c) for k, c, _ in d["spend_provider"]],
                                     label="spend per provider", width=520, fmt=m.text)),
                     class_="cards two"))
    parts.append(card("Conversations", table(
        ["id", "budget", "state", "opened", "expires", "refunded"],
        [(mono(c[0], short=24), m(c[2]), status_badge(c[3]), when(c[5]), when(c[4]),
          m(c[7])) for c in d["conversations"]], empty="no conversations")))
    parts.append(card("Open holds", table(
        ["hold", "amount", "conversation", "created", "expires"],
        [(mono(h[0], short=24), m(h[1]), mono(h[3], short=20) if h[3] else "—", when(h[5]),
          when(h[4])) for h in d["holds"]], empty="no call is holding money")))
    parts.append(card("402 refusals", table(
        ["when", "receipt", "reason"],
        [(when(t / 1000), link(f"{BASE}/receipts/{r}", r), e) for r, t, e in d["r402"]],
        empty="no call was refused for money")))
    parts.append(card("Rewards", table(
        ["when", "amount", "from", "to", "conversation"],
        [(when(t.created_at), m(t.amount), mono(t.debit, short=28), mono(t.credit, short=28),
          mono(t.metadata.get("conversation"), short=24)) for t in d["rewards"]],
        empty="no rewards")))
    transfers = table(["seq", "when", "kind", "amount", "from", "to", "memo / model"],
                      [(str(t.seq), when(t.created_at), t.kind, m(t.amount),
                        mono(t.debit, short=28), mono(t.credit, short=28),
                        t.metadata.get("memo") or t.metadata.get("model") or "")
                       for t in d["transfers"]], empty="no transfers")
    more = link(url(f"{BASE}/agents/{aid}", before=d["transfers"][-1].seq), "Older →",
                class_="pager") if len(d["transfers"]) == d["page"] else Markup()
    parts.append(card("Transfers", transfers, more))
    parts.append(tag("p", link(url(f"{BASE}/calls", agent=aid), "All calls of this agent →")))
    return layout(f"Agent {aid}", join(parts), viewer=viewer, active="agents")


# ------------------------------------------------------------------ calls

def calls(rows: Sequence[Any], viewer: Viewer, m: Money, *, filters: dict[str, str],
          options: dict[str, list[str]], receipt: str, progress: tuple[int, int],
          page: int, before: int | None) -> str:
    sel = []
    for k, values in options.items():
        opts = [tag("option", f"any {k}", value="")]
        opts += [tag("option", v, value=v, selected=filters.get(k) == v) for v in values]
        sel.append(tag("label", k, tag("select", *opts, name=k)))
    search = tag("form", tag("label", "receipt id starts with",
                             tag("input", name="q", value=receipt, placeholder="rcpt_…")),
                 *sel, tag("button", "Search", type="submit"), method="get",
                 action=f"{BASE}/calls", class_="filters")
    done, size = progress
    note = (tag("p", f"indexing the log: {done:,} of {size:,} receipts so far",
                class_="flash warn") if done < size else Markup())
    body = table(["when", "receipt", "agent", "provider", "model", "trust", "outcome", "cost",
                  "latency"],
                 [(when(r.time_ms / 1000), link(f"{BASE}/receipts/{r.receipt_id}",
                                                mono(r.receipt_id, short=22)),
                   r.agent, r.provider or "—", r.model or "—", trust_badge(r.trust),
                   status_badge(r.outcome), m(r.cost),
                   f"{r.latency_ms:,} ms" if r.latency_ms is not None else "—")
                  for r in rows], empty="no calls match")
    nav: list[object] = []
    q = {**filters, "q": receipt}
    if before is not None:
        nav.append(link(url(f"{BASE}/calls", **q), "← Newest", class_="pager"))
    if len(rows) == page:
        nav.append(link(url(f"{BASE}/calls", **q, before=rows[-1].idx), "Older →",
                        class_="pager"))
    return layout("Calls & receipts", join([search, note, card("Calls", body,
                                                               tag("div", *nav,
                                                                   class_="pagers"))]),
                  viewer=viewer, active="calls")


# ------------------------------------------------------------------ receipt

def receipt_page(doc: dict[str, Any], agent: str, bundle: dict[str, Any] | None,
                 vkey: str, viewer: Viewer, m: Money) -> str:
    ev = {e.get("type"): e for e in doc.get("event_log", []) if isinstance(e, dict)}
    call = ev.get("teegate.call", {})
    settle = ev.get("teegate.settlement", {})
    att = ev.get("teegate.attestation")
    sig = ev.get("teegate.provider_signature")
    up = ev.get("upstream.verified", {})
    rid = doc.get("receipt_id")
    fields = [
        ("receipt id", mono(rid)), ("served at", when(doc.get("served_at"))),
        ("agent", link(f"{BASE}/agents/{agent}", agent)),
        ("conversation", mono(call.get("conversation")) if call.get("conversation") else "—"),
        ("model", doc.get("model") or "—"),
        ("provider", join([call.get("provider") or "—", " (", call.get("platform") or "?",
                           ")"])),
        ("trust served / required", join([trust_badge(call.get("trust_level")), " / ",
                                          trust_badge(call.get("trust_required"))])),
        ("outcome", join([status_badge(str(call.get("outcome"))), " ",
                          call.get("error") or ""])),
        ("cost", m(settle.get("cost"))),
        ("usage", ", ".join(f"{k} {v}" for k, v in (settle.get("usage") or {}).items())
         or "—"),
        ("upstream verified", join([status_badge(str(up.get("result", "—"))), " ",
                                    up.get("reason") or ""])),
    ]
    hashes = [(mono(e["type"]), mono(e.get("body_hash"))) for e in doc.get("event_log", [])
              if isinstance(e, dict) and e.get("body_hash")]
    parts: list[object] = [
        tag("div", card("Receipt", kv(fields)),
            card("Provider signature", kv([
                ("algorithm", sig.get("algo")), ("signing key", mono(sig.get("signing_key"))),
                ("signed text", mono(sig.get("text"))),
                ("signature", mono(sig.get("signature"), short=40)),
                ("gateway says", status_badge("ok" if sig.get("verified") else "fail"))])
                 if sig else tag("p", "no provider signature recorded", class_="empty")),
            class_="cards two"),
        card("Body hashes", table(["event", "sha256"], hashes)),
    ]
    if att:
        parts.append(card("Attestation relied on", kv([
            ("verdict digest", mono(att.get("verdict_digest"))),
            ("TEE", att.get("tee")), ("TCB status", att.get("tcb_status") or "—"),
            ("GPU", "yes" if att.get("gpu") else "no"),
            ("evidence sha256", mono(att.get("evidence_sha256")))])))
    audit_intro = tag(
        "p", "Your browser checks this receipt itself with WebCrypto, trusting only the log "
             "key below (compare it with the one you got out of band, e.g. ",
        mono("GET /v1/log/vkey"), " from a machine you trust): the receipt's Ed25519 "
        "signature over its JCS form, its RFC 6962 inclusion proof, and the checkpoint's "
        "signed note. The same checks as ", mono("teegate audit"),
        "; evidence re-verification needs the CLI.", class_="lead")
    if bundle is None:
        audit = card("In-browser audit", tag(
            "p", "This receipt is not in a signed checkpoint yet; reload in a moment.",
            class_="flash warn"))
    else:
        audit = card("In-browser audit", audit_intro, audit_controls(vkey),
                     json_script("bundle", bundle),
                     tag("p", link(f"{BASE}/receipts/{rid}/bundle.json",
                                   "Download the bundle for teegate audit"), class_="hint"),
                     cls="audit")
    parts.append(audit)
    parts.append(card("Document", tag("details", tag("summary", "signed JSON"),
                                      tag("pre", _pretty(doc)))))
    return layout(f"Receipt {rid}", join(parts), viewer=viewer, active="calls",
                  scripts=["audit.js"])


def audit_controls(vkey: str) -> Markup:
    return join([
        tag("label", "trusted log key (vkey)",
            tag("input", id="vkey", value=vkey, spellcheck="false", class_="wide")),
        tag("label", "extra trusted receipt key (hex, optional)",
            tag("input", id="receipt-key", spellcheck="false", class_="wide")),
        tag("button", "Run the audit", id="run-audit", type="button"),
        tag("div", badge("not run", "muted"), id="audit-result", class_="audit-result"),
        tag("ol", id="audit-steps", class_="steps"),
    ])


def audit_paste(vkey: str, viewer: Viewer) -> str:
    body = card("Audit a bundle", tag(
        "p", "Paste a bundle (", mono("GET /v1/receipts/ID/bundle"), ") or a receipt view; "
        "nothing leaves this page.", class_="lead"),
        tag("textarea", id="bundle-text", rows="10", spellcheck="false", class_="wide"),
        audit_controls(vkey), cls="audit")
    return layout("Audit a bundle", body, viewer=viewer, active="audit", scripts=["audit.js"])


def _pretty(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------ log

def log_page(d: dict[str, Any], viewer: Viewer) -> str:
    st = d["status"]
    health = badge("stuck", "bad") if st["stuck"] else badge("appending", "ok")
    status = kv([
        ("writer", join([health, " ", st["stuck"] or ""])),
        ("tree size", f"{st['size']:,}"), ("latest checkpoint", f"{st['latest']:,}"),
        ("backlog (not yet in the tree)", f"{st['backlog']:,}"),
        ("quarantined rows", str(st["quarantined"])), ("conflicts", str(st["conflicts"])),
        ("last error", st["last_error"] or "none"),
        ("origin", mono(st["origin"])), ("verifier key", mono(st["vkey"])),
    ])
    monitor = tag("p", "A monitor from this browser: it remembers the latest checkpoint it "
                       "verified and checks the next one extends it (consistency proof, "
                       "verified with WebCrypto).", class_="lead")
    browser = card("Browser monitor", monitor, tag("div", badge("not run", "muted"),
                                                   id="monitor-result"),
                   tag("ol", id="monitor-steps", class_="steps"),
                   json_script("log-info", {"vkey": st["vkey"], "size": st["latest"]}),
                   cls="audit")
    chart = line_chart([(c["created_ms"] / 1000, c["size"]) for c in reversed(d["cps"])],
                       label="log size over time")
    rows = [(f"{c['size']:,}", when(c["created_ms"] / 1000), mono(c["root"], short=24),
             status_badge("ok" if c["sig_ok"] else "fail"),
             join([status_badge(c["consistent"]), " ", c["why"]]) if c["consistent"]
             else "—")
            for c in d["cps"]]
    cps = table(["size", "signed", "root", "signature", "consistent with the previous"],
                rows, empty="no checkpoint yet")
    return layout("Transparency log", join([
        tag("div", card("Log status", status), browser, class_="cards two"),
        card("Checkpoints over time", chart), card("Checkpoints", cps)]),
        viewer=viewer, active="log", scripts=["audit.js"])


def now() -> float:
    return time.time()

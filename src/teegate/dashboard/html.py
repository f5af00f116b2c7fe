"""Small HTML builders: every dynamic value goes through ``esc``; markup is built only from
these helpers and literals, so no page can carry unescaped text from a receipt or a key."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from html import escape
from urllib.parse import urlencode


class Markup(str):
    """Text already safe to place in HTML."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(el: str, /, *children: object, **attrs: object) -> Markup:
    """``<name attrs>children</name>``; ``class_`` is ``class``; None/False attrs are left out."""
    out = []
    for k, v in attrs.items():
        if v is None or v is False:
            continue
        key = k.rstrip("_").replace("_", "-")
        out.append(f" {key}" if v is True else f' {key}="{esc(v)}"')
    return Markup(f"<{el}{''.join(out)}>{join(children)}</{el}>")


def link(href: str, text: object, **attrs: object) -> Markup:
    return tag("a", text, href=href, **attrs)


def url(path: str, **params: object) -> str:
    q = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(q) if q else "")


def badge(text: object, tone: str) -> Markup:
    """tone: ok, warn, bad, dev, muted, info."""
    return tag("span", text, class_=f"badge {tone}")


def trust_badge(level: str | None) -> Markup:
    tone = {"attested+gpu": "ok", "attested": "ok", "standard": "muted"}.get(level or "", "muted")
    return badge(level or "none", tone)


def status_badge(status: str) -> Markup:
    tone = {"attested": "ok", "success": "ok", "ok": "ok", "pending": "info",
            "unproven": "warn", "voided": "warn", "refused": "warn", "unreachable": "bad",
            "rejected": "bad", "failed": "bad", "quarantined": "bad",
            "unverifiable": "bad", "fail": "bad", "verified": "ok"}.get(status, "muted")
    return badge(status, tone)


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], *,
          empty: str = "nothing yet", cls: str = "") -> Markup:
    body = [tag("tr", *(tag("td", c) for c in r)) for r in rows]
    if not body:
        body = [tag("tr", tag("td", empty, colspan=str(len(headers)), class_="empty"))]
    return tag("table", tag("thead", tag("tr", *(tag("th", h) for h in headers))),
               tag("tbody", *body), class_=f"grid {cls}".strip())


def kv(pairs: Iterable[tuple[object, object]]) -> Markup:
    return tag("dl", *(join([tag("dt", k), tag("dd", v)]) for k, v in pairs), class_="kv")


def mono(text: object, *, short: int | None = None) -> Markup:
    s = "" if text is None else str(text)
    shown = s if short is None or len(s) <= short else s[: short // 2] + "…" + s[-short // 2:]
    return tag("code", shown, title=s if shown != s else None)


def when(ts: float | None) -> Markup:
    if ts is None:
        return Markup("—")
    t = dt.datetime.fromtimestamp(float(ts), dt.UTC)
    return tag("time", t.strftime("%Y-%m-%d %H:%M:%S UTC"), datetime=t.isoformat())


def money(amount: int | None, decimals: int, code: str) -> Markup:
    """Integer smallest units shown in currency units, exactly (no float)."""
    if amount is None:
        return Markup("—")
    sign = "-" if amount < 0 else ""
    a = abs(int(amount))
    whole, frac = divmod(a, 10 ** decimals) if decimals else (a, 0)
    text = f"{sign}{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")
    return tag("span", text, " ", tag("small", code), class_="money", title=f"{amount} units")


def json_script(element_id: str, value: object) -> Markup:
    """Data for the page's JS: ``<`` escaped so no ``</script>`` can end the element."""
    text = json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")
    return Markup(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


def form(action: str, csrf: str, *fields: object, button: str, cls: str = "",
         confirm: str | None = None) -> Markup:
    return tag("form", tag("input", type="hidden", name="csrf", value=csrf), *fields,
               tag("button", button, type="submit"), method="post", action=action,
               class_=f"inline {cls}".strip(), data_confirm=confirm)


# ------------------------------------------------------------------ charts (inline SVG)

def bar_chart(points: Sequence[tuple[str, int]], *, label: str, fmt: Callable[[int], str] = str,
              width: int = 1100, height: int = 170) -> Markup:
    """Vertical bars, one per point (e.g. spend per day)."""
    if not points or not any(v for _, v in points):
        return tag("p", "no data yet", class_="empty")
    top = max(v for _, v in points) or 1
    n = len(points)
    gap, pad = 4, 22
    bw = max(2.0, (width - gap * n) / n)
    bars = []
    for i, (k, v) in enumerate(points):
        h = (height - pad) * v / top
        x = i * (bw + gap)
        bars.append(tag("rect", tag("title", f"{k}: {fmt(v)}"), x=f"{x:.1f}",
                        y=f"{height - pad - h:.1f}", width=f"{bw:.1f}", height=f"{h:.1f}",
                        rx="2"))
    ticks = [tag("text", points[0][0], x="0", y=str(height - 6)),
             tag("text", points[-1][0], x=str(width), y=str(height - 6), text_anchor="end")]
    axis = tag("line", x1="0", x2=str(width), y1=str(height - pad + 0.5),
               y2=str(height - pad + 0.5), class_="axis")
    return tag("svg", *bars, axis, *ticks, viewBox=f"0 0 {width} {height}", class_="chart bars",
               role="img", aria_label=label)


def hbar_chart(points: Sequence[tuple[str, int]], *, label: str, fmt: Callable[[int], str] = str,
               width: int = 640) -> Markup:
    """Horizontal bars with labels (e.g. spend per model)."""
    if not points:
        return tag("p", "no data yet", class_="empty")
    top = max(v for _, v in points) or 1
    row, left, right = 26, 170, 110
    span = width - left - right
    parts = []
    for i, (k, v) in enumerate(points):
        y = i * row
        w = max(1.0, span * v / top)
        parts.append(tag("text", k if len(k) <= 24 else k[:23] + "…", x="0", y=str(y + 17),
                         class_="hk"))
        parts.append(tag("rect", tag("title", f"{k}: {fmt(v)}"), x=str(left),
                         y=str(y + 5), width=f"{w:.1f}", height="16", rx="3"))
        parts.append(tag("text", fmt(v), x=f"{left + w + 8:.1f}", y=str(y + 17),
                         class_="hv"))
    return tag("svg", *parts, viewBox=f"0 0 {width} {row * len(points)}",
               class_="chart hbars", role="img", aria_label=label)


def line_chart(points: Sequence[tuple[float, int]], *, label: str, width: int = 1100,
               height: int = 200) -> Markup:
    """A step line of values over time (e.g. log size per checkpoint)."""
    if len(points) < 2:
        return tag("p", "fewer than two points yet", class_="empty")
    x0, x1 = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1
    span = (x1 - x0) or 1
    pad = 22
    coords = [((t - x0) / span * width, (height - pad) - (height - pad - 4) * v / top)
              for t, v in points]
    path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = [tag("circle", cx=f"{x:.1f}", cy=f"{y:.1f}", r="2.5") for x, y in coords[-60:]]
    ticks = [tag("text", when_short(x0), x="0", y=str(height - 6)),
             tag("text", when_short(x1), x=str(width), y=str(height - 6), text_anchor="end")]
    return tag("svg", tag("path", d=path), *dots, *ticks, viewBox=f"0 0 {width} {height}",
               class_="chart line", role="img", aria_label=label)


def when_short(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%m-%d %H:%M")

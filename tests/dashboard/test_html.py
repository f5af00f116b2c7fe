"""HTML builders: text from receipts and keys is escaped; money is exact."""

from __future__ import annotations

from teegate.dashboard.html import esc, json_script, money, table, tag


def test_text_and_attributes_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    out = tag("a", evil, href='" onmouseover="x')
    assert "<script>" not in out
    assert 'href="&quot; onmouseover=&quot;x"' in out
    assert "<script>" not in table(["h"], [[evil]])
    assert esc(tag("b", "ok")) == "<b>ok</b>"  # markup is not escaped twice


def test_json_for_scripts_cannot_close_the_element() -> None:
    out = json_script("bundle", {"model": "</script><script>alert(1)</script>"})
    assert out.count("</script>") == 1
    assert out.endswith("</script>")


def test_money_is_shown_exactly_in_currency_units() -> None:
    assert ">1.500000 <" in money(1_500_000, 6, "USD")
    assert ">0.000001 <" in money(1, 6, "USD")
    assert ">12,345 <" in money(12_345, 0, "SAT")
    assert ">-2.50 <" in money(-250, 2, "EUR")
    assert money(None, 6, "USD") == "—"

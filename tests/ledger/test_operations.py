"""Every operation's money movements, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from teegate.errors import BudgetError, LedgerError
from teegate.ledger import InsufficientFunds, Ledger
from tests.ledger.conftest import Clock, assert_consistent


def test_deposit_withdraw_and_balance(ledger: Ledger) -> None:
    t = ledger.deposit("alice", 1_000_000, memo="top-up")
    assert (t.debit, t.credit, t.amount, t.kind) == ("external:USD", "wallet:USD:alice",
                                                     1_000_000, "deposit")
    ledger.withdraw("alice", 250_000)
    b = ledger.balance("alice")
    assert (b.available, b.reserved, b.held, b.total) == (750_000, 0, 0, 750_000)
    with pytest.raises(InsufficientFunds) as e:
        ledger.withdraw("alice", 750_001)
    assert (e.value.needed, e.value.available) == (750_001, 750_000)
    report = ledger.check()
    assert report.ok
    assert report.minted == {"USD": 750_000}


def test_conversation_reserve_hold_settle_close(ledger: Ledger) -> None:
    ledger.deposit("alice", 100_000_000)
    c = ledger.open_conversation("alice", 50_000_000)
    assert ledger.balance("alice").available == 50_000_000
    h = ledger.hold("alice", 2_000_000, conversation=c.id)
    b = ledger.balance("alice")
    assert (b.available, b.reserved, b.held) == (50_000_000, 48_000_000, 2_000_000)
    s = ledger.settle(h.id, 500_000, provider="near", model="deepseek",
                      usage={"prompt_tokens": 100, "completion_tokens": 50})
    assert (s.charged, s.released, s.hold.state, s.hold.cost) == (500_000, 1_500_000, "settled",
                                                                  500_000)
    assert [x.kind for x in s.transfers] == ["charge", "release"]
    assert s.transfers[1].credit == f"reserve:{c.id}"
    assert ledger.conversation(c.id).remaining == 49_500_000
    closed = ledger.close_conversation(c.id)
    assert (closed.state, closed.refunded) == ("closed", 49_500_000)
    b = ledger.balance("alice")
    assert (b.available, b.reserved, b.held) == (99_500_000, 0, 0)
    with pytest.raises(LedgerError, match="closed"):
        ledger.hold("alice", 1, conversation=c.id)
    assert_consistent(ledger)


def test_short_wallet_and_reserve_name_needed_and_available(ledger: Ledger) -> None:
    ledger.deposit("bob", 10)
    with pytest.raises(BudgetError, match="needed 11, available 10"):
        ledger.open_conversation("bob", 11)
    c = ledger.open_conversation("bob", 8)
    with pytest.raises(InsufficientFunds) as e:
        ledger.hold("bob", 9, conversation=c.id)
    assert (e.value.needed, e.value.available) == (9, 8)
    assert "reserve of conversation" in str(e.value)
    with pytest.raises(InsufficientFunds, match="wallet of bob: needed 3, available 2"):
        ledger.hold("bob", 3)
    assert ledger.balance("bob").total == 10
    assert_consistent(ledger)


def test_cost_above_hold_is_capped_and_recorded(ledger: Ledger) -> None:
    ledger.deposit("a", 1000)
    h = ledger.hold("a", 100)
    s = ledger.settle(h.id, 250, provider="p", model="m")
    assert (s.charged, s.released) == (100, 0)
    assert s.transfers[0].metadata["capped"] is True
    assert s.transfers[0].metadata["requested"] == 250
    whole = ledger.settle(ledger.hold("a", 40).id, None, provider="p")
    assert whole.charged == 40
    assert ledger.balance("a").available == 860
    assert_consistent(ledger)


def test_void_and_zero_cost_release_everything(ledger: Ledger) -> None:
    ledger.deposit("a", 1000)
    v = ledger.void(ledger.hold("a", 300).id, reason="upstream 500")
    assert (v.hold.state, v.charged, v.released) == ("voided", 0, 300)
    z = ledger.settle(ledger.hold("a", 300).id, 0, provider="p")
    assert (z.charged, z.released) == (0, 300)
    assert ledger.balance("a").available == 1000
    with pytest.raises(LedgerError, match="already voided"):
        ledger.settle(v.hold.id, 1, provider="p")
    with pytest.raises(LedgerError, match="no hold"):
        ledger.void("hold_missing")
    assert_consistent(ledger)


def test_release_after_close_goes_to_wallet(ledger: Ledger) -> None:
    ledger.deposit("a", 1000)
    c = ledger.open_conversation("a", 500)
    h = ledger.hold("a", 200, conversation=c.id)
    assert ledger.close_conversation(c.id).refunded == 300
    s = ledger.settle(h.id, 50, provider="p")
    assert s.transfers[1].credit == "wallet:USD:a"
    assert ledger.balance("a").available == 950
    assert ledger.conversation(c.id).remaining == 0
    assert_consistent(ledger)


def test_hold_in_someone_elses_conversation_is_refused(ledger: Ledger) -> None:
    ledger.deposit("a", 100)
    c = ledger.open_conversation("a", 50)
    with pytest.raises(LedgerError, match="another agent"):
        ledger.hold("b", 10, conversation=c.id)
    with pytest.raises(LedgerError, match="no conversation"):
        ledger.hold("a", 10, conversation="conv_nope")


def test_expire_releases_holds_and_conversations(ledger: Ledger, clock: Clock) -> None:
    ledger.deposit("a", 1000)
    c = ledger.open_conversation("a", 600, expires_at=clock.t + 3600)
    h1 = ledger.hold("a", 100, conversation=c.id, expires_at=clock.t + 60)
    h2 = ledger.hold("a", 100, expires_at=clock.t + 60)
    h3 = ledger.hold("a", 50, expires_at=clock.t + 7200)
    assert ledger.expire(now=clock.t + 59).holds == 0
    r = ledger.expire(now=clock.t + 60)
    assert (r.holds, r.conversations) == (2, 0)
    assert ledger.get_hold(h1.id).state == "expired"
    with pytest.raises(LedgerError, match="already expired"):
        ledger.settle(h2.id, 10, provider="p")
    b = ledger.balance("a")
    assert (b.available, b.reserved, b.held) == (350, 600, 50)
    clock.t += 3600
    with pytest.raises(LedgerError, match="expired"):
        ledger.hold("a", 1, conversation=c.id)
    r = ledger.expire()
    assert (r.holds, r.conversations) == (0, 1)
    assert ledger.conversation(c.id).state == "expired"
    assert ledger.balance("a").available == 950
    assert ledger.expire(now=clock.t + 7200).holds == 1
    assert ledger.get_hold(h3.id).state == "expired"
    assert ledger.balance("a").total == 1000
    assert_consistent(ledger)


def test_renewing_holds_pushes_only_open_unexpired_holds_later(ledger: Ledger,
                                                                clock: Clock) -> None:
    """What the gateway does for calls still running: their holds outlive the sweep."""
    ledger.deposit("a", 1000)
    running = ledger.hold("a", 100, expires_at=clock.t + 60)
    lapsed = ledger.hold("a", 100, expires_at=clock.t + 10)
    later = ledger.hold("a", 100, expires_at=clock.t + 900)
    done = ledger.hold("a", 100, expires_at=clock.t + 60)
    ledger.settle(done.id, 10, provider="p")
    n = ledger.renew_holds([running.id, lapsed.id, later.id, done.id, running.id, "hold_nope"],
                           clock.t + 600, now=clock.t + 30)
    assert n == 1  # lapsed is past its expiry, later already runs longer, done is settled
    assert ledger.get_hold(running.id).expires_at == clock.t + 600
    assert ledger.get_hold(lapsed.id).expires_at == clock.t + 10
    assert ledger.get_hold(later.id).expires_at == clock.t + 900
    assert ledger.renew_holds([], clock.t + 600) == 0
    assert ledger.expire(now=clock.t + 61).holds == 1  # only lapsed
    ledger.settle(running.id, 20, provider="p")
    assert ledger.revenue("p") == 30
    assert_consistent(ledger)


def test_reward_is_all_legs_or_none(ledger: Ledger) -> None:
    ledger.deposit("facilitator", 100)
    with pytest.raises(InsufficientFunds, match="needed 120, available 100"):
        ledger.reward("facilitator", [("x", 60), ("y", 60)])
    assert ledger.balance("x").available == 0
    out = ledger.reward("facilitator", [("x", 60), ("y", 40)], memo="good answers")
    assert [(t.credit, t.amount) for t in out] == [("wallet:USD:x", 60), ("wallet:USD:y", 40)]
    assert ledger.balance("facilitator").available == 0
    ledger.deposit("pool:bounties", 500)
    ledger.reward("pool:bounties", [("x", 5)])
    assert ledger.balance("x").available == 65
    with pytest.raises(LedgerError, match="source itself"):
        ledger.reward("x", [("x", 1)])
    with pytest.raises(LedgerError, match="1 to 1000 legs"):
        ledger.reward("x", [])
    assert_consistent(ledger)


@pytest.mark.parametrize("bad", [1.5, 1.0, True, 0, -5, "10", None, 2**70])
def test_amounts_must_be_positive_ints(ledger: Ledger, bad: object) -> None:
    with pytest.raises(LedgerError):
        ledger.deposit("a", bad)  # type: ignore[arg-type]
    with pytest.raises(LedgerError):
        ledger.hold("a", bad)  # type: ignore[arg-type]
    assert ledger.check().transfers == 0


def test_names_and_currencies_are_validated(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="unknown currency"):
        ledger.deposit("a", 1, currency="BTC")
    with pytest.raises(LedgerError, match="must not contain"):
        ledger.deposit("a:b", 1)
    with pytest.raises(LedgerError, match="non-empty"):
        ledger.deposit("", 1)


def test_currencies_are_separate(ledger: Ledger) -> None:
    ledger.deposit("a", 500, currency="EUR")
    ledger.deposit("a", 7)
    assert ledger.balance("a", "EUR").available == 500
    assert ledger.balance("a").available == 7
    with pytest.raises(InsufficientFunds):
        ledger.hold("a", 8)
    h = ledger.hold("a", 400, currency="EUR")
    assert h.currency == "EUR"
    ledger.settle(h.id, 100, provider="p")
    report = ledger.check()
    assert report.ok
    assert report.minted == {"EUR": 500, "USD": 7}


def test_history_pages_and_spend_report(ledger: Ledger, clock: Clock) -> None:
    ledger.deposit("a", 10_000)
    c = ledger.open_conversation("a", 5_000, expires_at=clock.t + 10 * 86_400)
    for i, model in enumerate(["m1", "m2", "m1"]):
        h = ledger.hold("a", 1_000, conversation=c.id if i < 2 else None)
        ledger.settle(h.id, 100 * (i + 1), provider="p", model=model,
                      usage={"prompt_tokens": 10, "completion_tokens": 5})
        clock.t += 86_400
    rows = {r.key: r for r in ledger.spend("a", group_by="model")}
    assert (rows["m1"].amount, rows["m1"].calls, rows["m1"].prompt_tokens) == (400, 2, 20)
    assert rows["m2"].amount == 200
    by_conv = {r.key: r.amount for r in ledger.spend("a", group_by="conversation")}
    assert by_conv == {c.id: 300, "-": 300}
    assert len(ledger.spend("a", group_by="day")) == 3
    assert ledger.spend("b") == []
    with pytest.raises(LedgerError, match="group_by"):
        ledger.spend("a", group_by="colour")
    first = ledger.transfers("a", limit=4)
    assert [t.seq for t in first] == sorted((t.seq for t in first), reverse=True)
    rest = ledger.transfers("a", limit=100, before=first[-1].seq)
    everything = ledger.transfers("a", limit=100)
    assert [t.id for t in first + rest] == [t.id for t in everything]
    assert {t.kind for t in everything} >= {"deposit", "reserve", "hold", "charge", "release"}


def test_reopening_keeps_state_and_schema(make_ledger: object) -> None:
    from collections.abc import Callable

    assert callable(make_ledger)
    factory: Callable[[], Ledger] = make_ledger
    a = factory()
    a.deposit("a", 42)
    b = factory()  # a second handle (or process) migrates nothing and sees the same money
    assert b.balance("a").available == 42
    assert_consistent(b)


def test_provider_revenue_sums_its_shards(ledger: Ledger) -> None:
    ledger.deposit("a", 10_000)
    for cost in range(1, 41):
        ledger.settle(ledger.hold("a", 100).id, cost, provider="near")
    ledger.settle(ledger.hold("a", 100).id, 7, provider="redpill")
    assert ledger.revenue("near") == sum(range(1, 41))
    assert ledger.revenue("redpill") == 7
    assert ledger.revenue("nobody") == 0
    assert ledger.balance("a").available == 10_000 - sum(range(1, 41)) - 7
    assert_consistent(ledger)

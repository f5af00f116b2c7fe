"""Refusals that used to succeed, on SQLite and PostgreSQL: money for agents that do not
exist, rewards of a conversation that ended, lifetimes that are not finite, a key reused with
another ttl, and a caller key that took a key the ledger derives itself."""

from __future__ import annotations

import math

import pytest

from teegate.errors import LedgerError
from teegate.ledger import Conflict, Ledger, NotFound, open_ledger
from tests.ledger.conftest import Clock, LedgerFactory, assert_consistent


class Directory:
    def __init__(self, *agents: str) -> None:
        self.agents = set(agents)

    def has_agent(self, agent_id: str) -> bool:
        return agent_id in self.agents


@pytest.fixture
def known(make_ledger: LedgerFactory) -> Ledger:
    lg = make_ledger()
    lg.agents = Directory("alice", "bob")
    return lg


def test_deposits_and_rewards_need_an_agent_that_exists(known: Ledger) -> None:
    known.deposit("alice", 1000)
    with pytest.raises(NotFound, match="no agent 'mallory'"):
        known.deposit("mallory", 1000)
    known.deposit("pool:prizes", 500)  # a pool is no agent
    c = known.open_conversation("alice", 300)
    with pytest.raises(NotFound, match="no agent 'carol'"):
        known.reward("alice", [("bob", 5), ("carol", 6)], conversation=c.id)
    with pytest.raises(NotFound, match="no agent 'carol'"):
        known.reward("pool:prizes", [("carol", 6)])
    assert known.balance("bob").available == 0  # all legs or none
    known.reward("alice", [("bob", 5)], conversation=c.id)
    known.agents = Directory("alice", "bob", "mallory")  # created later: starts at zero
    assert known.balance("mallory").available == 0
    assert known.check().transfers == 4  # two deposits, the reserve, one reward
    assert_consistent(known)


def test_no_reward_after_a_conversation_ended(ledger: Ledger, clock: Clock) -> None:
    ledger.deposit("alice", 1000)
    closed = ledger.open_conversation("alice", 100)
    ledger.reward("alice", [("bob", 1)], conversation=closed.id)
    ledger.close_conversation(closed.id)
    with pytest.raises(Conflict, match="is closed"):
        ledger.reward("alice", [("bob", 1)], conversation=closed.id)
    lapsed = ledger.open_conversation("alice", 100, ttl=60)
    clock.t += 61
    with pytest.raises(Conflict, match="is expired"):  # not swept yet
        ledger.reward("alice", [("bob", 1)], conversation=lapsed.id)
    ledger.expire()
    with pytest.raises(Conflict, match="is expired"):
        ledger.reward("alice", [("bob", 1)], conversation=lapsed.id)
    with pytest.raises(NotFound, match="no conversation"):
        ledger.reward("alice", [("bob", 1)], conversation="conv_nope")
    assert ledger.balance("bob").available == 1
    assert_consistent(ledger)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0, -1, True, "60"])
def test_lifetimes_must_be_finite_and_positive(ledger: Ledger, clock: Clock,
                                               bad: object) -> None:
    ledger.deposit("alice", 1000)
    with pytest.raises(LedgerError, match="ttl must be a finite number"):
        ledger.open_conversation("alice", 100, ttl=bad)  # type: ignore[arg-type]
    if isinstance(bad, float) and not math.isfinite(bad):
        for expiry in (lambda: ledger.open_conversation("alice", 100, expires_at=bad),
                       lambda: ledger.hold("alice", 10, expires_at=bad),
                       lambda: ledger.renew_holds(["h"], bad)):
            with pytest.raises(LedgerError, match="finite"):
                expiry()
        with pytest.raises(LedgerError, match="finite"):
            open_ledger("sqlite:///:memory:", hold_ttl=bad)
    clock.t += 10**9
    assert ledger.expire().conversations == 0
    assert ledger.balance("alice").available == 1000


def test_the_same_key_with_another_ttl_is_a_conflict(ledger: Ledger, clock: Clock) -> None:
    ledger.deposit("alice", 1000)
    first = ledger.open_conversation("alice", 100, key="open-1", ttl=60)
    clock.t += 5
    assert ledger.open_conversation("alice", 100, key="open-1", ttl=60) == first  # a retry
    for other in ({"ttl": 3600}, {}, {"expires_at": first.expires_at}):
        with pytest.raises(Conflict, match="different request"):
            ledger.open_conversation("alice", 100, key="open-1", **other)
    assert ledger.balance("alice").reserved == 100
    assert_consistent(ledger)


@pytest.mark.parametrize("derived", ["close:{c}", "expire-conversation:{c}", "hold:{h}",
                                     "settle:{h}", "void:{h}", "expire-hold:{h}"])
def test_a_caller_key_cannot_take_a_key_the_ledger_derives(ledger: Ledger, clock: Clock,
                                                            derived: str) -> None:
    ledger.deposit("alice", 1000)
    c = ledger.open_conversation("alice", 300, conversation_id="c1", expires_at=clock.t + 60)
    key = derived.format(c=c.id, h="h1")
    ledger.deposit("alice", 1, key=key)  # e.g. teegate wallet deposit --key close:c1
    ledger.open_conversation("alice", 1, key=key + ":x")
    h = ledger.hold("alice", 100, conversation=c.id, hold_id="h1", expires_at=clock.t + 30)
    if derived.startswith("void"):
        assert ledger.void(h.id).released == 100
    elif derived.startswith("expire-hold"):
        clock.t += 31
        assert ledger.expire().holds == 1
    else:
        assert ledger.settle(h.id, 40, provider="p").charged == 40
    if derived.startswith("expire-conv"):
        clock.t += 61
        assert ledger.expire().conversations == 1
    else:
        released = derived.startswith(("void", "expire-hold"))
        assert ledger.close_conversation(c.id).refunded == (300 if released else 260)
    assert ledger.conversation(c.id).state != "open"
    assert_consistent(ledger)


def test_a_key_stored_before_the_namespace_still_replays_its_request(ledger: Ledger) -> None:
    """A retry that spans the upgrade moves money once; another request under such an old
    key (here: the key a close derives) is not this caller's and goes ahead."""
    d = ledger.deposit("alice", 1000, key="topup-1")
    c = ledger.open_conversation("alice", 100, key="open-1")
    ledger.backend.run(lambda tx: tx.exec(
        "UPDATE tl_operations SET key = SUBSTR(key, 5) WHERE SUBSTR(key, 1, 4) = 'key:'"))
    assert ledger.deposit("alice", 1000, key="topup-1") == d
    assert ledger.open_conversation("alice", 100, key="open-1") == c
    ledger.close_conversation(c.id)
    ledger.deposit("alice", 5, key=f"close:{c.id}")
    assert ledger.balance("alice").available == 1005
    assert_consistent(ledger)

"""Hypothesis drives random sequences of every operation against a plain-Python model of the
money; after each step the ledger's balances equal the model's and ``check`` passes
(balances re-derived from transfers, nothing negative, every currency sums to zero)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from teegate.errors import BudgetError, LedgerError
from teegate.ledger import Ledger, open_ledger
from tests.ledger.conftest import _PG, PG_URL, Clock, drop_schema

AGENTS = ("a", "b", "c")
amounts = st.integers(min_value=1, max_value=60)


@dataclass
class MHold:
    agent: str
    amount: int
    conv: str | None
    expires: float
    open: bool = True


class LedgerMachine(RuleBasedStateMachine):
    url = ""
    schema: str | None = None
    holds = Bundle("holds")
    convs = Bundle("convs")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        if self.schema is not None:
            self.schema_used: str | None = f"{self.schema}_{uuid.uuid4().hex[:6]}"
            self.lg: Ledger = open_ledger(self.url, clock=self.clock, schema=self.schema_used)
        else:
            self.schema_used = None
            path = Path(self.url) / f"{uuid.uuid4().hex}.db"
            self.lg = open_ledger(f"sqlite:///{path}", clock=self.clock)
        self.wallet = dict.fromkeys(AGENTS, 0)
        self.reserve: dict[str, int] = {}
        self.conv_open: dict[str, tuple[str, float]] = {}  # id -> (agent, expires)
        self.mholds: dict[str, MHold] = {}
        self.revenue = 0
        self.minted = 0
        self.done: list[tuple[str, tuple[Any, ...], Any]] = []  # (op, args, result) to replay

    def teardown(self) -> None:
        self.lg.close()
        if self.schema_used:
            drop_schema(self.schema_used)

    def _release(self, h: MHold, amount: int) -> None:
        if h.conv is not None and h.conv in self.conv_open:
            self.reserve[h.conv] += amount
        else:
            self.wallet[h.agent] += amount

    @initialize()
    def fund_everyone(self) -> None:
        for agent in AGENTS:
            self.lg.deposit(agent, 150)
            self.wallet[agent] += 150
            self.minted += 150

    @rule(agent=st.sampled_from(AGENTS), amount=amounts)
    def deposit(self, agent: str, amount: int) -> None:
        key = uuid.uuid4().hex
        r = self.lg.deposit(agent, amount, key=key)
        self.wallet[agent] += amount
        self.minted += amount
        self.done.append(("deposit", (agent, amount, key), r))

    @rule(agent=st.sampled_from(AGENTS), amount=amounts)
    def withdraw(self, agent: str, amount: int) -> None:
        if amount > self.wallet[agent]:
            with pytest.raises(BudgetError):
                self.lg.withdraw(agent, amount)
            return
        self.lg.withdraw(agent, amount)
        self.wallet[agent] -= amount
        self.minted -= amount

    @rule(target=convs, agent=st.sampled_from(AGENTS), budget=amounts,
          ttl=st.sampled_from([30.0, 3600.0]))
    def open_conversation(self, agent: str, budget: int, ttl: float) -> Any:
        if budget > self.wallet[agent]:
            with pytest.raises(BudgetError):
                self.lg.open_conversation(agent, budget)
            return multiple()
        c = self.lg.open_conversation(agent, budget, expires_at=self.clock.t + ttl)
        self.wallet[agent] -= budget
        self.reserve[c.id] = budget
        self.conv_open[c.id] = (agent, self.clock.t + ttl)
        return c.id

    @rule(target=holds, conv=st.one_of(st.none(), convs), agent=st.sampled_from(AGENTS),
          amount=amounts, ttl=st.sampled_from([10.0, 600.0]))
    def hold(self, conv: str | None, agent: str, amount: int, ttl: float) -> Any:
        if conv is not None:
            if conv not in self.conv_open:
                with pytest.raises(LedgerError):
                    self.lg.hold(agent, amount, conversation=conv)
                return multiple()
            agent, expires = self.conv_open[conv]
            if expires <= self.clock.t:
                with pytest.raises(LedgerError, match="expired"):
                    self.lg.hold(agent, amount, conversation=conv)
                return multiple()
            have = self.reserve[conv]
        else:
            have = self.wallet[agent]
        if amount > have:
            with pytest.raises(BudgetError):
                self.lg.hold(agent, amount, conversation=conv)
            return multiple()
        key = uuid.uuid4().hex
        h = self.lg.hold(agent, amount, conversation=conv, key=key,
                         expires_at=self.clock.t + ttl)
        if conv is not None:
            self.reserve[conv] -= amount
        else:
            self.wallet[agent] -= amount
        self.mholds[h.id] = MHold(agent, amount, conv, self.clock.t + ttl)
        self.done.append(("hold", (agent, amount, conv, key, self.clock.t + ttl), h))
        return h.id

    @rule(hold=consumes(holds), cost=st.integers(min_value=0, max_value=80))
    def settle(self, hold: str, cost: int) -> None:
        h = self.mholds.get(hold)
        if h is None or not h.open:
            with pytest.raises(LedgerError):
                self.lg.settle(hold, cost, provider="p")
            return
        s = self.lg.settle(hold, cost, provider="p", model="m")
        charged = min(cost, h.amount)
        assert (s.charged, s.released) == (charged, h.amount - charged)
        h.open = False
        self.revenue += charged
        self._release(h, h.amount - charged)
        self.done.append(("settle", (hold, cost), s))

    @rule(hold=consumes(holds))
    def void(self, hold: str) -> None:
        h = self.mholds.get(hold)
        if h is None or not h.open:
            with pytest.raises(LedgerError):
                self.lg.void(hold)
            return
        self.lg.void(hold)
        h.open = False
        self._release(h, h.amount)

    @rule(conv=consumes(convs))
    def close(self, conv: str) -> None:
        if conv not in self.conv_open:
            with pytest.raises(LedgerError):
                self.lg.close_conversation(conv, key=uuid.uuid4().hex)
            return
        c = self.lg.close_conversation(conv)
        agent, _ = self.conv_open.pop(conv)
        assert c.refunded == self.reserve[conv]
        self.wallet[agent] += self.reserve[conv]
        self.reserve[conv] = 0

    @rule(source=st.sampled_from(AGENTS), to=st.sampled_from(AGENTS), a1=amounts, a2=amounts)
    def reward(self, source: str, to: str, a1: int, a2: int) -> None:
        others = [x for x in AGENTS if x != source]
        legs = [(others[0], a1), (others[1], a2)]
        if a1 + a2 > self.wallet[source]:
            with pytest.raises(BudgetError):
                self.lg.reward(source, legs)
            return
        key = uuid.uuid4().hex
        r = self.lg.reward(source, legs, key=key)
        self.wallet[source] -= a1 + a2
        for agent, n in legs:
            self.wallet[agent] += n
        self.done.append(("reward", (source, legs, key), r))

    @rule(dt=st.sampled_from([5.0, 20.0, 700.0]))
    def time_passes_and_expire(self, dt: float) -> None:
        self.clock.t += dt
        report = self.lg.expire()
        n = 0
        for h in sorted(self.mholds.values(), key=lambda x: x.expires):
            if h.open and h.expires <= self.clock.t:
                h.open = False
                n += 1
                self._release(h, h.amount)
        nc = 0
        for cid, (agent, expires) in list(self.conv_open.items()):
            if expires <= self.clock.t:
                del self.conv_open[cid]
                self.wallet[agent] += self.reserve[cid]
                self.reserve[cid] = 0
                nc += 1
        assert (report.holds, report.conversations) == (n, nc)

    @precondition(lambda self: bool(self.done))
    @rule(i=st.integers(min_value=0))
    def retry_moves_nothing(self, i: int) -> None:
        op, args, first = self.done[i % len(self.done)]
        if op == "deposit":
            again: Any = self.lg.deposit(args[0], args[1], key=args[2])
        elif op == "hold":
            agent, amount, conv, key, exp = args
            again = self.lg.hold(agent, amount, conversation=conv, key=key, expires_at=exp)
        elif op == "settle":
            again = self.lg.settle(args[0], args[1], provider="p", model="m")
        else:
            again = self.lg.reward(args[0], args[1], key=args[2])
        assert again == first

    @invariant()
    def balances_match_model_and_check_passes(self) -> None:
        for agent in AGENTS:
            b = self.lg.balance(agent)
            assert b.available == self.wallet[agent]
            assert b.reserved == sum(v for c, v in self.reserve.items()
                                     if self.lg.conversation(c).agent == agent)
            assert b.held == sum(h.amount for h in self.mholds.values()
                                 if h.open and h.agent == agent)
        report = self.lg.check()
        assert report.problems == ()
        assert report.minted.get("USD", 0) == self.minted
        held = sum(h.amount for h in self.mholds.values() if h.open)
        assert (sum(self.wallet.values()) + sum(self.reserve.values()) + held + self.revenue
                == self.minted)


def test_random_operation_sequences_sqlite(tmp_path: Path) -> None:
    LedgerMachine.url, LedgerMachine.schema = str(tmp_path), None
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=int(os.environ.get("LEDGER_EXAMPLES", "40")), stateful_step_count=30,
        deadline=None, suppress_health_check=list(HealthCheck)))


@pytest.mark.skipif(not _PG, reason=f"PostgreSQL not reachable at {PG_URL}")
def test_random_operation_sequences_postgresql() -> None:
    LedgerMachine.url, LedgerMachine.schema = PG_URL, f"tl_hyp_{uuid.uuid4().hex[:6]}"
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=int(os.environ.get("LEDGER_PG_EXAMPLES", "8")), stateful_step_count=25,
        deadline=None, suppress_health_check=list(HealthCheck)))

"""Random operation sequences on two channels: money moves only by deposits and withdrawals.

After every operation, whether it landed or was refused: the tokens the contract holds equal the
unclaimed escrow of every channel plus what receivers are owed and not yet paid; the sum of
channel balances changed by exactly deposits minus refunds and withdrawals; no token was created
or lost among payers, receiver and contract; and nothing ever moved for a refused operation.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_tester.exceptions import TransactionFailed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.chain.scheme import ChannelConfig
from tests.chain.channels import DELAY, ERC3009_COLLECTOR, World
from tests.chain.evm import events

OPS = st.lists(
    st.tuples(st.sampled_from(["deposit", "claim", "settle", "refund", "initiate", "finalize"]),
              st.integers(0, 1), st.integers(0, 80)),
    min_size=1, max_size=8)


@pytest.fixture(scope="module")
def env() -> tuple[World, list[ChannelConfig]]:
    world = World()
    configs = [world.config(payer=world.payer), world.config(payer=world.party())]
    for config in configs:
        world.mint(config.as_tuple()[0], 10**6)
    return world, configs


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_sum_of_balances_moves_only_by_deposits_and_withdrawals(
        env: tuple[World, list[ChannelConfig]], ops: list[Any]) -> None:
    w, configs = env
    snapshot = w.chain.tester.take_snapshot()
    try:
        _run(w, configs, ops)
    finally:
        w.chain.tester.revert_to_snapshot(snapshot)


def _run(w: World, configs: list[ChannelConfig], ops: list[Any]) -> None:
    f = w.channels.functions
    parties = [w.channels.address, w.receiver.address, *(c.as_tuple()[0] for c in configs)]
    supply = sum(w.balance(p) for p in parties)
    escrow = sum(w.state(c)[0] for c in configs)
    for name, index, amount in ops:
        config = configs[index]
        t = config.as_tuple()
        before = {p: w.balance(p) for p in parties}
        call, sender = None, w.receiver.address
        if name == "deposit" and amount:
            call, sender = f.deposit(t, amount, ERC3009_COLLECTOR, w.authorization(config, amount)
                                     ), w.stranger.address
        elif name == "claim":
            total = w.state(config)[1] + amount
            call = f.claim([w.row(config, total)])
        elif name == "settle":
            call = f.settle(w.receiver.address, w.token.address)
        elif name == "refund" and amount:
            call = f.refund(t, amount)
        elif name == "initiate" and amount:
            call, sender = f.initiateWithdraw(t, amount), t[0]
        elif name == "finalize":
            w.chain.travel(DELAY)
            call, sender = f.finalizeWithdraw(t), t[0]
        if call is None:
            continue
        try:
            receipt = w.chain.transact(call, sender)
        except TransactionFailed:
            assert {p: w.balance(p) for p in parties} == before, f"{name} refused yet moved money"
            continue
        for kind, sign in (("Deposited", 1), ("Refunded", -1), ("WithdrawFinalized", -1)):
            escrow += sign * sum(int(e.args.amount) for e in events(w.channels, kind, receipt))
        _check(w, configs, parties, supply, escrow)


def _check(w: World, configs: list[ChannelConfig], parties: list[str], supply: int,
           escrow: int) -> None:
    states = [w.state(c) for c in configs]
    owed = w.channels.functions.receivers(w.receiver.address, w.token.address).call()
    held = w.balance(w.channels.address)
    # this module's world has only these two channels and this receiver
    assert held == sum(b - c for b, c in states) + owed[0] - owed[1]
    assert sum(b for b, _ in states) == escrow
    assert all(c <= b for b, c in states)
    assert sum(w.balance(p) for p in parties) == supply

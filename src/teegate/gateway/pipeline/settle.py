"""Settle: the end of every call, whatever its path. Check an endpoint signature, then
settle (or void) the hold and commit the signed receipt, in one transaction when the ledger
and the log share a database (one group commit for many calls), before the answer's last
byte: a receipt id a client got always exists."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from teegate.errors import TeegateError
from teegate.gateway.pipeline import verify
from teegate.ledger.pricing import Price
from teegate.ledger.usage import read_usage

if TYPE_CHECKING:
    from teegate.gateway.calls import CallRecord
    from teegate.gateway.state import Gateway

log = logging.getLogger("teegate.gateway")


async def finish(gw: Gateway, record: CallRecord, t0: float) -> None:
    """Count the call and conclude it (settle and commit its receipt) if the answer's
    path has not done so already: refusals, failures and disconnects end here."""
    if record.finished:
        return
    record.finished = True
    gw.metrics.requests.labels(record.provider or "", record.outcome).inc()
    gw.metrics.latency.labels("true" if record.stream else "false").observe(
        time.perf_counter() - t0)
    if record.outcome == "pending":
        record.outcome = "failed"
    await conclude(gw, record)


async def conclude(gw: Gateway, record: CallRecord) -> bool:
    """Before the answer's last byte: check an endpoint signature, then settle (or void)
    the hold and commit the receipt. True when the receipt is committed; a stop
    (cancellation) meanwhile still settles and writes the receipt."""
    if record.concluded:
        return gw.receipts is None or record.receipt_committed
    record.concluded = True
    p = gw.by_id.get(record.provider or "")
    try:
        if record.signature_check == "pending" and p is not None:
            await verify.endpoint_signature(gw, p, record)
    except asyncio.CancelledError:
        record.signature_check = "not checked: the gateway stopped first"
        await _shielded(gw, record)
        raise
    except Exception as e:
        log.exception("cannot check the response signature of %s", record.chat_id)
        record.signature_check = f"not checked: {type(e).__name__}"
    await _shielded(gw, record)
    for hook in gw.concluded_hooks:
        hook(record)
    return gw.receipts is None or record.receipt_committed


async def _shielded(gw: Gateway, record: CallRecord) -> None:
    verify.void_if_unverified(record)
    if (gw.accounting is None or record.hold_id is None) and gw.receipts is None:
        return
    done = gw.pool.submit(_settle_and_commit, gw, record)
    try:
        await asyncio.shield(asyncio.wrap_future(done))
    except asyncio.CancelledError:
        done.result(timeout=60)  # stopping: the settlement and receipt still complete
        raise


def _settle_and_commit(gw: Gateway, record: CallRecord) -> None:
    """(In a worker thread.) The settlement and the receipt: the receipt states what the
    settlement moved; a hold lost meanwhile (released by an expiry sweep) is charged
    nothing, and the receipt says so."""
    receipts = gw.receipts
    rid = None
    if receipts is not None:
        rid = record.receipt_id = record.receipt_id or receipts.new_id()
    _redact_record(gw, record)
    attach = None
    if receipts is not None and receipts.shared:
        def attach(tx: Any) -> None:
            assert receipts is not None
            assert rid is not None
            receipts.attach(tx, record, rid)
    written = False
    if gw.accounting is not None and record.hold_id is not None:
        try:
            _settle(gw, record, attach)
            written = attach is not None
        except Exception as e:
            _settle_failed(gw, record, e)
        finally:
            gw.running_holds.discard(record.hold_id)
            gw.lost_holds.discard(record.hold_id)
    if receipts is not None and rid is not None:
        try:
            if not written:
                _redact_record(gw, record)  # a settlement failure's note too
                receipts.commit(record, rid)
            record.receipt_committed = True
            receipts.wake()
        except Exception:
            gw.metrics.receipt_failures.inc()
            log.exception("receipts: cannot commit the receipt %s of a call", rid)


def _redact_record(gw: Gateway, record: CallRecord) -> None:
    """The agent reads its receipts: no upstream addresses in their error text."""
    if record.error:
        record.error = gw.redact(record.error)


def _settle_failed(gw: Gateway, record: CallRecord, e: Exception) -> None:
    from teegate.ledger.model import Conflict

    record.cost, record.transfer_ids = 0, []
    if isinstance(e, Conflict) and record.hold_id is not None:
        try:
            assert gw.accounting is not None
            state = gw.accounting.state(record.hold_id)
        except Exception:
            state = "unknown"
        note = (f"its hold {record.hold_id} was {state} before the call ended "
                "(released by the expiry sweep); nothing was charged")
        record.hold_lost, record.outcome = True, "failed"
        if record.withheld_sha256 is not None:  # a plain answer, not sent: withheld
            record.returned_sha256, record.status = record.withheld_sha256, 503
            note += "; the answer was withheld"
        log.error("ledger: call %s: %s", record.receipt_id, note)
    else:
        note = f"the settlement failed ({e}); nothing was charged"
        log.exception("ledger: cannot settle hold %s", record.hold_id)
    record.error = f"{record.error}; {note}" if record.error else note


def _settle(gw: Gateway, record: CallRecord,
            attach: Callable[[Any], None] | None = None) -> None:
    assert gw.accounting is not None
    if record.outcome in ("refused", "voided") or record.provider is None:
        gw.accounting.void(record, attach)
        return
    amount = call_cost(gw, record)
    if amount is None:
        gw.accounting.void(record, attach)
        return
    record.transfer_ids = gw.accounting.settle(record, amount, attach)


def call_cost(gw: Gateway, record: CallRecord) -> int | None:
    """What the call cost: from usage when the provider reported it; None to void, -1 for
    the hold's worst case."""
    p = gw.by_id.get(record.provider or "")
    if p is None:
        return None
    price = p.config.prices.get(record.model, Price())
    usage = record.usage
    if usage:
        tokens = read_usage(usage)  # every shape real providers send (ledger.usage)
        if tokens is None:
            log.warning("%s: usage %.200s is not understood; charged the hold's worst case",
                        p.id, json.dumps(usage))
            record.error = record.error or ("the provider's usage is not understood; "
                                            "charged the hold's worst case")
            return -1
        completion = tokens.completion
        if record.output_cap and completion > record.output_cap:
            # The provider was sent this cap: tokens beyond it were never asked for.
            record.error = (f"the provider reported {completion} completion tokens, "
                            f"above the cap of {record.output_cap} it was sent; "
                            "charged the cap")
            completion = record.output_cap
        try:
            return price.cost(tokens.prompt, completion, tokens.unsplit)
        except TeegateError:  # beyond the ledger's maximum: the hold's worst case
            return -1
    if record.status >= 400 or (record.outcome == "failed" and not record.stream):
        return None  # an error answer produced nothing billable
    if record.outcome in ("disconnected", "failed"):  # cut short: what was produced
        return price.cost(record.prompt_estimate, record.content_events)
    # a complete answer without usage: charge the hold's worst case, and say so
    log.warning("%s: a %s answer without usage; charged the hold's worst case", p.id,
                "streamed" if record.stream else "plain")
    record.error = record.error or "the provider reported no usage; charged the hold's " \
        "worst case"
    return -1

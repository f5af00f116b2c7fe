"""``teegate wallet|conversation|ledger``: the ledger from the command line.

Talks to the database directly (``--db``, default ``$TEEGATE_DATABASE_URL``, else the
``database_url`` of ``./teegate.toml`` when there is one, else the SQLite file in
``$TEEGATE_HOME`` that the embedded gateway uses); a SQLite file that does not exist is
refused, not created. Deposits and rewards go only to agents of the gateway's database
(``teegate agents create``). Amounts are integers in the currency's
smallest unit (``1500000``), or currency units when written with a decimal point, at most
the currency's digits after it (``1.5`` USD = ``1500000``; ``5`` is 5 micro-dollars, ``5.0``
is 5 dollars): the same syntax as amount strings in the HTTP API. ASCII digits only.
Exit codes: 0 ok, 1 refused (short of funds, check failed, unknown conversation), 2 malformed
input or usage error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from teegate.errors import BudgetError, LedgerError, TeegateError

T = TypeVar("T")
_out = Console()
_err = Console(stderr=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (sqlite:///path or "
                                           "postgresql://...); default: TEEGATE_DATABASE_URL, "
                                           "./teegate.toml's, or $TEEGATE_HOME/teegate.db.")]
CurOpt = Annotated[str, typer.Option("--currency", help="Currency code.")]
DecOpt = Annotated[int, typer.Option("--decimals", help="Decimals of the currency's smallest "
                                     "unit (for parsing and display).")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Idempotency key: running the same "
                                            "command again with it moves money once.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _Usage(Exception):  # noqa: N818 - exit 2
    pass


def parse_amount(text: str, decimals: int) -> int:
    """The ledger's one amount syntax (``teegate.ledger.model.parse_amount``): ``1500000``
    is smallest units, ``1.5`` is currency units; anything else is a usage error."""
    from teegate.ledger.model import parse_amount as parse

    try:
        return parse(text, decimals)
    except LedgerError as e:
        raise _Usage(str(e)) from None


def database_url(db: str | None) -> str:
    """``--db``, else ``$TEEGATE_DATABASE_URL``, else ``./teegate.toml``'s
    ``gateway.database_url`` (or the SQLite file in its ``data_dir``), else the default SQLite
    file: the gateway's own database."""
    import os
    import tomllib
    from pathlib import Path

    from teegate.errors import ConfigError
    from teegate.paths import default_database_url

    if db:
        return db
    if os.environ.get("TEEGATE_DATABASE_URL"):
        return default_database_url()
    here = Path("teegate.toml")
    if here.is_file():
        try:
            gw = tomllib.loads(here.read_text(encoding="utf-8")).get("gateway", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{here}: cannot read its database_url: {e}") from e
        url, data = gw.get("database_url"), gw.get("data_dir")
        if isinstance(url, str) and url:
            return url
        if isinstance(data, str) and data:  # the gateway keeps its database there
            return default_database_url(Path(data).expanduser())
    return default_database_url()


KEY_LIMIT = 200  # as the HTTP API's Idempotency-Key (teegate.ledger.http)


def _check_key(key: str | None) -> str | None:
    if key is not None and (not key or len(key) > KEY_LIMIT or not key.isprintable()):
        raise _Usage(f"--key must be 1-{KEY_LIMIT} printable characters")
    return key


def _kept(currency: str, decimals: int) -> None:
    """Only a currency the gateway's ledger keeps, with its decimals: ``--currency EUR``
    would fill accounts no gateway charges, ``--decimals 2`` read ``1.5`` as 150 micro-units."""
    from teegate.ledger import DEFAULT_CURRENCIES

    kept = {c.code: c.decimals for c in DEFAULT_CURRENCIES}
    if kept.get(currency) != decimals:
        raise _Usage(f"--currency {currency} --decimals {decimals}: the gateway's ledger keeps "
                     + ", ".join(f"{k} with {v} decimals" for k, v in kept.items()))


def _existing(url: str) -> str:
    """A SQLite file must exist: a mistyped ``--db`` would otherwise create an empty
    database and report zeros (and a deposit there would reach no gateway)."""
    from pathlib import Path

    if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise _Usage(f"database URL {url!r} must start with sqlite:/// or postgresql://")
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:" and not Path(path).expanduser().is_file():
            raise _Usage(f"no database at {path}: pass the gateway's database with --db "
                         "(start the gateway once to create it)")
    return url


def _run(db: str | None, currency: str, decimals: int, fn: Callable[..., T]) -> T:
    """Open the ledger (with the gateway's agents as its directory), run ``fn(ledger)``, map
    errors to exit codes without a traceback."""
    from teegate.gateway.store import GatewayStore
    from teegate.ledger import Currency, open_ledger

    try:
        _kept(currency, decimals)
        url = _existing(database_url(db))
        store = GatewayStore(url)
        try:
            ledger = open_ledger(url, currencies=(Currency(currency, decimals),), agents=store)
            try:
                return fn(ledger)
            finally:
                ledger.close()
        finally:
            store.close()
    except _Usage as e:
        _err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    except BudgetError as e:
        _err.print(f"[red]refused:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    except LedgerError as e:
        msg = str(e)
        code = 2 if ("must" in msg or "database URL" in msg or "unknown currency" in msg) else 1
        _err.print(f"[red]{'error' if code == 2 else 'refused'}:[/] {escape(msg)}")
        raise typer.Exit(code) from None
    except TeegateError as e:
        _err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def register(app: typer.Typer) -> None:
    from teegate.ledger import Currency, Ledger

    wallet = typer.Typer(help="Agent wallets: deposit, withdraw, balance, history, spend.",
                         no_args_is_help=True)
    conv = typer.Typer(help="Conversations: reserve a budget, close it, reward agents.",
                       no_args_is_help=True)
    ledger_app = typer.Typer(help="The ledger itself: verify invariants, release expired holds.",
                             no_args_is_help=True)
    app.add_typer(wallet, name="wallet")
    app.add_typer(conv, name="conversation")
    app.add_typer(ledger_app, name="ledger")

    def fmt(amount: int, currency: str, decimals: int) -> str:
        return Currency(currency, decimals).format(amount)

    @wallet.command("deposit")
    def deposit(agent: str, amount: str, db: DbOpt = None, currency: CurOpt = "USD",
                decimals: DecOpt = 6, key: KeyOpt = None, memo: str | None = None) -> None:
        """Deposit AMOUNT into AGENT's wallet (or "pool:NAME")."""
        def go(lg: Ledger) -> None:
            t = lg.deposit(agent, parse_amount(amount, decimals), key=_check_key(key),
                           memo=memo)
            _out.print(f"deposited {fmt(t.amount, currency, decimals)} to {escape(agent)} "
                       f"(transfer {escape(t.id)})")
        _run(db, currency, decimals, go)

    @wallet.command("withdraw")
    def withdraw(agent: str, amount: str, db: DbOpt = None, currency: CurOpt = "USD",
                 decimals: DecOpt = 6, key: KeyOpt = None, memo: str | None = None) -> None:
        """Withdraw AMOUNT from AGENT's available balance."""
        def go(lg: Ledger) -> None:
            t = lg.withdraw(agent, parse_amount(amount, decimals), key=_check_key(key),
                            memo=memo)
            _out.print(f"withdrew {fmt(t.amount, currency, decimals)} from {escape(agent)} "
                       f"(transfer {escape(t.id)})")
        _run(db, currency, decimals, go)

    @wallet.command("balance")
    def balance(agent: str, db: DbOpt = None, currency: CurOpt = "USD", decimals: DecOpt = 6,
                as_json: JsonOpt = False) -> None:
        """Show AGENT's available, reserved and held money."""
        def go(lg: Ledger) -> None:
            b = lg.balance(agent)
            if as_json:
                _out.print_json(json.dumps(b.to_json()))
                return
            t = Table(title=f"wallet {escape(agent)}")
            for col in ("available", "reserved", "held", "total"):
                t.add_column(col, justify="right")
            t.add_row(*(fmt(v, currency, decimals) for v in
                        (b.available, b.reserved, b.held, b.total)))
            _out.print(t)
        _run(db, currency, decimals, go)

    @wallet.command("history")
    def history(agent: str, db: DbOpt = None, currency: CurOpt = "USD", decimals: DecOpt = 6,
                limit: int = 50, before: int | None = None, as_json: JsonOpt = False) -> None:
        """AGENT's transfers, newest first (page with --before SEQ)."""
        def go(lg: Ledger) -> None:
            if not 1 <= limit <= 1000:
                raise _Usage("--limit must be 1..1000")
            rows = lg.transfers(agent, limit=limit, before=before)
            if as_json:
                _out.print_json(json.dumps([r.to_json() for r in rows]))
                return
            t = Table(title=f"transfers of {escape(agent)}")
            for col in ("seq", "time", "kind", "amount", "from", "to", "model"):
                t.add_column(col)
            for r in rows:
                t.add_row(str(r.seq), _when(r.created_at), r.kind,
                          fmt(r.amount, currency, decimals), escape(r.debit), escape(r.credit),
                          escape(str(r.metadata.get("model") or "")))
            _out.print(t)
        _run(db, currency, decimals, go)

    @wallet.command("spend")
    def spend(agent: str, group_by: str = "model", db: DbOpt = None, currency: CurOpt = "USD",
              decimals: DecOpt = 6, as_json: JsonOpt = False) -> None:
        """What AGENT's calls cost, per model, conversation, provider or day."""
        def go(lg: Ledger) -> None:
            rows = lg.spend(agent, group_by=group_by)
            if as_json:
                _out.print_json(json.dumps([r.to_json() for r in rows]))
                return
            t = Table(title=f"spend of {escape(agent)} by {group_by}")
            for col in (group_by, "calls", "prompt tokens", "completion tokens", "cost"):
                t.add_column(col)
            for r in rows:
                t.add_row(escape(r.key), str(r.calls), str(r.prompt_tokens),
                          str(r.completion_tokens), fmt(r.amount, currency, decimals))
            _out.print(t)
        _run(db, currency, decimals, go)

    @conv.command("open")
    def open_(agent: str, budget: str, db: DbOpt = None, currency: CurOpt = "USD",
              decimals: DecOpt = 6, ttl: float = 86_400.0, key: KeyOpt = None) -> None:
        """Reserve BUDGET from AGENT's wallet; prints the conversation id."""
        def go(lg: Ledger) -> None:
            if not math.isfinite(ttl) or ttl <= 0:
                raise _Usage(f"--ttl must be a finite number of seconds > 0, not {ttl}")
            c = lg.open_conversation(agent, parse_amount(budget, decimals),
                                     key=_check_key(key), ttl=ttl)
            _out.print(c.id)
        _run(db, currency, decimals, go)

    @conv.command("close")
    def close(conversation: str, db: DbOpt = None, currency: CurOpt = "USD",
              decimals: DecOpt = 6) -> None:
        """Close CONVERSATION and return what is left to the wallet."""
        def go(lg: Ledger) -> None:
            c = lg.close_conversation(conversation)
            _out.print(f"closed {escape(c.id)}: returned "
                       f"{fmt(c.refunded or 0, currency, decimals)} to {escape(c.agent)}")
        _run(db, currency, decimals, go)

    @conv.command("reward")
    def reward(conversation: str, legs: list[str], db: DbOpt = None,
               source: str | None = None, currency: CurOpt = "USD", decimals: DecOpt = 6,
               key: KeyOpt = None) -> None:
        """Pay AGENT=AMOUNT legs from the facilitator's wallet (or --source pool:NAME):
        all legs or none."""
        def go(lg: Ledger) -> None:
            parsed: list[tuple[str, int]] = []
            for leg in legs:
                agent, eq, amount = leg.partition("=")
                if not eq or not agent:
                    raise _Usage(f"reward leg {leg!r} must be AGENT=AMOUNT")
                parsed.append((agent, parse_amount(amount, decimals)))
            c = lg.conversation(conversation)
            out = lg.reward(source or c.agent, parsed, conversation=conversation,
                            key=_check_key(key))
            for t in out:
                _out.print(f"rewarded {escape(t.agent or '')} "
                           f"{fmt(t.amount, currency, decimals)} (transfer {escape(t.id)})")
        _run(db, currency, decimals, go)

    @ledger_app.command("check")
    def check(db: DbOpt = None, currency: CurOpt = "USD", decimals: DecOpt = 6) -> None:
        """Recompute every balance from the transfers and verify every invariant."""
        def go(lg: Ledger) -> None:
            r = lg.check()
            _out.print(f"{r.accounts} accounts, {r.transfers} transfers; minted: "
                       + ", ".join(f"{k} {v}" for k, v in r.minted.items()))
            if r.ok:
                _out.print("[green]ok[/]: balances equal the recomputation; every invariant "
                           "holds")
                return
            for p in r.problems:
                _err.print(f"[red]problem:[/] {escape(p)}")
            raise typer.Exit(1)
        _run(db, currency, decimals, go)

    @ledger_app.command("expire")
    def expire(db: DbOpt = None, currency: CurOpt = "USD", decimals: DecOpt = 6) -> None:
        """Release expired holds and close expired conversations."""
        def go(lg: Ledger) -> None:
            r = lg.expire()
            _out.print(f"released {r.holds} expired holds, closed {r.conversations} expired "
                       "conversations")
        _run(db, currency, decimals, go)

"""``teegate agent mint|wallet|deposit``: agent NFTs and their ERC-6551 wallets on chain.

Addresses come from ``--devnet FILE`` (default ``$TEEGATE_HOME/devnet.json``). Keys come from the
environment (``TEEGATE_OWNER_KEY``), else the devnet file's development owner key, said so on
stderr; never from an argument, which ``ps`` would show. Amounts use the ledger's one syntax:
digits alone are the token's smallest units, a decimal point means whole tokens (``1.5``).
Exit codes: 0 ok, 1 refused (unknown agent, short of funds, a revert), 2 no chain or bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from teegate import paths
from teegate.errors import ChainError, LedgerError, TeegateError

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)
OWNER_KEY_ENV = "TEEGATE_OWNER_KEY"

DevnetOpt = Annotated[Path | None, typer.Option(
    "--devnet", help="devnet.json (default: $TEEGATE_HOME/devnet.json)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="The gateway's database, for the "
                                           "ledger's view (default: as `teegate wallet`)")]


def fail(e: Exception) -> typer.Exit:
    """Exit 2 when no chain answers or input is malformed, 1 when the chain refused."""
    from teegate.chain.agents import InsufficientFundsError, UnknownAgentError
    from teegate.chain.reverts import RevertError

    code = 1 if isinstance(e, RevertError | UnknownAgentError | InsufficientFundsError) else 2
    _err.print(f"[red]{'refused' if code == 1 else 'error'}:[/red] {escape(str(e))}")
    return typer.Exit(code)


def connect(devnet_file: Path | None) -> Any:
    from teegate.chain.agents import AgentChain, Deployment

    return AgentChain(Deployment.load(devnet_file or paths.data_dir() / "devnet.json"))


def owner_key(chain: Any) -> Any:
    from teegate.chain.agents import key_from_env

    acct, label = key_from_env(OWNER_KEY_ENV, chain.dep.dev_owner_key, "owner")
    _err.print(f"signing as {acct.address} ({escape(label)})")
    return acct


def book_view(db: str | None, agent: str) -> dict[str, Any] | None:
    """The ledger database's channel book for ``agent``, or None when no gateway database is
    configured (a SQLite file that does not exist is not created)."""
    from teegate.cli.ledger import database_url

    url = database_url(db)
    if url.startswith("sqlite:///"):
        file = url[len("sqlite:///"):]
        if not file or file == ":memory:" or not Path(file).expanduser().is_file():
            return None
    from teegate.chain.book import ChannelBook
    from teegate.ledger.db import open_backend

    backend = open_backend(url)
    try:
        mine = [c for c in ChannelBook(backend).channels() if c.agent == agent]
    finally:
        backend.close()
    live = [c for c in mine if c.state == "open"]
    return {"channels": len(mine), "open_channels": len(live),
            "escrowed": sum(c.mirror.balance - c.mirror.total_claimed for c in live),
            "charged": sum(c.mirror.charged for c in mine),
            "claimed": sum(c.mirror.total_claimed for c in mine)}


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Agent NFTs and their ERC-6551 wallets (on chain).",
                        no_args_is_help=True)

    @group.command("mint")
    def mint(uri: Annotated[str, typer.Option("--uri", help="the agent's agentURI")] = "",
             signer: Annotated[str | None, typer.Option(
                 "--signer", help="an address to authorise as the wallet's signer key "
                 "(e.g. one held in the agent's TEE)")] = None,
             devnet_file: DevnetOpt = None, as_json: JsonOpt = False) -> None:
        """Mint an agent NFT to the owner and create its wallet; prints token id and wallet."""
        try:
            chain = connect(devnet_file)
            if signer is not None and not _is_address(signer):
                raise ChainError(f"--signer {signer!r} is not an address")
            m = chain.mint(owner_key(chain), uri, signer)
        except TeegateError as e:
            raise fail(e) from None
        if as_json:
            print(json.dumps({"token_id": m.token_id, "wallet": m.wallet, "owner": m.owner,
                              "transactions": list(m.txs)}))
            return
        _out.print(f"agent #{m.token_id} wallet {m.wallet} owner {m.owner}")

    @group.command("wallet")
    def wallet(token_id: int, devnet_file: DevnetOpt = None, db: DbOpt = None,
               as_json: JsonOpt = False) -> None:
        """TOKEN_ID's wallet address and token balance on chain, the ledger's view beside."""
        try:
            chain = connect(devnet_file)
            owner = chain.owner_of(token_id)
            address = chain.wallet_of(token_id)
            view: dict[str, Any] = {
                "token_id": token_id, "owner": owner, "wallet": address,
                "wallet_deployed": chain.deployed(address),
                "chain_balance": chain.balance(address),
                "decimals": chain.dep.decimals}
            view["ledger"] = book_view(db, str(token_id))
        except (TeegateError, LedgerError) as e:
            raise fail(e) from None
        if as_json:
            print(json.dumps(view))
            return
        dec = chain.dep.decimals
        _out.print(f"agent #{token_id} owner {owner}")
        _out.print(f"wallet {address}{'' if view['wallet_deployed'] else ' (not created yet)'}")
        _out.print(f"chain:  balance {_units(view['chain_balance'], dec)}")
        led = view["ledger"]
        if led is None:
            _out.print("ledger: no gateway database configured")
        else:
            _out.print(f"ledger: {led['open_channels']} open channel(s) escrowing "
                       f"{_units(led['escrowed'], dec)}, charged {_units(led['charged'], dec)}, "
                       f"claimed {_units(led['claimed'], dec)}")

    @group.command("deposit")
    def deposit(token_id: int, amount: str, devnet_file: DevnetOpt = None,
                as_json: JsonOpt = False) -> None:
        """The owner transfers AMOUNT tokens into TOKEN_ID's wallet."""
        from teegate.ledger.model import parse_amount

        try:
            chain = connect(devnet_file)
            value = parse_amount(amount, chain.dep.decimals)
            acct = owner_key(chain)
            tx = chain.deposit(acct, token_id, value)
            address = chain.wallet_of(token_id)
            balance = chain.balance(address)
        except LedgerError as e:
            _err.print(f"[red]error:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
        except TeegateError as e:
            raise fail(e) from None
        if as_json:
            print(json.dumps({"token_id": token_id, "wallet": address, "amount": value,
                              "transaction": tx, "chain_balance": balance}))
            return
        dec = chain.dep.decimals
        _out.print(f"deposited {_units(value, dec)} into agent #{token_id}'s wallet {address} "
                   f"(tx {tx}); balance now {_units(balance, dec)}")

    app.add_typer(group, name="agent")


def _is_address(text: str) -> bool:
    from web3 import Web3

    return bool(Web3.is_address(text))


def _units(amount: int, decimals: int) -> str:
    whole, frac = divmod(amount, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}" if decimals else str(whole)

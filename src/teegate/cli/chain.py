"""``teegate chain devnet|deploy|status``: a local development chain and a look at channels.

``devnet`` starts anvil (pinned, from the npm registry), deploys teegate's contracts, funds the
development accounts, mints a development agent with its wallet funded, writes
``$TEEGATE_HOME/devnet.json`` and keeps the chain running until interrupted. ``deploy`` does the
same against an anvil already running. ``status`` prints the chain's view of a devnet (or of the
``[chain]`` section) beside the ledger's channel book.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from teegate import paths
from teegate.errors import TeegateError

_out = Console()
_err = Console(stderr=True)


def _fail(e: Exception) -> typer.Exit:
    _err.print(f"[red]error:[/red] {escape(str(e))}")
    return typer.Exit(2)


def _deploy_and_write(rpc_url: str) -> Path:
    from teegate.chain.devnet import deploy_devnet, dev_key, write_devnet

    data = deploy_devnet(rpc_url)
    path = write_devnet(paths.data_dir(), data)
    _out.print(f"wrote {escape(str(path))} (DEVELOPMENT keys only)")
    _out.print(f"chain {data['chain_id']} at {data['rpc_url']}; channels "
               f"{data['contracts']['channels']}; agent #{data['agent']['token_id']} wallet "
               f"{data['agent']['wallet']}")
    _out.print(f"gateway receiver key (development): export TEEGATE_RECEIVER_KEY="
               f"{dev_key(2).private_key}")
    return path


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="On-chain wallets and conversation channels (development chain).",
                        no_args_is_help=True)

    @group.command("devnet")
    def devnet(port: Annotated[int, typer.Option(help="anvil's port on 127.0.0.1")] = 8545,
               once: Annotated[bool, typer.Option(
                   help="deploy, write devnet.json and stop the chain (for scripts)")] = False
               ) -> None:
        """Start anvil, deploy, fund, mint a development agent; keep running until Ctrl-C."""
        from teegate.chain.devnet import start_anvil

        try:
            proc = start_anvil(port)
        except TeegateError as e:
            raise _fail(e) from None
        try:
            _deploy_and_write(f"http://127.0.0.1:{port}")
            if once:
                return
            _out.print("anvil running; Ctrl-C stops it")
            signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
            while proc.poll() is None:
                time.sleep(0.5)
        except TeegateError as e:
            raise _fail(e) from None
        except KeyboardInterrupt:
            pass
        finally:
            proc.terminate()
            proc.wait(10)

    @group.command("deploy")
    def deploy(rpc_url: Annotated[str, typer.Option(
            help="a running anvil (anvil_setCode places the canonical x402 addresses)")]
               = "http://127.0.0.1:8545") -> None:
        """Deploy teegate's contracts on a running anvil and write devnet.json."""
        try:
            _deploy_and_write(rpc_url)
        except TeegateError as e:
            raise _fail(e) from None

    @group.command("status")
    def status(devnet_file: Annotated[Path | None, typer.Option(
            "--devnet", help="devnet.json (default: $TEEGATE_HOME/devnet.json)")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """The chain's view: head, token supply, agent wallet and channel contract balances."""
        try:
            print_status(devnet_file or paths.data_dir() / "devnet.json", as_json)
        except (TeegateError, OSError, ValueError) as e:
            raise _fail(e) from None

    app.add_typer(group, name="chain")


def print_status(path: Path, as_json: bool) -> None:
    from web3 import Web3

    from teegate.chain.artifacts import load_artifact
    from teegate.errors import ChainError

    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    w3 = Web3(Web3.HTTPProvider(data["rpc_url"], request_kwargs={"timeout": 5}))
    try:
        head = int(w3.eth.block_number)
    except Exception as e:  # any transport failure: the chain is not there
        raise ChainError(f"no chain answers at {data['rpc_url']}: {type(e).__name__}") from None
    token = w3.eth.contract(address=data["token"]["address"], abi=load_artifact("DevToken").abi)
    view = {
        "chain_id": int(w3.eth.chain_id), "head": head,
        "token_supply": int(token.functions.totalSupply().call()),
        "agent_wallet_balance": int(token.functions.balanceOf(data["agent"]["wallet"]).call()),
        "channels_contract_balance": int(token.functions.balanceOf(
            data["contracts"]["channels"]).call()),
        "gateway_balance": int(token.functions.balanceOf(data["gateway"]["address"]).call()),
    }
    if as_json:
        print(json.dumps(view))
        return
    for key, value in view.items():
        _out.print(f"{key:28} {value}")

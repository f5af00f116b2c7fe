"""``teegate serve``, ``teegate init`` and ``teegate agents create|revoke|list``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from teegate.errors import ConfigError, TeegateError

if TYPE_CHECKING:
    from teegate.gateway.store import GatewayStore

_CONFIG_HELP = "teegate.toml (default: ./teegate.toml if present, else the embedded default)"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _config_path(config: Path | None) -> Path | None:
    if config is not None:
        return config
    here = Path("teegate.toml")
    return here if here.exists() else None


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Annotated[Path | None, typer.Option("--config", "-c", help=_CONFIG_HELP)] = None,
        host: Annotated[str | None, typer.Option(help="listen address (overrides config)")
                        ] = None,
        port: Annotated[int | None, typer.Option(help="listen port (overrides config)")] = None,
        log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
        workers: Annotated[int, typer.Option(help="worker processes (needs a teegate.toml; "
                                             "they share its database)")] = 1,
    ) -> None:
        """Run the OpenAI-compatible gateway with enclave routing."""
        from teegate import serving
        from teegate.gateway import GatewayStore, factory, load_config
        from teegate.gateway import embedded as emb

        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per upstream call
        path = _config_path(config)
        node = None
        try:
            if path is None:
                node = emb.start_dev_node()
                logging.getLogger("teegate.gateway").warning(
                    "DEVELOPMENT: no teegate.toml; embedded default with a simulated TDX node "
                    "at %s (not confidential)", node.url)
                cfg = emb.embedded_config(node.url, host=host or "127.0.0.1", port=port or 8080)
            else:
                cfg = load_config(path)
            from teegate.filemodes import secure_data_dir

            secure_data_dir(cfg.data_dir)  # before anything in it is opened
            store = GatewayStore(cfg.database_url)
            listen_host = host or cfg.listen_host
            listen_port = port or cfg.listen_port
            if node is not None:
                key = emb.default_agent_key(store, cfg.data_dir)
                from teegate.sim.policy_file import write_development_policy

                typer.echo(emb.banner(f"http://{listen_host}:{listen_port}", key,
                                      key_path=cfg.data_dir / emb.KEY_FILE,
                                      policy_path=write_development_policy()))
            if workers > 1:
                if path is None:
                    raise ConfigError("--workers needs a teegate.toml (the embedded "
                                      "development default runs in one process)")
                os.environ[factory.CONFIG_ENV] = str(path.resolve())
                load_config(path)  # fail here, once, on a bad file
                asgi = None
            else:
                credit = (emb.DEFAULT_AGENT, emb.DEV_CREDIT, emb.DEV_CREDIT_KEY) if (
                    node is not None) else None
                asgi = factory.build_app(cfg, store=store, dev_credit=credit)
        except TeegateError as e:
            if node is not None:
                node.stop()
            raise _fail(str(e)) from None
        try:
            # head/body deadlines, idle keep-alive and a connection cap (teegate.serving)
            if asgi is None:  # several processes sharing the configuration and database
                serving.run("teegate.gateway.factory:app_from_env", limits=cfg.limits,
                            factory=True, workers=workers, host=listen_host,
                            port=listen_port, loop="uvloop", access_log=False,
                            log_level=log_level.lower(), timeout_graceful_shutdown=5)
            else:
                serving.run(asgi, limits=cfg.limits, host=listen_host, port=listen_port,
                            loop="uvloop", access_log=False, log_level=log_level.lower(),
                            timeout_graceful_shutdown=5)
        finally:
            if node is not None:
                node.stop()

    @app.command()
    def init(
        path: Annotated[Path, typer.Argument(help="where to write")] = Path("teegate.toml"),
        force: Annotated[bool, typer.Option("--force", help="overwrite")] = False,
    ) -> None:
        """Write a commented starter teegate.toml."""
        from teegate.gateway import STARTER

        if path.exists() and not force:
            raise _fail(f"{path} exists (use --force to overwrite)")
        path.write_text(STARTER, encoding="utf-8")
        typer.echo(f"wrote {path}")

    agents = typer.Typer(help="Agents and their API keys (stored hashed).",
                         no_args_is_help=True)
    app.add_typer(agents, name="agents")

    def _store(config: Path | None) -> GatewayStore:
        return _store_and_trust(config)[0]

    def _store_and_trust(config: Path | None) -> tuple[GatewayStore, str]:
        """The agents' database and the gateway's ``default_trust`` (``standard`` without a
        configuration file)."""
        from teegate import paths
        from teegate.gateway import GatewayStore, load_config

        path = _config_path(config)
        if path is None:
            return GatewayStore(paths.default_database_url()), "standard"
        cfg = load_config(path)
        return GatewayStore(cfg.database_url), cfg.default_trust.label

    @agents.command("create")
    def create(
        agent_id: Annotated[str, typer.Argument(help="agent id")],
        trust: Annotated[str | None, typer.Option(
            help="the agent's default trust level [default: the gateway's default_trust]")
                         ] = None,
        min_trust: Annotated[str, typer.Option(help="floor no request can go below")
                             ] = "standard",
        owner: Annotated[str | None, typer.Option(help="owner id")] = None,
        kind: Annotated[str, typer.Option(help="agent or owner")] = "agent",
        config: Annotated[Path | None, typer.Option("--config", "-c", help=_CONFIG_HELP)] = None,
    ) -> None:
        """Create an agent (or a new key for it) and print the key once."""
        from teegate.routing import parse_trust

        try:
            store, default_trust = _store_and_trust(config)
            floor = parse_trust(min_trust, field="--min-trust")
            level = max(parse_trust(trust or default_trust, field="--trust"), floor)
            key = store.create_key(agent_id, trust=level.label, min_trust=floor.label,
                                   owner=owner, kind=kind)
            row = store.agent_by_key(key)
        except TeegateError as e:
            raise _fail(str(e)) from None
        # What is stored (a new key for an existing agent keeps its settings), not what was
        # asked: the operator must not believe a level is in force that is not.
        view = row.to_json() if row is not None else {"id": agent_id, "kind": kind}
        if view.get("trust", level.label) != level.label or view.get(
                "min_trust", floor.label) != floor.label:
            typer.echo(f"note: {agent_id!r} exists; its new key keeps its trust "
                       f"{view['trust']} and floor {view['min_trust']}", err=True)
        typer.echo(json.dumps({**view, "api_key": key}))

    @agents.command("revoke")
    def revoke(
        agent_id: Annotated[str, typer.Argument(help="agent id")],
        config: Annotated[Path | None, typer.Option("--config", "-c", help=_CONFIG_HELP)] = None,
    ) -> None:
        """Revoke an agent's key (other gateway processes follow within their poll interval)."""
        try:
            store = _store(config)
            ok = store.revoke(agent_id)
        except TeegateError as e:
            raise _fail(str(e)) from None
        if not ok:
            raise _fail(f"no agent {agent_id!r}", 1)
        typer.echo(f"revoked {agent_id}")

    @agents.command("list")
    def list_(
        config: Annotated[Path | None, typer.Option("--config", "-c", help=_CONFIG_HELP)] = None,
    ) -> None:
        """List agents (never their keys)."""
        try:
            store = _store(config)
            rows = store.agents()
        except TeegateError as e:
            raise _fail(str(e)) from None
        for r in rows:
            typer.echo(json.dumps(r.to_json()))

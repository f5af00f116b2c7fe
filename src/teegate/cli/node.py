"""``teegate node``: the enclave side, in front of an inference engine.

Serves the attestation report, per-response signatures and the OpenAI routes. ``--tee auto``
uses configfs-tsm or the dstack socket and refuses to start without either; the development
TEEs (``dev-tdx``, ``dev-snp``) must be named and print a warning banner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from teegate.cli.secrets import secret_from_env
from teegate.errors import TeegateError

_err = Console(stderr=True)
ENGINE_KEY_ENV = "TEEGATE_ENGINE_API_KEY"


def build_node(
    *, engine: str, tee: str, gpus: int, pki_dir: Path | None = None,
    configfs_root: Path | None = None, dstack_endpoint: str | None = None,
    engine_api_key: str | None = None, max_body: int | None = None,
    app_compose: Path | None = None, keys: str = "auto",
) -> Any:
    """The node ASGI app for these options; raises ConfigError for impossible combinations.
    ``keys``: ``kms`` (the dstack KMS releases them, ``teegate.node.kms``), ``memory``
    (generated at start), ``auto`` (kms under dstack, else memory)."""
    from teegate.errors import ConfigError
    from teegate.node import BuiltinEngine, HttpEngine, create_node_app
    from teegate.node.sources import CONFIGFS_TSM_ROOT, choose_source
    from teegate.paths import dev_pki_dir

    if gpus < 0:
        raise ConfigError("--gpus must be 0 or more")
    compose = None
    if app_compose is not None:
        try:
            compose = app_compose.read_bytes()
        except OSError as e:
            raise ConfigError(f"--app-compose {app_compose}: cannot read: "
                              f"{e.strerror or e}") from None
    source = choose_source(
        tee, pki_dir=pki_dir, configfs_root=configfs_root or CONFIGFS_TSM_ROOT,
        dstack_endpoint=dstack_endpoint, app_compose=compose,
    )
    gpu: Any = None
    if gpus > 0:
        if not source.development:
            raise ConfigError("--gpus simulates GPUs and needs a development TEE "
                              "(--tee dev-tdx or dev-snp); real NVIDIA evidence is not "
                              "collected by this version")
        from teegate.sim import DevGpu

        gpu = DevGpu.load_or_create(pki_dir or dev_pki_dir())
        if gpus > gpu.count:
            raise ConfigError(f"--gpus: the development GPU simulates at most {gpu.count}")
    if engine == "builtin":
        eng: Any = BuiltinEngine()
    elif engine.startswith(("http://", "https://")):
        eng = HttpEngine(engine, api_key=engine_api_key)
    else:
        raise ConfigError(f"--engine must be 'builtin' or an http(s) URL, not {engine!r}")
    from teegate.node.app import MAX_BODY

    if max_body is not None and max_body < 1:
        raise ConfigError("--max-body-bytes must be at least 1")
    return create_node_app(source, eng, gpus=gpus, gpu=gpu, keys=_keys(keys, source),
                           max_body=max_body or MAX_BODY), source


def _keys(choice: str, source: Any) -> Any:
    """The node's signing keys: from the dstack KMS under dstack (a restart keeps them, and
    they are bound to the app identity), else generated in memory."""
    from teegate.errors import ConfigError
    from teegate.node import NodeKeys
    from teegate.node.sources import DstackSource

    if choice not in ("auto", "kms", "memory"):
        raise ConfigError(f"--keys must be auto, kms or memory, not {choice!r}")
    dstack = isinstance(source, DstackSource)
    if choice == "kms" and not dstack:
        raise ConfigError("--keys kms needs the dstack source (--tee dstack): the keys come "
                          "from its KMS")
    if choice == "memory" or not dstack:
        return NodeKeys()
    from teegate.node.kms import kms_keys

    return kms_keys(source.client, role="node")


def register(app: typer.Typer) -> None:
    @app.command()
    def node(
        engine: Annotated[str, typer.Option(
            "--engine", help="'builtin' or the URL of an OpenAI-compatible server.")] = "builtin",
        tee: Annotated[str, typer.Option(
            "--tee", help="auto | configfs | dstack | dev-tdx | dev-snp")] = "auto",
        gpus: Annotated[int, typer.Option(
            "--gpus", help="Simulated GPUs (development TEEs only).")] = 0,
        host: Annotated[str, typer.Option(
            "--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
        pki_dir: Annotated[Path | None, typer.Option(
            "--pki-dir", help="Development PKI directory (default: TEEGATE_HOME/dev-pki).")
        ] = None,
        configfs_root: Annotated[Path | None, typer.Option(
            "--configfs-root", help="configfs-tsm report directory.")] = None,
        dstack_endpoint: Annotated[str | None, typer.Option(
            "--dstack-endpoint", help="dstack guest-agent socket path or URL.")] = None,
        engine_api_key: Annotated[str | None, typer.Option(
            "--engine-api-key", hidden=True,
            help=f"Refused (a secret on the command line shows in ps): set ${ENGINE_KEY_ENV}.")
        ] = None,
        max_body_bytes: Annotated[int, typer.Option(
            "--max-body-bytes", help="Request body limit (413 above it).")] = 8 << 20,
        header_timeout: Annotated[float, typer.Option(
            "--header-timeout", help="Seconds for a request's head to arrive.")] = 10.0,
        body_timeout: Annotated[float, typer.Option(
            "--body-timeout", help="Seconds for its body to arrive after the head.")] = 30.0,
        keep_alive: Annotated[float, typer.Option(
            "--keep-alive", help="Seconds an idle connection is kept between requests.")
        ] = 5.0,
        app_compose: Annotated[Path | None, typer.Option(
            "--app-compose", help="dstack app-compose file the development TDX measures "
            "(compose-hash event in RTMR3, MRCONFIGID, event log).")] = None,
        keys: Annotated[str, typer.Option(
            "--keys", help="auto | kms | memory: signing keys from the dstack KMS (auto: "
            "under dstack) or generated in memory at start.")] = "auto",
        max_connections: Annotated[int, typer.Option(
            "--max-connections", help="Open connections at most (the longest-idle one is "
            "closed for a newcomer; 503 when every one is busy).")] = 1024,
    ) -> None:
        """Run the enclave-side node: attestation report, response signatures, OpenAI API.

        The engine's bearer token, if it needs one, comes from $TEEGATE_ENGINE_API_KEY."""
        try:
            engine_api_key = secret_from_env(engine_api_key, "--engine-api-key",
                                             ENGINE_KEY_ENV)
            asgi, source = build_node(
                engine=engine, tee=tee, gpus=gpus, pki_dir=pki_dir,
                configfs_root=configfs_root, dstack_endpoint=dstack_endpoint,
                engine_api_key=engine_api_key, max_body=max_body_bytes,
                app_compose=app_compose, keys=keys,
            )
            limits = _limits(header_timeout, body_timeout, keep_alive, max_connections)
        except TeegateError as e:
            _err.print(f"[red]teegate node:[/] {escape(str(e))}")
            raise typer.Exit(2) from None
        url = f"http://{host}:{port}"
        if source.development:  # the development PKI's private keys: 0600 in 0700 folders
            from teegate.filemodes import secure_data_dir
            from teegate.paths import dev_pki_dir

            secure_data_dir(pki_dir or dev_pki_dir())
            from teegate.sim.policy_file import write_development_policy

            try:
                dev_policy = write_development_policy(pki_dir)
            except TeegateError as e:
                _err.print(f"[red]teegate node:[/] {escape(str(e))}")
                raise typer.Exit(2) from None
            _err.print(Panel(
                f"DEVELOPMENT TEE ({source.name}) — NOT CONFIDENTIAL.\n"
                "Evidence is signed by a locally generated development PKI; only policies that "
                "name its roots accept it (the default policy rejects it). Never send real "
                "data to this node.",
                title="WARNING", style="bold yellow",
            ))
            _err.print("verify it with the development policy of this installation:",
                       highlight=False)
            _err.print(f"  teegate verify --url {url} --policy {dev_policy}",
                       soft_wrap=True, markup=False, highlight=False)
        _err.print(f"teegate node: evidence from {source.name}, engine {engine}, "
                   f"listening on {url}", soft_wrap=True, markup=False, highlight=False)
        measured = getattr(source, "measured", None)
        if measured is not None:
            _err.print(f"teegate node: measured app compose {measured.compose_hash} "
                       f"(MRCONFIGID 0x01 || it; RTMR3 compose-hash event)",
                       soft_wrap=True, markup=False, highlight=False)
        from teegate import serving

        serving.run(asgi, limits=limits, host=host, port=port, log_level="warning",
                    access_log=False)


def _limits(header: float, body: float, keep_alive: float, connections: int) -> Any:
    """The node's connection limits (``teegate.serving``); ConfigError naming the option."""
    from teegate.errors import ConfigError
    from teegate.serving import ServerLimits

    try:
        return ServerLimits(header_timeout=header, body_timeout=body,
                            keep_alive_timeout=keep_alive, max_connections=connections)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        option = {"header_timeout": "--header-timeout", "body_timeout": "--body-timeout",
                  "keep_alive_timeout": "--keep-alive"}.get(field, "--max-connections")
        raise ConfigError(f"{option}: {e}") from None

"""Build the whole gateway from a configuration file: the store, the receipt log and the
ledger it is configured with. Used by ``teegate serve`` and, through ``app_from_env``, by each
uvicorn worker process of ``teegate serve --workers N``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from teegate.dashboard import mount_dashboard
from teegate.errors import ConfigError
from teegate.filemodes import secure_data_dir
from teegate.gateway.app import GatewayApp, create_app
from teegate.gateway.config import GatewayConfig, load_config
from teegate.gateway.self_attestation import build_gateway_tee, mount_self_attestation
from teegate.gateway.store import GatewayStore

CONFIG_ENV = "TEEGATE_CONFIG"


def build_app(cfg: GatewayConfig, *, store: GatewayStore | None = None,
              dev_credit: tuple[str, int, str] | None = None) -> GatewayApp:
    """The gateway with its receipt log and ledger as configured; they are closed when the
    app shuts down. ``dev_credit`` = (agent, amount, idempotency key) deposited once."""
    secure_data_dir(cfg.data_dir)  # before anything in it is opened (create_app does too)
    store = store or GatewayStore(cfg.database_url)
    receipt_log = ledger = None
    tee = build_gateway_tee(cfg.tee)  # its own evidence; under dstack, KMS-released keys
    if cfg.receipts:
        from teegate.receipts import ReceiptLog, load_or_create_log_key

        receipt_log = ReceiptLog(cfg.database_url, origin=cfg.log_origin,
                                 key=load_or_create_log_key(cfg.data_dir / "log.key"),
                                 receipt_key=tee.receipt_key if tee is not None else None)
    if cfg.ledger:
        from teegate.ledger import open_ledger

        ledger = open_ledger(cfg.database_url, durability=cfg.ledger_durability,
                             agents=store)
        if dev_credit is not None:
            agent, amount, key = dev_credit
            ledger.deposit(agent, amount, key=key)
    accounting, loop = _chain_accounting(cfg, ledger)
    app = create_app(cfg, store=store, receipt_log=receipt_log, ledger=ledger,
                     accounting=accounting)
    if loop is not None:
        app.gateway.closers.append(loop.close)
    mount_dashboard(app, ledger=ledger, receipt_log=receipt_log)  # teegate.dashboard
    if tee is not None:  # the gateway attests itself
        mount_self_attestation(app, tee, receipt_log)
    if receipt_log is not None:
        app.gateway.closers.append(receipt_log.close)
    if ledger is not None:
        app.gateway.closers.append(ledger.close)
    app.gateway.closers.append(store.close)
    return app


def app_from_env() -> GatewayApp:
    """uvicorn factory for worker processes: the configuration file named by
    ``TEEGATE_CONFIG``."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"{CONFIG_ENV} is not set")
    return build_app(load_config(Path(path)))


def _chain_accounting(cfg: GatewayConfig, ledger: Any) -> tuple[Any, Any]:
    """[chain]: calls on conversation channels are paid by vouchers (teegate.chain), in the
    ledger's database; a background loop mirrors the chain and claims. (None, None) without."""
    if cfg.chain is None or ledger is None:
        return None, None
    from teegate.chain.book import ChannelBook
    from teegate.chain.service import channel_accounting, start_claim_loop
    from teegate.gateway.errors import GatewayRefusal
    from teegate.gateway.ledger_bridge import gateway_accounting

    def refuse(r: Any) -> Exception:
        return GatewayRefusal(r.status, str(r), code=r.check, param="x-teegate-voucher")

    inner = gateway_accounting(ledger, currency=cfg.currency, hold_s=cfg.hold_s)
    accounting = channel_accounting(cfg.chain, ledger.backend, inner, refuse)
    return accounting, start_claim_loop(cfg.chain, ChannelBook(ledger.backend))

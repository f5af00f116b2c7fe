"""The browser dashboard of ``teegate serve`` at ``/dashboard``: providers and their
attestation verdicts, agents' money, calls and receipts (audited in the browser with
WebCrypto), and the transparency log. Server-rendered HTML, a little JS, hand-written CSS;
nothing is fetched from outside the gateway.

``mount_dashboard`` is the one entry point: it adds the routes to the gateway's FastAPI app
and lets dashboard forms through the gateway's pre-body write check on the dashboard's own
terms (a session cookie instead of a bearer key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from teegate.dashboard.routes import BASE, Dashboard, routes

if TYPE_CHECKING:
    from fastapi import Request

    from teegate.gateway.app import GatewayApp
    from teegate.ledger import Ledger
    from teegate.receipts import ReceiptLog

__all__ = ["BASE", "Dashboard", "mount_dashboard"]


def mount_dashboard(app: GatewayApp, *, ledger: Ledger | None,
                    receipt_log: ReceiptLog | None) -> Dashboard:
    """Serve the dashboard from ``app``; its indexer thread stops with the gateway."""
    dash = Dashboard(app.gateway, ledger=ledger, receipt_log=receipt_log)
    app.api.include_router(routes(dash))
    inner = app.authorize

    async def authorize(request: Request) -> None:
        path = request.url.path
        if path == BASE or path.startswith(BASE + "/"):
            await dash.pre_body(request)
        elif inner is not None:
            await inner(request)

    app.authorize = authorize
    dash.start()
    app.gateway.closers.insert(0, dash.close)  # before the store and log it reads close
    return dash

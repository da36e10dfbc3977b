"""The operator's console at ``/console/``: static files shipped in the package (no build step, no data in
them). The page reads everything from the admin API and the availability stream with the admin key, when keys
are set, so the files themselves are served to every client the loopback rule lets in."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capacity_service.entrypoints.http.routes import CONSOLE_PATH

FILES = Path(__file__).parent / "console"

# The page runs only its own scripts and talks only to its own origin, and no other site may frame it (its
# buttons pause and retire pools). ``no-cache``: an upgraded service's console is the one loaded.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def add_console(app: FastAPI) -> None:
    app.mount(CONSOLE_PATH, _WithHeaders(StaticFiles(directory=FILES, html=True)), name="console")


class _WithHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

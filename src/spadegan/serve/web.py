"""What the demo and the study servers share: the icon, the page routes, the Host check.

The Host check guards against DNS rebinding: a web page on a name its owner points at
127.0.0.1 would otherwise reach a local server as its own origin. A request is answered when
its Host is a name of this machine (localhost, 127.0.0.1, [::1]), the name the server was bound
to, a name given with ``--allowed_hosts``, or any IP address literal (a browser sends one only
when the page itself was loaded from that address, so it cannot be rebound).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
            'fill="#76b900"/><path d="M2 12l4-5 3 3 2-2 3 4z" fill="#17181c"/></svg>')


def add_page_routes(app: FastAPI, page: Callable[[], str]) -> None:
    """``/`` (GET and HEAD) serving ``page()``, and the icon at ``/favicon.ico`` and ``/favicon.svg``."""

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page())

    @app.get("/favicon.ico", include_in_schema=False)
    @app.get("/favicon.svg", include_in_schema=False)
    async def icon() -> Response:
        return Response(ICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


def allowed_host_names(bound_host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The Host names a server bound to ``bound_host`` answers (None: any, when ``extra`` has '*')."""
    extra = [name.strip().lower().strip("[]") for name in extra if name.strip()]
    if "*" in extra:
        return None
    return LOCAL_NAMES | {bound_host.lower().strip("[]")} | set(extra)


def host_name(header: str) -> str:
    """'example.com:8000' → 'example.com'; '[::1]:8000' → '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """ASGI middleware: 400 with a JSON detail for a Host header this server does not answer."""

    def __init__(self, app, allowed: frozenset[str]):
        self.app = app
        self.allowed = allowed

    def accepts(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 clients may send none; browsers always do
            return True
        name = host_name(header).rstrip(".")
        return name in self.allowed or _is_ip_literal(name)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            header = dict(scope.get("headers") or []).get(b"host")
            text = None if header is None else header.decode("latin-1")
            if not self.accepts(text):
                response = JSONResponse({"detail": f"this server does not answer for the host {text!r}; "
                                                   "start it with --allowed_hosts NAME to allow that name"},
                                        status_code=400)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)

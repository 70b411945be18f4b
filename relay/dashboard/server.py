"""
The dashboard's HTTP server: the standard library's ``ThreadingHTTPServer``
and server-sent events, no web framework.

One thread polls ``bridge.peers(include_gone=True)`` every ``interval``
seconds and feeds the ``Tracker`` (``relay.dashboard.state``); every client of
``/events`` gets the page's state as one JSON event at least once a second.

Routes: ``/`` the page, ``/app.js`` and ``/style.css`` its script and style
(shipped in the package, nothing from a CDN), ``/state.json`` one snapshot of
the state, ``/events`` the stream. With a ``token`` every request must carry
it as ``?token=``; without one the server is for loopback only and answers
only requests whose ``Host`` names loopback (against DNS rebinding).
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import signal as os_signal
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import FrameType, TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from relay.dashboard.state import Tracker
from relay.presence import Peer
from relay.transport.base import TransportError

__all__ = ["Dashboard", "PeerSource", "is_loopback", "run_dashboard"]

logger = logging.getLogger("relay.dashboard")

_STATIC = {
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class PeerSource(Protocol):
    """What the dashboard needs of a bridge: ``relay.Relay`` has it, started or not."""

    @property
    def namespace(self) -> str: ...

    def peers(self, *, include_gone: bool = False) -> list[Peer]: ...


def is_loopback(host: str) -> bool:
    """True if ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a ``Host`` header (``name:port``, ``[v6]:port``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _static(name: str) -> bytes:
    return resources.files("relay.dashboard").joinpath("static", name).read_bytes()


class Dashboard:
    """
    The live dashboard of the namespace of ``bridge``, served over HTTP.

    Arguments:

        bridge
            A connected bridge (``relay.Relay``); it need not be started. Only
            ``peers()`` is called on it, from one thread of the dashboard.

        host, port
            Where to serve: loopback by default. Port 0 picks a free one
            (see ``url`` once started).

        token
            A secret every request must present as ``?token=``. Required for
            any host but loopback.

        interval
            Seconds between two reads of the namespace's presence (1.0); the
            page is updated at least that often, and at least once a second.
    """

    def __init__(
        self,
        bridge: PeerSource,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        interval: float = 1.0,
    ) -> None:
        if not (0 < interval <= 60):
            raise ValueError(f"interval must be between 0 and 60 seconds, not {interval!r}")
        if token is not None and not token:
            raise ValueError("token must not be empty (None for no token)")
        if not token and not is_loopback(host):
            raise ValueError(
                f"host {host!r} serves the dashboard beyond this machine: give a token that "
                "the page must present, or serve on loopback"
            )
        self.bridge = bridge
        self.host = host
        self.port = port
        self.token = token
        self.interval = interval
        self._tracker = Tracker(time.time())
        self._changed = threading.Condition()
        self._version = 0
        self._payload = b""
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._broker_down = False
        self._page = self._render_page()
        self._assets = {path: (_static(name), kind) for path, (name, kind) in _STATIC.items()}
        self._publish(time.time())

    # -- life cycle --------------------------------------------------------------

    def start(self) -> Dashboard:
        """Bind, start polling and serving; return once the server listens."""
        if self._server is not None:
            raise RuntimeError("the dashboard is already started")
        self._stop.clear()
        server = _Server((self.host, self.port), _Handler, self)
        self._server = server
        self.port = server.server_address[1]
        self._threads = [
            threading.Thread(target=self._poll, name="relay-dashboard-poll", daemon=True),
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="relay-dashboard-http",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and polling; end every event stream. Idempotent."""
        server = self._server
        if server is None:
            return
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        server.shutdown()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        self._server = None

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The page's address (without the token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- the state ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The page's current state (what ``/state.json`` serves)."""
        result: dict[str, Any] = json.loads(self._payload)
        return result

    def poll_once(self) -> None:
        """Read the namespace's presence once and update the state."""
        try:
            peers = self.bridge.peers(include_gone=True)
        except TransportError as exc:
            self._failed(f"broker unreachable: {exc}")
        except Exception as exc:
            logger.exception("relay dashboard could not read the peers")
            self._failed(f"could not read the peers: {type(exc).__name__}: {exc}")
        else:
            if self._broker_down:
                logger.info("relay dashboard reaches the broker again")
                self._broker_down = False
            self._tracker.update(peers, time.time())
        self._publish(time.time())

    def _failed(self, error: str) -> None:
        if not self._broker_down:
            logger.warning("relay dashboard: %s", error)
            self._broker_down = True
        self._tracker.failed(error, time.time())

    def _publish(self, now: float) -> None:
        state = self._tracker.state(now, self.bridge.namespace)
        state["interval"] = self.interval
        payload = json.dumps(state, separators=(",", ":"), allow_nan=False).encode()
        with self._changed:
            self._payload = payload
            self._version += 1
            self._changed.notify_all()

    def _poll(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _next(self, seen: int, timeout: float) -> tuple[int, bytes]:
        """The state after version ``seen``, or the current one after ``timeout``."""
        with self._changed:
            if self._version == seen and not self._stop.is_set():
                self._changed.wait(timeout)
            return self._version, self._payload

    # -- requests ----------------------------------------------------------------

    def _render_page(self) -> bytes:
        query = "" if self.token is None else "?token=" + quote(self.token, safe="")
        page = _static("index.html").decode()
        return page.replace("{{query}}", html.escape(query, quote=True)).encode()

    def _allowed(self, query: str, host_header: str | None) -> bool:
        if self.token is not None:
            given = parse_qs(query).get("token", [""])[-1]
            return hmac.compare_digest(given.encode(), self.token.encode())
        # No token: loopback only, and only for pages that asked for loopback.
        return host_header is not None and is_loopback(_host_of(host_header))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], dashboard: Dashboard
    ) -> None:
        self.dashboard = dashboard
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that go away are routine; anything else is logged, never printed.
        logger.debug("relay dashboard: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "relay-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections (and event streams nobody reads) end after this.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        dashboard = self.server.dashboard
        parts = urlsplit(self.path)
        if not dashboard._allowed(parts.query, self.headers.get("Host")):
            reason = (
                "a valid ?token= is required"
                if dashboard.token is not None
                else "this dashboard answers only to a loopback Host"
            )
            self._send(HTTPStatus.FORBIDDEN, f"403 forbidden: {reason}\n".encode(), head=head)
            return
        path = parts.path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, dashboard._page, "text/html; charset=utf-8", head=head)
        elif path in dashboard._assets:
            body, kind = dashboard._assets[path]
            self._send(HTTPStatus.OK, body, kind, head=head)
        elif path == "/state.json":
            self._send(HTTPStatus.OK, dashboard._payload, "application/json", head=head)
        elif path == "/events":
            self._events(head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"404 not found\n", head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        kind: str = "text/plain; charset=utf-8",
        *,
        head: bool = False,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except _DISCONNECTS:
            self.close_connection = True

    def _events(self, head: bool) -> None:
        dashboard = self.server.dashboard
        self.close_connection = True
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.send_header("X-Accel-Buffering", "no")
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            self.wfile.write(b"retry: 2000\n\n")
            seen = -1
            timeout = min(dashboard.interval, 1.0)
            while not dashboard._stop.is_set():
                seen, payload = dashboard._next(seen, timeout)
                if dashboard._stop.is_set():
                    break
                self.wfile.write(b"event: state\ndata: " + payload + b"\n\n")
                self.wfile.flush()
        except _DISCONNECTS:
            logger.debug("relay dashboard: an event stream client went away")


def run_dashboard(
    bridge: PeerSource,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    interval: float = 1.0,
) -> int:
    """
    Serve the dashboard of ``bridge``'s namespace until SIGINT or SIGTERM
    (or ``KeyboardInterrupt``); return 0. Logs the page's address on the
    ``relay.dashboard`` logger.
    """
    token = token or None  # an empty $RELAY_DASHBOARD_TOKEN is no token
    stop = threading.Event()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[os_signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (os_signal.SIGINT, os_signal.SIGTERM):
            previous[signum] = os_signal.signal(signum, interrupt)
    try:
        with Dashboard(bridge, host=host, port=port, token=token, interval=interval) as board:
            logger.info(
                "relay dashboard of namespace %r on %s%s",
                bridge.namespace,
                board.url,
                " (add ?token=TOKEN)" if token else "",
            )
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            logger.info("relay dashboard stopping")
    finally:
        for signum, handler in previous.items():
            os_signal.signal(signum, handler)
    return 0

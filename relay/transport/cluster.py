"""
The Redis Cluster backend: ``redis+cluster://`` and ``rediss+cluster://``.

URLs name some nodes of the cluster (any subset will do; the client
discovers the rest)::

    redis+cluster://[user:password@]host1:7000,host2:7001[/0][?options]

Options are redis-py's connection options (``socket_timeout=5``, ...);
``rediss+cluster://`` uses TLS. A cluster has only database 0.

Signals go over sharded pub/sub (SPUBLISH / SSUBSCRIBE), so a signal's
traffic stays on the shard that owns its channel's slot. The bridge names
each signal's channel and keys under the hash tag ``{<signal name>}`` (see
``Transport.sharded``): its durable log, once-claims, leases and cursors live
on the channel's slot. A batch of frames to several shards goes out as one
non-transactional cluster pipeline: one round per node.

The subscription owns one reader (a plain connection) per primary that owns
a subscribed channel and multiplexes them. redis-py 8.1 does not re-home
shard channels reliably by itself, so the subscription does: an unsolicited
``sunsubscribe`` (the slot moved, or a failover), a ``MOVED`` or a connection
error refreshes the slot map, subscribes each channel on its current primary
after unsubscribing it from the old one (never on two nodes at once), and is
reported to the bridge as a reconnect (``Resubscribed`` or
``TransportError``), which catches up from the durable logs.

``AsyncClusterTransport`` is the same on ``redis.asyncio.cluster`` (its
readers are polled in turn, a few milliseconds apart).
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Collection, Sequence
from contextlib import suppress
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.connection
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.transport.base import (
    AsyncClaims,
    AsyncDurableLog,
    AsyncPresence,
    AsyncSubscription,
    AsyncTransport,
    Log,
    LogEntry,
    Outgoing,
    Resubscribed,
    Subscription,
    Transport,
    TransportError,
)
from relay.transport.redis import (
    CONNECTION_ERRORS,
    MAX_PAYLOAD,
    RedisKeys,
    Restorations,
    log_entry,
    milliseconds,
    queue_announce,
    queue_finish,
    queue_publish,
    queue_renew,
    text,
    texts,
    translated,
    transport_error_message,
)

__all__ = [
    "AsyncClusterTransport",
    "ClusterTransport",
    "ClusterURL",
    "from_client",
    "from_url",
    "parse_url",
]

_CONFIRM_TIMEOUT = 10.0
# How long one wait on the readers' sockets lasts at most (TLS may hold
# decrypted data that select() does not see).
_SELECT_SLICE = 0.05
# Connection options of the cluster client that a reader's plain client does not take.
_NOT_FOR_READERS = ("host", "port", "retry", "cache", "himport_registry", "connection_pool")
# What makes the subscription refresh the slot map and re-home its channels.
_TOPOLOGY_ERRORS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


class ClusterURL:
    """A parsed ``redis+cluster://`` URL: ``nodes`` (``(host, port)``) and client ``options``."""

    def __init__(self, nodes: list[tuple[str, int]], options: dict[str, Any]) -> None:
        self.nodes = nodes
        self.options = options

    @property
    def description(self) -> str:
        """The URL without credentials."""
        scheme = "rediss+cluster" if self.options.get("ssl") else "redis+cluster"
        return f"{scheme}://" + ",".join(f"{host}:{port}" for host, port in self.nodes)


def parse_url(url: str) -> ClusterURL:
    """Parse a ``redis+cluster://`` URL; raises ValueError saying what is wrong."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"invalid Redis Cluster URL {_hide_password(url)!r}: {why}; use "
            "redis+cluster://[user:password@]host1:7000,host2:7001[?options]"
        )

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("redis+cluster", "rediss+cluster"):
        raise bad("the scheme must be redis+cluster:// or rediss+cluster://")
    rest, _, query = rest.partition("?")
    hosts, _, path = rest.partition("/")
    options: dict[str, Any] = {}
    if "@" in hosts:
        credentials, _, hosts = hosts.rpartition("@")
        user, has_password, password = credentials.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    nodes: list[tuple[str, int]] = []
    for host in hosts.split(","):
        name, has_port, port = host.strip().rpartition(":")
        if not has_port:
            name, port = host.strip(), "6379"
        name = name.strip("[]")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"{host!r} is not host:port")
        nodes.append((name, int(port)))
    path = path.strip("/")
    if path and path != "0":
        raise bad(f"a cluster has only database 0, not {path!r}")
    if scheme.lower() == "rediss+cluster":
        options["ssl"] = True
    for name, value in parse_qsl(query, keep_blank_values=True):
        parser: Any = redis.connection.URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None:
            known = sorted(redis.connection.URL_QUERY_ARGUMENT_PARSERS)
            raise bad(f"unknown option {name!r} (known: {', '.join(known)})")
        try:
            options[name] = parser(value)
        except (TypeError, ValueError):
            raise bad(f"bad value for option {name!r}") from None
    return ClusterURL(nodes, options)


def _hide_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, credentials = head.partition("://")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{tail}" if ":" in credentials else url


_R = TypeVar("_R")


def _rotated(readers: dict[str, _R], turn: int) -> list[tuple[str, _R]]:
    """The readers, starting with the ``turn``-th (modulo their number)."""
    items = list(readers.items())
    if not items:
        return items
    start = turn % len(items)
    return items[start:] + items[:start]


class _Reader:
    """The subscribed connection to one primary."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self.channels: set[str] = set()
        self.early: list[dict[str, Any]] = []
        self.restored = Restorations()

    def socket(self) -> Any:
        connection = self.pubsub.connection
        return None if connection is None else getattr(connection, "_sock", None)

    def close(self) -> None:
        with suppress(Exception):
            self.pubsub.reset()
        with suppress(Exception):
            self.client.close()


class ClusterSubscription(Subscription):
    """Shard-channel subscriptions over one reader per primary, multiplexed."""

    def __init__(self, transport: ClusterTransport) -> None:
        self._transport = transport
        self.description = transport.description
        self._channels: set[str] = set()
        self._readers: dict[str, _Reader] = {}  # node name -> reader
        self._home: dict[str, str] = {}  # channel -> node name
        self._broken: set[str] = set()  # readers whose connection failed
        self._turn = 0  # which reader get() asks first
        #: After a ``Resubscribed`` or ``reconnect()``, the channels whose
        #: subscription was lost and made again (None: all of them), so that
        #: the bridge catches up on those only: the other readers lost nothing.
        self.restored_channels: set[str] | None = None
        self.last_activity = time.monotonic()

    # -- subscribing

    def subscribe(self, channels: Collection[str]) -> None:
        new = [c for c in channels if c not in self._channels]
        if not new:
            return
        # Wanted from now on, even if this attempt fails: reconnect() retries it.
        self._channels.update(new)
        self._place(new)

    def unsubscribe(self, channels: Collection[str]) -> None:
        gone = [c for c in channels if c in self._channels]
        if not gone:
            return
        self._channels.difference_update(gone)
        with translated(self.description):
            for channel in gone:
                self._leave(channel)

    def _primary_of(self, channel: str) -> tuple[str, str, int]:
        node = self._transport.client.get_node_from_key(channel)
        return str(node.name), str(node.host), int(node.port)

    def _reader(self, name: str, host: str, port: int) -> _Reader:
        reader = self._readers.get(name)
        if reader is None:
            reader = self._readers[name] = _Reader(self._transport.node_client(host, port))
        return reader

    def _place(self, channels: Collection[str]) -> set[str]:
        """
        Subscribe ``channels`` on their primaries (after unsubscribing them
        elsewhere); return those that were not subscribed there already.
        """
        placed: set[str] = set()
        with translated():
            groups: dict[tuple[str, str, int], list[str]] = {}
            for channel in sorted(channels):
                groups.setdefault(self._primary_of(channel), []).append(channel)
            for (name, host, port), group in groups.items():
                moving = [c for c in group if self._home.get(c) not in (None, name)]
                for channel in moving:
                    self._leave(channel)
                reader = self._reader(name, host, port)
                todo = [c for c in group if c not in reader.channels]
                if not todo:
                    continue
                try:
                    # One command per channel: a command's channels must share a slot.
                    for channel in todo:
                        reader.pubsub.ssubscribe(channel)
                    self._await_confirmations(reader, set(todo))
                except BaseException:
                    self._drop(name)
                    self._broken.add(name)
                    raise
                reader.channels.update(todo)
                placed.update(todo)
                for channel in todo:
                    self._home[channel] = name
            for name in [n for n, r in self._readers.items() if not r.channels]:
                self._readers.pop(name).close()
        return placed

    def _leave(self, channel: str) -> None:
        """Unsubscribe ``channel`` from the node it is subscribed on (if it still answers)."""
        node = self._home.pop(channel, None)
        reader = None if node is None else self._readers.get(node)
        if reader is None:
            return
        reader.channels.discard(channel)
        if not reader.channels:
            self._readers.pop(str(node)).close()
            return
        with suppress(*CONNECTION_ERRORS):
            reader.pubsub.sunsubscribe(channel)

    def _await_confirmations(self, reader: _Reader, waiting: set[str]) -> None:
        # Once the primary has confirmed, every later SPUBLISH reaches us.
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while waiting:
            remaining = deadline - time.monotonic()
            message = reader.pubsub.get_message(timeout=max(remaining, 0.0))
            if message is None:
                if remaining <= 0:
                    raise TransportError(
                        f"Redis did not confirm SSUBSCRIBE within {_CONFIRM_TIMEOUT:g} s"
                    )
                continue
            if message["type"] == "ssubscribe":
                waiting.discard(text(message["channel"]))
            elif message["type"] == "smessage":
                reader.early.append(message)

    # -- reading

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + timeout
        while True:
            for name, reader in _rotated(self._readers, self._turn):
                received = self._poll(name, reader)
                if received is not None:
                    self._turn += 1  # the next call starts with the next reader: none starves
                    return received
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sockets = [s for r in self._readers.values() if (s := r.socket()) is not None]
            if not sockets:
                time.sleep(min(remaining, _SELECT_SLICE))
                continue
            with suppress(OSError, ValueError):
                select.select(sockets, [], [], min(remaining, _SELECT_SLICE))

    def _poll(self, name: str, reader: _Reader) -> tuple[str, bytes] | None:
        """The next message on ``reader``, if one is ready."""
        if reader.early:
            message: dict[str, Any] | None = reader.early.pop(0)
        else:
            try:
                message = reader.pubsub.get_message(timeout=0.0)
            except _TOPOLOGY_ERRORS as exc:
                self._rehome(f"the cluster moved a channel ({type(exc).__name__})")
            except Exception as exc:
                reason = transport_error_message(exc)
                if reason is None:
                    raise
                self._broken.add(name)  # reconnect() replaces this reader, not the others
                raise TransportError(f"{reason} (the primary {name})") from exc
        if message is None:
            return None
        self.last_activity = time.monotonic()
        kind = message["type"]
        if kind == "smessage":
            channel = text(message["channel"])
            if self._home.get(channel) != name:
                return None  # a reader the channel has left: never deliver twice
            return channel, message["data"]
        if kind == "ssubscribe":
            channel = text(message["channel"])
            if self._home.get(channel) == name:
                self.restored_channels = set(reader.channels)
                reader.restored.confirmed(channel, set(reader.channels))
        elif kind == "sunsubscribe":
            channel = text(message["channel"])
            if channel in self._channels and self._home.get(channel) == name:
                # Not asked for: the slot moved, or the shard failed over.
                self._home.pop(channel, None)
                reader.channels.discard(channel)
                self._rehome(f"the cluster unsubscribed {channel} (slot moved or failover)")
        return None

    def _rehome(self, reason: str) -> NoReturn:
        """Refresh the slot map and subscribe every channel on its primary; raise Resubscribed."""
        try:
            self._transport.refresh()
            self.restored_channels = self._place(self._channels)
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"{reason}; re-homing failed: {exc}") from exc
        raise Resubscribed(f"{reason}; resubscribed on the current primaries")

    def ping(self) -> None:
        with translated(self.description):
            for reader in self._readers.values():
                reader.pubsub.ping()

    def reconnect(self) -> None:
        # A failed reader is replaced and its channels re-homed; the readers of
        # the other primaries go on. Anything else (a PING unanswered) starts over.
        partial = bool(self._broken)
        if partial:
            for name in self._broken:
                self._drop(name)
        else:
            self.close()
        with translated(self.description):
            self._transport.refresh()
        placed = self._place(self._channels) if self._channels else set()
        self.restored_channels = placed if partial else None
        self._broken.clear()
        self.last_activity = time.monotonic()

    def _drop(self, name: str) -> None:
        """Close the reader of primary ``name``: its channels have no home until placed again."""
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.close()
        for channel in [c for c, home in self._home.items() if home == name]:
            del self._home[channel]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._home.clear()


class ClusterTransport(Transport, RedisKeys):
    """
    Publish and subscribe through a Redis Cluster, with sharded pub/sub.

    Arguments:

        url
            ``redis+cluster://[user:password@]host1:7000,host2:7001[?options]``
            (some nodes of the cluster; the client finds the rest), or
            ``rediss+cluster://`` for TLS.

        client
            An existing ``redis.cluster.RedisCluster`` to use instead of
            ``url``. Its ``decode_responses`` must be False.

        options
            Extra keyword arguments for ``redis.cluster.RedisCluster``.
    """

    sharded = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.cluster.RedisCluster | None = None,
        **options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError(
                "pass either a Redis Cluster URL or client=redis.cluster.RedisCluster(...)"
            )
        if client is None:
            assert url is not None
            parsed = parse_url(url)
            description = parsed.description
            options = {**parsed.options, **options}
            nodes = [
                redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in parsed.nodes
            ]
            try:
                client = redis.cluster.RedisCluster(startup_nodes=nodes, **options)
            except redis.exceptions.RedisClusterException as exc:
                raise TransportError(
                    f"cannot reach the Redis Cluster at {description}: {exc}"
                ) from exc
        else:
            kwargs = client.get_connection_kwargs()  # type: ignore[no-untyped-call]
            if kwargs.get("decode_responses"):
                raise ValueError(
                    "the Redis client decodes responses (decode_responses=True); relay "
                    "payloads are binary, so pass a client made with decode_responses=False"
                )
            primaries = client.get_primaries()  # type: ignore[no-untyped-call]
            hosts = ",".join(str(node.name) for node in primaries)
            description = f"redis+cluster://{hosts}"
        #: The ``redis.cluster.RedisCluster`` (typed loosely: redis-py's cluster is untyped).
        self.client: Any = client
        self.description = description
        self.max_payload = MAX_PAYLOAD
        self._pid = os.getpid()

    def node_client(self, host: str, port: int) -> redis.Redis:
        """A plain client on one node (for a subscription's reader), with the cluster's options."""
        kwargs = {
            key: value
            for key, value in self.client.get_connection_kwargs().items()
            if key not in _NOT_FOR_READERS
        }
        # A broken reader is re-homed by the subscription, never reconnected in place.
        return redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **kwargs)

    def refresh(self) -> None:
        """Read the slot map again."""
        self.client.nodes_manager.initialize()

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        with translated(self.description):
            if log is None and len(items) == 1 and items[0].log is None:
                self.client.spublish(items[0].channel, items[0].data)
                return
            # Not a transaction: the pipeline sends each node its commands in one round.
            pipe = self.client.pipeline()
            queue_publish(pipe, items, log, sharded=True)
            pipe.execute()

    def get_values(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        with translated(self.description):
            # The keys may be on several slots: one MGET per slot.
            return texts(self.client.mget_nonatomic(list(keys)))

    def subscription(self) -> ClusterSubscription:
        return ClusterSubscription(self)

    def check(self) -> None:
        with translated(self.description, reaching=True):
            self.client.ping(target_nodes=redis.cluster.RedisCluster.PRIMARIES)

    def after_fork(self) -> None:
        # Forget the parent's sockets: the child's client opens its own.
        for node in self.client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.reset()
        self._pid = os.getpid()

    def close(self) -> None:
        self.client.close()


# -- asyncio ------------------------------------------------------------------------

# The options a reader's plain asyncio client takes from the cluster client's.
_READER_OPTIONS = (
    "username", "password", "credential_provider", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "socket_keepalive_options", "ssl", "ssl_keyfile", "ssl_certfile",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data", "ssl_check_hostname", "ssl_password",
    "ssl_min_version", "ssl_ciphers", "protocol", "client_name", "lib_name", "lib_version",
)  # fmt: skip
# How long the asyncio subscription sleeps between polls of its readers.
_POLL_SLICE = 0.005


class _AsyncReader:
    """The subscribed connection to one primary (asyncio)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.channels: set[str] = set()
        self.early: list[dict[str, Any]] = []
        self.restored = Restorations()

    async def close(self) -> None:
        with suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        with suppress(Exception):
            await self.client.aclose()


class AsyncClusterSubscription(AsyncSubscription):
    """``ClusterSubscription`` for asyncio: one reader per primary, polled in turn."""

    def __init__(self, transport: AsyncClusterTransport) -> None:
        self._transport = transport
        self.description = transport.description
        self._channels: set[str] = set()
        self._readers: dict[str, _AsyncReader] = {}
        self._home: dict[str, str] = {}
        self._broken: set[str] = set()
        self._turn = 0
        self.restored_channels: set[str] | None = None
        self.last_activity = time.monotonic()

    async def subscribe(self, channels: Collection[str]) -> None:
        new = [c for c in channels if c not in self._channels]
        if not new:
            return
        self._channels.update(new)
        await self._place(new)

    async def unsubscribe(self, channels: Collection[str]) -> None:
        gone = [c for c in channels if c in self._channels]
        if not gone:
            return
        self._channels.difference_update(gone)
        with translated(self.description):
            for channel in gone:
                await self._leave(channel)

    async def _place(self, channels: Collection[str]) -> set[str]:
        placed: set[str] = set()
        with translated():
            client = await self._transport.ready()
            groups: dict[tuple[str, str, int], list[str]] = {}
            for channel in sorted(channels):
                node = client.get_node_from_key(channel)
                groups.setdefault((str(node.name), str(node.host), int(node.port)), []).append(
                    channel
                )
            for (name, host, port), group in groups.items():
                for channel in [c for c in group if self._home.get(c) not in (None, name)]:
                    await self._leave(channel)
                reader = self._readers.get(name)
                if reader is None:
                    reader = _AsyncReader(self._transport.node_client(host, port))
                    self._readers[name] = reader
                todo = [c for c in group if c not in reader.channels]
                if not todo:
                    continue
                try:
                    for channel in todo:  # a command's channels must share a slot
                        await reader.pubsub.ssubscribe(channel)
                    await self._await_confirmations(reader, set(todo))
                except BaseException:
                    await self._drop(name)
                    self._broken.add(name)
                    raise
                reader.channels.update(todo)
                placed.update(todo)
                for channel in todo:
                    self._home[channel] = name
            for name in [n for n, r in self._readers.items() if not r.channels]:
                await self._readers.pop(name).close()
        return placed

    async def _leave(self, channel: str) -> None:
        node = self._home.pop(channel, None)
        reader = None if node is None else self._readers.get(node)
        if reader is None:
            return
        reader.channels.discard(channel)
        if not reader.channels:
            await self._readers.pop(str(node)).close()
            return
        with suppress(*CONNECTION_ERRORS):
            await reader.pubsub.sunsubscribe(channel)

    async def _await_confirmations(self, reader: _AsyncReader, waiting: set[str]) -> None:
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"Redis did not confirm SSUBSCRIBE within {_CONFIRM_TIMEOUT:g} s"
                )
            message = await reader.pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                waiting.discard(text(message["channel"]))
            elif message["type"] == "smessage":
                reader.early.append(message)

    async def get(self, timeout: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + timeout
        while True:
            for name, reader in _rotated(self._readers, self._turn):
                received = await self._poll(name, reader)
                if received is not None:
                    self._turn += 1
                    return received
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(remaining, _POLL_SLICE if self._readers else remaining))

    async def _poll(self, name: str, reader: _AsyncReader) -> tuple[str, bytes] | None:
        if reader.early:
            message: dict[str, Any] | None = reader.early.pop(0)
        else:
            try:
                message = await reader.pubsub.get_message(timeout=0.0)
            except _TOPOLOGY_ERRORS as exc:
                await self._rehome(f"the cluster moved a channel ({type(exc).__name__})")
            except Exception as exc:
                reason = transport_error_message(exc)
                if reason is None:
                    raise
                self._broken.add(name)  # reconnect() replaces this reader, not the others
                raise TransportError(f"{reason} (the primary {name})") from exc
        if message is None:
            return None
        self.last_activity = time.monotonic()
        kind = message["type"]
        if kind == "smessage":
            channel = text(message["channel"])
            if self._home.get(channel) != name:
                return None
            return channel, message["data"]
        if kind == "ssubscribe":
            channel = text(message["channel"])
            if self._home.get(channel) == name:
                self.restored_channels = set(reader.channels)
                reader.restored.confirmed(channel, set(reader.channels))
        elif kind == "sunsubscribe":
            channel = text(message["channel"])
            if channel in self._channels and self._home.get(channel) == name:
                self._home.pop(channel, None)
                reader.channels.discard(channel)
                await self._rehome(f"the cluster unsubscribed {channel} (slot moved or failover)")
        return None

    async def _rehome(self, reason: str) -> NoReturn:
        try:
            await self._transport.refresh()
            self.restored_channels = await self._place(self._channels)
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"{reason}; re-homing failed: {exc}") from exc
        raise Resubscribed(f"{reason}; resubscribed on the current primaries")

    async def ping(self) -> None:
        with translated(self.description):
            for reader in self._readers.values():
                await reader.pubsub.ping()

    async def reconnect(self) -> None:
        partial = bool(self._broken)
        if partial:
            for name in self._broken:
                await self._drop(name)
        else:
            await self.close()
        with translated(self.description):
            await self._transport.refresh()
        placed = await self._place(self._channels) if self._channels else set()
        self.restored_channels = placed if partial else None
        self._broken.clear()
        self.last_activity = time.monotonic()

    async def _drop(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            await reader.close()
        for channel in [c for c, home in self._home.items() if home == name]:
            del self._home[channel]

    async def close(self) -> None:
        readers = list(self._readers.values())
        self._readers.clear()
        self._home.clear()
        for reader in readers:
            await reader.close()


class AsyncClusterTransport(AsyncTransport, AsyncDurableLog, AsyncClaims, AsyncPresence):
    """
    ``ClusterTransport`` for asyncio, on ``redis.asyncio.cluster.RedisCluster``.

    Arguments:

        url
            A ``redis+cluster://`` or ``rediss+cluster://`` URL, as for
            ``ClusterTransport``.

        client
            An existing ``redis.asyncio.cluster.RedisCluster`` instead of ``url``.

        options
            Extra keyword arguments for ``redis.asyncio.cluster.RedisCluster``.
    """

    sharded = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.cluster.RedisCluster | None = None,
        **options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError(
                "pass either a Redis Cluster URL or "
                "client=redis.asyncio.cluster.RedisCluster(...), not both"
            )
        if client is None:
            assert url is not None
            parsed = parse_url(url)
            description = parsed.description
            options = {**parsed.options, **options}
            nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in parsed.nodes]
            client = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options)
        else:
            if client.get_connection_kwargs().get("decode_responses"):
                raise ValueError(
                    "the Redis client decodes responses (decode_responses=True); relay "
                    "payloads are binary, so pass a client made with decode_responses=False"
                )
            hosts = ",".join(
                f"{node.host}:{node.port}" for node in client.nodes_manager.startup_nodes.values()
            )
            description = f"redis+cluster://{hosts}"
        self.client: Any = client
        self.description = description
        self.max_payload = MAX_PAYLOAD
        self._initialized = False

    async def ready(self) -> Any:
        """The cluster client, once it has read the slot map."""
        if not self._initialized:
            await self.client.initialize()
            self._initialized = True
        return self.client

    async def refresh(self) -> None:
        """Read the slot map again."""
        await self.ready()
        await self.client.nodes_manager.initialize()

    def node_client(self, host: str, port: int) -> redis.asyncio.Redis:
        """A plain asyncio client on one node, with the cluster's credentials and TLS."""
        kwargs = self.client.get_connection_kwargs()
        chosen = {key: kwargs[key] for key in _READER_OPTIONS if kwargs.get(key) is not None}
        return redis.asyncio.Redis(
            host=host, port=port, retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **chosen
        )

    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        with translated(self.description):
            client = await self.ready()
            if log is None and len(items) == 1 and items[0].log is None:
                await client.spublish(items[0].channel, items[0].data)
                return
            pipe = client.pipeline()
            queue_publish(pipe, items, log, sharded=True)
            await pipe.execute()

    async def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        with translated(self.description):
            client = await self.ready()
            entries: Any = await client.xrange(log.key, min=start, max="+", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    async def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        end = f"({before}" if before else "+"
        with translated(self.description):
            client = await self.ready()
            entries: Any = await client.xrevrange(log.key, max=end, min="-", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    async def get_value(self, key: str) -> str | None:
        with translated(self.description):
            client = await self.ready()
            value: Any = await client.get(key)
        return None if value is None else text(value)

    async def set_value(self, key: str, value: str) -> None:
        with translated(self.description):
            client = await self.ready()
            await client.set(key, value)

    async def claim(self, key: str, ttl_seconds: float, leases: str | None = None) -> bool:
        with translated(self.description):
            client = await self.ready()
            won = bool(await client.set(key, b"run", nx=True, px=milliseconds(ttl_seconds)))
            if won and leases is not None:
                await client.zadd(leases, {key: time.time() + ttl_seconds})
        return won

    async def renew(self, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = (await self.ready()).pipeline()
            queue_renew(pipe, keys, ttl_seconds, leases)
            await pipe.execute()

    async def finish(self, key: str, value: str, ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = (await self.ready()).pipeline()
            queue_finish(pipe, key, value, ttl_seconds, leases)
            await pipe.execute()

    async def announce(self, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
        with translated(self.description):
            pipe = (await self.ready()).pipeline()
            queue_announce(pipe, key, member, data, ttl_seconds)
            await pipe.execute()

    async def members(self, key: str) -> dict[str, bytes]:
        with translated(self.description):
            client = await self.ready()
            found: Any = await client.hgetall(key)
        return {text(member): data for member, data in found.items()}

    async def forget(self, key: str, members: Sequence[str]) -> None:
        if members:
            with translated(self.description):
                client = await self.ready()
                await client.hdel(key, *members)

    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        with translated(self.description):
            client = await self.ready()
            return texts(await client.mget_nonatomic(list(keys)))

    async def overdue(self, leases: str, before: float, count: int) -> list[str]:
        with translated(self.description):
            client = await self.ready()
            keys: Any = await client.zrangebyscore(leases, "-inf", before, start=0, num=count)
        return [text(key) for key in keys]

    async def discard(self, leases: str, key: str) -> bool:
        with translated(self.description):
            client = await self.ready()
            return bool(await client.zrem(leases, key))

    def subscription(self) -> AsyncClusterSubscription:
        return AsyncClusterSubscription(self)

    async def check(self) -> None:
        with translated(self.description, reaching=True):
            client = await self.ready()
            await client.ping(target_nodes=redis.asyncio.cluster.RedisCluster.PRIMARIES)

    def after_fork(self) -> None:
        # Forget the parent's sockets and slot map: the child connects afresh.
        url_nodes = [
            redis.asyncio.cluster.ClusterNode(node.host, node.port)
            for node in self.client.nodes_manager.startup_nodes.values()
        ]
        kwargs = {
            key: value
            for key, value in self.client.get_connection_kwargs().items()
            if key in _READER_OPTIONS
        }
        self.client = redis.asyncio.cluster.RedisCluster(startup_nodes=url_nodes, **kwargs)
        self._initialized = False

    async def close(self) -> None:
        await self.client.aclose()


# -- the backend (see relay.transport.registry) --------------------------------------


def from_url(
    url: str, asynchronous: bool, options: dict[str, Any]
) -> ClusterTransport | AsyncClusterTransport:
    """The transport for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    if asynchronous:
        return AsyncClusterTransport(url, **options)
    return ClusterTransport(url, **options)


def from_client(client: Any, asynchronous: bool) -> ClusterTransport | AsyncClusterTransport | None:
    """The transport around a ``redis.cluster.RedisCluster`` (or its asyncio twin), else None."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        if not asynchronous:
            raise TypeError(
                "client= is a redis.asyncio.cluster.RedisCluster: use it with relay.AsyncRelay; "
                "the threaded Relay takes a redis.cluster.RedisCluster"
            )
        return AsyncClusterTransport(client=client)
    if isinstance(client, redis.cluster.RedisCluster):
        if asynchronous:
            raise TypeError(
                "client= is a redis.cluster.RedisCluster: AsyncRelay takes a "
                "redis.asyncio.cluster.RedisCluster"
            )
        return ClusterTransport(client=client)
    return None

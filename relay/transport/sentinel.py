"""
The Redis Sentinel backend: ``redis+sentinel://`` and ``rediss+sentinel://``.

URLs name the sentinels and the service::

    redis+sentinel://[user:password@]host1:26379,host2:26379/service_name[/db][?options]

The user and password are those of the Redis servers (the master); the
sentinels' own are options: ``sentinel_password`` and ``sentinel_username``.
Other options are redis-py's connection options (``socket_timeout=5``, ...)
and apply to both. ``rediss+sentinel://`` uses TLS for both.

The transport talks to whichever server the sentinels call the master, and
follows a failover. redis-py reconnects a broken connection to the new
master by itself, but after a ``SENTINEL FAILOVER`` the old master keeps
serving the connections it has for several seconds while new ones go to the
new master, splitting delivery in two. So the transport asks the sentinels
for the master at most once every ``master_check`` seconds while it works:
the publisher moves to a new master at once, and the subscription ends its
connection to an old one, which the listener counts as a reconnect. Writes
to an old master in the switch are lost when it becomes a replica, so after
a switch the publisher sends the frames of the last ``resend_window`` seconds
again; receivers drop the copies they already have.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.transport.base import Log, Outgoing, TransportError
from relay.transport.redis import (
    AsyncRedisSubscription,
    AsyncRedisTransport,
    RedisSubscription,
    RedisTransport,
    translated,
)

__all__ = [
    "AsyncSentinelTransport",
    "SentinelTransport",
    "SentinelURL",
    "from_client",
    "from_url",
    "parse_url",
]

logger = logging.getLogger("relay.transport")

#: How often (seconds) a working transport asks the sentinels for the master.
MASTER_CHECK = 1.0
#: How far back (seconds) the publisher sends again after a master switch.
RESEND_WINDOW = 5.0
_SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")


class SentinelURL:
    """
    A parsed ``redis+sentinel://`` URL.

    ``sentinels`` are ``(host, port)`` pairs, ``service`` the master's name,
    ``options`` redis-py connection options for the master (its ``username``,
    ``password``, ``db``, ``ssl``...) and ``sentinel_options`` those of the
    sentinels themselves.
    """

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        options: dict[str, Any],
        sentinel_options: dict[str, Any],
    ) -> None:
        self.sentinels = sentinels
        self.service = service
        self.options = options
        self.sentinel_options = sentinel_options

    @property
    def description(self) -> str:
        """The URL without credentials."""
        scheme = "rediss+sentinel" if self.options.get("ssl") else "redis+sentinel"
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{scheme}://{hosts}/{self.service}/{self.options.get('db', 0)}"


def parse_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` URL; raises ValueError saying what is wrong."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"invalid Sentinel URL {_hide_password(url)!r}: {why}; use "
            "redis+sentinel://[user:password@]host1:26379,host2:26379/service_name[/db]"
        )

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("redis+sentinel", "rediss+sentinel"):
        raise bad("the scheme must be redis+sentinel:// or rediss+sentinel://")
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
    sentinels: list[tuple[str, int]] = []
    for host in hosts.split(","):
        name, has_port, port = host.strip().rpartition(":") if ":" in host else (host, "", "")
        if not has_port:
            name, port = host.strip(), "26379"
        name = name.strip("[]")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"{host!r} is not host:port")
        sentinels.append((name, int(port)))
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise bad("the service name is missing")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise bad("the path must be /service_name or /service_name/db")
    service = parts[0]
    if len(parts) == 2:
        options["db"] = int(parts[1])
    if scheme.lower() == "rediss+sentinel":
        options["ssl"] = True
    sentinel_options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _SENTINEL_OPTIONS:
            sentinel_options[name.removeprefix("sentinel_")] = value
            continue
        parser: Any = redis.connection.URL_QUERY_ARGUMENT_PARSERS.get(name)
        if parser is None:
            known = sorted([*_SENTINEL_OPTIONS, *redis.connection.URL_QUERY_ARGUMENT_PARSERS])
            raise bad(f"unknown option {name!r} (known: {', '.join(known)})")
        try:
            options[name] = parser(value)
        except (TypeError, ValueError):
            raise bad(f"bad value for option {name!r}") from None
    for name in ("socket_timeout", "socket_connect_timeout", "ssl"):
        if name in options:
            sentinel_options.setdefault(name, options[name])
    return SentinelURL(sentinels, service, options, sentinel_options)


def _hide_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, credentials = head.partition("://")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{tail}" if ":" in credentials else url


def _master_client(
    url: str, options: dict[str, Any], sentinel_class: Any, retry: Any, redis_class: Any
) -> tuple[Any, str]:
    """The master's client for ``url`` (threaded or asyncio classes), and its description."""
    parsed = parse_url(url)
    options = {**parsed.options, **options}
    options.setdefault("retry", retry)
    sentinel = sentinel_class(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options, **options)
    return sentinel.master_for(parsed.service, redis_class=redis_class), parsed.description


class _Recent:
    """The frames published in the last ``window`` seconds, to send again after a switch."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._frames: deque[tuple[float, Sequence[Outgoing], Log | None]] = deque()

    def add(self, items: Sequence[Outgoing], log: Log | None) -> None:
        now = time.monotonic()
        self._frames.append((now, items, log))
        while self._frames and now - self._frames[0][0] > self.window:
            self._frames.popleft()

    def take(self) -> list[tuple[Sequence[Outgoing], Log | None]]:
        taken = [(items, log) for _, items, log in self._frames]
        self._frames.clear()
        return taken


class SentinelTransport(RedisTransport):
    """
    ``RedisTransport`` on the master a set of sentinels names, following failovers.

    Arguments:

        url
            A ``redis+sentinel://`` or ``rediss+sentinel://`` URL (see the
            module's documentation).

        client
            Instead of ``url``: a client from ``Sentinel.master_for()``.

        master_check
            Ask the sentinels for the master at most this often (seconds).

        resend_window
            After a master switch, publish again what was published in this
            many seconds before it.

        options
            Extra keyword arguments for the master's connections.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        master_check: float = MASTER_CHECK,
        resend_window: float = RESEND_WINDOW,
        **options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("pass either a Sentinel URL or client=Sentinel(...).master_for(...)")
        if client is None:
            assert url is not None
            client, description = _master_client(
                url, options, redis.sentinel.Sentinel, Retry(NoBackoff(), 1), redis.Redis
            )
        else:
            pool = client.connection_pool
            if not isinstance(pool, redis.sentinel.SentinelConnectionPool):
                raise TypeError("client= must come from redis.sentinel.Sentinel(...).master_for()")
            hosts = ",".join(
                f"{s.connection_pool.connection_kwargs.get('host')}:"
                f"{s.connection_pool.connection_kwargs.get('port')}"
                for s in pool.sentinel_manager.sentinels
            )
            description = f"redis+sentinel://{hosts}/{pool.service_name}"
        super().__init__(client=client)
        self.description = description
        self.master_check = master_check
        self._lock = threading.Lock()
        self._checked_at = -master_check
        self._master: tuple[str, int] | None = None
        self._recent = _Recent(resend_window)

    def master(self, fresh: bool = False) -> tuple[str, int]:
        """
        The master's address, as the sentinels say, asked at most every
        ``master_check`` seconds (every time with ``fresh``). Idle connections
        to a previous master are closed. Raises ``TransportError``.
        """
        now = time.monotonic()
        if fresh or self._master is None or now - self._checked_at >= self.master_check:
            with translated(self.description, reaching=True):
                address = self.client.connection_pool.get_master_address()  # type: ignore[attr-defined]
            self._checked_at = now
            self._master = (str(address[0]), int(address[1]))
        return self._master

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        with self._lock:
            before = self._master
            try:
                now = self.master()
            except TransportError:
                self._master = None
                raise
            if before is not None and now != before:
                self._resend(before, now)
            try:
                super().publish_many(items, log)
            except TransportError:
                self._master = None  # ask again before the retry
                raise
            self._recent.add(items, log)

    def _resend(self, old: tuple[str, int], new: tuple[str, int]) -> None:
        frames = self._recent.take()
        if not frames:
            return
        logger.warning(
            "relay: the Redis master moved from %s:%d to %s:%d; publishing the last %d "
            "frames again there, in case the old master lost them",
            *old,
            *new,
            sum(len(items) for items, _ in frames),
        )
        for items, log in frames:
            super().publish_many(items, log)
            self._recent.add(items, log)

    def subscription(self) -> SentinelSubscription:
        return SentinelSubscription(self)

    def check(self) -> None:
        self.master(fresh=True)
        super().check()


class SentinelSubscription(RedisSubscription):
    """A subscription that leaves a master the sentinels no longer name."""

    def __init__(self, transport: SentinelTransport) -> None:
        super().__init__(transport.client, transport.description)
        self._transport = transport

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        connection = self._pubsub.connection
        if connection is not None and connection.host:
            master = self._transport.master()
            if (connection.host, int(connection.port)) != master:
                raise TransportError(
                    f"the master moved to {master[0]}:{master[1]}; this subscription was "
                    f"still on {connection.host}:{connection.port}"
                )
        return super().get(timeout)


class AsyncSentinelTransport(AsyncRedisTransport):
    """``SentinelTransport`` for asyncio, on ``redis.asyncio.sentinel``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        master_check: float = MASTER_CHECK,
        resend_window: float = RESEND_WINDOW,
        **options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("pass either a Sentinel URL or client=Sentinel(...).master_for(...)")
        if client is None:
            assert url is not None
            client, description = _master_client(
                url,
                options,
                redis.asyncio.sentinel.Sentinel,
                redis.asyncio.retry.Retry(NoBackoff(), 1),
                redis.asyncio.Redis,
            )
        else:
            pool = client.connection_pool
            if not isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
                raise TypeError(
                    "client= must come from redis.asyncio.sentinel.Sentinel(...).master_for()"
                )
            description = f"redis+sentinel://.../{pool.service_name}"
        super().__init__(client=client)
        self.description = description
        self.master_check = master_check
        self._checked_at = -master_check
        self._master: tuple[str, int] | None = None
        self._recent = _Recent(resend_window)

    async def master(self, fresh: bool = False) -> tuple[str, int]:
        """See ``SentinelTransport.master``."""
        now = time.monotonic()
        if fresh or self._master is None or now - self._checked_at >= self.master_check:
            pool: Any = self.client.connection_pool
            with translated(self.description, reaching=True):
                address = await pool.get_master_address()
            self._checked_at = now
            self._master = (str(address[0]), int(address[1]))
        return self._master

    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        before = self._master
        try:
            now = await self.master()
        except TransportError:
            self._master = None
            raise
        if before is not None and now != before:
            for old_items, old_log in self._recent.take():
                await super().publish_many(old_items, old_log)
                self._recent.add(old_items, old_log)
        try:
            await super().publish_many(items, log)
        except TransportError:
            self._master = None
            raise
        self._recent.add(items, log)

    def subscription(self) -> AsyncSentinelSubscription:
        return AsyncSentinelSubscription(self)

    async def check(self) -> None:
        await self.master(fresh=True)
        await super().check()


class AsyncSentinelSubscription(AsyncRedisSubscription):
    """``SentinelSubscription`` for asyncio."""

    def __init__(self, transport: AsyncSentinelTransport) -> None:
        super().__init__(transport.client, transport.description)
        self._transport = transport

    async def get(self, timeout: float) -> tuple[str, bytes] | None:
        connection: Any = self._pubsub.connection
        if connection is not None and getattr(connection, "host", None):
            master = await self._transport.master()
            if (connection.host, int(connection.port)) != master:
                raise TransportError(
                    f"the master moved to {master[0]}:{master[1]}; this subscription was "
                    f"still on {connection.host}:{connection.port}"
                )
        return await super().get(timeout)


# -- the backend (see relay.transport.registry) --------------------------------------


def from_url(
    url: str, asynchronous: bool, options: dict[str, Any]
) -> SentinelTransport | AsyncSentinelTransport:
    """The transport for a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    if asynchronous:
        return AsyncSentinelTransport(url, **options)
    return SentinelTransport(url, **options)


def from_client(
    client: Any, asynchronous: bool
) -> SentinelTransport | AsyncSentinelTransport | None:
    """The transport around a client from ``Sentinel.master_for()``, else None."""
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        if asynchronous:
            raise TypeError(
                "client= is a threaded Sentinel client: AsyncRelay takes one from "
                "redis.asyncio.sentinel.Sentinel(...).master_for()"
            )
        return SentinelTransport(client=client)
    if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        if not asynchronous:
            raise TypeError(
                "client= is an asyncio Sentinel client: use it with AsyncRelay; the threaded "
                "Relay takes one from redis.sentinel.Sentinel(...).master_for()"
            )
        return AsyncSentinelTransport(client=client)
    return None

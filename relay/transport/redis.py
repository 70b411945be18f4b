"""
The single-node Redis backend (``redis://``, ``rediss://``, ``unix://``), on
redis-py: ``RedisTransport`` for threads, ``AsyncRedisTransport`` on
``redis.asyncio``. Its helpers are shared by the Sentinel and Cluster backends.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection, Sequence
from contextlib import suppress
from typing import Any, Final

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.transport.base import (
    AsyncClaims,
    AsyncDurableLog,
    AsyncPresence,
    AsyncSubscription,
    AsyncTransport,
    Claims,
    DurableLog,
    Log,
    LogEntry,
    Outgoing,
    Presence,
    Resubscribed,
    Subscription,
    Transport,
    TransportError,
)

#: Redis's largest bulk string (``proto-max-bulk-len``), by default.
MAX_PAYLOAD = 512 * 1024 * 1024

CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

AUTHENTICATION_ERRORS = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthenticationWrongNumberOfArgsError,
)


_CONFIRM_TIMEOUT = 10.0


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def log_entry(position: bytes | str, fields: dict[bytes, bytes]) -> LogEntry:
    last = fields.get(b"q", b"")
    return LogEntry(
        text(position),
        text(fields.get(b"c", b"")),
        fields.get(b"f", b""),
        text(fields.get(b"i", b"")),
        text(fields.get(b"o", b"")),
        int(last) if last.isdigit() and len(last) < 21 else 0,
    )


def milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def queue_renew(pipe: Any, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
    due = time.time() + ttl_seconds
    for key in keys:
        pipe.pexpire(key, milliseconds(ttl_seconds))
        pipe.zadd(leases, {key: due}, xx=True)


def queue_finish(pipe: Any, key: str, value: str, ttl_seconds: float, leases: str) -> None:
    pipe.set(key, value, px=milliseconds(ttl_seconds))
    pipe.zrem(leases, key)


def queue_announce(pipe: Any, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
    pipe.hset(key, member, data)
    pipe.pexpire(key, milliseconds(ttl_seconds))


def texts(values: Sequence[bytes | str | None]) -> list[str | None]:
    return [None if value is None else text(value) for value in values]


def queue_publish(
    pipe: Any, items: Sequence[Outgoing], log: Log | None, sharded: bool = False
) -> None:
    """
    Queue the commands that publish ``items`` (appending each to its own
    ``log``, else to ``log``) on a pipeline; ``sharded`` publishes with SPUBLISH.
    """
    trimmed: dict[str, Log] = {}
    for item in items:
        target = item.log or log
        if target is not None:
            fields: dict[str, str | bytes | int]
            fields = {"c": item.channel, "f": item.data, "i": item.ids}
            if item.origin:
                fields["o"] = item.origin
                fields["q"] = item.last
            pipe.xadd(target.key, fields, maxlen=target.max_entries, approximate=True)
            if target.max_age_seconds is not None:
                trimmed.setdefault(target.key, target)
        if sharded:
            pipe.spublish(item.channel, item.data)
        else:
            pipe.publish(item.channel, item.data)
    for target in trimmed.values():
        assert target.max_age_seconds is not None
        oldest = int((time.time() - target.max_age_seconds) * 1000)
        pipe.xtrim(target.key, minid=str(oldest), approximate=True)


class translated:  # lower case: it reads as a function, ``with translated(...):``
    """
    Raise redis-py's errors as ``TransportError``s, each with a one-line message.

    Arguments:

        description
            The transport's ``description`` (which never has credentials): a
            refused authentication names it, with the URL that would work.

        reaching
            Name ``description`` in a connection error too (for ``check()``,
            whose caller wants to know which Redis it could not reach).

    A class, not a generator-based context manager: the listener enters one
    per frame and a ``publish="sync"`` send one per message.
    """

    __slots__ = ("description", "reaching")

    def __init__(self, description: str | None = None, *, reaching: bool = False) -> None:
        self.description = description
        self.reaching = reaching

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or isinstance(exc, TransportError) or not isinstance(exc, Exception):
            return  # no error, one of ours already (a SUBSCRIBE not confirmed...), or not an error
        message = transport_error_message(exc, self.description, reaching=self.reaching)
        if message is not None:
            raise TransportError(message) from exc


#: translated() without a description, for the listener's read of every frame.
_TRANSLATING: Final = translated()


def transport_error_message(
    exc: BaseException, description: str | None = None, *, reaching: bool = False
) -> str | None:
    """The one-line message of the ``TransportError`` for ``exc``; None if it is not one."""
    refused = authentication_failure(exc, description)
    if refused is not None:
        return refused
    if isinstance(exc, CONNECTION_ERRORS):
        error = f"{type(exc).__name__}: {one_line(exc)}"
        if reaching and description:
            return f"cannot reach Redis at {description}: {error}"
        return error
    if isinstance(exc, redis.exceptions.ResponseError):
        # NOPERM from an ACL, a read-only replica, ...: Redis refused.
        return f"Redis refused: {one_line(exc)}"
    return None


def authentication_failure(exc: BaseException, description: str | None = None) -> str | None:
    """
    If ``exc`` is Redis refusing this client's credentials (or asking for
    some), a one-line message saying so and how to fix the URL; else None.
    The message never has a password: ``description`` has none, nor do
    Redis's errors.
    """
    reason = one_line(exc)
    code = getattr(exc, "status_code", None)  # redis-py strips NOAUTH, WRONGPASS, ... off
    if isinstance(code, str) and code and not reason.startswith(code):
        reason = f"{code} {reason}"
    if not isinstance(exc, AUTHENTICATION_ERRORS) and not (
        isinstance(exc, redis.exceptions.ResponseError)
        and (
            reason.startswith(("NOAUTH", "WRONGPASS"))
            or ("HELLO" in reason and "auth" in reason.lower())
        )
    ):
        return None
    # HELLO's refusal goes on to explain RESP3's HELLO AUTH: keep its gist.
    reason = reason.partition(", otherwise")[0]
    redis_at = f"Redis at {description}" if description else "Redis"
    if "without any password configured" in reason or "no password is set" in reason:
        return f"{redis_at} has no password ({reason}); take the password out of the URL"
    return (
        f"{redis_at} refused the credentials ({reason}); put the password, and the ACL "
        f"user if there is one, in the URL: {_url_with_credentials(description)}"
    )


def _url_with_credentials(description: str | None) -> str:
    scheme, separator, rest = (description or "").partition("://")
    if separator and scheme in ("redis", "rediss"):
        return f"{scheme}://user:password@{rest}"
    return "redis://user:password@host:port/0"


def one_line(exc: BaseException) -> str:
    """``str(exc)`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(exc).split())


def describe(client: redis.Redis) -> str:
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"redis unix:{kwargs['path']} db={kwargs.get('db', 0)}"
    scheme = (
        "rediss" if client.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    )
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"


class Restorations:
    """
    Notices subscriptions restored behind the subscriber's back.

    ``subscribe()`` reads its own confirmations, so a confirmation that
    arrives later was asked for by someone else: redis-py, reconnecting and
    subscribing again by itself after the server closed the connection
    (``CLIENT KILL``, an output-buffer limit, a proxy), or after the process
    was paused across a restart. Messages published in between are lost on
    this connection, so this is a reconnect like any other.
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()

    def confirmed(self, name: str, wanted: set[str]) -> None:
        """A confirmation for ``name``; raise ``Resubscribed`` if it starts a restoration."""
        if name in self._pending:
            # The rest of a restoration already reported.
            self._pending.discard(name)
            return
        self._pending = wanted - {name}
        raise Resubscribed(
            "the subscribed connection was closed and restored (the server closed it, or it "
            "broke while this process was paused); messages sent meanwhile were not received"
        )


class RedisSubscription(Subscription):
    """A redis-py ``PubSub`` used by one listener thread."""

    def __init__(self, client: redis.Redis, description: str | None = None) -> None:
        self._client = client
        #: The transport's description, for error messages (no credentials).
        self.description = description
        self._pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._early: list[dict[str, Any]] = []
        self._restored = Restorations()
        self.last_activity = time.monotonic()

    def subscribe(self, channels: Collection[str]) -> None:
        new = [c for c in channels if c not in self._channels]
        if not new:
            return
        # Wanted from now on, even if this attempt fails: reconnect() retries it.
        self._channels.update(new)
        self._subscribe(new)

    def psubscribe(self, patterns: Collection[str]) -> None:
        new = [p for p in patterns if p not in self._patterns]
        if not new:
            return
        self._patterns.update(new)
        with translated():
            self._pubsub.psubscribe(*new)
            self._await_confirmations(set(new), "psubscribe")

    def _subscribe(self, channels: Collection[str]) -> None:
        with translated():
            self._pubsub.subscribe(*channels)
            self._await_confirmations(set(channels))

    def _await_confirmations(self, waiting: set[str], kind: str = "subscribe") -> None:
        # Once the server has confirmed, every later PUBLISH reaches us:
        # reading the confirmations here makes subscribe() a barrier.
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while waiting:
            remaining = deadline - time.monotonic()
            message = self._pubsub.get_message(timeout=max(remaining, 0.0))
            if message is None:
                if remaining <= 0:
                    raise TransportError(
                        f"Redis did not confirm SUBSCRIBE within {_CONFIRM_TIMEOUT:g} s"
                    )
                continue
            if message["type"] == kind:
                waiting.discard(text(message["channel"]))
            elif message["type"] in ("message", "pmessage"):
                self._early.append(message)

    def unsubscribe(self, channels: Collection[str]) -> None:
        gone = [c for c in channels if c in self._channels]
        if not gone:
            return
        self._channels.difference_update(gone)
        with translated(self.description):
            self._pubsub.unsubscribe(*gone)

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        if self._early:
            message: dict[str, Any] | None = self._early.pop(0)
        else:
            with _TRANSLATING:
                message = self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        self.last_activity = time.monotonic()
        kind = message["type"]
        if kind in ("message", "pmessage"):
            return text(message["channel"]), message["data"]
        if kind in ("subscribe", "psubscribe"):
            self._restored.confirmed(text(message["channel"]), self._channels | self._patterns)
        return None

    def ping(self) -> None:
        with translated(self.description):
            self._pubsub.ping()

    def reconnect(self) -> None:
        self.close()
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._early.clear()
        self._restored = Restorations()
        if self._channels:
            self._subscribe(sorted(self._channels))
        if self._patterns:
            with translated():
                self._pubsub.psubscribe(*self._patterns)
                self._await_confirmations(set(self._patterns), "psubscribe")
        self.last_activity = time.monotonic()

    def close(self) -> None:
        with suppress(*CONNECTION_ERRORS):
            self._pubsub.reset()


class RedisKeys(DurableLog, Claims, Presence):
    """
    The durable log, the claims and presence, on the keys of a redis-py ``client``
    (a ``redis.Redis`` or a ``redis.cluster.RedisCluster``): what the
    single-node, Sentinel and Cluster transports share.
    """

    client: Any
    description: str

    def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        with translated(self.description):
            entries: Any = self.client.xrange(log.key, min=start, max="+", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        end = f"({before}" if before else "+"
        with translated(self.description):
            entries: Any = self.client.xrevrange(log.key, max=end, min="-", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    def get_value(self, key: str) -> str | None:
        with translated(self.description):
            value = self.client.get(key)
        return None if value is None else text(value)

    def set_value(self, key: str, value: str) -> None:
        with translated(self.description):
            self.client.set(key, value)

    def claim(self, key: str, ttl_seconds: float, leases: str | None = None) -> bool:
        with translated(self.description):
            won = bool(self.client.set(key, b"run", nx=True, px=milliseconds(ttl_seconds)))
            if won and leases is not None:
                self.client.zadd(leases, {key: time.time() + ttl_seconds})
        return won

    def renew(self, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_renew(pipe, keys, ttl_seconds, leases)
            pipe.execute()

    def finish(self, key: str, value: str, ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_finish(pipe, key, value, ttl_seconds, leases)
            pipe.execute()

    def get_values(self, keys: Sequence[str]) -> list[str | None]:
        with translated(self.description):
            return texts(self.client.mget(keys))

    def overdue(self, leases: str, before: float, count: int) -> list[str]:
        with translated(self.description):
            keys: Any = self.client.zrangebyscore(leases, "-inf", before, start=0, num=count)
        return [text(key) for key in keys]

    def discard(self, leases: str, key: str) -> bool:
        with translated(self.description):
            return bool(self.client.zrem(leases, key))

    def announce(self, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_announce(pipe, key, member, data, ttl_seconds)
            pipe.execute()

    def members(self, key: str) -> dict[str, bytes]:
        with translated(self.description):
            found: Any = self.client.hgetall(key)
        return {text(member): data for member, data in found.items()}

    def forget(self, key: str, members: Sequence[str]) -> None:
        if members:
            with translated(self.description):
                self.client.hdel(key, *members)


class RedisTransport(Transport, RedisKeys):
    """
    Publish and subscribe through Redis.

    Arguments:

        url
            A redis-py URL: ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` for TLS, ``unix:///path/to/socket``. Query-string
            options (``?socket_timeout=5``) are passed on to redis-py. Unless
            ``retry=`` is given, redis-py retries a failed command once, at
            once; the bridge does the backing off.

        client
            An existing ``redis.Redis`` to use instead of ``url``. Its
            ``decode_responses`` must be False: payloads are binary.

        options
            Extra keyword arguments for ``redis.Redis.from_url``.
    """

    client: redis.Redis

    def __init__(
        self, url: str | None = None, *, client: redis.Redis | None = None, **options: Any
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("pass either a Redis URL or client=redis.Redis(...), not both")
        if client is None:
            assert url is not None
            # relay reconnects with its own backoff; one quick retry covers a
            # pooled connection that went stale while Redis restarted.
            options.setdefault("retry", Retry(NoBackoff(), 1))
            try:
                client = redis.Redis.from_url(url, **options)
            except ValueError as exc:
                raise ValueError(f"invalid Redis URL {url!r}: {exc}") from exc
        elif client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "the Redis client decodes responses (decode_responses=True); relay "
                "payloads are binary, so pass a client made with decode_responses=False"
            )
        self.client = client
        self.description = describe(client)
        self.max_payload = MAX_PAYLOAD
        self._pid = os.getpid()

    def publish(self, channel: str, data: bytes) -> int:
        with translated(self.description):
            return int(self.client.publish(channel, data))

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        if log is None and len(items) == 1 and items[0].log is None:
            self.publish(items[0].channel, items[0].data)
            return
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_publish(pipe, items, log)
            pipe.execute()

    def subscription(self) -> RedisSubscription:
        return RedisSubscription(self.client, self.description)

    def check(self) -> None:
        with translated(self.description, reaching=True):
            self.client.ping()

    def after_fork(self) -> None:
        # redis-py's pool notices the new pid on its own; resetting it here
        # makes sure no socket of the parent's is ever written to.
        self.client.connection_pool.reset()
        self._pid = os.getpid()

    def close(self) -> None:
        self.client.close()


class AsyncRedisSubscription(AsyncSubscription):
    """A ``redis.asyncio`` ``PubSub`` used by one listener task."""

    def __init__(self, client: redis.asyncio.Redis, description: str | None = None) -> None:
        self._client = client
        #: The transport's description, for error messages (no credentials).
        self.description = description
        self._pubsub = client.pubsub()
        self._channels: set[str] = set()
        self._early: list[dict[str, Any]] = []
        self._restored = Restorations()
        self.last_activity = time.monotonic()

    async def subscribe(self, channels: Collection[str]) -> None:
        new = [c for c in channels if c not in self._channels]
        if not new:
            return
        # Wanted from now on, even if this attempt fails: reconnect() retries it.
        self._channels.update(new)
        await self._subscribe(new)

    async def _subscribe(self, channels: Collection[str]) -> None:
        # Reading the confirmations makes subscribe() a barrier: once Redis
        # has confirmed, every later PUBLISH reaches us.
        waiting = set(channels)
        with translated():
            await self._pubsub.subscribe(*channels)
            deadline = time.monotonic() + _CONFIRM_TIMEOUT
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TransportError(
                        f"Redis did not confirm SUBSCRIBE within {_CONFIRM_TIMEOUT:g} s"
                    )
                message = await self._pubsub.get_message(timeout=remaining)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    waiting.discard(text(message["channel"]))
                elif message["type"] == "message":
                    self._early.append(message)

    async def unsubscribe(self, channels: Collection[str]) -> None:
        gone = [c for c in channels if c in self._channels]
        if not gone:
            return
        self._channels.difference_update(gone)
        with translated(self.description):
            await self._pubsub.unsubscribe(*gone)

    async def get(self, timeout: float) -> tuple[str, bytes] | None:
        if self._early:
            message: dict[str, Any] | None = self._early.pop(0)
        elif not self._channels:
            # Nothing subscribed: redis.asyncio would return at once.
            await asyncio.sleep(timeout)
            return None
        else:
            with translated():
                message = await self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        self.last_activity = time.monotonic()
        if message["type"] == "message":
            return text(message["channel"]), message["data"]
        if message["type"] == "subscribe":
            self._restored.confirmed(text(message["channel"]), set(self._channels))
        return None

    async def ping(self) -> None:
        with translated(self.description):
            await self._pubsub.ping()

    async def reconnect(self) -> None:
        await self.close()
        self._pubsub = self._client.pubsub()
        self._early.clear()
        self._restored = Restorations()
        if self._channels:
            await self._subscribe(sorted(self._channels))
        self.last_activity = time.monotonic()

    async def close(self) -> None:
        with suppress(*CONNECTION_ERRORS):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class AsyncRedisTransport(AsyncTransport, AsyncDurableLog, AsyncClaims, AsyncPresence):
    """
    Publish and subscribe through Redis from asyncio code.

    Arguments:

        url
            A redis-py URL, as for ``relay.transport.redis.RedisTransport``.
            Unless ``retry=`` is given, a failed command is retried once, at
            once; the bridge does the backing off.

        client
            An existing ``redis.asyncio.Redis`` to use instead of ``url``. Its
            ``decode_responses`` must be False: payloads are binary.

        options
            Extra keyword arguments for ``redis.asyncio.Redis.from_url``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        **options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise TypeError("pass either a Redis URL or client=redis.asyncio.Redis(...), not both")
        if client is None:
            assert url is not None
            options.setdefault("retry", redis.asyncio.retry.Retry(NoBackoff(), 1))
            try:
                client = redis.asyncio.Redis.from_url(url, **options)
            except ValueError as exc:
                raise ValueError(f"invalid Redis URL {url!r}: {exc}") from exc
        else:
            if not isinstance(client, redis.asyncio.Redis):
                raise TypeError(
                    f"client= must be a redis.asyncio.Redis, not {type(client).__qualname__}; "
                    "the threaded Relay takes a redis.Redis"
                )
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError(
                    "the Redis client decodes responses (decode_responses=True); relay "
                    "payloads are binary, so pass a client made with decode_responses=False"
                )
        self.client = client
        self.description = describe(client)  # type: ignore[arg-type]
        self.max_payload = MAX_PAYLOAD

    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        with translated(self.description):
            if log is None and len(items) == 1 and items[0].log is None:
                await self.client.publish(items[0].channel, items[0].data)
                return
            pipe = self.client.pipeline(transaction=False)
            queue_publish(pipe, items, log)
            await pipe.execute()

    async def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        with translated(self.description):
            entries: Any = await self.client.xrange(log.key, min=start, max="+", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    async def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        end = f"({before}" if before else "+"
        with translated(self.description):
            entries: Any = await self.client.xrevrange(log.key, max=end, min="-", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    async def get_value(self, key: str) -> str | None:
        with translated(self.description):
            value = await self.client.get(key)
        return None if value is None else text(value)

    async def set_value(self, key: str, value: str) -> None:
        with translated(self.description):
            await self.client.set(key, value)

    async def claim(self, key: str, ttl_seconds: float, leases: str | None = None) -> bool:
        with translated(self.description):
            client = self.client
            won = bool(await client.set(key, b"run", nx=True, px=milliseconds(ttl_seconds)))
            if won and leases is not None:
                await client.zadd(leases, {key: time.time() + ttl_seconds})
        return won

    async def renew(self, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_renew(pipe, keys, ttl_seconds, leases)
            await pipe.execute()

    async def finish(self, key: str, value: str, ttl_seconds: float, leases: str) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_finish(pipe, key, value, ttl_seconds, leases)
            await pipe.execute()

    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        with translated(self.description):
            return texts(await self.client.mget(keys))

    async def overdue(self, leases: str, before: float, count: int) -> list[str]:
        with translated(self.description):
            keys: Any = await self.client.zrangebyscore(leases, "-inf", before, start=0, num=count)
        return [text(key) for key in keys]

    async def discard(self, leases: str, key: str) -> bool:
        with translated(self.description):
            return bool(await self.client.zrem(leases, key))

    async def announce(self, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
        with translated(self.description):
            pipe = self.client.pipeline(transaction=False)
            queue_announce(pipe, key, member, data, ttl_seconds)
            await pipe.execute()

    async def members(self, key: str) -> dict[str, bytes]:
        with translated(self.description):
            found: Any = await self.client.hgetall(key)
        return {text(member): data for member, data in found.items()}

    async def forget(self, key: str, members: Sequence[str]) -> None:
        if members:
            with translated(self.description):
                await self.client.hdel(key, *members)

    def subscription(self) -> AsyncRedisSubscription:
        return AsyncRedisSubscription(self.client, self.description)

    async def check(self) -> None:
        with translated(self.description, reaching=True):
            await self.client.ping()

    def after_fork(self) -> None:
        # Forget (without closing) the parent's sockets: the child opens its own.
        self.client.connection_pool.reset()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self.client.aclose()


# -- the backend (see relay.transport.registry) --------------------------------------


def from_url(
    url: str, asynchronous: bool, options: dict[str, Any]
) -> RedisTransport | AsyncRedisTransport:
    """The transport for a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if asynchronous:
        return AsyncRedisTransport(url, **options)
    return RedisTransport(url, **options)


def from_client(client: Any, asynchronous: bool) -> RedisTransport | AsyncRedisTransport | None:
    """The transport around a ``redis.Redis`` (or ``redis.asyncio.Redis``), else None."""
    if isinstance(client, redis.asyncio.Redis):
        if not asynchronous:
            raise TypeError(
                "client= is a redis.asyncio.Redis: use it with relay.AsyncRelay; the threaded "
                "Relay takes a redis.Redis"
            )
        return AsyncRedisTransport(client=client)
    if isinstance(client, redis.Redis):
        if asynchronous:
            raise TypeError(
                "client= is a redis.Redis: AsyncRelay takes a redis.asyncio.Redis (the "
                "threaded Relay takes a redis.Redis)"
            )
        return RedisTransport(client=client)
    return None

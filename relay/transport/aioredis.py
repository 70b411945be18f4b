"""The Redis pub/sub transport for asyncio, on top of ``redis.asyncio``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from contextlib import suppress
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from relay.transport.base import (
    AsyncSubscription,
    AsyncTransport,
    Log,
    LogEntry,
    Outgoing,
    TransportError,
)
from relay.transport.redis import (
    CONNECTION_ERRORS,
    Restorations,
    describe,
    log_entry,
    milliseconds,
    queue_finish,
    queue_publish,
    queue_renew,
    text,
    texts,
    translated,
)

_CONFIRM_TIMEOUT = 10.0


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


class AsyncRedisTransport(AsyncTransport):
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
            options.setdefault("retry", Retry(NoBackoff(), 1))
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

    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        with translated(self.description):
            if log is None and len(items) == 1:
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

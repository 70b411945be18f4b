"""The Redis pub/sub transport, on top of redis-py."""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.transport.base import (
    Log,
    LogEntry,
    Outgoing,
    Subscription,
    Transport,
    TransportError,
)

CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


_CONFIRM_TIMEOUT = 10.0


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def log_entry(position: bytes | str, fields: dict[bytes, bytes]) -> LogEntry:
    return LogEntry(
        text(position),
        text(fields.get(b"c", b"")),
        fields.get(b"f", b""),
        text(fields.get(b"i", b"")),
    )


def queue_publish(pipe: Any, items: Sequence[Outgoing], log: Log | None) -> None:
    """Queue the commands that publish ``items`` (appending them to ``log``) on a pipeline."""
    for item in items:
        if log is not None:
            fields = {"c": item.channel, "f": item.data, "i": item.ids}
            pipe.xadd(log.key, fields, maxlen=log.max_entries, approximate=True)
        pipe.publish(item.channel, item.data)
    if log is not None and log.max_age_seconds is not None:
        oldest = int((time.time() - log.max_age_seconds) * 1000)
        pipe.xtrim(log.key, minid=str(oldest), approximate=True)


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        # NOPERM from an ACL, a read-only replica, ...: Redis refused.
        raise TransportError(f"Redis refused: {exc}") from exc


def describe(client: redis.Redis) -> str:
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"redis unix:{kwargs['path']} db={kwargs.get('db', 0)}"
    scheme = (
        "rediss" if client.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    )
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"


class RedisSubscription(Subscription):
    """A redis-py ``PubSub`` used by one listener thread."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._early: list[dict[str, Any]] = []
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
        with translated():
            self._pubsub.unsubscribe(*gone)

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        if self._early:
            message: dict[str, Any] | None = self._early.pop(0)
        else:
            with translated():
                message = self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        self.last_activity = time.monotonic()
        if message["type"] in ("message", "pmessage"):
            return text(message["channel"]), message["data"]
        return None

    def ping(self) -> None:
        with translated():
            self._pubsub.ping()

    def reconnect(self) -> None:
        self.close()
        self._pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        self._early.clear()
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


class RedisTransport(Transport):
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
        self._pid = os.getpid()

    def publish(self, channel: str, data: bytes) -> int:
        with translated():
            return int(self.client.publish(channel, data))

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        if log is None and len(items) == 1:
            self.publish(items[0].channel, items[0].data)
            return
        with translated():
            pipe = self.client.pipeline(transaction=False)
            queue_publish(pipe, items, log)
            pipe.execute()

    def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        with translated():
            entries: Any = self.client.xrange(log.key, min=start, max="+", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        end = f"({before}" if before else "+"
        with translated():
            entries: Any = self.client.xrevrange(log.key, max=end, min="-", count=count)
        return [log_entry(position, fields) for position, fields in entries]

    def get_value(self, key: str) -> str | None:
        with translated():
            value = self.client.get(key)
        return None if value is None else text(value)

    def set_value(self, key: str, value: str) -> None:
        with translated():
            self.client.set(key, value)

    def claim(self, key: str, ttl_seconds: float) -> bool:
        with translated():
            return bool(self.client.set(key, b"1", nx=True, px=max(1, int(ttl_seconds * 1000))))

    def subscription(self) -> RedisSubscription:
        return RedisSubscription(self.client)

    def check(self) -> None:
        with translated():
            self.client.ping()

    def after_fork(self) -> None:
        # redis-py's pool notices the new pid on its own; resetting it here
        # makes sure no socket of the parent's is ever written to.
        self.client.connection_pool.reset()
        self._pid = os.getpid()

    def close(self) -> None:
        self.client.close()

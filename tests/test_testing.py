"""Tests for relay.testing: FaultyProxy in front of a real redis-server, and
RedisServer's appendonly mode."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.testing import FaultyProxy, RedisServer, RedisServerUnavailable, free_port

pytestmark = pytest.mark.redis


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def client(url: str, timeout: float = 5.0, **kwargs: Any) -> redis.Redis:
    """A redis-py client that never retries, so faults show up as they happen."""
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=timeout,
        socket_connect_timeout=5.0,
        **kwargs,
    )


def subscribe(r: redis.Redis, channel: str) -> redis.client.PubSub:
    pubsub = r.pubsub()
    pubsub.subscribe(channel)
    message = pubsub.get_message(timeout=5.0)
    assert message is not None and message["type"] == "subscribe"
    return pubsub


def next_message(pubsub: redis.client.PubSub, timeout: float = 5.0) -> Any:
    """The next published message, ignoring anything else (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            return message["data"]
    return None


@pytest.fixture
def proxy(private_redis: RedisServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(private_redis.host, private_redis.port) as proxy:
        yield proxy


@pytest.fixture
def direct(private_redis: RedisServer) -> Iterator[redis.Redis]:
    with client(private_redis.url) as r:
        yield r


@pytest.fixture
def channel() -> str:
    return f"ch-{uuid.uuid4().hex[:8]}"


def test_url_and_port_are_known_before_start() -> None:
    proxy = FaultyProxy("127.0.0.1", 6379)
    try:
        assert proxy.port > 0
        assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
        assert proxy.connections == 0
    finally:
        proxy.close()
    proxy.close()  # twice is fine


def test_forwards_commands(proxy: FaultyProxy, direct: redis.Redis) -> None:
    with client(proxy.url) as r:
        assert r.set("k", "v")
        assert r.get("k") == b"v"
        assert direct.get("k") == b"v"
        assert proxy.connections == 1
    assert wait_for(lambda: proxy.connections == 0)


def test_forwards_large_values(proxy: FaultyProxy) -> None:
    value = os.urandom(3 * 1024 * 1024)  # more than the proxy buffers per direction
    with client(proxy.url) as r:
        assert r.set("big", value)
        assert r.get("big") == value


def test_pubsub_through_proxy(proxy: FaultyProxy, direct: redis.Redis, channel: str) -> None:
    with client(proxy.url) as r, subscribe(r, channel) as pubsub:
        assert direct.publish(channel, b"hello") == 1
        assert next_message(pubsub) == b"hello"


def test_blackhole_keeps_connections_open_but_silent(
    proxy: FaultyProxy, direct: redis.Redis, channel: str
) -> None:
    with (
        client(proxy.url, timeout=0.3) as r,
        client(proxy.url) as sub,
        subscribe(sub, channel) as pubsub,
    ):
        assert r.ping()
        assert direct.publish(channel, b"before") == 1
        assert next_message(pubsub) == b"before"

        proxy.blackhole()
        # Redis still sees the subscriber; the subscriber sees nothing, no error.
        assert direct.publish(channel, b"lost") == 1
        assert pubsub.get_message(timeout=0.5) is None
        assert proxy.connections == 2
        # The request goes out, the answer never comes: a timeout, not a failure.
        with pytest.raises(redis.TimeoutError):
            r.ping()

        # New connections are accepted, and black-holed too.
        with client(proxy.url, timeout=0.3) as late, pytest.raises(redis.TimeoutError):
            late.ping()


def test_heal_lets_new_connections_through_only(
    proxy: FaultyProxy, direct: redis.Redis, channel: str
) -> None:
    with client(proxy.url) as sub, subscribe(sub, channel) as pubsub:
        proxy.blackhole()
        proxy.heal()
        with client(proxy.url) as fresh:
            assert fresh.ping()
            assert fresh.set("after-heal", 1)
        assert direct.publish(channel, b"still lost") == 1
        assert pubsub.get_message(timeout=0.3) is None
        assert wait_for(lambda: proxy.connections == 1)  # the black-holed one, still open
        proxy.drop_all()
        with pytest.raises(redis.ConnectionError):
            pubsub.get_message(timeout=2.0)


def test_drop_all_resets_every_connection(
    proxy: FaultyProxy, direct: redis.Redis, channel: str
) -> None:
    conn = redis.Connection(host=proxy.host, port=proxy.port, socket_timeout=5.0)
    with client(proxy.url) as sub, subscribe(sub, channel) as pubsub:
        conn.connect()
        conn.send_command("PING")
        assert conn.read_response() == b"PONG"
        assert proxy.connections == 2
        proxy.drop_all()
        assert proxy.connections == 0
        # Redis saw the reset too (before redis-py's pubsub reconnects on its own).
        numsub = [(channel.encode(), 0)]
        assert wait_for(lambda: direct.pubsub_numsub(channel) == numsub)
        with pytest.raises(redis.ConnectionError):
            pubsub.get_message(timeout=2.0)
        with pytest.raises(redis.ConnectionError):
            conn.send_command("PING")  # may already fail here (reset), else:
            conn.read_response()
        conn.disconnect()
        # The proxy still takes new connections.
        with client(proxy.url) as fresh:
            assert fresh.ping()


def test_refuse_fails_new_connections_only(proxy: FaultyProxy) -> None:
    with client(proxy.url) as old:
        assert old.ping()
        proxy.refuse(True)
        with client(proxy.url) as new, pytest.raises(redis.ConnectionError):
            new.ping()
        assert old.ping()
        assert wait_for(lambda: proxy.connections == 1)
        proxy.refuse(False)
        with client(proxy.url) as new:
            assert new.ping()


def test_upstream_dying_closes_the_client(
    private_redis: RedisServer, proxy: FaultyProxy, channel: str
) -> None:
    with client(proxy.url) as sub, subscribe(sub, channel) as pubsub:
        private_redis.stop()
        with pytest.raises(redis.ConnectionError):
            pubsub.get_message(timeout=2.0)
        assert wait_for(lambda: proxy.connections == 0)
        with client(proxy.url) as r, pytest.raises(redis.ConnectionError):
            r.ping()  # the proxy accepts, upstream refuses, the client is closed
        private_redis.start()
        with client(proxy.url) as r:
            assert r.ping()


def test_unreachable_upstream() -> None:
    with FaultyProxy("127.0.0.1", free_port()) as proxy, client(proxy.url) as r:
        with pytest.raises(redis.ConnectionError):
            r.ping()
        assert wait_for(lambda: proxy.connections == 0)


def test_close_leaves_no_threads(private_redis: RedisServer, channel: str) -> None:
    before = threading.active_count()
    proxy = FaultyProxy(private_redis.host, private_redis.port).start()
    with client(proxy.url) as live, client(proxy.url) as sub, subscribe(sub, channel) as pubsub:
        assert live.ping()
        proxy.blackhole()
        with client(proxy.url, timeout=0.2) as dead, pytest.raises(redis.TimeoutError):
            dead.ping()
        assert threading.active_count() > before
        proxy.close()
        assert wait_for(lambda: threading.active_count() <= before)
        assert proxy.connections == 0
        with pytest.raises(redis.ConnectionError):
            pubsub.get_message(timeout=2.0)
    proxy.close()
    with pytest.raises(RuntimeError):
        proxy.start()


def test_controls_work_from_many_threads(proxy: FaultyProxy) -> None:
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(20):
                proxy.blackhole()
                proxy.heal()
                proxy.refuse(True)
                proxy.refuse(False)
                proxy.drop_all()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10.0)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    with client(proxy.url) as r:
        assert r.ping()


# -- RedisServer(appendonly=...) ---------------------------------------------


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    try:
        server = RedisServer(appendonly=True).start()
    except RedisServerUnavailable as exc:
        if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but no Redis server could be started: {exc}")
        pytest.skip(f"no redis-server: {exc}")
    with server:
        yield server


def test_appendonly_keeps_data_across_restart(durable_redis: RedisServer) -> None:
    with client(durable_redis.url) as r:
        assert r.set("durable", b"yes")
    durable_redis.restart()  # a kill: only what is on disk survives
    with client(durable_redis.url) as r:
        assert r.get("durable") == b"yes"


def test_default_forgets_everything_on_restart(private_redis: RedisServer) -> None:
    with client(private_redis.url) as r:
        assert r.set("volatile", b"yes")
    private_redis.restart()
    with client(private_redis.url) as r:
        assert r.get("volatile") is None

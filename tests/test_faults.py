"""Connection faults against a real Redis, through a fault-injecting proxy."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from relay import Relay, Signal, wire
from relay.bridge import channel_for, disconnected, reconnected
from relay.testing import FaultyProxy, RedisServer

pytestmark = pytest.mark.redis


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


class _Fast:
    def compute(self, failures: int) -> float:
        return 0.05


def foreign(name: str, seq: int, n: int) -> bytes:
    return wire.encode_frame(
        [
            (
                os.urandom(16),
                "faraway:9:ffff",
                seq,
                name,
                None,
                time.time(),
                wire.encode_kwargs({"n": n}),
            )
        ]
    )


def test_a_half_open_connection_is_noticed_and_replaced(
    private_redis: RedisServer, namespace: str
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(signal: Signal, sender: Any, **kwargs: Any) -> None:
        events.append((signal.name or "", kwargs))

    got: list[int] = []
    sig = Signal(name="faults.ping")
    sig.connect(lambda sender, n, **kw: got.append(n), weak=False)
    direct = redis.Redis.from_url(private_redis.url)
    with (
        FaultyProxy("127.0.0.1", private_redis.port) as proxy,
        disconnected.connected_to(on_event),
        reconnected.connected_to(on_event),
    ):
        bridge = Relay(
            proxy.url,
            namespace=namespace,
            health_check_interval=0.3,
            health_check_timeout=0.3,
            backoff=_Fast(),
            socket_connect_timeout=1,
        )
        bridge.register(sig)
        with bridge:
            direct.publish(channel_for(namespace, "faults.ping"), foreign("faults.ping", 1, 1))
            wait_until(lambda: got == [1])
            proxy.blackhole()  # the socket stays open; nothing comes through any more
            wait_until(lambda: bridge.stats()["disconnects"] == 1)
            proxy.heal()
            wait_until(lambda: bridge.stats()["reconnects"] == 1)
            direct.publish(channel_for(namespace, "faults.ping"), foreign("faults.ping", 2, 2))
            wait_until(lambda: got == [1, 2])
    direct.close()
    names = [name for name, _ in events]
    assert names[:1] == ["relay.disconnected"] and "relay.reconnected" in names
    assert "half-open" in events[0][1]["reason"]


def test_publisher_resumes_in_order_after_a_network_reset(
    private_redis: RedisServer, namespace: str
) -> None:
    sig = Signal(name="faults.order")
    received: list[int] = []
    pubsub = redis.Redis.from_url(private_redis.url).pubsub()
    pubsub.subscribe(channel_for(namespace, "faults.order"))
    with FaultyProxy("127.0.0.1", private_redis.port) as proxy:
        bridge = Relay(proxy.url, namespace=namespace, backoff=_Fast())
        bridge.register(sig)
        with bridge:
            for n in range(5):
                sig.send(None, n=n)
            assert bridge.flush(30)
            proxy.refuse(True)
            proxy.drop_all()
            for n in range(5, 10):
                sig.send(None, n=n)  # queued while Redis cannot be reached
            proxy.refuse(False)
            assert bridge.flush(30)
    deadline = time.monotonic() + 30
    while len(received) < 10 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "message":
            received.extend(m.kwargs["n"] for m in wire.decode_frame(message["data"]))
    pubsub.close()
    assert received == list(range(10))
    assert bridge.stats()["dropped"] == 0

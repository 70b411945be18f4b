"""Connection faults against a real Redis, through a fault-injecting proxy."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from relay import Relay, Signal, wire
from relay.bridge import channel_for, disconnected, gap, reconnected
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


def logged_publisher(
    url: str, namespace: str, durable: bool, live: bool = True
) -> Callable[[str, int], None]:
    """
    Publish another process's frames, numbered as given, appending them to the
    log if durable; with ``live=False``, only to the log.
    """
    from relay.transport import Log, Outgoing
    from relay.transport.redis import RedisTransport

    transport = RedisTransport(url)
    log = Log(f"relay:{namespace}:log", 100_000) if durable else None
    started = time.time()

    def publish(name: str, seq: int) -> None:
        data = wire.encode_frame(
            [
                (
                    os.urandom(16),
                    "faraway:9:ffff",
                    seq,
                    name,
                    None,
                    time.time(),
                    wire.encode_kwargs({"n": seq}),
                )
            ],
            started_at=started,
        )
        item = Outgoing(channel_for(namespace, name), data, "", "faraway:9:ffff", seq)
        if live:
            transport.publish_many([item], log)
        else:
            assert log is not None
            transport.client.xadd(
                log.key, {"c": item.channel, "f": item.data, "i": "", "o": item.origin, "q": seq}
            )

    return publish


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_redis_closing_the_subscriber_while_staying_up_is_a_reconnect(
    private_redis: RedisServer, namespace: str, durable: bool
) -> None:
    """
    CLIENT KILL while the listener is busy in a receiver: redis-py reconnects
    and subscribes again by itself, and the messages sent meanwhile never
    arrive. relay counts it as a reconnect, sends the signals and, durable,
    fires what was lost from the log; in pub/sub mode it reports the loss.
    """
    events: list[str] = []
    lost_reported: list[tuple[int, int]] = []
    busy = threading.Event()
    release = threading.Event()
    got: list[int] = []

    def receive(sender: Any, n: int, **kwargs: Any) -> None:
        got.append(n)
        if n == 3:
            busy.set()
            release.wait(30)

    sig = Signal(name="faults.kill")
    sig.connect(receive, weak=False)
    publish = logged_publisher(private_redis.url, namespace, durable)
    direct = redis.Redis.from_url(private_redis.url)
    with (
        disconnected.connected_to(lambda sender, **kw: events.append("disconnected")),
        reconnected.connected_to(lambda sender, **kw: events.append("reconnected")),
        gap.connected_to(
            lambda sender, first_missing, count, **kw: lost_reported.append((first_missing, count))
        ),
    ):
        bridge = Relay(private_redis.url, namespace=namespace, durable=durable, backoff=_Fast())
        bridge.register(sig)
        with bridge:
            for seq in (1, 2, 3):
                publish("faults.kill", seq)
            assert busy.wait(30)
            assert direct.client_kill_filter(_type="pubsub") == 1
            for seq in (4, 5, 6):
                publish("faults.kill", seq)  # nobody is subscribed: lost on the wire
            release.set()
            wait_until(lambda: bridge.stats()["reconnects"] == 1)
            publish("faults.kill", 7)
            wait_until(lambda: 7 in got)
            stats = bridge.stats()
    direct.close()
    assert (stats["disconnects"], stats["reconnects"]) == (1, 1)
    assert events == ["disconnected", "reconnected"]
    if durable:
        assert got == [1, 2, 3, 4, 5, 6, 7]
        assert (stats["replayed"], stats["gaps"], stats["missed"]) == (3, 0, 0)
    else:
        assert got == [1, 2, 3, 7]
        assert lost_reported == [(4, 3)]
        assert (stats["gaps"], stats["missed"]) == (1, 3)


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_losing_an_origins_first_messages_is_noticed(
    private_redis: RedisServer, namespace: str, durable: bool
) -> None:
    """
    An origin that started numbering after this process subscribed must be
    heard from number 1: a first message heard at 4 means 1-3 were lost.
    """
    got: list[int] = []
    lost_reported: list[tuple[int, int]] = []
    sig = Signal(name="faults.first")
    sig.connect(lambda sender, n, **kw: got.append(n), weak=False)
    with gap.connected_to(
        lambda sender, first_missing, count, **kw: lost_reported.append((first_missing, count))
    ):
        bridge = Relay(private_redis.url, namespace=namespace, durable=durable, clock_skew=0.2)
        bridge.register(sig)
        with bridge:
            time.sleep(0.5)  # the origin starts numbering well after we subscribed
            publish = logged_publisher(private_redis.url, namespace, durable)
            if durable:
                # 1-3 reached the log, but their PUBLISH never reached us.
                log_only = logged_publisher(private_redis.url, namespace, durable, live=False)
                for seq in (1, 2, 3):
                    log_only("faults.first", seq)
            publish("faults.first", 4)
            wait_until(lambda: 4 in got)
            publish("faults.first", 5)
            wait_until(lambda: 5 in got)
            stats = bridge.stats()
    if durable:
        assert got == [1, 2, 3, 4, 5]
        # 4 revealed the loss: it was fired from the log too, after 1-3.
        assert (stats["replayed"], stats["gaps"]) == (4, 0)
    else:
        assert got == [4, 5]
        assert lost_reported == [(1, 3)]
        assert (stats["gaps"], stats["missed"]) == (1, 3)


def test_an_origin_heard_late_that_started_before_us_is_no_loss(
    private_redis: RedisServer, namespace: str
) -> None:
    publish = logged_publisher(private_redis.url, namespace, False)  # numbering starts now
    time.sleep(0.3)
    got: list[int] = []
    sig = Signal(name="faults.late")
    sig.connect(lambda sender, n, **kw: got.append(n), weak=False)
    bridge = Relay(private_redis.url, namespace=namespace, clock_skew=0.1)
    bridge.register(sig)
    with bridge:
        publish("faults.late", 40)  # 1-39 went out before we listened
        publish("faults.late", 41)
        wait_until(lambda: got == [40, 41])
        assert (bridge.stats()["gaps"], bridge.stats()["missed"]) == (0, 0)

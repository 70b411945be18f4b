"""The transport seam: the scheme registry, client detection, capabilities, Sentinel URLs."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
import redis.sentinel

from relay import AsyncRelay, Relay, Signal
from relay.transport import registry
from relay.transport.base import Log, Outgoing, Subscription, Transport
from relay.transport.redis import AsyncRedisTransport, RedisTransport
from relay.transport.sentinel import SentinelTransport, parse_url


class PubSubOnly(Transport):
    """A broker that can only publish and subscribe: no log, no claims."""

    description = "memory://"
    max_payload = 1 << 20

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        pass

    def subscription(self) -> Subscription:
        return _NoSubscription()

    def check(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


class _NoSubscription(Subscription):
    last_activity = 0.0

    def subscribe(self, channels: Collection[str]) -> None:
        pass

    def unsubscribe(self, channels: Collection[str]) -> None:
        pass

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        return None

    def ping(self) -> None:
        pass

    def reconnect(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_every_documented_scheme_has_a_backend() -> None:
    assert {
        "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
        "rediss+cluster",
    } <= set(registry.schemes())  # fmt: skip


def test_a_url_picks_its_backend_and_an_unknown_scheme_is_a_clear_error() -> None:
    assert (
        type(registry.transport_for("redis://127.0.0.1:1/0", None, asynchronous=False, options={}))
        is RedisTransport
    )
    assert (
        type(registry.transport_for("unix:///tmp/x.sock", None, asynchronous=True, options={}))
        is AsyncRedisTransport
    )
    sentinel = registry.transport_for(
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", None, asynchronous=False, options={}
    )
    assert type(sentinel) is SentinelTransport
    assert sentinel.description == "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/0"
    with pytest.raises(
        ValueError, match=r"unknown scheme 'kafka'; use redis://.*redis\+sentinel://"
    ):
        Relay("kafka://broker:9092", namespace="ns")


def test_a_client_picks_its_backend_and_the_wrong_kind_says_so() -> None:
    assert type(Relay(client=fakeredis.FakeRedis(), namespace="ns").transport) is RedisTransport
    master = redis.sentinel.Sentinel([("127.0.0.1", 1)]).master_for("svc")
    assert type(Relay(client=master, namespace="ns").transport) is SentinelTransport
    with pytest.raises(TypeError, match=r"AsyncRelay takes a redis\.asyncio\.Redis"):
        AsyncRelay(client=redis.Redis(), namespace="ns")
    with pytest.raises(TypeError, match=r"use it with relay\.AsyncRelay"):
        Relay(client=redis.asyncio.Redis(), namespace="ns")
    with pytest.raises(TypeError, match=r"client= must be a redis\.Redis"):
        Relay(client=object(), namespace="ns")


def test_durable_mode_and_once_receivers_need_their_capabilities() -> None:
    with pytest.raises(TypeError, match="durable=True needs a transport with a durable log"):
        Relay(transport=PubSubOnly(), namespace="ns", durable=True)
    bridge = Relay(transport=PubSubOnly(), namespace="ns")
    sig = bridge.register(Signal(name="a.b"))

    def job(sender: Any, **kwargs: Any) -> None:
        pass

    with pytest.raises(TypeError, match="scope='once' needs a transport with claims"):
        sig.connect(job, scope="once", dispatch_uid="job")
    assert sig.receivers == []  # refused before anything was connected
    sig.connect(job, dispatch_uid="job")  # other scopes are fine
    other = Signal(name="c.d")
    other.connect(job, scope="once", dispatch_uid="job")
    with pytest.raises(TypeError, match=r"signal 'c\.d' has scope='once' receivers"):
        bridge.register(other)
    bridge.close()


def test_max_message_size_must_fit_the_broker() -> None:
    with pytest.raises(ValueError, match="over the largest payload the broker takes"):
        Relay(transport=PubSubOnly(), namespace="ns", max_message_size=2 << 20)


@pytest.mark.parametrize(
    ("url", "sentinels", "service", "options", "sentinel_options"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster",
            [("s1", 26379), ("s2", 26380)],
            "mymaster",
            {},
            {},
        ),
        (
            "redis+sentinel://app:p%40ss@s1,s2:5000/cache/3?sentinel_password=sp&socket_timeout=2",
            [("s1", 26379), ("s2", 5000)],
            "cache",
            {"username": "app", "password": "p@ss", "db": 3, "socket_timeout": 2.0},
            {"password": "sp", "socket_timeout": 2.0},
        ),
        (
            "rediss+sentinel://:pw@[::1]:26379/svc?sentinel_username=watch",
            [("::1", 26379)],
            "svc",
            {"password": "pw", "ssl": True},
            {"username": "watch", "ssl": True},
        ),
    ],
)
def test_sentinel_urls(
    url: str,
    sentinels: list[tuple[str, int]],
    service: str,
    options: dict[str, Any],
    sentinel_options: dict[str, Any],
) -> None:
    parsed = parse_url(url)
    assert parsed.sentinels == sentinels
    assert parsed.service == service
    assert parsed.options == options
    assert parsed.sentinel_options == sentinel_options
    assert "p@ss" not in parsed.description and "pw" not in parsed.description


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://s1:26379", "the service name is missing"),
        ("redis+sentinel://s1:x/svc", "'s1:x' is not host:port"),
        ("redis+sentinel://s1/svc/db", "the path must be /service_name or /service_name/db"),
        ("redis+sentinel://s1/svc?colour=red", "unknown option 'colour'"),
        ("redis+sentinel://s1/svc?socket_timeout=soon", "bad value for option 'socket_timeout'"),
        ("redis+sentinel://u:secret@s1:x/svc", "'s1:x' is not host:port"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid Sentinel URL") as error:
        parse_url(url)
    assert why in str(error.value)
    assert "secret" not in str(error.value)


class ShardedFake(RedisTransport):
    """A one-server transport that names keys as a Redis Cluster's would (hash tags)."""

    sharded = True


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_sharded_transport_puts_every_key_of_a_signal_under_its_hash_tag() -> None:
    import time

    import fakeredis

    from relay import wire
    from relay.core import channel_for

    client = fakeredis.FakeRedis()
    transport = ShardedFake(client=client)
    channel = channel_for("ns", "a.b", sharded=True)
    assert channel == "relay:ns:{a.b}" and channel_for("ns", "a.b") == "relay:ns:a.b"
    log = Log("relay:ns:log:{a.b}", 1000)
    fired: list[int] = []
    signal = Signal(name="a.b")
    signal.connect(
        lambda sender, n, **kw: fired.append(n), weak=False, dispatch_uid="r", scope="once"
    )
    bridge = Relay(transport=transport, namespace="ns", durable=True, worker_id="w1")
    bridge.register(signal)
    with pytest.raises(ValueError, match="hash tag"):
        bridge.register(Signal(name="x.{y}"))

    def foreign(seq: int) -> Outgoing:
        message_id = (1000 + seq).to_bytes(16, "big")
        kwargs = wire.encode_kwargs({"n": seq})
        frame = wire.encode_frame([(message_id, "far:1:ab", seq, "a.b", None, time.time(), kwargs)])
        return Outgoing(channel, frame, message_id.hex(), "far:1:ab", seq, log)

    with bridge:
        _wait(lambda: bridge._verified is not None)
        signal.send(None, n=0)  # its own: only the once receiver fires, after claiming
        transport.publish_many([foreign(1)])
        _wait(lambda: sorted(fired) == [0, 1])
    transport.publish_many([foreign(2)])  # logged while the bridge is stopped
    with bridge:
        _wait(lambda: sorted(fired) == [0, 1, 2])  # caught up from the signal's own log
    keys = {key.decode() for key in client.keys("*")}
    assert "relay:ns:log" not in keys and "relay:ns:once:leases" not in keys
    assert {"relay:ns:log:{a.b}", "relay:ns:cursor:w1:{a.b}"} <= keys
    claims = {key for key in keys if key.startswith("relay:ns:once:{a.b}:")}
    assert len(claims) == 3 and all(key.endswith(":r") for key in claims)
    assert client.get("relay:ns:cursor:w1:{a.b}") == (1002).to_bytes(16, "big").hex().encode()
    bridge.close()

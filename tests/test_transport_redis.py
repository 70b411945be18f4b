"""The Redis transport on fakeredis: subscribing, publishing, reconnecting."""

from __future__ import annotations

import time

import fakeredis
import pytest

from relay.transport import Log, Outgoing, Subscription, TransportError
from relay.transport.redis import RedisTransport


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def transport(server: fakeredis.FakeServer) -> RedisTransport:
    return RedisTransport(client=fakeredis.FakeRedis(server=server))


def drain(subscription: Subscription, quiet: float = 0.3) -> list[tuple[str, bytes]]:
    """Every message until none has come for ``quiet`` seconds."""
    got = []
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        item = subscription.get(0.05)
        if item is not None:
            got.append(item)
            last = time.monotonic()
    return got


def test_subscribe_is_a_barrier_and_messages_arrive_in_order(transport: RedisTransport) -> None:
    subscription = transport.subscription()
    subscription.subscribe(["a", "b"])
    # No wait needed: subscribe() returned after the server confirmed.
    assert transport.publish("a", b"1") == 1
    transport.publish_many(
        [Outgoing("b", b"2"), Outgoing("a", b"3"), Outgoing("c", b"not subscribed")]
    )
    assert drain(subscription) == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    subscription.unsubscribe(["a"])
    transport.publish_many([Outgoing("a", b"4"), Outgoing("b", b"5")])
    assert drain(subscription) == [("b", b"5")]
    subscription.close()
    subscription.close()


def test_reconnect_keeps_every_channel_even_after_failed_attempts(
    server: fakeredis.FakeServer, transport: RedisTransport
) -> None:
    subscription = transport.subscription()
    subscription.subscribe(["a", "b"])
    server.connected = False
    with pytest.raises(TransportError):
        subscription.get(0.1)
    for _ in range(3):  # Redis still down: each attempt fails
        with pytest.raises(TransportError):
            subscription.reconnect()
    with pytest.raises(TransportError):
        subscription.subscribe(["c"])  # wanted, though it could not be sent
    server.connected = True
    subscription.reconnect()
    transport.publish_many([Outgoing("a", b"1"), Outgoing("b", b"2"), Outgoing("c", b"3")])
    assert drain(subscription) == [("a", b"1"), ("b", b"2"), ("c", b"3")]


def test_publish_errors_are_transport_errors(
    server: fakeredis.FakeServer, transport: RedisTransport
) -> None:
    server.connected = False
    with pytest.raises(TransportError):
        transport.publish("a", b"x")
    with pytest.raises(TransportError):
        transport.publish_many([Outgoing("a", b"x"), Outgoing("b", b"y")])
    with pytest.raises(TransportError):
        transport.check()
    server.connected = True
    transport.check()


def test_construction_errors_and_description() -> None:
    with pytest.raises(ValueError, match="invalid Redis URL 'ftp://x'"):
        RedisTransport("ftp://x")
    with pytest.raises(TypeError, match="not both"):
        RedisTransport("redis://x", client=fakeredis.FakeRedis())
    with pytest.raises(ValueError, match="decode_responses"):
        RedisTransport(client=fakeredis.FakeRedis(decode_responses=True))
    assert RedisTransport("redis://user:secret@db.example:6390/3").description == (
        "redis://db.example:6390/3"
    )
    assert "secret" not in RedisTransport("rediss://:secret@db.example").description
    assert RedisTransport("rediss://db.example").description.startswith("rediss://")
    assert RedisTransport("unix:///run/redis.sock?db=2").description == (
        "redis unix:/run/redis.sock db=2"
    )


def test_durable_log_keeps_published_payloads_in_order(transport: RedisTransport) -> None:
    log = Log("relay:ns:log", max_entries=1000)
    transport.publish_many(
        [Outgoing("a", b"1", "id1"), Outgoing("b", b"2", "id2,id3"), Outgoing("a", b"3", "id4")],
        log,
    )
    entries = transport.read_log(log, None, 10)
    assert [(e.channel, e.data, e.ids) for e in entries] == [
        ("a", b"1", "id1"),
        ("b", b"2", "id2,id3"),
        ("a", b"3", "id4"),
    ]
    assert transport.read_log(log, entries[0].position, 1) == [entries[1]]
    assert transport.read_log_backwards(log, None, 2) == [entries[2], entries[1]]
    assert transport.read_log_backwards(log, entries[1].position, 5) == [entries[0]]
    assert transport.read_log(log, entries[2].position, 5) == []


def test_claims_are_exclusive_and_values_round_trip(transport: RedisTransport) -> None:
    assert transport.claim("relay:ns:once:x", 60) is True
    assert transport.claim("relay:ns:once:x", 60) is False
    assert transport.get_value("relay:ns:cursor:w") is None
    transport.set_value("relay:ns:cursor:w", "abc")
    assert transport.get_value("relay:ns:cursor:w") == "abc"


def test_a_refusal_from_redis_is_a_transport_error(
    server: fakeredis.FakeServer, transport: RedisTransport
) -> None:
    transport.client.set("relay:ns:cursor:w", "x")
    with pytest.raises(TransportError, match="Redis refused"):
        transport.read_log(Log("relay:ns:cursor:w", 10), None, 1)  # not a stream: WRONGTYPE

"""
Reliability and security of the bridge, on fakeredis: gap detection, the
disconnected/reconnected signals, durable catch-up, scope="once" and signing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from relay import Relay, Signal, current_message, wire
from relay import origin as relay_origin
from relay.bridge import channel_for, disconnected, gap, reconnected, signing_key
from relay.origin import origin_id
from relay.transport import Log, Outgoing, TransportError
from relay.transport.redis import RedisTransport

FOREIGN = "elsewhere:1:abcd"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


_ids = iter(range(1 << 40, 1 << 41))


def frame(
    name: str,
    seq: int,
    origin: str = FOREIGN,
    key: bytes | None = None,
    sent_at: float | None = None,
    **kwargs: Any,
) -> tuple[bytes, str]:
    """A frame as another process would publish it, and its message id."""
    message_id = next(_ids).to_bytes(16, "big")
    data = wire.encode_frame(
        [
            (
                message_id,
                origin,
                seq,
                name,
                None,
                time.time() if sent_at is None else sent_at,
                wire.encode_kwargs(kwargs),
            )
        ],
        key=key,
    )
    return data, message_id.hex()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, signal: Signal, sender: Any, **kwargs: Any) -> None:
        self.calls.append(
            {"signal": signal, "sender": sender, "message": current_message(), **kwargs}
        )

    def numbers(self) -> list[Any]:
        return [c.get("n") for c in self.calls]


@pytest.fixture
def events() -> Iterator[Recorder]:
    """What the built-in signals were sent with."""
    recorder = Recorder()
    with (
        disconnected.connected_to(recorder),
        reconnected.connected_to(recorder),
        gap.connected_to(recorder),
    ):
        yield recorder


def make_bridge(client: fakeredis.FakeRedis, **options: Any) -> Relay:
    options.setdefault("backoff", _Fast())
    return Relay(client=client, namespace="ns", **options)


class _Fast:
    def compute(self, failures: int) -> float:
        return 0.01


# -- gaps ----------------------------------------------------------------------


def test_a_jump_in_an_origins_sequence_is_reported_once(
    client: fakeredis.FakeRedis, events: Recorder
) -> None:
    bridge = make_bridge(client)
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with bridge:
        for seq in (1, 2, 5, 6):
            client.publish(channel_for("ns", "a.b"), frame("a.b", seq, n=seq)[0])
        # A new origin (a restarted process) starting anywhere is not a gap.
        client.publish(channel_for("ns", "a.b"), frame("a.b", 40, origin="other:2:ef", n=40)[0])
        wait_until(lambda: len(rec.calls) == 5)
    gaps = [c for c in events.calls if c["signal"] is gap]
    assert len(gaps) == 1
    (reported,) = gaps
    assert (reported["origin"], reported["signal_name"]) == (FOREIGN, "a.b")
    assert (reported["first_missing"], reported["count"]) == (3, 2)
    assert reported["sender"] is bridge
    stats = bridge.stats()
    assert (stats["gaps"], stats["missed"]) == (1, 2)


# -- connection faults ---------------------------------------------------------


def test_disconnect_and_reconnect_are_signalled_and_counted(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, events: Recorder
) -> None:
    bridge = make_bridge(client)
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with bridge:
        server.connected = False
        wait_until(lambda: any(c["signal"] is disconnected for c in events.calls))
        server.connected = True
        wait_until(lambda: any(c["signal"] is reconnected for c in events.calls))
        # Subscribed again: a send from elsewhere arrives.
        client.publish(channel_for("ns", "a.b"), frame("a.b", 1, n=1)[0])
        wait_until(lambda: rec.numbers() == [1])
    (down,) = [c for c in events.calls if c["signal"] is disconnected]
    (up,) = [c for c in events.calls if c["signal"] is reconnected]
    assert down["sender"] is bridge and "ConnectionError" in down["reason"]
    assert up["reason"] == down["reason"] and up["downtime"] >= 0
    stats = bridge.stats()
    assert (stats["disconnects"], stats["reconnects"]) == (1, 1)


def test_a_silent_connection_is_pinged_and_replaced(
    client: fakeredis.FakeRedis, events: Recorder
) -> None:
    bridge = make_bridge(client, health_check_interval=0.05, health_check_timeout=0.05)
    sig = bridge.register(Signal(name="a.b"))
    sig.connect(Recorder(), weak=False)
    with bridge:
        subscription = bridge._subscription
        assert subscription is not None
        # Swallow the PINGs: the connection stays open but nothing answers.
        subscription.ping = lambda: None  # type: ignore[method-assign]
        wait_until(lambda: bridge.stats()["reconnects"] >= 1)
    (down, *_) = [c for c in events.calls if c["signal"] is disconnected]
    assert "no reply to PING" in down["reason"]


def test_giving_up_is_loud(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = make_bridge(client, max_reconnect_attempts=3)
    bridge.register(Signal(name="a.b")).connect(Recorder(), weak=False)
    with caplog.at_level(logging.WARNING, logger="relay"):
        bridge.start()
        server.connected = False
        assert bridge._listener is not None
        bridge._listener.join(10)
        assert not bridge._listener.is_alive()
    bridge.stop()
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "gave up after 3 reconnection attempts" in record.getMessage()


# -- durable mode --------------------------------------------------------------


LOG = Log("relay:ns:log", 100_000)


def append_missed(client: fakeredis.FakeRedis, name: str, seq: int, n: int) -> None:
    """A message published while this process was not listening: in the log only."""
    data, message_id = frame(name, seq, n=n)
    client.xadd(LOG.key, {"c": channel_for("ns", name), "f": data, "i": message_id})


def publish_durably(client: fakeredis.FakeRedis, name: str, seq: int, n: int) -> None:
    data, message_id = frame(name, seq, n=n)
    RedisTransport(client=client).publish_many(
        [Outgoing(channel_for("ns", name), data, message_id)], LOG
    )


def test_durable_listener_fires_what_it_missed_in_order_without_duplicates(
    server: fakeredis.FakeServer, client: fakeredis.FakeRedis, events: Recorder
) -> None:
    append_missed(client, "a.b", 1, n=-1)  # before the bridge started: not replayed
    bridge = make_bridge(client, durable=True)
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with bridge:
        wait_until(lambda: bridge._verified is not None)
        publish_durably(client, "a.b", 2, n=0)
        wait_until(lambda: rec.numbers() == [0])
        subscription = bridge._subscription
        assert subscription is not None
        reconnect = subscription.reconnect
        allowed = threading.Event()

        def gated_reconnect() -> None:
            if not allowed.is_set():
                raise TransportError("still away (test)")
            reconnect()

        subscription.reconnect = gated_reconnect  # type: ignore[method-assign]
        server.connected = False
        wait_until(lambda: bridge.stats()["disconnects"] == 1)
        server.connected = True
        for seq, n in ((3, 1), (4, 2), (5, 3)):
            append_missed(client, "a.b", seq, n)  # sent while we were away: not heard live
        allowed.set()
        wait_until(lambda: bridge.stats()["reconnects"] == 1)
        publish_durably(client, "a.b", 6, n=4)
        wait_until(lambda: len(rec.calls) >= 5)
    assert rec.numbers() == [0, 1, 2, 3, 4]
    stats = bridge.stats()
    assert stats["replayed"] == 3
    assert stats["gaps"] == 0  # what the log filled in was never lost


def test_a_restarted_worker_resumes_where_it_stopped(client: fakeredis.FakeRedis) -> None:
    first = make_bridge(client, durable=True, worker_id="w1")
    sig = first.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with first:
        wait_until(lambda: first._verified is not None)
        publish_durably(client, "a.b", 1, n=1)
        wait_until(lambda: rec.numbers() == [1])
    first.close()
    for seq in (2, 3, 4):
        append_missed(client, "a.b", seq, n=seq)  # sent while the worker was down
    relay_origin.accepted.forget_all()  # as a new process would
    second = make_bridge(client, durable=True, worker_id="w1")
    second.register(sig)
    with second:
        wait_until(lambda: len(rec.calls) == 4)
    assert rec.numbers() == [1, 2, 3, 4]
    # Without a worker_id a process starts from now.
    relay_origin.accepted.forget_all()
    third = make_bridge(client, durable=True)
    other = third.register(Signal(name="c.d"))
    other.connect(rec, weak=False)
    with third:
        wait_until(lambda: third._verified is not None)
    assert rec.numbers() == [1, 2, 3, 4]


# -- scope="once" --------------------------------------------------------------


def once_receiver(sender: Any, **kwargs: Any) -> None:
    once_calls.append((kwargs.get("n"), current_message() is not None))


once_calls: list[tuple[Any, bool]] = []


def test_once_receivers_never_run_in_the_local_send_and_run_once_per_send(
    client: fakeredis.FakeRedis,
) -> None:
    once_calls.clear()
    bridge = make_bridge(client)
    sig = bridge.register(Signal(name="a.b"))
    sig.connect(once_receiver, scope="once")
    with bridge:
        assert sig.send(None, n=1) == []  # not in the synchronous local send
        assert once_calls == []
        # ...but this process's own listener may claim it.
        wait_until(lambda: once_calls == [(1, True)])
        data, _ = frame("a.b", 1, n=2)
        client.publish(channel_for("ns", "a.b"), data)
        client.publish(channel_for("ns", "a.b"), data)  # the same message again
        wait_until(lambda: len(once_calls) == 2)
        assert bridge.flush(10)
    assert once_calls == [(1, True), (2, True)]
    # A claim another process already took is skipped.
    data, message_id = frame("a.b", 2, n=3)
    client.set(f"relay:ns:once:{message_id}:{__name__}.once_receiver", b"1")
    with bridge:
        client.publish(channel_for("ns", "a.b"), data)
        wait_until(lambda: bridge.stats()["once_skipped"] == 1)
    assert len(once_calls) == 2


def test_once_needs_a_stable_name() -> None:
    sig = Signal(name="a.b")
    with pytest.raises(ValueError, match="scope='once' needs a dispatch_uid"):
        sig.connect(lambda **kw: None, scope="once", weak=False)

    def local_function(**kwargs: Any) -> None:
        pass

    with pytest.raises(ValueError, match="module level"):
        sig.connect(local_function, scope="once")
    sig.connect(local_function, scope="once", dispatch_uid="named")  # a uid is enough


# -- signing -------------------------------------------------------------------


def test_with_a_secret_only_well_signed_recent_messages_fire(
    client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    new, old, other = (signing_key("ns", s) for s in ("new", "old", "other"))
    bridge = make_bridge(client, secrets=["new", "old"], replay_window=60)
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    channel = channel_for("ns", "a.b")
    with caplog.at_level(logging.WARNING, logger="relay"), bridge:
        client.publish(channel, frame("a.b", 1, n=0)[0])  # unsigned
        client.publish(channel, frame("a.b", 2, key=other, n=0)[0])  # wrong key
        client.publish(channel, frame("a.b", 3, key=new, sent_at=time.time() - 600, n=0)[0])
        client.publish(channel, frame("a.b", 4, key=new, n=1)[0])
        client.publish(channel, frame("a.b", 5, key=old, n=2)[0])  # rotation: still accepted
        wait_until(lambda: len(rec.calls) == 2)
    assert rec.numbers() == [1, 2]
    assert bridge.stats()["rejected"] == 3
    assert "bad signature" in caplog.text and "unsigned" in caplog.text
    assert "replay window" in caplog.text


def test_signed_bridges_talk_to_each_other(client: fakeredis.FakeRedis) -> None:
    sender = make_bridge(client, secret="s3cret", publish="sync")
    sig = sender.register(Signal(name="a.b"))
    pubsub = client.pubsub()
    pubsub.subscribe(channel_for("ns", "a.b"))
    sig.send(None, n=1)
    messages = [m for m in iter(lambda: pubsub.get_message(timeout=1), None)]
    data = next(m["data"] for m in messages if m["type"] == "message")
    (message,) = wire.decode_frame(data, keys=[signing_key("ns", "s3cret")])
    with pytest.raises(wire.WireError, match="bad signature"):  # another namespace's key
        wire.decode_frame(data, keys=[signing_key("other", "s3cret")])
    assert message.kwargs == {"n": 1} and message.origin == origin_id()
    with pytest.raises(wire.WireError, match="signed frame but no secret"):
        wire.decode_frame(data)
    with pytest.raises(TypeError, match="not both"):
        make_bridge(client, secret="a", secrets=["b"])


def test_a_bridge_that_only_sends_is_never_taken_for_disconnected(
    client: fakeredis.FakeRedis, events: Recorder
) -> None:
    bridge = make_bridge(client, health_check_interval=0.05, health_check_timeout=0.05)
    sig = bridge.register(Signal(name="a.b"))  # no receivers here: nothing subscribed
    with bridge:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # many health-check periods
            sig.send(None, n=1)
            time.sleep(0.05)
        assert bridge.flush(10)
    assert bridge.stats()["disconnects"] == 0
    assert events.calls == []


def test_catch_up_stops_at_the_log_end_it_saw_and_when_stopped(
    client: fakeredis.FakeRedis,
) -> None:
    first = make_bridge(client, durable=True, worker_id="w2")
    sig = first.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with first:
        wait_until(lambda: first._verified is not None)
        publish_durably(client, "a.b", 1, n=1)
        wait_until(lambda: rec.numbers() == [1])
    first.close()
    for seq in range(2, 1200):  # a backlog of more than two read batches
        append_missed(client, "a.b", seq, n=seq)
    relay_origin.accepted.forget_all()
    second = make_bridge(client, durable=True, worker_id="w2")
    second.register(sig)
    with second:
        wait_until(lambda: len(rec.calls) == 1199)
        assert second.stats()["replayed"] == 1198
    assert rec.numbers() == list(range(1, 1200))


# -- scope="once" leases ---------------------------------------------------------


def claim_key(message_id: str) -> str:
    return f"relay:ns:once:{message_id}:{__name__}.once_receiver"


def test_a_claim_whose_holder_died_is_run_here_once_its_lease_ends(
    client: fakeredis.FakeRedis,
) -> None:
    once_calls.clear()
    bridge = make_bridge(client, once_lease=0.3)
    sig = bridge.register(Signal(name="a.b"))
    sig.connect(once_receiver, scope="once")
    data, message_id = frame("a.b", 1, n=7)
    # Another process claimed it, then died: nobody renews its lease.
    client.set(claim_key(message_id), b"run", px=300)
    with bridge:
        client.publish(channel_for("ns", "a.b"), data)
        wait_until(lambda: bridge.stats()["once_retried"] == 1)
        wait_until(lambda: client.get(claim_key(message_id)) == b"done")
    stats = bridge.stats()
    assert once_calls == [(7, True)]
    assert (stats["once_skipped"], stats["once_retried"], stats["once_lost"]) == (1, 1, 0)
    assert client.zcard("relay:ns:once:leases") == 0


def test_a_claim_that_finished_elsewhere_is_never_run_here(client: fakeredis.FakeRedis) -> None:
    once_calls.clear()
    bridge = make_bridge(client, once_lease=0.2)
    sig = bridge.register(Signal(name="a.b"))
    sig.connect(once_receiver, scope="once")
    data, message_id = frame("a.b", 1, n=8)
    client.set(claim_key(message_id), b"run", px=200)
    with bridge:
        client.publish(channel_for("ns", "a.b"), data)
        wait_until(lambda: bridge.stats()["once_skipped"] == 1)
        client.set(claim_key(message_id), b"done", px=60_000)  # the holder finished
        time.sleep(1.5)  # past the first check of the watched claim
        assert not bridge._watched
    assert once_calls == []
    assert bridge.stats()["once_retried"] == 0


def test_a_running_once_receiver_keeps_its_lease_past_the_lease_time(
    client: fakeredis.FakeRedis,
) -> None:
    seen_during_run: list[Any] = []
    lease = 0.3

    def slow(sender: Any, **kwargs: Any) -> None:
        time.sleep(lease * 4)
        seen_during_run.append(client.get(claim))

    bridge = make_bridge(client, once_lease=lease)
    sig = bridge.register(Signal(name="a.b"))
    sig.connect(slow, scope="once", dispatch_uid="slow", weak=False)
    data, message_id = frame("a.b", 1, n=1)
    claim = f"relay:ns:once:{message_id}:slow"
    with bridge:
        client.publish(channel_for("ns", "a.b"), data)
        wait_until(lambda: seen_during_run != [])
        wait_until(lambda: client.get(claim) == b"done")
    # Renewed while it ran, so nobody else could have taken it over.
    assert seen_during_run == [b"run"]
    assert 0 < client.pttl(claim) <= 3_600_000
    assert client.zscore("relay:ns:once:leases", claim) is None


def test_a_lease_nobody_took_over_is_reported_once(
    client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # A process claimed a message and died; no process that has the message
    # is left to take it over. Any bridge with a once receiver reports it.
    dead = "relay:ns:once:" + "ab" * 16 + ":shop.send_receipt"
    client.zadd("relay:ns:once:leases", {dead: time.time() - 5})
    finished = "relay:ns:once:" + "cd" * 16 + ":shop.send_receipt"
    client.zadd("relay:ns:once:leases", {finished: time.time() - 5})
    client.set(finished, b"done")
    first = make_bridge(client, once_lease=0.2)
    second = Relay(client=client, namespace="ns", once_lease=0.2)
    for bridge in (first, second):
        sig = bridge.register(Signal(name=f"a.{id(bridge)}"))
        sig.connect(once_receiver, scope="once")
    with caplog.at_level(logging.ERROR, logger="relay"), first, second:
        wait_until(lambda: client.zcard("relay:ns:once:leases") == 0)
        time.sleep(0.3)
    assert first.stats()["once_lost"] + second.stats()["once_lost"] == 1
    assert "no process that has the receiver took it over" in caplog.text


def test_once_lease_must_fit_in_once_ttl(client: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="once_lease"):
        make_bridge(client, once_lease=10, once_ttl=5)
    with pytest.raises(ValueError, match="once_lease"):
        make_bridge(client, once_lease=0)


# -- frames, start, names ------------------------------------------------------------


def test_batched_frames_stay_under_max_frame_size_and_a_large_message_goes_alone(
    client: fakeredis.FakeRedis,
) -> None:
    from relay.bridge import DEFAULT_MAX_FRAME_SIZE

    pubsub = client.pubsub()
    pubsub.subscribe(channel_for("ns", "a.b"))
    bridge = make_bridge(client)
    sig = bridge.register(Signal(name="a.b"))
    assert bridge.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 64 * 1024
    # Queued before start, so the publisher packs them together.
    for n in range(300):
        sig.send(None, n=n, payload=b"x" * 2048)
    sig.send(None, n=300, payload=b"y" * 200_000)  # one message larger than a frame
    sig.send(None, n=301)
    with bridge:
        assert bridge.flush(10)
    sizes: list[int] = []
    numbers: list[int] = []
    deadline = time.monotonic() + 10
    while len(numbers) < 302 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            sizes.append(len(message["data"]))
            numbers.extend(m.kwargs["n"] for m in wire.decode_frame(message["data"]))
    assert numbers == list(range(302))
    big = sizes.index(max(sizes))
    assert max(sizes[:big] + sizes[big + 1 :]) <= 64 * 1024
    assert len(sizes) >= 300 * 2048 // (64 * 1024) + 2  # really batched, and split
    assert sizes[big] > 200_000
    with pytest.raises(ValueError, match="max_frame_size"):
        make_bridge(client, max_frame_size=100)


def test_start_checks_redis_in_a_process_that_only_sends() -> None:
    from relay.testing import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    bridge = Relay(url, namespace="ns", socket_connect_timeout=1)
    bridge.register(Signal(name="send.only"))  # no receivers: nothing to subscribe
    with pytest.raises(TransportError, match=f"cannot reach Redis at {url}"):
        bridge.start()
    assert not bridge.running
    bridge.close()


def test_the_built_in_signals_can_be_imported_from_relay() -> None:
    import relay
    import relay.bridge

    assert relay.gap is relay.bridge.gap
    assert relay.disconnected is relay.bridge.disconnected
    assert relay.reconnected is relay.bridge.reconnected
    assert {"gap", "disconnected", "reconnected"} <= set(relay.__all__)


def test_frames_never_exceed_what_receivers_accept(client: fakeredis.FakeRedis) -> None:
    bridge = make_bridge(client, max_message_size=4096)
    assert bridge.max_frame_size == 4096
    pubsub = client.pubsub()
    pubsub.subscribe(channel_for("ns", "a.b"))
    sig = bridge.register(Signal(name="a.b"))
    for n in range(50):
        sig.send(None, n=n, payload=b"x" * 1000)
    with bridge:
        assert bridge.flush(10)
    sizes: list[int] = []
    deadline = time.monotonic() + 10
    while sum(1 for _ in sizes) < 50 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            sizes.extend([len(message["data"])] * len(wire.decode_frame(message["data"])))
    assert len(sizes) == 50 and max(sizes) <= 4096

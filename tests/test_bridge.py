"""Unit tests of the bridge on fakeredis: registration, sending, receiving, stats."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import fakeredis
import pytest

from relay import AsyncRelay, Relay, Signal, TransportError, current_message, wire
from relay.bridge import channel_for
from relay.core import Bridge
from relay.origin import origin_id
from relay.transport import Log, Outgoing
from relay.transport.redis import RedisTransport

pytestmark = pytest.mark.usefixtures("implementation")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


class FlakyTransport(RedisTransport):
    """fakeredis, with a switch that makes publishing fail and a log of what was published."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        super().__init__(client=client)
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[tuple[str, bytes]]] = []

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        self.gate.wait()
        if self.down:
            raise TransportError("broker is down (test)")
        self.batches.append([(item.channel, item.data) for item in items])
        super().publish_many(items, log)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def transport(client: fakeredis.FakeRedis) -> FlakyTransport:
    return FlakyTransport(client)


@pytest.fixture
def bridge(transport: FlakyTransport) -> Iterator[Relay]:
    relay = Relay(transport=transport, namespace="ns")
    yield relay
    transport.gate.set()
    transport.down = False
    relay.close()


FOREIGN = "elsewhere:1:abcd"
_ids = iter(range(1, 1 << 30))
_seqs: dict[tuple[str, str], Iterator[int]] = {}


def foreign_frame(
    name: str,
    sender: str | None = None,
    origin: str = FOREIGN,
    message_id: bytes | None = None,
    seq: int | None = None,
    **kwargs: Any,
) -> bytes:
    """A frame as another process would publish it: numbered in order per origin and signal."""
    message_id = message_id or next(_ids).to_bytes(16, "big")
    if seq is None:
        seq = next(_seqs.setdefault((origin, name), itertools.count(1)))
    return wire.encode_frame(
        [(message_id, origin, seq, name, sender, time.time(), wire.encode_kwargs(kwargs))]
    )


def inject(client: fakeredis.FakeRedis, name: str, frame: bytes) -> None:
    client.publish(channel_for("ns", name), frame)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, signal: Signal, sender: Any, **kwargs: Any) -> str:
        self.calls.append({"sender": sender, "message": current_message(), **kwargs})
        return "answer"


# -- registration ------------------------------------------------------------


def test_register_needs_a_name(bridge: Relay) -> None:
    with pytest.raises(ValueError, match="has no name"):
        bridge.register(Signal())
    unnamed = Signal()
    assert bridge.register(unnamed, name="lib.other") is unnamed


def test_register_refuses_two_signals_under_one_name(bridge: Relay) -> None:
    bridge.register(Signal(name="shop.order_placed"))
    with pytest.raises(ValueError, match="already registered to a different Signal object"):
        bridge.register(Signal(name="shop.order_placed"))


def test_register_refuses_one_signal_under_two_names(bridge: Relay) -> None:
    sig = Signal()
    bridge.register(sig, name="a.one")
    with pytest.raises(ValueError, match=r"already registered as 'a\.one'"):
        bridge.register(sig, name="a.two")
    named = Signal(name="b.one")
    with pytest.raises(ValueError, match="already has a name"):
        bridge.register(named, name="b.two")


def test_a_closed_bridge_frees_its_names_and_cannot_start(client: fakeredis.FakeRedis) -> None:
    first = Relay(client=client, namespace="ns")
    first.register(Signal(name="a.b"))
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.start()
    with pytest.raises(RuntimeError, match="closed"):
        first.register(Signal(name="c.d"))
    second = Relay(client=client, namespace="ns")
    second.register(Signal(name="a.b"))  # the name is free again
    other_namespace = Relay(client=client, namespace="other")
    other_namespace.register(Signal(name="a.b"))
    second.close()
    other_namespace.close()


def test_register_twice_is_harmless(bridge: Relay) -> None:
    sig = Signal(name="a.b")
    assert bridge.register(sig) is sig
    assert bridge.register(sig) is sig
    assert len(sig._attached) == 1


@pytest.mark.parametrize("bad", ["", "a b", 3])
def test_register_rejects_bad_names(bridge: Relay, bad: Any) -> None:
    with pytest.raises(ValueError, match="signal name must be"):
        bridge.register(Signal(), name=bad)


def test_register_rejects_non_signals_and_bad_scopes(bridge: Relay) -> None:
    with pytest.raises(TypeError, match="takes a relay Signal"):
        bridge.register(object(), name="x.y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope must be 'all' or 'local'"):
        bridge.register(Signal(name="x.y"), scope="once")  # type: ignore[arg-type]


@pytest.mark.parametrize("namespace", ["", "a:b", "a b", None])
def test_bad_namespaces_are_refused(client: fakeredis.FakeRedis, namespace: Any) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Relay(client=client, namespace=namespace)


def test_constructor_errors(client: fakeredis.FakeRedis) -> None:
    with pytest.raises(TypeError, match="needs a Redis URL"):
        Relay(namespace="ns")
    with pytest.raises(ValueError, match="publish must be"):
        Relay(client=client, namespace="ns", publish="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        Relay(client=client, namespace="ns", max_queue=0)
    with pytest.raises(ValueError, match="invalid Redis URL"):
        Relay("http://example", namespace="ns")
    decoding = fakeredis.FakeRedis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        Relay(client=decoding, namespace="ns")


def test_unknown_scope_at_connect_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown scope 'twice'"):
        Signal(name="a.b").connect(Recorder(), scope="twice")


# -- sending -------------------------------------------------------------------


def test_send_fires_locally_and_publishes(
    bridge: Relay, transport: FlakyTransport, client: fakeredis.FakeRedis
) -> None:
    sig = bridge.register(Signal(name="shop.order_placed"))
    recorder = Recorder()
    sig.connect(recorder, weak=False)
    pubsub = client.pubsub()
    pubsub.subscribe(channel_for("ns", "shop.order_placed"))
    with bridge:
        result = sig.send("shop.checkout", total=Decimal("9.90"), items=("a", "b"))
        assert result == [(recorder, "answer")]
        assert bridge.flush(timeout=10)
    assert recorder.calls == [
        {"sender": "shop.checkout", "message": None, "total": Decimal("9.90"), "items": ("a", "b")}
    ]
    received = iter(lambda: pubsub.get_message(timeout=1), None)
    frames = [m for m in received if m["type"] == "message"]
    (message,) = wire.decode_frame(frames[0]["data"])
    assert message.signal == "shop.order_placed"
    assert message.sender == "shop.checkout"
    assert message.origin == origin_id()
    assert message.kwargs == {"total": Decimal("9.90"), "items": ("a", "b")}
    assert bridge.stats()["published"] == 1


def test_unencodable_kwarg_raises_before_anything_happens(
    bridge: Relay, transport: FlakyTransport
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    recorder = Recorder()
    sig.connect(recorder, weak=False)
    with bridge:
        for method in (sig.send, sig.send_robust):
            with pytest.raises(TypeError, match=r"'order'.*object"):
                method(None, ok=1, order=object())
        assert bridge.flush(timeout=10)
    assert recorder.calls == []
    assert transport.batches == []
    assert bridge.stats()["published"] == 0


def test_oversized_message_is_a_value_error(client: fakeredis.FakeRedis) -> None:
    relay = Relay(client=client, namespace="ns", max_message_size=4096)
    sig = relay.register(Signal(name="a.b"))
    recorder = Recorder()
    sig.connect(recorder, weak=False)
    with pytest.raises(ValueError, match="over the 4096-byte limit"):
        sig.send(None, blob=b"x" * 5000)
    assert recorder.calls == []
    sig.send(None, blob=b"x" * 1000)  # a smaller one goes
    assert len(recorder.calls) == 1


def test_a_failing_local_receiver_still_publishes(bridge: Relay, transport: FlakyTransport) -> None:
    sig = bridge.register(Signal(name="a.b"))

    def broken(**kwargs: Any) -> None:
        raise KeyError("local bug")

    sig.connect(broken)
    with bridge:
        with pytest.raises(KeyError):
            sig.send(None, n=1)
        ((_, response),) = sig.send_robust(None, n=2)
        assert type(response) is KeyError
        assert bridge.flush(timeout=10)
    assert bridge.stats()["published"] == 2


def test_publisher_batches_what_queues_up(
    bridge: Relay, transport: FlakyTransport, implementation: str
) -> None:
    # Names of their own in each run: this process numbers each name's sends from 1.
    a = bridge.register(Signal(name=f"s.a.{implementation}"))
    b = bridge.register(Signal(name=f"s.b.{implementation}"))
    with bridge:
        transport.gate.clear()  # hold the publisher while sends queue up
        a.send(None, n=0)
        wait_until(lambda: bridge._publisher._queued == 1 and not bridge._publisher._items)
        for n in range(1, 7):
            (a if n < 4 or n == 6 else b).send(None, n=n)
        transport.gate.set()
        assert bridge.flush(timeout=10)
    later = transport.batches[1]
    # One PUBLISH per run of one channel: [a1 a2 a3] [b4 b5] [a6].
    assert [channel for channel, _ in later] == [
        channel_for("ns", f"s.a.{implementation}"),
        channel_for("ns", f"s.b.{implementation}"),
        channel_for("ns", f"s.a.{implementation}"),
    ]
    numbers = [[m.kwargs["n"] for m in wire.decode_frame(data)] for _, data in later]
    assert numbers == [[1, 2, 3], [4, 5], [6]]
    seqs = [m.seq for _, data in later for m in wire.decode_frame(data)]
    assert seqs == [2, 3, 4, 1, 2, 5]  # numbered per signal


def test_sends_before_start_are_published_on_start(
    bridge: Relay, transport: FlakyTransport
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    sig.send(None, n=1)
    assert bridge.flush(timeout=0.1) is False
    with bridge:
        assert bridge.flush(timeout=10)
    assert bridge.stats()["published"] == 1


def test_queue_overflow_is_dropped_counted_and_logged(
    client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FlakyTransport(client)
    relay = Relay(transport=transport, namespace="ns", max_queue=3, queue_wait=0)
    sig = relay.register(Signal(name="a.b"))
    recorder = Recorder()
    sig.connect(recorder, weak=False)
    transport.down = True
    with caplog.at_level(logging.WARNING, logger="relay"):
        relay.start()
        try:
            sig.send(None, n=0)
            wait_until(lambda: relay.stats()["publish_errors"] >= 1)
            for n in range(1, 10):
                sig.send(None, n=n)
            assert len(recorder.calls) == 10  # local receivers fire regardless
            assert relay.stats()["dropped"] == 6  # 1 in flight, 3 queued, 6 overflowed
            transport.down = False
            assert relay.flush(timeout=10)
        finally:
            relay.stop()
    stats = relay.stats()
    assert stats["published"] == 4
    assert stats["published"] + stats["dropped"] == 10
    frames = [data for batch in transport.batches for _, data in batch]
    published = [m.kwargs["n"] for data in frames for m in wire.decode_frame(data)]
    assert published == [0, 7, 8, 9]  # the oldest were dropped, order kept
    assert "queue is full" in caplog.text


def test_stop_while_broker_down_drops_and_says_so(
    client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FlakyTransport(client)
    relay = Relay(transport=transport, namespace="ns")
    sig = relay.register(Signal(name="a.b"))
    transport.down = True
    relay.start()
    for n in range(3):
        sig.send(None, n=n)
    with caplog.at_level(logging.ERROR, logger="relay"):
        assert relay.stop(timeout=0.2) is False
    assert relay.stats()["dropped"] == 3
    assert "dropped" in caplog.text


def test_sync_publish_raises_on_broker_errors(client: fakeredis.FakeRedis) -> None:
    transport = FlakyTransport(client)
    relay = Relay(transport=transport, namespace="ns", publish="sync")
    sig = relay.register(Signal(name="a.b"))
    recorder = Recorder()
    sig.connect(recorder, weak=False)
    sig.send(None, n=1)
    assert len(transport.batches) == 1  # published before send returned
    transport.down = True
    with pytest.raises(TransportError, match="down"):
        sig.send(None, n=2)
    assert len(recorder.calls) == 2
    stats = relay.stats()
    assert (stats["published"], stats["publish_errors"], stats["dropped"]) == (1, 1, 1)
    assert relay.flush() is True


def two_sync_bridges(
    client: fakeredis.FakeRedis,
) -> tuple[Signal, tuple[Relay, FlakyTransport], tuple[Relay, FlakyTransport]]:
    """
    A signal registered with two ``publish="sync"`` bridges of one namespace,
    and each bridge with its transport.
    """
    sig = Signal(name="a.b")
    bridges = []
    for _ in range(2):
        transport = FlakyTransport(client)
        bridge = Relay(transport=transport, namespace="ns", publish="sync")
        bridge.register(sig)
        bridges.append((bridge, transport))
    return sig, bridges[0], bridges[1]


def test_two_bridges_on_one_namespace_publish_once(
    client: fakeredis.FakeRedis,
) -> None:
    sig, (one, first), (_two, second) = two_sync_bridges(client)
    sig.send(None)
    assert (len(first.batches), len(second.batches)) == (1, 0)
    one.start()
    one.stop()  # the second bridge takes over publishing
    sig.send(None)
    assert (len(first.batches), len(second.batches)) == (1, 1)


def test_a_send_once_a_stopping_bridge_is_not_running_goes_to_the_next(
    client: fakeredis.FakeRedis, slow_down: Callable[[object, str], None]
) -> None:
    """
    ``running`` turns False only once the stopping bridge is detached from
    its signals: a send made after that is the next bridge's to publish, not
    one more message in the stopping bridge's queue.
    """
    sig, (one, first), (_two, second) = two_sync_bridges(client)
    one.start()
    slow_down(one, "_detach_all")
    stopping = threading.Thread(target=one.stop)
    stopping.start()
    wait_until(lambda: not one.running)
    sig.send(None)
    stopping.join()
    assert (len(first.batches), len(second.batches)) == (0, 1)


def test_a_send_once_a_restarted_bridge_is_running_is_relayed(
    transport: FlakyTransport, slow_down: Callable[[object, str], None]
) -> None:
    """
    ``running`` turns True only once a bridge started again is attached to
    its signals again: a send made after that is published, not only fired here.
    """
    relay = Relay(transport=transport, namespace="ns", publish="sync")
    sig = relay.register(Signal(name="a.b"))
    relay.start()
    relay.stop()
    slow_down(relay, "_attach_all")
    starting = threading.Thread(target=relay.start)
    starting.start()
    wait_until(lambda: relay.running)
    sig.send(None)
    starting.join()
    relay.close()
    assert len(transport.batches) == 1


# -- receiving -----------------------------------------------------------------


class Order:
    pass


def test_remote_sends_fire_receivers_by_sender_name(
    bridge: Relay, client: fakeredis.FakeRedis
) -> None:
    sig = bridge.register(Signal(name="shop.order_placed"))
    anyone, by_class, by_name, other = Recorder(), Recorder(), Recorder(), Recorder()
    local = Recorder()
    sig.connect(anyone, weak=False)
    sig.connect(by_class, sender=Order, weak=False)
    sig.connect(by_name, sender=f"{__name__}.Order", weak=False)
    sig.connect(other, sender="someone.else", weak=False)
    sig.connect(local, scope="local", weak=False)
    order_name = f"{__name__}.Order"
    with bridge:
        inject(client, "shop.order_placed", foreign_frame("shop.order_placed", order_name, n=1))
        inject(client, "shop.order_placed", foreign_frame("shop.order_placed", "nobody", n=2))
        inject(client, "shop.order_placed", foreign_frame("shop.order_placed", None, n=3))
        wait_until(lambda: len(anyone.calls) == 3)
    assert [c["n"] for c in anyone.calls] == [1, 2, 3]
    assert [c["sender"] for c in anyone.calls] == [Order, "nobody", None]
    assert [(c["n"], c["sender"]) for c in by_class.calls] == [(1, Order)]
    assert [(c["n"], c["sender"]) for c in by_name.calls] == [(1, order_name)]
    assert other.calls == [] and local.calls == []
    message = anyone.calls[0]["message"]
    assert message.origin == FOREIGN and message.signal == "shop.order_placed"
    assert message.sender == order_name and isinstance(message.sent_at, float)
    stats = bridge.stats()
    assert (stats["received"], stats["fired"]) == (3, 5)


class Labelled:
    """A class named with relay.naming.register_name (as Django models are)."""


def test_a_registered_class_name_crosses_and_comes_back_as_the_class(
    bridge: Relay, client: fakeredis.FakeRedis, transport: FlakyTransport
) -> None:
    from relay.naming import register_name

    register_name(Labelled, "tests.Labelled")
    sig = bridge.register(Signal(name="shop.labelled"))
    anyone = Recorder()
    sig.connect(anyone, weak=False)
    instance = Labelled()
    with bridge:
        sig.send(sender=Labelled)
        sig.send(sender=instance)  # an instance is named by its class
        bridge.flush()
        inject(client, "shop.labelled", foreign_frame("shop.labelled", "tests.Labelled"))
        wait_until(lambda: len(anyone.calls) == 3)
    sent = [m for batch in transport.batches for _, data in batch for m in wire.decode_frame(data)]
    assert [m.sender for m in sent] == ["tests.Labelled", "tests.Labelled"]
    # Locally and from elsewhere, the any-sender receiver gets the class (or
    # the local instance) itself.
    assert [c["sender"] for c in anyone.calls] == [Labelled, instance, Labelled]


def test_register_scope_local_sets_the_default(bridge: Relay, client: fakeredis.FakeRedis) -> None:
    sig = bridge.register(Signal(name="a.b"), scope="local")
    default, opted_in = Recorder(), Recorder()
    sig.connect(default, weak=False)
    sig.connect(opted_in, scope="all", weak=False)
    with bridge:
        inject(client, "a.b", foreign_frame("a.b", n=1))
        wait_until(lambda: len(opted_in.calls) == 1)
    assert default.calls == []
    sig.send(None, n=2)  # locally, both fire
    assert [c["n"] for c in default.calls] == [2]


def test_remote_firing_dedups_one_receiver_registered_for_senders_sharing_a_name(
    bridge: Relay, client: fakeredis.FakeRedis
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    rec, uid_rec = Recorder(), Recorder()
    sig.connect(rec, sender=Order, weak=False)
    sig.connect(rec, sender=f"{__name__}.Order", weak=False)
    sig.connect(uid_rec, sender=Order, dispatch_uid="u", weak=False)
    sig.connect(Recorder(), sender=f"{__name__}.Order", dispatch_uid="u", weak=False)
    with bridge:
        inject(client, "a.b", foreign_frame("a.b", f"{__name__}.Order", n=1))
        inject(client, "a.b", foreign_frame("a.b", None, n=2))  # a marker to wait for
        wait_until(lambda: bridge.stats()["received"] == 2)
    assert [c["n"] for c in rec.calls] == [1]
    assert [c["n"] for c in uid_rec.calls] == [1]


def test_receiver_errors_are_logged_counted_and_do_not_stop_others(
    bridge: Relay, client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    after = Recorder()

    def broken(**kwargs: Any) -> None:
        raise ValueError("receiver bug")

    async def async_after(signal: Signal, sender: Any, **kwargs: Any) -> None:
        after.calls.append({"async": True, "message": current_message(), **kwargs})

    sig.connect(broken)
    sig.connect(after, weak=False)
    sig.connect(async_after)
    with caplog.at_level(logging.ERROR, logger="relay"), bridge:
        inject(client, "a.b", foreign_frame("a.b", n=1))
        inject(client, "a.b", foreign_frame("a.b", n=2))
        wait_until(lambda: len(after.calls) == 4)
    assert bridge.stats()["receiver_errors"] == 2
    assert "receiver bug" in caplog.text and "broken" in caplog.text
    assert all(c["message"] is not None for c in after.calls)


def test_echo_duplicates_and_malformed_frames(
    bridge: Relay, client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    same_id = b"\x09" * 16
    with caplog.at_level(logging.WARNING, logger="relay"), bridge:
        inject(client, "a.b", foreign_frame("a.b", origin=origin_id(), n=0))  # our own echo
        twice = foreign_frame("a.b", origin="twice:1:abcd", message_id=same_id, seq=1, n=1)
        inject(client, "a.b", twice)
        twice = foreign_frame("a.b", origin="twice:1:abcd", message_id=same_id, seq=1, n=1)
        inject(client, "a.b", twice)
        inject(client, "a.b", b"\xff garbage")
        inject(client, "a.b", foreign_frame("x.y", n=9))  # wrong signal for the channel
        inject(client, "a.b", foreign_frame("a.b", n=2))
        wait_until(lambda: len(rec.calls) == 2)
    assert [c["n"] for c in rec.calls] == [1, 2]
    stats = bridge.stats()
    assert (stats["duplicates"], stats["rejected"]) == (1, 2)
    assert "rejected a message" in caplog.text


def test_register_after_start_subscribes(bridge: Relay, client: fakeredis.FakeRedis) -> None:
    with bridge:
        sig = bridge.register(Signal(name="late.signal"))
        rec = Recorder()
        sig.connect(rec, weak=False)
        inject(client, "late.signal", foreign_frame("late.signal", n=1))
        wait_until(lambda: len(rec.calls) == 1)


def test_kwargs_of_every_wire_type_arrive_intact(
    bridge: Relay, client: fakeredis.FakeRedis
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    when = dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.UTC)
    with bridge:
        inject(client, "a.b", foreign_frame("a.b", when=when, ids={1, 2}, key=(1, "a")))
        wait_until(lambda: len(rec.calls) == 1)
    call = rec.calls[0]
    assert (call["when"], call["ids"], call["key"]) == (when, {1, 2}, (1, "a"))


def test_start_twice_and_context_manager(bridge: Relay) -> None:
    bridge.register(Signal(name="a.b"))
    assert bridge.start() is bridge
    assert bridge.start() is bridge
    assert bridge.running
    assert bridge.stop() is True
    assert not bridge.running
    assert bridge.stop() is True
    with bridge as running:
        assert running.running
    assert not bridge.running


def test_run_listens_in_the_calling_thread_until_stop(
    bridge: Relay, client: fakeredis.FakeRedis
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    threads: list[str] = []
    sig.connect(lambda **kw: threads.append(threading.current_thread().name), weak=False)
    runner = threading.Thread(target=bridge.run, name="the-runner")
    runner.start()
    wait_until(lambda: bridge.running)
    wait_until(lambda: client.pubsub_numsub(channel_for("ns", "a.b"))[0][1] == 1)
    inject(client, "a.b", foreign_frame("a.b"))
    wait_until(lambda: len(threads) == 1)
    bridge.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert threads == ["the-runner"]


def test_a_forked_child_is_a_new_origin_with_an_empty_queue(
    bridge: Relay, transport: FlakyTransport
) -> None:
    sig = bridge.register(Signal(name="a.b"))
    sig.send(None, n=1)  # queued in the parent, not started
    parent_origin = origin_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            ok = (
                origin_id() != parent_origin
                and bridge._publisher._queued == 0
                and not bridge.running
                and bridge._frame_prefix == wire.frame_prefix(origin_id())
                and bridge._outboxes["a.b"].numbering.take() == 1  # numbering starts afresh
            )
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 8) == b"ok"
    os.close(read)
    assert bridge._publisher._queued == 1  # the parent keeps its own


def numsub(client: fakeredis.FakeRedis, name: str) -> int:
    return int(client.pubsub_numsub(channel_for("ns", name))[0][1])


def test_only_signals_with_remote_receivers_are_subscribed(
    bridge: Relay, client: fakeredis.FakeRedis
) -> None:
    quiet = bridge.register(Signal(name="s.quiet"))  # sent from here, heard nowhere here
    local = bridge.register(Signal(name="s.local"))
    local.connect(Recorder(), scope="local", weak=False)
    heard = bridge.register(Signal(name="s.heard"))
    heard.connect(Recorder(), weak=False)
    with bridge:
        assert (
            numsub(client, "s.quiet"),
            numsub(client, "s.local"),
            numsub(client, "s.heard"),
        ) == (
            0,
            0,
            1,
        )
        # A receiver that remote sends can fire subscribes at once.
        rec = Recorder()
        quiet.connect(rec, weak=False)
        assert numsub(client, "s.quiet") == 1
        inject(client, "s.quiet", foreign_frame("s.quiet", n=1))
        wait_until(lambda: len(rec.calls) == 1)
        local.connect(Recorder(), scope="local", weak=False)
        assert numsub(client, "s.local") == 0


def test_own_frames_are_dropped_before_decoding(bridge: Relay, client: fakeredis.FakeRedis) -> None:
    sig = bridge.register(Signal(name="a.b"))
    rec = Recorder()
    sig.connect(rec, weak=False)
    with bridge:
        # Our own prefix followed by garbage: never decoded, so never rejected.
        inject(client, "a.b", wire.frame_prefix(origin_id()) + b"\xff garbage")
        inject(client, "a.b", foreign_frame("a.b", n=1))
        wait_until(lambda: len(rec.calls) == 1)
    assert bridge.stats()["rejected"] == 0
    assert bridge.stats()["received"] == 1


# -- the firing loop (run with and without relay._speedups) -----------------


class Driver(NamedTuple):
    bridge: Bridge
    handle: Callable[[str, bytes], int]


@pytest.fixture(params=["threaded", "asyncio"])
def driver(
    request: pytest.FixtureRequest, bridge: Relay, server: fakeredis.FakeServer
) -> Iterator[Driver]:
    """A bridge of either driver, and its listener's frame handler, run to completion."""
    if request.param == "threaded":
        yield Driver(bridge, bridge._handle)
        return
    async_bridge = AsyncRelay(client=fakeredis.FakeAsyncRedis(server=server), namespace="ns")

    def handle(channel: str, data: bytes) -> int:
        return asyncio.run(async_bridge._handle(channel, data))

    yield Driver(async_bridge, handle)
    asyncio.run(async_bridge.close())


def mixed_frame(
    name: str, messages: list[tuple[str | None, dict[str, Any]]], traced: int | None = None
) -> bytes:
    """A new foreign origin's frame of messages; the one at ``traced`` has a trace context."""
    origin = f"mixed:{next(_ids)}:abcd"  # a new origin: numbered from 1
    seqs = itertools.count(1)
    packed = [
        wire.pack_message(
            next(_ids).to_bytes(16, "big"),
            next(seqs),
            name,
            sender,
            time.time(),
            wire.encode_kwargs(kw),
        )
        for sender, kw in messages
    ]
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traces = None if traced is None else [(traced, parent, None)]
    return wire.build_frame(wire.frame_prefix(origin), packed, traces=traces)


def test_a_frame_of_mixed_messages_fires_each_in_order_with_its_own_message(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    sig = driver.bridge.register(Signal(name="mix"))
    calls: list[tuple[Any, int, bool, dict[str, Any]]] = []

    def record(signal: Signal, sender: Any, **kwargs: Any) -> None:
        message = current_message()
        assert message is not None and signal is sig
        calls.append((sender, message.seq, message.trace is not None, kwargs))
        if kwargs.get("fail"):
            raise ValueError("receiver bug")

    def last(signal: Signal, sender: Any, **kwargs: Any) -> None:
        calls.append(("last", kwargs["n"], False, {}))

    holder = [last]

    def let_go(**kwargs: Any) -> None:
        if kwargs.get("n") == 5:
            holder.clear()  # ``last`` dies before its turn for this message

    sig.connect(record, weak=False)
    sig.connect(let_go, weak=False)
    sig.connect(last)  # weak: only holder keeps it alive
    del last
    messages: list[tuple[str | None, dict[str, Any]]] = [
        ("a", {"n": 0}),
        ("a", {"n": 1}),
        ("b", {"n": 2}),
        ("b", {"n": 3}),  # traced
        (None, {"n": 5}),
        # After ``last`` is gone: the traceback of an error keeps the frame
        # that called the receivers, and so perhaps ``last``, alive.
        (None, {"n": 4, "fail": True}),
        (None, {"signal": 4}),  # cannot be called: a TypeError, logged as the receiver's
        (None, {"n": 6}),
    ]
    with caplog.at_level(logging.ERROR, logger="relay"):
        fired = driver.handle(channel_for("ns", "mix"), mixed_frame("mix", messages, traced=3))
    assert fired == 8
    assert calls == [
        ("a", 1, False, {"n": 0}),
        ("last", 0, False, {}),
        ("a", 2, False, {"n": 1}),
        ("last", 1, False, {}),
        ("b", 3, False, {"n": 2}),
        ("last", 2, False, {}),
        ("b", 4, True, {"n": 3}),
        ("last", 3, False, {}),
        (None, 5, False, {"n": 5}),
        (None, 6, False, {"n": 4, "fail": True}),
        (None, 8, False, {"n": 6}),
    ]
    assert current_message() is None
    stats = driver.bridge.stats()
    # All three receivers for the first four messages, then ``record`` and ``let_go``.
    assert (stats["fired"], stats["receiver_errors"]) == (3 * 4 + 2 * 4, 1 + 2)
    errors = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert [type(err) for err in errors] == [ValueError, TypeError, TypeError]
    assert "multiple values for keyword argument 'signal'" in str(errors[1])


def test_a_receiver_raising_a_base_exception_stops_the_frame_and_resets_current_message(
    bridge: Relay,
) -> None:
    sig = bridge.register(Signal(name="stop"))
    seen: list[int] = []

    def stop(**kwargs: Any) -> None:
        seen.append(kwargs["n"])
        if kwargs["n"] == 1:
            raise KeyboardInterrupt

    sig.connect(stop, weak=False)
    frame = mixed_frame("stop", [("a", {"n": n}) for n in range(3)])
    with pytest.raises(KeyboardInterrupt):
        bridge._handle(channel_for("ns", "stop"), frame)
    assert seen == [0, 1]
    assert current_message() is None


def test_a_message_with_many_keyword_arguments_reaches_every_receiver(driver: Driver) -> None:
    sig = driver.bridge.register(Signal(name="wide"))
    named = {f"k{i}": i for i in range(40)}
    recorders = [Recorder() for _ in range(3)]
    for recorder in recorders:
        sig.connect(recorder, weak=False)
    frame = mixed_frame("wide", [("s", named), ("s", {"n": 1})])
    assert driver.handle(channel_for("ns", "wide"), frame) == 2
    for recorder in recorders:
        assert [{k: v for k, v in c.items() if k != "message"} for c in recorder.calls] == [
            {"sender": "s", **named},
            {"sender": "s", "n": 1},
        ]
    assert driver.bridge.stats()["fired"] == 6


def test_a_receiver_that_changes_the_messages_arguments_is_seen_by_the_next(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    # Each receiver gets the message's keyword arguments as they are when it is
    # called, as **message.kwargs would give them, whatever an earlier one did.
    sig = driver.bridge.register(Signal(name="change"))
    seen: list[tuple[str, dict[str, Any]]] = []

    def change(**kwargs: Any) -> None:
        message = current_message()
        assert message is not None
        n = kwargs["n"]
        message.kwargs.clear()  # frees the values the frame decoded
        if n == 1:
            message.kwargs["fresh"] = ["x" * 50]
        elif n == 2:
            message.kwargs["signal"] = "clash"  # the next receivers cannot be called

    def record(signal: Signal, sender: Any, **kwargs: Any) -> None:
        seen.append(("record", kwargs))

    def last(signal: Signal, sender: Any, **kwargs: Any) -> None:
        seen.append(("last", kwargs))

    for receiver in (change, record, last):
        sig.connect(receiver, weak=False)
    messages: list[tuple[str | None, dict[str, Any]]] = [
        ("s", {"n": n, "payload": ["y" * 50] * 3}) for n in range(4)
    ]
    with caplog.at_level(logging.ERROR, logger="relay"):
        driver.handle(channel_for("ns", "change"), mixed_frame("change", messages))
    assert seen == [
        ("record", {}),
        ("last", {}),
        ("record", {"fresh": ["x" * 50]}),
        ("last", {"fresh": ["x" * 50]}),
        ("record", {}),
        ("last", {}),
    ]
    assert (driver.bridge.stats()["fired"], driver.bridge.stats()["receiver_errors"]) == (12, 2)
    errors = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert [type(err) for err in errors] == [TypeError, TypeError]
    assert all("multiple values for keyword argument 'signal'" in str(e) for e in errors)

"""
AsyncRelay against a real Redis: firing as asend does, publishing without
blocking the loop, dedup, gaps, signing, once, reconnecting and durable mode.
Processes that mix AsyncRelay and Relay are in test_bridge_processes.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, TypeVar

import pytest
import redis
import redis.asyncio

from relay import AsyncRelay, Relay, Signal, TransportError, current_message, wire
from relay.bridge import channel_for, disconnected, gap, reconnected, signing_key
from relay.testing import FaultyProxy, RedisServer
from relay.transport import Log, Outgoing
from relay.transport.redis import AsyncRedisTransport, RedisTransport

pytestmark = pytest.mark.redis

T = TypeVar("T")
FOREIGN = "faraway:7:abcd"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class Fast:
    def compute(self, failures: int) -> float:
        return 0.05


class Order:
    pass


ORDER = f"{__name__}.Order"


def foreign(
    name: str,
    seq: int,
    sender: str | None = None,
    key: bytes | None = None,
    message_id: bytes | None = None,
    **kwargs: Any,
) -> bytes:
    """A frame as another process would publish it."""
    return wire.encode_frame(
        [
            (
                message_id or os.urandom(16),
                FOREIGN,
                seq,
                name,
                sender,
                time.time(),
                wire.encode_kwargs(kwargs),
            )
        ],
        key=key,
    )


class Recorder:
    """A receiver (sync or async) that notes what it got and where it ran."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def note(self, signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(
            {
                "signal": signal,
                "sender": sender,
                "message": current_message(),
                "thread": threading.get_ident(),
                **kwargs,
            }
        )

    def __call__(self, signal: Signal, sender: Any, **kwargs: Any) -> None:
        self.note(signal, sender, kwargs)

    def numbers(self) -> list[Any]:
        return [c.get("n") for c in self.calls]


class AsyncRecorder(Recorder):
    async def __call__(self, signal: Signal, sender: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.note(signal, sender, kwargs)


class Published:
    """A plain redis.asyncio subscriber: what actually went through Redis."""

    def __init__(self, url: str, channels: Sequence[str]) -> None:
        self.url = url
        self.channels = channels
        self.messages: list[wire.Message] = []

    async def __aenter__(self) -> Published:
        self.client = redis.asyncio.Redis.from_url(self.url)
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(*self.channels)
        return self

    async def read(self, count: int, timeout: float = 20.0) -> list[wire.Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.messages)} of {count} messages published")
            got = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if got is not None:
                self.messages.extend(wire.decode_frame(got["data"]))
        return self.messages

    async def __aexit__(self, *exc_info: object) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


async def inject(url: str, namespace: str, name: str, *frames: bytes) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        for data in frames:
            await client.publish(channel_for(namespace, name), data)
    finally:
        await client.aclose()


# -- receiving ----------------------------------------------------------------


def test_remote_sends_fire_receivers_as_asend_does(redis_url: str, namespace: str) -> None:
    sig = Signal(name="shop.order_placed")
    plain, coroutine, by_class, by_name, local = (
        Recorder(),
        AsyncRecorder(),
        Recorder(),
        Recorder(),
        Recorder(),
    )
    sig.connect(plain, weak=False)
    sig.connect(coroutine, weak=False)
    sig.connect(by_class, sender=Order, weak=False)
    sig.connect(by_name, sender=ORDER, weak=False)
    sig.connect(local, scope="local", weak=False)

    async def scenario() -> tuple[int, dict[str, int]]:
        bridge = AsyncRelay(redis_url, namespace=namespace)
        bridge.register(sig)  # before start: start() returns subscribed
        async with bridge:
            await inject(
                redis_url,
                namespace,
                "shop.order_placed",
                foreign("shop.order_placed", 1, ORDER, n=1, when=time.time()),
                foreign("shop.order_placed", 2, "someone.else", n=2),
                foreign("shop.order_placed", 3, None, n=3),
            )
            await eventually(lambda: bridge.stats()["fired"] == 8)
            return threading.get_ident(), bridge.stats()

    loop_thread, stats = run(scenario())
    assert plain.numbers() == [1, 2, 3] and coroutine.numbers() == [1, 2, 3]
    assert [c["sender"] for c in plain.calls] == [Order, "someone.else", None]
    assert by_class.numbers() == [1] and by_class.calls[0]["sender"] is Order
    assert by_name.numbers() == [1] and by_name.calls[0]["sender"] == ORDER
    assert local.calls == []
    # Synchronous receivers ran off the event loop, coroutines on it.
    assert all(c["thread"] != loop_thread for c in plain.calls + by_class.calls)
    assert all(c["thread"] == loop_thread for c in coroutine.calls)
    # Both know which message they are handling.
    for call in plain.calls + coroutine.calls:
        assert call["message"].origin == FOREIGN
        assert call["message"].signal == "shop.order_placed"
    assert (stats["received"], stats["fired"], stats["rejected"]) == (3, 8, 0)


def test_duplicates_gaps_bad_frames_and_failing_receivers(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.b")
    rec, gaps = Recorder(), AsyncRecorder()
    sig.connect(rec, weak=False)

    async def failing(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("this receiver always fails")

    sig.connect(failing, weak=False)
    same_id = os.urandom(16)

    async def scenario() -> dict[str, int]:
        with gap.connected_to(gaps):
            async with AsyncRelay(redis_url, namespace=namespace) as bridge:
                bridge.register(sig)
                assert await bridge.subscribed()
                await inject(
                    redis_url,
                    namespace,
                    "a.b",
                    foreign("a.b", 1, message_id=same_id, n=1),
                    foreign("a.b", 1, message_id=same_id, n=1),  # the same message again
                    b"garbage",
                    foreign("a.b", 4, n=4),  # 2 and 3 were lost
                )
                await eventually(lambda: bridge.stats()["receiver_errors"] == 2)
                return bridge.stats()

    stats = run(scenario())
    assert rec.numbers() == [1, 4]
    (lost,) = gaps.calls
    assert (lost["origin"], lost["signal_name"], lost["first_missing"], lost["count"]) == (
        FOREIGN,
        "a.b",
        2,
        2,
    )
    assert stats["duplicates"] == 1 and stats["rejected"] == 1
    assert (stats["gaps"], stats["missed"]) == (1, 2)
    assert stats["receiver_errors"] == 2 and stats["fired"] == 4


def test_with_a_secret_only_well_signed_messages_fire(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.signed")
    rec = Recorder()
    sig.connect(rec, weak=False)
    key = signing_key(namespace, "s3cret")

    async def scenario() -> dict[str, int]:
        async with AsyncRelay(redis_url, namespace=namespace, secret="s3cret") as bridge:
            bridge.register(sig)
            assert await bridge.subscribed()
            await inject(
                redis_url,
                namespace,
                "a.signed",
                foreign("a.signed", 1, n=1),  # unsigned
                foreign("a.signed", 2, key=signing_key(namespace, "other"), n=2),
                foreign("a.signed", 3, key=key, n=3),
            )
            await eventually(lambda: rec.numbers() == [3])
            return bridge.stats()

    assert run(scenario())["rejected"] == 2


def test_once_receivers_run_where_claimed(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.once")
    once, everywhere = Recorder(), Recorder()
    sig.connect(once, scope="once", dispatch_uid="mail", weak=False)
    sig.connect(everywhere, weak=False)
    claimed_id, free_id = os.urandom(16), os.urandom(16)
    raw = redis.Redis.from_url(redis_url)
    # Another process already claimed the first message.
    raw.set(f"relay:{namespace}:once:{claimed_id.hex()}:mail", b"1", px=60_000)
    raw.close()

    async def scenario() -> dict[str, int]:
        async with AsyncRelay(redis_url, namespace=namespace) as bridge:
            bridge.register(sig)
            assert await bridge.subscribed()
            await inject(
                redis_url,
                namespace,
                "a.once",
                foreign("a.once", 1, message_id=claimed_id, n=1),
                foreign("a.once", 2, message_id=free_id, n=2),
            )
            await eventually(lambda: everywhere.numbers() == [1, 2] and once.numbers() == [2])
            return bridge.stats()

    assert run(scenario())["once_skipped"] == 1


def test_registering_and_connecting_after_start_subscribe(redis_url: str, namespace: str) -> None:
    late, later = Signal(name="a.late"), Signal(name="a.later")
    rec_late, rec_later = Recorder(), Recorder()

    async def scenario() -> None:
        async with AsyncRelay(redis_url, namespace=namespace) as bridge:
            bridge.register(later)  # no receiver yet: not subscribed
            assert channel_for(namespace, "a.later") not in bridge._subscribed
            late.connect(rec_late, weak=False)
            bridge.register(late)
            assert await bridge.subscribed()
            await inject(redis_url, namespace, "a.late", foreign("a.late", 1, n=1))
            await eventually(lambda: rec_late.numbers() == [1])
            later.connect(rec_later, weak=False)
            assert await bridge.subscribed()
            await inject(redis_url, namespace, "a.later", foreign("a.later", 1, n=1))
            await eventually(lambda: rec_later.numbers() == [1])

    run(scenario())
    assert rec_late.calls and rec_later.calls


# -- publishing ---------------------------------------------------------------


class GatedTransport(AsyncRedisTransport):
    """Holds every publish until the gate opens; can fail them instead."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()
        self.fail = False
        self.attempts = 0

    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        self.attempts += 1
        if self.fail:
            raise TransportError("broker is down (test)")
        await self.gate.wait()
        await super().publish_many(items, log)


def test_asend_publishes_without_blocking_the_loop(redis_url: str, namespace: str) -> None:
    sig = Signal(name="shop.sent")
    here = Recorder()
    sig.connect(here, weak=False)

    async def scenario() -> tuple[list[wire.Message], dict[str, int], str]:
        transport = GatedTransport(redis_url)
        bridge = AsyncRelay(transport=transport, namespace=namespace)
        bridge.register(sig)
        async with (
            Published(redis_url, [channel_for(namespace, "shop.sent")]) as published,
            bridge,
        ):
            # Redis holds every publish; asend returns all the same.
            for n in range(3):
                await asyncio.wait_for(sig.asend(sender=Order, n=n, total=n * 1.5), 5)
            assert here.numbers() == [0, 1, 2]
            assert not await bridge.flush(timeout=0.05)
            assert published.messages == []
            transport.gate.set()
            assert await bridge.flush(timeout=20)
            messages = await published.read(3)
            stats = bridge.stats()
        from relay.origin import origin_id

        return messages, stats, origin_id()

    messages, stats, origin = run(scenario())
    assert [(m.sender, m.kwargs) for m in messages] == [
        (ORDER, {"n": n, "total": n * 1.5}) for n in range(3)
    ]
    assert {m.origin for m in messages} == {origin}
    assert [m.seq for m in messages] == [1, 2, 3]
    assert stats["published"] == 3 and stats["dropped"] == 0


def test_sync_publish_mode_awaits_redis_and_raises_its_errors(
    redis_url: str, namespace: str
) -> None:
    sig = Signal(name="a.sync")
    here = Recorder()
    sig.connect(here, weak=False)

    async def scenario() -> dict[str, int]:
        transport = GatedTransport(redis_url)
        transport.gate.set()
        async with (
            Published(redis_url, [channel_for(namespace, "a.sync")]) as published,
            AsyncRelay(transport=transport, namespace=namespace, publish="sync") as bridge,
        ):
            bridge.register(sig)
            await sig.asend(None, n=1)
            # Published before asend returned.
            assert transport.attempts == 1
            assert [m.kwargs["n"] for m in await published.read(1)] == [1]
            transport.fail = True
            with pytest.raises(TransportError, match="broker is down"):
                await sig.asend(None, n=2)
            return bridge.stats()

    stats = run(scenario())
    assert here.numbers() == [1, 2]  # the receivers ran before publishing failed
    assert (stats["published"], stats["publish_errors"], stats["dropped"]) == (1, 1, 1)


def test_send_works_from_the_loop_and_from_worker_threads(redis_url: str, namespace: str) -> None:
    trigger, echo = Signal(name="a.trigger"), Signal(name="a.echo")

    def re_send(sender: Any, n: int, **kwargs: Any) -> None:
        # A sync receiver runs in a worker thread: its send is published too.
        echo.send(sender=None, n=n * 10, thread=threading.get_ident())

    trigger.connect(re_send, weak=False)

    async def scenario() -> tuple[list[wire.Message], int]:
        async with (
            Published(redis_url, [channel_for(namespace, "a.echo")]) as published,
            AsyncRelay(redis_url, namespace=namespace) as bridge,
        ):
            bridge.register(trigger)
            bridge.register(echo)
            assert await bridge.subscribed()
            echo.send(sender=None, n=1, thread=threading.get_ident())  # on the loop's thread
            await inject(redis_url, namespace, "a.trigger", foreign("a.trigger", 1, n=2))
            messages = await published.read(2)
            return messages, threading.get_ident()

    messages, loop_thread = run(scenario())
    assert [m.kwargs["n"] for m in messages] == [1, 20]
    assert messages[0].kwargs["thread"] == loop_thread
    assert messages[1].kwargs["thread"] != loop_thread


def test_a_full_queue_drops_the_oldest_without_blocking(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.full")

    async def scenario() -> tuple[list[wire.Message], dict[str, int]]:
        transport = GatedTransport(redis_url)
        async with (
            Published(redis_url, [channel_for(namespace, "a.full")]) as published,
            AsyncRelay(transport=transport, namespace=namespace, max_queue=3) as bridge,
        ):
            bridge.register(sig)
            await sig.asend(None, n=0)
            await eventually(lambda: transport.attempts == 1)  # n=0 is being published
            for n in range(1, 6):
                await sig.asend(None, n=n)
            transport.gate.set()
            assert await bridge.flush(20)
            return await published.read(4), bridge.stats()

    messages, stats = run(scenario())
    assert [m.kwargs["n"] for m in messages] == [0, 3, 4, 5]
    assert stats["dropped"] == 2 and stats["published"] == 4


# -- lifecycle ------------------------------------------------------------------


def test_lifecycle_and_argument_errors(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.life")

    async def scenario() -> None:
        bridge = AsyncRelay(redis_url, namespace=namespace)
        bridge.register(sig)
        assert not bridge.running
        assert await bridge.start() is bridge
        assert await bridge.start() is bridge  # twice is harmless
        assert bridge.running and "AsyncRelay" in repr(bridge)
        assert await bridge.stop() is True
        assert await bridge.stop() is True
        await bridge.close()
        with pytest.raises(RuntimeError, match="create a new AsyncRelay"):
            await bridge.start()

    run(scenario())
    with pytest.raises(TypeError, match=r"AsyncRelay takes a redis\.asyncio\.Redis"):
        AsyncRelay(client=redis.Redis.from_url(redis_url), namespace=namespace)
    with pytest.raises(TypeError, match="needs a Redis URL"):
        AsyncRelay(namespace=namespace)
    with pytest.raises(ValueError, match="namespace"):
        AsyncRelay(redis_url, namespace="has space")


def test_an_unreachable_redis_fails_start(namespace: str) -> None:
    from relay.testing import free_port

    sig = Signal(name="a.none")
    sig.connect(Recorder(), weak=False)

    async def scenario() -> None:
        bridge = AsyncRelay(f"redis://127.0.0.1:{free_port()}/0", namespace=namespace)
        bridge.register(sig)
        with pytest.raises(TransportError):
            await bridge.start()
        assert not bridge.running
        await bridge.close()

    run(scenario())


def test_a_silent_connection_is_pinged_and_replaced(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.silent")
    sig.connect(Recorder(), weak=False)
    events = AsyncRecorder()

    async def scenario() -> dict[str, int]:
        with disconnected.connected_to(events):
            async with AsyncRelay(
                redis_url,
                namespace=namespace,
                health_check_interval=0.05,
                health_check_timeout=0.05,
                backoff=Fast(),
            ) as bridge:
                bridge.register(sig)
                subscription = bridge._subscription
                assert subscription is not None

                async def swallowed() -> None:
                    pass

                subscription.ping = swallowed  # type: ignore[method-assign]
                await eventually(lambda: bridge.stats()["reconnects"] >= 1)
                return bridge.stats()

    run(scenario())
    assert "no reply to PING" in events.calls[0]["reason"]


def test_reconnects_after_a_network_reset_and_publishes_what_queued(
    private_redis: RedisServer, namespace: str
) -> None:
    sig = Signal(name="faults.async")
    rec = Recorder()
    sig.connect(rec, weak=False)
    events = AsyncRecorder()

    async def scenario(proxy: FaultyProxy) -> tuple[list[wire.Message], dict[str, int]]:
        with disconnected.connected_to(events), reconnected.connected_to(events):
            async with (
                Published(private_redis.url, [channel_for(namespace, "faults.async")]) as out,
                AsyncRelay(proxy.url, namespace=namespace, backoff=Fast()) as bridge,
            ):
                bridge.register(sig)
                assert await bridge.subscribed()
                await inject(
                    private_redis.url, namespace, "faults.async", foreign("faults.async", 1, n=1)
                )
                await eventually(lambda: rec.numbers() == [1])
                proxy.refuse(True)
                proxy.drop_all()
                await eventually(lambda: bridge.stats()["disconnects"] == 1)
                for n in range(10, 13):
                    await sig.asend(None, n=n)  # queued while Redis cannot be reached
                proxy.refuse(False)
                await eventually(lambda: bridge.stats()["reconnects"] == 1)
                await inject(
                    private_redis.url, namespace, "faults.async", foreign("faults.async", 2, n=2)
                )
                await eventually(lambda: rec.numbers() == [1, 10, 11, 12, 2])
                assert await bridge.flush(30)
                sent = await out.read(5, timeout=30)  # with the two injected
                return sent, bridge.stats()

    with FaultyProxy("127.0.0.1", private_redis.port) as proxy:
        sent, stats = run(scenario(proxy))
    assert [m.kwargs["n"] for m in sent if m.origin != FOREIGN] == [10, 11, 12]
    assert stats["dropped"] == 0
    kinds = [c["signal"] for c in events.calls]
    assert kinds[0] is disconnected and reconnected in kinds


def test_durable_worker_resumes_where_it_stopped(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.durable")
    rec = Recorder()
    sig.connect(rec, weak=False)
    log = Log(f"relay:{namespace}:log", 100_000)
    publisher = RedisTransport(redis_url)

    def publish(seq: int, n: int) -> None:
        message_id = os.urandom(16)
        data = wire.encode_frame(
            [
                (
                    message_id,
                    FOREIGN,
                    seq,
                    "a.durable",
                    None,
                    time.time(),
                    wire.encode_kwargs({"n": n}),
                )
            ]
        )
        publisher.publish_many(
            [Outgoing(channel_for(namespace, "a.durable"), data, message_id.hex())], log
        )

    def worker() -> AsyncRelay:
        bridge = AsyncRelay(redis_url, namespace=namespace, durable=True, worker_id="w1")
        bridge.register(sig)
        return bridge

    async def first_run() -> None:
        async with worker() as bridge:
            await eventually(lambda: bridge._verified is not None)
            publish(1, 1)
            await eventually(lambda: rec.numbers() == [1])

    async def second_run() -> dict[str, int]:
        async with worker() as bridge:
            await eventually(lambda: rec.numbers() == [1, 2, 3, 4])
            publish(5, 5)
            await eventually(lambda: rec.numbers() == [1, 2, 3, 4, 5])
            return bridge.stats()

    run(first_run())
    for seq in (2, 3, 4):
        publish(seq, seq)  # while no worker listens
    from relay import origin

    origin.accepted.forget_all()  # the restarted worker is a new process
    stats = run(second_run())
    publisher.close()
    assert stats["replayed"] == 3 and stats["gaps"] == 0


def test_threaded_and_asyncio_bridges_of_one_process_never_fire_twice(
    redis_url: str, namespace: str
) -> None:
    sig = Signal(name="a.both")
    rec = Recorder()
    sig.connect(rec, weak=False)

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        threaded = Relay(redis_url, namespace=namespace)
        threaded.register(sig)
        with threaded:
            async with AsyncRelay(redis_url, namespace=namespace) as bridge:
                bridge.register(sig)
                assert await bridge.subscribed()
                await inject(redis_url, namespace, "a.both", foreign("a.both", 1, n=1))
                await sig.asend(None, n=2)  # published once, by the first bridge
                await eventually(
                    lambda: threaded.stats()["received"] + bridge.stats()["received"] == 2
                )
                assert threaded.flush(10)
                return threaded.stats(), bridge.stats()

    first, second = run(scenario())
    assert sorted(rec.numbers()) == [1, 2]
    assert first["published"] + second["published"] == 1
    assert first["duplicates"] + second["duplicates"] == 1


def send_when(ready: Callable[[], bool], sig: Signal) -> threading.Thread:
    """A started thread that sends ``sig`` (``n=1``) from outside the loop once ``ready()``."""

    def send() -> None:
        deadline = time.monotonic() + 20
        while not ready():
            assert time.monotonic() < deadline, "never ready to send"
            time.sleep(0.001)
        sig.send(None, n=1)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_send_once_a_stopping_bridge_is_not_running_goes_to_the_next(
    redis_url: str, namespace: str, slow_down: Callable[[object, str], None]
) -> None:
    """
    As with Relay: ``running`` turns False only once the stopping bridge is
    detached, so a thread's send made after that is the next bridge's.
    """
    sig = Signal(name="a.handover")

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        one = AsyncRelay(redis_url, namespace=namespace)
        one.register(sig)
        await one.start()
        async with AsyncRelay(redis_url, namespace=namespace) as two:
            two.register(sig)
            slow_down(one, "_detach_all")
            sender = send_when(lambda: not one.running, sig)
            await one.stop()
            await asyncio.to_thread(sender.join)
            assert await two.flush(10)
            return one.stats(), two.stats()

    first, second = run(scenario())
    assert (first["published"], second["published"]) == (0, 1)
    assert (first["dropped"], second["dropped"]) == (0, 0)


def test_a_send_once_a_restarted_bridge_is_running_is_relayed(
    redis_url: str, namespace: str, slow_down: Callable[[object, str], None]
) -> None:
    """
    As with Relay: ``running`` turns True only once a bridge started again is
    attached again, so a thread's send made after that is published.
    """
    sig = Signal(name="a.restart")

    async def scenario() -> dict[str, int]:
        bridge = AsyncRelay(redis_url, namespace=namespace)
        bridge.register(sig)
        await bridge.start()
        await bridge.stop()
        slow_down(bridge, "_attach_all")
        sender = send_when(lambda: bridge.running, sig)
        try:
            await bridge.start()
            await asyncio.to_thread(sender.join)
            assert await bridge.flush(10)
            return bridge.stats()
        finally:
            await bridge.stop()

    stats = run(scenario())
    assert (stats["published"], stats["dropped"]) == (1, 0)


def test_a_burst_of_asends_that_never_yields_loses_nothing(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.burst")

    async def scenario() -> tuple[list[wire.Message], dict[str, int]]:
        async with (
            Published(redis_url, [channel_for(namespace, "a.burst")]) as published,
            AsyncRelay(redis_url, namespace=namespace, max_queue=50) as bridge,
        ):
            bridge.register(sig)
            for n in range(3000):  # nothing else is awaited in between
                await sig.asend(None, n=n)
            assert await bridge.flush(30)
            return await published.read(3000), bridge.stats()

    messages, stats = run(scenario())
    assert [m.kwargs["n"] for m in messages] == list(range(3000))
    assert stats["dropped"] == 0 and stats["published"] == 3000


def test_the_messages_of_one_frame_fire_in_order_each_with_its_own_message(
    redis_url: str, namespace: str
) -> None:
    sig = Signal(name="a.frame")
    plain = Recorder()
    sig.connect(plain, weak=False)
    ids = [os.urandom(16) for _ in range(5)]
    data = wire.encode_frame(
        [
            (ids[n], FOREIGN, n + 1, "a.frame", None, time.time(), wire.encode_kwargs({"n": n}))
            for n in range(5)
        ]
    )

    async def scenario() -> None:
        bridge = AsyncRelay(redis_url, namespace=namespace)
        bridge.register(sig)
        async with bridge:
            await inject(redis_url, namespace, "a.frame", data)
            await eventually(lambda: bridge.stats()["fired"] == 5)

    run(scenario())
    assert plain.numbers() == [0, 1, 2, 3, 4]
    assert [c["message"].id for c in plain.calls] == [i.hex() for i in ids]


def test_a_send_after_the_loop_closed_without_stop_is_a_clear_error(
    redis_url: str, namespace: str
) -> None:
    sig = Signal(name="a.orphan")
    bridge = AsyncRelay(redis_url, namespace=namespace)
    bridge.register(sig)

    async def start_only() -> None:
        await bridge.start()  # never stopped: asyncio.run closes its loop

    run(start_only())
    with pytest.raises(RuntimeError, match="is closed, so it cannot publish"):
        sig.send(None, n=1)

    # Started again on a new loop, it works as new.
    async def start_again() -> dict[str, int]:
        async with (
            Published(redis_url, [channel_for(namespace, "a.orphan")]) as published,
            bridge,
        ):
            assert bridge.running
            await sig.asend(None, n=2)
            assert [m.kwargs["n"] for m in await published.read(1)] == [2]
            return bridge.stats()

    assert run(start_again())["published"] == 1


def test_stop_and_close_from_inside_a_receiver(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.stopper")
    results: list[bool] = []

    async def scenario() -> AsyncRelay:
        bridge = AsyncRelay(redis_url, namespace=namespace)

        async def stop_here(sender: Any, **kwargs: Any) -> None:
            results.append(await bridge.stop())
            await bridge.close()

        sig.connect(stop_here, weak=False)
        bridge.register(sig)
        await bridge.start()
        await inject(redis_url, namespace, "a.stopper", foreign("a.stopper", 1, n=1))
        await asyncio.wait_for(eventually(lambda: bool(results)), 20)
        return bridge

    bridge = run(scenario())
    assert results == [True] and not bridge.running
    with pytest.raises(RuntimeError, match="closed"):
        run(bridge.start())


def test_a_plain_send_on_the_loop_in_sync_mode_is_published(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.syncsend")

    async def scenario() -> tuple[list[wire.Message], dict[str, int]]:
        async with (
            Published(redis_url, [channel_for(namespace, "a.syncsend")]) as published,
            AsyncRelay(redis_url, namespace=namespace, publish="sync") as bridge,
        ):
            bridge.register(sig)
            sig.send(None, n=1)  # cannot wait on the loop: queued, then published
            assert await bridge.flush(20)
            return await published.read(1), bridge.stats()

    messages, stats = run(scenario())
    assert [m.kwargs["n"] for m in messages] == [1]
    assert stats["published"] == 1 and stats["dropped"] == 0


def test_receivers_connected_while_start_subscribes_are_heard(
    redis_url: str, namespace: str
) -> None:
    first, second = Signal(name="a.first"), Signal(name="a.second")
    rec_first, rec_second = Recorder(), Recorder()
    first.connect(rec_first, weak=False)

    async def scenario() -> None:
        bridge = AsyncRelay(redis_url, namespace=namespace)
        bridge.register(first)
        bridge.register(second)  # no receiver yet
        starting = asyncio.ensure_future(bridge.start())
        await asyncio.sleep(0)  # start() is now waiting for Redis to confirm
        second.connect(rec_second, weak=False)
        await starting
        assert await bridge.start() is bridge
        assert await bridge.subscribed()
        await inject(redis_url, namespace, "a.second", foreign("a.second", 1, n=2))
        await eventually(lambda: rec_second.numbers() == [2])
        await bridge.close()

    run(scenario())


def test_stop_and_close_after_the_loop_ended_without_stop(redis_url: str, namespace: str) -> None:
    sig = Signal(name="a.abandoned")
    sig.connect(Recorder(), weak=False)
    bridge = AsyncRelay(redis_url, namespace=namespace)
    bridge.register(sig)
    run(bridge.start())  # asyncio.run ends; the bridge was never stopped

    async def later() -> bool:
        stopped = await bridge.stop()
        await bridge.close()
        return stopped

    assert run(later()) is False  # nothing could be flushed on the dead loop
    assert not bridge.running and bridge._closed

    again = AsyncRelay(redis_url, namespace=namespace)
    again.register(sig)
    run(again.start())

    async def restart_then_close() -> None:
        await again.start()  # on a new loop: starts afresh
        assert again.running
        await again.close()

    run(restart_then_close())


def test_redis_closing_the_subscriber_is_a_reconnect_and_durable_catches_up(
    private_redis: RedisServer, namespace: str
) -> None:
    """CLIENT KILL while a receiver is busy: redis.asyncio resubscribes by itself."""
    got: list[int] = []
    events: list[str] = []
    busy = asyncio.Event()
    release = asyncio.Event()
    transport = RedisTransport(private_redis.url)
    log = Log(f"relay:{namespace}:log", 1000)
    started = time.time()

    def publish(seq: int) -> None:
        data = wire.encode_frame(
            [(os.urandom(16), FOREIGN, seq, "aio.kill", None, time.time(),
              wire.encode_kwargs({"n": seq}))],
            started_at=started,
        )
        item = Outgoing(channel_for(namespace, "aio.kill"), data, "", FOREIGN, seq)
        transport.publish_many([item], log)

    async def receive(sender: Any, n: int, **kwargs: Any) -> None:
        got.append(n)
        if n == 2:
            busy.set()
            await release.wait()

    async def main() -> dict[str, int]:
        sig = Signal(name="aio.kill")
        sig.connect(receive, weak=False)
        direct = redis.asyncio.Redis.from_url(private_redis.url)
        with (
            disconnected.connected_to(lambda sender, **kw: events.append("disconnected")),
            reconnected.connected_to(lambda sender, **kw: events.append("reconnected")),
        ):
            async with AsyncRelay(
                private_redis.url, namespace=namespace, durable=True, backoff=Fast()
            ) as bridge:
                bridge.register(sig)
                assert await bridge.subscribed()
                publish(1)
                publish(2)
                await asyncio.wait_for(busy.wait(), 20)
                assert await direct.client_kill_filter(_type="pubsub") == 1
                publish(3)  # nobody subscribed: lost on the wire, in the log
                release.set()
                await eventually(lambda: bridge.stats()["reconnects"] == 1)
                publish(4)
                await eventually(lambda: 4 in got)
                stats = bridge.stats()
        await direct.aclose()
        return stats

    stats = run(main())
    transport.close()
    assert got == [1, 2, 3, 4]
    assert events == ["disconnected", "reconnected"]
    assert (stats["disconnects"], stats["replayed"], stats["gaps"]) == (1, 1, 0)


def test_concurrent_senders_of_an_asyncio_process_never_make_a_gap(
    redis_url: str, namespace: str
) -> None:
    """asend on the loop and send from worker threads, sync and async modes, with refusals."""
    modes: tuple[Literal["async", "sync"], ...] = ("async", "sync")
    for mode in modes:
        name = f"aio.concurrent.{mode}"
        pubsub = redis.Redis.from_url(redis_url).pubsub()
        pubsub.subscribe(channel_for(namespace, name))
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]

        async def main(name: str, mode: Literal["async", "sync"]) -> None:
            sig = Signal(name=name)
            async with AsyncRelay(redis_url, namespace=namespace, publish=mode) as bridge:
                bridge.register(sig)

                def from_thread(first: int) -> None:
                    for n in range(first, first + 200):
                        sig.send(None, n=n)
                        if n % 50 == 0:
                            with pytest.raises(TypeError):
                                sig.send(None, n=object())  # refused: takes no number

                threads = [threading.Thread(target=from_thread, args=(k * 1000,)) for k in (1, 2)]
                for thread in threads:
                    thread.start()
                for n in range(200):
                    await sig.asend(None, n=n)
                    if n % 50 == 0:
                        with pytest.raises(TypeError):
                            await sig.asend(None, n=object())
                for thread in threads:
                    await asyncio.get_running_loop().run_in_executor(None, thread.join)
                assert await bridge.flush(20)

        run(main(name, mode))
        heard: list[tuple[int, int]] = []
        deadline = time.monotonic() + 20
        while len(heard) < 600 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                heard.extend((m.seq, m.kwargs["n"]) for m in wire.decode_frame(message["data"]))
        pubsub.close()
        assert sorted(n for _, n in heard) == [*range(200), *range(1000, 1200), *range(2000, 2200)]
        # Numbered in the order the channel carries them: no holes, no reordering.
        assert [seq for seq, _ in heard] == list(range(1, 601))


def test_start_checks_redis_in_a_process_that_only_sends(namespace: str) -> None:
    from relay.testing import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        bridge = AsyncRelay(url, namespace=namespace, socket_connect_timeout=1)
        bridge.register(Signal(name="a.send-only"))  # nothing to subscribe to
        with pytest.raises(TransportError, match=f"cannot reach Redis at {url}"):
            await bridge.start()
        assert not bridge.running
        await bridge.close()

    run(scenario())

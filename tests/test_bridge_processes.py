"""
The bridge across real processes and a real Redis: fan-out to several
workers, sender-name filtering, dispatch_uid dedup, no echo in the origin,
scope="local", bad payloads injected straight into Redis, and Redis going away.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relay import Relay, Signal, current_message
from relay.bridge import channel_for
from relay.origin import origin_id
from relay.testing import RedisServer

pytestmark = pytest.mark.redis

PROCS = Path(__file__).parent / "procs"
sys.path.insert(0, str(PROCS))

from shopmodels import Invoice, Order  # noqa: E402

DEADLINE = 60.0
WORKER_TIMEOUT = 20.0


class Worker:
    def __init__(self, url: str, namespace: str, kind: str = "threaded") -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PROCS / "worker.py"), url, namespace, kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "WORKER_TIMEOUT": str(WORKER_TIMEOUT)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise AssertionError(f"worker did not start: {line!r} {self.process.stderr.read()}")
        self.origin = line.split()[1]

    def result(self) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=DEADLINE)
        assert self.process.returncode == 0, err
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert result["heard_stop"], f"the worker never heard test.stop:\n{err}"
        return result


def stop_workers(url: str, namespace: str, workers: list[Worker]) -> list[dict[str, Any]]:
    """Send test.stop until every worker has exited (a resubscribing worker may miss one)."""
    stop = Signal(name="test.stop")
    with Relay(url, namespace=namespace, publish="sync") as bridge:
        bridge.register(stop)
        deadline = time.monotonic() + WORKER_TIMEOUT + 5
        while any(w.process.poll() is None for w in workers):
            if time.monotonic() > deadline:
                for w in workers:
                    w.process.kill()
                logs = "\n".join(w.process.communicate()[1] for w in workers)
                raise AssertionError(f"workers did not hear test.stop:\n{logs}")
            stop.send(None)
            time.sleep(0.1)
    return [w.result() for w in workers]


@pytest.fixture
def workers(redis_url: str, namespace: str) -> Iterator[list[Worker]]:
    started = [Worker(redis_url, namespace) for _ in range(3)]
    yield started
    for w in started:
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait()


@pytest.fixture
def mixed_workers(redis_url: str, namespace: str) -> Iterator[list[Worker]]:
    """A threaded worker and two asyncio ones (AsyncRelay), on one namespace."""
    started = [Worker(redis_url, namespace, kind) for kind in ("threaded", "asyncio", "asyncio")]
    yield started
    for w in started:
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait()


def send_fifty_threaded(url: str, namespace: str, order_placed: Signal) -> dict[str, int]:
    senders = [Order, "shopmodels.Order", Invoice, None, Order()]
    with Relay(url, namespace=namespace) as bridge:
        bridge.register(order_placed)
        for n in range(50):
            order_placed.send(senders[n % len(senders)], n=n, payload={"tags": ("a", "b")})
        assert bridge.flush(timeout=DEADLINE)
        return bridge.stats()


def send_fifty_asyncio(url: str, namespace: str, order_placed: Signal) -> dict[str, int]:
    from relay import AsyncRelay

    senders = [Order, "shopmodels.Order", Invoice, None, Order()]

    async def send() -> dict[str, int]:
        async with AsyncRelay(url, namespace=namespace) as bridge:
            bridge.register(order_placed)
            for n in range(50):
                await order_placed.asend(
                    senders[n % len(senders)], n=n, payload={"tags": ("a", "b")}
                )
            assert await bridge.flush(timeout=DEADLINE)
            return bridge.stats()

    return asyncio.run(send())


@pytest.mark.parametrize(
    ("sender_kind", "worker_kinds"),
    [("threaded", "threaded"), ("threaded", "mixed"), ("asyncio", "mixed")],
)
def test_fan_out_filtering_dedup_and_no_echo(
    redis_url: str, namespace: str, sender_kind: str, worker_kinds: str, request: Any
) -> None:
    """
    Threaded and asyncio processes on one namespace: whichever sends, every
    worker of either kind fires the same receivers the same way.
    """
    workers: list[Worker] = request.getfixturevalue(
        "workers" if worker_kinds == "threaded" else "mixed_workers"
    )
    order_placed = Signal(name="shop.order_placed")
    local_calls: list[tuple[Any, int, bool]] = []

    def here(sender: Any, n: int, **kwargs: Any) -> None:
        local_calls.append((sender, n, current_message() is not None))

    order_placed.connect(here)
    send = send_fifty_threaded if sender_kind == "threaded" else send_fifty_asyncio
    stats = send(redis_url, namespace, order_placed)
    results = stop_workers(redis_url, namespace, workers)
    expected = (
        ["Relay"] * 3 if worker_kinds == "threaded" else ["Relay", "AsyncRelay", "AsyncRelay"]
    )
    assert [r["kind"] for r in results] == expected

    # The origin fired its own receiver once per send, never for its own echo.
    assert [(n, remote) for _, n, remote in local_calls] == [(n, False) for n in range(50)]
    assert stats["published"] == 50 and stats["dropped"] == 0

    # scope="once": across all workers, each send ran exactly once.
    once_runs = sorted(r["n"] for worker in results for r in worker["got"].get("once", []))
    assert once_runs == list(range(50))

    # Each worker runs two bridges on the namespace, whose listener threads
    # share the messages between them: each fires once, in any order.
    everything = list(range(50))
    # Sent from Order, "shopmodels.Order" and an Order instance (named by its type).
    order_named = [n for n in everything if n % 5 in (0, 1, 4)]

    def numbers(records: list[dict[str, Any]]) -> list[int]:
        return sorted(r["n"] for r in records)

    for worker in results:
        got = worker["got"]
        assert numbers(got["any"]) == everything
        assert numbers(got["async_any"]) == everything
        assert numbers(got["failing"]) == everything
        assert all(r["remote"] for r in got["any"])
        assert {r["origin"] for r in got["any"]} == {origin_id()}
        # A receiver for Order fires for sends from Order and from "shopmodels.Order",
        # and gets the local class; one for the name fires on the same sends.
        assert numbers(got["by_class"]) == order_named
        assert {r["sender"] for r in got["by_class"]} == {"<shopmodels.Order>"}
        assert numbers(got["by_name"]) == order_named
        assert {r["sender"] for r in got["by_name"]} == {"shopmodels.Order"}
        # Any-sender receivers get the local object whose name matched, else the name.
        # Order, "shopmodels.Order" and an Order instance all arrive as the name
        # "shopmodels.Order", which the local class Order answers to.
        senders_seen = {r["n"]: r["sender"] for r in got["any"]}
        assert [senders_seen[n] for n in range(5)] == [
            "<shopmodels.Order>",
            "<shopmodels.Order>",
            "shopmodels.Invoice",  # no local receiver names Invoice: the name itself
            None,
            "<shopmodels.Order>",
        ]
        # dispatch_uid: only the first registration exists, and fires once per send.
        assert numbers(got["uid_first"]) == everything
        assert "uid_second" not in got
        assert "local_only" not in got
        # A scope="once" receiver never fires twice in one process.
        assert len(numbers(got.get("once", []))) == len(set(numbers(got.get("once", []))))
        # Two bridges on the namespace in one process: each message reached both,
        # and exactly one of them fired it.
        stats_pair = (worker["stats"], worker["twin"])
        assert sum(s["duplicates"] for s in stats_pair) == 50
        assert sum(s["receiver_errors"] for s in stats_pair) == 50
        assert all(s["rejected"] == 0 for s in stats_pair)
        if worker["kind"] == "AsyncRelay":
            # As asend runs them: sync receivers off the event loop, async ones on it.
            assert not any(r["on_loop"] for r in got["any"])
            assert all(r["on_loop"] for r in got["async_any"])


def test_bad_payloads_injected_into_redis_are_rejected(
    redis_url: str, namespace: str, workers: list[Worker]
) -> None:
    from relay import wire

    channel = channel_for(namespace, "shop.order_placed")
    good = wire.encode_frame(
        [
            (
                b"\x01" * 16,
                "forger:1:x",
                1,
                "shop.order_placed",
                None,
                time.time(),
                wire.encode_kwargs({"n": -1}),
            )
        ]
    )
    bad = [
        b"",
        b"not msgpack at all",
        good[:-3],  # truncated
        b"\x93\x07\x90\xc0",  # [7, [], nil]: unknown version
        good.replace(b"shop.order_placed", b"shop.order_plaXed"),  # another signal here
        b"\x91" * 5000 + b"\xc0",  # deeply nested
    ]
    order_placed = Signal(name="shop.order_placed")
    raw = redis.Redis.from_url(redis_url)
    with Relay(redis_url, namespace=namespace, publish="sync") as bridge:
        bridge.register(order_placed)
        for n in range(12):
            order_placed.send(None, n=n)
            raw.publish(channel, bad[n % len(bad)])
    raw.close()
    results = stop_workers(redis_url, namespace, workers)
    for worker in results:
        assert sorted(r["n"] for r in worker["got"]["any"]) == list(range(12))
        # Both bridges of the worker process saw every bad frame.
        assert worker["stats"]["rejected"] == 12
        assert worker["twin"]["rejected"] == 12


def test_redis_going_away_loses_nothing_silently(
    private_redis: RedisServer, namespace: str
) -> None:
    worker = Worker(private_redis.url, namespace)
    order_placed = Signal(name="shop.order_placed")
    stop = Signal(name="test.stop")
    fired: list[int] = []
    order_placed.connect(lambda sender, n, **kw: fired.append(n), weak=False)
    bridge = Relay(private_redis.url, namespace=namespace, max_queue=4, socket_timeout=2)
    bridge.register(order_placed)
    bridge.register(stop)
    try:
        bridge.start()
        for n in range(5):
            order_placed.send(Order, n=n)
        assert bridge.flush(timeout=DEADLINE)

        private_redis.stop()
        for n in range(5, 25):
            order_placed.send(Order, n=n)  # never raises, never blocks for long
        assert fired == list(range(25))  # local receivers fire all along
        private_redis.start()
        assert bridge.flush(timeout=DEADLINE)
        stats = bridge.stats()
        # Every message is accounted for: published, or dropped and counted.
        assert stats["published"] + stats["dropped"] == 25
        assert stats["dropped"] >= 1
        assert stats["publish_errors"] >= 1
        # The worker reconnects on its own. Until it stops, send it one more
        # order and then test.stop, in this order from this origin: once it
        # hears test.stop it has had a later order than any lost one.
        deadline = time.monotonic() + WORKER_TIMEOUT + 5
        while worker.process.poll() is None and time.monotonic() < deadline:
            order_placed.send(Order, n=100)
            stop.send(None)
            time.sleep(0.1)
    finally:
        bridge.stop()
    result = worker.result()
    heard = {r["n"] for r in result["got"]["by_class"]}
    assert 100 in heard
    # What was sent before the outage arrived, or is reported lost: a SIGKILL
    # can cut off a message Redis had acknowledged but not yet written to the
    # worker. The n-th order is number n + 1 of this origin's orders.
    reported = [
        (g["first_missing"], g["first_missing"] + g["count"])
        for g in result["gaps"]
        if g["origin"] == origin_id() and g["signal_name"] == "shop.order_placed"
    ]
    for n in set(range(5)) - heard:
        assert any(first <= n + 1 < end for first, end in reported), (n, result["gaps"])
    # So is everything sent during it: queued and published later, or
    # dropped by the sender's full queue and reported lost by the worker.
    for n in set(range(5, 25)) - heard:
        assert any(first <= n + 1 < end for first, end in reported), (n, result["gaps"])


def _forked_child(bridge: Relay, sig: Signal, queue: Any) -> None:
    # The parent's bridge was running; here its threads do not exist.
    was_running = bridge.running
    bridge.start()
    sig.send(None, n=os.getpid())
    bridge.stop()
    queue.put((was_running, origin_id(), bridge.stats()["published"]))


def test_a_forked_child_runs_its_own_bridge_as_a_new_origin(redis_url: str, namespace: str) -> None:
    import multiprocessing

    sig = Signal(name="fork.ping")
    heard: list[tuple[int, str | None]] = []

    def receiver(sender: Any, n: int, **kwargs: Any) -> None:
        message = current_message()
        heard.append((n, message.origin if message else None))

    sig.connect(receiver)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with Relay(redis_url, namespace=namespace) as bridge:
        bridge.register(sig)
        sig.send(None, n=0)  # the parent's own send, fired locally
        assert bridge.flush(timeout=DEADLINE)
        child = context.Process(target=_forked_child, args=(bridge, sig, queue))
        child.start()
        was_running, child_origin, child_published = queue.get(timeout=DEADLINE)
        child.join(DEADLINE)
        assert child.exitcode == 0
        deadline = time.monotonic() + DEADLINE
        while len(heard) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert was_running is False
    assert child_origin != origin_id() and f":{child.pid}:" in child_origin
    assert child_published == 1  # the child published its own send, not the parent's
    # The parent heard the child's send as a remote one, exactly once.
    assert heard == [(0, None), (child.pid, child_origin)]

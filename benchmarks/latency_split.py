"""
Where relay's one-way latency at a low send rate goes: each producer (raw
redis-py PUBLISH of relay frames, relay ``publish="async"``, relay
``publish="sync"``) into each consumer (raw redis-py pub/sub that unpacks the
frames, a relay ``Relay``), one message every 2 ms, p50 per pairing, in
interleaved rounds, against a private ``redis-server`` on loopback::

    python benchmarks/latency_split.py [--rounds 3] [--messages 600]

and how long a thread woken by ``Condition.notify`` takes to run, which the
async publisher pays once per message when it is idle. The README's "Across
processes" quotes it.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import statistics
import threading
import time
from typing import Any

import msgpack
import redis
from _harness import paced

from relay import Relay, Signal, wire
from relay.core import channel_for
from relay.testing import RedisServer

NAMESPACE = "latency-split"
SIGNAL = "latency.split"
PERIOD_NS = 2_000_000
PRODUCERS = ("raw", "relay-async", "relay-sync")
CONSUMERS = ("raw", "relay")


def consume(kind: str, url: str, count: int, ready: Any, out: Any) -> None:
    delays: list[int] = []

    def hit(sent_ns: int) -> None:
        delays.append(time.perf_counter_ns() - sent_ns)

    if kind == "relay":
        sig = Signal(name=SIGNAL)
        bridge = Relay(url, namespace=NAMESPACE)
        bridge.register(sig)
        sig.connect(lambda sender, t, **kwargs: hit(t), weak=False)
        bridge.start()
        ready.set()
        while len(delays) < count:
            time.sleep(0.05)
        bridge.close()
    else:
        pubsub = redis.Redis.from_url(url).pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(channel_for(NAMESPACE, SIGNAL))
        pubsub.get_message(timeout=1)
        ready.set()
        while len(delays) < count:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                for fields in msgpack.unpackb(message["data"])[2]:
                    hit(fields[5]["t"])
    out.put(statistics.median(delays[count // 10 :]) / 1000)


def produce(kind: str, url: str, count: int) -> None:
    if kind == "raw":
        client = redis.Redis.from_url(url)
        channel, origin = channel_for(NAMESPACE, SIGNAL), f"raw:{os.getpid()}:0"

        def send(i: int) -> None:
            body = wire.encode_kwargs({"t": time.perf_counter_ns()})
            message = (os.urandom(16), origin, i + 1, SIGNAL, None, time.time(), body)
            client.publish(channel, wire.encode_frame([message]))

        close: Any = client.close
    else:
        sig = Signal(name=SIGNAL)
        bridge = Relay(url, namespace=NAMESPACE, publish=kind.split("-")[1])
        bridge.register(sig)
        bridge.start()

        def send(i: int) -> None:
            sig.send(None, t=time.perf_counter_ns())

        close = bridge.close
    paced(count + 50, PERIOD_NS, send)  # a few more: the consumer counts only `count`
    time.sleep(0.3)
    close()


def thread_wake_p50(count: int = 1000) -> float:
    """µs from Condition.notify() until the woken thread runs, median."""
    condition = threading.Condition()
    queue: collections.deque[int | None] = collections.deque()
    delays: list[int] = []

    def worker() -> None:
        while True:
            with condition:
                while not queue:
                    condition.wait()
                sent = queue.popleft()
            if sent is None:
                return
            delays.append(time.perf_counter_ns() - sent)

    thread = threading.Thread(target=worker)
    thread.start()

    def notify(_: int) -> None:
        with condition:
            queue.append(time.perf_counter_ns())
            condition.notify()

    paced(count, PERIOD_NS, notify)
    with condition:
        queue.append(None)
        condition.notify()
    thread.join()
    return statistics.median(delays) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=600)
    config = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    with RedisServer() as server:
        for _ in range(config.rounds):
            for producer in PRODUCERS:
                for consumer in CONSUMERS:
                    ready, out = mp.Event(), mp.Queue()
                    receiving = mp.Process(
                        target=consume, args=(consumer, server.url, config.messages, ready, out)
                    )
                    receiving.start()
                    ready.wait(30)
                    time.sleep(0.3)
                    sending = mp.Process(
                        target=produce, args=(producer, server.url, config.messages)
                    )
                    sending.start()
                    results.setdefault((producer, consumer), []).append(out.get(timeout=120))
                    sending.join()
                    receiving.join()
    print(f"p50 one-way latency, µs, one message every {PERIOD_NS / 1e6:g} ms")
    print("| producer | consumer | p50 (median of rounds) | per round |")
    print("|---|---|---:|---|")
    for (producer, consumer), values in results.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {producer} | {consumer} | {statistics.median(values):.0f} | {rounds} |")
    print(f"thread wake-up after Condition.notify, p50: {thread_wake_p50():.1f} µs")


if __name__ == "__main__":
    main()

"""
One process of ``bench_relay.py --presence-cost``: not a benchmark itself.

Run as ``python benchmarks/_presence_worker.py consumer|producer SPEC_JSON`` by the
orchestrator, with ``PYTHONPATH`` naming the relay source tree to measure: this
file imports nothing of the benchmark harness, so the same consumer code runs
against this revision's relay and against an older one (whose ``Relay`` may know
no ``heartbeat`` argument and have no ``relay.contrib.prometheus``).

Protocol on stdout, one line each: ``READY`` once the consumer has subscribed,
then ``RESULT {json}``. The consumer's stdin gets one line when the producer is
done; from then on it gives up once ``grace`` seconds pass with no new message.

CPU is ``resource.getrusage(RUSAGE_SELF)`` (user + system, every thread of the
process: listener, publisher, presence heartbeats, the scraper) over the timed
window: the consumer's from its first timed receive to its last, the producer's
from its first timed send until 0.3 s after its flush.

Spec keys: ``url``, ``namespace``, ``n``, ``heartbeat`` (seconds, or None: do not
pass the argument), ``metrics`` (register relay's Prometheus collector on a
private registry and ``generate_latest`` it every ``scrape_period`` seconds from a
thread), ``scrape_period``, ``grace``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from typing import Any

SIGNAL_NAME = "bench.ping"
WARMUP = 200
WARMUP_PAUSE = 0.2


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_bridge(spec: dict[str, Any]) -> Any:
    from relay import Relay

    # A send waits up to 30 s for room in a full queue instead of dropping after
    # 0.1 s: a long run on a loaded machine then measures backpressure, not drops.
    options: dict[str, Any] = {
        "namespace": spec["namespace"],
        "publish": "async",
        "queue_wait": 30.0,
    }
    if spec["heartbeat"] is not None:
        options["heartbeat"] = spec["heartbeat"]
    return Relay(spec["url"], **options)


class Scraper:
    """relay's collector on a private registry, scraped every ``period`` seconds."""

    def __init__(self, bridge: Any, period: float) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        from relay.contrib.prometheus import register

        self.registry = CollectorRegistry()
        register(bridge, registry=self.registry)
        self._generate = generate_latest
        self.period = period
        self.scrapes = 0
        self.scrape_seconds = 0.0  # wall time inside generate_latest
        self.size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> None:
        self._generate(self.registry)  # fail here, not silently in the thread
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            started = time.perf_counter()
            self.size = len(self._generate(self.registry))
            self.scrape_seconds += time.perf_counter() - started
            self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def beats(bridge: Any) -> int:
    """Heartbeats this bridge has sent so far (0 where relay has no presence)."""
    return int(getattr(bridge, "_beats", 0))


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Tally:
    """Every ``n`` exactly once? With the CPU and wall clocks of the timed window."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.hits = bytearray(total)
        self.count = 0
        self.warm = 0
        self.stray = 0
        self.first_ns = 0
        self.last_ns = 0
        self.cpu_start = 0.0
        self.cpu_end = 0.0
        self.at_start: tuple[int, int] = (0, 0)
        self.at_end: tuple[int, int] = (0, 0)
        self.counters: Any = lambda: (0, 0)
        self.done = threading.Event()

    def hit(self, n: int) -> None:
        now = time.time_ns()
        if n < 0:
            self.warm += 1
            return
        if self.count == 0:
            self.first_ns = now
            self.cpu_start = cpu_seconds()
            self.at_start = self.counters()
        self.count += 1
        self.last_ns = now
        if n < self.total:
            if self.hits[n] < 255:
                self.hits[n] += 1
        else:
            self.stray += 1
        if self.count == self.total:
            self.finish()

    def finish(self) -> None:
        if not self.done.is_set():
            self.cpu_end = cpu_seconds()
            self.at_end = self.counters()
            self.done.set()


def consume(spec: dict[str, Any]) -> dict[str, Any]:
    from relay import Signal

    tally = Tally(spec["n"])
    sig = Signal(name=SIGNAL_NAME)
    bridge = make_bridge(spec)
    bridge.register(sig)
    hit = tally.hit

    def on_message(sender: object, n: int, **kwargs: Any) -> None:
        hit(n)

    sig.connect(on_message, weak=False)
    scraper = Scraper(bridge, spec["scrape_period"]) if spec["metrics"] else None
    tally.counters = lambda: (beats(bridge), scraper.scrapes if scraper else 0)
    bridge.start()
    if scraper is not None:
        scraper.start()
    producer_done = threading.Event()

    def read_stdin() -> None:
        sys.stdin.readline()
        producer_done.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    emit("READY")
    # Once the producer is done, give up only after ``grace`` seconds with no new
    # message: a consumer still working through a backlog is not cut off.
    seen, quiet_since = -1, time.monotonic()
    while not tally.done.wait(0.05):
        if tally.count != seen:
            seen, quiet_since = tally.count, time.monotonic()
        elif producer_done.is_set() and time.monotonic() - quiet_since > spec["grace"]:
            break
    tally.finish()
    stats = bridge.stats()
    if scraper is not None:
        scraper.stop()
    bridge.close()
    missing = tally.hits.count(0)
    return {
        "received": tally.count,
        "unique": tally.total - missing,
        "missing": missing,
        "duplicates": sum(h - 1 for h in tally.hits if h > 1),
        "stray": tally.stray,
        "warmup_received": tally.warm,
        "first_recv_ns": tally.first_ns,
        "last_recv_ns": tally.last_ns,
        "cpu_s": tally.cpu_end - tally.cpu_start,
        "heartbeats": tally.at_end[0] - tally.at_start[0],
        "scrapes": tally.at_end[1] - tally.at_start[1],
        "scrape_s": scraper.scrape_seconds if scraper else 0.0,
        "scrape_bytes": scraper.size if scraper else 0,
        "bridge_stats": stats,
        "relay_file": sys.modules["relay"].__file__,
    }


def produce(spec: dict[str, Any]) -> dict[str, Any]:
    from relay import Signal

    sig = Signal(name=SIGNAL_NAME)
    bridge = make_bridge(spec)
    bridge.register(sig)
    scraper = Scraper(bridge, spec["scrape_period"]) if spec["metrics"] else None
    bridge.start()
    if scraper is not None:
        scraper.start()
    bridge.transport.check()
    send = sig.send
    for i in range(WARMUP):
        send(None, n=-1 - i, b="x", c=2.5, d=None, e=True)
    bridge.flush(30)
    time.sleep(WARMUP_PAUSE)
    stats0 = bridge.stats()
    beats0, scrapes0 = beats(bridge), scraper.scrapes if scraper else 0
    cpu0 = cpu_seconds()
    t0 = time.time_ns()
    for i in range(spec["n"]):
        send(None, n=i, b="x", c=2.5, d=None, e=True)
    sent = time.time_ns()
    flushed_in_time = bridge.flush(120)
    flushed = time.time_ns()
    time.sleep(0.3)  # this process's listener decodes (and drops) its own echoes
    cpu1 = cpu_seconds()
    beats1, scrapes1 = beats(bridge), scraper.scrapes if scraper else 0
    stats = bridge.stats()
    if scraper is not None:
        scraper.stop()
    bridge.close()
    return {
        "t0_ns": t0,
        "sent_ns": sent,
        "flushed_ns": flushed,
        "flushed_in_time": flushed_in_time,
        "cpu_s": cpu1 - cpu0,
        "heartbeats": beats1 - beats0,
        "scrapes": scrapes1 - scrapes0,
        "dropped": stats.get("dropped", 0) - stats0.get("dropped", 0),
        "relay_file": sys.modules["relay"].__file__,
    }


class _Sent:
    __slots__ = ("sent_at",)

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at


def micro(spec: dict[str, Any]) -> dict[str, Any]:
    """
    In-process costs, each the best of 7 repeats: ``SignalMeter.observe`` per
    message (batches of 100), and the CPU (``time.process_time``) of one
    heartbeat (build, sign, HSET) and of one scrape (``generate_latest`` of
    relay's collector) of a bridge that has heard one signal.
    """
    import timeit

    from prometheus_client import CollectorRegistry, generate_latest

    from relay import Signal
    from relay.contrib.prometheus import register
    from relay.presence import SignalMeter

    batch = [_Sent(time.time() - 0.002) for _ in range(100)]
    meter, now = SignalMeter(), time.time()
    repeats = timeit.repeat(lambda: meter.observe(now, batch), number=2000, repeat=7)
    observe_us = min(repeats) / (2000 * len(batch)) * 1e6

    sig = Signal(name=SIGNAL_NAME)
    bridge = make_bridge({**spec, "heartbeat": 0.0})
    bridge.register(sig)
    bridge.start()
    try:
        send = sig.send
        for i in range(1000):
            send(None, n=i)
        bridge.flush(30)
        registry = CollectorRegistry()
        register(bridge, registry=registry)

        def cpu_per_call(call: Any, number: int) -> float:
            best = float("inf")
            for _ in range(7):
                started = time.process_time()
                for _ in range(number):
                    call()
                best = min(best, (time.process_time() - started) / number)
            return best * 1e6

        heartbeat_us = cpu_per_call(lambda: bridge._drive(bridge._heartbeat_steps()), 200)
        scrape_us = cpu_per_call(lambda: generate_latest(registry), 200)
    finally:
        bridge.close()
    return {"observe_us": observe_us, "heartbeat_us": heartbeat_us, "scrape_us": scrape_us}


def main() -> int:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    roles = {"consumer": consume, "producer": produce, "micro": micro}
    result = roles[role](spec)
    emit("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

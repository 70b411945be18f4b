"""
Cross-process benchmark: relay against raw redis-py and channels_redis, over a
private Redis on loopback.

How to run (from the repository root)::

    .venv/bin/python benchmarks/bench_relay.py                     # 7 rounds, ~3-4 minutes
    .venv/bin/python benchmarks/bench_relay.py --quick             # small N, 3 rounds (smoke)
    .venv/bin/python benchmarks/bench_relay.py --rounds 9 --json bench-relay.json
    .venv/bin/python benchmarks/bench_relay.py --profile /tmp/relay-prof   # profile relay only
    .venv/bin/python benchmarks/bench_relay.py --presence-cost --rounds 11  # heartbeats, metrics

Options:

    --messages N          messages per batched throughput run: relay async, raw pipelined,
                          floor consumer (default 200,000, about a second of sending,
                          which CPU per message needs to be steady; 3,000 with --quick)
    --sequential-messages N  messages per sequential run: relay sync, raw sequential
                          (default 20,000: one round trip each; 3,000 with --quick)
    --channels-messages N messages per channels_redis run (default 2,000: it is slow)
    --latency-messages N  paced messages per latency run (default 1,000; 300 with --quick)
    --period-ms MS        the pause between two paced sends (default 2 ms)
    --channels-capacity C channels_redis capacity per channel (default N+10; its own
                          default, 100, silently drops what does not fit: try it)
    --rounds R            interleaved rounds (default 7, the least issue 14 accepts;
                          3 with --quick)
    --quick               the small sizes above, for a smoke test
    --json PATH           also write the configuration, the environment, every run of every
                          round (timestamps, counts, CPU, latency samples, floor passes),
                          medians, ratios and verdicts to PATH
    --profile DIR         do not benchmark: run relay async and relay sync throughput once
                          each with cProfile on every thread of the producer and consumer,
                          write the .pstats files to DIR and print the top functions
    --presence-cost       do not run the contenders above: measure what presence
                          heartbeats and Prometheus metrics cost relay async (below);
                          N defaults to 1,000,000, so that a run spans a 5 s heartbeat
                          (20,000 with --quick), rounds to 7 (3 with --quick)
    --baseline-tree DIR   with --presence-cost, also run the consumer on the relay
                          package of DIR (an older checkout, e.g. a ``git worktree`` of
                          the commit before presence) to show the always-on per-message
                          meter's cost
    --scrape-period S     with --presence-cost, seconds between two scrapes (default 1)
    --tree DIR            with --presence-cost, the relay tree (PYTHONPATH) of the off, on
                          and stressed workers and of every producer (default: this
                          repository; a copy keeps a run on one version of the code
                          while the checkout changes)

The script starts its own ``redis-server`` on a free loopback port
(``relay.testing.RedisServer``, nothing saved to disk) and never touches another
server. Every run of every contender uses two fresh processes (``multiprocessing``,
spawn context): a consumer, which subscribes and then signals that it is ready, and
only then a producer. Before its timed part the producer sends 200 warm-up messages
(negative ``n``; the consumer counts them apart), waits for them to be published and
pauses 0.2 s, so connections are open and code paths warm on both sides.

Every relay producer and consumer is a ``Relay`` bridge with the defaults, so presence
(``heartbeat=5.0``) and loss accounting (numbering, gap detection: always on) run in
every relay process and their cost is in every figure; a bridge whose presence is off
is refused (the run fails), and the report gives the heartbeat periods seen and the
consumers' ``received``, ``gaps`` and ``missed`` counters.

Every message carries the same five small keyword arguments
``n=i, b="x", c=2.5, d=None, e=True`` (latency runs add ``t=time.time_ns()``). The
consumer keeps a tally of each ``n``: a run is checked for every message arriving
exactly once, and any missing, duplicated or dropped message is reported and makes
the exit code 1.

Throughput contenders (delivered msgs/s = N / (last receive - first send), both
taken with ``time.time_ns()`` in their own process: one host, one clock):

    relay async      producer: ``sig.send(None, **kw)`` N times then ``bridge.flush()``,
                     on a ``Relay(url, namespace=..., publish="async")`` (defaults
                     otherwise: the background publisher batches up to 1,000 messages
                     per pipeline and packs them into frames). Consumer: another
                     ``Relay`` whose listener thread fires a counting receiver
                     (``sig.connect(fn)``) for each message.
    relay sync       the same with ``publish="sync"``: every ``send`` PUBLISHes one
                     frame of one message before it returns.
    raw sequential   producer: ``client.publish(channel, msgpack.packb(kw))`` per
                     message (redis-py, hiredis parser). Consumer: a plain
                     ``pubsub.get_message(timeout=...)`` loop that ``msgpack.unpackb``s
                     each payload and counts it.
    raw pipelined    the same producer with ``client.pipeline(transaction=False)``,
                     100 PUBLISHes per ``execute()``; the same consumer.
    floor consumer   the relay async producer, into a bare consumer: a redis-py
                     ``pubsub`` on the signal's channel that ``msgpack.unpackb``s each of
                     relay's real frames and calls the counting receiver once per
                     message, ``receiver(signal=sig, sender=None, **kwargs)``: the
                     cross-process unpack-and-call floor (no checks, no accounting,
                     no dispatch, no presence).
    channels_redis   ``channels_redis.core.RedisChannelLayer`` (the core layer, not the
                     pub/sub one) with ``capacity=N+10`` (the default is 100 per
                     channel, and over capacity it drops silently): the consumer adds a
                     new channel to a group and loops on ``await layer.receive()``; the
                     producer awaits ``layer.group_send(group, {"type": "bench.msg",
                     **kw})`` N times. Run with fewer messages (reported) as it is slow.

Latency contenders (relay async, relay sync, raw sequential): the producer sends one
message every ``--period-ms`` (absolute schedule, ``time.sleep`` in between), each
with ``t=time.time_ns()`` taken just before the send; the consumer records
``time.time_ns() - t`` when its receiver runs. p50 and p99 in µs.

The unpack-and-call floor (in-process, its own job in every round): a fresh process
makes N messages into frames of 100 with ``relay.wire`` (``encode_kwargs``,
``encode_frame`` with the header's start time: six-field messages, as a relay
producer sends them), then, after a warm-up pass, makes 5 timed passes with each of
two receivers (alternating): ``msgpack.unpackb`` every frame and call
``receiver(signal=sig, sender=None, **kwargs)`` for every message. The counting
receiver is the benchmark consumers' own (``Tally.hit``: a clock read and the tally),
so that relay's consumer minus this floor is what relay adds; the no-op receiver is
the issue's floor to the letter. CPU per message by getrusage (process_time recorded
too), the median pass per round.

Rounds: every round runs every job (throughput, latency, floor) once, in an order
that rotates from round to round; the tables give the median over rounds and the
min-max. Ratios for the targets are paired: one ratio per round from two runs of
that round, then the median (the ratio of the medians is shown too).

CPU: the per-process table is ``getrusage(RUSAGE_SELF)`` (user + system, every
thread: listener, publisher, presence) of each process over its timed window,
per message, median and min-max over rounds; it is what the targets use, as issue 14
asks (steadier than rates on a shared machine). The producer's window runs from its
first timed send until its last publish is done (relay: after ``flush()`` and 0.3 s
for its own listener to skip its echoes); the consumer's from the arrival of the last
warm-up message (0.2 s before the first timed send, so that the decoding of the first
timed frame is inside) to its last timed receive; consumer CPU is per delivered
message. The thread table, kept because it says where the time goes, gives CPU time
per message of each thread over the same windows (thread CPU clocks, no profiler
attached; threads that end early and the presence thread are not in its columns), and
of redis-server (its /proc schedstat).

Targets (issue 14), each the median over the rounds of a per-round value, with its
min-max, a verdict and the margin to the limit:

    relay async consumer CPU per delivered message        <= 4.0 µs (floors beside)
    relay async producer CPU per message                  <= 4.0 µs
    relay async delivered / raw pipelined delivered       >= 2.5x (paired)
    relay async p50 latency / raw sequential p50 latency  <= 1.15x (paired; 500 msg/s
                                                          at the default --period-ms)
    relay sync delivered / raw sequential delivered       >= 0.95x (paired)

The consumer CPU is also shown against the three floors (in-process counting and no-op
receivers, cross-process floor consumer): paired per-round ratio and difference.

Presence cost (``--presence-cost``): relay async throughput into one consumer, N
messages, in these configurations, one run of each per round in a rotating order:

    off              both processes ``heartbeat=0``, no metrics.
    on               the default ``heartbeat=5.0``, and relay's Prometheus collector
                     (``relay.contrib.prometheus.register`` on a private
                     ``CollectorRegistry``) in both processes, each scraped with
                     ``prometheus_client.generate_latest`` every ``--scrape-period``
                     seconds from a thread for the whole run.
    stressed         the same with ``heartbeat=0.5``, so that heartbeats land in the
                     timed window and their cost shows.
    baseline         (with ``--baseline-tree``) the ``off`` producer, and a consumer
                     running the same code on the older relay (no heartbeat argument,
                     no meters): the per-message meter of this revision, which cannot
                     be switched off, is the difference to ``off``.

These workers are ``benchmarks/_presence_worker.py`` subprocesses (``PYTHONPATH``
names the relay tree), not ``multiprocessing`` ones, so each can import its own
relay. CPU per message is each process's ``getrusage(RUSAGE_SELF)`` (user + system,
every thread: heartbeats and scrapes included) over its timed window, which is
steadier than a rate on a shared machine. Ratios to ``off`` are paired per round;
the report gives their median and min-max, and whether the delivered rate of ``on``
is within 5 % of ``off``. Both sides' sends wait up to 30 s for room in a full queue
(``queue_wait=30``) and redis-server has no pub/sub output-buffer limit, so that
runs of a million messages on a loaded machine slow down rather than drop.

Exit code: 0 if everything ran and every message arrived exactly once, whatever the
targets say; 1 if a run crashed or timed out (or ran a relay bridge with presence off,
or a floor pass missed a message), or a message was lost or duplicated.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import cProfile
import io
import json
import math
import multiprocessing as mp
import os
import pstats
import queue
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import redis
from _harness import (
    CONSUMER_GRACE,
    READY_TIMEOUT,
    SIGNAL_NAME,
    WARMUP,
    WARMUP_PAUSE,
    Result,
    Spec,
    TallyBase,
    collect,
    conclude,
    describe_loss,
    environment,
    fmt_number,
    good_runs,
    latency_summary,
    median,
    new_run,
    paced,
    paired_ratios,
    progress,
    run_job,
    run_metric,
    run_rounds,
    spread,
)

from relay import Relay, Signal, wire
from relay.bridge import channel_for
from relay.testing import RedisServer

THROUGHPUT = (
    "relay async",
    "relay sync",
    "raw sequential",
    "raw pipelined",
    "floor consumer",
    "channels_redis",
)
LATENCY = ("relay async", "relay sync", "raw sequential")
FLOOR = "unpack-and-call"  # the in-process floor, its own job in every round
FLOOR_BATCH = 100  # messages per frame of the floor
FLOOR_PASSES = 5  # timed passes over N messages per receiver, per round (median taken)


# -- measuring helpers (run in the worker processes) ---------------------------


def _thread_label(name: str) -> str:
    if name == "MainThread":
        return "main"
    for prefix in ("relay-publisher", "relay-listener"):
        if name.startswith(prefix):
            return prefix.removeprefix("relay-")
    return name


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each live thread of this process, by label."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            label = _thread_label(thread.name)
            out[label] = out.get(label, 0.0) + time.clock_gettime(clock)
        except (OSError, ValueError):
            continue
    return out


def server_cpu(pid: int) -> float:
    """CPU seconds redis-server (its main thread) has used, or NaN if unreadable."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def process_cpu() -> float:
    """CPU seconds (user + system, every thread) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Tally(TallyBase):
    """What the consumer received: every ``n`` (exactly once?), timings, latencies."""

    def __init__(self, total: int, redis_pid: int) -> None:
        super().__init__(total)
        self.redis_pid = redis_pid
        self.latencies = array.array("q")
        self.cpu_start: dict[str, float] = {}
        self.cpu_end: dict[str, float] = {}
        self.process_start = math.nan
        self.process_end = math.nan
        self.started = False
        self.server_start = math.nan
        self.server_end = math.nan

    def start_window(self) -> None:
        """The consumer's timed window starts: take the opening CPU readings."""
        self.started = True
        self.cpu_start = thread_cpu()
        self.process_start = process_cpu()
        self.server_start = server_cpu(self.redis_pid)

    def hit(self, n: int, t: int = 0) -> None:
        now = time.time_ns()
        if n < 0:
            self.warm += 1
            if self.warm == WARMUP:  # the last warm-up message: the window opens
                self.start_window()
            return
        if self.count == 0:
            self.first_ns = now
            if not self.started:  # a warm-up message went missing
                self.start_window()
        self.count += 1
        self.last_ns = now
        if t:
            self.latencies.append(now - t)
        if n < self.total:
            if self.hits[n] < 255:
                self.hits[n] += 1
        else:
            self.stray += 1
        if self.count == self.total:
            self.finish()

    def finish(self) -> None:
        if not self.done.is_set():
            self.process_end = process_cpu()
            self.cpu_end = thread_cpu()
            self.server_end = server_cpu(self.redis_pid)
            self.done.set()

    def report(self) -> Result:
        return {
            **self.counts(),
            "latencies_ns": list(self.latencies),
            "cpu": cpu_delta(self.cpu_start, self.cpu_end),
            "process_cpu_s": self.process_end - self.process_start,
            "server_cpu_end": self.server_end,
        }


class ThreadProfiles:
    """cProfile on every thread of a process: the current one and every one started later."""

    def __init__(self) -> None:
        self.profiles: list[tuple[str, cProfile.Profile]] = []
        self._lock = threading.Lock()
        self._main = cProfile.Profile()

    def start(self) -> None:
        threading.setprofile(self._boot)
        self._main.enable()

    def _boot(self, frame: Any, event: str, arg: Any) -> None:
        profile = cProfile.Profile()
        with self._lock:
            self.profiles.append((_thread_label(threading.current_thread().name), profile))
        profile.enable()  # replaces this bootstrap hook, in this thread only

    def dump(self, directory: Path, stem: str) -> str:
        """Write one .pstats per thread (call once the other threads are gone)."""
        threading.setprofile(None)
        self._main.disable()
        text = io.StringIO()
        directory.mkdir(parents=True, exist_ok=True)
        for label, profile in [("main", self._main), *self.profiles]:
            stats = pstats.Stats(profile, stream=text)
            if not stats.stats:  # type: ignore[attr-defined]
                continue
            path = directory / f"{stem}-{label}.pstats"
            stats.dump_stats(path)
            text.write(f"\n### {stem} thread {label} ({path})\n")
            stats.sort_stats("tottime").print_stats(18)
        return text.getvalue()


def _kwargs(i: int) -> dict[str, Any]:
    return {"n": i, "b": "x", "c": 2.5, "d": None, "e": True}


# -- consumers -------------------------------------------------------------------


def _consume_relay(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = Relay(spec["url"], namespace=spec["namespace"], publish=spec["publish"])
    bridge.register(sig)
    hit = tally.hit

    def on_message(sender: object, n: int, t: int = 0, **kwargs: Any) -> None:
        hit(n, t)

    sig.connect(on_message, weak=False)
    presence_on(bridge)
    bridge.start()
    ready.set()
    tally.wait(producer_done)
    stats = bridge.stats()
    bridge.close()
    return {"bridge_stats": stats, "heartbeat": bridge.heartbeat}


def presence_on(bridge: Relay) -> None:
    """Refuse to measure a bridge whose presence is off: its cost is part of the budget."""
    if not bridge.heartbeat > 0:
        raise RuntimeError(f"presence is off (heartbeat={bridge.heartbeat!r}): not measured")


def _subscribed(client: redis.Redis, channel: str) -> Any:
    """A pub/sub of ``channel`` whose SUBSCRIBE is confirmed (a barrier)."""
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 10
    while True:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "subscribe":
            return pubsub
        if time.monotonic() > deadline:
            raise RuntimeError("no SUBSCRIBE confirmation")


def _consume_floor(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    """The cross-process floor: relay's real frames, unpacked and called, nothing else.

    Subscribes to the relay producer's channel with plain redis-py, ``msgpack.unpackb``s
    each frame and calls the benchmark's receiver once per message with its keyword
    arguments: no checks, no accounting, no presence, no dispatch.
    """
    client = redis.Redis.from_url(spec["url"])
    pubsub = _subscribed(client, channel_for(spec["namespace"], SIGNAL_NAME))
    ready.set()
    sig = Signal(name=SIGNAL_NAME)
    hit = tally.hit

    def on_message(sender: object, n: int, t: int = 0, **kwargs: Any) -> None:
        hit(n, t)

    get_message, unpackb, total = pubsub.get_message, msgpack.unpackb, tally.total
    give_up_at = math.inf
    while tally.count < total:
        message = get_message(timeout=0.1)
        if message is None:
            if producer_done.is_set():
                give_up_at = min(give_up_at, time.monotonic() + CONSUMER_GRACE)
                if time.monotonic() > give_up_at:
                    break
            continue
        if message["type"] == "message":
            for m in unpackb(message["data"])[2]:
                on_message(signal=sig, sender=None, **m[5])
    tally.finish()
    pubsub.close()
    client.close()
    return {}


def _consume_raw(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    client = redis.Redis.from_url(spec["url"])
    pubsub = _subscribed(client, spec["channel"])
    ready.set()
    get_message, unpackb, hit, total = pubsub.get_message, msgpack.unpackb, tally.hit, tally.total
    give_up_at = math.inf
    while tally.count < total:
        message = get_message(timeout=0.1)
        if message is None:
            if producer_done.is_set():
                give_up_at = min(give_up_at, time.monotonic() + CONSUMER_GRACE)
                if time.monotonic() > give_up_at:
                    break
            continue
        if message["type"] == "message":
            kw = unpackb(message["data"])
            hit(kw["n"], kw.get("t", 0))
    tally.finish()
    pubsub.close()
    client.close()
    return {}


async def _consume_channels_async(
    spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent
) -> Result:
    from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]

    layer = RedisChannelLayer(hosts=[spec["url"]], capacity=spec["capacity"])
    channel = await layer.new_channel()
    await layer.group_add(spec["group"], channel)
    ready.set()

    async def loop() -> None:
        receive, hit, total = layer.receive, tally.hit, tally.total
        while tally.count < total:
            message = await receive(channel)
            hit(message["n"], message.get("t", 0))

    task = asyncio.ensure_future(loop())
    give_up_at = math.inf
    while not task.done():
        await asyncio.wait({task}, timeout=0.1)
        if producer_done.is_set():
            give_up_at = min(give_up_at, time.monotonic() + CONSUMER_GRACE)
            if time.monotonic() > give_up_at:
                task.cancel()
                break
    with contextlib.suppress(asyncio.CancelledError):
        await task
    tally.finish()
    await layer.group_discard(spec["group"], channel)
    await layer.close_pools()
    return {}


def _consume_channels(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    return asyncio.run(_consume_channels_async(spec, tally, ready, producer_done))


# -- producers -------------------------------------------------------------------


def _produce_relay(spec: Spec) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = Relay(spec["url"], namespace=spec["namespace"], publish=spec["publish"])
    bridge.register(sig)
    presence_on(bridge)
    bridge.start()
    bridge.transport.check()
    send = sig.send
    for i in range(WARMUP):
        send(None, **_kwargs(-1 - i))
    bridge.flush(30)
    time.sleep(WARMUP_PAUSE)
    stats0 = bridge.stats()
    cpu0, srv0 = thread_cpu(), server_cpu(spec["redis_pid"])
    process0 = process_cpu()
    t0 = time.time_ns()
    if spec["latency"]:

        def send_one(i: int) -> None:
            send(None, n=i, b="x", c=2.5, d=None, e=True, t=time.time_ns())

        paced(spec["n"], spec["period_ns"], send_one)
    else:
        for i in range(spec["n"]):
            send(None, n=i, b="x", c=2.5, d=None, e=True)
    sent = time.time_ns()
    flushed_in_time = bridge.flush(120)
    flushed = time.time_ns()
    # Let this process's own listener finish decoding its echoes before reading CPU.
    time.sleep(0.3)
    process1 = process_cpu()
    cpu1 = thread_cpu()
    stats = bridge.stats()
    bridge.close()
    return {
        "t0_ns": t0,
        "heartbeat": bridge.heartbeat,
        "process_cpu_s": process1 - process0,
        "bridge_stats_before": stats0,
        "sent_ns": sent,
        "flushed_ns": flushed,
        "flushed_in_time": flushed_in_time,
        "bridge_stats": stats,
        "cpu": cpu_delta(cpu0, cpu1),
        "server_cpu_start": srv0,
    }


def _produce_raw(spec: Spec) -> Result:
    client = redis.Redis.from_url(spec["url"])
    client.ping()
    channel, packb = spec["channel"], msgpack.packb
    publish = client.publish
    for i in range(WARMUP):
        publish(channel, packb(_kwargs(-1 - i)))
    time.sleep(WARMUP_PAUSE)
    cpu0, srv0 = thread_cpu(), server_cpu(spec["redis_pid"])
    process0 = process_cpu()
    t0 = time.time_ns()
    n = spec["n"]
    if spec["latency"]:

        def send_one(i: int) -> None:
            kw = {"n": i, "b": "x", "c": 2.5, "d": None, "e": True, "t": time.time_ns()}
            publish(channel, packb(kw))

        paced(n, spec["period_ns"], send_one)
    elif spec["pipeline"]:
        pipe = client.pipeline(transaction=False)
        batch = spec["pipeline"]
        for i in range(n):
            pipe.publish(channel, packb({"n": i, "b": "x", "c": 2.5, "d": None, "e": True}))
            if i % batch == batch - 1:
                pipe.execute()
        if len(pipe):
            pipe.execute()
    else:
        for i in range(n):
            publish(channel, packb({"n": i, "b": "x", "c": 2.5, "d": None, "e": True}))
    sent = time.time_ns()
    process1 = process_cpu()
    cpu1 = thread_cpu()
    client.close()
    return {
        "t0_ns": t0,
        "process_cpu_s": process1 - process0,
        "sent_ns": sent,
        "flushed_ns": sent,
        "cpu": cpu_delta(cpu0, cpu1),
        "server_cpu_start": srv0,
    }


async def _produce_channels_async(spec: Spec) -> Result:
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[spec["url"]], capacity=spec["capacity"])
    group, group_send = spec["group"], layer.group_send
    for i in range(WARMUP):
        await group_send(group, {"type": "bench.msg", **_kwargs(-1 - i)})
    await asyncio.sleep(WARMUP_PAUSE)
    cpu0, srv0 = thread_cpu(), server_cpu(spec["redis_pid"])
    process0 = process_cpu()
    t0 = time.time_ns()
    for i in range(spec["n"]):
        await group_send(
            group, {"type": "bench.msg", "n": i, "b": "x", "c": 2.5, "d": None, "e": True}
        )
    sent = time.time_ns()
    process1 = process_cpu()
    cpu1 = thread_cpu()
    await layer.close_pools()
    return {
        "t0_ns": t0,
        "process_cpu_s": process1 - process0,
        "sent_ns": sent,
        "flushed_ns": sent,
        "cpu": cpu_delta(cpu0, cpu1),
        "server_cpu_start": srv0,
    }


def _produce_channels(spec: Spec) -> Result:
    return asyncio.run(_produce_channels_async(spec))


CONSUMERS: dict[str, Callable[[Spec, Tally, MPEvent, MPEvent], Result]] = {
    "relay": _consume_relay,
    "raw": _consume_raw,
    "channels": _consume_channels,
    "floor": _consume_floor,
}
PRODUCERS: dict[str, Callable[[Spec], Result]] = {
    "relay": _produce_relay,
    "raw": _produce_raw,
    "channels": _produce_channels,
}


# -- process entry points (module level: the spawn context imports this file) -------


def consumer_main(spec: Spec, ready: MPEvent, producer_done: MPEvent, out: MPQueue[Any]) -> None:
    profiles = ThreadProfiles() if spec.get("profile_dir") else None
    try:
        if profiles is not None:
            profiles.start()
        tally = Tally(spec["n"], spec["redis_pid"])
        extra = CONSUMERS[spec.get("consumer_kind") or spec["kind"]](
            spec, tally, ready, producer_done
        )
        result = {**tally.report(), **extra}
        if profiles is not None:
            result["profile"] = profiles.dump(Path(spec["profile_dir"]), f"{spec['slug']}-consumer")
        out.put(("consumer", result))
    except BaseException:
        out.put(("consumer", {"error": traceback.format_exc()}))


def producer_main(spec: Spec, out: MPQueue[Any]) -> None:
    profiles = ThreadProfiles() if spec.get("profile_dir") else None
    try:
        if profiles is not None:
            profiles.start()
        result = PRODUCERS[spec["kind"]](spec)
        if profiles is not None:
            result["profile"] = profiles.dump(Path(spec["profile_dir"]), f"{spec['slug']}-producer")
        out.put(("producer", result))
    except BaseException:
        out.put(("producer", {"error": traceback.format_exc()}))


def floor_frames(n: int) -> list[bytes]:
    """``n`` messages in relay frames of ``FLOOR_BATCH``, as a relay producer sends them.

    Made by ``relay.wire`` (``encode_kwargs``, ``encode_frame`` with the header's
    start time): six-field messages, 16-byte ids, sequence numbers, the signal's
    name, no sender, ``sent_at`` and the benchmark's five keyword arguments.
    """
    origin = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"
    started = time.time()
    encode = wire.encode_kwargs
    frames = []
    for first in range(0, n, FLOOR_BATCH):
        messages = [
            (os.urandom(16), origin, i, SIGNAL_NAME, None, time.time(), encode(_kwargs(i)))
            for i in range(first, min(n, first + FLOOR_BATCH))
        ]
        frames.append(wire.encode_frame(messages, started_at=started))
    return frames


def _floor_pass(frames: Sequence[bytes], n: int, counting: bool) -> tuple[float, float, Result]:
    """One timed pass: unpack every frame, call one receiver per message.

    Returns (getrusage CPU s, process_time s, the tally's counts). The counting
    receiver is the benchmark consumers' own (``Tally.hit``); the no-op one does nothing.
    """
    tally = Tally(n, -1)
    hit = tally.hit
    sig = Signal(name=SIGNAL_NAME)
    unpackb = msgpack.unpackb

    def counting_receiver(sender: object, n: int, t: int = 0, **kwargs: Any) -> None:
        hit(n, t)

    def noop_receiver(sender: object, **kwargs: Any) -> None:
        pass

    receiver: Callable[..., None] = counting_receiver if counting else noop_receiver
    clock0, cpu0 = time.process_time(), process_cpu()
    for frame in frames:
        for m in unpackb(frame)[2]:
            receiver(signal=sig, sender=None, **m[5])
    cpu1, clock1 = process_cpu(), time.process_time()
    return cpu1 - cpu0, clock1 - clock0, tally.counts()


def floor_main(spec: Spec, out: MPQueue[Any]) -> None:
    """The in-process unpack-and-call floor, in a fresh process of its own."""
    try:
        n = spec["n"]
        frames = floor_frames(n)
        for counting in (True, False):  # warm both paths up
            _floor_pass(frames[:2], min(n, 2 * FLOOR_BATCH), counting)
        passes: dict[str, list[float]] = {"counting": [], "noop": []}
        clocks: dict[str, list[float]] = {"counting": [], "noop": []}
        complete = True
        for _ in range(spec["passes"]):
            for counting in (True, False):
                cpu, clock, counts = _floor_pass(frames, n, counting)
                key = "counting" if counting else "noop"
                passes[key].append(cpu / n * 1e6)
                clocks[key].append(clock / n * 1e6)
                if counting and (counts["missing"] or counts["duplicates"]):
                    complete = False
        out.put(
            (
                "floor",
                {
                    "frames": len(frames),
                    "frame_bytes": len(frames[0]),
                    "passes_us": passes,
                    "process_time_us": clocks,
                    "complete": complete,
                },
            )
        )
    except BaseException:
        out.put(("floor", {"error": traceback.format_exc()}))


# -- orchestration (main process) ---------------------------------------------------


@dataclass(frozen=True)
class Job:
    section: str  # "throughput", "latency" or "floor"
    contender: str

    @property
    def key(self) -> str:
        return f"{self.section}:{self.contender}"

    @property
    def slug(self) -> str:
        short = {"throughput": "tput", "latency": "lat"}.get(self.section, self.section)
        return f"{short}-{self.contender.replace(' ', '-').replace('_', '-')}"


#: The throughput contenders that make one round trip per message.
SEQUENTIAL = frozenset({"relay sync", "raw sequential"})


def make_spec(job: Job, config: argparse.Namespace, env: Result, round_: int) -> Spec:
    latency = job.section == "latency"
    if job.contender == "channels_redis":
        n = config.channels_messages
    elif job.contender in SEQUENTIAL:
        n = config.sequential_messages
    elif latency:
        n = config.latency_messages
    else:
        n = config.messages
    tag = f"{job.slug}-r{round_}-{os.getpid()}"
    spec: Spec = {
        "url": env["redis_server_url"],
        "redis_pid": env["redis_server_pid"],
        "n": n,
        "latency": latency,
        "period_ns": int(config.period_ms * 1e6),
        "slug": job.slug,
        "profile_dir": None,
    }
    if job.section == "floor":
        spec.update(kind="floor", passes=FLOOR_PASSES)
    elif job.contender.startswith("relay"):
        spec.update(kind="relay", publish=job.contender.split()[1], namespace=tag)
    elif job.contender == "floor consumer":  # a relay async producer, a bare consumer
        spec.update(kind="relay", consumer_kind="floor", publish="async", namespace=tag)
    elif job.contender.startswith("raw"):
        pipeline = 100 if job.contender == "raw pipelined" else 0
        spec.update(kind="raw", channel=f"bench:{tag}", pipeline=pipeline)
    else:
        capacity = config.channels_capacity or n + 10
        spec.update(kind="channels", group=tag[:90], capacity=capacity)
    return spec


def summarize_run(job: Job, spec: Spec, producer: Result, consumer: Result) -> Result:
    """One run's metrics, loss accounting and error, from the two processes' results."""
    run = new_run(job.key, spec, producer, consumer)
    if run["error"]:
        return run
    n = spec["n"]
    # Dropped by the producer's bridge during the timed part (warm-up excluded).
    before = producer.get("bridge_stats_before", {}).get("dropped", 0)
    dropped = producer.get("bridge_stats", {}).get("dropped", 0) - before
    run["missing"] = consumer["missing"]
    run["duplicates"] = consumer["duplicates"]
    run["stray"] = consumer["stray"]
    run["dropped"] = dropped
    run["lost"] = bool(
        consumer["missing"] or consumer["duplicates"] or consumer["stray"] or dropped
    )
    t0 = producer["t0_ns"]
    span = consumer["last_recv_ns"] - t0
    run["delivered_rate"] = n / (span / 1e9) if span > 0 and consumer["received"] else 0.0
    run["send_rate"] = n / ((producer["sent_ns"] - t0) / 1e9)
    run["publish_rate"] = n / ((producer["flushed_ns"] - t0) / 1e9)
    receive_span = consumer["last_recv_ns"] - consumer["first_recv_ns"]
    run["consumer_rate"] = n / (receive_span / 1e9) if receive_span > 0 else math.inf
    run["first_delay_us"] = (consumer["first_recv_ns"] - t0) / 1e3
    # Whole-process CPU (getrusage) per message over each process's timed window.
    delivered = consumer["unique"]
    run["consumer_cpu_us"] = consumer["process_cpu_s"] / delivered * 1e6 if delivered else math.nan
    run["producer_cpu_us"] = producer["process_cpu_s"] / n * 1e6
    run["heartbeats_s"] = [r["heartbeat"] for r in (producer, consumer) if "heartbeat" in r]
    stats = consumer.get("bridge_stats")
    if stats is not None:
        run["accounting"] = {k: stats.get(k, 0) for k in ("received", "gaps", "missed")}
    per_message: dict[str, float] = {}
    for role in ("producer", "consumer"):
        for label, seconds in run[role]["cpu"].items():
            if seconds > 0:
                per_message[f"{role} {label}"] = seconds / n * 1e6
    server = consumer["server_cpu_end"] - producer["server_cpu_start"]
    if math.isfinite(server):
        per_message["redis-server"] = server / n * 1e6
    run["cpu_us_per_msg"] = per_message
    if spec["latency"]:
        run["latency_us"] = latency_summary(consumer["latencies_ns"])
    return run


# -- report -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One target of issue 14: a paired per-round ratio, or an absolute per-message CPU."""

    label: str
    numerator: Job
    metric: str  # "delivered_rate", "p50", "consumer_cpu_us" or "producer_cpu_us"
    limit: float
    at_least: bool  # True: value >= limit passes; False: value <= limit passes
    denominator: Job | None = None  # None: the limit is on the numerator's own metric
    unit: str = "x"


ASYNC_TPUT = Job("throughput", "relay async")
TARGETS = (
    Target(
        "consumer CPU per delivered message, relay async (getrusage of the process)",
        ASYNC_TPUT,
        "consumer_cpu_us",
        4.0,
        False,
        unit=" µs",
    ),
    Target(
        "producer CPU per message, relay async (getrusage of the process)",
        ASYNC_TPUT,
        "producer_cpu_us",
        4.0,
        False,
        unit=" µs",
    ),
    Target(
        "delivered msgs/s into one consumer: relay async / raw pipelined",
        ASYNC_TPUT,
        "delivered_rate",
        2.5,
        True,
        Job("throughput", "raw pipelined"),
    ),
    Target(
        "p50 one-way latency at 500 msg/s: relay async / raw sequential",
        Job("latency", "relay async"),
        "p50",
        1.15,
        False,
        Job("latency", "raw sequential"),
    ),
    Target(
        'delivered msgs/s, publish="sync": relay sync / raw sequential PUBLISH',
        Job("throughput", "relay sync"),
        "delivered_rate",
        0.95,
        True,
        Job("throughput", "raw sequential"),
    ),
)

# The consumer-CPU floors: (label, short label, job, metric), each beside relay async's consumer.
FLOOR_JOB = Job("floor", FLOOR)
FLOORS = (
    (
        f"floor, in-process: msgpack.unpackb of relay frames of {FLOOR_BATCH} messages, "
        "one call of the benchmark's counting receiver (Tally.hit) per message",
        "in-process floor, counting receiver",
        FLOOR_JOB,
        "consumer_cpu_us",
    ),
    (
        "floor, in-process: the same with a no-op receiver (the issue's floor to the letter; "
        "its figure: about 1.7 µs)",
        "in-process floor, no-op receiver",
        FLOOR_JOB,
        "noop_cpu_us",
    ),
    (
        "floor consumer, cross-process: redis-py pub/sub reading relay async's own frames, "
        "msgpack.unpackb, the counting receiver",
        "cross-process floor consumer",
        Job("throughput", "floor consumer"),
        "consumer_cpu_us",
    ),
)


def paired_values(
    rounds: Sequence[dict[str, Result]],
    top: str,
    metric: str,
    bottom: str | None = None,
    bottom_metric: str | None = None,
) -> list[float]:
    """Per round: ``top``'s ``metric``, or its ratio to ``bottom``'s (paired, same round)."""
    values = []
    for r in rounds:
        a = run_metric(r.get(top), metric)
        if bottom is None:
            if math.isfinite(a):
                values.append(a)
            continue
        b = run_metric(r.get(bottom), bottom_metric or metric)
        if math.isfinite(a) and math.isfinite(b) and b > 0:
            values.append(a / b)
    return values


def judge(value: float, limit: float, at_least: bool) -> tuple[str, float]:
    """Verdict and margin (relative to the limit: + headroom, - shortfall)."""
    if not math.isfinite(value):
        return "N/A", math.nan
    if at_least:
        return ("PASS" if value >= limit else "FAIL"), value / limit - 1
    return ("PASS" if value <= limit else "FAIL"), limit / value - 1


def evaluate(rounds: list[dict[str, Result]], jobs: Sequence[Job]) -> Result:
    summary: Result = {"jobs": {}, "targets": [], "floors": []}
    for job in jobs:
        runs = good_runs(rounds, job.key)
        entry: Result = {"runs": len(runs), "n": runs[0]["n"] if runs else None}
        if job.section == "floor":
            for metric in ("consumer_cpu_us", "noop_cpu_us", "process_time_us"):
                entry[metric] = spread([run_metric(r, metric) for r in runs])
            summary["jobs"][job.key] = entry
            continue
        metrics = ["delivered_rate", "send_rate", "publish_rate", "consumer_rate"]
        for metric in metrics:
            entry[metric] = spread([run_metric(r, metric) for r in runs], only_finite=False)
        for metric in ("consumer_cpu_us", "producer_cpu_us"):
            entry[metric] = spread([run_metric(r, metric) for r in runs])
        if job.section == "latency":
            for q in ("p50", "p90", "p99", "max"):
                values = [r["latency_us"][q] for r in runs]
                entry[q] = spread(values, only_finite=False)
        cpu_keys = sorted({k for r in runs for k in r["cpu_us_per_msg"]})
        entry["cpu_us_per_msg"] = {
            k: median([r["cpu_us_per_msg"].get(k, 0.0) for r in runs]) for k in cpu_keys
        }
        summary["jobs"][job.key] = entry
    jobs_summary = summary["jobs"]
    for target in TARGETS:
        bottom = target.denominator.key if target.denominator else None
        values = paired_values(rounds, target.numerator.key, target.metric, bottom)
        value = median(values)
        top_m = jobs_summary.get(target.numerator.key, {}).get(target.metric, {}).get("median")
        if bottom is None:
            of_medians = math.nan
        else:
            bottom_m = jobs_summary.get(bottom, {}).get(target.metric, {}).get("median")
            of_medians = (
                top_m / bottom_m
                if top_m is not None
                and bottom_m
                and math.isfinite(top_m)
                and math.isfinite(bottom_m)
                else math.nan
            )
        verdict, margin = judge(value, target.limit, target.at_least)
        summary["targets"].append(
            {
                "target": target.label,
                "limit": f"{'>=' if target.at_least else '<='} {target.limit:g}{target.unit}",
                "unit": target.unit,
                "paired": bottom is not None,
                "rounds": len(values),
                "median": value,
                "min": min(values, default=math.nan),
                "max": max(values, default=math.nan),
                "ratio_of_medians": of_medians,
                "verdict": verdict,
                "margin": margin,
            }
        )
    relay_cpu = ASYNC_TPUT.key
    for label, short, job, metric in FLOORS:
        ratios = paired_values(rounds, relay_cpu, "consumer_cpu_us", job.key, metric)
        summary["floors"].append(
            {
                "floor": label,
                "short": short,
                "job": job.key,
                "metric": metric,
                "us": jobs_summary.get(job.key, {}).get(metric, spread([])),
                "relay_over_floor": spread(ratios),
                "relay_minus_floor_us": spread(
                    [
                        run_metric(r.get(relay_cpu), "consumer_cpu_us")
                        - run_metric(r.get(job.key), metric)
                        for r in rounds
                    ]
                ),
            }
        )
    # Presence and loss accounting: on in every relay process? (What they cost is measured.)
    relay_runs = [
        run
        for r in rounds
        for key, run in r.items()
        if not run.get("error") and run.get("heartbeats_s")
    ]
    summary["presence"] = {
        "relay_runs": len(relay_runs),
        "heartbeats_s": sorted({h for run in relay_runs for h in run["heartbeats_s"]}),
    }
    summary["accounting"] = {
        k: sum(run.get("accounting", {}).get(k, 0) for run in relay_runs)
        for k in ("received", "gaps", "missed")
    }
    return summary


def _range(entry: Result, digits: int = 2) -> str:
    """``median (min-max)`` of a spread."""
    return (
        f"{fmt_number(entry['median'], digits)} "
        f"({fmt_number(entry['min'], digits)}-{fmt_number(entry['max'], digits)})"
    )


def render(env: Result, config: argparse.Namespace, summary: Result, problems: list[str]) -> str:
    lines: list[str] = []
    add = lines.append
    if config.channels_capacity:
        capacity = f"capacity={config.channels_capacity:,}"
    else:
        capacity = "capacity=N+10 so that it drops nothing"
    add("# relay cross-process benchmark")
    add("")
    add(
        f"Python {env['python']}, redis-py {env['redis']} (parser: {env['redis_parser']}), "
        f"hiredis {env['hiredis']}, msgpack {env['msgpack']}, channels {env['channels']}, "
        f"channels_redis {env['channels-redis']}, relay (signal-relay) {env['signal-relay']}"
    )
    add(
        f"redis-server {env['redis_server']} (private, {env['redis_server_url']}); "
        f"{env['machine']}, {env['cpus']} CPUs, {env['cpu']}; {env['platform']}"
    )
    add(
        f"{config.rounds} interleaved rounds (rotating order), medians; throughput N = "
        f"{config.messages:,} (relay sync and raw sequential N = "
        f"{config.sequential_messages:,}; channels_redis N = {config.channels_messages:,}, "
        f"{capacity}); latency: {config.latency_messages:,} "
        f"messages, one every {config.period_ms:g} ms "
        f"({1000 / config.period_ms:,.0f} msg/s). Producer, consumer and redis-server "
        "share the machine's CPUs."
    )
    presence, accounting = summary["presence"], summary["accounting"]
    beats = ", ".join(f"{h:g}" for h in presence["heartbeats_s"]) or "none"
    add(
        "Every relay producer and consumer is a `Relay` bridge with the defaults: presence "
        f"on (heartbeat in seconds, as checked in all {presence['relay_runs']} relay runs: "
        f"{beats}; a bridge with presence off is refused) and loss accounting on (always; "
        f"relay consumers counted {accounting['received']:,} received messages, "
        f"{accounting['gaps']:,} gaps, {accounting['missed']:,} missed). Their cost is in "
        "every figure below."
    )
    add("")
    add("## Delivered throughput (msgs/s = N / (last receive - first send))")
    add("")
    add(
        "| contender | N | delivered msgs/s (median) | min-max | producer send loop msgs/s "
        "| consumer-side msgs/s | runs with loss |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|")
    for contender in THROUGHPUT:
        entry = summary["jobs"].get(f"throughput:{contender}")
        if entry is None:
            continue
        d = entry["delivered_rate"]
        add(
            f"| {contender} | {entry['n'] or 0:,} | {fmt_number(d['median'])} | "
            f"{fmt_number(d['min'])}-{fmt_number(d['max'])} | "
            f"{fmt_number(entry['send_rate']['median'])} | "
            f"{fmt_number(entry['consumer_rate']['median'])} | {entry.get('lost_runs', 0)} |"
        )
    add("")
    add(
        "floor consumer: a relay async producer (defaults) into a bare redis-py consumer that "
        "unpacks its frames and calls the counting receiver (see the floor table)."
    )
    add("")
    add(
        f"## One-way latency at a low send rate (1 message / {config.period_ms:g} ms, "
        f"{config.latency_messages:,} messages)"
    )
    add("")
    add("| contender | p50 µs (median) | p50 min-max | p99 µs (median) | p99 min-max |")
    add("|---|---:|---:|---:|---:|")
    for contender in LATENCY:
        entry = summary["jobs"].get(f"latency:{contender}")
        if entry is None or "p50" not in entry:
            continue
        p50, p99 = entry["p50"], entry["p99"]
        add(
            f"| {contender} | {fmt_number(p50['median'])} | {fmt_number(p50['min'])}-"
            f"{fmt_number(p50['max'])} | {fmt_number(p99['median'])} | {fmt_number(p99['min'])}-"
            f"{fmt_number(p99['max'])} |"
        )
    add("")
    add(
        "## CPU per message, per process (µs; getrusage(RUSAGE_SELF) user + system, every "
        "thread, over each process's timed window; median (min-max) over rounds)"
    )
    add("")
    add("| throughput run | producer µs/msg | consumer µs/msg (per delivered message) |")
    add("|---|---:|---:|")
    for contender in THROUGHPUT:
        entry = summary["jobs"].get(f"throughput:{contender}")
        if entry is None:
            continue
        add(
            f"| {contender} | {_range(entry['producer_cpu_us'])} | "
            f"{_range(entry['consumer_cpu_us'])} |"
        )
    add("")
    add(
        "Windows: the producer's from its first timed send until its last publish is done "
        "(relay: flushed, then 0.3 s for its own listener to skip its echoes); the "
        "consumer's from the arrival of the last warm-up message (0.2 s before the first "
        "timed send, so the first frame's decoding is inside) to its last timed receive."
    )
    add("")
    add(
        "## Consumer CPU against the unpack-and-call floor (µs per message, median "
        "(min-max) over rounds; paired per round)"
    )
    add("")
    add("| consumer | µs/msg | relay async consumer / this | relay async consumer - this, µs |")
    add("|---|---:|---:|---:|")
    relay_cpu = summary["jobs"].get(ASYNC_TPUT.key, {}).get("consumer_cpu_us", spread([]))
    add(f"| relay async consumer (Relay, defaults; cross-process) | {_range(relay_cpu)} | - | - |")
    for floor in summary["floors"]:
        add(
            f"| {floor['floor']} | {_range(floor['us'])} | {_range(floor['relay_over_floor'])}x "
            f"| {_range(floor['relay_minus_floor_us'])} |"
        )
    add("")
    add(
        f"The in-process floor runs in a fresh process of its own in every round: frames of "
        f"{FLOOR_BATCH} messages made by relay.wire (encode_kwargs, encode_frame with the "
        "header's start time), each `msgpack.unpackb`ed and every message passed on as "
        "`receiver(signal=sig, sender=None, **kwargs)`; CPU by getrusage (process_time "
        f"agrees) over N messages, the median of {FLOOR_PASSES} passes per receiver (after "
        "a warm-up pass)."
    )
    add("")
    add("## CPU time per message over the timed window (µs, median; thread CPU clocks)")
    add("")
    columns = [
        ("producer main", "producer main"),
        ("producer publisher", "producer publisher"),
        ("producer listener", "producer listener (own echo)"),
        ("consumer main", "consumer main"),
        ("consumer listener", "consumer listener"),
        ("redis-server", "redis-server"),
    ]
    add("| run | " + " | ".join(title for _, title in columns) + " |")
    add("|---|" + "---:|" * len(columns))
    for job_key, entry in summary["jobs"].items():
        if "cpu_us_per_msg" not in entry:
            continue
        cpu = entry["cpu_us_per_msg"]
        cells = [f"{cpu[k]:.1f}" if k in cpu and cpu[k] >= 0.05 else "-" for k, _ in columns]
        add(f"| {job_key} | " + " | ".join(cells) + " |")
    add("")
    add(
        "Thread CPU includes system time; threads that end before the window does (and the "
        "presence thread) are not in these columns, but are in the getrusage table. In "
        "latency runs, per-message CPU is mostly waking up (poll, futex, sleep) for each "
        "message, not Python work."
    )
    add("")
    add(
        f"## Targets (issue 14; per round, then the median over {config.rounds} rounds; "
        "ratios paired: two runs of the same round)"
    )
    add("")
    add("| target | limit | median (min-max) | ratio of medians | verdict | margin |")
    add("|---|---|---:|---:|---|---:|")
    for t in summary["targets"]:
        margin = t["margin"]
        how = "n/a" if not math.isfinite(margin) else f"{margin:+.0%}"
        of_medians = f"{t['ratio_of_medians']:.2f}x" if t["paired"] else "-"
        unit = t["unit"]
        add(
            f"| {t['target']} | {t['limit']} | {t['median']:.2f}{unit} "
            f"({t['min']:.2f}-{t['max']:.2f}) | {of_medians} | {t['verdict']} | {how} |"
        )
    add("")
    if summary["floors"]:
        add(
            "Beside the consumer CPU target, the unpack-and-call floor: "
            + "; ".join(
                f"{f['short']} {fmt_number(f['us']['median'], 2)} µs, relay async "
                f"{fmt_number(f['relay_over_floor']['median'], 2)}x of it"
                for f in summary["floors"]
            )
            + f" (relay async consumer {fmt_number(relay_cpu['median'], 2)} µs)."
        )
        add("")
    add(
        "margin: how far the value is from the limit, relative to the limit "
        "(+ headroom, - shortfall)."
    )
    add("")
    if problems:
        add("## PROBLEMS (exit code 1)")
        add("")
        lines.extend(f"- {p}" for p in problems)
    else:
        add("Every run delivered every message exactly once; nothing dropped.")
    return "\n".join(lines)


def _describe_loss(job: Job, round_: int, run: Result) -> str | None:
    return describe_loss(job.key, round_, run)


def run_floor(job: Job, spec: Spec, ctx: Any) -> Result:
    """One run of the in-process floor: its own fresh process, ``passes`` timed passes."""
    out = ctx.Queue()
    process = ctx.Process(target=floor_main, args=(spec, out))
    process.start()
    got: dict[str, Result] = {}
    try:
        collect(out, got, "floor", process, READY_TIMEOUT + spec["n"] * 1e-4)
    finally:
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()
        out.close()
        out.join_thread()
    result = got["floor"]
    run: Result = {"job": job.key, "n": spec["n"], "floor": result, "lost": False}
    run["error"] = result.get("error")
    if run["error"]:
        return run
    if not result["complete"]:
        run["error"] = "the floor's counting receiver did not see every message exactly once"
        return run
    run["consumer_cpu_us"] = median(result["passes_us"]["counting"])
    run["noop_cpu_us"] = median(result["passes_us"]["noop"])
    run["process_time_us"] = median(result["process_time_us"]["counting"])
    return run


def _run_one(job: Job, config: argparse.Namespace, env: Result, ctx: Any, round_: int) -> Result:
    spec = make_spec(job, config, env, round_)
    if job.section == "floor":
        return run_floor(job, spec, ctx)
    producer, consumer = run_job(ctx, spec, consumer_main, producer_main)
    return summarize_run(job, spec, producer, consumer)


def _shown(run: Result) -> str:
    """A progress line's figures for a throughput or floor run."""
    if "delivered_rate" not in run:
        return (
            f"{run['consumer_cpu_us']:.2f} µs/msg (counting receiver), "
            f"{run['noop_cpu_us']:.2f} µs/msg (no-op receiver)"
        )
    return (
        f"{run['delivered_rate']:,.0f} msgs/s delivered, CPU/msg consumer "
        f"{run['consumer_cpu_us']:.2f} µs, producer {run['producer_cpu_us']:.2f} µs"
    )


def profile(config: argparse.Namespace, env: Result, ctx: Any) -> int:
    directory = Path(config.profile).resolve()
    for contender in ("relay async", "relay sync"):
        job = Job("throughput", contender)
        spec = make_spec(job, config, env, 0)
        spec["profile_dir"] = str(directory)
        progress(f"profiling {job.key} (N={spec['n']:,}) ...")
        producer, consumer = run_job(ctx, spec, consumer_main, producer_main)
        run = summarize_run(job, spec, producer, consumer)
        if run["error"]:
            print(run["error"])
            return 1
        print(
            f"\n## {job.key}: delivered {run['delivered_rate']:,.0f} msgs/s under cProfile "
            f"(slowed down by it), send loop {run['send_rate']:,.0f} msgs/s, "
            f"lost: {run['lost']}"
        )
        print(producer["profile"])
        print(consumer["profile"])
    return 0


# -- presence cost (--presence-cost) -------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESENCE_WORKER = Path(__file__).resolve().parent / "_presence_worker.py"


@dataclass(frozen=True)
class Variant:
    """One configuration of the presence-cost runs."""

    key: str
    heartbeat: float | None  # the consumer's (None: the argument is not passed)
    metrics: bool
    consumer_tree: str | None = None  # PYTHONPATH of the consumer (None: this tree)
    producer_heartbeat: float | None = None  # None: the same as the consumer's

    @property
    def section(self) -> str:
        return "throughput"


class _Worker:
    """One ``_presence_worker.py`` subprocess, its stdout lines read by a thread."""

    def __init__(self, role: str, spec: Spec, tree: Path) -> None:
        self.role = role
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(
            [sys.executable, str(PRESENCE_WORKER), role, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next stdout line starting with ``prefix``; RuntimeError if none."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise RuntimeError(f"{self.role}: no {prefix} within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(
                    f"{self.role} exited ({self.process.wait()}) before {prefix}:\n" + self.tail()
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def tell(self, text: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]

    def close(self) -> None:
        try:
            self.process.wait(15)
        except Exception:
            self.process.kill()  # only this worker, by its own handle
            self.process.wait()
        self.stderr.close()


def presence_variants(config: argparse.Namespace) -> list[Variant]:
    variants = [
        Variant("off", 0.0, False),
        Variant("on", 5.0, True),
        Variant("stressed", 0.5, True),
    ]
    if config.baseline_tree:
        variants.append(Variant("baseline", None, False, config.baseline_tree, 0.0))
    return variants


def _presence_run(variant: Variant, config: argparse.Namespace, env: Result, round_: int) -> Result:
    tag = f"presence-{variant.key}-r{round_}-{os.getpid()}"
    base: Spec = {
        "url": env["redis_server_url"],
        "namespace": tag,
        "n": config.messages,
        "scrape_period": config.scrape_period,
        "grace": CONSUMER_GRACE,
    }
    producer_heartbeat = (
        variant.heartbeat if variant.producer_heartbeat is None else variant.producer_heartbeat
    )
    consumer_spec = {**base, "heartbeat": variant.heartbeat, "metrics": variant.metrics}
    producer_spec = {**base, "heartbeat": producer_heartbeat, "metrics": variant.metrics}
    tree = Path(config.tree).resolve() if config.tree else REPO_ROOT
    consumer_tree = Path(variant.consumer_tree).resolve() if variant.consumer_tree else tree
    run: Result = {"job": variant.key, "n": config.messages, "error": None, "lost": False}
    workers: list[_Worker] = []
    try:
        consumer = _Worker("consumer", consumer_spec, consumer_tree)
        workers.append(consumer)
        consumer.expect("READY", 60)
        producer = _Worker("producer", producer_spec, tree)
        workers.append(producer)
        produced = json.loads(producer.expect("RESULT", 60 + config.messages * 0.005))
        consumer.tell("done")
        consumed = json.loads(consumer.expect("RESULT", CONSUMER_GRACE + 120))
    except RuntimeError as exc:
        tails = "\n".join(f"[{w.role} stderr]\n{w.tail()}" for w in workers)
        run["error"] = f"{exc}\n{tails}"
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
        return run
    finally:
        for worker in workers:
            worker.tell("done")
            worker.close()
    n = config.messages
    run["producer"], run["consumer"] = produced, consumed
    run["missing"] = consumed["missing"]
    run["duplicates"] = consumed["duplicates"]
    run["stray"] = consumed["stray"]
    run["dropped"] = produced["dropped"]
    run["lost"] = bool(run["missing"] or run["duplicates"] or run["stray"] or run["dropped"])
    span = consumed["last_recv_ns"] - produced["t0_ns"]
    run["delivered_rate"] = n / (span / 1e9) if span > 0 and consumed["received"] else 0.0
    run["consumer_cpu_us"] = consumed["cpu_s"] / n * 1e6
    run["producer_cpu_us"] = produced["cpu_s"] / n * 1e6
    run["window_s"] = span / 1e9
    run["heartbeats"] = consumed["heartbeats"] + produced["heartbeats"]
    run["scrapes"] = consumed["scrapes"] + produced["scrapes"]
    return run


PRESENCE_METRICS = ("delivered_rate", "consumer_cpu_us", "producer_cpu_us")


def presence_evaluate(rounds: list[dict[str, Result]], variants: Sequence[Variant]) -> Result:
    summary: Result = {"jobs": {}}
    for variant in variants:
        runs = good_runs(rounds, variant.key)
        entry: Result = {"runs": len(runs), "n": runs[0]["n"] if runs else None}
        for metric in (*PRESENCE_METRICS, "window_s", "heartbeats", "scrapes"):
            entry[metric] = spread([run_metric(r, metric) for r in runs])
            paired = paired_ratios(rounds, variant.key, "off", metric)
            entry[f"{metric}_ratio"] = spread(paired)
        entry["lost_runs"] = sum(1 for r in rounds if r.get(variant.key, {}).get("lost"))
        summary["jobs"][variant.key] = entry
    on = summary["jobs"].get("on", {}).get("delivered_rate_ratio", {}).get("median", math.nan)
    summary["target"] = {
        "target": "on delivered / off delivered >= 0.95 (paired median)",
        "ratio": on,
        "verdict": "N/A" if not math.isfinite(on) else ("PASS" if on >= 0.95 else "FAIL"),
    }
    return summary


def presence_render(
    env: Result, config: argparse.Namespace, summary: Result, problems: list[str]
) -> str:
    lines: list[str] = []
    add = lines.append
    add("# relay presence and metrics cost")
    add("")
    add(
        f"Python {env['python']}, redis-py {env['redis']} (parser: {env['redis_parser']}), "
        f"prometheus_client {env['prometheus-client']}, relay (signal-relay) "
        f"{env['signal-relay']}; redis-server {env['redis_server']} (private, "
        f"{env['redis_server_url']}); {env['machine']}, {env['cpus']} CPUs, {env['cpu']}"
    )
    add(
        f"relay async, N = {config.messages:,} messages per run into one consumer, "
        f"{config.rounds} interleaved rounds (rotating order); scrapes every "
        f"{config.scrape_period:g} s; ratios to off paired per round: median (min-max)."
    )
    add("")
    add(
        "| config | delivered msgs/s (median, min-max) | ratio to off | consumer CPU "
        "µs/msg | ratio | producer CPU µs/msg | ratio | heartbeats + scrapes in window |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    described = {
        "off": "off: heartbeat=0, no metrics",
        "on": "on: heartbeat=5.0 + metrics",
        "stressed": "stressed: heartbeat=0.5 + metrics",
        "baseline": f"baseline: consumer on {config.baseline_tree}",
    }

    def ratio(entry: Result, metric: str) -> str:
        r = entry[f"{metric}_ratio"]
        if not math.isfinite(r["median"]):
            return "n/a"
        return f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})"

    for key, entry in summary["jobs"].items():
        d = entry["delivered_rate"]
        c, p = entry["consumer_cpu_us"], entry["producer_cpu_us"]
        add(
            f"| {described.get(key, key)} | {fmt_number(d['median'])} "
            f"({fmt_number(d['min'])}-{fmt_number(d['max'])}) | {ratio(entry, 'delivered_rate')} "
            f"| {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) | "
            f"{ratio(entry, 'consumer_cpu_us')} "
            f"| {p['median']:.2f} ({p['min']:.2f}-{p['max']:.2f}) | "
            f"{ratio(entry, 'producer_cpu_us')} "
            f"| {entry['heartbeats']['median']:g} + {entry['scrapes']['median']:g} |"
        )
    add("")
    window = summary["jobs"].get("off", {}).get("window_s", {}).get("median", math.nan)
    add(
        f"Timed window (first send to last receive), off: {window:.2f} s median. CPU is "
        "getrusage(RUSAGE_SELF) of each process over its window, every thread included."
    )
    micro = summary.get("micro_us", {})
    observe = micro.get("observe_us", math.nan)
    beat, scrape = micro.get("heartbeat_us", math.nan), micro.get("scrape_us", math.nan)
    add("")
    add(
        "In-process, best of 7: the per-message meter (SignalMeter.observe, always on, "
        f"batches of 100) {observe:.3f} µs/msg; one heartbeat {beat:,.0f} µs of CPU, one "
        f"scrape of relay's collector {scrape:,.0f} µs. At heartbeat=5.0 and a scrape a "
        f"second that is {(beat / 5 + scrape) / 1e4:.3f} % of one core per process, "
        "whatever the message rate."
    )
    t = summary["target"]
    add("")
    add(f"Target: {t['target']}: {t['ratio']:.3f} -> {t['verdict']}")
    add("")
    if problems:
        add("## PROBLEMS (exit code 1)")
        add("")
        lines.extend(f"- {p}" for p in problems)
    else:
        add("Every run delivered every message exactly once; nothing dropped.")
    return "\n".join(lines)


def micro_costs(tree: Path, url: str) -> Result:
    """In-process costs of the meter, one heartbeat and one scrape (``_presence_worker.micro``)."""
    spec = {"url": url, "namespace": f"presence-micro-{os.getpid()}"}
    done = subprocess.run(
        [sys.executable, str(PRESENCE_WORKER), "micro", json.dumps(spec)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    progress(f"the in-process timings failed:\n{done.stderr[-2000:]}")
    return {}


def presence_cost(config: argparse.Namespace) -> int:
    variants = presence_variants(config)
    # No pub/sub output-buffer limit: a consumer that falls behind in a long run on a
    # loaded machine is measured, not disconnected.
    with RedisServer(args=["--client-output-buffer-limit", "pubsub 0 0 0"]) as server:
        env = environment(
            server, ("redis", "hiredis", "msgpack", "prometheus-client", "signal-relay")
        )
        started = time.monotonic()
        rounds, problems = run_rounds(
            config.rounds,
            variants,
            lambda variant, round_: _presence_run(variant, config, env, round_),
            lambda variant, round_, run: describe_loss(variant.key, round_, run),
            lambda variant: f"{variant.key:<9}",
            lambda run: (
                f"{run['delivered_rate']:,.0f} msgs/s delivered, consumer "
                f"{run['consumer_cpu_us']:.2f} µs/msg, producer {run['producer_cpu_us']:.2f} "
                f"µs/msg, {run['heartbeats']} heartbeats, {run['scrapes']} scrapes"
            ),
        )
        elapsed = time.monotonic() - started
        tree = Path(config.tree).resolve() if config.tree else REPO_ROOT
        micro = micro_costs(tree, env["redis_server_url"])
    summary = presence_evaluate(rounds, variants)
    summary["micro_us"] = micro
    report = presence_render(env, config, summary, problems)
    return conclude(config, env, summary, rounds, problems, elapsed, report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--messages", type=int, default=None, help="N per throughput run")
    parser.add_argument(
        "--sequential-messages", type=int, default=None, help="N for relay sync, raw sequential"
    )
    parser.add_argument("--channels-messages", type=int, default=None, help="N for channels")
    parser.add_argument("--latency-messages", type=int, default=None, help="paced messages")
    parser.add_argument("--period-ms", type=float, default=2.0, help="pause between paced sends")
    parser.add_argument(
        "--channels-capacity",
        type=int,
        default=None,
        help="channels_redis capacity (default N+10; channels_redis's own default, 100, drops)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; 3 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="write everything to PATH")
    parser.add_argument("--profile", metavar="DIR", help="profile relay instead of benchmarking")
    parser.add_argument(
        "--presence-cost",
        action="store_true",
        help="measure what heartbeats and Prometheus metrics cost (instead of the contenders)",
    )
    parser.add_argument(
        "--baseline-tree",
        metavar="DIR",
        help="with --presence-cost: also run the consumer on the relay package of DIR",
    )
    parser.add_argument(
        "--scrape-period", type=float, default=1.0, help="with --presence-cost: seconds"
    )
    parser.add_argument("--tree", metavar="DIR", help="with --presence-cost: relay tree to run")
    config = parser.parse_args(argv)
    if (config.baseline_tree or config.tree) and not config.presence_cost:
        parser.error("--baseline-tree and --tree go with --presence-cost")
    if config.presence_cost:
        if config.messages is None:
            config.messages = 20_000 if config.quick else 1_000_000
        if config.rounds is None:
            config.rounds = 3 if config.quick else 7
        if config.messages < 1 or config.rounds < 1 or config.scrape_period <= 0:
            parser.error("sizes, rounds and the scrape period must be positive")
        return presence_cost(config)
    if config.messages is None:
        config.messages = 3_000 if config.quick else 200_000
    if config.sequential_messages is None:
        config.sequential_messages = 3_000 if config.quick else 20_000
    if config.channels_messages is None:
        config.channels_messages = 300 if config.quick else 2_000
    if config.latency_messages is None:
        config.latency_messages = 300 if config.quick else 1_000
    if config.rounds is None:
        config.rounds = 3 if config.quick else 7
    sizes = (config.messages, config.sequential_messages, config.channels_messages)
    if min(*sizes, config.latency_messages, config.rounds) < 1:
        parser.error("sizes and rounds must be at least 1")

    try:
        import channels_redis.core  # type: ignore[import-untyped]  # noqa: F401

        have_channels = True
    except ImportError:
        have_channels = False
    jobs = [Job("throughput", c) for c in THROUGHPUT if c != "channels_redis" or have_channels]
    jobs += [Job("latency", c) for c in LATENCY]
    jobs.append(Job("floor", FLOOR))

    ctx = mp.get_context("spawn")
    with RedisServer() as server:
        env = environment(
            server,
            ("redis", "hiredis", "msgpack", "channels", "channels-redis", "signal-relay"),
            server_pid=True,
        )
        if config.profile:
            return profile(config, env, ctx)
        started = time.monotonic()
        rounds, problems = run_rounds(
            config.rounds,
            jobs,
            lambda job, round_: _run_one(job, config, env, ctx, round_),
            _describe_loss,
            lambda job: f"{job.key:<28}",
            _shown,
        )
        elapsed = time.monotonic() - started

    summary = evaluate(rounds, jobs)
    for job in jobs:
        lost = sum(1 for r in rounds if r.get(job.key, {}).get("lost"))
        summary["jobs"][job.key]["lost_runs"] = lost
    report = render(env, config, summary, problems)
    return conclude(config, env, summary, rounds, problems, elapsed, report)


if __name__ == "__main__":
    sys.exit(main())

"""
Cross-process benchmark: the asyncio bridge (``AsyncRelay``) side by side with the
threaded one (``Relay``), over a private Redis on loopback.

How to run (from the repository root)::

    .venv/bin/python benchmarks/bench_aio.py                      # 5 rounds, ~2 minutes
    .venv/bin/python benchmarks/bench_aio.py --quick              # small N, 2 rounds (smoke)
    .venv/bin/python benchmarks/bench_aio.py --rounds 7 --json bench-aio.json

Options:

    --messages N          messages per throughput run (default 20,000; 3,000 with --quick)
    --latency-messages N  paced messages per latency run (default 2,000; 300 with --quick)
    --rate R              paced send rate of the latency runs, msgs/s (default 500)
    --yield-every K       asyncio producers: ``await asyncio.sleep(0)`` after every K sends
                          of a throughput run (default 100; 0 never yields, see below)
    --rounds R            interleaved rounds (default 5; 2 with --quick)
    --quick               the small sizes above, for a smoke test
    --json PATH           also write the configuration, the environment, every run of every
                          round (timestamps, counts, CPU, latency samples, bridge stats),
                          medians and ratios to PATH

The script starts its own ``redis-server`` on a free loopback port
(``relay.testing.RedisServer``, nothing saved to disk) and never touches another
server. Every run uses two fresh processes (``multiprocessing``, spawn context): a
consumer, which starts its bridge (``start()`` returns once subscribed) and then sets a
ready event, and only then a producer. Asyncio processes run their bridge inside
``asyncio.run`` with ``async with AsyncRelay(...)``; threaded ones use ``Relay.start()``
and ``close()``. Before its timed part the producer sends 200 warm-up messages
(negative ``n``; the consumer counts them apart), flushes and pauses 0.2 s.

Every message carries two small keyword arguments, ``n=i, t=time.perf_counter_ns()``
(``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux: one clock for every process of the
machine). The consumer keeps a tally of each ``n``: any missing, duplicated or dropped
message is reported and makes the exit code 1.

Throughput paths (N messages sent as fast as the producer can; ``publish="async"``
everywhere; every consumer has one receiver that counts):

    threaded -> threaded        producer ``Relay``, ``sig.send(None, n=i, t=...)`` N times,
                                then ``bridge.flush()``; consumer ``Relay`` (its listener
                                thread fires the receiver).
    asyncio asend -> threaded   producer ``AsyncRelay``, ``await sig.asend(...)``, then
                                ``await bridge.flush()``; same consumer.
    asyncio send -> threaded    producer ``AsyncRelay``, plain ``sig.send(...)`` on the
                                loop's thread (it can only queue); same consumer.
    threaded -> asyncio sync    threaded producer; consumer ``AsyncRelay`` whose receiver
                                is a plain function (run in the loop's default executor,
                                as ``asend`` runs synchronous receivers).
    threaded -> asyncio async   threaded producer; consumer ``AsyncRelay`` whose receiver
                                is ``async def`` (run on the loop).

``await sig.asend(...)`` with no local receivers never suspends: it queues the message
and returns, so a loop of sends starves the publisher task, and past ``max_queue``
(10,000) ``AsyncRelay`` drops the oldest message at once. A real asyncio program awaits
other things between sends; the benchmark models that with ``await asyncio.sleep(0)``
after every ``--yield-every`` sends (also for the plain-``send`` producer).

The headline rate is the consumer's: N / (last receive - first receive). Also shown:
end to end N / (last receive - first send), the producer's send-loop rate and the CPU
time per message of each process (``time.process_time``, every thread, the timed window
only: first send to flushed for the producer, first to last receive for the consumer).

Latency paths (threaded -> threaded, asyncio asend -> threaded, threaded -> asyncio with
an ``async def`` receiver): the producer sends one message every 1/R s on an absolute
schedule (``time.sleep`` or ``await asyncio.sleep``), ``t`` taken just before the send;
the consumer records ``perf_counter_ns() - t`` when its receiver runs. p50 and p99 in µs.

Rounds: every round runs every path once, in an order that rotates from round to round,
so machine noise hits all paths alike. Cells are medians over rounds (with min-max);
ratios asyncio / threaded are paired: one ratio per round from two runs of that round,
then the median (the ratio of the medians is shown too).

Exit code: 0 if everything ran and every message arrived exactly once; 1 if a run
crashed or timed out, or a message was lost, duplicated or dropped.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Event as MPEvent
from typing import Any

from _harness import (
    SIGNAL_NAME,
    WARMUP,
    WARMUP_PAUSE,
    Result,
    Spec,
    TallyBase,
    conclude,
    describe_loss,
    environment,
    good_runs,
    latency_summary,
    median,
    new_run,
    paired_ratios,
    run_job,
    run_metric,
    run_rounds,
    spread,
)
from _harness import fmt_number as _n

from relay import AsyncRelay, Relay, Signal
from relay.testing import RedisServer

DASH = "\N{EN DASH}"  # min-max in the tables, as in the README


# -- what is measured ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One producer/consumer pairing."""

    label: str
    producer: str  # "threaded", "asend" or "send" (the last two: AsyncRelay)
    consumer: str  # "threaded", "asyncio-sync" or "asyncio-async"


T_BASE = Route("threaded → threaded", "threaded", "threaded")
THROUGHPUT = (
    T_BASE,
    Route("asyncio `asend` → threaded", "asend", "threaded"),
    Route("asyncio `send` on the loop → threaded", "send", "threaded"),
    Route("threaded → asyncio, sync receiver", "threaded", "asyncio-sync"),
    Route("threaded → asyncio, async receiver", "threaded", "asyncio-async"),
)
LATENCY = (
    T_BASE,
    Route("asyncio `asend` → threaded", "asend", "threaded"),
    Route("threaded → asyncio, async receiver", "threaded", "asyncio-async"),
)


@dataclass(frozen=True)
class Job:
    section: str  # "throughput" or "latency"
    path: Route

    @property
    def key(self) -> str:
        return f"{self.section}:{self.path.producer}>{self.path.consumer}"

    @property
    def slug(self) -> str:
        short = "tput" if self.section == "throughput" else "lat"
        return f"{short}-{self.path.producer}-{self.path.consumer}"


# -- the consumer's tally (runs in the worker processes) -------------------------------


class Tally(TallyBase):
    """What the consumer received: every ``n`` (exactly once?), timings, latencies."""

    def __init__(self, total: int, latency: bool) -> None:
        super().__init__(total)
        self.latency = latency
        self.cpu_first = math.nan
        self.cpu_last = math.nan
        self.latencies = array.array("q")

    def hit(self, n: int, t: int) -> None:
        now = time.perf_counter_ns()
        if n < 0:
            self.warm += 1
            return
        if self.count == 0:
            self.first_ns = now
            self.cpu_first = time.process_time()
        self.count += 1
        self.last_ns = now
        if self.latency:
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
            self.cpu_last = time.process_time()
            self.done.set()

    def report(self) -> Result:
        return {
            **self.counts(),
            "cpu_s": self.cpu_last - self.cpu_first,
            "latencies_ns": list(self.latencies),
        }


# -- consumers ---------------------------------------------------------------------------


def _consume_threaded(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = Relay(spec["url"], namespace=spec["namespace"], publish="async")
    bridge.register(sig)
    hit = tally.hit

    def on_message(sender: object, n: int, t: int, **kwargs: Any) -> None:
        hit(n, t)

    sig.connect(on_message, weak=False)
    bridge.start()
    try:
        ready.set()
        tally.wait(producer_done)
        return {"bridge_stats": bridge.stats()}
    finally:
        bridge.close()


async def _consume_asyncio_main(
    spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent
) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = AsyncRelay(spec["url"], namespace=spec["namespace"], publish="async")
    bridge.register(sig)
    hit = tally.hit

    if spec["consumer"] == "asyncio-async":

        async def on_message_async(sender: object, n: int, t: int, **kwargs: Any) -> None:
            hit(n, t)

        sig.connect(on_message_async, weak=False)
    else:

        def on_message(sender: object, n: int, t: int, **kwargs: Any) -> None:
            hit(n, t)

        sig.connect(on_message, weak=False)
    async with bridge:  # start() returns once subscribed
        ready.set()
        await tally.await_(producer_done)
        return {"bridge_stats": bridge.stats()}


def _consume_asyncio(spec: Spec, tally: Tally, ready: MPEvent, producer_done: MPEvent) -> Result:
    return asyncio.run(_consume_asyncio_main(spec, tally, ready, producer_done))


# -- producers ---------------------------------------------------------------------------


def _produce_threaded(spec: Spec) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = Relay(spec["url"], namespace=spec["namespace"], publish="async")
    bridge.register(sig)
    bridge.start()
    try:
        bridge.transport.check()
        send, clock = sig.send, time.perf_counter_ns
        for i in range(WARMUP):
            send(None, n=-1 - i, t=clock())
        bridge.flush(30)
        time.sleep(WARMUP_PAUSE)
        stats0 = bridge.stats()
        n = spec["n"]
        cpu0 = time.process_time()
        t0 = clock()
        if spec["latency"]:
            period = spec["period_ns"]
            start = clock() + period
            for i in range(n):
                delay = start + i * period - clock()
                if delay > 0:
                    time.sleep(delay / 1e9)
                send(None, n=i, t=clock())
        else:
            for i in range(n):
                send(None, n=i, t=clock())
        sent = clock()
        flushed_in_time = bridge.flush(120)
        flushed = clock()
        cpu1 = time.process_time()
        return {
            "t0_ns": t0,
            "sent_ns": sent,
            "flushed_ns": flushed,
            "flushed_in_time": flushed_in_time,
            "cpu_s": cpu1 - cpu0,
            "bridge_stats_before": stats0,
            "bridge_stats": bridge.stats(),
        }
    finally:
        bridge.close()


async def _produce_asyncio_main(spec: Spec) -> Result:
    sig = Signal(name=SIGNAL_NAME)
    bridge = AsyncRelay(spec["url"], namespace=spec["namespace"], publish="async")
    bridge.register(sig)
    clock = time.perf_counter_ns
    use_asend = spec["producer"] == "asend"
    asend, send = sig.asend, sig.send
    async with bridge:
        await bridge.transport.check()
        for i in range(WARMUP):
            if use_asend:
                await asend(None, n=-1 - i, t=clock())
            else:
                send(None, n=-1 - i, t=clock())
            if i % 50 == 49:
                await asyncio.sleep(0)
        await bridge.flush(30)
        await asyncio.sleep(WARMUP_PAUSE)
        stats0 = bridge.stats()
        n, every = spec["n"], spec["yield_every"]
        cpu0 = time.process_time()
        t0 = clock()
        if spec["latency"]:
            period = spec["period_ns"]
            start = clock() + period
            for i in range(n):
                delay = start + i * period - clock()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                if use_asend:
                    await asend(None, n=i, t=clock())
                else:
                    send(None, n=i, t=clock())
        elif use_asend:
            for i in range(n):
                await asend(None, n=i, t=clock())
                if every and i % every == every - 1:
                    await asyncio.sleep(0)
        else:
            for i in range(n):
                send(None, n=i, t=clock())
                if every and i % every == every - 1:
                    await asyncio.sleep(0)
        sent = clock()
        flushed_in_time = await bridge.flush(120)
        flushed = clock()
        cpu1 = time.process_time()
        return {
            "t0_ns": t0,
            "sent_ns": sent,
            "flushed_ns": flushed,
            "flushed_in_time": flushed_in_time,
            "cpu_s": cpu1 - cpu0,
            "bridge_stats_before": stats0,
            "bridge_stats": bridge.stats(),
        }


def _produce_asyncio(spec: Spec) -> Result:
    return asyncio.run(_produce_asyncio_main(spec))


# -- process entry points (module level: the spawn context imports this file) -----------


def consumer_main(spec: Spec, ready: MPEvent, producer_done: MPEvent, out: MPQueue[Any]) -> None:
    try:
        tally = Tally(spec["n"], spec["latency"])
        consume = _consume_threaded if spec["consumer"] == "threaded" else _consume_asyncio
        extra = consume(spec, tally, ready, producer_done)
        out.put(("consumer", {**tally.report(), **extra}))
    except BaseException:
        out.put(("consumer", {"error": traceback.format_exc()}))


def producer_main(spec: Spec, out: MPQueue[Any]) -> None:
    try:
        produce = _produce_threaded if spec["producer"] == "threaded" else _produce_asyncio
        out.put(("producer", produce(spec)))
    except BaseException:
        out.put(("producer", {"error": traceback.format_exc()}))


# -- orchestration (main process) ---------------------------------------------------------


def make_spec(job: Job, config: argparse.Namespace, env: Result, round_: int) -> Spec:
    latency = job.section == "latency"
    return {
        "url": env["redis_server_url"],
        "namespace": f"{job.slug}-r{round_}-{os.getpid()}",
        "producer": job.path.producer,
        "consumer": job.path.consumer,
        "n": config.latency_messages if latency else config.messages,
        "latency": latency,
        "period_ns": round(1e9 / config.rate),
        "yield_every": config.yield_every,
    }


def summarize_run(job: Job, spec: Spec, producer: Result, consumer: Result) -> Result:
    """One run's metrics, loss accounting and error, from the two processes' results."""
    run = new_run(job.key, spec, producer, consumer)
    if run["error"]:
        return run
    n = spec["n"]
    before = producer["bridge_stats_before"].get("dropped", 0)
    dropped = producer["bridge_stats"].get("dropped", 0) - before
    receiver_errors = consumer["bridge_stats"].get("receiver_errors", 0)
    run.update(
        missing=consumer["missing"],
        duplicates=consumer["duplicates"],
        stray=consumer["stray"],
        dropped=dropped,
        receiver_errors=receiver_errors,
    )
    run["lost"] = (
        bool(consumer["missing"] or consumer["duplicates"] or consumer["stray"] or dropped)
        or bool(receiver_errors)
        or not producer["flushed_in_time"]
    )
    t0 = producer["t0_ns"]
    received = consumer["received"]
    span = consumer["last_recv_ns"] - consumer["first_recv_ns"]
    run["consumer_rate"] = n / (span / 1e9) if span > 0 and received else 0.0
    end_to_end = consumer["last_recv_ns"] - t0
    run["delivered_rate"] = n / (end_to_end / 1e9) if end_to_end > 0 and received else 0.0
    run["send_rate"] = n / ((producer["sent_ns"] - t0) / 1e9)
    run["publish_rate"] = n / ((producer["flushed_ns"] - t0) / 1e9)
    run["producer_cpu_us"] = producer["cpu_s"] / n * 1e6
    run["consumer_cpu_us"] = consumer["cpu_s"] / n * 1e6
    if spec["latency"]:
        run["latency_us"] = latency_summary(consumer["latencies_ns"])
    return run


THROUGHPUT_METRICS = (
    "consumer_rate",
    "delivered_rate",
    "send_rate",
    "publish_rate",
    "producer_cpu_us",
    "consumer_cpu_us",
)


def evaluate(rounds: list[dict[str, Result]], jobs: Sequence[Job]) -> Result:
    """Medians per cell, and paired per-round ratios asyncio / threaded."""
    summary: Result = {"jobs": {}, "ratios": []}
    for job in jobs:
        runs = good_runs(rounds, job.key)
        entry: Result = {
            "label": job.path.label,
            "section": job.section,
            "runs": len(runs),
            "lost_runs": sum(1 for r in runs if r.get("lost")),
            "n": runs[0]["n"] if runs else None,
        }
        metrics: tuple[str, ...] = THROUGHPUT_METRICS
        if job.section == "latency":
            metrics += ("p50", "p90", "p99", "max")
        for metric in metrics:
            entry[metric] = spread([run_metric(r, metric) for r in runs])
        summary["jobs"][job.key] = entry
    for job in jobs:
        if job.path == T_BASE:
            continue
        base = Job(job.section, T_BASE)
        metrics = (
            ("consumer_rate", "delivered_rate")
            if job.section == "throughput"
            else (
                "p50",
                "p99",
            )
        )
        for metric in metrics:
            paired = paired_ratios(rounds, job.key, base.key, metric)
            top_m = summary["jobs"][job.key][metric]["median"]
            bottom_m = summary["jobs"][base.key][metric]["median"]
            summary["ratios"].append(
                {
                    "job": job.key,
                    "label": job.path.label,
                    "section": job.section,
                    "metric": metric,
                    "paired_median": median(paired),
                    "paired_min": min(paired, default=math.nan),
                    "paired_max": max(paired, default=math.nan),
                    "of_medians": top_m / bottom_m if bottom_m else math.nan,
                    "pairs": len(paired),
                }
            )
    return summary


# -- report ---------------------------------------------------------------------------------


def _x(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2f}x"


def _ratio(summary: Result, key: str, metric: str) -> Result | None:
    for ratio in summary["ratios"]:
        if ratio["job"] == key and ratio["metric"] == metric:
            return ratio  # type: ignore[no-any-return]
    return None


def _ratio_cell(summary: Result, key: str, metric: str) -> str:
    ratio = _ratio(summary, key, metric)
    if ratio is None:
        return "1 (baseline)"
    return (
        f"{_x(ratio['paired_median'])} ({ratio['paired_min']:.2f}{DASH}{ratio['paired_max']:.2f})"
    )


def render(env: Result, config: argparse.Namespace, summary: Result, problems: list[str]) -> str:
    lines: list[str] = []
    add = lines.append
    jobs = summary["jobs"]
    yielding = (
        f"`await asyncio.sleep(0)` every {config.yield_every:,} sends"
        if config.yield_every
        else "never yield between sends"
    )
    add("# relay: asyncio bridge vs threaded bridge, across processes")
    add("")
    add(
        f"Python {env['python']}, redis-py {env['redis']} (parser: {env['redis_parser']}), "
        f"hiredis {env['hiredis']}, relay (signal-relay) {env['signal-relay']}; "
        f"redis-server {env['redis_server']} (private, {env['redis_server_url']}); "
        f"{env['machine']}, {env['cpus']} CPUs, {env['cpu']}"
    )
    add(
        f"{config.rounds} interleaved rounds (rotating order); cells are medians over rounds "
        f"(min{DASH}max); ratios asyncio / threaded are medians of per-round ratios "
        f"(min{DASH}max). "
        f"Throughput N = {config.messages:,}; asyncio producers {yielding}. "
        f"Latency: {config.latency_messages:,} "
        f"messages at {config.rate:g} msgs/s. Two kwargs per message (`n`, `t`), "
        '`publish="async"` everywhere.'
    )
    add("")
    add(f"### Throughput ({config.messages:,} messages; consumer: one receiver that counts)")
    add("")
    add(
        f"| path | delivered msgs/s, first→last receive (median, min{DASH}max) "
        "| vs threaded→threaded | end to end msgs/s | producer send loop msgs/s "
        "| producer CPU µs/msg | consumer CPU µs/msg |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|")
    for path in THROUGHPUT:
        key = Job("throughput", path).key
        entry = jobs.get(key)
        if entry is None:
            continue
        rate = entry["consumer_rate"]
        add(
            f"| {path.label} | {_n(rate['median'])} ({_n(rate['min'])}{DASH}{_n(rate['max'])}) | "
            f"{_ratio_cell(summary, key, 'consumer_rate')} | "
            f"{_n(entry['delivered_rate']['median'])} | {_n(entry['send_rate']['median'])} | "
            f"{_n(entry['producer_cpu_us']['median'], 1)} | "
            f"{_n(entry['consumer_cpu_us']['median'], 1)} |"
        )
    add("")
    add(f"### One-way latency ({config.latency_messages:,} messages at {config.rate:g} msgs/s)")
    add("")
    add(
        f"| path | p50 µs (median, min{DASH}max) | p99 µs (median, min{DASH}max) | p50 vs threaded "
        "| p99 vs threaded |"
    )
    add("|---|---:|---:|---:|---:|")
    for path in LATENCY:
        key = Job("latency", path).key
        entry = jobs.get(key)
        if entry is None:
            continue
        p50, p99 = entry["p50"], entry["p99"]
        add(
            f"| {path.label} | {_n(p50['median'])} ({_n(p50['min'])}{DASH}{_n(p50['max'])}) | "
            f"{_n(p99['median'])} ({_n(p99['min'])}{DASH}{_n(p99['max'])}) | "
            f"{_ratio_cell(summary, key, 'p50')} | {_ratio_cell(summary, key, 'p99')} |"
        )
    add("")
    add("### Ratios asyncio / threaded (per round; > 1: faster for rates, slower for latency)")
    add("")
    add(f"| path | metric | median of per-round ratios | min{DASH}max | ratio of medians | pairs |")
    add("|---|---|---:|---:|---:|---:|")
    names = {
        "consumer_rate": "delivered msgs/s (first→last receive)",
        "delivered_rate": "end-to-end msgs/s",
        "p50": "p50 latency",
        "p99": "p99 latency",
    }
    for ratio in summary["ratios"]:
        add(
            f"| {ratio['label']} ({ratio['section']}) | {names[ratio['metric']]} | "
            f"{_x(ratio['paired_median'])} | {ratio['paired_min']:.2f}{DASH}"
            f"{ratio['paired_max']:.2f} | {_x(ratio['of_medians'])} | {ratio['pairs']} |"
        )
    add("")
    if problems:
        add("### PROBLEMS (exit code 1)")
        add("")
        lines.extend(f"- {p}" for p in problems)
    else:
        add("Every run delivered every message exactly once; nothing dropped.")
    return "\n".join(lines)


def _loss_details(run: Result) -> str:
    return (
        f", receiver errors {run['receiver_errors']:,}, "
        f"flushed in time: {run['producer']['flushed_in_time']}"
    )


def _describe_loss(job: Job, round_: int, run: Result) -> str | None:
    return describe_loss(job.key, round_, run, _loss_details)


def _run_one(job: Job, config: argparse.Namespace, env: Result, ctx: Any, round_: int) -> Result:
    spec = make_spec(job, config, env, round_)
    producer, consumer = run_job(ctx, spec, consumer_main, producer_main)
    return summarize_run(job, spec, producer, consumer)


def _throughput_shown(run: Result) -> str:
    return f"{run['consumer_rate']:,.0f} msgs/s delivered (send loop {run['send_rate']:,.0f}/s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--messages", type=int, default=None, help="N per throughput run")
    parser.add_argument("--latency-messages", type=int, default=None, help="paced messages")
    parser.add_argument("--rate", type=float, default=500.0, help="paced msgs/s (latency)")
    parser.add_argument(
        "--yield-every",
        type=int,
        default=100,
        help="asyncio producers yield to the loop after every K sends (0: never)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 2 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="write everything to PATH")
    config = parser.parse_args(argv)
    if config.messages is None:
        config.messages = 3_000 if config.quick else 20_000
    if config.latency_messages is None:
        config.latency_messages = 300 if config.quick else 2_000
    if config.rounds is None:
        config.rounds = 2 if config.quick else 5
    if min(config.messages, config.latency_messages, config.rounds) < 1 or config.rate <= 0:
        parser.error("sizes, rounds and the rate must be positive")
    if config.yield_every < 0:
        parser.error("--yield-every must be 0 or more")

    jobs = [Job("throughput", p) for p in THROUGHPUT] + [Job("latency", p) for p in LATENCY]
    ctx = mp.get_context("spawn")
    started = time.monotonic()
    with RedisServer() as server:
        env = environment(server, ("redis", "hiredis", "signal-relay"))
        rounds, problems = run_rounds(
            config.rounds,
            jobs,
            lambda job, round_: _run_one(job, config, env, ctx, round_),
            _describe_loss,
            lambda job: f"{job.section:<10} {job.path.label:<40}",
            _throughput_shown,
        )
    elapsed = time.monotonic() - started

    summary = evaluate(rounds, jobs)
    report = render(env, config, summary, problems)
    return conclude(config, env, summary, rounds, problems, elapsed, report)


if __name__ == "__main__":
    sys.exit(main())

"""
Redis Cluster against one node, on the same machine, in interleaved rounds.

(a) Delivered msgs/s into one consumer: a producer process sends ``--messages``
    signals, spread round-robin over ``--signals`` signals (whose shard
    channels spread over the 3 primaries), through ``Relay(url,
    publish="async")``; the consumer process (one ``Relay`` listening to all of
    them) counts every message and times the first to the last. Once on
    ``redis+cluster://`` (3 primaries, no replicas), once on ``redis://`` (one
    private ``redis-server``), in an order that rotates from round to round.

(b) What a publish costs the cluster bus: ``cluster_stats_messages_publish_sent``
    and ``cluster_stats_messages_publishshard_sent`` from ``CLUSTER INFO``,
    summed over every node, before and after ``--publishes`` classic PUBLISHes,
    and as many SPUBLISHes, by a plain ``redis.cluster.RedisCluster`` client;
    on 3 primaries + 3 replicas, and on the 3 primaries of (a).

    python benchmarks/bench_cluster.py [--quick] [--rounds R] [--json PATH]

Exit status 1 if a run of (a) lost or duplicated a message.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Event as MPEvent
from typing import Any

import redis
from _harness import (
    WARMUP,
    WARMUP_PAUSE,
    Result,
    Spec,
    TallyBase,
    conclude,
    describe_loss,
    environment,
    fmt_number,
    new_run,
    progress,
    run_job,
    run_rounds,
    spread,
)

from relay import Relay, Signal
from relay.testing import RedisCluster, RedisServer

NAMESPACE = "bench-cluster"
BUS_COUNTERS = {
    "PUBLISH": "cluster_stats_messages_publish_sent",
    "SPUBLISH": "cluster_stats_messages_publishshard_sent",
}


# -- (a) the consumer and the producer (spawned processes) ---------------------------------


class Tally(TallyBase):
    def hit(self, n: int) -> None:
        now = time.time_ns()
        if n < 0:
            self.warm += 1
            return
        if self.count == 0:
            self.first_ns = now
        self.count += 1
        self.last_ns = now
        if n < self.total:
            if self.hits[n] < 255:
                self.hits[n] += 1
        else:
            self.stray += 1
        if self.count == self.total:
            self.finish()

    def report(self) -> Result:
        return self.counts()


def _signals(count: int) -> list[Signal]:
    return [Signal(name=f"bench.s{index}") for index in range(count)]


def consumer_main(spec: Spec, ready: MPEvent, producer_done: MPEvent, out: MPQueue[Any]) -> None:
    try:
        tally = Tally(spec["n"])
        bridge = Relay(spec["url"], namespace=NAMESPACE, publish="async")
        hit = tally.hit

        def on_message(sender: object, n: int, **kwargs: Any) -> None:
            hit(n)

        for signal in _signals(spec["signals"]):
            bridge.register(signal)
            signal.connect(on_message, weak=False)
        bridge.start()
        ready.set()
        tally.wait(producer_done)
        stats = bridge.stats()
        bridge.close()
        out.put(("consumer", {**tally.report(), "bridge_stats": stats}))
    except BaseException:
        out.put(("consumer", {"error": traceback.format_exc()}))


def producer_main(spec: Spec, out: MPQueue[Any]) -> None:
    try:
        # A queue for every message: the producer outruns the broker, and the
        # default queue (10,000) would drop the oldest ones.
        queue = spec["n"] + WARMUP
        bridge = Relay(spec["url"], namespace=NAMESPACE, publish="async", max_queue=queue)
        signals = _signals(spec["signals"])
        for signal in signals:
            bridge.register(signal)
        bridge.start()
        sends = [signal.send for signal in signals]
        count = len(sends)
        for i in range(WARMUP):
            sends[i % count](None, n=-1 - i, b="x", c=2.5, d=None, e=True)
        bridge.flush(30)
        time.sleep(WARMUP_PAUSE)
        t0 = time.time_ns()
        for i in range(spec["n"]):
            sends[i % count](None, n=i, b="x", c=2.5, d=None, e=True)
        flushed_in_time = bridge.flush(120)
        flushed = time.time_ns()
        stats = bridge.stats()
        bridge.close()
        out.put(
            (
                "producer",
                {
                    "t0_ns": t0,
                    "flushed_ns": flushed,
                    "flushed_in_time": flushed_in_time,
                    "bridge_stats": stats,
                },
            )
        )
    except BaseException:
        out.put(("producer", {"error": traceback.format_exc()}))


# -- (a) orchestration --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    key: str
    url: str
    section: str = "throughput"


def _run_one(job: Job, config: argparse.Namespace, ctx: Any) -> Result:
    spec: Spec = {
        "url": job.url,
        "n": config.messages,
        "signals": config.signals,
        "latency": False,
        "period_ns": 0,
    }
    producer, consumer = run_job(ctx, spec, consumer_main, producer_main)
    run = new_run(job.key, spec, producer, consumer)
    if run["error"]:
        return run
    run.update(
        missing=consumer["missing"],
        duplicates=consumer["duplicates"],
        stray=consumer["stray"],
        dropped=int(producer["bridge_stats"].get("dropped", 0) or 0),
    )
    run["lost"] = bool(run["missing"] or run["duplicates"] or run["stray"])
    span = (consumer["last_recv_ns"] - consumer["first_recv_ns"]) / 1e9
    run["delivered_rate"] = consumer["unique"] / span if span > 0 else float("nan")
    return run


# -- (b) bus messages per publish -----------------------------------------------------------


def _bus_counters(cluster: RedisCluster) -> dict[str, int]:
    totals = dict.fromkeys(BUS_COUNTERS, 0)
    for node in cluster.nodes:
        client = redis.Redis(host=node.host, port=node.port, decode_responses=True)
        try:
            info = client.execute_command("CLUSTER INFO")
        finally:
            client.close()
        if isinstance(info, str):
            info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        for kind, counter in BUS_COUNTERS.items():
            totals[kind] += int(info.get(counter, 0))
    return totals


def bus_cost(cluster: RedisCluster, publishes: int, rounds: int, label: str) -> Result:
    """Bus messages sent per PUBLISH and per SPUBLISH, one value per round."""
    client = cluster.client()
    channels = [f"bench:bus:{index}" for index in range(64)]
    per_publish: dict[str, list[float]] = {kind: [] for kind in BUS_COUNTERS}
    try:
        for round_ in range(rounds):
            kinds = list(BUS_COUNTERS) if round_ % 2 == 0 else list(reversed(BUS_COUNTERS))
            for kind in kinds:
                publish = client.publish if kind == "PUBLISH" else client.spublish
                before = _bus_counters(cluster)
                for i in range(publishes):
                    publish(channels[i % len(channels)], b"x" * 64)
                # Let the bus send what the last publishes asked for.
                time.sleep(0.2)
                after = _bus_counters(cluster)
                sent = sum(after[k] - before[k] for k in BUS_COUNTERS)
                per_publish[kind].append(sent / publishes)
                progress(
                    f"[bus {label} round {round_ + 1}/{rounds}] {kind:<8} "
                    f"{sent / publishes:.2f} bus messages per publish"
                )
    finally:
        client.close()
    return {kind: spread(values) for kind, values in per_publish.items()}


# -- the report -----------------------------------------------------------------------------


def _cell(s: Result, digits: int = 0) -> str:
    return (
        f"{fmt_number(s['median'], digits)} "
        f"({fmt_number(s['min'], digits)}-{fmt_number(s['max'], digits)})"
    )


def render(
    env: Result,
    config: argparse.Namespace,
    shards: dict[str, int],
    throughput: dict[str, Result],
    ratio: Result,
    bus: dict[str, Result],
    problems: list[str],
) -> str:
    lines = [
        f"Python {env['python']}, redis-py {env['redis']} ({env['redis_parser']} parser), "
        f"redis-server {env['redis_server']}, {env['cpus']} CPUs ({env['cpu']})",
        f"(a) {config.messages:,} messages over {config.signals} signals "
        f"(per primary: {', '.join(str(v) for v in shards.values())}), "
        f"{config.rounds} interleaved rounds, median (min-max)",
        "",
        "| broker | delivered msgs/s |",
        "|---|---:|",
        f"| one node, `redis://` | {_cell(throughput['node'])} |",
        f"| 3 primaries, `redis+cluster://` | {_cell(throughput['cluster'])} |",
        f"| cluster / node, paired per round | {_cell(ratio, 2)} |",
        "",
        f"(b) bus messages sent per publish ({config.publishes:,} of each, "
        f"{config.bus_rounds} interleaved rounds), median (min-max)",
        "",
        "| cluster | PUBLISH | SPUBLISH |",
        "|---|---:|---:|",
    ]
    for label, result in bus.items():
        lines.append(
            f"| {label} | {_cell(result['PUBLISH'], 2)} | {_cell(result['SPUBLISH'], 2)} |"
        )
    if problems:
        lines += ["", "PROBLEMS:", *problems]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--messages", type=int, default=None, help="N per run of (a)")
    parser.add_argument("--signals", type=int, default=9, help="signals of (a) (9)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of (a) (5; 3 quick)")
    parser.add_argument("--publishes", type=int, default=None, help="publishes of each kind (b)")
    parser.add_argument("--bus-rounds", type=int, default=None, help="rounds of (b) (5; 3 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", metavar="PATH", help="write everything to PATH")
    config = parser.parse_args(argv)
    config.messages = config.messages or (3_000 if config.quick else 20_000)
    config.rounds = config.rounds or (3 if config.quick else 5)
    config.publishes = config.publishes or (500 if config.quick else 5_000)
    config.bus_rounds = config.bus_rounds or (3 if config.quick else 5)
    if min(config.messages, config.signals, config.rounds, config.publishes) < 1:
        parser.error("sizes and rounds must be at least 1")

    ctx = mp.get_context("spawn")
    started = time.monotonic()
    bus: dict[str, Result] = {}
    with RedisServer() as server, RedisCluster(primaries=3, replicas_per_primary=0) as cluster:
        env = environment(server, ("redis", "hiredis", "msgpack", "signal-relay"))
        shards: dict[str, int] = {f"{n.host}:{n.port}": 0 for n in cluster.primaries}
        for index in range(config.signals):
            owner = cluster.primary_for(f"relay:{NAMESPACE}:bench.s{index}")
            shards[f"{owner.host}:{owner.port}"] += 1
        jobs = [Job("node", server.url), Job("cluster", cluster.url)]
        rounds, problems = run_rounds(
            config.rounds,
            jobs,
            lambda job, round_: _run_one(job, config, ctx),
            lambda job, round_, run: describe_loss(job.key, round_, run),
            lambda job: f"{job.key:<8}",
            lambda run: f"{run['delivered_rate']:,.0f} msgs/s delivered",
        )
        bus["3 primaries, no replicas"] = bus_cost(
            cluster, config.publishes, config.bus_rounds, "3+0"
        )
    with RedisCluster(primaries=3, replicas_per_primary=1) as cluster:
        bus["3 primaries + 3 replicas"] = bus_cost(
            cluster, config.publishes, config.bus_rounds, "3+3"
        )
    elapsed = time.monotonic() - started

    def rates(key: str) -> list[float]:
        return [r[key]["delivered_rate"] for r in rounds if key in r and not r[key]["error"]]

    throughput = {key: spread(rates(key)) for key in ("node", "cluster")}
    paired = [
        r["cluster"]["delivered_rate"] / r["node"]["delivered_rate"]
        for r in rounds
        if not r["cluster"]["error"] and not r["node"]["error"]
    ]
    ratio = spread(paired)
    summary = {"shards": shards, "throughput": throughput, "ratio": ratio, "bus": bus}
    report = render(env, config, shards, throughput, ratio, bus, problems)
    return conclude(config, env, summary, rounds, problems, elapsed, report)


if __name__ == "__main__":
    sys.exit(main())

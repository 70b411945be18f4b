"""
Shared infrastructure of the cross-process benchmarks (``bench_relay.py`` and
``bench_aio.py``): not a benchmark itself.

Both scripts run every job as a consumer process and a producer process
(``multiprocessing``, spawn context) around a private ``redis-server``, count every
message on the consumer side, run interleaved rounds and report medians. What they
share lives here: the constants of a run, the counting core of the consumer's tally,
the orchestration of one job's two processes, the loop over rounds, the statistics,
the environment description and the final report.

The scripts import it as ``_harness``: run as ``python benchmarks/bench_x.py``, their
folder is first on ``sys.path`` (and the spawned workers inherit that path).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Event as MPEvent
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis
from redis.utils import HIREDIS_AVAILABLE

from relay.testing import RedisServer

SIGNAL_NAME = "bench.ping"
WARMUP = 200
WARMUP_PAUSE = 0.2
CONSUMER_GRACE = 5.0  # seconds the consumer keeps waiting after the producer is done
READY_TIMEOUT = 60.0

Spec = dict[str, Any]
Result = dict[str, Any]


# -- the consumer's tally (runs in the worker processes) -------------------------------


def paced(count: int, period_ns: int, send_one: Callable[[int], None]) -> None:
    """Call ``send_one(i)`` for i in range(count), one every ``period_ns``."""
    start = time.perf_counter_ns() + period_ns
    for i in range(count):
        delay = start + i * period_ns - time.perf_counter_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        send_one(i)


class TallyBase:
    """The counting core of a consumer's tally: every ``n`` exactly once?

    Subclasses define ``hit`` (the hot path: each script times and counts its own
    way), ``finish`` (called once everything is in, or at the end of the wait) and
    ``report`` (which starts from ``counts()``).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.hits = bytearray(total)
        self.count = 0  # messages with 0 <= n, duplicates included
        self.warm = 0  # warm-up messages (n < 0)
        self.stray = 0  # n >= total: never sent
        self.first_ns = 0
        self.last_ns = 0
        self.done = threading.Event()

    def finish(self) -> None:
        """Mark the tally complete (subclasses also take their closing readings)."""
        self.done.set()

    def _settle(self, producer_done: MPEvent, deadline: float) -> tuple[bool, float]:
        """One check: (stop waiting?, the grace deadline)."""
        if self.done.is_set():
            return True, deadline
        if producer_done.is_set():
            deadline = min(deadline, time.monotonic() + CONSUMER_GRACE)
            if time.monotonic() > deadline:
                return True, deadline
        return False, deadline

    def wait(self, producer_done: MPEvent) -> None:
        """Wait until every message is in, or the producer is done and grace is over."""
        deadline = math.inf
        while True:
            stop, deadline = self._settle(producer_done, deadline)
            if stop:
                break
            self.done.wait(0.05)
        self.finish()

    async def await_(self, producer_done: MPEvent) -> None:
        """``wait`` for an event loop: poll, never block it."""
        deadline = math.inf
        while True:
            stop, deadline = self._settle(producer_done, deadline)
            if stop:
                break
            await asyncio.sleep(0.02)
        self.finish()

    def counts(self) -> Result:
        """What arrived: counts, losses and the first and last receive times."""
        missing = self.hits.count(0)
        duplicates = sum(h - 1 for h in self.hits if h > 1)
        return {
            "received": self.count,
            "unique": self.total - missing,
            "missing": missing,
            "duplicates": duplicates,
            "stray": self.stray,
            "warmup_received": self.warm,
            "first_recv_ns": self.first_ns,
            "last_recv_ns": self.last_ns,
        }


# -- orchestration (main process) -------------------------------------------------------


class JobLike(Protocol):
    """What the shared orchestration needs of a script's ``Job``."""

    @property
    def section(self) -> str:
        """``"throughput"`` or ``"latency"``."""
        ...

    @property
    def key(self) -> str:
        """The job's unique key in a round's results."""
        ...


J = TypeVar("J", bound=JobLike)
ConsumerMain = Callable[[Spec, MPEvent, MPEvent, "MPQueue[Any]"], None]
ProducerMain = Callable[[Spec, "MPQueue[Any]"], None]


def collect(
    out: MPQueue[Any], got: dict[str, Result], role: str, process: Any, timeout: float
) -> None:
    """Wait for ``role``'s result (keeping any other that arrives), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    exited_at = math.inf
    while role not in got:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            got[role] = {"error": f"{role}: no result within {timeout:.0f} s"}
            return
        if not process.is_alive():
            exited_at = min(exited_at, time.monotonic())
            if time.monotonic() - exited_at > 2.0:  # its last put() had time to arrive
                got[role] = {"error": f"{role} exited with code {process.exitcode}, no result"}
                return
        try:
            who, result = out.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        got[who] = result


def run_job(
    ctx: Any, spec: Spec, consumer_main: ConsumerMain, producer_main: ProducerMain
) -> tuple[Result, Result]:
    """Run one consumer and one producer process; return their results.

    ``consumer_main(spec, ready, producer_done, out)`` and ``producer_main(spec, out)``
    must be module-level functions of the script (the spawn context imports it) that
    put ``("consumer", result)`` and ``("producer", result)`` on ``out``.
    """
    out = ctx.Queue()
    ready, producer_done = ctx.Event(), ctx.Event()
    consumer = ctx.Process(target=consumer_main, args=(spec, ready, producer_done, out))
    consumer.start()
    producer = None
    got: dict[str, Result] = {}
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.1):
            if not consumer.is_alive() or time.monotonic() > deadline:
                collect(out, got, "consumer", consumer, 5.0)
                return {"error": "consumer never became ready"}, got["consumer"]
        producer = ctx.Process(target=producer_main, args=(spec, out))
        producer.start()
        per_message = spec["period_ns"] / 1e9 if spec["latency"] else 0.005
        collect(out, got, "producer", producer, 60.0 + spec["n"] * per_message)
        producer_done.set()
        collect(out, got, "consumer", consumer, CONSUMER_GRACE + 30.0)
        return got["producer"], got["consumer"]
    finally:
        producer_done.set()
        for process in (producer, consumer):
            if process is None:
                continue
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()
        out.close()
        out.join_thread()


def run_rounds(
    count: int,
    jobs: Sequence[J],
    run_one: Callable[[J, int], Result],
    describe_loss: Callable[[J, int, Result], str | None],
    label: Callable[[J], str],
    throughput_shown: Callable[[Result], str],
) -> tuple[list[dict[str, Result]], list[str]]:
    """Run every job once per round, in an order that rotates from round to round.

    ``run_one(job, round_)`` returns the run's summary (with ``"error"``, and
    ``"lost"`` or ``"latency_us"`` where they apply); one progress line per run goes
    to stderr. Returns the rounds (job key -> run) and the problems found.
    """
    rounds: list[dict[str, Result]] = []
    problems: list[str] = []
    for round_ in range(count):
        shift = round_ % len(jobs)
        order = [*jobs[shift:], *jobs[:shift]]
        results: dict[str, Result] = {}
        for job in order:
            run = run_one(job, round_)
            run["round"] = round_
            results[job.key] = run
            problem = describe_loss(job, round_, run)
            if problem:
                problems.append(problem)
            if run["error"]:
                shown = "ERROR"
            elif job.section == "latency":
                lat = run["latency_us"]
                shown = f"p50 {lat['p50']:,.0f} µs  p99 {lat['p99']:,.0f} µs"
            else:
                shown = throughput_shown(run)
            progress(
                f"[round {round_ + 1}/{count}] {label(job)} {shown}"
                f"{'  LOSS' if run.get('lost') else ''}"
            )
        rounds.append(results)
    return rounds, problems


# -- one run's summary --------------------------------------------------------------------


def new_run(key: str, spec: Spec, producer: Result, consumer: Result) -> Result:
    """A run's summary so far: the two processes' results and their errors, if any."""
    run: Result = {"job": key, "n": spec["n"], "producer": producer, "consumer": consumer}
    roles = (("producer", producer), ("consumer", consumer))
    errors = [f"{role}: {r['error']}" for role, r in roles if "error" in r]
    run["error"] = "\n".join(errors) or None
    return run


def describe_loss(
    key: str, round_: int, run: Result, more: Callable[[Result], str] | None = None
) -> str | None:
    """The problem line of a run that crashed or lost messages, else None.

    ``more(run)`` adds the script's own details to a lost run's line.
    """
    if run.get("error"):
        return f"round {round_} {key}: crashed or timed out:\n{run['error']}"
    if run.get("lost"):
        return (
            f"round {round_} {key}: {run['n']:,} sent, {run['consumer']['unique']:,} "
            f"arrived; missing {run['missing']:,}, duplicated {run['duplicates']:,}, "
            f"never-sent {run['stray']:,}, dropped by the bridge {run['dropped']:,}"
            + (more(run) if more is not None else "")
        )
    return None


# -- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of already sorted values; NaN if none."""
    if not sorted_values:
        return math.nan
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return float(sorted_values[index])


def latency_summary(latencies_ns: Sequence[int]) -> Result:
    """Count, p50, p90, p99 and max, in µs, of one run's latency samples (ns)."""
    lat = sorted(x / 1e3 for x in latencies_ns)
    return {
        "count": len(lat),
        "p50": percentile(lat, 0.50),
        "p90": percentile(lat, 0.90),
        "p99": percentile(lat, 0.99),
        "max": lat[-1] if lat else math.nan,
    }


def median(values: Sequence[float]) -> float:
    """The median of the finite values; NaN if there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def spread(values: Sequence[float], *, only_finite: bool = True) -> Result:
    """Median (of the finite values), min and max.

    With ``only_finite=False`` min and max are taken over the values as given (so an
    infinite rate, or a NaN, can show up in them).
    """
    finite = [v for v in values if math.isfinite(v)]
    bounds = finite if only_finite else values
    return {
        "median": median(finite),
        "min": min(bounds, default=math.nan),
        "max": max(bounds, default=math.nan),
    }


def run_metric(run: Result | None, metric: str) -> float:
    """A metric of one run (a latency quantile in µs, or a rate); NaN if none or failed."""
    if run is None or run.get("error"):
        return math.nan
    if metric in ("p50", "p90", "p99", "max"):
        return float(run.get("latency_us", {}).get(metric, math.nan))
    return float(run.get(metric, math.nan))


def good_runs(rounds: Sequence[dict[str, Result]], key: str) -> list[Result]:
    """The runs of job ``key`` over the rounds, failed ones left out."""
    return [r[key] for r in rounds if key in r and not r[key].get("error")]


def paired_ratios(
    rounds: Sequence[dict[str, Result]], top: str, bottom: str, metric: str
) -> list[float]:
    """One ratio ``top / bottom`` of ``metric`` per round where both ran (paired)."""
    paired = []
    for r in rounds:
        a, b = run_metric(r.get(top), metric), run_metric(r.get(bottom), metric)
        if math.isfinite(a) and math.isfinite(b) and b > 0:
            paired.append(a / b)
    return paired


# -- environment and report ---------------------------------------------------------------


def versions(dists: Sequence[str]) -> dict[str, str]:
    """Python's version and each distribution's (or ``"not installed"``)."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(server: RedisServer, dists: Sequence[str], *, server_pid: bool = False) -> Result:
    """Versions, redis-server and machine; with ``server_pid``, redis-server's pid too."""
    client = redis.Redis.from_url(server.url)
    info = client.info("server")
    client.close()
    env: Result = {
        **versions(dists),
        "redis_parser": "hiredis" if HIREDIS_AVAILABLE else "python",
        "redis_server": str(info.get("redis_version")),
        "redis_server_url": server.url,
    }
    if server_pid:
        env["redis_server_pid"] = int(info.get("process_id", 0))
    env.update(
        machine=platform.machine(),
        cpu=cpu_model(),
        cpus=os.cpu_count(),
        platform=platform.platform(),
    )
    return env


def fmt_number(value: float, digits: int = 0) -> str:
    """``value`` with thousands separators, or ``n/a`` if it is not finite."""
    return "n/a" if not math.isfinite(value) else f"{value:,.{digits}f}"


def progress(text: str) -> None:
    """A progress line, on stderr."""
    print(text, file=sys.stderr, flush=True)


def conclude(
    config: argparse.Namespace,
    env: Result,
    summary: Result,
    rounds: list[dict[str, Result]],
    problems: list[str],
    elapsed: float,
    report: str,
) -> int:
    """Print the report, write the ``--json`` document if asked; the exit code."""
    print(report)
    print(f"\n(benchmark time: {elapsed:.0f} s)")
    if config.json:
        document = {
            "config": vars(config),
            "environment": env,
            "summary": summary,
            "rounds": rounds,
            "problems": problems,
            "elapsed_s": elapsed,
        }
        Path(config.json).write_text(json.dumps(document, indent=1, default=str) + "\n")
        progress(f"wrote {config.json}")
    return 1 if problems else 0

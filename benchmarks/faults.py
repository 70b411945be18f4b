"""
Fault-injection benchmark: relay's delivery claims under real faults, with real
worker processes and private ``redis-server``s on loopback.

How to run (from the repository root)::

    .venv/bin/python benchmarks/faults.py                  # all scenarios, ~2-3 minutes
    .venv/bin/python benchmarks/faults.py --quick          # about 5x smaller, under a minute
    .venv/bin/python benchmarks/faults.py --scenario 1 3   # only some scenarios
    .venv/bin/python benchmarks/faults.py --json faults.json

Every scenario starts its own ``redis-server`` (``relay.testing.RedisServer``, on
a free loopback port; never the shared one) and its own processes, running
``benchmarks/fault_worker.py``: workers (a ``Relay`` whose counting receiver
records every message number it fires and appends it to a journal file) and a
producer (a ``Relay`` that sends ``n = 1, 2, ...``, paced). A worker reports
what it saw as one JSON line when it gets SIGTERM; the journal is what is left
of a worker killed with SIGKILL.

Scenarios:

1. Redis is killed (SIGKILL) and restarted 5 times during a 30 s stream of
   2,000 signals/s from a paced producer to 2 workers; Redis stays down
   ``--down`` seconds (0.5) each time. Two runs:

   a. durable: ``RedisServer(appendonly=True)`` (the stream survives the
      restarts), ``Relay(durable=True)``. Claim: every worker fires every
      message exactly once (0 lost, 0 duplicated).
   b. pub/sub (not durable, no persistence). Claim: each worker reports every
      message it lost, exactly: the numbers covered by its ``relay.gap``
      signals equal the numbers it never fired (lost = sent - fired, per
      worker). The stream goes on for 9 s after the last restart, so trailing
      losses are followed by later messages and detectable.

   Both: the producer queues what it cannot publish while Redis is down
   (``max_queue`` larger than the whole stream, so nothing is dropped; its
   ``dropped`` is reported) and every side reconnects with
   ``ExponentialWithJitterBackoff(cap=0.5, base=0.02)``. Claim: delivery
   resumes within 2 s of Redis coming back, for every restart and worker
   (recovery = first fire in that worker at or after the moment the restarted
   server answered PING, minus that moment).

2. Durable mode, one worker with ``worker_id``, killed with SIGKILL 5 s into a
   20 s stream (2,000/s) and started again with the same ``worker_id`` 5 s
   later. Claim: nothing is lost (every message sent is fired by one of the two
   incarnations); the restarted one fires everything sent while it was down.
   Duplicates across the kill (messages fired just before it, whose place had
   not been saved yet) are reported, not claimed.

3. Signing on (``Relay(secret=..., replay_window=5)`` everywhere), 2 workers;
   the producer sends 5,000 good signals (500/s) while 100,000 bad frames are
   published raw with redis-py (pipelined) onto the signal's channel: random
   bytes, truncated signed frames, frames signed with a wrong key (a wrong
   secret; the right secret for another namespace; ``wire.derive_key(secret)``
   not bound to the namespace), unsigned valid frames, frames signed with the
   right key (``frame_key()``, relay's own ``signing_key``) with huge nesting,
   correctly signed malformed frames, correctly signed frames far outside the
   replay window (old ``sent_at``; and a few real frames of the producer
   recorded at the start and published again at the end), signed frames with
   too many items, and oversized frames. After each chunk of 250 bad frames
   the benchmark publishes a signed marker message of its own (n above
   1,000,000,000, left out of the good tally) and keeps at most 4 chunks ahead
   of the slowest worker: good messages never wait behind a backlog long
   enough to fall out of the replay window, which would measure load rather
   than robustness. Then one final good message. Claims, per worker: the
   listener thread is alive at the end and fired the final message; its
   ``stats()["rejected"]`` equals the number of bad messages it received; it
   fired every good message (and every marker).

4. 4 workers with a ``scope="once"`` receiver (connected with a
   ``dispatch_uid``); the producer sends 1,000 signals at once. Claim: exactly
   1,000 runs across the workers, none twice.

Output: the Redis version and the machine, then a markdown table (sent, fired,
lost, duplicated, messages reported missing by gap signals, recovery time, the
claim and PASS/FAIL) and details per scenario. Progress goes to stderr.
``--json PATH`` also writes the configuration, environment and all results.

Exit code: 0 if every claim holds, 1 otherwise (a scenario that crashes fails).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import hashlib
import hmac
import json
import os
import platform
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import msgpack  # type: ignore[import-untyped]  # noqa: E402
import redis  # noqa: E402

from relay import bridge as relay_bridge  # noqa: E402
from relay import wire  # noqa: E402
from relay.bridge import channel_for  # noqa: E402
from relay.testing import RedisServer  # noqa: E402

WORKER = os.path.join(HERE, "fault_worker.py")
SECRET = "faults-benchmark-secret-0123456789abcdef"
RECOVERY_LIMIT = 2.0
STARTUP_TIMEOUT = 30.0

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A process misbehaved (exited early, timed out): the scenario fails."""


# -- configuration ------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    quick: bool
    down: float
    # 1
    s1_rate: int
    s1_seconds: float
    s1_restarts: int
    s1_workers: int
    # 2
    s2_rate: int
    s2_seconds: float
    s2_kill_at: float
    s2_restart_at: float
    # 3
    s3_good: int
    s3_good_rate: int
    s3_bad: int
    s3_workers: int
    s3_replay_window: float
    s3_oversized: int
    s3_too_many_items: int
    s3_captured: int
    # 4
    s4_sends: int
    s4_workers: int


def make_config(quick: bool, down: float | None) -> Config:
    if quick:
        return Config(
            quick=True,
            down=0.3 if down is None else down,
            s1_rate=2000,
            s1_seconds=8.0,
            s1_restarts=5,
            s1_workers=2,
            s2_rate=2000,
            s2_seconds=4.0,
            s2_kill_at=1.0,
            s2_restart_at=2.0,
            s3_good=1000,
            s3_good_rate=500,
            s3_bad=20_000,
            s3_workers=2,
            s3_replay_window=5.0,
            s3_oversized=5,
            s3_too_many_items=10,
            s3_captured=10,
            s4_sends=200,
            s4_workers=4,
        )
    return Config(
        quick=False,
        down=0.5 if down is None else down,
        s1_rate=2000,
        s1_seconds=30.0,
        s1_restarts=5,
        s1_workers=2,
        s2_rate=2000,
        s2_seconds=20.0,
        s2_kill_at=5.0,
        s2_restart_at=10.0,
        s3_good=5000,
        s3_good_rate=500,
        s3_bad=100_000,
        s3_workers=2,
        s3_replay_window=5.0,
        s3_oversized=20,
        s3_too_many_items=50,
        s3_captured=20,
        s4_sends=1000,
        s4_workers=4,
    )


# -- processes ----------------------------------------------------------------


class Proc:
    """A ``fault_worker.py`` process: its stdout lines arrive on a queue, stderr goes to a log."""

    def __init__(self, label: str, args: list[str], log_dir: str, *, stdin: bool = False) -> None:
        self.label = label
        self.log_path = os.path.join(log_dir, f"{label}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in close())
        self.spawned = time.time()
        self.popen = subprocess.Popen(
            [sys.executable, WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None
        for raw in stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with ``prefix`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise BenchError(
                    f"{self.label}: no {prefix!r} line within {timeout:g} s (log: {self.log_path})"
                ) from None
            if line is None:
                self.lines.put(None)
                raise BenchError(
                    f"{self.label} exited with {self.popen.wait()} before printing {prefix!r} "
                    f"(log: {self.log_path})"
                )
            if line.startswith(prefix):
                return line

    def result(self, timeout: float) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.expect("{", timeout))
        return report

    def tell(self, text: str) -> None:
        stdin = self.popen.stdin
        assert stdin is not None
        stdin.write(text.encode() + b"\n")
        stdin.flush()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to put processes in; every one still running at the end is killed."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.close()


def common_args(
    url: str,
    namespace: str,
    name: str,
    *,
    durable: bool,
    secret: str = "",
    replay_window: float = 300.0,
) -> list[str]:
    args = ["--url", url, "--namespace", namespace, "--signal", name]
    if durable:
        args.append("--durable")
    if secret:
        args += ["--secret", secret, "--replay-window", str(replay_window)]
    return args


def start_worker(
    procs: list[Proc], log_dir: str, label: str, base: list[str], *extra: str
) -> tuple[Proc, Journal]:
    journal = os.path.join(log_dir, f"{label}.journal")
    proc = Proc(label, ["worker", *base, "--label", label, "--journal", journal, *extra], log_dir)
    procs.append(proc)
    return proc, Journal(journal)


def start_producer(
    procs: list[Proc],
    log_dir: str,
    base: list[str],
    *,
    count: int,
    rate: float,
    final: int = 0,
    max_queue: int = 10_000,
) -> Proc:
    args = ["producer", *base, "--count", str(count), "--rate", str(rate)]
    args += ["--final", str(final), "--max-queue", str(max_queue)]
    proc = Proc("producer", args, log_dir, stdin=final > 0)
    procs.append(proc)
    return proc


def ready_time(line: str) -> float:
    return float(line.split()[1])


class Journal:
    """Follows a worker's journal file (``n time`` per fired message) as it grows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[tuple[int, float]] = []
        self.distinct: set[int] = set()
        self.last_growth = time.monotonic()
        self._offset = 0
        self._partial = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as journal:
                journal.seek(self._offset)
                data = journal.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._offset += len(data)
        self.last_growth = time.monotonic()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            n, at = line.split()
            self.entries.append((int(n), float(at)))
            self.distinct.add(int(n))


def wait_for(
    journals: list[Journal], done: Callable[[], bool], *, quiet: float | None, timeout: float
) -> str:
    """Poll the journals until ``done()``, or all are quiet ``quiet`` s, or the timeout."""
    start = time.monotonic()
    while True:
        for journal in journals:
            journal.poll()
        if done():
            return "done"
        now = time.monotonic()
        if quiet is not None and all(now - j.last_growth >= quiet for j in journals):
            return "quiet"
        if now - start > timeout:
            return "timeout"
        time.sleep(0.05)


def sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


# -- results ------------------------------------------------------------------


@dataclass
class Row:
    key: str
    title: str
    claim: str
    passed: bool = False
    sent: str = "-"
    fired: str = "-"
    lost: str = "-"
    duplicated: str = "-"
    gaps: str = "-"
    recovery: str = "-"
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def producer_line(pstats: dict[str, int], sent: int) -> str:
    """The producer's counters; its listener subscribes to nothing (it has no receivers)."""
    return (
        f"producer: sent {fmt(sent)}, published {fmt(pstats['published'])}, dropped "
        f"{fmt(pstats['dropped'])}, publish errors (retried) {fmt(pstats['publish_errors'])}, "
        f"its listener's disconnects/reconnects {pstats['disconnects']}/{pstats['reconnects']}"
    )


def fmt(n: int) -> str:
    return f"{n:,}"


def ranges(numbers: Iterable[int], limit: int = 8) -> str:
    """``1-3, 7, 9-12`` (the first ``limit`` runs)."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    more = f", ... ({len(runs) - limit} more runs)" if len(runs) > limit else ""
    return (", ".join(shown) + more) or "none"


def tally(numbers: list[int], sent: int) -> dict[str, Any]:
    counts = collections.Counter(numbers)
    fired = {n for n in counts if 1 <= n <= sent}
    lost = set(range(1, sent + 1)) - fired
    return {
        "fires": len(numbers),
        "distinct": len(fired),
        "lost": sorted(lost),
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
        "duplicated_numbers": sorted(n for n, c in counts.items() if c > 1),
        "strange": sorted(n for n in counts if not 1 <= n <= sent),
    }


def reported_missing(gaps: list[dict[str, Any]], name: str) -> tuple[set[int], int, int]:
    """(numbers covered by gap signals for ``name``, their total count, gap events)."""
    covered: set[int] = set()
    total = events = 0
    for event in gaps:
        if event["signal_name"] != name:
            continue
        events += 1
        total += event["count"]
        covered.update(range(event["first_missing"], event["first_missing"] + event["count"]))
    return covered, total, events


# -- scenario 1: Redis restarts -------------------------------------------------------


def restart_schedule(cfg: Config) -> list[float]:
    """Seconds into the stream: the first at 10 %, then every 15 % of its length."""
    return [cfg.s1_seconds * (0.10 + 0.15 * k) for k in range(cfg.s1_restarts)]


def scenario_restarts(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "1a" if durable else "1b"
    mode = "durable" if durable else "pub/sub"
    name = "faults.stream"
    sent_total = int(cfg.s1_rate * cfg.s1_seconds)
    row = Row(
        key,
        f"{mode}: Redis killed+restarted {cfg.s1_restarts}x in a {cfg.s1_seconds:g} s stream "
        f"at {fmt(cfg.s1_rate)}/s, {cfg.s1_workers} workers",
        (
            "0 lost, 0 duplicated; resumes <= 2 s"
            if durable
            else "reported missing == lost (per worker); resumes <= 2 s"
        ),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = os.path.join(log_dir, key)
    os.makedirs(log_dir)
    with RedisServer(appendonly=durable) as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=durable)
        workers = [
            start_worker(procs, log_dir, f"worker{i + 1}", base) for i in range(cfg.s1_workers)
        ]
        for proc, _ in workers:
            proc.expect("READY", STARTUP_TIMEOUT)
        producer = start_producer(
            procs, log_dir, base, count=sent_total, rate=cfg.s1_rate, max_queue=sent_total + 1000
        )
        t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
        progress(f"{key}: {mode} stream of {fmt(sent_total)} started")
        restarts: list[tuple[float, float]] = []
        for k, at in enumerate(restart_schedule(cfg)):
            sleep_until(t0 + at)
            down_at = time.time()
            server.stop()
            time.sleep(cfg.down)
            server.start()
            back_at = time.time()
            restarts.append((down_at, back_at))
            progress(
                f"{key}: restart {k + 1}/{cfg.s1_restarts} done (down {back_at - down_at:.2f} s)"
            )
        producer.expect("SENT", cfg.s1_seconds + 120)
        produced = producer.result(60)
        progress(f"{key}: producer done; waiting for the workers to go quiet")
        journals = [journal for _, journal in workers]
        how = wait_for(
            journals,
            lambda: durable and all(len(j.distinct) >= produced["sent"] for j in journals),
            quiet=2.0,
            timeout=60,
        )
        for proc, _ in workers:
            proc.terminate()
        reports = [proc.result(30) for proc, _ in workers]

    sent = produced["sent"]
    pstats = produced["stats"]
    ok = pstats["dropped"] == 0 and pstats["published"] == sent
    row.details.append(producer_line(pstats, sent))
    row.details.append(
        "restarts (s into the stream, down for): "
        + ", ".join(f"{d - t0:.1f} ({b - d:.2f})" for d, b in restarts)
        + f"; workers {how} at the end"
    )
    total_fires = total_lost = total_dup = total_missing = total_events = 0
    worst_recovery = 0.0
    workers_data = []
    for report in reports:
        counted = tally(report["numbers"], sent)
        covered, missing, events = reported_missing(report["gaps"], name)
        lost = set(counted["lost"])
        times = sorted(report["times"])
        recoveries: list[float | None] = []
        for k, (_, back_at) in enumerate(restarts):
            next_down = restarts[k + 1][0] if k + 1 < len(restarts) else float("inf")
            index = bisect.bisect_left(times, back_at)
            first = times[index] if index < len(times) else None
            recoveries.append(
                None if first is None or first >= next_down else round(first - back_at, 3)
            )
        listener: list[float | None] = []
        for k, (down_at, back_at) in enumerate(restarts):
            next_down = restarts[k + 1][0] if k + 1 < len(restarts) else float("inf")
            again = [at for at, _ in report["reconnects"] if down_at <= at < next_down]
            listener.append(round(min(again) - back_at, 3) if again else None)
        worker_recovery = max((r if r is not None else float("inf")) for r in recoveries)
        worst_recovery = max(worst_recovery, worker_recovery)
        stats = report["stats"]
        total_fires += counted["fires"]
        total_lost += len(lost)
        total_dup += counted["duplicated"]
        total_missing += missing
        total_events += events
        if durable:
            worker_ok = not lost and counted["duplicated"] == 0
        else:
            worker_ok = covered == lost and missing == len(lost)
        worker_ok = worker_ok and not counted["strange"] and worker_recovery <= RECOVERY_LIMIT
        ok = ok and worker_ok
        row.details.append(
            f"{report['label']}: fired {fmt(counted['fires'])} ({fmt(counted['distinct'])} "
            f"distinct), lost {fmt(len(lost))} [{ranges(lost)}], duplicated "
            f"{fmt(counted['duplicated'])}, reported missing {fmt(missing)} in {events} gaps "
            f"[{ranges(covered)}], stats missed/gaps {stats['missed']}/{stats['gaps']}, "
            f"duplicates ignored {fmt(stats['duplicates'])}, replayed {fmt(stats['replayed'])}, "
            f"disconnects/reconnects {stats['disconnects']}/{stats['reconnects']}; "
            f"recovery per restart (s): "
            + ", ".join("none" if r is None else f"{r:.2f}" for r in recoveries)
            + f"; listener resubscribed (s after PING ok): {listener}"
            + ("" if worker_ok else " -> FAIL")
        )
        if not durable and covered != lost:
            row.details.append(
                f"{report['label']}: lost but not reported [{ranges(lost - covered)}]; "
                f"reported but not lost [{ranges(covered - lost)}]"
            )
        if counted["strange"]:
            row.details.append(
                f"{report['label']}: fired unknown numbers {counted['strange'][:10]}"
            )
        workers_data.append(
            {
                "label": report["label"],
                "fires": counted["fires"],
                "distinct": counted["distinct"],
                "lost": len(lost),
                "lost_numbers": ranges(lost, 50),
                "duplicated": counted["duplicated"],
                "reported_missing": missing,
                "reported_numbers": ranges(covered, 50),
                "gap_events": events,
                "recoveries": recoveries,
                "listener_resubscribed": listener,
                "stats": stats,
                "max_lag": report["max_lag"],
            }
        )
    row.passed = ok
    row.sent = fmt(sent)
    row.fired = f"{fmt(total_fires)} ({cfg.s1_workers} workers)"
    row.lost = fmt(total_lost)
    row.duplicated = fmt(total_dup)
    row.gaps = f"{fmt(total_missing)} ({total_events} gaps)"
    row.recovery = "never" if worst_recovery == float("inf") else f"{worst_recovery:.2f}"
    row.data = {
        "sent": sent,
        "producer_stats": pstats,
        "restarts": [{"down_at": d - t0, "down_for": b - d} for d, b in restarts],
        "workers": workers_data,
        "max_recovery": None if worst_recovery == float("inf") else worst_recovery,
    }
    return row


# -- scenario 2: a worker killed and restarted ----------------------------------------


def scenario_kill(cfg: Config, log_dir: str) -> Row:
    name = "faults.durable"
    sent_total = int(cfg.s2_rate * cfg.s2_seconds)
    row = Row(
        "2",
        f"durable: worker SIGKILLed at {cfg.s2_kill_at:g} s, restarted with the same worker_id "
        f"at {cfg.s2_restart_at:g} s, {cfg.s2_seconds:g} s stream at {fmt(cfg.s2_rate)}/s",
        "0 lost; everything sent while down fired after restart",
    )
    namespace = f"faults-2-{os.getpid()}"
    log_dir = os.path.join(log_dir, "2")
    os.makedirs(log_dir)
    with RedisServer() as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=True)
        first, journal1 = start_worker(procs, log_dir, "worker-a", base, "--worker-id", "w-1")
        first.expect("READY", STARTUP_TIMEOUT)
        producer = start_producer(
            procs, log_dir, base, count=sent_total, rate=cfg.s2_rate, max_queue=sent_total + 1000
        )
        t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
        progress(f"2: stream of {fmt(sent_total)} started")
        sleep_until(t0 + cfg.s2_kill_at)
        killed_at = time.time()
        first.kill()
        progress("2: worker killed with SIGKILL")
        sleep_until(t0 + cfg.s2_restart_at)
        respawned_at = time.time()
        second, journal2 = start_worker(procs, log_dir, "worker-b", base, "--worker-id", "w-1")
        ready_at = ready_time(second.expect("READY", STARTUP_TIMEOUT))
        progress(f"2: worker restarted (subscribed {ready_at - respawned_at:.2f} s after spawn)")
        producer.expect("SENT", cfg.s2_seconds + 120)
        produced = producer.result(60)
        journals = [journal1, journal2]
        how = wait_for(
            journals,
            lambda: len(journal1.distinct | journal2.distinct) >= produced["sent"],
            quiet=3.0,
            timeout=60,
        )
        second.terminate()
        report = second.result(30)

    sent = produced["sent"]
    send_times: list[float] = produced["times"]
    numbers1 = [n for n, _ in journal1.entries]
    numbers2: list[int] = report["numbers"]
    set1, set2 = set(numbers1), set(numbers2)
    everything = set(range(1, sent + 1))
    lost = everything - set1 - set2
    sent_down = [n for n, at in enumerate(send_times, 1) if killed_at <= at < ready_at]
    fired_after = [n for n in sent_down if n in set2]
    across = set1 & set2
    within = (len(numbers1) - len(set1)) + (len(numbers2) - len(set2))
    tail1 = numbers1[-len(across) :] if across else []
    fire_time2: dict[int, float] = {}
    for n, at in zip(numbers2, report["times"], strict=True):
        fire_time2.setdefault(n, at)
    caught_up = (
        max(fire_time2[n] for n in sent_down) - ready_at
        if sent_down and all(n in fire_time2 for n in sent_down)
        else None
    )
    stats = report["stats"]
    pstats = produced["stats"]
    row.passed = not lost and len(fired_after) == len(sent_down) and pstats["dropped"] == 0
    row.sent = fmt(sent)
    row.fired = f"{fmt(len(numbers1))} + {fmt(len(numbers2))}"
    row.lost = fmt(len(lost))
    row.duplicated = fmt(len(across) + within)
    row.gaps = f"{fmt(stats['missed'])} ({stats['gaps']} gaps)"
    row.details += [
        producer_line(pstats, sent) + " (no Redis fault in this scenario)",
        f"first incarnation fired {fmt(len(numbers1))} (up to n={max(set1, default=0)}) before "
        f"SIGKILL at {killed_at - t0:.2f} s; the second was spawned at {respawned_at - t0:.2f} s "
        f"and subscribed at {ready_at - t0:.2f} s; workers {how} at the end",
        f"sent while down: {fmt(len(sent_down))}; of these fired after restart: "
        f"{fmt(len(fired_after))}; second incarnation fired {fmt(len(numbers2))} in all, "
        f"{fmt(stats['replayed'])} of them by catching up from the log (a pass of the listener's "
        f"catch-up is counted when it ends), {fmt(len(numbers2) - stats['replayed'])} from "
        f"pub/sub after it; caught up with what was sent while down "
        + ("never" if caught_up is None else f"{caught_up:.2f} s after subscribing"),
        f"lost: {fmt(len(lost))} [{ranges(lost)}]",
        f"duplicated across the kill: {len(across)} [{ranges(across)}]"
        + (
            " - exactly the last messages fired before the kill"
            if across and sorted(across) == sorted(tail1)
            else ""
        )
        + f"; fired twice by one incarnation: {within}",
    ]
    row.data = {
        "sent": sent,
        "producer_stats": pstats,
        "killed_at": killed_at - t0,
        "respawned_at": respawned_at - t0,
        "subscribed_at": ready_at - t0,
        "fired_before_kill": len(numbers1),
        "fired_after_restart_total": len(numbers2),
        "sent_while_down": len(sent_down),
        "fired_after_restart_of_sent_while_down": len(fired_after),
        "lost": len(lost),
        "duplicated_across_kill": sorted(across),
        "duplicated_within": within,
        "catch_up_seconds": caught_up,
        "stats_after_restart": stats,
    }
    return row


# -- scenario 3: forged and malformed frames --------------------------------------------

FORGER = "forger:0:0bad"
MARKER_ORIGIN = "faults-benchmark:0:0000"
MARKER_BASE = 1_000_000_000


def frame_key(namespace: str, secret: str) -> bytes:
    """
    The key relay signs the frames of ``namespace`` with: ``relay.bridge.signing_key``
    (which makes the namespace part of the key) where it exists, else
    ``wire.derive_key(secret)``. Checked against a real frame of the producer.
    """
    make = getattr(relay_bridge, "signing_key", None)
    if make is None:
        return wire.derive_key(secret)
    key: bytes = make(namespace, secret)
    return key


def _signed(key: bytes, body: bytes) -> bytes:
    """``body`` with the signed trailer the wire format defines (bin 8 of the HMAC)."""
    return body + b"\xc4\x20" + hmac.new(key, body, hashlib.sha256).digest()


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


class Forger:
    """Makes the bad frames of scenario 3; every one must be rejected exactly once."""

    def __init__(self, key: bytes, wrong_keys: list[bytes], name: str, rng: random.Random) -> None:
        self.key = key
        self.wrong_keys = [k for k in wrong_keys if k != key]
        self.name = name
        self.rng = rng
        self.kwargs = wire.encode_kwargs({"n": -1})  # if ever accepted: fires n=-1

    def message(
        self,
        *,
        sent_at: float | None = None,
        signal: str | None = None,
        kwargs: bytes | None = None,
    ) -> tuple[bytes, str, int, str, None, float, bytes]:
        return (
            self.rng.randbytes(16),
            FORGER,
            self.rng.randrange(1, 1 << 40),
            signal or self.name,
            None,
            time.time() if sent_at is None else sent_at,
            kwargs or self.kwargs,
        )

    def frame(self, key: bytes | None, **fields: Any) -> bytes:
        return wire.encode_frame([self.message(**fields)], key=key)

    def raw(self, head: int, *elements: object) -> bytes:
        """A signed frame with arbitrary elements (and ``head`` as its array header)."""
        return _signed(self.key, bytes([head]) + b"".join(_pack(e) for e in elements))

    def fields(self, **changes: Any) -> list[Any]:
        message = dict(
            id=self.rng.randbytes(16),
            seq=self.rng.randrange(1, 1 << 40),
            signal=self.name,
            sender=None,
            sent_at=time.time(),
            kwargs={"n": -1},
        )
        message.update(changes)
        return list(message.values())

    # categories

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 300))

    def truncated(self) -> bytes:
        frame = self.frame(self.key)
        return frame[: self.rng.randrange(1, len(frame))]

    def wrong_key_frame(self) -> bytes:
        return self.frame(self.rng.choice(self.wrong_keys))

    def unsigned(self) -> bytes:
        return self.frame(None)

    def nesting(self) -> bytes:
        head = b"\x82" + _pack("n") + _pack(-1) + _pack("x")
        kind = self.rng.randrange(4)
        if kind == 0:  # deeper than msgpack's own stack
            value = b"\x91" * self.rng.randrange(1100, 5000) + b"\xc0"
        elif kind == 1:  # deeper than relay's max_depth (32)
            value = b"\x91" * self.rng.randrange(33, 1000) + b"\xc0"
        elif kind == 2:
            value = (b"\x81" + _pack("k")) * self.rng.randrange(33, 1000) + b"\xc0"
        else:  # tuples in tuples: extension types, decoded one level at a time
            value = b"\xc0"
            for _ in range(self.rng.randrange(33, 200)):
                value = _pack(msgpack.ExtType(1, b"\x91" + value))
        return self.frame(self.key, kwargs=head + value)

    def malformed(self) -> bytes:
        f = self.fields

        def extra(value: object) -> bytes:
            return self.raw(0x94, 1, FORGER, [f(kwargs={"n": -1, "x": value})])

        bad_date = _pack([2020, 13, 1, 0, 0, 0, 0, 0])
        list_key = b"\x82\xa1n\xff\xa1x\x81\x91\x01\x02"  # {"n": -1, "x": {[1]: 2}}
        variants: list[Callable[[], bytes]] = [
            lambda: self.raw(0x94, 2, FORGER, [f()]),
            lambda: self.raw(0x94, "1", FORGER, [f()]),
            lambda: self.raw(0x94, 1, "", [f()]),
            lambda: self.raw(0x94, 1, 5, [f()]),
            lambda: self.raw(0x94, 1, FORGER, "messages"),
            lambda: self.raw(0x94, 1, FORGER, [f()[:5]]),
            lambda: self.raw(0x94, 1, FORGER, [f(id=b"x" * 15)]),
            lambda: self.raw(0x94, 1, FORGER, [f(seq=-1)]),
            lambda: self.raw(0x94, 1, FORGER, [f(signal="")]),
            lambda: self.raw(0x94, 1, FORGER, [f(sender=5)]),
            lambda: self.raw(0x94, 1, FORGER, [f(sent_at=int(time.time()))]),
            lambda: self.raw(0x94, 1, FORGER, [f(sent_at=float("nan"))]),
            lambda: self.raw(0x94, 1, FORGER, [f(sent_at=float("inf"))]),
            lambda: self.raw(0x94, 1, FORGER, [f(kwargs=[1, 2])]),
            lambda: self.raw(0x94, 1, FORGER, [f(kwargs={1: 2, "n": -1})]),
            lambda: extra(msgpack.ExtType(99, b"x")),  # unknown extension type
            lambda: extra(msgpack.ExtType(10, b"u" * 15)),  # a UUID of 15 bytes
            lambda: extra(msgpack.ExtType(5, bad_date)),  # a datetime in month 13
            lambda: extra(msgpack.Timestamp(1, 0)),  # extension type -1, a msgpack Timestamp
            # Three elements, then the mac: trailing bytes.
            lambda: self.raw(0x93, 1, FORGER, [f()]),
            # Invalid UTF-8 in the origin.
            lambda: _signed(self.key, b"\x94\x01\xa2\xff\xfe" + _pack([f()])),
            # A list as a map key.
            lambda: _signed(
                self.key,
                b"\x94\x01"
                + _pack(FORGER)
                + b"\x91\x96"
                + b"".join(_pack(x) for x in f()[:5])
                + list_key,
            ),
            lambda: _signed(self.key, b"\x00" + self.rng.randbytes(self.rng.randrange(0, 200))),
            # A message of another signal on this channel.
            lambda: self.frame(self.key, signal="faults.other"),
        ]
        return self.rng.choice(variants)()

    def old(self) -> bytes:
        if self.rng.random() < 0.8:
            return self.frame(self.key, sent_at=time.time() - self.rng.uniform(10, 86_400))
        return self.frame(self.key, sent_at=time.time() + self.rng.uniform(120, 86_400))

    def too_many_items(self) -> bytes:
        items = wire.DEFAULT_MAX_MESSAGE_SIZE // 10  # over the 100,000-item limit
        value = b"\xdd" + items.to_bytes(4, "big") + b"\xc0" * items
        return self.frame(self.key, kwargs=b"\x82" + _pack("n") + _pack(-1) + _pack("x") + value)

    def marker(self, number: int) -> bytes:
        """A good message of the benchmark's own (n = MARKER_BASE + number), to pace the flood."""
        return wire.encode_frame(
            [
                (
                    self.rng.randbytes(16),
                    MARKER_ORIGIN,
                    number,
                    self.name,
                    None,
                    time.time(),
                    wire.encode_kwargs({"n": MARKER_BASE + number}),
                )
            ],
            key=self.key,
        )

    def oversized(self) -> bytes:
        return self.rng.randbytes(wire.DEFAULT_MAX_MESSAGE_SIZE + 1024)


def bad_frames(cfg: Config, forger: Forger) -> list[tuple[str, bytes]]:
    """The flood: ``cfg.s3_bad`` frames in all (less the captured replays), shuffled."""
    fixed: list[tuple[str, bytes]] = []
    big = forger.too_many_items()
    fixed += [("too many items (signed)", big)] * cfg.s3_too_many_items
    huge = forger.oversized()
    fixed += [("oversized (> max_message_size)", huge)] * cfg.s3_oversized
    shares: list[tuple[str, Callable[[], bytes], float]] = [
        ("random bytes", forger.random_bytes, 0.20),
        ("truncated signed frame", forger.truncated, 0.15),
        ("signed with a wrong key", forger.wrong_key_frame, 0.15),
        ("unsigned valid frame", forger.unsigned, 0.15),
        ("huge nesting (signed)", forger.nesting, 0.10),
        ("malformed fields (signed)", forger.malformed, 0.10),
        ("outside the replay window (signed)", forger.old, 0.15),
    ]
    flexible = cfg.s3_bad - len(fixed) - cfg.s3_captured
    frames = list(fixed)
    made = 0
    for index, (category, make, share) in enumerate(shares):
        count = flexible - made if index == len(shares) - 1 else round(flexible * share)
        made += count
        frames += [(category, make()) for _ in range(count)]
    forger.rng.shuffle(frames)
    return frames


def scenario_forgery(cfg: Config, log_dir: str) -> Row:
    name = "faults.signed"
    good = cfg.s3_good
    row = Row(
        "3",
        f"signed: {fmt(cfg.s3_bad)} forged/malformed frames mixed into {fmt(good)} good "
        f"signals (+1 final), {cfg.s3_workers} workers, replay_window {cfg.s3_replay_window:g} s",
        "listener alive + fires final; rejected == bad received; all good fired",
    )
    namespace = f"faults-3-{os.getpid()}"
    log_dir = os.path.join(log_dir, "3")
    os.makedirs(log_dir)
    rng = random.Random(20240601)
    key = frame_key(namespace, SECRET)
    wrong_keys = [
        wire.derive_key("not-the-secret"),
        frame_key(namespace, "not-the-secret"),
        frame_key("another-namespace", SECRET),  # the right secret, another namespace
        wire.derive_key(SECRET),  # the secret itself, not bound to the namespace
    ]
    forger = Forger(key, wrong_keys, name, rng)
    progress(f"3: making {fmt(cfg.s3_bad)} bad frames")
    frames = bad_frames(cfg, forger)
    flood_seconds = good / cfg.s3_good_rate
    with RedisServer() as server, processes() as procs:
        client = redis.Redis.from_url(server.url)
        channel = channel_for(namespace, name)
        base = common_args(
            server.url,
            namespace,
            name,
            durable=False,
            secret=SECRET,
            replay_window=cfg.s3_replay_window,
        )
        workers = [
            start_worker(procs, log_dir, f"worker{i + 1}", base) for i in range(cfg.s3_workers)
        ]
        for proc, _ in workers:
            proc.expect("READY", STARTUP_TIMEOUT)
        # Record a few of the producer's real frames, to publish them again once they are old.
        capture = client.pubsub()  # type: ignore[no-untyped-call]
        capture.subscribe(channel)
        _confirm(capture, "subscribe")
        producer = start_producer(procs, log_dir, base, count=good, rate=cfg.s3_good_rate, final=1)
        producer.expect("READY", STARTUP_TIMEOUT)
        captured: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + 5
        while len(captured) < cfg.s3_captured and time.monotonic() < deadline:
            message = capture.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                captured.append((time.time(), message["data"]))
        capture.unsubscribe(channel)
        _confirm(capture, "unsubscribe")
        capture.close()
        progress(f"3: good stream started; flooding {fmt(len(frames))} bad frames")

        receivers: collections.Counter[int] = collections.Counter()
        expected_rejects = 0
        categories: collections.Counter[str] = collections.Counter()
        journals = [journal for _, journal in workers]
        chunk, in_flight = 250, 4
        throttled = 0.0
        flood_start = time.monotonic()
        for index, first in enumerate(range(0, len(frames), chunk)):
            # Backpressure: at most `in_flight` chunks not yet worked through by every
            # worker, so that good messages never wait long behind bad frames (they
            # would be refused as outside the replay window, and this is no load test).
            if index >= in_flight:
                waited = time.monotonic()
                mark = MARKER_BASE + index - in_flight + 1

                def marked(mark: int = mark) -> bool:
                    return all(mark in j.distinct for j in journals)

                how = wait_for(journals, marked, quiet=None, timeout=30)
                if how != "done":
                    raise BenchError(f"a worker did not fire marker {mark} within 30 s")
                throttled += time.monotonic() - waited
            batch = frames[first : first + chunk]
            pipe = client.pipeline(transaction=False)
            for _, data in batch:
                pipe.publish(channel, data)
            pipe.publish(channel, forger.marker(index + 1))
            results = pipe.execute()
            receivers.update(results[:-1])
            expected_rejects += len(batch)
            categories.update(category for category, _ in batch)
            sleep_until_mono(flood_start + flood_seconds * (first + chunk) / len(frames))
        markers = index + 1
        flood_took = time.monotonic() - flood_start
        # The recorded real frames, now older than the replay window.
        if captured:
            sleep_until(captured[-1][0] + cfg.s3_replay_window + 2)
        replayed_messages = 0
        for _, data in captured:
            try:
                count = len(wire.decode_frame(data, keys=[key]))
            except wire.WireError as exc:
                raise BenchError(
                    f"a real frame of the producer does not verify with the benchmark's key "
                    f"({exc}): relay signs differently than frame_key() assumes"
                ) from None
            receivers.update([client.publish(channel, data)])
            replayed_messages += count
            categories["real frame replayed after the window"] += 1
        expected_rejects += replayed_messages
        producer.expect("SENT", flood_seconds + 120)
        producer.tell("final")
        produced = producer.result(60)
        progress("3: flood done, final message sent; waiting for it in every worker")
        final = produced["sent"]
        how = wait_for(
            journals, lambda: all(final in j.distinct for j in journals), quiet=None, timeout=60
        )
        for proc, _ in workers:
            proc.terminate()
        reports = [proc.result(30) for proc, _ in workers]
        client.close()

    bad_published = len(frames) + len(captured)
    everyone = all(count == cfg.s3_workers for count in receivers.elements())
    ok = everyone and produced["stats"]["dropped"] == 0
    row.details.append(
        f"bad frames published: {fmt(bad_published)} in {flood_took:.1f} s (held back "
        f"{throttled:.1f} s waiting for the workers; "
        + ", ".join(f"{category} {fmt(count)}" for category, count in categories.items())
        + f"), holding {fmt(expected_rejects)} bad messages; PUBLISH reached "
        + (f"all {cfg.s3_workers} workers every time" if everyone else f"{dict(receivers)} workers")
        + f"; good: {fmt(final)} sent; workers {how} at the end"
    )
    row.details.append(producer_line(produced["stats"], final) + " (no Redis fault here)")
    total_fires = total_lost = total_dup = 0
    workers_data = []
    for report in reports:
        good_numbers = [n for n in report["numbers"] if n < MARKER_BASE]
        markers_fired = len(report["numbers"]) - len(good_numbers)
        counted = tally(good_numbers, final)
        stats = report["stats"]
        alive = report["listener_alive"]
        got_final = final in report["numbers"]
        rejected = stats["rejected"]
        worker_ok = (
            alive
            and got_final
            and rejected == expected_rejects
            and not counted["lost"]
            and counted["duplicated"] == 0
            and not counted["strange"]
            and markers_fired == markers
        )
        ok = ok and worker_ok
        total_fires += counted["fires"]
        total_lost += len(counted["lost"])
        total_dup += counted["duplicated"]
        row.details.append(
            f"{report['label']}: listener alive {alive}, fired the final message {got_final}, "
            f"rejected {fmt(rejected)} of {fmt(expected_rejects)} bad, good fired "
            f"{fmt(counted['distinct'])}/{fmt(final)} (lost {len(counted['lost'])}, duplicated "
            f"{counted['duplicated']}), forged ones fired {len(counted['strange'])}, "
            f"listener errors {stats['listener_errors']}, disconnects {stats['disconnects']}, "
            f"markers fired {markers_fired}/{markers}, "
            f"max delay of a good message {report['max_lag']:.2f} s"
            + ("" if worker_ok else " -> FAIL")
        )
        workers_data.append(
            {
                "label": report["label"],
                "listener_alive": alive,
                "fired_final": got_final,
                "rejected": rejected,
                "expected_rejected": expected_rejects,
                "good_fired": counted["distinct"],
                "lost": len(counted["lost"]),
                "duplicated": counted["duplicated"],
                "forged_fired": len(counted["strange"]),
                "max_lag": report["max_lag"],
                "stats": stats,
            }
        )
    row.passed = ok
    row.sent = f"{fmt(final)} good + {fmt(bad_published)} bad"
    row.fired = f"{fmt(total_fires)} ({cfg.s3_workers} workers)"
    row.lost = fmt(total_lost)
    row.duplicated = fmt(total_dup)
    row.gaps = f"{sum(r['stats']['missed'] for r in reports)}"
    row.data = {
        "good_sent": final,
        "bad_frames": bad_published,
        "bad_messages": expected_rejects,
        "categories": dict(categories),
        "publish_receivers": dict(receivers),
        "flood_seconds": flood_took,
        "flood_throttled_seconds": throttled,
        "markers": markers,
        "producer_stats": produced["stats"],
        "workers": workers_data,
    }
    return row


def _confirm(pubsub: Any, kind: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] == kind:
            return
    raise BenchError(f"Redis did not confirm {kind}")


def sleep_until_mono(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# -- scenario 4: once receivers ---------------------------------------------------------


def scenario_once(cfg: Config, log_dir: str) -> Row:
    name = "faults.once"
    sends = cfg.s4_sends
    row = Row(
        "4",
        f'{cfg.s4_workers} workers with a scope="once" receiver (dispatch_uid), '
        f"{fmt(sends)} sends at once",
        f"exactly {fmt(sends)} runs in all, none twice",
    )
    namespace = f"faults-4-{os.getpid()}"
    log_dir = os.path.join(log_dir, "4")
    os.makedirs(log_dir)
    with RedisServer() as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=False)
        workers = [
            start_worker(procs, log_dir, f"worker{i + 1}", base, "--once")
            for i in range(cfg.s4_workers)
        ]
        for proc, _ in workers:
            proc.expect("READY", STARTUP_TIMEOUT)
        producer = start_producer(procs, log_dir, base, count=sends, rate=0)
        producer.expect("READY", STARTUP_TIMEOUT)
        progress(f"4: {fmt(sends)} sends")
        producer.expect("SENT", 120)
        produced = producer.result(60)
        journals = [journal for _, journal in workers]
        how = wait_for(
            journals, lambda: sum(len(j.entries) for j in journals) >= sends, quiet=2.0, timeout=60
        )
        time.sleep(0.5)  # a late second run would show up now
        for proc, _ in workers:
            proc.terminate()
        reports = [proc.result(30) for proc, _ in workers]

    sent = produced["sent"]
    runs = [n for report in reports for n in report["numbers"]]
    counted = tally(runs, sent)
    twice = counted["duplicated_numbers"]
    row.passed = len(runs) == sent and not twice and not counted["lost"] and not counted["strange"]
    row.sent = fmt(sent)
    row.fired = f"{fmt(len(runs))} runs"
    row.lost = fmt(len(counted["lost"]))
    row.duplicated = fmt(counted["duplicated"])
    per_worker = [len(report["numbers"]) for report in reports]
    skipped = sum(report["stats"]["once_skipped"] for report in reports)
    errors = sum(report["stats"]["once_errors"] for report in reports)
    row.details += [
        producer_line(produced["stats"], sent) + " (no Redis fault here)",
        f"runs per worker: {per_worker}; claims lost to another worker (once_skipped): "
        f"{fmt(skipped)} (expected {fmt(sent * (cfg.s4_workers - 1))}); once_errors {errors}; "
        f"workers {how} at the end",
        f"never ran: [{ranges(counted['lost'])}]; ran more than once: [{ranges(twice)}]",
    ]
    row.data = {
        "sent": sent,
        "runs": len(runs),
        "runs_per_worker": per_worker,
        "never_ran": len(counted["lost"]),
        "ran_twice": twice,
        "once_skipped": skipped,
        "once_errors": errors,
        "stats": [report["stats"] for report in reports],
    }
    return row


# -- main -----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str:
        with contextlib.suppress(OSError), open(path) as lines:
            for line in lines:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return "unknown"

    binary = shutil.which("redis-server") or "redis-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        import hiredis

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "pure-Python parser"
    return {
        "redis_server": version,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory": first("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "redis_py": f"{redis.__version__} ({parser})",
        "msgpack": ".".join(map(str, msgpack.version)),
    }


def print_report(rows: list[Row], env: dict[str, Any], cfg: Config, out: TextIO) -> None:
    print("# relay fault-injection benchmark" + (" (--quick)" if cfg.quick else ""), file=out)
    print(file=out)
    print(f"- Redis: {env['redis_server']}", file=out)
    print(
        f"- Machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory']} RAM, {env['platform']}; "
        f"Python {env['python']}, redis-py {env['redis_py']}, msgpack {env['msgpack']}",
        file=out,
    )
    print(file=out)
    header = [
        "#",
        "scenario",
        "sent",
        "fired",
        "lost",
        "duplicated",
        "gaps reported (msgs missing)",
        "recovery (s)",
        "claim",
        "result",
    ]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "|".join("---" for _ in header) + "|", file=out)
    for row in rows:
        cells = [
            row.key,
            row.title,
            row.sent,
            row.fired,
            row.lost,
            row.duplicated,
            row.gaps,
            row.recovery,
            row.claim,
            "PASS" if row.passed else "FAIL",
        ]
        print("| " + " | ".join(cells) + " |", file=out)
    print(file=out)
    print(
        "gaps reported = messages covered by relay.gap signals (number of gap signals); "
        "recovery = max over restarts and workers of (first fire after the restarted Redis "
        "answered PING - that moment). Lost/duplicated are counted per worker from the message "
        "numbers its receiver saw, then summed.",
        file=out,
    )
    for row in rows:
        print(file=out)
        print(f"**{row.key}** {'PASS' if row.passed else 'FAIL'}: {row.title}", file=out)
        if row.error:
            print(f"- error: {row.error}", file=out)
        for line in row.details:
            print(f"- {line}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fault-injection benchmark of relay (see the module docstring)."
    )
    parser.add_argument("--quick", action="store_true", help="about 5x smaller (smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write all results to PATH")
    parser.add_argument(
        "--scenario", type=int, nargs="+", choices=[1, 2, 3, 4], help="run only these"
    )
    parser.add_argument(
        "--down", type=float, default=None, help="seconds Redis stays down per restart (0.5)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the worker logs and journals")
    args = parser.parse_args(argv)
    cfg = make_config(args.quick, args.down)
    chosen = sorted(set(args.scenario or [1, 2, 3, 4]))
    env = environment()
    progress(f"{env['redis_server']}; {env['cpu']} x{env['cpus']}")
    log_dir = tempfile.mkdtemp(prefix="relay-faults-")
    progress(f"worker logs and journals in {log_dir}")

    plan: list[tuple[str, Callable[[], Row]]] = []
    if 1 in chosen:
        plan.append(("1a", lambda: scenario_restarts(cfg, log_dir, durable=True)))
        plan.append(("1b", lambda: scenario_restarts(cfg, log_dir, durable=False)))
    if 2 in chosen:
        plan.append(("2", lambda: scenario_kill(cfg, log_dir)))
    if 3 in chosen:
        plan.append(("3", lambda: scenario_forgery(cfg, log_dir)))
    if 4 in chosen:
        plan.append(("4", lambda: scenario_once(cfg, log_dir)))

    rows: list[Row] = []
    started = time.monotonic()
    for key, run in plan:
        progress(f"scenario {key}")
        try:
            row = run()
        except Exception as exc:
            progress(f"scenario {key} crashed: {exc!r}")
            row = Row(key, f"scenario {key}", "-", error=f"{type(exc).__name__}: {exc}")
        progress(f"scenario {key}: {'PASS' if row.passed else 'FAIL'}")
        rows.append(row)
    took = time.monotonic() - started

    print_report(rows, env, cfg, sys.stdout)
    print(f"\nTotal time {took:.0f} s.", file=sys.stdout)
    passed = all(row.passed for row in rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "config": cfg.__dict__,
                    "environment": env,
                    "seconds": took,
                    "passed": passed,
                    "scenarios": [
                        {
                            "key": row.key,
                            "title": row.title,
                            "claim": row.claim,
                            "passed": row.passed,
                            "error": row.error,
                            "table": {
                                "sent": row.sent,
                                "fired": row.fired,
                                "lost": row.lost,
                                "duplicated": row.duplicated,
                                "gaps": row.gaps,
                                "recovery": row.recovery,
                            },
                            "details": row.details,
                            "data": row.data,
                        }
                        for row in rows
                    ],
                },
                out,
                indent=2,
            )
        progress(f"wrote {args.json}")
    if passed and not args.keep:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        progress(f"kept the worker logs and journals in {log_dir}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

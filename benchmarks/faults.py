"""
Fault-injection benchmark: relay's delivery claims under real faults, with real
worker processes and private ``redis-server``s on loopback.

How to run (from the repository root)::

    .venv/bin/python benchmarks/faults.py                  # all scenarios, about 5-6 minutes
    .venv/bin/python benchmarks/faults.py --quick          # a few times smaller, 2-2.5 minutes
    .venv/bin/python benchmarks/faults.py --scenario 5 7   # only some scenarios (1 to 10)
    .venv/bin/python benchmarks/faults.py --json faults.json

Every scenario starts its own ``redis-server`` (``relay.testing.RedisServer``, on
a free loopback port; never the shared one) and its own processes, running
``benchmarks/fault_worker.py``: workers (a ``Relay`` whose counting receiver
records every message number it fires and appends it to a journal file, and
whose ``relay.gap``, ``disconnected`` and ``reconnected`` receivers append to an
events file) and a producer (a ``Relay`` that sends ``n = 1, 2, ...``, paced).
A worker reports what it saw as one JSON line when it gets SIGTERM; the journal
is what is left of a worker killed with SIGKILL.

The contract, per worker, wherever a scenario does not say otherwise:

- durable mode (``Relay(durable=True)``): every message fired exactly once:
  0 lost, 0 duplicated, and nothing reported missing;
- pub/sub mode: 0 duplicated, and every message lost is reported, exactly: the
  numbers covered by the worker's ``relay.gap`` signals are the numbers it
  never fired (reported == lost, message by message), each reported once, so
  there is no false gap;
- delivery resumes within 2 s of the end of each fault (the recovery time,
  defined per scenario below: the first fire after the fault ended, minus the
  moment it ended);
- the producer drops nothing (its queue is larger than its stream) and
  publishes everything; the worker's listener thread is alive at the end.

Scenarios 5 to 8 end alike: once every worker has recovered (subscribed again,
as many ``reconnected`` as ``disconnected`` signals) the producer sends 20 more
messages, so that every loss is followed by a later message and can be
noticed, and the benchmark waits until each worker has fired, or been told it
lost, every number. Where a scenario runs in both modes, ``a`` is durable and
``b`` pub/sub. Every process reconnects with
``ExponentialWithJitterBackoff(cap=0.5, base=0.02)``.

1. Redis is killed (SIGKILL) and restarted 5 times during a 30 s stream of
   2,000 signals/s from a paced producer to 2 workers; Redis stays down
   ``--down`` seconds (0.5) each time. a: ``RedisServer(appendonly=True)``
   (the stream survives the restarts). b: no persistence. The stream goes on
   for 9 s after the last restart, so trailing losses are followed by later
   messages. Recovery = the first fire in that worker at or after the moment
   the restarted server answered PING, minus that moment, for every restart.

2. Durable mode, one worker with ``worker_id``, killed with SIGKILL 5 s into a
   20 s stream (2,000/s) and started again with the same ``worker_id`` 5 s
   later. Claim: nothing is lost (every message sent is fired by one of the two
   incarnations); the restarted one fires everything sent while it was down.
   Duplicates across the kill (messages fired just before it, whose place had
   not been saved yet) are reported, not claimed.

3. Signing on (``Relay(secret=..., replay_window=5)`` everywhere), pub/sub, 2
   workers; the producer sends 5,000 good signals (500/s) while 100,000 bad
   frames are published raw with redis-py (pipelined) onto the signal's
   channel: random bytes, truncated signed frames, frames signed with a wrong
   key (a wrong secret; the right secret for another namespace;
   ``wire.derive_key(secret)`` not bound to the namespace), unsigned valid
   frames, frames signed with the right key (``frame_key()``, relay's own
   ``signing_key``) with huge nesting, correctly signed malformed frames,
   correctly signed frames far outside the replay window (old ``sent_at``;
   and a few real frames of the producer recorded at the start and published
   again at the end), signed frames with too many items, and oversized
   frames. After each chunk of 250 bad frames the benchmark publishes a signed
   marker message of its own (n above 1,000,000,000, left out of the good
   tally) and keeps at most 4 chunks ahead of the slowest worker: good
   messages never wait behind a backlog long enough to fall out of the replay
   window, which would measure load rather than robustness. Then one final
   good message. Claims, per worker: the listener thread is alive at the end
   and fired the final message; its ``stats()["rejected"]`` equals the number
   of bad messages it received; it fired every good message (and every
   marker).

4. ``scope="once"``: 4 workers with a once receiver (connected with a
   ``dispatch_uid``); the producer sends 1,000 signals at once.

   a, b (durable, pub/sub): nobody dies. Claim: exactly 1,000 runs across the
   workers, none twice.
   c, d (durable, pub/sub): ``once_lease=1``; the first worker to run message
   100 hangs in its receiver (its lease renewed meanwhile) and is SIGKILLed
   0.3 s into that run. Claim: every message runs at least once, and exactly
   once except message 100, which runs twice: in the killed worker (never
   finished) and, to the end, in one other worker that took it over
   (``once_retried`` >= 1, ``once_lost`` 0). Recovery = the start of the
   retried run minus the moment of the SIGKILL.

5. ``CLIENT KILL TYPE pubsub`` (every subscribed connection: both workers')
   30 times, evenly over 8 s starting 0.5 s in, while a producer streams 2,000
   signals/s for 10 s to 2 workers; Redis stays up and redis-py restores the
   connection by itself, which relay must notice. Recovery, per kill and
   worker = the first fire of a message sent after the kill, minus the kill
   (the fault is instantaneous). Also reported: how many connections the
   kills closed (claimed: at least as many as there were kills) and how many
   disconnects the workers noticed.

6. A slow consumer: one worker whose receiver sleeps 5 ms per message, behind
   ``client-output-buffer-limit pubsub 1mb 256kb 5``; the producer sends a
   burst of 20,000 messages of 2 KB unpaced, then 50/s (same size) for 15 s.
   Claimed too: Redis closed the subscriber over the limit (its log says
   "scheduled to be closed ASAP for overcoming of output buffer limits";
   INFO's counter is reported where this Redis has one). The worker goes on
   firing what had already reached its socket (about 10 s worth here) before
   it can notice; durable, it then fires the rest of the burst from the log
   (about 100 s at 5 ms each). Recovery, per disconnect = the first fire after
   the worker noticed it (its ``relay.disconnected`` signal), minus that moment:
   durable, the first message from the log; pub/sub, the first message of the
   50/s tail (which is why the tail must outlast the draining).

7. A worker SIGSTOPped (after it fired 2,000 messages of a 6 s stream at
   2,000/s), Redis SIGKILLed 0.2 s later and restarted after ``--down``
   seconds, SIGCONT 0.5 s after Redis is back (the producer publishes again
   meanwhile; the worker hears nothing). a: durable on ``appendonly`` (the
   log survives the crash). b: pub/sub, no persistence. Recovery = the first
   fire of a message sent after SIGCONT, minus the SIGCONT.

8. No warm-up: a worker subscribes; 1.6 s later (more than the 1 s clock skew
   relay allows) it is SIGSTOPped and Redis closes its connection (``CLIENT
   KILL``); then a new producer starts: a burst of its first 500 messages, then
   1,000/s for 2 s; SIGCONT 0.5 s after the producer started. The worker's first
   contact with the producer is at a number n > 1, but the producer took
   number 1 after the worker subscribed, so numbers 1 to n - 1 were sent to it.
   Claims added: pub/sub, the first gap starts at number 1; durable, at least
   the 500 of the burst come from the log (``replayed``). Recovery as in 7.

9. No fault: 4 threads send 20,000 messages unpaced (``n`` split between
   them), each followed by 2 sends that relay must refuse (an unencodable
   argument: TypeError; one over ``max_message_size=4096``: ValueError), to 2
   workers. Claim: 0 lost, 0 duplicated, 0 gaps (a refused send takes no
   number, and concurrent sends are numbered in queue order: a false gap
   would show here), and every refused send raised its error. No recovery.

10. Signed (``secret``), 2 workers: the benchmark subscribes, records the
    producer's first frame and unsubscribes; the producer sends 205,000
    messages at 50,000/s. Once every worker has fired them all, the benchmark
    records the producer's last frame (one more message), then publishes both
    frames again, raw, well inside ``replay_window`` (300 s), then a signed
    marker of its own to know they were handled. Claim: the replays fire 0
    times: the first frame is refused (``rejected`` == its messages: older
    than the 1,024-message anti-replay window, however many messages passed
    since), the last one dropped as a duplicate (``duplicates`` == 1); and
    0 lost, 0 duplicated, 0 gaps. No recovery.

``--quick`` runs the same scenarios with fewer messages, kills and sends and
shorter streams (see ``make_config``).

Output: the Redis version and the machine, then a markdown table (mode, sent,
fired, lost, duplicated, messages reported missing by gap signals, messages
fired from the durable log (``stats()["replayed"]``), recovery time, the claim
and PASS/FAIL) and details per scenario. Progress goes to stderr. ``--json
PATH`` also writes the configuration, environment and all results.

Exit code: 0 if every claim holds, 1 otherwise (a scenario that crashes fails).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import functools
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
    s4_lease: float
    s4_hang: int
    # 5
    s5_rate: int
    s5_seconds: float
    s5_kills: int
    s5_kill_from: float
    s5_kill_span: float
    s5_workers: int
    # 6
    s6_burst: int
    s6_payload: int
    s6_delay: float
    s6_tail_rate: int
    s6_tail_seconds: float
    s6_limit: str
    # 7
    s7_rate: int
    s7_seconds: float
    s7_fired_before: int
    s7_deaf: float
    # 8
    s8_burst: int
    s8_rate: int
    s8_tail_seconds: float
    s8_paused_for: float
    # 9
    s9_count: int
    s9_threads: int
    s9_refused: int
    s9_workers: int
    # 10
    s10_count: int
    s10_rate: int
    s10_workers: int


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
            s4_lease=1.0,
            s4_hang=20,
            s5_rate=2000,
            s5_seconds=4.5,
            s5_kills=10,
            s5_kill_from=0.5,
            s5_kill_span=3.0,
            s5_workers=2,
            s6_burst=2500,
            s6_payload=2000,
            s6_delay=0.005,
            s6_tail_rate=50,
            s6_tail_seconds=12.0,
            s6_limit="pubsub 1mb 256kb 5",
            s7_rate=2000,
            s7_seconds=4.0,
            s7_fired_before=1000,
            s7_deaf=0.5,
            s8_burst=500,
            s8_rate=1000,
            s8_tail_seconds=1.5,
            s8_paused_for=0.5,
            s9_count=5000,
            s9_threads=4,
            s9_refused=2,
            s9_workers=2,
            s10_count=30_000,
            s10_rate=20_000,
            s10_workers=2,
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
        s4_lease=1.0,
        s4_hang=100,
        s5_rate=2000,
        s5_seconds=10.0,
        s5_kills=30,
        s5_kill_from=0.5,
        s5_kill_span=8.0,
        s5_workers=2,
        s6_burst=20_000,
        s6_payload=2000,
        s6_delay=0.005,
        s6_tail_rate=50,
        s6_tail_seconds=15.0,
        s6_limit="pubsub 1mb 256kb 5",
        s7_rate=2000,
        s7_seconds=6.0,
        s7_fired_before=2000,
        s7_deaf=0.5,
        s8_burst=500,
        s8_rate=1000,
        s8_tail_seconds=2.0,
        s8_paused_for=0.5,
        s9_count=20_000,
        s9_threads=4,
        s9_refused=2,
        s9_workers=2,
        s10_count=205_000,
        s10_rate=50_000,
        s10_workers=2,
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
    extra: Iterable[str] = (),
) -> Proc:
    args = ["producer", *base, "--count", str(count), "--rate", str(rate)]
    args += ["--final", str(final), "--max-queue", str(max_queue), *extra]
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
    mode: str = "-"
    passed: bool = False
    sent: str = "-"
    fired: str = "-"
    lost: str = "-"
    duplicated: str = "-"
    gaps: str = "-"
    replayed: str = "-"
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
        f"Redis SIGKILLed+restarted {cfg.s1_restarts}x in a {cfg.s1_seconds:g} s stream "
        f"at {fmt(cfg.s1_rate)}/s, {cfg.s1_workers} workers" + (" (appendonly)" if durable else ""),
        (
            "0 lost, 0 duplicated; resumes <= 2 s"
            if durable
            else "reported missing == lost (per worker); resumes <= 2 s"
        ),
        mode=mode,
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
    row.replayed = fmt(sum(report["stats"]["replayed"] for report in reports))
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
        f"worker SIGKILLed at {cfg.s2_kill_at:g} s, restarted with the same worker_id "
        f"at {cfg.s2_restart_at:g} s, {cfg.s2_seconds:g} s stream at {fmt(cfg.s2_rate)}/s",
        "0 lost; everything sent while down fired after restart",
        mode="durable",
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
    row.replayed = fmt(stats["replayed"])
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
        mode="pub/sub",
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
    row.replayed = fmt(sum(r["stats"]["replayed"] for r in reports))
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


# -- shared by scenarios 4 to 10 ------------------------------------------------------

FINAL = 20  # sent once every worker has recovered, so that every loss is followed by a message
TAP = "faults-tap"  # the client name of the benchmark's own subscriber (scenario 10)


def mode_name(durable: bool) -> str:
    return "durable" if durable else "pub/sub"


def contract(durable: bool) -> str:
    if durable:
        return "0 lost, 0 duplicated, 0 reported"
    return "reported == lost (same numbers), 0 duplicated, 0 false gaps"


def scenario_dir(log_dir: str, key: str) -> str:
    path = os.path.join(log_dir, key)
    os.makedirs(path)
    return path


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, socket_timeout=5)


def subscribers(client: redis.Redis) -> int:
    """How many subscribed connections Redis has, besides the benchmark's own tap."""
    clients = client.client_list(_type="pubsub")
    return sum(1 for c in clients if c.get("name") != TAP and int(c.get("sub", 0)) > 0)


def stopped(pid: int) -> bool:
    """True once every thread of ``pid`` is stopped (Linux: ``/proc``; elsewhere, 0.2 s later)."""
    tasks = f"/proc/{pid}/task"
    if not os.path.isdir(tasks):
        time.sleep(0.2)
        return True
    states = []
    for task in os.listdir(tasks):
        with contextlib.suppress(OSError), open(f"{tasks}/{task}/stat") as stat_file:
            stat = stat_file.read()
            states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state in "tT" for state in states)


def pause(proc: Proc) -> float:
    """SIGSTOP, and wait until every thread of the process has stopped; returns that moment."""
    proc.popen.send_signal(signal.SIGSTOP)
    wait_until(lambda: stopped(proc.popen.pid), f"{proc.label} stopped", 10)
    return time.time()


def resume(proc: Proc) -> float:
    """SIGCONT; returns the moment it was sent."""
    at = time.time()
    proc.popen.send_signal(signal.SIGCONT)
    return at


def complete_lines(path: str) -> list[str]:
    try:
        with open(path) as lines:
            data = lines.read()
    except FileNotFoundError:
        return []
    # Only complete lines: each is written with one os.write.
    return [line for line in data.split("\n")[:-1] if line]


class Worker:
    """
    A worker process with its journal (each ``n`` its receiver ran) and its events
    file (``gap``, ``disconnected``, ``reconnected`` lines, as they happen).
    """

    def __init__(self, procs: list[Proc], log_dir: str, label: str, base: list[str], *extra: str):
        self.label = label
        self.events_path = os.path.join(log_dir, f"{label}.events")
        self.proc, self.journal = start_worker(
            procs, log_dir, label, base, "--events", self.events_path, *extra
        )

    def ready(self) -> float:
        return ready_time(self.proc.expect("READY", STARTUP_TIMEOUT))

    def fired(self) -> set[int]:
        self.journal.poll()
        return self.journal.distinct

    def events(self) -> list[list[str]]:
        return [line.split() for line in complete_lines(self.events_path)]

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events() if event[0] == kind)

    def covered(self) -> set[int]:
        """The numbers its gap signals reported lost so far."""
        numbers: set[int] = set()
        for event in self.events():
            if event[0] == "gap":
                first, count = int(event[1]), int(event[2])
                numbers.update(range(first, first + count))
        return numbers

    def settled(self, sent: int) -> bool:
        """True once it fired, or was told it lost, every number from 1 to ``sent``."""
        fired, covered = self.fired(), self.covered()
        return all(n in fired or n in covered for n in range(1, sent + 1))

    def recovered(self) -> bool:
        return self.count("reconnected") == self.count("disconnected")


def wait_recovered(server: RedisServer, workers: list[Worker], timeout: float = 30.0) -> None:
    """Until every worker is subscribed and has recovered from every disconnect it noticed."""
    with admin(server) as client:
        wait_until(
            lambda: subscribers(client) == len(workers) and all(w.recovered() for w in workers),
            "every worker subscribed and recovered",
            timeout,
        )


def settle(workers: list[Worker], sent: int, timeout: float = 60.0) -> str:
    """
    Until every worker fired, or was told it lost, every number from 1 to ``sent``;
    then half a second more, for late duplicates to show.
    """
    how = wait_for(
        [w.journal for w in workers],
        lambda: all(w.settled(sent) for w in workers),
        quiet=None,
        timeout=timeout,
    )
    time.sleep(0.5)
    return how


def reports_of(workers: list[Worker]) -> list[dict[str, Any]]:
    for worker in workers:
        worker.proc.terminate()
    return [worker.proc.result(30) for worker in workers]


def recovery_after(
    report: dict[str, Any], moment: float, send_times: list[float] | None = None
) -> float | None:
    """
    Seconds from ``moment`` to the worker's first fire after it (with
    ``send_times``, the producer's send time of each ``n``: its first fire of a
    message sent at or after ``moment``); None if there is none.
    """
    for n, at in zip(report["numbers"], report["times"], strict=True):
        if at < moment:
            continue
        if send_times is not None and not (
            1 <= n <= len(send_times) and send_times[n - 1] >= moment
        ):
            continue
        return max(0.0, float(at) - moment)
    return None


def show(values: Iterable[float | None]) -> str:
    shown = ["never" if v is None else f"{v:.3f}" for v in values]
    if len(shown) > 12:
        return ", ".join(shown[:12]) + f", ... ({len(shown)} in all)"
    return ", ".join(shown) or "none"


def judge(
    row: Row,
    reports: list[dict[str, Any]],
    sent: int,
    durable: bool,
    name: str,
    recoveries: dict[str, list[float | None]] | None = None,
) -> bool:
    """
    The delivery contract, per worker, from the numbers its receiver fired and
    its gap signals. Durable: 0 lost, 0 duplicated, 0 reported missing.
    Pub/sub: 0 duplicated, and the numbers covered by its gap signals are the
    numbers it lost, each reported once (so 0 false gaps). Both: the listener
    is alive, nothing fired that was never sent, and with ``recoveries`` (per
    worker label: seconds per fault, None for never) every recovery is within
    ``RECOVERY_LIMIT``. Fills the row's columns, adds a line per worker, and
    returns whether everything held. Numbers from ``MARKER_BASE`` up are the
    benchmark's own markers, left out.
    """
    ok = True
    fires = lost_total = duplicated = missing_total = gap_events = replayed = 0
    worst: float | None = None
    for report in reports:
        numbers = [n for n in report["numbers"] if n < MARKER_BASE]
        counted = tally(numbers, sent)
        covered, missing, events = reported_missing(report["gaps"], name)
        lost = set(counted["lost"])
        stats = report["stats"]
        if durable:
            held = not lost and counted["duplicated"] == 0 and missing == 0
        else:
            held = counted["duplicated"] == 0 and covered == lost and missing == len(lost)
        held = held and report["listener_alive"] and not counted["strange"]
        values = (recoveries or {}).get(report["label"], [])
        recovery = max((float("inf") if v is None else v for v in values), default=None)
        if recovery is not None:
            worst = recovery if worst is None else max(worst, recovery)
            held = held and recovery <= RECOVERY_LIMIT
        ok = ok and held
        fires += counted["fires"]
        lost_total += len(lost)
        duplicated += counted["duplicated"]
        missing_total += missing
        gap_events += events
        replayed += stats["replayed"]
        line = (
            f"{report['label']}: fired {fmt(counted['fires'])} ({fmt(counted['distinct'])} "
            f"distinct), lost {fmt(len(lost))} [{ranges(lost)}], duplicated "
            f"{fmt(counted['duplicated'])}, reported missing {fmt(missing)} in {events} gaps "
            f"[{ranges(covered)}]; stats: received {fmt(stats['received'])}, duplicates "
            f"{fmt(stats['duplicates'])}, rejected {fmt(stats['rejected'])}, replayed "
            f"{fmt(stats['replayed'])}, disconnects/reconnects "
            f"{stats['disconnects']}/{stats['reconnects']}, listener alive "
            f"{report['listener_alive']}"
        )
        if recoveries is not None:
            line += f"; recovery (s): {show(values)}"
        row.details.append(line + ("" if held else " -> FAIL"))
        if not durable and covered != lost:
            row.details.append(
                f"{report['label']}: lost but not reported [{ranges(lost - covered)}]; "
                f"reported but not lost [{ranges(covered - lost)}]"
            )
        if counted["strange"]:
            row.details.append(
                f"{report['label']}: fired unknown numbers {counted['strange'][:10]}"
            )
        row.data.setdefault("workers", []).append(
            {
                "label": report["label"],
                "fires": counted["fires"],
                "lost": len(lost),
                "duplicated": counted["duplicated"],
                "reported_missing": missing,
                "gap_events": events,
                "gaps": report["gaps"][:50],
                "recoveries": values,
                "stats": stats,
            }
        )
    row.fired = f"{fmt(fires)} ({len(reports)} worker{'s' if len(reports) > 1 else ''})"
    row.lost = fmt(lost_total)
    row.duplicated = fmt(duplicated)
    row.gaps = f"{fmt(missing_total)} ({gap_events} gaps)"
    row.replayed = fmt(replayed)
    if recoveries is not None:
        row.recovery = (
            "-" if worst is None else "never" if worst == float("inf") else f"{worst:.2f}"
        )
    row.data["sent"] = sent
    return ok


def check_producer(row: Row, produced: dict[str, Any], sent: int) -> bool:
    """Every message reached Redis: none dropped, all published, the queue flushed."""
    pstats = produced["stats"]
    row.details.insert(0, producer_line(pstats, sent))
    row.data["producer_stats"] = pstats
    return pstats["dropped"] == 0 and pstats["published"] == sent and bool(produced["flushed"])


# -- scenario 4: once receivers ---------------------------------------------------------


def scenario_once(cfg: Config, log_dir: str, durable: bool, kill: bool) -> Row:
    key = {(True, False): "4a", (False, False): "4b", (True, True): "4c", (False, True): "4d"}[
        (durable, kill)
    ]
    name = "faults.once"
    sends, hang = cfg.s4_sends, cfg.s4_hang
    title = (
        f'{cfg.s4_workers} workers with a scope="once" receiver (dispatch_uid), '
        f"{fmt(sends)} sends at once"
    )
    if kill:
        title += (
            f"; the worker running n={hang} is SIGKILLed mid-run (once_lease {cfg.s4_lease:g} s)"
        )
        claim = (
            "every message runs >= 1x, exactly 1x but the killed run, retried by another "
            "worker (once_retried); retried <= 2 s"
        )
    else:
        claim = f"exactly {fmt(sends)} runs in all, none twice"
    row = Row(key, title, claim, mode=mode_name(durable))
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    killed: Worker | None = None
    killed_at = 0.0
    with RedisServer() as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=durable)
        extra = ["--once"]
        if kill:
            marker = os.path.join(log_dir, "hang.marker")
            extra += ["--once-lease", str(cfg.s4_lease), "--hang", str(hang)]
            extra += ["--hang-marker", marker]
        workers = [
            Worker(procs, log_dir, f"worker{i + 1}", base, *extra) for i in range(cfg.s4_workers)
        ]
        for worker in workers:
            worker.ready()
        producer = start_producer(procs, log_dir, base, count=sends, rate=0)
        producer.expect("READY", STARTUP_TIMEOUT)
        progress(f"{key}: {fmt(sends)} sends")
        if kill:
            wait_until(
                lambda: any(hang in w.fired() for w in workers), f"a worker started n={hang}", 60
            )
            killed = next(w for w in workers if hang in w.fired())
            time.sleep(0.3)  # it hangs in the receiver, renewing its lease
            killed_at = time.time()
            killed.proc.kill()
            progress(f"{key}: {killed.label}, running n={hang}, SIGKILLed")
        producer.expect("SENT", 120)
        produced = producer.result(60)
        survivors = [w for w in workers if w is not killed]
        journals = [w.journal for w in workers]
        runs_expected = sends + (1 if kill else 0)
        how = wait_for(
            journals,
            lambda: sum(len(j.entries) for j in journals) >= runs_expected,
            quiet=3.0,
            timeout=60,
        )
        # A late second run would show up now: a claim whose holder stopped renewing it is
        # taken over within a lease and a third (the default lease, 30 s, is never renewed
        # in the no-death case, which takes a second or two).
        time.sleep(2 * cfg.s4_lease + 0.5 if kill else 0.5)
        reports = reports_of(survivors)
        if killed is not None:
            killed.journal.poll()

    sent = produced["sent"]
    runs = [n for report in reports for n in report["numbers"]]
    killed_runs = [n for n, _ in killed.journal.entries] if killed is not None else []
    counted = tally(runs + killed_runs, sent)
    twice = counted["duplicated_numbers"]
    stats = [report["stats"] for report in reports]
    total = {k: sum(s[k] for s in stats) for k in ("once_skipped", "once_retried", "once_lost")}
    errors = sum(s["once_errors"] for s in stats)
    done = {n for report in reports for n in report["done"]}
    alive = [n for n in twice if not (kill and n == hang)]  # no process died running these
    ok = check_producer(row, produced, sent) and not counted["lost"] and not counted["strange"]
    ok = ok and errors == 0 and total["once_lost"] == 0
    if kill:
        assert killed is not None
        retried_by = [r["label"] for r in reports if hang in r["numbers"]]
        retry_at = [
            at for r in reports for n, at in zip(r["numbers"], r["times"], strict=True) if n == hang
        ]
        recovery = min(retry_at) - killed_at if retry_at else None
        ok = (
            ok
            and twice == [hang]
            and counted["duplicated"] == 1
            and killed_runs[-1:] == [hang]
            and len(retried_by) == 1
            and hang in done
            and total["once_retried"] >= 1
            and recovery is not None
            and recovery <= RECOVERY_LIMIT
        )
        row.recovery = "never" if recovery is None else f"{recovery:.2f}"
        row.details.append(
            f"{killed.label} started n={hang} as its run number {len(killed_runs)} and hung there "
            f"(renewing its lease) until SIGKILL; retried by {retried_by or 'nobody'} "
            + ("never" if recovery is None else f"{recovery:.2f} s after the kill")
            + f"; survivors' once_retried {total['once_retried']}, once_lost "
            f"{total['once_lost']}; n={hang} ran to the end: {hang in done}"
        )
    else:
        ok = ok and len(runs) == sent and not twice
    per_worker = {r["label"]: len(r["numbers"]) for r in reports}
    if killed is not None:
        per_worker[killed.label] = len(killed_runs)
    row.passed = ok
    row.sent = fmt(sent)
    row.fired = f"{fmt(len(runs) + len(killed_runs))} runs"
    row.lost = fmt(len(counted["lost"]))
    row.duplicated = fmt(counted["duplicated"])
    row.gaps = fmt(sum(s["missed"] for s in stats))
    row.replayed = fmt(sum(s["replayed"] for s in stats))
    row.details += [
        f"runs per worker: {per_worker}"
        + (f" ({killed.label} SIGKILLed)" if killed else "")
        + f"; claims lost to another worker (once_skipped): {fmt(total['once_skipped'])}"
        + ("" if kill else f" (expected {fmt(sent * (cfg.s4_workers - 1))})")
        + f"; once_errors {errors}; workers {how} at the end",
        f"never ran: [{ranges(counted['lost'])}]; ran more than once: [{ranges(twice)}]"
        + (
            f"; of these, ran twice although no process died running them: [{ranges(alive)}]"
            if alive
            else ""
        ),
    ]
    row.data = {
        "sent": sent,
        "runs": len(runs) + len(killed_runs),
        "runs_per_worker": per_worker,
        "never_ran": len(counted["lost"]),
        "ran_twice": twice,
        "once": total,
        "once_errors": errors,
        "producer_stats": produced["stats"],
        "stats": stats,
    }
    return row


# -- scenario 5: CLIENT KILL of the subscribers -----------------------------------------


def scenario_client_kill(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "5a" if durable else "5b"
    name = "faults.clientkill"
    count = int(cfg.s5_rate * cfg.s5_seconds)
    row = Row(
        key,
        f"CLIENT KILL TYPE pubsub {cfg.s5_kills}x in {cfg.s5_kill_span:g} s (Redis up), "
        f"{cfg.s5_seconds:g} s stream at {fmt(cfg.s5_rate)}/s, {cfg.s5_workers} workers",
        contract(durable) + "; resumes <= 2 s",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    with RedisServer() as server, processes() as procs, admin(server) as client:
        base = common_args(server.url, namespace, name, durable=durable)
        workers = [Worker(procs, log_dir, f"worker{i + 1}", base) for i in range(cfg.s5_workers)]
        for worker in workers:
            worker.ready()
        producer = start_producer(
            procs, log_dir, base, count=count, rate=cfg.s5_rate, final=FINAL, max_queue=count + 1000
        )
        t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
        progress(f"{key}: stream of {fmt(count)} started; {cfg.s5_kills} kills")
        kills: list[tuple[float, int]] = []
        for k in range(cfg.s5_kills):
            sleep_until(t0 + cfg.s5_kill_from + cfg.s5_kill_span * k / max(1, cfg.s5_kills - 1))
            at = time.time()
            kills.append((at, int(client.client_kill_filter(_type="pubsub"))))
        producer.expect("SENT", cfg.s5_seconds + 120)
        wait_recovered(server, workers)
        producer.tell("final")
        produced = producer.result(60)
        how = settle(workers, produced["sent"])
        reports = reports_of(workers)

    sent = produced["sent"]
    send_times: list[float] = produced["times"]
    recoveries = {
        r["label"]: [recovery_after(r, at, send_times) for at, _ in kills] for r in reports
    }
    ok = check_producer(row, produced, sent)
    closed = sum(n for _, n in kills)
    noticed = sum(r["stats"]["disconnects"] for r in reports)
    row.details.append(
        f"kills at (s into the stream): {kills[0][0] - t0:.2f} to {kills[-1][0] - t0:.2f}; "
        f"subscribed connections closed: {closed} (of {cfg.s5_kills * cfg.s5_workers} if every "
        f"worker was subscribed at every kill); disconnects noticed by the workers: {noticed}; "
        f"workers {how} at the end"
    )
    ok = judge(row, reports, sent, durable, name, recoveries) and ok and closed >= cfg.s5_kills
    row.passed = ok
    row.sent = fmt(sent)
    row.data.update({"kills": [(at - t0, n) for at, n in kills], "closed": closed})
    return row


# -- scenario 6: a slow consumer over the output-buffer limit ---------------------------

LIMIT_LINE = "for overcoming of output buffer limits"  # "scheduled to be closed ASAP ..."


def limit_closes(path: str) -> list[float]:
    """When Redis's log says it closed a subscribed client over the output-buffer limit."""
    moments = []
    with open(path, errors="replace") as log:
        for line in log:
            if LIMIT_LINE not in line or " sub=0 " in line:
                continue
            # "PID:M 01 Dec 2025 20:58:45.466 # Client id=4 ... flags=P ... sub=1 ..." (local time)
            try:
                stamp, millis = line.split(" ", 1)[1][:24].rsplit(".", 1)
                at = time.mktime(time.strptime(stamp, "%d %b %Y %H:%M:%S")) + int(millis) / 1000
            except ValueError:
                at = float("nan")
            moments.append(at)
    return moments


def scenario_slow_consumer(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "6a" if durable else "6b"
    name = "faults.slow"
    burst = cfg.s6_burst
    tail = int(cfg.s6_tail_rate * cfg.s6_tail_seconds)
    count = burst + tail
    row = Row(
        key,
        f"slow consumer ({cfg.s6_delay * 1000:g} ms per message), burst of {fmt(burst)} x "
        f"{cfg.s6_payload / 1000:g} KB then {cfg.s6_tail_rate}/s, client-output-buffer-limit "
        f"{cfg.s6_limit}",
        contract(durable) + "; disconnected by the limit; resumes <= 2 s",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    redis_log = os.path.join(log_dir, "redis.log")
    server_args = ["--client-output-buffer-limit", cfg.s6_limit, "--logfile", redis_log]
    with RedisServer(args=server_args) as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=durable)
        worker = Worker(procs, log_dir, "worker", base, "--delay", str(cfg.s6_delay))
        worker.ready()
        producer = start_producer(
            procs,
            log_dir,
            base,
            count=count,
            rate=cfg.s6_tail_rate,
            final=FINAL,
            max_queue=count + 1000,
            extra=["--payload", str(cfg.s6_payload), "--burst", str(burst)],
        )
        t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
        progress(f"{key}: burst of {fmt(burst)}, then {fmt(tail)} at {cfg.s6_tail_rate}/s")
        producer.expect("SENT", cfg.s6_tail_seconds + 120)
        wait_until(lambda: worker.count("disconnected") >= 1, "the worker was disconnected", 60)
        if durable:
            progress(f"{key}: disconnected; catching up from the log at {cfg.s6_delay * 1000:g} ms")
            catch_up = count * cfg.s6_delay * 2 + 60
            how = wait_for(
                [worker.journal], lambda: worker.settled(count), quiet=None, timeout=catch_up
            )
            if how != "done":
                raise BenchError(f"the worker did not catch up within {catch_up:g} s")
        wait_recovered(server, [worker], timeout=120)
        wait_for([worker.journal], lambda: False, quiet=1.0, timeout=60)
        with admin(server) as client:
            info = client.info("stats")
        producer.tell("final")
        produced = producer.result(60)
        how = settle([worker], produced["sent"])
        [report] = reports_of([worker])

    sent = produced["sent"]
    closes = limit_closes(redis_log)
    counters = {k: v for k, v in info.items() if "output_buffer" in k and "disconnection" in k}
    recoveries = {report["label"]: [recovery_after(report, at) for at in report["disconnects"]]}
    ok = check_producer(row, produced, sent)
    noticed = report["disconnects"]
    row.details.append(
        f"Redis's log: the subscriber closed {len(closes)}x {LIMIT_LINE}, at "
        + (", ".join(f"{at - t0:.2f}" for at in closes) or "-")
        + " s after the burst began"
        + (f"; INFO stats {counters}" if counters else " (this Redis's INFO has no such counter)")
        + f"; the worker noticed {len(noticed)} disconnect(s), at "
        + (", ".join(f"{at - t0:.2f}" for at in noticed) or "-")
        + " s (until then it fired what had reached its socket: "
        + f"{fmt(sum(1 for at in report['times'] if noticed and at < noticed[0]))} messages); "
        f"workers {how} at the end"
    )
    ok = judge(row, [report], sent, durable, name, recoveries) and ok and len(closes) >= 1
    row.passed = ok
    row.sent = fmt(sent)
    row.data.update({"output_buffer_limit_closes": len(closes), "info": counters})
    return row


# -- scenario 7: a worker paused across a Redis crash -----------------------------------


def scenario_paused_restart(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "7a" if durable else "7b"
    name = "faults.paused"
    count = int(cfg.s7_rate * cfg.s7_seconds)
    row = Row(
        key,
        f"worker SIGSTOPped, Redis SIGKILLed and restarted ({cfg.down:g} s down), SIGCONT "
        f"{cfg.s7_deaf:g} s later; {cfg.s7_seconds:g} s stream at {fmt(cfg.s7_rate)}/s"
        + (" (appendonly)" if durable else ""),
        contract(durable) + "; resumes <= 2 s",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    with RedisServer(appendonly=durable) as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=durable)
        worker = Worker(procs, log_dir, "worker", base)
        worker.ready()
        producer = start_producer(
            procs, log_dir, base, count=count, rate=cfg.s7_rate, final=FINAL, max_queue=count + 1000
        )
        t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
        wait_until(
            lambda: len(worker.fired()) >= cfg.s7_fired_before,
            f"the worker fired {cfg.s7_fired_before} messages",
        )
        paused_at = pause(worker.proc)
        try:
            time.sleep(0.2)
            killed_at = time.time()
            server.stop()  # SIGKILL
            time.sleep(cfg.down)
            server.start()
            back_at = time.time()
            time.sleep(cfg.s7_deaf)  # the producer publishes again; the worker hears nothing
        finally:
            resumed_at = resume(worker.proc)
        progress(f"{key}: paused {resumed_at - paused_at:.2f} s across the Redis restart")
        wait_recovered(server, [worker])
        producer.expect("SENT", cfg.s7_seconds + 120)
        producer.tell("final")
        produced = producer.result(60)
        how = settle([worker], produced["sent"])
        [report] = reports_of([worker])

    sent = produced["sent"]
    recoveries = {report["label"]: [recovery_after(report, resumed_at, produced["times"])]}
    ok = check_producer(row, produced, sent)
    row.details.append(
        f"SIGSTOP at {paused_at - t0:.2f} s into the stream, Redis SIGKILLed at "
        f"{killed_at - t0:.2f} s and back at {back_at - t0:.2f} s, SIGCONT at "
        f"{resumed_at - t0:.2f} s; workers {how} at the end"
    )
    ok = judge(row, [report], sent, durable, name, recoveries) and ok
    row.passed = ok
    row.sent = fmt(sent)
    return row


# -- scenario 8: no warm-up --------------------------------------------------------------


def scenario_no_warmup(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "8a" if durable else "8b"
    name = "faults.warmup"
    tail = int(cfg.s8_rate * cfg.s8_tail_seconds)
    count = cfg.s8_burst + tail
    row = Row(
        key,
        f"no warm-up: a new producer's first {cfg.s8_burst} messages (a burst, then "
        f"{cfg.s8_rate}/s) sent while the subscribed worker is SIGSTOPped and its connection "
        "killed",
        contract(durable) + ("" if durable else ", from number 1") + "; resumes <= 2 s",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    with RedisServer() as server, processes() as procs, admin(server) as client:
        base = common_args(server.url, namespace, name, durable=durable)
        worker = Worker(procs, log_dir, "worker", base)
        subscribed_at = worker.ready()
        # More than the 1 s clock skew relay allows: whatever the producer sends
        # now was sent to a subscribed worker.
        sleep_until(subscribed_at + 1.6)
        paused_at = pause(worker.proc)
        try:
            closed = int(client.client_kill_filter(_type="pubsub"))
            producer = start_producer(
                procs,
                log_dir,
                base,
                count=count,
                rate=cfg.s8_rate,
                final=FINAL,
                extra=["--burst", str(cfg.s8_burst)],
            )
            t0 = ready_time(producer.expect("READY", STARTUP_TIMEOUT))
            sleep_until(t0 + cfg.s8_paused_for)
        finally:
            resumed_at = resume(worker.proc)
        wait_recovered(server, [worker])
        producer.expect("SENT", cfg.s8_tail_seconds + 120)
        producer.tell("final")
        produced = producer.result(60)
        how = settle([worker], produced["sent"])
        [report] = reports_of([worker])

    sent = produced["sent"]
    recoveries = {report["label"]: [recovery_after(report, resumed_at, produced["times"])]}
    ok = check_producer(row, produced, sent) and closed == 1
    first_missing = [g["first_missing"] for g in report["gaps"]]
    row.details.append(
        f"worker subscribed, SIGSTOPped {paused_at - subscribed_at:.2f} s later and its "
        f"connection closed ({closed}); the producer took number 1 at "
        f"{produced['times'][0] - subscribed_at:.2f} s after the subscription and sent "
        f"{fmt(sum(1 for at in produced['times'] if at < resumed_at))} messages before SIGCONT; "
        f"gaps start at {first_missing or 'none'}; workers {how} at the end"
    )
    ok = judge(row, [report], sent, durable, name, recoveries) and ok
    if not durable:
        ok = ok and first_missing[:1] == [1]
    else:
        ok = ok and report["stats"]["replayed"] >= cfg.s8_burst
    row.passed = ok
    row.sent = fmt(sent)
    return row


# -- scenario 9: threads and refused sends -----------------------------------------------


def scenario_threads(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "9a" if durable else "9b"
    name = "faults.threads"
    count, refused = cfg.s9_count, cfg.s9_refused
    row = Row(
        key,
        f"{cfg.s9_threads} sending threads, {fmt(count)} sends unpaced, each followed by "
        f"{refused} refused sends (TypeError, ValueError), {cfg.s9_workers} workers; no fault",
        "0 lost, 0 duplicated, 0 gaps; every refused send raised",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    with RedisServer() as server, processes() as procs:
        base = common_args(server.url, namespace, name, durable=durable)
        workers = [Worker(procs, log_dir, f"worker{i + 1}", base) for i in range(cfg.s9_workers)]
        for worker in workers:
            worker.ready()
        producer = start_producer(
            procs,
            log_dir,
            base,
            count=count,
            rate=0,
            max_queue=count + 1000,
            extra=[
                "--threads",
                str(cfg.s9_threads),
                "--refused",
                str(refused),
                "--max-message-size",
                "4096",
            ],
        )
        producer.expect("READY", STARTUP_TIMEOUT)
        producer.expect("SENT", 120)
        produced = producer.result(60)
        how = settle(workers, produced["sent"])
        reports = reports_of(workers)

    sent = produced["sent"]
    ok = check_producer(row, produced, sent)
    wrongly = produced["refused_wrongly"]
    row.details.append(
        f"producer threads {produced['threads']}; refused sends that raised as they must: "
        f"{fmt(produced['refused'])} of {fmt(sent * refused)}; other outcomes: "
        f"{len(wrongly)} {wrongly[:3]}; workers {how} at the end"
    )
    ok = judge(row, reports, sent, durable, name) and ok
    ok = ok and produced["refused"] == sent * refused and not wrongly
    ok = ok and all(r["stats"]["gaps"] == 0 and r["stats"]["missed"] == 0 for r in reports)
    row.passed = ok
    row.sent = f"{fmt(sent)} + {fmt(produced['refused'])} refused"
    return row


# -- scenario 10: a signed frame replayed after 200,000 messages -------------------------


def scenario_replay(cfg: Config, log_dir: str, durable: bool) -> Row:
    key = "10a" if durable else "10b"
    name = "faults.replay"
    count = cfg.s10_count
    row = Row(
        key,
        f"signed; the producer's first frame captured and published again after "
        f"{fmt(count)} messages ({fmt(cfg.s10_rate)}/s), inside replay_window; its last frame "
        f"too; {cfg.s10_workers} workers",
        "replays fire 0x: the old one rejected, the recent one a duplicate; 0 lost, 0 duplicated",
        mode=mode_name(durable),
    )
    namespace = f"faults-{key}-{os.getpid()}"
    log_dir = scenario_dir(log_dir, key)
    key_bytes = frame_key(namespace, SECRET)
    channel = channel_for(namespace, name)
    with RedisServer() as server, processes() as procs:
        client = redis.Redis.from_url(server.url, client_name=TAP)
        base = common_args(server.url, namespace, name, durable=durable, secret=SECRET)
        workers = [Worker(procs, log_dir, f"worker{i + 1}", base) for i in range(cfg.s10_workers)]
        for worker in workers:
            worker.ready()
        tap = client.pubsub()  # type: ignore[no-untyped-call]
        tap.subscribe(channel)
        _confirm(tap, "subscribe")
        producer = start_producer(
            procs, log_dir, base, count=count, rate=cfg.s10_rate, final=1, max_queue=count + 1000
        )
        producer.expect("READY", STARTUP_TIMEOUT)
        early = _first_frame(tap, 10)
        tap.unsubscribe(channel)
        _confirm(tap, "unsubscribe")
        progress(f"{key}: first frame captured; {fmt(count)} messages")
        producer.expect("SENT", count / cfg.s10_rate + 120)
        how = settle(workers, count, timeout=120)
        tap.subscribe(channel)
        _confirm(tap, "subscribe")
        producer.tell("final")
        recent = _first_frame(tap, 10)
        tap.unsubscribe(channel)
        _confirm(tap, "unsubscribe")
        tap.close()
        produced = producer.result(60)
        sent = produced["sent"]
        wait_until(lambda: all(sent in w.fired() for w in workers), "the final message fired")
        old = wire.decode_frame(early, keys=[key_bytes])
        new = wire.decode_frame(recent, keys=[key_bytes])
        replayed_at = time.time()
        receivers = [client.publish(channel, early), client.publish(channel, recent)]
        marker = Forger(key_bytes, [], name, random.Random(1)).marker(1)
        receivers.append(client.publish(channel, marker))
        wait_until(lambda: all(MARKER_BASE + 1 in w.fired() for w in workers), "the marker fired")
        reports = reports_of(workers)
        client.close()

    ok = check_producer(row, produced, sent)
    old_numbers = [m.kwargs["n"] for m in old]
    new_numbers = [m.kwargs["n"] for m in new]
    row.details.append(
        f"replayed: the first frame (n {ranges(old_numbers)}, {len(old)} message(s)), "
        f"published again {replayed_at - old[0].sent_at:.1f} s after it was sent "
        f"(replay_window 300 s), after {fmt(sent)} messages; and the last frame "
        f"(n {ranges(new_numbers)}); PUBLISH reached {receivers[:2]} workers; then a marker "
        f"message; workers {how} before the replays"
    )
    ok = judge(row, reports, sent, durable, name) and ok and receivers == [cfg.s10_workers] * 3
    for report in reports:
        stats = report["stats"]
        fired_replays = sum(1 for n in report["numbers"] if n in old_numbers or n in new_numbers)
        held = (
            stats["rejected"] == len(old)
            and stats["duplicates"] == len(new)
            and fired_replays == len(old) + len(new)  # each once, when first sent
            and report["numbers"].count(MARKER_BASE + 1) == 1
            and stats["gaps"] == 0
        )
        ok = ok and held
        row.details.append(
            f"{report['label']}: rejected {stats['rejected']} (expected {len(old)}), duplicates "
            f"{stats['duplicates']} (expected {len(new)}); the replayed numbers fired "
            f"{fired_replays - len(old) - len(new)} more times" + ("" if held else " -> FAIL")
        )
    row.passed = ok
    row.sent = fmt(sent)
    return row


def _first_frame(pubsub: Any, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message is not None and message["type"] == "message":
            data: bytes = message["data"]
            return data
    raise BenchError(f"no frame on the channel within {timeout:g} s")


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
        "mode",
        "sent",
        "fired",
        "lost",
        "duplicated",
        "gaps reported (msgs missing)",
        "replayed",
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
            row.mode,
            row.sent,
            row.fired,
            row.lost,
            row.duplicated,
            row.gaps,
            row.replayed,
            row.recovery,
            row.claim,
            "PASS" if row.passed else "FAIL",
        ]
        print("| " + " | ".join(cells) + " |", file=out)
    print(file=out)
    print(
        "lost, duplicated (fires beyond the first of a number) and gaps reported (messages "
        "covered by relay.gap signals; number of gap signals) are counted per worker from what "
        "its receivers saw, then summed; replayed = stats()['replayed'] (fired from the durable "
        "log); recovery = the worst, over faults and workers, of the first fire after the fault "
        "ended minus that moment (defined per scenario in the module docstring).",
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
        "--scenario", type=int, nargs="+", choices=range(1, 11), help="run only these (1 to 10)"
    )
    parser.add_argument(
        "--down", type=float, default=None, help="seconds Redis stays down per restart (0.5)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the worker logs and journals")
    args = parser.parse_args(argv)
    cfg = make_config(args.quick, args.down)
    chosen = sorted(set(args.scenario or range(1, 11)))
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
        for key, durable, kill in (
            ("4a", True, False),
            ("4b", False, False),
            ("4c", True, True),
            ("4d", False, True),
        ):
            plan.append((key, functools.partial(scenario_once, cfg, log_dir, durable, kill)))
    both: list[tuple[int, Callable[[Config, str, bool], Row]]] = [
        (5, scenario_client_kill),
        (6, scenario_slow_consumer),
        (7, scenario_paused_restart),
        (8, scenario_no_warmup),
        (9, scenario_threads),
        (10, scenario_replay),
    ]
    for number, scenario in both:
        if number in chosen:
            for suffix, durable in (("a", True), ("b", False)):
                plan.append(
                    (f"{number}{suffix}", functools.partial(scenario, cfg, log_dir, durable))
                )

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
                                "mode": row.mode,
                                "sent": row.sent,
                                "fired": row.fired,
                                "lost": row.lost,
                                "duplicated": row.duplicated,
                                "gaps": row.gaps,
                                "replayed": row.replayed,
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

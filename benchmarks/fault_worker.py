"""
The processes of the fault-injection benchmark (``benchmarks/faults.py``).

    python benchmarks/fault_worker.py worker   --url URL --namespace NS --signal NAME ...
    python benchmarks/fault_worker.py producer --url URL --namespace NS --signal NAME ...

A **worker** creates its ``Relay``, connects a counting receiver to the signal
(``--once``: a ``scope="once"`` receiver with a ``dispatch_uid`` instead) and
receivers of the bridge's own ``gap``, ``disconnected`` and ``reconnected``
signals, starts the bridge and prints ``READY``. Each time its receiver runs it
records the message number ``n`` and the time, and also appends ``n time`` to
its journal file (``--journal``) with one ``os.write``: the journal survives a
SIGKILL, and the benchmark watches it to see when a worker has gone quiet. On
SIGTERM (or SIGINT) it checks that its listener thread is still alive, stops
the bridge and prints one JSON line with everything it recorded and the
bridge's ``stats()``.

A **producer** creates its ``Relay`` (no receivers, so it subscribes to
nothing), prints ``READY <unix time>`` and sends ``--count`` messages
``signal.send(None, n=i)`` with ``n = 1, 2, ...``, paced at ``--rate`` per
second on an absolute schedule (unpaced with ``--rate 0``). Then it waits for
the publisher to catch up (``flush``), prints ``SENT <count>`` and, with
``--final K``, waits for a line on its standard input and sends ``K`` more
messages (numbered on). Finally it stops its bridge and prints one JSON line:
how many it sent, the send time of each, and ``stats()``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal as os_signal
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from redis.backoff import ExponentialWithJitterBackoff

from relay import Relay, Signal, current_message
from relay.bridge import disconnected, gap, reconnected

ONCE_UID = "faults.once-receiver"


def _bridge(args: argparse.Namespace, **extra: Any) -> Relay:
    options: dict[str, Any] = {
        "namespace": args.namespace,
        "durable": args.durable,
        # Fast reconnection, as the benchmark asks: 20 ms growing to 0.5 s at most.
        "backoff": ExponentialWithJitterBackoff(cap=0.5, base=0.02),
        **extra,
    }
    if args.secret:
        options["secret"] = args.secret
        options["replay_window"] = args.replay_window
    return Relay(args.url, **options)


class Recorder:
    """What a worker's receivers saw, in the listener thread's order."""

    def __init__(self, journal: str | None) -> None:
        self.numbers: list[int] = []
        self.times: list[float] = []
        self.max_lag = 0.0
        self.gaps: list[dict[str, Any]] = []
        self.disconnects: list[float] = []
        self.reconnects: list[tuple[float, float]] = []
        self._fd = (
            os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if journal else None
        )

    def fired(self, n: int) -> None:
        now = time.time()
        message = current_message()
        if message is not None:
            self.max_lag = max(self.max_lag, now - message.sent_at)
        self.numbers.append(n)
        self.times.append(now)
        if self._fd is not None:
            os.write(self._fd, b"%d %.6f\n" % (n, now))


recorder = Recorder(None)


def on_message(sender: Any, n: int, **kwargs: Any) -> None:
    recorder.fired(n)


def on_once(sender: Any, n: int, **kwargs: Any) -> None:
    recorder.fired(n)


def on_gap(
    sender: Any, origin: str, signal_name: str, first_missing: int, count: int, **kwargs: Any
) -> None:
    recorder.gaps.append(
        {
            "origin": origin,
            "signal_name": signal_name,
            "first_missing": first_missing,
            "count": count,
            "time": time.time(),
        }
    )


def on_disconnected(sender: Any, **kwargs: Any) -> None:
    recorder.disconnects.append(time.time())


def on_reconnected(sender: Any, downtime: float = 0.0, **kwargs: Any) -> None:
    recorder.reconnects.append((time.time(), downtime))


def _emit(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_worker(args: argparse.Namespace) -> int:
    global recorder
    recorder = Recorder(args.journal)
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    os_signal.signal(os_signal.SIGTERM, stop)
    os_signal.signal(os_signal.SIGINT, stop)

    extra: dict[str, Any] = {}
    if args.worker_id:
        extra["worker_id"] = args.worker_id
    bridge = _bridge(args, **extra)
    sig = Signal(name=args.signal)
    if args.once:
        sig.connect(on_once, weak=False, dispatch_uid=ONCE_UID, scope="once")
    else:
        sig.connect(on_message, weak=False)
    gap.connect(on_gap, weak=False)
    disconnected.connect(on_disconnected, weak=False)
    reconnected.connect(on_reconnected, weak=False)
    bridge.register(sig)
    bridge.start()
    started = time.time()
    print(f"READY {started:.6f}", flush=True)

    while not stopping.wait(0.1):
        pass

    listener_name = f"relay-listener[{args.namespace}]"
    listener_alive = any(
        thread.name == listener_name and thread.is_alive() for thread in threading.enumerate()
    )
    stats_before_stop = bridge.stats()
    bridge.stop(timeout=5.0)
    _emit(
        {
            "label": args.label,
            "pid": os.getpid(),
            "started": started,
            "listener_alive": listener_alive,
            "numbers": recorder.numbers,
            "times": [round(t, 4) for t in recorder.times],
            "max_lag": recorder.max_lag,
            "gaps": recorder.gaps,
            "disconnects": recorder.disconnects,
            "reconnects": recorder.reconnects,
            "stats": stats_before_stop,
        }
    )
    return 0


def run_producer(args: argparse.Namespace) -> int:
    bridge = _bridge(args, max_queue=args.max_queue)
    sig = Signal(name=args.signal)
    bridge.register(sig)
    bridge.start()
    times: list[float] = []
    send = sig.send
    clock = time.perf_counter
    start = clock()
    print(f"READY {time.time():.6f}", flush=True)

    count, rate = args.count, args.rate
    n = 0
    while n < count:
        due = count if rate <= 0 else min(count, int((clock() - start) * rate) + 1)
        while n < due:
            n += 1
            send(None, n=n)
            times.append(time.time())
        if n < count:
            time.sleep(max(0.0, min(0.002, n / rate - (clock() - start))))
    flushed = bridge.flush(timeout=args.flush_timeout)
    print(f"SENT {n}", flush=True)

    if args.final > 0:
        sys.stdin.readline()
        for _ in range(args.final):
            n += 1
            send(None, n=n)
            times.append(time.time())
        flushed = bridge.flush(timeout=args.flush_timeout) and flushed
    bridge.stop(timeout=args.flush_timeout)
    _emit(
        {
            "label": "producer",
            "pid": os.getpid(),
            "sent": n,
            "flushed": flushed,
            "times": [round(t, 4) for t in times],
            "stats": bridge.stats(),
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("role", choices=["worker", "producer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--signal", required=True)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--secret", default="")
    parser.add_argument("--replay-window", type=float, default=300.0)
    parser.add_argument("--label", default="worker")
    # worker
    parser.add_argument("--worker-id", default="")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--journal", default="")
    # producer
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--final", type=int, default=0)
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--flush-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    return run_worker(args) if args.role == "worker" else run_producer(args)


if __name__ == "__main__":
    sys.exit(main())

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
SIGKILL, and the benchmark watches it to see when a worker has gone quiet.
Either role prints the stack of every thread to stderr on SIGUSR1.
With ``--events PATH`` it also appends, the same way, one line per bridge
event: ``gap FIRST_MISSING COUNT time``, ``disconnected time`` and
``reconnected time downtime``, so that a test can see what was reported while
the worker runs. ``--delay SECONDS`` makes the counting receiver sleep that
long each time (a slow consumer). On SIGTERM (or SIGINT) it checks that its
listener thread is still alive, stops the bridge and prints one JSON line with
everything it recorded and the bridge's ``stats()``.

A **producer** creates its ``Relay`` (no receivers, so it subscribes to
nothing), prints ``READY <unix time>`` and sends ``--count`` messages
``signal.send(None, n=i)`` with ``n = 1, 2, ...``, paced at ``--rate`` per
second on an absolute schedule (unpaced with ``--rate 0``). Then it waits for
the publisher to catch up (``flush``), prints ``SENT <count>`` and, with
``--final K``, waits for a line on its standard input and sends ``K`` more
messages (numbered on). Finally it stops its bridge and prints one JSON line:
how many it sent, the send time of each (by ``n``), how many sends were
refused, and ``stats()``.

Producer options for the loss-accounting tests:

``--payload BYTES``
    Every message also carries ``payload=b"x" * BYTES``.
``--threads N``
    Send from ``N`` threads at once: thread ``t`` sends ``n = t + 1, t + 1 + N,
    ...``, so that together they send every ``n`` from 1 to ``--count`` once,
    each paced at ``--rate / N``. The numbers the bridge gives the messages
    then follow the order in which the threads got to queue them, not ``n``.
``--refused K``
    After every message, also attempt ``K`` sends that relay must refuse,
    alternately one with a keyword argument that cannot be encoded (an
    ``object()``: ``TypeError``) and one over ``--max-message-size``
    (``ValueError``), and catch them. A refused send takes no sequence number,
    so it must never show up as a gap anywhere. Any other outcome (no error,
    another error) is counted in ``refused_wrongly`` in the report.
``--max-message-size BYTES``
    The producer bridge's ``max_message_size``.
``--handover K``
    Run two bridges on the namespace (one process, one origin, one
    numbering). The first publishes through a Redis 20 ms slower per publish
    and sends messages 1 to ``K``; then it is stopped (in another thread,
    which flushes its queue) and the second, which takes over publishing,
    sends the rest. ``stats`` in the report is the sum of both bridges'
    counters, ``bridges`` each one's.

``--burst K``
    Send the first ``K`` messages unpaced, and only the rest at ``--rate``
    (one sending thread only): a burst, then a paced stream.

Worker options for the ``scope="once"`` scenarios (with ``--once``):

``--once-lease SECONDS``
    The bridge's ``once_lease`` (30 s by default).
``--hang N`` and ``--hang-marker PATH``
    The first process to run message ``N`` creates ``PATH`` (``O_EXCL``) and
    its receiver hangs there until the process is killed (the journal already
    has ``N``: a run started and never finished); in every other process, or
    once ``PATH`` exists, message ``N`` runs as any other.

A worker with ``--once`` also reports ``done``: the numbers whose runs
returned, in order (the journal has the runs that started).

``--retention N`` (both roles, with ``--durable``) is the bridge's
``retention``: the durable log keeps about the last ``N`` frames.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal as os_signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from redis.backoff import ExponentialWithJitterBackoff

from relay import Relay, Signal, current_message
from relay.bridge import disconnected, gap, reconnected
from relay.transport import Log, Outgoing
from relay.transport.redis import RedisTransport

ONCE_UID = "faults.once-receiver"


def _bridge(args: argparse.Namespace, **extra: Any) -> Relay:
    options: dict[str, Any] = {
        "namespace": args.namespace,
        "durable": args.durable,
        # Fast reconnection, as the benchmark asks: 20 ms growing to 0.5 s at most.
        "backoff": ExponentialWithJitterBackoff(cap=0.5, base=0.02),
        **extra,
    }
    if args.durable and args.retention:
        options["retention"] = args.retention
    if args.secret:
        options["secret"] = args.secret
        options["replay_window"] = args.replay_window
    if "transport" in options:
        return Relay(**options)
    return Relay(args.url, **options)


class _SlowTransport(RedisTransport):
    """Redis as seen from far away or under load: every publish takes 20 ms more."""

    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        time.sleep(0.02)
        super().publish_many(items, log)


class Recorder:
    """What a worker's receivers saw, in the listener thread's order."""

    def __init__(self, journal: str | None, events: str | None = None, delay: float = 0.0) -> None:
        self.delay = delay
        self.numbers: list[int] = []
        self.times: list[float] = []
        self.max_lag = 0.0
        self.gaps: list[dict[str, Any]] = []
        self.disconnects: list[float] = []
        self.disconnect_reasons: list[str] = []
        self.reconnects: list[tuple[float, float]] = []
        self._fd = (
            os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if journal else None
        )
        self._events_fd = (
            os.open(events, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if events else None
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
        if self.delay > 0:
            time.sleep(self.delay)

    def event(self, *fields: object) -> None:
        """Append one line to the events file (if any): the fields, then the time."""
        if self._events_fd is not None:
            line = " ".join([*(str(f) for f in fields), f"{time.time():.6f}"])
            os.write(self._events_fd, line.encode() + b"\n")


recorder = Recorder(None)


def on_message(sender: Any, n: int, **kwargs: Any) -> None:
    recorder.fired(n)


hang: tuple[int, str] | None = None  # (n, marker path): see --hang
once_done: list[int] = []


def on_once(sender: Any, n: int, **kwargs: Any) -> None:
    recorder.fired(n)
    if hang is not None and n == hang[0]:
        try:
            os.close(os.open(hang[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            pass
        else:
            threading.Event().wait()  # until the process is killed
    once_done.append(n)


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
    recorder.event("gap", first_missing, count)


def on_disconnected(sender: Any, reason: str = "", **kwargs: Any) -> None:
    recorder.disconnects.append(time.time())
    recorder.disconnect_reasons.append(reason)
    recorder.event("disconnected")


def on_reconnected(sender: Any, downtime: float = 0.0, **kwargs: Any) -> None:
    recorder.reconnects.append((time.time(), downtime))
    recorder.event("reconnected", f"{downtime:.6f}")


def _emit(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_worker(args: argparse.Namespace) -> int:
    global recorder, hang
    recorder = Recorder(args.journal, args.events, args.delay)
    if args.hang:
        if not (args.once and args.hang_marker):
            raise SystemExit("--hang needs --once and --hang-marker")
        hang = (args.hang, args.hang_marker)
    # A plain flag, not a threading.Event: Event.set() in a signal handler
    # deadlocks if the signal lands while the main thread holds the Event's
    # lock (inside Event.wait()).
    stopping: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)

    os_signal.signal(os_signal.SIGTERM, stop)
    os_signal.signal(os_signal.SIGINT, stop)

    extra: dict[str, Any] = {}
    if args.worker_id:
        extra["worker_id"] = args.worker_id
    if args.once_lease:
        extra["once_lease"] = args.once_lease
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

    while not stopping:
        time.sleep(0.1)

    listener_name = f"relay-listener[{args.namespace}]"
    listener_alive = any(
        thread.name == listener_name and thread.is_alive() for thread in threading.enumerate()
    )
    stats_before_stop = bridge.stats()
    bridge.stop(timeout=5.0)
    report: dict[str, Any] = {"done": list(once_done)} if args.once else {}
    _emit(
        {
            **report,
            "label": args.label,
            "pid": os.getpid(),
            "started": started,
            "listener_alive": listener_alive,
            "numbers": recorder.numbers,
            "times": [round(t, 4) for t in recorder.times],
            "max_lag": recorder.max_lag,
            "gaps": recorder.gaps,
            "disconnects": recorder.disconnects,
            "disconnect_reasons": recorder.disconnect_reasons,
            "reconnects": recorder.reconnects,
            "stats": stats_before_stop,
        }
    )
    return 0


class _Refusals:
    """Sends that relay must refuse: what happened to them."""

    def __init__(self, max_message_size: int) -> None:
        self.oversized = b"\0" * (max_message_size + 1)
        self.refused = 0
        self.wrongly: list[str] = []
        self._lock = threading.Lock()

    def attempt(self, send: Any, n: int, k: int) -> None:
        for i in range(k):
            if i % 2 == 0:
                kwargs: dict[str, Any] = {"n": n, "unencodable": object()}
                expected: type[Exception] = TypeError
            else:
                kwargs = {"n": n, "oversized": self.oversized}
                expected = ValueError
            try:
                send(None, **kwargs)
            except expected:
                with self._lock:
                    self.refused += 1
                continue
            except Exception as exc:  # a wrong refusal is reported, not raised
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                outcome = "sent"
            with self._lock:
                self.wrongly.append(f"n={n} {expected.__name__} expected: {outcome}")


def _send_numbers(
    send: Any,
    numbers: Sequence[int],
    rate: float,
    extra: dict[str, Any],
    times: list[float],
    refusals: _Refusals,
    refused: int,
) -> None:
    """Send ``n`` for each of ``numbers`` in order, paced at ``rate`` per second (0: unpaced)."""
    clock = time.perf_counter
    start = clock()
    total = len(numbers)
    done = 0
    while done < total:
        due = total if rate <= 0 else min(total, int((clock() - start) * rate) + 1)
        while done < due:
            n = numbers[done]
            done += 1
            send(None, n=n, **extra)
            times[n - 1] = time.time()
            if refused:
                refusals.attempt(send, n, refused)
        if done < total:
            time.sleep(max(0.0, min(0.002, done / rate - (clock() - start))))


def run_producer(args: argparse.Namespace) -> int:
    extra_options: dict[str, Any] = {"max_queue": args.max_queue}
    if args.max_message_size:
        extra_options["max_message_size"] = args.max_message_size
    sig = Signal(name=args.signal)
    first: Relay | None = None
    if args.handover:
        first = _bridge(args, transport=_SlowTransport(args.url), **extra_options)
        first.register(sig)
        first.start()
    bridge = _bridge(args, **extra_options)
    bridge.register(sig)
    bridge.start()
    send = sig.send
    count, rate, threads = args.count, args.rate, max(1, args.threads)
    extra: dict[str, Any] = {"payload": b"x" * args.payload} if args.payload else {}
    refusals = _Refusals(bridge.max_message_size)
    times: list[float] = [0.0] * (count + args.final)
    print(f"READY {time.time():.6f}", flush=True)

    stopping: threading.Thread | None = None
    if first is not None:
        # The first bridge publishes the first --handover messages (slowly);
        # stopping it hands publishing over to the second while it flushes.
        handover = min(args.handover, count)
        _send_numbers(send, range(1, handover + 1), rate, extra, times, refusals, args.refused)
        stopping = threading.Thread(target=first.stop, kwargs={"timeout": args.flush_timeout})
        stopping.start()
        while first.running:
            time.sleep(0.0005)
        numbers = range(handover + 1, count + 1)
        _send_numbers(send, numbers, rate, extra, times, refusals, args.refused)
        stopping.join()
    elif threads == 1:
        burst = min(max(0, args.burst), count)
        if burst:
            _send_numbers(send, range(1, burst + 1), 0, extra, times, refusals, args.refused)
        numbers = range(burst + 1, count + 1)
        _send_numbers(send, numbers, rate, extra, times, refusals, args.refused)
    else:
        senders = [
            threading.Thread(
                target=_send_numbers,
                args=(
                    send,
                    range(t + 1, count + 1, threads),
                    rate / threads,
                    extra,
                    times,
                    refusals,
                    args.refused,
                ),
                name=f"sender-{t}",
            )
            for t in range(threads)
        ]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
    n = count
    flushed = bridge.flush(timeout=args.flush_timeout)
    print(f"SENT {n}", flush=True)

    if args.final > 0:
        sys.stdin.readline()
        for _ in range(args.final):
            n += 1
            send(None, n=n, **extra)
            times[n - 1] = time.time()
        flushed = bridge.flush(timeout=args.flush_timeout) and flushed
    bridge.stop(timeout=args.flush_timeout)
    stats = bridge.stats()
    bridges = [stats]
    if first is not None:
        bridges.insert(0, first.stats())
        stats = {name: sum(b[name] for b in bridges) for name in stats}
    _emit(
        {
            "label": "producer",
            "pid": os.getpid(),
            "sent": n,
            "threads": threads,
            "bridges": bridges,
            "flushed": flushed,
            "times": [round(t, 4) for t in times],
            "refused": refusals.refused,
            "refused_wrongly": refusals.wrongly,
            "stats": stats,
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to stderr (a hung process).
    faulthandler.register(os_signal.SIGUSR1, all_threads=True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("role", choices=["worker", "producer"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--signal", required=True)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--secret", default="")
    parser.add_argument("--replay-window", type=float, default=300.0)
    parser.add_argument("--label", default="worker")
    parser.add_argument("--retention", type=int, default=0)
    # worker
    parser.add_argument("--worker-id", default="")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--journal", default="")
    parser.add_argument("--events", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--once-lease", type=float, default=0.0)
    parser.add_argument("--hang", type=int, default=0)
    parser.add_argument("--hang-marker", default="")
    # producer
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--final", type=int, default=0)
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--flush-timeout", type=float, default=60.0)
    parser.add_argument("--payload", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refused", type=int, default=0)
    parser.add_argument("--max-message-size", type=int, default=0)
    parser.add_argument("--handover", type=int, default=0)
    parser.add_argument("--burst", type=int, default=0)
    args = parser.parse_args(argv)
    return run_worker(args) if args.role == "worker" else run_producer(args)


if __name__ == "__main__":
    sys.exit(main())

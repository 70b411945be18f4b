"""
``relay demo``: start workers, send signals to them, check every delivery.

The workers run ``relay worker relay.demo.app``. The demo waits until every
worker answers ``demo.ping``, sends ``demo.order_placed`` with a mix of
senders, then asks each worker for a ``demo.report`` and compares what each
receiver got with what it should have got.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal as os_signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO
from urllib.parse import urlsplit

from relay.bridge import Relay, current_message
from relay.demo import app
from relay.transport.base import TransportError
from relay.usage import UsageError

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
TIMEOUT = 60.0
CLOSE_TIMEOUT = 20.0

#: The senders the demo cycles through, and which receivers each should reach.
SENDERS: tuple[Any, ...] = (app.Order, "relay.demo.app.Order", app.Invoice, None)


def expected_counts(signals: int) -> dict[str, int]:
    """What each receiver of a worker should get when the demo sends ``signals``."""
    per_sender = {app.Order: True, "relay.demo.app.Order": True, app.Invoice: False, None: False}
    order_named = sum(1 for i in range(signals) if per_sender[SENDERS[i % len(SENDERS)]])
    return {
        "any_sender": signals,
        "by_class": order_named,
        "by_name": order_named,
        "uid_first": signals,
        "uid_second": 0,  # shares uid_first's dispatch_uid, so it is never connected
        "local_only": 0,  # scope="local": sends from the demo process never reach it
    }


@dataclass
class Broker:
    url: str
    description: str


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), 0.5
        ) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


#: Set by the --cluster demo's SIGINT and SIGTERM handler; the demo's loops
#: check it and unwind as on Ctrl-C. The handler does not raise
#: KeyboardInterrupt itself: raised inside a finalizer, Python would print and
#: ignore it ("Exception ignored in ..."), and the demo would go on sending.
_interrupted = threading.Event()


def _check_interrupted() -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def local_cluster() -> Iterator[Broker]:
    """
    A Redis Cluster of 3 primaries on loopback for the demo's lifetime
    (``relay.testing.RedisCluster``): every node is killed and its directory
    removed when the demo ends, also on Ctrl-C, SIGTERM or a failure.
    """
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        raise UsageError(
            f"relay demo --cluster needs redis-server and redis-cli on PATH, and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing "
            "(apt-get install -y redis-server redis-tools, or brew install redis)"
        )
    from relay.testing import RedisCluster, RedisServerUnavailable

    def interrupt(signum: int, frame: FrameType | None) -> None:
        _interrupted.set()

    # SIGTERM stops the demo like Ctrl-C, so that the nodes are stopped too;
    # SIGINT explicitly, as a process started in the background inherits it
    # ignored.
    _interrupted.clear()
    previous = os_signal.signal(os_signal.SIGTERM, interrupt)
    previous_int = os_signal.signal(os_signal.SIGINT, interrupt)
    try:
        cluster = None
        problems = []
        # Without replicas if this Redis forms such a cluster, else one replica each.
        for replicas in (0, 1):
            candidate = RedisCluster(primaries=3, replicas_per_primary=replicas)
            try:
                cluster = candidate.start()
                break
            except RedisServerUnavailable as exc:
                problems.append(str(exc).splitlines()[0])
        if cluster is None:
            raise UsageError(f"could not start a local Redis Cluster: {'; '.join(problems)}")
        try:
            shape = "3 primaries" + (
                f", {len(cluster.nodes) - 3} replicas" if len(cluster.nodes) > 3 else ""
            )
            yield Broker(cluster.url, f"a local Redis Cluster ({shape}) at {cluster.url}")
        finally:
            cluster.stop()
    finally:
        os_signal.signal(os_signal.SIGTERM, previous)
        os_signal.signal(os_signal.SIGINT, previous_int)


@contextmanager
def choose_broker(redis_url: str | None, embedded: bool, cluster: bool = False) -> Iterator[Broker]:
    """
    The broker for the demo: with ``cluster``, a local Redis Cluster of its
    own; else ``redis_url`` if given, else a Redis on 127.0.0.1:6379 if one
    answers, else an embedded one on a free loopback port (fakeredis's TCP
    server) for the demo's lifetime.
    """
    if cluster:
        if redis_url or embedded:
            raise UsageError(
                "--cluster starts its own broker: leave out --redis-url and --embedded"
            )
        with local_cluster() as broker:
            yield broker
        return
    if redis_url and not embedded:
        yield Broker(redis_url, f"the Redis at {redis_url}")
        return
    if not embedded and _answers(LOCAL_REDIS):
        yield Broker(LOCAL_REDIS, f"the Redis answering at {LOCAL_REDIS}")
        return
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise UsageError(
            "no Redis answers on 127.0.0.1:6379 and the embedded broker needs fakeredis: "
            "pip install 'signal-relay[demo]', or pass --redis-url"
        ) from None
    server = TcpFakeServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, name="embedded-broker", daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        url = f"redis://127.0.0.1:{port}/0"
        yield Broker(url, f"an embedded broker (fakeredis) at {url}")
    finally:
        server.shutdown()
        server.server_close()


class Progress:
    """One status line, redrawn in place on a terminal, printed now and then elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0

    def show(self, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.out.write(f"\r{text:<70}" + ("\n" if final else ""))
            self.out.flush()
        elif final or now - self._last >= 1.0:
            print(text, file=self.out, flush=True)
            self._last = now


def _start_workers(count: int, url: str, namespace: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = []
    for index in range(count):
        env["RELAY_DEMO_WORKER"] = f"worker-{index + 1}"
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "relay",
                    "worker",
                    "relay.demo.app",
                    "--redis-url",
                    url,
                    "--namespace",
                    namespace,
                ],
                env=dict(env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    return workers


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> list[str]:
    problems = []
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + TIMEOUT  # for all of them together
    for index, worker in enumerate(workers, 1):
        try:
            _, err = worker.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
        if worker.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            problems.append(f"worker-{index} exited with {worker.returncode}: {' | '.join(tail)}")
    return problems


def _wait_for(condition: Any, what: str, workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        _check_interrupted()
        for worker in workers:
            if worker.poll() is not None:
                err = worker.stderr.read().decode(errors="replace") if worker.stderr else ""
                raise RuntimeError(f"a worker exited early while waiting for {what}:\n{err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {TIMEOUT:.0f} s waiting for {what}")
        time.sleep(0.05)


SETTLE = 2.0
"""Seconds a worker's counts must stay the same before an incomplete report is final."""


def _collect_reports(
    reports: dict[str, dict[str, Any]],
    workers: int,
    signals: int,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """
    Ask the workers for reports (``demo.done``) until every worker has got
    every signal, or its counts have stopped changing for ``SETTLE`` seconds.

    One request is not enough on a Redis Cluster: ``demo.done`` travels on
    another shard than ``demo.order_placed``, so it may overtake the last
    orders. A report answers the request whose ``round`` it carries.
    """
    deadline = time.monotonic() + TIMEOUT
    changed = time.monotonic()
    previous: dict[str, Any] = {}
    round_ = 0
    while True:
        round_ += 1
        app.done.send(None, round=round_)
        _wait_for(
            lambda wanted=round_: (
                sum(r.get("round") == wanted for r in reports.values()) >= workers
            ),
            "the workers' reports",
            processes,
        )
        counts = {worker: report["counts"] for worker, report in reports.items()}
        if all(c.get("any_sender", 0) >= signals for c in counts.values()):
            return
        now = time.monotonic()
        if counts != previous:
            previous, changed = counts, now
        elif now - changed >= SETTLE or now > deadline:
            return
        time.sleep(0.2)


def run_demo(
    workers: int = 3,
    signals: int = 3000,
    redis_url: str | None = None,
    embedded: bool = False,
    out: TextIO = sys.stdout,
    cluster: bool = False,
) -> int:
    """Run the demo; return 0 only if every expected delivery happened exactly once."""
    with choose_broker(redis_url, embedded, cluster) as broker:
        namespace = f"demo-{secrets.token_hex(4)}"
        print(
            f"relay demo: {workers} workers, {signals} signals, namespace {namespace!r}", file=out
        )
        print(f"broker: {broker.description}", file=out, flush=True)
        try:
            bridge = Relay(broker.url, namespace=namespace)
            bridge.transport.check()
        except (ValueError, TransportError) as exc:
            raise UsageError(f"cannot use {broker.url}: {exc}") from None
        pongs: set[str] = set()
        reports: dict[str, dict[str, Any]] = {}

        # This process imports the app too: count only the workers' answers.
        def on_pong(sender: str, **kwargs: Any) -> None:
            if current_message() is not None:
                pongs.add(sender)

        def on_report(sender: str, **kwargs: Any) -> None:
            if current_message() is not None:
                reports[sender] = kwargs

        app.pong.connect(on_pong)
        app.report.connect(on_report)
        for signal in app.SIGNALS:
            bridge.register(signal)
        processes = _start_workers(workers, broker.url, namespace)
        progress = Progress(out)
        try:
            bridge.start()

            def all_answer() -> bool:
                if len(pongs) < workers:
                    app.ping.send(None)
                    time.sleep(0.1)
                return len(pongs) >= workers

            _wait_for(all_answer, "the workers to start", processes)
            progress.show(f"{workers} workers ready", final=True)
            started = time.monotonic()
            for number in range(signals):
                app.order_placed.send(SENDERS[number % len(SENDERS)], number=number)
                if number % 100 == 0:
                    _check_interrupted()
                    progress.show(f"sent {number}/{signals}")
            bridge.flush(TIMEOUT)
            progress.show(
                f"sent {signals}/{signals} in {time.monotonic() - started:.2f} s", final=True
            )
            _collect_reports(reports, workers, signals, processes)
        finally:
            # Bounded: an interrupted demo must still stop its workers (and
            # cluster) even if closing the bridge hangs; the process exits after.
            closing = threading.Thread(target=bridge.close, name="demo-close", daemon=True)
            closing.start()
            closing.join(CLOSE_TIMEOUT)
            app.pong.disconnect(on_pong)
            app.report.disconnect(on_report)
            problems = _stop_workers(processes)
        ok = _print_table(reports, expected_counts(signals), out)
        for problem in problems:
            print(problem, file=out)
        verdict = ok and not problems
        print(
            "OK: every expected delivery happened exactly once, nothing unexpected fired"
            if verdict
            else "FAILED: see the rows marked above",
            file=out,
        )
        return 0 if verdict else 1


def _print_table(reports: dict[str, dict[str, Any]], expected: dict[str, int], out: TextIO) -> bool:
    ok = True
    print(file=out)
    print(f"{'worker':<10} {'receiver':<12} {'got':>7} {'expected':>9} {'dups':>5}", file=out)
    for worker in sorted(reports):
        report = reports[worker]
        for receiver in app.RECEIVERS:
            got = report["counts"].get(receiver, 0)
            mark = "" if got == expected[receiver] else "  <-- mismatch"
            ok = ok and not mark
            print(
                f"{worker:<10} {receiver:<12} {got:>7} {expected[receiver]:>9} "
                f"{report['duplicates'] if receiver == 'any_sender' else '':>5}{mark}",
                file=out,
            )
        ok = ok and report["duplicates"] == 0
    print(file=out)
    print(f"{'worker':<10} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8}", file=out)
    for worker in sorted(reports):
        report = reports[worker]
        span = report["span"]
        rate = report["counts"]["any_sender"] / span if span > 0 else float("nan")
        p50, p99 = report["p50"] * 1000, report["p99"] * 1000
        print(f"{worker:<10} {rate:>13,.0f} {p50:>8.2f} {p99:>8.2f}", file=out)
    print(file=out)
    return ok

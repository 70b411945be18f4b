"""
Loss accounting under real faults: real processes, real private redis-servers.

Every test runs ``benchmarks/fault_worker.py`` processes (workers that record
every ``n`` they fire, and the bridge's ``gap``, ``disconnected`` and
``reconnected`` signals; a producer that sends ``n = 1, 2, ...`` on one signal)
against a ``relay.testing.RedisServer`` of its own, injects a fault, and then
checks the delivery contract exactly, per worker:

- *lost*: the numbers sent that the worker never fired;
- *duplicated*: fires beyond the first of a number;
- *reported*: the sum of ``count`` over the worker's ``relay.gap`` signals.

With one single-threaded producer the sequence number of message ``n`` is
``n``, so in pub/sub mode the numbers covered by the gap signals must be the
lost numbers, exactly (and none reported twice). In durable mode nothing may be
lost or duplicated, and nothing reported. Each test also checks the counters of
``stats()`` against what the processes recorded.

The tests wait on conditions (a worker has fired or reported every number, it
has reconnected, Redis sees it subscribed), never on timing, and kill every
process and server they started, also when they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from relay.bridge import channel_for
from relay.testing import RedisServer, RedisServerUnavailable

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "benchmarks" / "fault_worker.py"
SIGNAL = "loss.tick"
NAMESPACE = "loss"
TIMEOUT = 30.0  # for every wait: generous, as a loaded machine is slow, not wrong
MODES = [pytest.param(True, id="durable"), pytest.param(False, id="pubsub")]


# -- servers and processes ------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers (``RedisServer(**options)``); all are killed at the end."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        try:
            server = RedisServer(**options).start()
        except RedisServerUnavailable as exc:
            if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
                pytest.fail(f"RELAY_REQUIRE_REDIS=1 but no Redis server could be started: {exc}")
            pytest.skip(f"no redis-server: {exc}")
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.__exit__(None, None, None)


class Proc:
    """A ``fault_worker.py`` process; stdout lines arrive on a queue, stderr goes to a file."""

    def __init__(self, label: str, args: list[str], log_dir: Path, *, stdin: bool = False) -> None:
        self.label = label
        self.log_path = log_dir / f"{label}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in close())
        self.popen = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
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

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        """The next stdout line that starts with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.dump_stacks()
                raise AssertionError(
                    f"{self.label}: no {prefix!r} line within {timeout:g} s; its log:\n{self.log()}"
                ) from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(
                    f"{self.label} exited with {self.popen.wait()} before printing {prefix!r}; "
                    f"its log:\n{self.log()}"
                )
            if line.startswith(prefix):
                return line

    def dump_stacks(self) -> None:
        """Have a hung process print its threads' stacks to its log (SIGUSR1)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.send_signal(signal.SIGUSR1)
            time.sleep(0.5)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def report(self, terminate: bool = True) -> dict[str, Any]:
        """Its JSON report: after asking it to finish (SIGTERM), or once it finishes by itself."""
        if terminate and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        result: dict[str, Any] = json.loads(self.expect("{"))
        return result

    def tell(self, text: str = "go") -> None:
        stdin = self.popen.stdin
        assert stdin is not None
        stdin.write(text.encode() + b"\n")
        stdin.flush()

    def pause(self) -> None:
        """SIGSTOP, and wait until every thread of the process has stopped."""
        self.popen.send_signal(signal.SIGSTOP)
        wait_until(self.stopped, f"{self.label} stopped")

    def stopped(self) -> bool:
        """True if every thread is stopped (Linux: ``/proc``; elsewhere, a moment later)."""
        tasks = Path(f"/proc/{self.popen.pid}/task")
        if not tasks.is_dir():
            time.sleep(0.2)
            return True
        states = []
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                states.append(stat[stat.rindex(")") + 2])
        return bool(states) and all(state in "tT" for state in states)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()  # SIGKILL ends a stopped process too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


class Worker(Proc):
    """A worker, with its journal (each ``n`` fired) and events file (gaps, reconnects)."""

    def __init__(self, label: str, base: list[str], log_dir: Path, *extra: str) -> None:
        self.journal = log_dir / f"{label}.journal"
        self.events_path = log_dir / f"{label}.events"
        super().__init__(
            label,
            [
                "worker",
                *base,
                "--label",
                label,
                "--journal",
                str(self.journal),
                "--events",
                str(self.events_path),
                *extra,
            ],
            log_dir,
        )
        self.expect("READY")

    def fired(self) -> list[int]:
        return [int(line.split()[0]) for line in _lines(self.journal)]

    def events(self) -> list[list[str]]:
        return [line.split() for line in _lines(self.events_path)]

    def covered(self) -> set[int]:
        """The numbers its gap signals reported lost so far."""
        numbers: set[int] = set()
        for event in self.events():
            if event[0] == "gap":
                first, count = int(event[1]), int(event[2])
                numbers.update(range(first, first + count))
        return numbers

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events() if event[0] == kind)

    def settled(self, sent: int) -> bool:
        """True once it fired or was told it lost every number from 1 to ``sent``."""
        return set(range(1, sent + 1)) <= set(self.fired()) | self.covered()


def _lines(path: Path) -> list[str]:
    try:
        data = path.read_text()
    except FileNotFoundError:
        return []
    # Only complete lines: each is written with one os.write.
    return [line for line in data.split("\n")[:-1] if line]


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to put processes in; every one of them is killed at the end."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.close()


def base_args(server: RedisServer, durable: bool) -> list[str]:
    args = ["--url", server.url, "--namespace", NAMESPACE, "--signal", SIGNAL]
    return [*args, "--durable"] if durable else args


def start_producer(
    procs: list[Proc], base: list[str], log_dir: Path, *, count: int, rate: float, **options: Any
) -> Proc:
    args = ["producer", *base, "--count", str(count), "--rate", str(rate)]
    for option, value in options.items():
        args += [f"--{option.replace('_', '-')}", str(value)]
    proc = Proc("producer", args, log_dir, stdin=options.get("final", 0) > 0)
    procs.append(proc)
    proc.expect("READY")
    return proc


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, socket_timeout=5)


TAP = "loss-tap"


def subscribers(server: RedisServer) -> int:
    """How many subscribed connections Redis has, besides the test's own ``tap``."""
    with admin(server) as client:
        clients = client.client_list(_type="pubsub")
    return sum(1 for c in clients if c.get("name") != TAP and int(c.get("sub", 0)) > 0)


def kill_subscribers(server: RedisServer) -> int:
    """``CLIENT KILL TYPE pubsub``: how many connections it closed."""
    with admin(server) as client:
        return int(client.client_kill_filter(_type="pubsub"))


@contextlib.contextmanager
def tap(server: RedisServer) -> Iterator[list[int]]:
    """The size of every frame published on the test signal's channel, while it lasts."""
    sizes: list[int] = []
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=5, client_name=TAP)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel_for(NAMESPACE, SIGNAL))
    pubsub.get_message(timeout=5)  # the confirmation
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                sizes.append(len(message["data"]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield sizes
    finally:
        stop.set()
        reader.join(5)
        pubsub.close()
        client.close()


def wait_recovered(server: RedisServer, worker: Worker, expected: int = 1) -> None:
    """Wait until ``worker`` is subscribed again and has recovered from every disconnect."""
    wait_until(
        lambda: (
            subscribers(server) == expected
            and worker.count("reconnected") == worker.count("disconnected")
        ),
        f"{worker.label} subscribed and recovered",
    )


def wait_quiet(worker: Worker, seconds: float = 0.5) -> None:
    """Wait until ``worker`` fired nothing for ``seconds`` (its backlog is done)."""
    last = (-1, time.monotonic())

    def quiet() -> bool:
        nonlocal last
        size = worker.journal.stat().st_size if worker.journal.exists() else 0
        if size != last[0]:
            last = (size, time.monotonic())
        return time.monotonic() - last[1] >= seconds

    wait_until(quiet, f"{worker.label} quiet for {seconds:g} s")


# -- accounting ---------------------------------------------------------------


@dataclass
class Tally:
    """What one worker did with the numbers 1..sent."""

    label: str
    sent: int
    fired: int
    lost: int
    duplicated: int
    reported: int
    replayed: int
    disconnects: int
    reconnects: int
    reasons: list[str]
    gaps: list[dict[str, Any]] = field(repr=False)
    lost_numbers: set[int] = field(repr=False)
    covered: set[int] = field(repr=False)
    stats: dict[str, int] = field(repr=False)


def tally(report: dict[str, Any], sent: int) -> Tally:
    numbers: list[int] = report["numbers"]
    expected = set(range(1, sent + 1))
    assert set(numbers) <= expected, f"fired numbers never sent: {set(numbers) - expected}"
    counts = Counter(numbers)
    covered: set[int] = set()
    for entry in report["gaps"]:
        assert entry["signal_name"] == SIGNAL, entry
        span = set(range(entry["first_missing"], entry["first_missing"] + entry["count"]))
        assert not span & covered, f"numbers reported lost twice: {sorted(span & covered)}"
        covered |= span
    stats = report["stats"]
    result = Tally(
        label=report["label"],
        sent=sent,
        fired=len(numbers),
        lost=len(expected - set(numbers)),
        duplicated=sum(c - 1 for c in counts.values()),
        reported=sum(entry["count"] for entry in report["gaps"]),
        replayed=stats["replayed"],
        disconnects=stats["disconnects"],
        reconnects=stats["reconnects"],
        reasons=report["disconnect_reasons"],
        gaps=report["gaps"],
        lost_numbers=expected - set(numbers),
        covered=covered,
        stats=stats,
    )
    print(f"{result}")  # shown with pytest -s, and on failure
    # The counters agree with what the worker's receivers saw.
    assert report["listener_alive"], f"{result.label}: the listener thread died"
    assert stats["fired"] == result.fired, (stats, result)
    assert stats["gaps"] == len(report["gaps"]), (stats, report["gaps"])
    assert stats["missed"] == result.reported, (stats, result)
    assert stats["disconnects"] == len(report["disconnects"]), (stats, report["disconnects"])
    assert stats["reconnects"] == len(report["reconnects"]), (stats, report["reconnects"])
    assert stats["receiver_errors"] == stats["listener_errors"] == 0, stats
    assert len({entry["origin"] for entry in report["gaps"]}) <= 1, report["gaps"]
    # Every message was fired once from pub/sub or from the log: received on
    # pub/sub and neither a duplicate nor refused (older than the window: no
    # test sends malformed frames, so that is all ``rejected`` counts), or
    # replayed.
    fresh = stats["received"] - stats["duplicates"] - stats["rejected"]
    assert fresh + stats["replayed"] == result.fired, (
        stats,
        result,
    )
    return result


def check_producer(report: dict[str, Any], sent: int) -> None:
    stats = report["stats"]
    assert report["sent"] == sent, report
    assert report["flushed"], report
    assert stats["published"] == sent, stats
    assert stats["dropped"] == 0, stats


def check_durable(result: Tally) -> None:
    """Durable mode: nothing lost, nothing twice, nothing reported."""
    assert (result.lost, result.duplicated, result.reported) == (0, 0, 0), (
        result,
        sorted(result.lost_numbers)[:20],
        result.gaps[:5],
    )
    assert result.fired == result.sent
    assert result.disconnects == result.reconnects, result


def check_reported(result: Tally) -> None:
    """Nothing twice, and every loss reported, exactly."""
    assert result.duplicated == 0, result
    assert result.reported == result.lost, (
        result,
        sorted(result.lost_numbers - result.covered)[:20],
        sorted(result.covered - result.lost_numbers)[:20],
    )
    assert result.covered == result.lost_numbers, result
    assert result.disconnects == result.reconnects, result


def check_pubsub(result: Tally) -> None:
    """Pub/sub mode: every loss reported, exactly, and nothing replayed."""
    check_reported(result)
    assert result.replayed == 0, result


def finish(
    workers: Iterable[Worker],
    producer: Proc,
    sent: int,
    durable: bool,
    check: Callable[[Tally], None] | None = None,
) -> tuple[list[Tally], dict[str, Any]]:
    """
    Wait for every worker to settle, collect the reports and check the
    contract (``check``; by default that of durable or pub/sub mode).
    """
    for worker in workers:
        wait_until(lambda w=worker: w.settled(sent), f"{worker.label} settled")
    producer_report = producer.report(terminate=False)  # it ends after sending
    check_producer(producer_report, sent)
    results = []
    for worker in workers:
        result = tally(worker.report(), sent)
        (check or (check_durable if durable else check_pubsub))(result)
        results.append(result)
    return results, producer_report


# -- the scenarios --------------------------------------------------------------


@pytest.mark.parametrize("durable", MODES)
def test_client_kill_of_the_subscriber(
    servers: Callable[..., RedisServer], tmp_path: Path, durable: bool
) -> None:
    """
    ``CLIENT KILL TYPE pubsub`` closes the worker's subscribed connection 4
    times while a producer streams 1,500 signals/s for 3 s; redis-py
    restores it by itself, which relay must notice. The stream goes on 1.3 s
    after the last kill, and once the worker has recovered the producer sends
    20 more, so that every loss is followed by a later message.
    """
    server = servers()
    count, rate, final = 4500, 1500.0, 20
    with processes() as procs:
        base = base_args(server, durable)
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        producer = start_producer(procs, base, tmp_path, count=count, rate=rate, final=final)
        started = time.monotonic()
        kills = 0
        for at in (0.5, 0.9, 1.3, 1.7):
            wait_recovered(server, worker)
            time.sleep(max(0.0, started + at - time.monotonic()))
            kills += kill_subscribers(server)
        producer.expect("SENT")
        wait_recovered(server, worker)
        producer.tell()
        [result], _ = finish([worker], producer, count + final, durable)
    assert kills == 4  # each kill found the worker subscribed (wait_recovered)
    assert result.disconnects == result.reconnects == kills, result
    if durable:
        # What the kills lost on pub/sub came from the log.
        stats = result.stats
        wire_lost = count + final - (stats["received"] - stats["duplicates"] - stats["rejected"])
        assert result.replayed == wire_lost, result


@pytest.mark.parametrize("durable", MODES)
def test_slow_consumer_over_the_output_buffer_limit(
    servers: Callable[..., RedisServer], tmp_path: Path, durable: bool
) -> None:
    """
    A worker whose receiver takes 1 ms per message, behind a 256 KB pub/sub
    output-buffer limit, while a producer bursts 3,000 messages of 2 KB
    unpaced: Redis disconnects the worker (maybe several times). Once it has
    caught up (durable) or recovered (pub/sub), the producer sends 20 more,
    so that every loss is followed by a message.
    """
    redis_log = tmp_path / "redis.log"
    server = servers(
        args=["--client-output-buffer-limit", "pubsub 256kb 64kb 1", "--logfile", str(redis_log)]
    )
    count, final = 3000, 20
    with processes() as procs, tap(server) as frames:
        base = base_args(server, durable)
        worker = Worker("worker", base, tmp_path, "--delay", "0.001")
        procs.append(worker)
        producer = start_producer(
            procs, base, tmp_path, count=count, rate=0, payload=2000, final=final
        )
        producer.expect("SENT")
        wait_until(lambda: worker.count("disconnected") >= 1, "the worker was disconnected")
        if durable:
            wait_until(lambda: worker.settled(count), "the worker fired the burst")
        wait_recovered(server, worker)
        wait_quiet(worker)
        producer.tell()
        [result], _ = finish([worker], producer, count + final, durable)
    # Batched frames stay under max_frame_size (64 KiB), and several messages were batched.
    assert frames and max(frames) <= 64 * 1024, max(frames, default=0)
    assert max(frames) > 4 * 2000, max(frames)
    # It was the output-buffer limit that closed the worker's connection.
    assert "output buffer limits" in redis_log.read_text()
    assert result.disconnects >= 1
    if durable:
        assert result.replayed >= 1, result
    else:
        assert result.lost >= 1, result


@pytest.mark.parametrize("mode", ["durable", "durable-volatile", "pubsub"])
def test_worker_paused_across_a_redis_restart(
    servers: Callable[..., RedisServer], tmp_path: Path, mode: str
) -> None:
    """
    The worker is SIGSTOPped, its connection closed (``CLIENT KILL``) and
    0.2 s later Redis is SIGKILLed and restarted while a producer streams
    1,250 signals/s; messages are sent before the crash, during the outage
    (queued by the producer) and after it, while the worker is still paused.
    SIGCONT: redis-py reconnects by itself, and relay must count that as a
    loss. The stream goes on for a while, then 20 more once the worker has
    recovered. ``durable``: the log is on disk (``appendonly``) and survives, so
    nothing is lost. ``durable-volatile``: durable mode on a Redis without
    persistence, so the log dies with it: what is not in the log must be
    reported, exactly.
    """
    durable = mode != "pubsub"
    server = servers(appendonly=mode == "durable")
    count, rate, final = 4000, 1250.0, 20
    with processes() as procs:
        base = base_args(server, durable)
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        producer = start_producer(procs, base, tmp_path, count=count, rate=rate, final=final)
        wait_until(lambda: len(worker.fired()) >= 500, "the worker fired 500 messages")
        worker.pause()
        try:
            # Closed first, so that what Redis gets now reaches only its log (if
            # durable) and not the paused worker's socket buffers.
            assert kill_subscribers(server) == 1
            time.sleep(0.2)
            server.stop()  # SIGKILL
            time.sleep(0.3)
            server.start()
            time.sleep(0.5)  # the producer publishes again; the worker hears nothing
        finally:
            worker.resume()
        wait_recovered(server, worker)
        producer.expect("SENT")
        producer.tell()
        check = check_reported if mode == "durable-volatile" else None
        [result], _ = finish([worker], producer, count + final, durable, check)
    # One pause, one loss of the connection (closed, then the server died too).
    assert result.disconnects == result.reconnects == 1, result
    if mode == "durable":
        assert result.replayed >= 1, result
    else:
        assert result.lost >= 1, result
    if mode == "durable-volatile":
        # What the restarted Redis logged (sent during and after the outage) was replayed.
        assert result.replayed >= 1, result


@pytest.mark.parametrize("first_contact", [False, True], ids=["known-origin", "first-contact"])
def test_what_the_trimmed_log_lost_is_reported(
    servers: Callable[..., RedisServer], tmp_path: Path, first_contact: bool
) -> None:
    """
    Durable mode with a short log (``retention=100`` frames): the worker is
    SIGSTOPped and its connection closed (``CLIENT KILL``) while the producer
    sends thousands of messages, paced so that they take many frames, and
    the log is trimmed. SIGCONT: the worker replays what the log still holds
    and must report the rest as a gap, exactly. ``known-origin``: the worker
    has fired the producer's first messages already; ``first-contact``: the
    producer started (more than the clock skew) after the worker subscribed
    and the worker never heard from it before, so the lost numbers start at 1.
    """
    server = servers()
    count, rate, retention = 4000, 2500.0, 100
    with processes() as procs:
        base = [*base_args(server, True), "--retention", str(retention)]
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        if first_contact:
            time.sleep(1.6)
            worker.pause()
        try:
            if first_contact:
                assert kill_subscribers(server) == 1
            producer = start_producer(procs, base, tmp_path, count=count, rate=rate)
            if not first_contact:
                wait_until(lambda: len(worker.fired()) >= 100, "the worker fired 100 messages")
                worker.pause()
                assert kill_subscribers(server) == 1
            producer.expect("SENT")
        finally:
            worker.resume()
        wait_recovered(server, worker)
        [result], _ = finish([worker], producer, count, True, check_reported)
    with admin(server) as client:
        logged = client.xlen(f"relay:{NAMESPACE}:log")
    assert logged < count / 2, logged  # the log was trimmed
    assert result.lost >= 1 and result.replayed >= 1, result
    assert result.disconnects == result.reconnects == 1, result
    if first_contact:
        assert result.gaps[0]["first_missing"] == 1, result.gaps
    else:
        assert result.gaps[0]["first_missing"] > 1, result.gaps


def test_what_the_producer_dropped_is_reported(
    servers: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """
    Durable mode, Redis SIGKILLed for 0.6 s (its log on disk) while a producer
    with a short queue (``max_queue=200``) streams 2,000 signals/s: it drops
    the oldest of what it cannot publish. A dropped message is in no log, so
    the worker replays what the outage kept from it and reports, exactly,
    what the producer dropped.
    """
    server = servers(appendonly=True)
    count, rate, final = 4000, 2000.0, 20
    with processes() as procs:
        base = base_args(server, True)
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        producer = start_producer(
            procs, base, tmp_path, count=count, rate=rate, max_queue=200, final=final
        )
        wait_until(lambda: len(worker.fired()) >= 500, "the worker fired 500 messages")
        server.stop()  # SIGKILL
        time.sleep(0.6)
        server.start()
        wait_recovered(server, worker)
        producer.expect("SENT")
        producer.tell()
        wait_until(lambda: worker.settled(count + final), "worker settled")
        producer_report = producer.report(terminate=False)
        result = tally(worker.report(), count + final)
    dropped = producer_report["stats"]["dropped"]
    assert dropped >= 1, producer_report["stats"]
    assert producer_report["stats"]["published"] == count + final - dropped
    check_reported(result)
    assert result.lost == result.reported == dropped, (result, dropped)
    assert result.disconnects == result.reconnects == 1, result


@pytest.mark.parametrize("durable", MODES)
def test_threaded_producer_with_refused_sends(
    servers: Callable[..., RedisServer], tmp_path: Path, durable: bool
) -> None:
    """
    4 threads send 20,000 messages unpaced (``n`` split between them) and,
    after each, 2 sends that relay refuses (an unencodable argument, an
    oversized message). Refused sends take no number and concurrent sends
    are numbered in queue order, so no worker sees a gap.
    """
    server = servers()
    count, refused = 20_000, 2
    with processes() as procs:
        base = base_args(server, durable)
        workers = [Worker(f"worker-{i}", base, tmp_path) for i in range(2)]
        procs.extend(workers)
        producer = start_producer(
            procs,
            base,
            tmp_path,
            count=count,
            rate=0,
            threads=4,
            refused=refused,
            max_message_size=4096,
            max_queue=100_000,
        )
        producer.expect("SENT")
        results, producer_report = finish(workers, producer, count, durable)
    assert producer_report["threads"] == 4
    assert producer_report["refused"] == count * refused, producer_report["refused_wrongly"][:5]
    assert producer_report["refused_wrongly"] == []
    for result in results:
        assert (result.fired, result.lost, result.duplicated) == (count, 0, 0), result
        assert result.gaps == [] and result.stats["gaps"] == result.stats["missed"] == 0
        assert result.stats["duplicates"] == result.stats["rejected"] == 0, result.stats
        assert result.disconnects == 0, result


@pytest.mark.parametrize("durable", MODES)
def test_first_messages_of_a_new_producer_lost(
    servers: Callable[..., RedisServer], tmp_path: Path, durable: bool
) -> None:
    """
    No warm-up: a worker subscribes; 1.6 s later (more than the 1 s clock
    skew relay allows) it is SIGSTOPped and Redis closes its connection
    (``CLIENT KILL``), then a new producer sends its first 500 messages.
    SIGCONT: redis-py resubscribes by itself, and the producer sends 50 more.
    The worker's first contact with the producer is at number 501, but the
    producer started numbering after the worker subscribed, so numbers 1 to
    500 were sent to it: pub/sub reports them (first_missing 1), durable
    replays them.
    """
    server = servers()
    count, final = 500, 50
    with processes() as procs:
        base = base_args(server, durable)
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        time.sleep(1.6)
        worker.pause()
        try:
            assert kill_subscribers(server) == 1
            producer = start_producer(procs, base, tmp_path, count=count, rate=0, final=final)
            producer.expect("SENT")
        finally:
            worker.resume()
        wait_recovered(server, worker)
        producer.tell()
        [result], _ = finish([worker], producer, count + final, durable)
    assert result.disconnects == result.reconnects == 1, result
    if durable:
        # The burst came from the log; so may the final ones, if they were
        # logged before the catch-up reached the end of the log.
        assert count <= result.replayed <= count + final, result
    else:
        assert result.lost == count, result
        assert [(g["first_missing"], g["count"]) for g in result.gaps] == [(1, count)]


# -- two bridges of one process ------------------------------------------------------


@pytest.mark.parametrize("durable", MODES)
def test_publishing_handed_over_between_two_bridges_loses_nothing(
    servers: Callable[..., RedisServer], tmp_path: Path, durable: bool
) -> None:
    """
    The producer runs two bridges on the namespace; the first (on a Redis 20
    ms slower per publish) sends 5,000 messages and is stopped while it still
    flushes them, and the second, which takes over, sends 100 more. There is
    no fault at all on the way to the worker, so it must fire all 5,100.
    """
    server = servers()
    count, handover = 5100, 5000
    with processes() as procs:
        base = base_args(server, durable)
        worker = Worker("worker", base, tmp_path)
        procs.append(worker)
        producer = start_producer(procs, base, tmp_path, count=count, rate=0, handover=handover)
        producer.expect("SENT")
        producer_report = producer.report(terminate=False)
        check_producer(producer_report, count)  # every message reached Redis
        wait_until(lambda: count in worker.fired(), "the worker fired the last message")
        wait_quiet(worker)
        result = tally(worker.report(), count)
    first, second = producer_report["bridges"]
    assert (first["published"], second["published"]) == (handover, count - handover)
    # Received on pub/sub, all of them: lost by the receiver's accounting.
    assert result.stats["received"] == count, result.stats
    assert result.reported == result.lost, result  # fails sometimes: unreported
    assert (result.lost, result.duplicated) == (0, 0), (result, result.gaps)

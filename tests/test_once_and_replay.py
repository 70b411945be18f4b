"""
Real processes and a real Redis: a ``scope="once"`` worker killed mid-run, and
a signed frame replayed after more than 200,000 messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from relay import Relay, Signal, wire
from relay.bridge import channel_for, signing_key
from relay.testing import RedisServer

pytestmark = pytest.mark.redis

WORKER = Path(__file__).parent / "procs" / "once_worker.py"
LEASE = 1.0


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


class Worker:
    def __init__(
        self, server: RedisServer, namespace: str, tmp: Path, lease: float = LEASE
    ) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                server.url,
                namespace,
                str(tmp / "journal"),
                str(tmp / "hung"),
                str(lease),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "READY"

    def stats(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def workers(private_redis: RedisServer, namespace: str, tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def journal(tmp: Path) -> list[tuple[str, int, int]]:
    path = tmp / "journal"
    if not path.exists():
        return []
    lines = path.read_text().split()
    return [(lines[i], int(lines[i + 1]), int(lines[i + 2])) for i in range(0, len(lines), 3)]


def send_jobs(server: RedisServer, namespace: str, numbers: range) -> None:
    sig = Signal(name="once.job")
    with Relay(server.url, namespace=namespace) as bridge:
        bridge.register(sig)
        for n in numbers:
            sig.send(None, n=n)
        assert bridge.flush(30)
    bridge.close()


def test_a_once_worker_killed_mid_run_is_taken_over_by_another(
    private_redis: RedisServer, namespace: str, tmp_path: Path, workers: list[Worker]
) -> None:
    workers.extend(Worker(private_redis, namespace, tmp_path) for _ in range(2))
    send_jobs(private_redis, namespace, range(1, 21))
    wait_until(lambda: ("start", 5) in {(e, n) for e, n, _ in journal(tmp_path)})
    (hung_pid,) = [pid for e, n, pid in journal(tmp_path) if (e, n) == ("start", 5)]
    hung = next(w for w in workers if w.process.pid == hung_pid)
    survivor = next(w for w in workers if w is not hung)
    hung.process.send_signal(signal.SIGKILL)
    hung.process.wait()
    wait_until(lambda: ("done", 5) in {(e, n) for e, n, _ in journal(tmp_path)})
    wait_until(lambda: sum(1 for e, _, _ in journal(tmp_path) if e == "done") == 20)
    stats = survivor.stats()
    events = journal(tmp_path)
    done = Counter(n for e, n, _ in events if e == "done")
    started = Counter(n for e, n, _ in events if e == "start")
    # Every message ran to the end exactly once; only 5 was started twice.
    assert done == Counter(range(1, 21))
    assert started == Counter([*range(1, 21), 5])
    assert [pid for e, n, pid in events if (e, n) == ("done", 5)] == [survivor.process.pid]
    assert (stats["once_retried"], stats["once_lost"]) == (1, 0)
    client = redis.Redis.from_url(private_redis.url)
    assert client.zcard(f"relay:{namespace}:once:leases") == 0
    client.close()


def test_with_short_leases_and_nobody_dying_each_message_runs_exactly_once(
    private_redis: RedisServer, namespace: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """Renewals racing the done mark must never let it expire (and the message run again)."""
    (tmp_path / "hung").touch()  # nobody hangs on message 5
    workers.extend(Worker(private_redis, namespace, tmp_path, lease=0.3) for _ in range(2))
    send_jobs(private_redis, namespace, range(1, 2001))
    wait_until(lambda: sum(1 for e, _, _ in journal(tmp_path) if e == "done") >= 2000)
    time.sleep(1.5)  # past several lease periods: a done mark that expired would show now
    stats = [worker.stats() for worker in workers]
    events = journal(tmp_path)
    assert Counter(n for e, n, _ in events if e == "start") == Counter(range(1, 2001))
    assert Counter(n for e, n, _ in events if e == "done") == Counter(range(1, 2001))
    assert sum(s["once_retried"] for s in stats) == 0
    assert sum(s["once_lost"] for s in stats) == 0


def test_a_once_run_no_live_process_can_take_over_is_reported(
    private_redis: RedisServer, namespace: str, tmp_path: Path, workers: list[Worker]
) -> None:
    workers.append(Worker(private_redis, namespace, tmp_path))
    send_jobs(private_redis, namespace, range(4, 7))
    wait_until(lambda: ("start", 5) in {(e, n) for e, n, _ in journal(tmp_path)})
    workers[0].kill()
    # A process that never had the message: it cannot run it, but it reports it.
    workers.append(Worker(private_redis, namespace, tmp_path))
    client = redis.Redis.from_url(private_redis.url)
    wait_until(lambda: client.zcard(f"relay:{namespace}:once:leases") == 0)
    client.close()
    stats = workers[1].stats()
    assert stats["once_lost"] == 1
    assert Counter(n for e, n, _ in journal(tmp_path) if e == "done") == Counter([4])


def test_a_signed_frame_replayed_after_220000_messages_is_refused(
    private_redis: RedisServer, namespace: str
) -> None:
    secret = "s3cret"
    key = signing_key(namespace, secret)
    fired = 0

    def count(sender: object, **kwargs: object) -> None:
        nonlocal fired
        fired += 1

    sig = Signal(name="replay.target")
    sig.connect(count, weak=False)
    bridge = Relay(private_redis.url, namespace=namespace, secret=secret)
    bridge.register(sig)
    channel = channel_for(namespace, "replay.target")
    client = redis.Redis.from_url(private_redis.url)
    kwargs = wire.encode_kwargs({"x": 1})
    per_frame, total = 200, 220_000

    def frame(first: int) -> bytes:
        return wire.encode_frame(
            [
                (os.urandom(16), "sender:1:ab", seq, "replay.target", None, time.time(), kwargs)
                for seq in range(first, first + per_frame)
            ],
            key=key,
            started_at=time.time() - 10,
        )

    with bridge:
        captured = frame(1)
        client.publish(channel, captured)
        pipe = client.pipeline(transaction=False)
        for first in range(per_frame + 1, total + 1, per_frame):
            pipe.publish(channel, frame(first))
            if len(pipe) >= 100:
                pipe.execute()
                wait_until(lambda f=first: fired >= f - per_frame * 50, timeout=60)
        pipe.execute()
        wait_until(lambda: fired == total, timeout=120)
        recent = frame(total - per_frame + 1)  # the last numbers: inside the window
        client.publish(channel, captured)  # a replay from long ago, still signed and fresh
        client.publish(channel, recent)
        wait_until(lambda: bridge.stats()["rejected"] + bridge.stats()["duplicates"] >= 400)
        stats = bridge.stats()
    client.close()
    assert fired == total
    assert (stats["rejected"], stats["duplicates"], stats["gaps"]) == (per_frame, per_frame, 0)

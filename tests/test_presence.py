"""
Presence: heartbeats, ``peers()`` and ``relay workers``, in one process and
across real worker processes (one of them SIGKILLed), on a private Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from relay import AsyncRelay, Relay, Signal, __version__
from relay.cli import workers_table
from relay.core import PRESENCE_RETENTION
from relay.origin import origin_id
from relay.presence import (
    GONE_AFTER,
    LATENCY_BUCKETS,
    SignalMeter,
    decode_peer,
    encode_heartbeat,
    heartbeat_kwargs,
    latency_quantile,
    presence_key,
)
from relay.transport.base import Subscription, Transport, TransportError
from relay.wire import WireError, derive_key, frame_prefix

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def record(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "bridge": 1,
        "namespace": "ns",
        "kind": "Relay",
        "worker_id": "w1",
        "sends": ["a.b"],
        "hears": ["a.b"],
        "started_at": 1000.0,
        "heartbeat": 1.0,
        "stopped": False,
        "stats": {"published": 3},
        "signals": {},
    }
    fields.update(overrides)
    return heartbeat_kwargs(**fields)


# -- heartbeats, pure ----------------------------------------------------------


def test_a_heartbeat_round_trips_and_is_judged_by_its_age() -> None:
    data = encode_heartbeat(frame_prefix("h:1:ab"), 7, 2000.0, record(), None)
    peer = decode_peer(data, now=2000.5)
    assert (peer.id, peer.origin, peer.worker_id, peer.kind) == (
        "h:1:ab#1",
        "h:1:ab",
        "w1",
        "Relay",
    )
    assert (peer.sends, peer.hears, peer.started_at, peer.last_seen) == (
        ("a.b",),
        ("a.b",),
        1000.0,
        2000.0,
    )
    assert peer.version == __version__ and peer.pid == os.getpid()
    assert peer.stats == {"published": 3} and peer.state == "alive"
    # Gone once GONE_AFTER heartbeats are overdue, beyond the clock-skew allowance.
    limit = 2000.0 + GONE_AFTER * 1.0 + 1.0
    assert decode_peer(data, now=limit).state == "alive"
    assert decode_peer(data, now=limit + 0.01).state == "gone"
    assert decode_peer(data, now=limit + 0.01, clock_skew=5.0).state == "alive"
    stopped = encode_heartbeat(frame_prefix("h:1:ab"), 8, 2000.0, record(stopped=True), None)
    assert decode_peer(stopped, now=2000.0).state == "stopped"


def test_heartbeats_are_signed_like_signals() -> None:
    key = derive_key("s3cret")
    data = encode_heartbeat(frame_prefix("h:1:ab"), 1, 10.0, record(), key)
    assert decode_peer(data, now=10.0, keys=[key]).alive
    with pytest.raises(WireError, match="signed frame but no secret"):
        decode_peer(data, now=10.0)
    with pytest.raises(WireError, match="bad signature"):
        decode_peer(data, now=10.0, keys=[derive_key("other")])
    forged = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(WireError, match="bad signature"):
        decode_peer(forged, now=10.0, keys=[key])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00garbage",
        encode_heartbeat(frame_prefix("o"), 1, 1.0, {"v": 2}, None),
        encode_heartbeat(frame_prefix("o"), 1, 1.0, {"v": 1, "heartbeat": 1.0}, None),
        encode_heartbeat(frame_prefix("o"), 1, 1.0, {**record(), "pid": "1"}, None),
        encode_heartbeat(frame_prefix("o"), 1, 1.0, {**record(), "signals": {"a": [1]}}, None),
        encode_heartbeat(
            frame_prefix("o"), 1, 1.0, {**record(), "signals": {"a": [1, 1, 1, 0, [1], 0.0]}}, None
        ),
        encode_heartbeat(frame_prefix("o"), 1, 1.0, {**record(), "heartbeat": float("nan")}, None),
    ],
)
def test_anything_but_a_heartbeat_is_refused_with_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_peer(data, now=1.0)


def test_the_latency_histogram_and_its_quantiles() -> None:
    meter = SignalMeter()

    class Sent:
        def __init__(self, sent_at: float) -> None:
            self.sent_at = sent_at

    now = 100.0
    # 0.2 ms, 0.7 ms, 3 ms, 3 ms, 20 s (overflow), and a sender clock ahead of ours.
    delays = [0.0002, 0.0007, 0.003, 0.003, 20.0, -1.0]
    meter.observe(now, [Sent(now - d) for d in delays])  # type: ignore[misc]
    assert meter.received == 6
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    expected[0] = 2  # 0.2 ms and the negative one, taken as 0
    expected[1] = 1
    expected[3] = 2
    expected[-1] = 1
    assert meter.latency == expected
    assert meter.latency_sum == pytest.approx(0.0002 + 0.0007 + 0.006 + 20.0)
    assert latency_quantile([0] * len(expected), 0.5) is None
    # Half of 6 is 3: the third lies in the (0.0005, 0.001] bucket, at its top.
    assert latency_quantile(meter.latency, 0.5) == pytest.approx(0.001)
    assert latency_quantile(meter.latency, 0.99) == LATENCY_BUCKETS[-1]
    # Linear inside a bucket, as histogram_quantile does.
    one_bucket = [0, 4] + [0] * (len(LATENCY_BUCKETS) - 1)
    assert latency_quantile(one_bucket, 0.5) == pytest.approx(0.00075)


# -- bridges in one process ----------------------------------------------------


def test_peers_lists_every_running_bridge_with_what_it_sends_and_hears(
    client: fakeredis.FakeRedis,
) -> None:
    listened = Signal(name="p.heard")
    listened.connect(lambda sender, **kw: None, weak=False)
    a = Relay(client=client, namespace="ns", worker_id="listener", heartbeat=0.05)
    a.register(listened)
    b = Relay(client=client, namespace="ns", heartbeat=0.05)
    sent = b.register(Signal(name="p.sent"))
    other = Relay(client=client, namespace="other", heartbeat=0.05)
    with a, b, other:
        peers = {p.worker_id: p for p in a.peers()}
        assert set(peers) == {"listener", None}  # the other namespace is not ours
        assert peers["listener"].hears == ("p.heard",)
        assert peers["listener"].sends == ("p.heard",)
        assert peers[None].sends == ("p.sent",) and peers[None].hears == ()
        assert peers["listener"].kind == "Relay" and peers["listener"].alive
        assert len({p.id for p in peers.values()}) == 2
        assert all(p.origin == origin_id() for p in peers.values())  # one process
        for n in range(5):
            sent.send(None, n=n)
        assert b.flush(5)

        def counted() -> bool:
            mine = {p.worker_id: p for p in a.peers()}
            return mine[None].stats["published"] == 5

        wait_until(counted, "the count in the next heartbeat")
        mine = {p.worker_id: p for p in a.peers()}
        assert mine[None].signals["p.sent"].sent == 5
        assert mine[None].signals["p.sent"].received == 0
        assert mine["listener"].signals["p.heard"].sent == 0
        # Heartbeats are no signals: nothing was received, lost or rejected for them.
        assert a.stats()["received"] == a.stats()["gaps"] == a.stats()["rejected"] == 0
    # Stopped bridges say so at once.
    gone = {p.worker_id: p.state for p in a.peers(include_gone=True)}
    assert gone == {"listener": "stopped", None: "stopped"}
    assert a.peers() == []
    a.close()
    b.close()
    other.close()


def test_heartbeat_zero_announces_nothing(client: fakeredis.FakeRedis) -> None:
    with Relay(client=client, namespace="ns", heartbeat=0) as bridge:
        assert bridge.peers(include_gone=True) == []
        assert client.exists(presence_key("ns")) == 0


def test_the_presence_key_expires_unless_someone_heartbeats(client: fakeredis.FakeRedis) -> None:
    with Relay(client=client, namespace="ns", heartbeat=10):
        ttl = client.pttl(presence_key("ns"))
        assert PRESENCE_RETENTION * 1000 - 5000 < ttl <= PRESENCE_RETENTION * 1000


def test_records_of_long_gone_peers_are_forgotten(client: fakeredis.FakeRedis) -> None:
    key = presence_key("ns")
    old = encode_heartbeat(frame_prefix("old:1:aa"), 1, time.time() - 2 * PRESENCE_RETENTION,
                           record(), None)  # fmt: skip
    recent = encode_heartbeat(frame_prefix("new:1:aa"), 1, time.time() - 60, record(), None)
    client.hset(key, mapping={"old:1:aa#1": old, "new:1:aa#1": recent, "junk#1": b"junk"})
    with Relay(client=client, namespace="ns", heartbeat=10) as bridge:
        members = {m.decode() for m in client.hkeys(key)}
        # The first heartbeat sweeps: the old record goes; what it cannot read stays.
        assert "old:1:aa#1" not in members
        assert {"new:1:aa#1", "junk#1"} <= members
        states = {p.origin: p.state for p in bridge.peers(include_gone=True)}
        assert states == {"new:1:aa": "gone", origin_id(): "alive"}


def test_records_that_are_not_heartbeats_of_the_namespace_are_ignored_with_a_warning(
    client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    key = presence_key("ns")
    unsigned = encode_heartbeat(frame_prefix("x:1:aa"), 1, time.time(), record(), None)
    client.hset(key, mapping={"x:1:aa#1": unsigned, "junk#1": b"\xc1"})
    with Relay(client=client, namespace="ns", heartbeat=10, secret="s") as bridge:
        with caplog.at_level(logging.WARNING, logger="relay.bridge"):
            peers = bridge.peers(include_gone=True)
        assert [p.origin for p in peers] == [origin_id()]
    assert "ignored the presence record of x:1:aa#1" in caplog.text
    assert "unsigned frame" in caplog.text
    assert "ignored the presence record of junk#1" in caplog.text


def test_worker_id_names_a_bridge_without_durable_mode(client: fakeredis.FakeRedis) -> None:
    with Relay(client=client, namespace="ns", worker_id="web-1") as bridge:
        assert [p.worker_id for p in bridge.peers()] == ["web-1"]
    for bad in ("", 3):
        with pytest.raises(ValueError, match="worker_id must be a non-empty string"):
            Relay(client=client, namespace="ns", worker_id=bad)  # type: ignore[arg-type]
    for heartbeat in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="heartbeat must be a number of seconds"):
            Relay(client=client, namespace="ns", heartbeat=heartbeat)


def test_a_broker_down_at_a_heartbeat_is_logged_and_the_next_one_goes_out(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    reader = redis.Redis.from_url(redis_url)
    with Relay(redis_url, namespace=namespace, heartbeat=0.05) as bridge:
        member = f"{origin_id()}#{bridge._number}"
        real = bridge.transport.announce  # type: ignore[attr-defined]
        failures = [3]

        def flaky(*args: Any) -> None:
            if failures[0]:
                failures[0] -= 1
                raise TransportError("broker away")
            real(*args)

        before = reader.hget(presence_key(namespace), member)
        with caplog.at_level(logging.WARNING, logger="relay.bridge"):
            bridge.transport.announce = flaky  # type: ignore[attr-defined]
            wait_until(lambda: failures[0] == 0, "three failed heartbeats")
            wait_until(
                lambda: reader.hget(presence_key(namespace), member) not in (None, before),
                "a heartbeat after the failures",
            )
        assert bridge._presence_thread is not None and bridge._presence_thread.is_alive()
    assert "could not send its heartbeat (broker away)" in caplog.text


class _BareTransport(Transport):
    """A transport with only the required capability: no presence."""

    description = "a bare broker"
    max_payload = 1 << 20

    def publish_many(self, items: Any, log: Any = None) -> None:
        pass

    def subscription(self) -> Subscription:
        raise NotImplementedError

    def check(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_transport_without_presence_is_named(caplog: pytest.LogCaptureFixture) -> None:
    bridge = Relay(transport=_BareTransport(), namespace="ns")
    with caplog.at_level(logging.WARNING, logger="relay.bridge"):
        assert bridge._presence_on() is False
    assert "relay presence is off: a bare broker keeps no presence" in caplog.text
    with pytest.raises(TypeError, match="a bare broker keeps no presence"):
        bridge.peers()
    assert Relay(transport=_BareTransport(), namespace="ns", heartbeat=0)._presence_on() is False


def test_async_relay_heartbeats_too(redis_url: str, namespace: str) -> None:
    async def main() -> None:
        heard = Signal(name="p.async")
        heard.connect(lambda sender, **kw: None, weak=False)
        bridge = AsyncRelay(redis_url, namespace=namespace, worker_id="aio", heartbeat=0.05)
        bridge.register(heard)
        threaded = Relay(redis_url, namespace=namespace, heartbeat=0.05)
        sender = threaded.register(Signal(name="p.async.2"))
        async with bridge:
            with threaded:
                peers = {p.worker_id: p for p in await bridge.peers()}
                assert peers["aio"].kind == "AsyncRelay" and peers["aio"].hears == ("p.async",)
                assert peers[None].kind == "Relay"
                sender.send(None)
        states = {p.worker_id: p.state for p in await bridge.peers(include_gone=True)}
        assert states == {"aio": "stopped", None: "stopped"}

    asyncio.run(main())


# -- real worker processes -----------------------------------------------------


@pytest.fixture
def workers(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for n in (1, 2, 3):
        log = open(tmp_path / f"w{n}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "relay", "worker", "tests.procs.presence_app",
                    "--redis-url", redis_url, "--namespace", namespace,
                    "--worker-id", f"w{n}", "--heartbeat", "0.3",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def relay_workers(redis_url: str, namespace: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "workers", "--redis-url", redis_url,
         "--namespace", namespace, *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_peers_and_relay_workers_show_real_workers_and_one_sigkilled_turns_gone(
    redis_url: str, namespace: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    observer = Relay(redis_url, namespace=namespace, heartbeat=0)
    ping = observer.register(Signal(name="presence.ping"))

    def alive() -> dict[str | None, Any]:
        return {p.worker_id: p for p in observer.peers()}

    wait_until(lambda: len(alive()) == 3, "three live workers")
    pids = {p.worker_id: p.pid for p in alive().values()}
    assert pids == {f"w{n}": proc.pid for n, proc in enumerate(workers, 1)}
    with observer:
        for n in range(25):
            ping.send(None, n=n)
        assert observer.flush(10)

        def all_heard() -> bool:
            return all(p.stats["fired"] == 25 for p in alive().values())

        wait_until(all_heard, "every worker's heartbeat to count 25 calls")
    listed = json.loads(relay_workers(redis_url, namespace, "--json"))
    assert sorted(w["worker_id"] for w in listed) == ["w1", "w2", "w3"]
    assert all(w["state"] == "alive" for w in listed)
    assert all(w["stats"]["received"] == 25 for w in listed)
    assert all(w["signals"]["presence.ping"]["received"] == 25 for w in listed)
    assert all(w["signals"]["presence.ping"]["fired"] == 25 for w in listed)
    assert all(sum(w["signals"]["presence.ping"]["latency"]) == 25 for w in listed)
    assert all(w["stats"]["gaps"] == w["stats"]["rejected"] == 0 for w in listed)
    assert all(w["stats"]["listener_errors"] == 0 for w in listed)
    assert all(w["hears"] == ["presence.ping"] for w in listed)

    workers[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    workers[1].wait(10)
    wait_until(lambda: set(alive()) == {"w1", "w3"}, "w2 to be gone")
    everyone = {p.worker_id: p for p in observer.peers(include_gone=True)}
    assert everyone["w2"].state == "gone"
    assert everyone["w2"].last_seen <= killed_at
    # It missed GONE_AFTER heartbeats before it was called gone.
    assert time.time() - everyone["w2"].last_seen > GONE_AFTER * 0.3
    table = relay_workers(redis_url, namespace)
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(lines) == {"w1", "w2", "w3"}
    assert "gone (last seen" in lines["w2"] and "alive" in lines["w1"]
    assert lines["w1"].split()[8:11] == ["0", "25", "25"]  # PUBLISHED, RECEIVED, FIRED

    # A worker stopped with SIGTERM says so in its last heartbeat.
    workers[2].send_signal(signal.SIGTERM)
    assert workers[2].wait(30) == 0
    everyone = {p.worker_id: p for p in observer.peers(include_gone=True)}
    assert everyone["w3"].state == "stopped"
    observer.close()


def test_the_workers_table_lays_out_each_peer() -> None:
    now = 5000.0
    data = encode_heartbeat(frame_prefix("h:9:ab"), 1, now - 100, record(), None)
    peer = decode_peer(data, now=now)
    (header, row) = workers_table([peer], now)
    assert header.split()[:5] == ["WORKER", "KIND", "HOST", "PID", "STATE"]
    assert row.split()[:4] == ["w1", "Relay", peer.host, str(os.getpid())]
    assert "gone (last seen 2m ago)" in row  # 100 s

"""
relay.contrib.prometheus: every stats() counter and the per-signal meters,
scraped over HTTP and read with prometheus_client's own parser; from a bridge
of this process, from ``relay worker --metrics-port``, and from the Django
view and the ASGI app of the README.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families

from relay import AsyncRelay, Relay, Signal, wire
from relay.bridge import STAT_NAMES, channel_for
from relay.contrib.prometheus import (
    LATENCY_METRIC,
    SIGNAL_METRICS,
    STAT_METRICS,
    MetricsServerError,
    RelayCollector,
    register,
    serve_metrics,
    unregister,
)
from relay.presence import LATENCY_BUCKETS
from relay.testing import free_port
from relay.transport.redis import RedisTransport
from relay.usage import UsageError

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0
FOREIGN = "elsewhere:1:prometheus"
BOUNDS = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers -----------------------------------------------------------------------


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, read by prometheus_client's parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def scrape(port: int, path: str = "/metrics") -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def histogram(samples: Samples, namespace: str, signal: str) -> tuple[list[float], float, float]:
    """The cumulative bucket counts (over BOUNDS), the count and the sum of a latency histogram."""
    labels = {"namespace": namespace, "signal": signal}
    buckets = [value(samples, f"{LATENCY_METRIC}_bucket", le=le, **labels) for le in BOUNDS]
    count = value(samples, f"{LATENCY_METRIC}_count", **labels)
    total = value(samples, f"{LATENCY_METRIC}_sum", **labels)
    return buckets, count, total


def assert_cumulative(buckets: list[float], count: float) -> None:
    assert all(a <= b for a, b in itertools.pairwise(buckets)), buckets
    assert buckets[-1] == count


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def foreign(name: str, seq: int, sent_at: float, **kwargs: Any) -> bytes:
    """A frame as another process would publish it, sent at ``sent_at``."""
    message = (os.urandom(16), FOREIGN, seq, name, None, sent_at, wire.encode_kwargs(kwargs))
    return wire.encode_frame([message])


def fake_bridge(server: fakeredis.FakeServer, namespace: str) -> Relay:
    client = fakeredis.FakeRedis(server=server)
    return Relay(transport=RedisTransport(client=client), namespace=namespace)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def metrics_server() -> Iterator[Callable[[CollectorRegistry], int]]:
    """Start ``prometheus_client.start_http_server`` on a free port; stop it after the test."""
    from prometheus_client import start_http_server

    started: list[Any] = []

    def start(registry: CollectorRegistry) -> int:
        port = free_port()
        server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
        started.append(server)
        return port

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


# -- the names -----------------------------------------------------------------------


def test_every_stats_counter_has_a_conventional_name() -> None:
    assert set(STAT_METRICS) == set(STAT_NAMES)
    names = [metric for metric, _ in (*STAT_METRICS.values(), *SIGNAL_METRICS.values())]
    assert len(set(names)) == len(names)
    for metric in names:
        assert NAME.match(metric) and metric.startswith("relay_"), metric
        assert metric.endswith("_total"), metric
    assert LATENCY_METRIC == "relay_delivery_latency_seconds"
    assert STAT_METRICS["published"][0] == "relay_messages_published_total"
    assert STAT_METRICS["fired"][0] == "relay_receiver_calls_total"


def test_a_counter_stats_gains_is_exported_even_before_it_is_named(
    server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = fake_bridge(server, "ns")
    counts = bridge.stats()
    monkeypatch.setattr(bridge, "stats", lambda: {**counts, "brand_new": 3})
    samples = parse(generate_latest(RelayCollector(bridge)).decode())
    assert value(samples, "relay_brand_new_total", namespace="ns") == 3
    for name in STAT_NAMES:
        assert value(samples, STAT_METRICS[name][0], namespace="ns") == 0


# -- a bridge of this process ------------------------------------------------------------


def test_two_bridges_scraped_over_http(
    server: fakeredis.FakeServer,
    namespace: str,
    metrics_server: Callable[[CollectorRegistry], int],
) -> None:
    other = f"{namespace}b"
    order_placed = Signal(name="shop.order_placed")
    failing = Signal(name="shop.failing")
    elsewhere = Signal(name="shop.order_placed")  # the same name, on the other namespace
    calls: list[str] = []

    def bill(sender: Any, **kwargs: Any) -> None:
        calls.append("bill")

    def ship(sender: Any, **kwargs: Any) -> None:
        calls.append("ship")

    def explode(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("fails on purpose")

    order_placed.connect(bill, weak=False)
    order_placed.connect(ship, weak=False)
    failing.connect(explode, weak=False)
    elsewhere.connect(bill, weak=False)

    first, second = fake_bridge(server, namespace), fake_bridge(server, other)
    first.register(order_placed)
    first.register(failing)
    second.register(elsewhere)
    registry = CollectorRegistry()
    collector = register(first, registry)
    assert register(second, registry) is collector
    assert register(first, registry) is collector  # again: a no-op
    assert collector.bridges == (first, second)
    port = metrics_server(registry)

    with first, second:
        for number in range(5):
            order_placed.send(sender=None, number=number)
        for number in range(2):
            elsewhere.send(sender=None, number=number)
        assert first.flush(10) and second.flush(10)
        client = fakeredis.FakeRedis(server=server)
        now = time.time()
        # Three sent 3 s ago (the le=5.0 bucket), one "from the future" (latency 0).
        for seq in (1, 2, 3):
            client.publish(channel_for(namespace, "shop.order_placed"), foreign(
                "shop.order_placed", seq, now - 3.0, number=seq))  # fmt: skip
        client.publish(
            channel_for(namespace, "shop.order_placed"),
            foreign("shop.order_placed", 4, now + 60.0, number=4),
        )
        for seq in (1, 2):
            client.publish(channel_for(namespace, "shop.failing"), foreign(
                "shop.failing", seq, now - 3.0))  # fmt: skip
        client.publish(channel_for(other, "shop.order_placed"), foreign(
            "shop.order_placed", 1, now - 3.0))  # fmt: skip
        wait_until(
            lambda: (
                (first.stats()["received"], first.stats()["fired"]) == (6, 10)
                and (second.stats()["received"], second.stats()["fired"]) == (1, 1)
            ),
            "every injected message received and fired",
        )
        samples = scrape(port)
        stats = {namespace: first.stats(), other: second.stats()}

    for ns, counts in stats.items():
        for name in STAT_NAMES:
            assert value(samples, STAT_METRICS[name][0], namespace=ns) == counts[name], name
    a, b = {"namespace": namespace}, {"namespace": other}
    assert value(samples, "relay_messages_published_total", **a) == 5
    assert value(samples, "relay_messages_received_total", **a) == 6
    assert value(samples, "relay_receiver_calls_total", **a) == 10
    assert value(samples, "relay_receiver_errors_total", **a) == 2
    assert value(samples, "relay_messages_rejected_total", **a) == 0
    assert value(samples, "relay_messages_duplicate_total", **a) == 0
    assert value(samples, "relay_gaps_total", **a) == 0
    assert value(samples, "relay_messages_published_total", **b) == 2
    assert value(samples, "relay_messages_received_total", **b) == 1
    assert value(samples, "relay_receiver_calls_total", **b) == 1
    assert value(samples, "relay_receiver_errors_total", **b) == 0

    per_signal = {
        (namespace, "shop.order_placed"): (5, 4, 8, 0),
        (namespace, "shop.failing"): (0, 2, 2, 2),
        (other, "shop.order_placed"): (2, 1, 1, 0),
    }
    for (ns, signal), expected in per_signal.items():
        labels = {"namespace": ns, "signal": signal}
        got = tuple(
            value(samples, SIGNAL_METRICS[field][0], **labels)
            for field in ("sent", "received", "fired", "errors")
        )
        assert got == expected, (ns, signal)
        buckets, count, total = histogram(samples, ns, signal)
        assert_cumulative(buckets, count)
        assert count == expected[1]

    five = BOUNDS.index("5.0")
    buckets, count, total = histogram(samples, namespace, "shop.order_placed")
    assert buckets[0] == 1  # le=0.0005: the message from the future
    assert buckets[five - 1] == 1 and buckets[five] == 4  # le=2.5, le=5.0
    assert 9.0 <= total < 15.0
    buckets, count, total = histogram(samples, namespace, "shop.failing")
    assert buckets[five - 1] == 0 and buckets[five] == 2
    assert 6.0 <= total < 10.0


def test_bridges_of_one_namespace_add_up(server: fakeredis.FakeServer, namespace: str) -> None:
    one, two = Signal(name="a.one"), Signal(name="a.two")
    first, second = fake_bridge(server, namespace), fake_bridge(server, namespace)
    first.register(one)
    second.register(two)
    collector = RelayCollector(first, second, first)
    assert collector.bridges == (first, second)
    with first, second:
        for _ in range(3):
            one.send(sender=None)
        two.send(sender=None)
        assert first.flush(10) and second.flush(10)
        samples = parse(generate_latest(collector).decode())
    assert value(samples, "relay_messages_published_total", namespace=namespace) == 4
    sent = SIGNAL_METRICS["sent"][0]
    assert value(samples, sent, namespace=namespace, signal="a.one") == 3
    assert value(samples, sent, namespace=namespace, signal="a.two") == 1
    assert collector.remove(second) and not collector.remove(second)
    samples = parse(generate_latest(collector).decode())
    assert value(samples, "relay_messages_published_total", namespace=namespace) == 3
    assert ("relay_signal_messages_sent_total", frozenset(
        {("namespace", namespace), ("signal", "a.two")})) not in samples  # fmt: skip


def test_register_shares_one_collector_per_registry(server: fakeredis.FakeServer) -> None:
    bridge = fake_bridge(server, "ns")
    registry = CollectorRegistry()
    collector = register(bridge, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(RelayCollector())
    assert unregister(bridge, registry) and not unregister(bridge, registry)
    assert collector.bridges == ()
    assert register(bridge, registry) is collector
    with pytest.raises(TypeError, match="relay bridge"):
        collector.add("not a bridge")  # type: ignore[arg-type]


def test_serve_metrics_returns_at_once_and_serves(server: fakeredis.FakeServer) -> None:
    bridge = fake_bridge(server, "ns")
    registry = CollectorRegistry()
    started = time.monotonic()
    httpd, thread = serve_metrics(bridge, 0, registry=registry)
    try:
        assert time.monotonic() - started < 5
        assert thread.daemon and thread.is_alive()
        samples = scrape(httpd.server_address[1])
        assert value(samples, "relay_messages_published_total", namespace="ns") == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_serve_metrics_on_a_port_in_use_names_the_port(server: fakeredis.FakeServer) -> None:
    bridge = fake_bridge(server, "ns")
    registry = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=f"port {port} is already in use") as info:
            serve_metrics(bridge, port, "127.0.0.1", registry=registry)
    assert isinstance(info.value, OSError) and isinstance(info.value, UsageError)
    # Nothing is left registered by the failed attempt.
    assert not unregister(bridge, registry)


# -- without prometheus_client -------------------------------------------------------------

BLOCKED = "import sys\nsys.modules['prometheus_client'] = None\n"


def test_importing_without_prometheus_client_says_what_to_install() -> None:
    code = BLOCKED + (
        "try:\n    import relay.contrib.prometheus\n"
        "except ImportError as exc:\n    print(exc)\nelse:\n    print('imported')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pip install signal-relay[prometheus]" in result.stdout


def test_worker_without_prometheus_client_fails_in_one_line(redis_url: str, namespace: str) -> None:
    code = BLOCKED + "from relay.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "worker", "tests.procs.metrics_app:SIGNALS",
         "--redis-url", redis_url, "--namespace", namespace, "--metrics-port", "9"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("relay: ")
    assert "pip install signal-relay[prometheus]" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_on_a_port_in_use_fails_in_one_line(redis_url: str, namespace: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "relay", "worker", "tests.procs.metrics_app:SIGNALS",
             "--redis-url", redis_url, "--namespace", namespace, "--metrics-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"relay: cannot serve Prometheus metrics: port {port} is already in use" in (
        result.stderr
    )


# -- relay worker --metrics-port ------------------------------------------------------------


@pytest.fixture
def worker(
    redis_url: str, namespace: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "relay", "worker", "tests.procs.metrics_app:SIGNALS",
             "--redis-url", redis_url, "--namespace", namespace,
             "--metrics-port", str(port), "--heartbeat", "0.5"],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield process, port, log
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_worker_serves_its_metrics(
    worker: tuple[subprocess.Popen[bytes], int, Path], redis_url: str, namespace: str
) -> None:
    from tests.procs.metrics_app import CALLS, ERRORS

    process, port, log = worker
    client = redis.Redis.from_url(redis_url)
    channels = [channel_for(namespace, name) for name in CALLS]

    def subscribed() -> bool:
        assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
        counts = dict(client.pubsub_numsub(*channels))
        return all(counts.get(channel.encode(), 0) >= 1 for channel in channels)

    try:
        wait_until(subscribed, "the worker to subscribe")
    finally:
        client.close()

    sends = {"metrics.order_placed": 7, "metrics.failing": 3}
    total = sum(sends.values())
    calls = sum(CALLS[name] * count for name, count in sends.items())
    errors = sum(ERRORS[name] * count for name, count in sends.items())
    sender = Relay(redis_url, namespace=namespace)
    signals = {name: sender.register(Signal(name=name)) for name in sends}
    with sender:
        for name, count in sends.items():
            for number in range(count):
                signals[name].send(sender="test", number=number)
        assert sender.flush(10)

    last: dict[str, Any] = {}

    def delivered() -> bool:
        assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
        try:
            last["samples"] = samples = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            return False
        ns = {"namespace": namespace}
        return (
            value(samples, "relay_messages_received_total", **ns) >= total
            and value(samples, "relay_receiver_calls_total", **ns) >= calls
        )

    wait_until(delivered, f"{total} messages received by the worker")
    samples = last["samples"]
    ns = {"namespace": namespace}
    assert value(samples, "relay_messages_received_total", **ns) == total == 10
    assert value(samples, "relay_receiver_calls_total", **ns) == calls == 17
    assert value(samples, "relay_receiver_errors_total", **ns) == errors == 3
    for name in ("published", "dropped", "duplicates", "rejected", "gaps", "missed"):
        assert value(samples, STAT_METRICS[name][0], **ns) == 0, name
    for name in STAT_NAMES:
        assert (STAT_METRICS[name][0], frozenset(ns.items())) in samples, name
    for name, count in sends.items():
        labels = {"namespace": namespace, "signal": name}
        assert value(samples, "relay_signal_messages_sent_total", **labels) == 0
        assert value(samples, "relay_signal_messages_received_total", **labels) == count
        assert value(samples, "relay_signal_receiver_calls_total", **labels) == (
            CALLS[name] * count
        )
        assert value(samples, "relay_signal_receiver_errors_total", **labels) == (
            ERRORS[name] * count
        )
        buckets, observed, seconds = histogram(samples, namespace, name)
        assert_cumulative(buckets, observed)
        assert observed == count
        assert 0.0 <= seconds < DEADLINE * count


# -- the README's Django view and ASGI mount ------------------------------------------------------


def test_the_django_view_serves_the_metrics(redis_url: str, namespace: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.procs.metrics_django_run", redis_url, namespace, "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout.strip().splitlines()[-1])
    assert response["status"] == 200
    assert response["content_type"].startswith("text/plain")
    samples = parse(response["body"])
    assert value(samples, "relay_messages_published_total", namespace=namespace) == 3
    assert value(
        samples, "relay_signal_messages_sent_total", namespace=namespace,
        signal="metrics.order_placed",
    ) == 3  # fmt: skip


async def call_asgi(
    app: Callable[..., Awaitable[None]], path: str
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One GET through an ASGI app: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop(0)
        await asyncio.Event().wait()  # as a server does until the client goes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {name.lower(): data for name, data in start["headers"]}
    return start["status"], headers, body


def test_the_asgi_mount_serves_the_metrics(redis_url: str, namespace: str) -> None:
    registry = CollectorRegistry()

    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not here"})

    async def scenario() -> tuple[tuple[int, dict[bytes, bytes], bytes], int]:
        order_placed = Signal(name="shop.order_placed")
        async with AsyncRelay(redis_url, namespace=namespace) as bridge:
            bridge.register(order_placed)
            # As in the README:
            register(bridge, registry)
            metrics_app = make_asgi_app(registry=registry)

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http" and scope["path"] == "/metrics":
                    await metrics_app(scope, receive, send)
                else:
                    await not_found(scope, receive, send)

            for number in range(4):
                await order_placed.asend(sender=None, number=number)
            assert await bridge.flush(10)
            other, _, _ = await call_asgi(app, "/")
            return await call_asgi(app, "/metrics"), other

    (status, headers, body), other = asyncio.run(scenario())
    assert other == 404
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    samples = parse(body.decode())
    assert value(samples, "relay_messages_published_total", namespace=namespace) == 4
    assert value(
        samples, "relay_signal_messages_sent_total", namespace=namespace,
        signal="shop.order_placed",
    ) == 4  # fmt: skip
    buckets, count, _ = histogram(samples, namespace, "shop.order_placed")
    assert_cumulative(buckets, count)
    assert count == 0


def test_the_readme_lists_every_metric() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Prometheus metrics\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(relay_[a-z_]+)`", section, re.MULTILINE)
    exported = [m for m, _ in (*STAT_METRICS.values(), *SIGNAL_METRICS.values())]
    assert listed == [*exported, LATENCY_METRIC]
    assert "register(get_bridge())" in section and "make_asgi_app()" in section
    assert "--metrics-port" in section

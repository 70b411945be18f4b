"""
The dashboard without a browser: the state it computes from ``peers()``
snapshots (``relay.dashboard.state``), and its HTTP server (routes, events,
the token and the Host check), with urllib.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal as os_signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import Relay, Signal
from relay.dashboard import Dashboard, run_dashboard
from relay.dashboard.server import is_loopback
from relay.dashboard.state import WORKER_COUNTERS, Tracker
from relay.presence import LATENCY_BUCKETS, Peer, SignalStats
from relay.transport.base import TransportError

ROOT = Path(__file__).resolve().parent.parent
BUCKETS = len(LATENCY_BUCKETS) + 1
T0 = 1_700_000_000.0


def histogram(**at: int) -> tuple[int, ...]:
    """A latency histogram with ``b<index>=count`` entries."""
    counts = [0] * BUCKETS
    for key, count in at.items():
        counts[int(key[1:])] = count
    return tuple(counts)


def peer(
    name: str,
    *,
    last_seen: float,
    started_at: float = T0 - 100,
    state: str = "alive",
    signals: dict[str, SignalStats] | None = None,
    stats: dict[str, int] | None = None,
    sends: tuple[str, ...] = (),
    hears: tuple[str, ...] = (),
) -> Peer:
    return Peer(
        id=f"host:{name}:x#1",
        origin=f"host:{name}:x",
        namespace="ns",
        host="host",
        pid=1,
        worker_id=name,
        version="1",
        kind="Relay",
        sends=sends,
        hears=hears,
        started_at=started_at,
        last_seen=last_seen,
        heartbeat=1.0,
        state=state,  # type: ignore[arg-type]
        stats=stats or {},
        signals=signals or {},
    )


# -- the state ------------------------------------------------------------------


def test_rates_spread_each_heartbeat_over_the_seconds_it_covers() -> None:
    tracker = Tracker(T0, rate_window=4)
    # Already running when the dashboard starts: counts from what it has then.
    tracker.update(
        [peer("s", last_seen=T0, signals={"a": SignalStats(sent=1000)}, sends=("a",))], T0 + 0.1
    )
    tracker.update(
        [peer("s", last_seen=T0 + 4, signals={"a": SignalStats(sent=1040)}, sends=("a",))],
        T0 + 4.1,
    )
    state = tracker.state(T0 + 4.2, "ns")
    (signal,) = state["signals"]
    assert signal["name"] == "a"
    assert signal["sent"] == 1040
    assert signal["senders"] == 1
    # 40 sends over 4 seconds: 10 a second, never a step of 40.
    assert signal["history"]["sent"][-4:] == [10.0, 10.0, 10.0, 10.0]
    assert signal["send_rate"] == 10.0
    assert state["history"]["start"] + len(signal["history"]["sent"]) - 1 == int(T0 + 4) - 1


def test_the_history_ends_where_every_live_peer_has_reported() -> None:
    tracker = Tracker(T0)
    tracker.update(
        [
            peer("a", last_seen=T0 + 10, signals={"x": SignalStats(sent=5)}),
            peer("b", last_seen=T0 + 7),
            peer("c", last_seen=T0 + 1, state="gone"),  # gone peers do not hold it back
        ],
        T0 + 10.5,
    )
    state = tracker.state(T0 + 10.5, "ns")
    start = state["history"]["start"]
    assert start + len(state["signals"][0]["history"]["sent"]) - 1 == int(T0) + 6
    assert state["summary"] == {"alive": 2, "gone": 1, "stopped": 0, "signals": 1}


def test_a_peer_started_after_the_dashboard_counts_from_zero() -> None:
    tracker = Tracker(T0)
    tracker.update([], T0 + 1)
    late = peer(
        "w",
        started_at=T0 + 2,
        last_seen=T0 + 4,
        signals={"a": SignalStats(received=20, latency=histogram(b3=20))},
        stats={"received": 20},
        hears=("a",),
    )
    tracker.update([late], T0 + 4.2)
    state = tracker.state(T0 + 4.3, "ns")
    (signal,) = state["signals"]
    assert sum(signal["history"]["received"]) == pytest.approx(20)
    assert signal["listeners"] == 1
    (worker,) = state["workers"]
    assert worker["receive_rate"] == pytest.approx(10.0)


def test_latency_quantiles_cover_the_last_minute_and_all_time() -> None:
    tracker = Tracker(T0, latency_window=60)
    old = SignalStats(received=100, latency=histogram(b8=100))  # 0.1-0.25 s
    tracker.update([peer("w", last_seen=T0, started_at=T0 - 1000, signals={"a": old})], T0)
    # Nothing since the dashboard started: only the all-time quantiles.
    latency = tracker.state(T0 + 1, "ns")["signals"][0]["latency"]
    assert latency["p50"] is None and latency["p99"] is None
    assert LATENCY_BUCKETS[7] < latency["p50_all"] <= LATENCY_BUCKETS[8]
    new = SignalStats(received=200, latency=histogram(b8=100, b2=100))  # +100 at 1-2.5 ms
    tracker.update([peer("w", last_seen=T0 + 5, started_at=T0 - 1000, signals={"a": new})], T0 + 5)
    latency = tracker.state(T0 + 5, "ns")["signals"][0]["latency"]
    assert LATENCY_BUCKETS[1] < latency["p50"] <= LATENCY_BUCKETS[2]
    assert LATENCY_BUCKETS[1] < latency["p99"] <= LATENCY_BUCKETS[2]
    assert LATENCY_BUCKETS[7] < latency["p99_all"] <= LATENCY_BUCKETS[8]
    # A minute later the recent window is empty again.
    tracker.update(
        [peer("w", last_seen=T0 + 70, started_at=T0 - 1000, signals={"a": new})], T0 + 70
    )
    latency = tracker.state(T0 + 70, "ns")["signals"][0]["latency"]
    assert latency["p50"] is None


def test_workers_carry_their_counters_state_and_last_seen() -> None:
    tracker = Tracker(T0)
    stats = {name: index for index, name in enumerate(WORKER_COUNTERS)}
    tracker.update([peer("w", last_seen=T0 - 5, state="gone", stats=stats)], T0)
    (worker,) = tracker.state(T0, "ns")["workers"]
    assert worker["worker_id"] == "w"
    assert worker["state"] == "gone"
    assert worker["last_seen_ago"] == pytest.approx(5)
    assert worker["counters"] == stats
    assert worker["receive_rate"] == 0.0


def test_a_broker_failure_keeps_the_last_snapshot_and_says_so() -> None:
    tracker = Tracker(T0)
    tracker.update([peer("w", last_seen=T0)], T0)
    tracker.failed("broker unreachable: boom", T0 + 1)
    tracker.failed("broker unreachable: boom again", T0 + 2)
    state = tracker.state(T0 + 2, "ns")
    assert state["broker"] == {
        "ok": False,
        "error": "broker unreachable: boom again",
        "since": T0 + 1,
    }
    assert [w["worker_id"] for w in state["workers"]] == ["w"]
    tracker.update([peer("w", last_seen=T0 + 3)], T0 + 3)
    assert tracker.state(T0 + 3, "ns")["broker"]["ok"] is True


def test_the_state_is_json() -> None:
    tracker = Tracker(T0)
    tracker.update([peer("w", last_seen=T0, signals={"a": SignalStats(sent=1)})], T0)
    json.dumps(tracker.state(T0, "ns"), allow_nan=False)


# -- the server -------------------------------------------------------------------


class FakeBridge:
    namespace = "shop"

    def __init__(self) -> None:
        self.result: list[Peer] | Exception = []
        self.calls = 0

    def peers(self, *, include_gone: bool = False) -> list[Peer]:
        assert include_gone
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def bridge() -> FakeBridge:
    return FakeBridge()


@pytest.fixture
def board(bridge: FakeBridge) -> Iterator[Dashboard]:
    with Dashboard(bridge, port=0, interval=0.2) as dashboard:
        yield dashboard


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def test_the_page_and_its_assets_come_from_the_package(board: Dashboard) -> None:
    status, body, headers = get(board.url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b'<script src="app.js"></script>' in body
    assert b"http://" not in body and b"https://" not in body  # nothing from a CDN
    for path, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, asset, headers = get(board.url + path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and asset
        assert b"https://" not in asset  # nothing from a CDN
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert get(board.url + "nothing")[0] == 404


def test_state_json_shows_the_peers(board: Dashboard, bridge: FakeBridge) -> None:
    bridge.result = [peer("w1", last_seen=time.time(), stats={"received": 3})]
    deadline = time.monotonic() + 5
    while True:
        status, body, headers = get(board.url + "state.json")
        state = json.loads(body)
        if state["workers"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert state["namespace"] == "shop"
    assert [(w["worker_id"], w["counters"]["received"]) for w in state["workers"]] == [("w1", 3)]
    assert board.state()["workers"][0]["worker_id"] == "w1"


def test_events_stream_the_state_at_least_once_a_second(bridge: FakeBridge) -> None:
    with Dashboard(bridge, port=0, interval=1.0) as board:
        connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        began = time.monotonic()
        events: list[tuple[float, Any]] = []
        while len(events) < 3:
            line = response.readline()
            if line.startswith(b"data: "):
                events.append((time.monotonic() - began, json.loads(line[6:])))
        assert events[-1][0] < 3.0
        assert all(state["namespace"] == "shop" for _, state in events)
        connection.close()  # a client that goes away is no error
        time.sleep(0.3)
    assert bridge.calls >= 2


def test_an_unreachable_broker_is_shown_and_the_server_goes_on(
    board: Dashboard, bridge: FakeBridge, caplog: pytest.LogCaptureFixture
) -> None:
    bridge.result = TransportError("cannot reach Redis at 127.0.0.1:1")

    def broker() -> dict[str, Any]:
        result: dict[str, Any] = json.loads(get(board.url + "state.json")[1])["broker"]
        return result

    deadline = time.monotonic() + 5
    while broker()["ok"] and time.monotonic() < deadline:
        time.sleep(0.05)
    found = broker()
    assert found["ok"] is False
    assert found["error"].startswith("broker unreachable: cannot reach Redis")
    assert get(board.url)[0] == 200
    assert any("broker unreachable" in r.getMessage() for r in caplog.records)
    bridge.result = []
    deadline = time.monotonic() + 5
    while not broker()["ok"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker()["ok"] is True


def test_without_a_token_only_a_loopback_host_header_is_served(board: Dashboard) -> None:
    assert get(board.url, {"Host": f"localhost:{board.port}"})[0] == 200
    assert get(board.url, {"Host": f"[::1]:{board.port}"})[0] == 200
    status, body, _ = get(board.url + "state.json", {"Host": f"attacker.example:{board.port}"})
    assert status == 403
    assert b"loopback" in body


def test_with_a_token_every_request_must_present_it(bridge: FakeBridge) -> None:
    token = "s3cret&<x>"
    with Dashboard(bridge, port=0, token=token, interval=0.2) as board:
        quoted = "s3cret%26%3Cx%3E"
        for path in ("", "app.js", "style.css", "state.json", "events", "nothing"):
            status, body, _ = get(board.url + path)
            assert status == 403, path
            assert b"token" in body
            assert get(board.url + path + "?token=wrong")[0] == 403
        status, page, _ = get(board.url + "?token=" + quoted)
        assert status == 200
        # The page passes the token on to its script and style, escaped.
        assert f'src="app.js?token={quoted}"'.encode() in page
        assert get(board.url + "app.js?token=" + quoted)[0] == 200
        assert get(board.url + "state.json?token=" + quoted)[0] == 200
        # With a token, any Host is fine.
        assert get(board.url + "?token=" + quoted, {"Host": "dashboard.example"})[0] == 200
    js = (ROOT / "relay" / "dashboard" / "static" / "app.js").read_text()
    assert '"events" + query' in js and '"state.json" + query' in js


def test_options_are_checked(bridge: FakeBridge) -> None:
    with pytest.raises(ValueError, match="token"):
        Dashboard(bridge, host="0.0.0.0")
    with pytest.raises(ValueError, match="token"):
        Dashboard(bridge, token="")
    with pytest.raises(ValueError, match="interval"):
        Dashboard(bridge, interval=0)
    Dashboard(bridge, host="0.0.0.0", token="t")  # not started: binds nothing
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")


def test_stop_ends_the_event_streams(bridge: FakeBridge) -> None:
    board = Dashboard(bridge, port=0, interval=0.2).start()
    connection = http.client.HTTPConnection("127.0.0.1", board.port, timeout=5)
    connection.request("GET", "/events")
    response = connection.getresponse()
    response.readline()
    began = time.monotonic()
    board.stop()
    board.stop()  # idempotent
    assert time.monotonic() - began < 5
    response.read()  # the stream ends
    connection.close()


def test_run_dashboard_refuses_a_public_host_without_a_token(bridge: FakeBridge) -> None:
    handler = os_signal.getsignal(os_signal.SIGTERM)
    with pytest.raises(ValueError, match="token"):
        run_dashboard(bridge, host="192.0.2.1")
    assert os_signal.getsignal(os_signal.SIGTERM) is handler  # restored


# -- with Redis ---------------------------------------------------------------------


def test_a_real_namespace_on_the_dashboard(redis_url: str, namespace: str) -> None:
    worker = Relay(redis_url, namespace=namespace, heartbeat=0.3, worker_id="w1")
    sig = Signal(name="shop.thing")
    worker.register(sig)
    worker.start()
    reader = Relay(redis_url, namespace=namespace, heartbeat=0)
    try:
        with Dashboard(reader, port=0, interval=0.2) as board:
            sig.send("x")
            worker.flush()
            deadline = time.monotonic() + 10
            while True:
                state = json.loads(get(board.url + "state.json")[1])
                sent = {s["name"]: s["sent"] for s in state["signals"]}
                if sent.get("shop.thing") == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert sent == {"shop.thing": 1}
            assert [(w["worker_id"], w["state"]) for w in state["workers"]] == [("w1", "alive")]
    finally:
        worker.close()
        reader.close()


def test_the_dashboard_command(redis_url: str, namespace: str) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay",
            "dashboard",
            "--port",
            "0",
            "--redis-url",
            redis_url,
            "--namespace",
            namespace,
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RELAY_DASHBOARD_TOKEN"},
    )
    try:
        assert process.stderr is not None
        url = None
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        assert url, "the command did not log its URL"
        status, body, _ = get(url + "state.json")
        assert status == 200 and json.loads(body)["namespace"] == namespace
        process.send_signal(os_signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ipv6_loopback(bridge: FakeBridge) -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        board = Dashboard(bridge, host="::1", port=0, interval=0.2).start()
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        assert board.url.startswith("http://[::1]:")
        assert get(board.url + "state.json")[0] == 200
    finally:
        board.stop()


def test_the_dashboard_command_refuses_a_public_host_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_DASHBOARD_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "dashboard", "--host", "0.0.0.0",
         "--redis-url", "redis://127.0.0.1:1/0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--host 0.0.0.0 serves the dashboard beyond this machine: give a --token" in done.stderr

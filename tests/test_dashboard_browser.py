"""
The dashboard in a real browser: Debian's Chromium and ChromeDriver, driven by
Selenium.

A private Redis, three ``relay worker`` processes and the dashboard; the test
process sends a known number of signals, then reads the page's DOM until it
shows the three workers with exactly those counts, kills a worker with
SIGKILL and waits for its row to turn gone, and saves the screenshot that the
README shows (docs/dashboard.png).
"""

from __future__ import annotations

import math
import os
import signal as os_signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import Relay, Signal
from relay.dashboard import Dashboard
from relay.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
# The README's screenshot: rewritten when RELAY_UPDATE_SCREENSHOT=1, else the
# screenshot goes to the test's own directory.
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APP = "tests.procs.dashboard_app"
WORKERS = ("w1", "w2", "w3")
HEARTBEAT = 0.3
NAMES = ("shop.order_placed", "shop.cache_invalidated", "shop.config_changed", "shop.report_ready")

# What the page shows, read from its DOM in one go (rows are keyed, so no
# element goes stale between two reads).
READ_PAGE = """
const workers = {};
for (const row of document.querySelectorAll('#workers tbody tr.worker')) {
  const counters = {};
  for (const cell of row.querySelectorAll('[data-counter]')) {
    counters[cell.dataset.counter] = Number(cell.dataset.value);
  }
  workers[row.dataset.workerId || row.dataset.peerId] = {
    state: row.dataset.state,
    stateText: row.querySelector('[data-field="state"]').textContent,
    counters: counters,
  };
}
const signals = {};
for (const row of document.querySelectorAll('#signals tbody tr.signal')) {
  const value = (field) => row.querySelector('[data-field="' + field + '"]').dataset.value;
  signals[row.dataset.signal] = {
    sent: Number(value('sent')),
    received: Number(value('received')),
    errors: Number(value('errors')),
    p50: value('p50'),
    p99: value('p99'),
    plotted: row.querySelectorAll('svg.sparkline polyline').length,
  };
}
return {
  broker: document.getElementById('broker').dataset.state,
  alive: Number(document.getElementById('count-alive').dataset.value),
  workers: workers,
  signals: signals,
};
"""


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        message = f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    # The driver named explicitly: Selenium Manager never runs nor downloads anything.
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
        options=options,
    )
    try:
        driver.set_window_size(1400, 1000)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def workers(private_redis: RedisServer, namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = []
    try:
        for worker_id in WORKERS:
            log = open(tmp_path / f"{worker_id}.log", "wb")  # noqa: SIM115
            logs.append(log)
            processes[worker_id] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "relay",
                    "worker",
                    f"{APP}:SIGNALS",
                    "--redis-url",
                    private_redis.url,
                    "--namespace",
                    namespace,
                    "--worker-id",
                    worker_id,
                    "--heartbeat",
                    str(HEARTBEAT),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        for process in processes.values():
            process.wait(timeout=10)
        for log in logs:
            log.close()


def wait_for(
    what: str, check: Callable[[], bool], describe: Callable[[], object], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last seen: {describe()!r}")
        time.sleep(0.1)


def plan(ticks: int) -> list[list[tuple[str, bool]]]:
    """What to send at each tick of 0.1 s: (signal name, fail), with a varying rate."""
    steps = []
    reports = 0
    for tick in range(ticks):
        step = [("shop.order_placed", False)] * (3 + round(5 * (1 + math.sin(tick / 6))))
        if tick % 8 == 0:
            step += [("shop.cache_invalidated", False)] * 12
        if tick % 15 == 7:
            step.append(("shop.config_changed", False))
        if tick % 2 == 0:
            reports += 1
            step.append(("shop.report_ready", reports % 6 == 0))
        steps.append(step)
    return steps


def test_dashboard_shows_workers_counts_and_a_killed_worker(
    browser: Any,
    workers: dict[str, subprocess.Popen[bytes]],
    private_redis: RedisServer,
    namespace: str,
    tmp_path: Path,
) -> None:
    reader = Relay(private_redis.url, namespace=namespace, heartbeat=0)
    # The sending bridge heartbeats too: the page shows it as a fourth process,
    # "sender", and the send counts come from its heartbeats.
    sender = Relay(private_redis.url, namespace=namespace, heartbeat=HEARTBEAT, worker_id="sender")
    signals = {name: Signal(name=name) for name in NAMES}
    for sig in signals.values():
        sender.register(sig)
    with Dashboard(reader, port=0, interval=0.5) as board:
        browser.get(board.url)

        def page() -> dict[str, Any]:
            result: dict[str, Any] = browser.execute_script(READ_PAGE)
            return result

        def peers() -> dict[str, str]:
            return {p.worker_id or p.id: p.state for p in reader.peers(include_gone=True)}

        wait_for(
            "three alive workers",
            lambda: all(peers().get(w) == "alive" for w in WORKERS),
            peers,
            timeout=20,
        )
        sender.start()

        # Phase 1: a known number of signals, at a varying rate.
        expected = dict.fromkeys(NAMES, 0)
        failures = 0
        for step in plan(90):
            began = time.monotonic()
            for name, fail in step:
                signals[name].send("shop", fail=fail)
                expected[name] += 1
                failures += fail
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
        assert sender.flush(timeout=10)
        total = sum(expected.values())

        def counts_shown() -> bool:
            shown = page()
            if set(shown["workers"]) != {*WORKERS, "sender"}:
                return False
            for worker_id in WORKERS:
                worker = shown["workers"][worker_id]
                if worker["state"] != "alive" or worker["counters"] != {
                    "published": 0,
                    "received": total,
                    "fired": total,
                    "gaps": 0,
                    "missed": 0,
                    "replayed": 0,
                    "dropped": 0,
                    "rejected": 0,
                    "receiver_errors": failures,
                    "duplicates": 0,
                }:
                    return False
            if shown["workers"]["sender"]["counters"]["published"] != total:
                return False
            return bool(
                shown["signals"]
                == {
                    name: {
                        **shown["signals"].get(name, {}),
                        "sent": count,
                        "received": 3 * count,
                        "errors": 3 * failures if name == "shop.report_ready" else 0,
                    }
                    for name, count in expected.items()
                }
            )

        wait_for("the page to show what was sent", counts_shown, page)
        shown = page()
        assert shown["broker"] == "ok"
        assert shown["alive"] == 4
        for name in NAMES:
            assert shown["signals"][name]["p50"] != ""  # a latency was measured
            assert shown["signals"][name]["plotted"] == 1

        # Phase 2: traffic goes on in the background; a worker dies.
        stop = threading.Event()

        def background() -> None:
            tick = 0
            while not stop.wait(0.1):
                tick += 1
                for _ in range(4 + tick % 5):
                    signals["shop.order_placed"].send("shop")
                if tick % 10 == 0:
                    signals["shop.config_changed"].send("shop")
                signals["shop.cache_invalidated"].send("shop")

        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        try:
            killed = workers["w2"]
            killed.send_signal(os_signal.SIGKILL)
            killed.wait(timeout=10)

            def w2_gone() -> bool:
                shown = page()["workers"]
                return (
                    shown.get("w2", {}).get("state") == "gone"
                    and "last seen" in shown["w2"]["stateText"]
                    and all(shown[w]["state"] == "alive" for w in ("w1", "w3", "sender"))
                )

            wait_for("the killed worker to turn gone", w2_gone, page)
            # Let the plots and rates catch up with the traffic, for the screenshot.
            time.sleep(1.5)
        finally:
            stop.set()
            thread.join(timeout=10)
        shown = page()
        assert shown["workers"]["w2"]["state"] == "gone"
        assert shown["alive"] == 3
        screenshot = (
            SCREENSHOT
            if os.environ.get("RELAY_UPDATE_SCREENSHOT") == "1"
            else (tmp_path / "dashboard.png")
        )
        screenshot.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
    sender.close()
    reader.close()

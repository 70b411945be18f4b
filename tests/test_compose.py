"""
Keep docker-compose.yml honest without docker: read it, run each service's
command as a local process (the ``redis`` service replaced by the test's
private server, the namespace by a fresh one) and check what ``docker compose
up`` should show: every worker logs the producer's orders, by_class fires only
for orders sent by ``Order`` or its name, the monitor prints them, and the
dashboard shows the three workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.demo.app import Order
from relay.demo.run import SENDERS
from relay.testing import free_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_URL = "redis://redis:6379/0"
DEADLINE = 30.0
EXECUTABLES = {"relay": str(Path(sys.executable).with_name("relay")), "python": sys.executable}
#: Orders whose sender is Order or its name: by_class and by_name fire for them.
MONITOR_LINE = re.compile(r"  demo\.order_placed  sender=.*  number=(\d+)$", re.M)
WORKER_IDS = ["worker-1", "worker-2", "worker-3"]
BY_ORDER = {i for i, sender in enumerate(SENDERS) if sender in (Order, "relay.demo.app.Order")}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def is_worker(service: dict[str, Any]) -> bool:
    return list(service.get("command", []))[:3] == ["relay", "worker", "relay.demo.app"]


def depends_on(service: dict[str, Any]) -> dict[str, Any]:
    value = service.get("depends_on", {})
    assert isinstance(value, dict), f"depends_on should name conditions: {value!r}"
    return value


def environment(service: dict[str, Any]) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in value.items()}


# -- the file's structure ---------------------------------------------------------


def test_redis_service_is_an_official_image_with_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    redis_service = services["redis"]
    assert re.fullmatch(r"(docker\.io/)?(library/)?redis(:[\w.-]+)?", redis_service["image"])
    test = redis_service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "redis-cli" in " ".join(test[1:]) and "ping" in " ".join(test[1:])


def test_three_workers_a_producer_a_monitor_and_a_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    workers = [name for name, service in services.items() if is_worker(service)]
    assert len(workers) == 3, workers
    producers = [
        name
        for name, service in services.items()
        if "relay.demo.producer" in service.get("command", [])
    ]
    monitors = [
        name
        for name, service in services.items()
        if list(service.get("command", []))[:2] == ["relay", "monitor"]
    ]
    assert producers == ["producer"]
    assert monitors == ["monitor"]
    dashboards = [
        name
        for name, service in services.items()
        if list(service.get("command", []))[:2] == ["relay", "dashboard"]
    ]
    assert len(dashboards) == 1
    assert set(services) == {"redis", *workers, *producers, *monitors, *dashboards}
    dashboard = services[dashboards[0]]
    command = dashboard["command"]
    # Beyond the container's loopback only with a token, and published on the host's loopback.
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--token") + 1]
    assert dashboard["ports"] == ["127.0.0.1:8765:8765"]
    ids = [services[w]["command"][services[w]["command"].index("--worker-id") + 1] for w in workers]
    assert sorted(ids) == ["worker-1", "worker-2", "worker-3"]
    # The producer starts after the workers, so they hear (nearly) every order.
    assert set(workers) <= set(depends_on(services["producer"]))
    for name in workers:
        assert environment(services[name]).get("RELAY_DEMO_VERBOSE") == "1", name


def test_every_service_waits_for_a_healthy_redis(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name == "redis":
            continue
        assert depends_on(service).get("redis") == {"condition": "service_healthy"}, name
        assert service.get("build") == ".", name
        command = service["command"]
        assert isinstance(command, list), f"{name}: keep commands in list form"
        assert command[0] in EXECUTABLES, name
        assert COMPOSE_URL in command, name
        assert command[command.index("--namespace") + 1], name


def test_dockerfile_installs_the_package() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM python:3\.(\d+)", text, re.M)
    assert base is not None, text
    assert int(base.group(1)) >= 11  # requires-python >= 3.11
    assert re.search(r"^COPY .*pyproject\.toml", text, re.M), text
    # setup.py declares the optional C accelerator; without it the build drops it.
    assert re.search(r"^COPY .*setup\.py", text, re.M), text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "**/*.so" in ignored  # never this machine's build of relay._speedups
    assert re.search(r"^COPY relay ", text, re.M), text
    assert re.search(r"^RUN pip install .*\"?\.(\[[\w,]+\])?\"?\s*$", text, re.M), text


# -- docker compose up, as local processes ------------------------------------------


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.argv = argv
        self.out_path = logs / f"{name}.out"
        self.err_path = logs / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.stdout}\n{self.stderr}"
            )


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Service names, each after those it depends on."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dependency in depends_on(services[name]):
                visit(dependency)
            order.append(name)

    for name in services:
        visit(name)
    return order


def local_command(command: list[str], url: str, namespace: str) -> list[str]:
    assert COMPOSE_URL in command and "--namespace" in command, command
    argv = [url if arg == COMPOSE_URL else arg for arg in command]
    argv[argv.index("--namespace") + 1] = namespace
    argv[0] = EXECUTABLES[argv[0]]
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(free_port())
    if "--token" in argv:
        # What docker compose makes of ${RELAY_DASHBOARD_TOKEN:-demo} without the variable.
        token = argv.index("--token") + 1
        argv[token] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", argv[token])
    return argv


@pytest.fixture
def started(tmp_path: Path) -> Iterator[dict[str, Service]]:
    running: dict[str, Service] = {}
    yield running
    for service in running.values():
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()


def orders(log: str, receiver: str) -> list[int]:
    return [int(n) for n in re.findall(rf": {receiver} got order #(\d+) ", log)]


def test_compose_up_runs_the_demo(
    services: dict[str, dict[str, Any]],
    started: dict[str, Service],
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    base_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RELAY_NAMESPACE")}
    for name in start_order(services):
        if name == "redis":
            continue  # the private server at redis_url stands in for it
        service = services[name]
        env = {**base_env, **environment(service), "PYTHONUNBUFFERED": "1"}
        argv = local_command(list(service["command"]), redis_url, namespace)
        started[name] = Service(name, argv, env, tmp_path)
    workers = [started[name] for name, service in services.items() if is_worker(service)]
    producer, monitor, dashboard = started["producer"], started["monitor"], started["dashboard"]
    command = dashboard.argv
    dashboard_url = (
        f"http://127.0.0.1:{command[command.index('--port') + 1]}/state.json"
        f"?token={command[command.index('--token') + 1]}"
    )

    def dashboard_workers() -> list[str]:
        try:
            with urllib.request.urlopen(dashboard_url, timeout=5) as response:
                state = json.load(response)
        except OSError:
            return []
        # The producer and the monitor heartbeat too, without a worker id.
        alive = [w["worker_id"] for w in state["workers"] if w["state"] == "alive"]
        return sorted(w for w in alive if w is not None)

    def common_orders() -> set[int]:
        sets = [set(orders(worker.stderr, "any_sender")) for worker in workers]
        return set.intersection(*sets)

    deadline = time.monotonic() + DEADLINE
    while True:
        for service in started.values():
            service.check_alive()
        common = common_orders()
        monitored = MONITOR_LINE.findall(monitor.stdout)
        if len(common) >= 8 and len(monitored) >= 4 and dashboard_workers() == WORKER_IDS:
            break
        if time.monotonic() > deadline:
            logs = "\n".join(f"== {s.name}\n{s.stdout}{s.stderr}" for s in started.values())
            raise AssertionError(f"compose demo did not get going in {DEADLINE:.0f} s:\n{logs}")
        time.sleep(0.1)

    for service in started.values():
        service.process.send_signal(signal.SIGTERM)
    for service in started.values():
        service.process.wait(timeout=DEADLINE)
    for service in [*workers, producer, monitor, dashboard]:
        assert service.process.returncode == 0, f"{service.name}:\n{service.stderr}"
        assert "Traceback" not in service.stderr, f"{service.name}:\n{service.stderr}"

    sent = {int(n) for n in re.findall(r"sent order #(\d+) ", producer.stderr)}
    common = common_orders()
    assert {n % len(SENDERS) for n in common} == set(range(len(SENDERS)))
    for worker in workers:
        log = worker.stderr
        assert "relay bridge running" in log and "relay bridge stopped" in log, log
        received = orders(log, "any_sender")
        assert set(received) <= sent, log
        duplicated = [n for n, times in Counter(received).items() if times > 1]
        assert not duplicated, f"{worker.name} got orders twice: {duplicated}"
        for receiver in ("by_class", "by_name"):
            got = set(orders(log, receiver))
            assert all(n % len(SENDERS) in BY_ORDER for n in got), (receiver, sorted(got))
            wanted = {n for n in received if n % len(SENDERS) in BY_ORDER}
            assert got == wanted, (worker.name, receiver, sorted(got), sorted(wanted))
        assert "local_only got" not in log
    monitored = [int(n) for n in MONITOR_LINE.findall(monitor.stdout)]
    assert set(monitored) <= sent
    assert len(set(monitored)) == len(monitored)

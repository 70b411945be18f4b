"""
The ``relay`` command as a user runs it: ``python -m relay ...`` and the
``relay`` console script in subprocesses, against a private Redis (never the
shared one on 127.0.0.1:6379) or the demo's embedded broker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from relay import Relay, cli
from relay.demo.app import RECEIVERS
from relay.demo.run import expected_counts
from relay.monitor import monitor as watch
from relay.testing import RedisServer
from relay.transport.redis import RedisTransport

pytestmark = pytest.mark.redis

DEADLINE = 30.0
RUN_TIMEOUT = 90.0
SCRIPT = Path(sys.executable).with_name("relay")
MODULE = (sys.executable, "-m", "relay")
UNREACHABLE = "redis://127.0.0.1:1/0"


def relay_env(**extra: str) -> dict[str, str]:
    """The environment of a relay subprocess: no default broker to fall back on."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RELAY_NAMESPACE")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def command(*args: str, script: bool = False) -> list[str]:
    return [str(SCRIPT), *args] if script else [*MODULE, *args]


def run_relay(
    *args: str, script: bool = False, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args, script=script),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=cwd,
        env=relay_env(**env),
        check=False,
    )


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Background:
    """A relay command running in the background, its output going to files."""

    def __init__(
        self, argv: list[str], logs: Path, name: str, cwd: Path | None = None, **env: str
    ) -> None:
        self.name = name
        self.out_path = logs / f"{name}.out"
        self.err_path = logs / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=err, cwd=cwd, env=relay_env(**env)
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited early with {self.process.returncode}:\n"
                f"{self.stdout}\n{self.stderr}"
            )
        return True

    def wait_for(self, condition: Callable[[], Any], what: str) -> Any:
        return wait_until(lambda: self.alive() and condition(), f"{self.name}: {what}")

    def wait_log(self, text: str) -> None:
        self.wait_for(lambda: text in self.stderr, f"{text!r} in its log")

    def appears(self, text: str, within: float) -> bool:
        """Whether ``text`` shows up in the log within ``within`` seconds."""
        end = time.monotonic() + within
        while text not in self.stderr:
            if time.monotonic() > end or not self.alive():
                return False
            time.sleep(0.05)
        return True

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE)

    def finish(self) -> int:
        return self.process.wait(timeout=DEADLINE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Background]]:
    """Start relay commands in the background; whatever is still running is killed after."""
    started: list[Background] = []

    def start(*args: str, script: bool = False, cwd: Path | None = None, **env: str) -> Background:
        process = Background(
            command(*args, script=script), tmp_path, f"p{len(started)}-{args[0]}", cwd, **env
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def numsub(client: redis.Redis, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))


def wait_subscribed(process: Background, client: redis.Redis, channel: str) -> None:
    process.wait_for(lambda: numsub(client, channel) >= 1, f"a subscriber on {channel}")


def start_monitor(
    background: Callable[..., Background], client: redis.Redis, *args: str
) -> Background:
    """``relay monitor ARGS`` once it has pattern-subscribed (the server is otherwise idle)."""
    before = int(client.pubsub_numpat())
    monitor = background("monitor", *args)
    monitor.wait_for(lambda: int(client.pubsub_numpat()) > before, "a pattern subscription")
    return monitor


def assert_one_line_error(result: subprocess.CompletedProcess[str], *mentions: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("relay:"), lines[0]
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


# -- --help -----------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["module", "script"])
def test_top_level_help_lists_the_commands(script: bool) -> None:
    result = run_relay("--help", script=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: relay")
    for name in ("demo", "worker", "send", "monitor"):
        assert re.search(rf"^\s+{name}\s+\S", result.stdout, re.M), result.stdout


@pytest.mark.parametrize(
    ("subcommand", "options"),
    [
        ("demo", ["--workers", "--signals", "--redis-url", "--embedded", "--cluster"]),
        ("worker", ["APP", "--redis-url", "--namespace", "--verbose"]),
        ("send", ["SIGNAL", "key=value", "--sender", "--json", "--redis-url", "--namespace"]),
        ("monitor", ["--signal", "--json", "--count", "--redis-url", "--namespace"]),
    ],
)
def test_subcommand_help_mentions_its_options(subcommand: str, options: list[str]) -> None:
    result = run_relay(subcommand, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: relay {subcommand}")
    for option in options:
        assert option in result.stdout, f"{option} missing from:\n{result.stdout}"


# -- relay demo -------------------------------------------------------------------


def assert_demo_table(stdout: str, workers: int, signals: int) -> None:
    expected = expected_counts(signals)
    for index in range(1, workers + 1):
        for receiver in RECEIVERS:
            row = rf"^worker-{index}\s+{receiver}\s+{expected[receiver]}\s+{expected[receiver]}\b"
            assert re.search(row, stdout, re.M), f"no row {row!r} in:\n{stdout}"
    assert re.search(r"^worker-1\s+any_sender\s+\d+\s+\d+\s+0$", stdout, re.M), stdout
    assert "mismatch" not in stdout
    assert re.search(r"^OK: ", stdout, re.M), stdout


def test_demo_with_the_embedded_broker() -> None:
    result = run_relay("demo", "--workers", "2", "--signals", "300", "--embedded", script=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relay demo: 2 workers, 300 signals" in result.stdout
    assert re.search(r"^broker: an embedded broker", result.stdout, re.M), result.stdout
    assert "127.0.0.1:6379" not in result.stdout
    assert_demo_table(result.stdout, workers=2, signals=300)


def test_demo_with_a_redis_url(redis_url: str) -> None:
    result = run_relay("demo", "--workers", "2", "--signals", "300", "--redis-url", redis_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"broker: the Redis at {redis_url}" in result.stdout
    assert_demo_table(result.stdout, workers=2, signals=300)


needs_cluster_binaries = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="relay demo --cluster needs redis-server and redis-cli",
)


def cluster_ports(stdout: str) -> list[int]:
    """The node ports of the cluster ``relay demo --cluster`` says it started."""
    found = re.search(r"^broker: a local Redis Cluster .* at redis\+cluster://(\S+)$", stdout, re.M)
    assert found, stdout
    return [int(node.rpartition(":")[2]) for node in found.group(1).split(",")]


def assert_no_node_left(ports: list[int]) -> None:
    """No redis-server on ``ports`` is still running, and nothing answers there."""
    assert len(ports) >= 3, ports
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "redis-server" in cmdline:
            # redis-server renames itself "redis-server 127.0.0.1:PORT [cluster]".
            assert not any(f":{port} " in f"{cmdline} " for port in ports), (pid, cmdline)
    for port in ports:
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            pass


@needs_cluster_binaries
def test_demo_on_a_cluster_of_its_own() -> None:
    result = run_relay("demo", "--workers", "2", "--signals", "300", "--cluster")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^broker: a local Redis Cluster \(3 primaries", result.stdout, re.M)
    assert_demo_table(result.stdout, workers=2, signals=300)
    assert_no_node_left(cluster_ports(result.stdout))


@needs_cluster_binaries
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_on_a_cluster_stops_it_when_interrupted(signum: int, tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with out.open("w") as stdout:
        demo = subprocess.Popen(
            command("demo", "--workers", "2", "--signals", "100000000", "--cluster"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=relay_env(),
        )
    try:
        wait_until(lambda: "workers ready" in out.read_text(), "the demo's workers", RUN_TIMEOUT)
        demo.send_signal(signum)
        # Stopping flushes, stops two workers and the cluster: slow on a loaded machine.
        _, err = demo.communicate(timeout=3 * RUN_TIMEOUT)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130, (demo.returncode, out.read_text(), err)
    assert "Traceback" not in err, err
    assert_no_node_left(cluster_ports(out.read_text()))


def test_demo_on_a_cluster_without_redis_binaries(tmp_path: Path) -> None:
    result = run_relay("demo", "--cluster", PATH=str(tmp_path))
    assert_one_line_error(result, "redis-server", "redis-cli", "--cluster")


@pytest.mark.parametrize(
    "extra", [["--embedded"], ["--redis-url", UNREACHABLE]], ids=["embedded", "redis-url"]
)
def test_demo_cluster_is_not_combined_with_another_broker(extra: list[str]) -> None:
    result = run_relay("demo", "--cluster", *extra)
    assert_one_line_error(result, "--cluster", "--redis-url", "--embedded")


# -- relay worker -----------------------------------------------------------------


def test_worker_runs_the_demo_app_and_stops_cleanly_on_sigterm(
    background: Callable[..., Background], client: redis.Redis, redis_url: str, namespace: str
) -> None:
    worker = background(
        "worker",
        "relay.demo.app",
        "--redis-url",
        redis_url,
        "--namespace",
        namespace,
        script=True,
        RELAY_DEMO_VERBOSE="1",
        RELAY_DEMO_WORKER="cli-worker",
    )
    wait_subscribed(worker, client, f"relay:{namespace}:demo.order_placed")

    sent = run_relay(
        "send",
        "demo.order_placed",
        "--sender",
        "relay.demo.app.Order",
        "--namespace",
        namespace,
        "--redis-url",
        redis_url,
        "number=7",
    )
    assert sent.returncode == 0, sent.stderr
    assert f"sent demo.order_placed to namespace {namespace!r}" in sent.stdout

    for receiver in ("any_sender", "by_class", "by_name", "uid_first"):
        worker.wait_log(f"worker cli-worker: {receiver} got order #7 (sender relay.demo.app.Order)")
    assert worker.terminate() == 0, worker.stderr
    log = worker.stderr
    assert re.search(rf"relay bridge running: namespace '{namespace}' on {redis_url}", log), log
    assert f"relay bridge stopped: namespace '{namespace}'" in log
    assert "local_only got" not in log  # scope="local": never fired by another process
    assert "uid_second got" not in log  # shares uid_first's dispatch_uid
    assert "Traceback" not in log


TINY_APP = """
import sys

from relay import Signal

hello = Signal(name="tiny.hello")
other = Signal(name="tiny.other")
unnamed = Signal()
BOTH = [hello, other]


def setup(bridge):
    bridge.register(other)


def report(sender, signal, **kwargs):
    print(f"tiny: {signal.name} from {sender} n={kwargs.get('n')!r}", file=sys.stderr, flush=True)


hello.connect(report)
other.connect(report)
"""


@pytest.mark.parametrize(
    ("app", "relayed", "not_relayed"),
    [
        ("tinyapp", ["tiny.hello", "tiny.other"], []),
        ("tinyapp:hello", ["tiny.hello"], ["tiny.other"]),
        ("tinyapp:BOTH", ["tiny.hello", "tiny.other"], []),
        ("tinyapp:setup", ["tiny.other"], ["tiny.hello"]),
    ],
    ids=["module", "signal", "list", "callable"],
)
def test_worker_app_forms(
    app: str,
    relayed: list[str],
    not_relayed: list[str],
    background: Callable[..., Background],
    client: redis.Redis,
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    # The console script: only the CLI itself puts the working directory on sys.path.
    worker = background(
        "worker", app, "--redis-url", redis_url, "--namespace", namespace, script=True, cwd=tmp_path
    )
    wait_subscribed(worker, client, f"relay:{namespace}:{relayed[0]}")
    # Every channel of the worker is subscribed in one SUBSCRIBE: all are there now.
    for name in relayed:
        assert numsub(client, f"relay:{namespace}:{name}") == 1, name
    for name in not_relayed:
        assert numsub(client, f"relay:{namespace}:{name}") == 0, name
    # The "running" line comes after SUBSCRIBE (and the first heartbeat): wait for it.
    worker.wait_log(f"{len(relayed)} signals")

    for number, name in enumerate(relayed):
        result = run_relay(
            "send", name, "--sender", "cli", "--namespace", namespace, "--redis-url", redis_url,
            f"n={number}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        worker.wait_log(f"tiny: {name} from cli n='{number}'")
    assert worker.terminate() == 0, worker.stderr


def test_worker_app_without_named_signals_is_a_usage_error(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "emptyapp.py").write_text("from relay import Signal\n\nanonymous = Signal()\n")
    result = run_relay(
        "worker", "emptyapp", "--redis-url", redis_url, "--namespace", namespace, cwd=tmp_path
    )
    assert_one_line_error(result, "'emptyapp'", "no named signals")


def test_worker_reconnects_after_redis_restarts(
    background: Callable[..., Background], private_redis: RedisServer, namespace: str
) -> None:
    url = private_redis.url
    channel = f"relay:{namespace}:demo.order_placed"
    worker = background(
        "worker", "relay.demo.app", "--redis-url", url, "--namespace", namespace,
        RELAY_DEMO_VERBOSE="1",
    )  # fmt: skip
    connection = redis.Redis.from_url(url)
    try:
        wait_subscribed(worker, connection, channel)
        private_redis.restart()
        worker.wait_log("relay listener lost Redis")
        worker.wait_log("reconnected")
        wait_subscribed(worker, connection, channel)
    finally:
        connection.close()

    # Redis confirmed the resubscription: a send now reaches the worker. Send
    # again now and then all the same, up to the deadline.
    deadline = time.monotonic() + DEADLINE
    for number in range(100, 10_000):
        assert time.monotonic() < deadline, f"no send reached the worker:\n{worker.stderr}"
        result = run_relay(
            "send", "demo.order_placed", "--namespace", namespace, "--redis-url", url,
            f"number={number}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        if worker.appears(f"any_sender got order #{number} ", within=2.0):
            break
    assert worker.terminate() == 0, worker.stderr


# -- relay send and relay monitor --json ---------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "kwargs"),
    [
        (["a=1", "b=hello world", "empty="], {"a": "1", "b": "hello world", "empty": ""}),
        (["--json", '{"n": 5, "tags": ["a"]}'], {"n": 5, "tags": ["a"]}),
        (
            ["x=5", "--json", '{"n": 5, "ok": true, "none": null, "d": {"k": 1.5}}'],
            {"x": "5", "n": 5, "ok": True, "none": None, "d": {"k": 1.5}},
        ),
    ],
    ids=["pairs", "json", "both"],
)
def test_send_kwargs_arrive_as_strings_or_json_types(
    arguments: list[str],
    kwargs: dict[str, Any],
    background: Callable[..., Background],
    client: redis.Redis,
    redis_url: str,
    namespace: str,
) -> None:
    monitor = start_monitor(
        background, client, "--json", "--count", "1", "--namespace", namespace,
        "--redis-url", redis_url,
    )  # fmt: skip
    result = run_relay(
        "send", "shop.order_placed", *arguments, "--sender", "shop.models.Order",
        "--namespace", namespace, "--redis-url", redis_url, script=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sent shop.order_placed" in result.stdout
    assert monitor.finish() == 0, monitor.stderr
    lines = monitor.stdout.splitlines()
    assert len(lines) == 1, lines
    seen = json.loads(lines[0])
    assert seen["signal"] == "shop.order_placed"
    assert seen["sender"] == "shop.models.Order"
    assert seen["kwargs"] == kwargs
    assert isinstance(seen["origin"], str) and seen["origin"]
    assert isinstance(seen["id"], str) and seen["id"]


@pytest.mark.parametrize(
    ("arguments", "mention"),
    [
        (["notapair"], "'notapair'"),
        (["=value"], "'=value'"),
        (["--json", "[1]"], "JSON object"),
        (["--json", "{bad"], "not valid JSON"),
        (["--json", '{"not an identifier": 1}'], "identifiers"),
        (["sender=me"], "'sender'"),
    ],
)
def test_send_rejects_bad_keyword_arguments(
    arguments: list[str],
    mention: str,
    redis_url: str,
    namespace: str,
) -> None:
    result = run_relay(
        "send", "x.y", *arguments, "--namespace", namespace, "--redis-url", redis_url
    )
    assert_one_line_error(result, mention)


# -- relay monitor ------------------------------------------------------------------


def test_monitor_shows_signal_sender_and_kwargs(
    background: Callable[..., Background], client: redis.Redis, redis_url: str, namespace: str
) -> None:
    monitor = start_monitor(
        background, client, "--count", "1", "--namespace", namespace, "--redis-url", redis_url
    )
    result = run_relay(
        "send", "shop.order_placed", "--sender", "shop.models.Order", "order_id=42",
        "--namespace", namespace, "--redis-url", redis_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert monitor.finish() == 0, monitor.stderr
    lines = monitor.stdout.splitlines()
    assert len(lines) == 1, lines
    assert "  shop.order_placed  " in lines[0]
    assert "sender='shop.models.Order'" in lines[0]
    assert "order_id='42'" in lines[0]


def test_monitor_shows_undecodable_frames_and_keeps_going(
    background: Callable[..., Background], client: redis.Redis, redis_url: str, namespace: str
) -> None:
    monitor = start_monitor(
        background, client, "--count", "2", "--namespace", namespace, "--redis-url", redis_url
    )
    assert client.publish(f"relay:{namespace}:x.y", b"\xffnot a relay frame") == 1
    result = run_relay(
        "send", "x.y", "after=bad", "--namespace", namespace, "--redis-url", redis_url
    )
    assert result.returncode == 0, result.stderr
    assert monitor.finish() == 0, monitor.stderr
    lines = monitor.stdout.splitlines()
    assert len(lines) == 2, lines
    assert "undecodable" in lines[0]
    assert f"relay:{namespace}:x.y" in lines[0]
    assert "  x.y  " in lines[1] and "after='bad'" in lines[1]
    assert "undecodable" not in lines[1]
    assert "Traceback" not in monitor.stderr


def test_monitor_signal_option_shows_only_that_signal(
    background: Callable[..., Background], client: redis.Redis, redis_url: str, namespace: str
) -> None:
    monitor = background(
        "monitor", "--signal", "shop.wanted", "--count", "1", "--namespace", namespace,
        "--redis-url", redis_url,
    )  # fmt: skip
    wait_subscribed(monitor, client, f"relay:{namespace}:shop.wanted")
    for name in ("shop.other", "shop.wanted"):
        result = run_relay(
            "send", name, f"which={name}", "--namespace", namespace, "--redis-url", redis_url
        )
        assert result.returncode == 0, result.stderr
    assert monitor.finish() == 0, monitor.stderr
    lines = monitor.stdout.splitlines()
    assert len(lines) == 1, lines
    assert "  shop.wanted  " in lines[0] and "which='shop.wanted'" in lines[0]
    assert "shop.other" not in monitor.stdout


def test_monitor_stops_cleanly_on_sigterm(
    background: Callable[..., Background], client: redis.Redis, redis_url: str, namespace: str
) -> None:
    monitor = start_monitor(background, client, "--namespace", namespace, "--redis-url", redis_url)
    assert monitor.terminate() == 0, monitor.stderr
    assert "Traceback" not in monitor.stderr


class InterruptedSubscription:
    """A subscription interrupted (SIGTERM, Ctrl-C) while it subscribes."""

    def __init__(self) -> None:
        self.closed = False

    def subscribe(self, channels: list[str]) -> None:
        raise KeyboardInterrupt

    psubscribe = subscribe

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("signals", [None, ["a.b"]])
def test_monitor_interrupted_while_subscribing_stops_cleanly(
    signals: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = Relay(transport=RedisTransport(client=fakeredis.FakeRedis()), namespace="ns")
    subscription = InterruptedSubscription()
    monkeypatch.setattr(bridge.transport, "subscription", lambda: subscription)
    try:
        assert watch(bridge, signals) == 0
    finally:
        bridge.close()
    assert subscription.closed


def test_monitor_interrupted_while_connecting_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_connect", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["monitor", "--redis-url", "redis://127.0.0.1:1/0"]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)


# -- errors: one line, exit 2 ---------------------------------------------------------

ERROR_CASES = {
    "worker-bad-url": (["worker", "relay.demo.app", "--redis-url", "ftp://nope"], "ftp://nope"),
    "send-bad-url": (["send", "x.y", "--redis-url", "ftp://nope"], "ftp://nope"),
    "monitor-bad-url": (["monitor", "--redis-url", "ftp://nope"], "ftp://nope"),
    "demo-bad-url": (
        ["demo", "--workers", "1", "--signals", "1", "--redis-url", "ftp://nope"],
        "ftp://nope",
    ),
    "worker-unreachable": (
        ["worker", "relay.demo.app", "--redis-url", UNREACHABLE],
        "cannot reach Redis at redis://127.0.0.1:1/0",
    ),
    "send-unreachable": (
        ["send", "x.y", "--redis-url", UNREACHABLE],
        "cannot reach Redis at redis://127.0.0.1:1/0",
    ),
    "monitor-unreachable": (
        ["monitor", "--redis-url", UNREACHABLE],
        "cannot reach Redis at redis://127.0.0.1:1/0",
    ),
    "worker-missing-app": (
        ["worker", "no_such_module_xyz", "--redis-url", UNREACHABLE],
        "no_such_module_xyz",
    ),
    "worker-missing-attribute": (
        ["worker", "relay.demo.app:nope", "--redis-url", UNREACHABLE],
        "has no 'nope'",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_and_exit_2(case: str) -> None:
    arguments, mention = ERROR_CASES[case]
    result = run_relay(*arguments, script=case.startswith("send"))
    assert_one_line_error(result, mention)


def test_send_and_monitor_with_a_secret(redis_url: str, namespace: str) -> None:
    """A signed send is shown by a monitor with the secret, undecodable without it."""
    import json as _json
    import subprocess as _subprocess
    import sys as _sys
    import time as _time

    import redis as _redis

    raw = _redis.Redis.from_url(redis_url)
    base = [_sys.executable, "-m", "relay"]
    common = ["--namespace", namespace, "--redis-url", redis_url]
    with_secret = _subprocess.Popen(
        [*base, "monitor", "--json", "--count", "1", *common, "--secret", "s3cret"],
        stdout=_subprocess.PIPE,
        stderr=_subprocess.PIPE,
        text=True,
    )
    without = _subprocess.Popen(
        [*base, "monitor", "--json", "--count", "1", *common],
        stdout=_subprocess.PIPE,
        stderr=_subprocess.PIPE,
        text=True,
    )
    try:
        deadline = _time.monotonic() + 30
        # PUBSUB NUMPAT counts patterns, not clients: count the subscribed clients.
        while sum(int(c.get("psub", 0)) > 0 for c in raw.client_list()) < 2:
            assert _time.monotonic() < deadline, "the monitors did not subscribe"
            _time.sleep(0.05)
        sent = _subprocess.run(
            [*base, "send", "a.b", "n=1", *common],
            env={**os.environ, "RELAY_SECRET": "s3cret"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        good = _json.loads(with_secret.communicate(timeout=60)[0].strip())
        bad = _json.loads(without.communicate(timeout=60)[0].strip())
        raw.close()
    finally:
        for process in (with_secret, without):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert good["signal"] == "a.b" and good["kwargs"] == {"n": "1"}
    assert bad["undecodable"] == "signed frame but no secret configured"

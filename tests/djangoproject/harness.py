"""
Running the test Django project (this folder) in real processes, for
tests/test_django*.py.

A ``Project`` is one test's instance of it: a private sqlite file (copied from
a migrated template), the session's private Redis, a namespace of its own and
a record file that every receiver of every process appends a JSON line to
(``shop.record``). Tests start ``manage.py`` processes, gunicorn or runserver
against it and wait, with timeouts, for records to appear.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PROJECT = Path(__file__).resolve().parent
PYTHON = sys.executable
GUNICORN = [sys.executable, "-m", "gunicorn"]
DEADLINE = 30.0
#: The secret in the project's RELAY["OPTIONS"]: processes outside Django need it too.
SECRET = "relay-tests-secret"

Record = dict[str, Any]


def base_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RELAYTEST_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env["DJANGO_SETTINGS_MODULE"] = "relaysite.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), str(REPO)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def migrate(folder: Path) -> Path:
    """A freshly migrated sqlite database in ``folder``."""
    db = folder / "template.sqlite3"
    env = {**base_env(), "RELAYTEST_DB": str(db), "RELAYTEST_NAMESPACE": "migrate"}
    done = subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    return db


_template: Path | None = None


def template(factory: Any) -> Path:
    """A migrated database shared by the test session (``factory``: tmp_path_factory)."""
    global _template
    if _template is None:
        _template = migrate(factory.mktemp("template"))
    return _template


class Project:
    """
    One test's instance of the test project.

    Arguments:

        folder
            A private temporary directory.

        template
            A migrated database to start from (``template()``), or None
            for processes that never touch the database.

        redis_url, namespace
            The session's Redis and a namespace no other test uses.
    """

    def __init__(self, folder: Path, template: Path | None, redis_url: str, namespace: str) -> None:
        self.folder = folder
        self.db = folder / "db.sqlite3"
        if template is not None:
            shutil.copy(template, self.db)
        self.records_path = folder / "records.jsonl"
        self.records_path.touch()
        self.redis_url = redis_url
        self.namespace = namespace
        self.processes: list[subprocess.Popen[Any]] = []
        self.logs: list[Path] = []

    def env(self, role: str, **extra: str) -> dict[str, str]:
        return {
            **base_env(),
            "RELAYTEST_DB": str(self.db),
            "RELAYTEST_URL": self.redis_url,
            "RELAYTEST_NAMESPACE": self.namespace,
            "RELAYTEST_RECORD": str(self.records_path),
            "RELAYTEST_ROLE": role,
            **extra,
        }

    def log_file(self, role: str) -> Path:
        path = self.folder / f"{role}.log"
        self.logs.append(path)
        return path

    def popen(
        self,
        args: list[str],
        role: str,
        *,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        new_session: bool = False,
        **extra_env: str,
    ) -> subprocess.Popen[Any]:
        """Start a process of the project; its stderr (and stdout) go to ``<role>.log``."""
        log = self.log_file(role).open("w")
        process = subprocess.Popen(
            args,
            cwd=PROJECT,
            env=self.env(role, **extra_env),
            stdin=stdin,
            stdout=log if stdout is None else stdout,
            stderr=log,
            text=True,
            start_new_session=new_session,
        )
        log.close()
        self.processes.append(process)
        return process

    def manage(self, *args: str, role: str, **kwargs: Any) -> subprocess.Popen[Any]:
        return self.popen([PYTHON, "manage.py", *args], role, **kwargs)

    def relay_worker(self, role: str) -> subprocess.Popen[Any]:
        """A ``manage.py relay_worker``, once it is subscribed."""
        process = self.manage("relay_worker", role=role)
        self.wait_for_log(role, "relay bridge running", process)
        return process

    # -- what happened ----------------------------------------------------------

    def records(self, kind: str | None = None, **match: Any) -> list[Record]:
        found = []
        for line in self.records_path.read_text().splitlines():
            record = json.loads(line)
            if kind is not None and record["kind"] != kind:
                continue
            if all(record.get(key) == value for key, value in match.items()):
                found.append(record)
        return found

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = DEADLINE) -> Any:
        """Poll ``condition`` until it returns something true; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.02)

    def wait_for_records(
        self, kind: str, roles: set[str], timeout: float = DEADLINE, **match: Any
    ) -> dict[str, list[Record]]:
        """Wait until each of ``roles`` has recorded ``kind`` matching ``match``."""

        def arrived() -> dict[str, list[Record]] | None:
            by_role: dict[str, list[Record]] = {}
            for record in self.records(kind, **match):
                by_role.setdefault(record["role"], []).append(record)
            return by_role if roles <= set(by_role) else None

        found: dict[str, list[Record]] = self.wait_for(
            f"{kind} {match} in {sorted(roles)}", arrived, timeout
        )
        return found

    def wait_for_log(
        self, role: str, text: str, process: subprocess.Popen[Any] | None = None
    ) -> None:
        path = self.folder / f"{role}.log"

        def logged() -> bool:
            if process is not None and process.poll() is not None:
                raise AssertionError(
                    f"{role} exited with {process.returncode} before logging {text!r}:\n"
                    f"{path.read_text()}"
                )
            return path.exists() and text in path.read_text()

        self.wait_for(f"{text!r} in the log of {role}", logged)

    def diagnostics(self) -> str:
        parts = [f"records:\n{self.records_path.read_text()}"]
        for log in self.logs:
            if log.exists():
                parts.append(f"--- {log.name}:\n{log.read_text()[-4000:]}")
        return "\n".join(parts)

    # -- the end --------------------------------------------------------------------

    def stop(self, process: subprocess.Popen[Any], signum: int = signal.SIGTERM) -> int:
        """Signal one of this project's processes and return its exit code."""
        if process.poll() is None:
            process.send_signal(signum)
        try:
            return process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"process {process.args} ignored {signum}") from None

    def stop_group(self, process: subprocess.Popen[Any], signum: int = signal.SIGINT) -> None:
        """Signal a process started with ``new_session=True`` and its children; wait for it."""
        if process.poll() is not None:
            return
        os.killpg(process.pid, signum)
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            state = describe_group(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise AssertionError(
                f"{process.args} ignored signal {signum}:\n{state}\n{self.diagnostics()}"
            ) from None

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if process.pid == os.getpgid(process.pid):
                        os.killpg(process.pid, signal.SIGKILL)  # its own session
                    else:
                        process.kill()
                process.wait()


class Actor:
    """A ``manage.py shop_actor`` process, driven one JSON command at a time."""

    def __init__(self, project: Project, role: str = "actor", **extra_env: str) -> None:
        self.project = project
        self.role = role
        self.process = project.manage(
            "shop_actor", role=role, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **extra_env
        )
        assert self._answer()["ready"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def __call__(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        assert answer.pop("ok"), f"{op} failed: {answer}\n{self.project.diagnostics()}"
        return answer

    def _answer(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], DEADLINE)
        line = stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"{self.role} did not answer\n{self.project.diagnostics()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def exit(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": "exit"}) + "\n")
        self.process.stdin.close()
        return self.process.wait(DEADLINE)


@contextlib.contextmanager
def sender(project: Project) -> Iterator[Callable[..., None]]:
    """Send ``shop.order_note`` from this (non-Django) test process."""
    from relay import Relay, Signal

    note = Signal(name="shop.order_note")
    bridge = Relay(project.redis_url, namespace=project.namespace, secret=SECRET, publish="sync")
    try:
        bridge.register(note)

        def send(text: str, order_id: Any = None) -> None:
            note.send(sender="tests", text=text, order_id=order_id)

        yield send
    finally:
        bridge.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (gunicorn bound to ``unix:PATH``)."""

    def __init__(self, path: str, timeout: float = DEADLINE) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def get(connection: http.client.HTTPConnection, url: str) -> dict[str, Any]:
    """GET ``url`` and return its JSON body."""
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200, (response.status, body[:2000])
    data: dict[str, Any] = json.loads(body)
    return data


def describe_group(pgid: int) -> str:
    """The state and wait channel of each thread of each process in a group (Linux /proc)."""
    lines = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(entry)) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text().splitlines()
            cmdline = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
            threads = [
                Path(f"/proc/{entry}/task/{task}/wchan").read_text()
                for task in os.listdir(f"/proc/{entry}/task")
            ]
            lines.append(f"{entry} {status[2]} {cmdline!r} threads waiting in {threads}")
    return "\n".join(lines)


def parent_pid(pid: int) -> int:
    """The parent of a process (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def connections_to(pid: int, port: int) -> int:
    """How many TCP connections a process holds to ``port`` on loopback (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count

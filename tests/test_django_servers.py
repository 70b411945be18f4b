"""
relay.contrib.django under gunicorn (with and without --preload) and under
runserver's autoreloader: a bridge never runs in a parent that forks or
spawns its servers, and each worker starts its own.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from relay.bridge import channel_for

sys.path.insert(0, str(Path(__file__).parent / "djangoproject"))

from harness import (
    GUNICORN,
    PYTHON,
    Project,
    UnixHTTPConnection,
    connections_to,
    free_port,
    get,
    parent_pid,
    sender,
    template,
)

pytestmark = pytest.mark.redis

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def project(
    redis_url: str, namespace: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    instance = Project(tmp_path, template(tmp_path_factory), redis_url, namespace)
    try:
        yield instance
    finally:
        instance.close()


def subscribers(project: Project, signal_name: str) -> int:
    """How many connections are subscribed to a signal's channel (PUBSUB NUMSUB)."""
    client = redis.Redis.from_url(project.redis_url)
    try:
        channel = channel_for(project.namespace, signal_name)
        ((_, count),) = client.pubsub_numsub(channel)
        return int(count)
    finally:
        client.close()


def redis_port(project: Project) -> int:
    return urlsplit(project.redis_url).port or 6379


def pids_that_recorded(project: Project, kind: str, **match: Any) -> set[int]:
    return {r["pid"] for r in project.records(kind, **match)}


@pytest.fixture
def socket_path() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="rly")  # short: unix socket paths are limited
    try:
        yield os.path.join(folder, "gunicorn.sock")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("mode", ["preload", "post_worker_init"])
def test_gunicorn_workers_each_start_their_own_bridge(
    project: Project, socket_path: str, mode: str
) -> None:
    rendezvous = project.folder / "rendezvous"
    rendezvous.mkdir()
    args = [*GUNICORN, "--workers", "2", "--bind", f"unix:{socket_path}", "--log-level", "info"]
    if mode == "preload":
        # The master imports the project (django.setup(), ready()) and forks.
        args.append("--preload")
    else:
        # Django loads in each worker; the hook starts the bridge before any request.
        args += ["--config", "python:relaysite.gunicorn_conf"]
    master = project.popen(
        [*args, "relaysite.wsgi:application"], "gunicorn", RELAYTEST_RENDEZVOUS=str(rendezvous)
    )

    def answers() -> bool:
        if master.poll() is not None:
            raise AssertionError(f"gunicorn exited\n{project.diagnostics()}")
        try:
            get(UnixHTTPConnection(socket_path, timeout=2), "/ping")
        except OSError:
            return False
        return True

    if mode == "preload":
        # AUTOSTART: each worker starts its bridge on its first request. Two
        # requests served at the same time by sync workers are two workers.
        project.wait_for("gunicorn to answer", answers)
        with ThreadPoolExecutor(2) as pool:
            met = list(
                pool.map(
                    lambda _: get(UnixHTTPConnection(socket_path), "/rendezvous?count=2"),
                    range(2),
                )
            )
        workers = {answer["pid"] for answer in met}
        assert len(workers) == 2 and all(answer["met"] for answer in met)
    else:
        project.wait_for(
            "both workers to subscribe", lambda: subscribers(project, "shop.order_note") == 2
        )
        project.wait_for("gunicorn to answer", answers)
    assert subscribers(project, "shop.order_note") == 2  # the workers, never the master

    # A signal sent from another process reaches every worker.
    with sender(project) as send:
        send("to the workers")
    project.wait_for(
        "both workers to get the note",
        lambda: len(pids_that_recorded(project, "order_note", text="to the workers")) == 2,
    )
    workers = pids_that_recorded(project, "order_note", text="to the workers")
    assert master.pid not in workers

    # A save in one worker fires its local receivers there and the opted-in
    # ones in the other worker; a rolled-back one publishes nothing.
    get(UnixHTTPConnection(socket_path), "/orders/rollback?number=G-RB")
    saver = get(UnixHTTPConnection(socket_path), "/orders/save?number=G-1")["pid"]
    (other,) = workers - {saver}
    saved = project.wait_for(
        "the save in both workers",
        lambda: (
            {(r["pid"], r["remote"]) for r in project.records("all_post_save", number="G-1")}
            == {(saver, False), (other, True)}
        ),
    )
    assert saved
    unscoped = project.records("unscoped_post_save", number="G-1")
    assert [(r["pid"], r["remote"]) for r in unscoped] == [(saver, False)]
    existing = project.records("django_post_save", number="G-1")
    assert [r["pid"] for r in existing] == [saver]
    assert not [
        r
        for r in project.records()
        if r.get("number") == "G-RB" and r["kind"] != "django_post_save"
    ]

    # The master never ran a bridge: no receipt, no subscription, no connection.
    assert master.pid not in {r["pid"] for r in project.records()}
    if LINUX:
        assert connections_to(master.pid, redis_port(project)) == 0
        assert all(connections_to(pid, redis_port(project)) > 0 for pid in workers)
    assert project.stop(master) == 0


@pytest.mark.skipif(not LINUX, reason="reads process parents from /proc")
def test_runserver_autoreloader_parent_never_runs_a_bridge(project: Project) -> None:
    port = free_port()
    watched = project.folder / "watched"
    watched.mkdir()
    trigger = watched / "reload.txt"
    trigger.write_text("0")
    parent = project.popen(
        [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}"],
        "runserver",
        new_session=True,
        RELAYTEST_WATCH=str(watched),
    )

    def listening() -> bool:
        if parent.poll() is not None:
            raise AssertionError(f"runserver exited\n{project.diagnostics()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def ping() -> int | None:
        if parent.poll() is not None:
            raise AssertionError(f"runserver exited\n{project.diagnostics()}")
        try:
            pid: int = get(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "/ping")[
                "pid"
            ]
        except OSError:
            return None
        return pid

    try:
        # The serving child is up (it holds the port) and set Django up, as
        # did the parent: neither has started a bridge.
        project.wait_for("runserver to listen", listening)
        assert subscribers(project, "shop.order_note") == 0
        child = project.wait_for("a first request", ping)  # it starts the child's bridge
        assert child != parent.pid and parent_pid(child) == parent.pid
        assert subscribers(project, "shop.order_note") == 1
        with sender(project) as send:
            send("to runserver")
        project.wait_for_records("order_note", {"runserver"}, text="to runserver")
        assert pids_that_recorded(project, "order_note") == {child}

        # A code change: the reloader starts a new child, which starts its
        # own bridge on its first request; the parent still runs none.
        # (Touched again while the old child answers: the reloader may not
        # have taken its first look at the file yet.)
        touched = [0.0]

        def reloaded() -> int | None:
            pid = ping()
            if pid == child and time.monotonic() - touched[0] > 1.5:
                mtime = trigger.stat().st_mtime + 10
                os.utime(trigger, (mtime, mtime))
                touched[0] = time.monotonic()
            return None if pid == child else pid

        new_child: int = project.wait_for("a new child", reloaded)
        assert new_child not in (child, parent.pid) and parent_pid(new_child) == parent.pid
        with sender(project) as send:
            send("after the reload")
        project.wait_for_records("order_note", {"runserver"}, text="after the reload")
        assert pids_that_recorded(project, "order_note", text="after the reload") == {new_child}
        assert parent.pid not in {r["pid"] for r in project.records()}
        assert connections_to(parent.pid, redis_port(project)) == 0
        assert connections_to(new_child, redis_port(project)) > 0
    finally:
        # SIGTERM, which the autoreloader handles in both processes (SIGINT
        # may be ignored: a background job inherits it ignored).
        project.stop_group(parent, signal.SIGTERM)

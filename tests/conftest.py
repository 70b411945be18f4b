from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from relay import aio as relay_aio
from relay import bridge as relay_bridge
from relay import presence, signals, wire
from relay.testing import RedisServer, RedisServerUnavailable

# Hypothesis profiles. "ci", loaded when $CI is set and not empty (.ci/run sets
# it): every run draws the same examples (derandomize), keeps no example
# database, has no deadline and no too_slow health check (a loaded machine is
# slow, not wrong), and prints the blob that reproduces a failure. "dev" (the
# defaults) otherwise: random examples, failures remembered in .hypothesis/.
# $CI alone decides, not Hypothesis' own guess from other CI variables; set
# HYPOTHESIS_PROFILE to pick a profile by name. Loaded here, before any test
# module is imported, so that each @settings(...) in the tests inherits from
# the profile whatever it does not set itself (none sets derandomize or
# database: test_hypothesis_profile.py checks it).
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", settings.get_profile("default"))
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def _redis_required() -> bool:
    return os.environ.get("RELAY_REQUIRE_REDIS") == "1"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """
    A private redis-server for the whole test session (never the shared one).

    CI starts one and names it in RELAY_TEST_REDIS_URL; otherwise the session
    starts its own on a free port. Tests that stop or restart Redis use
    ``private_redis`` instead.
    """
    external = os.environ.get("RELAY_TEST_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    try:
        server = RedisServer().start()
    except RedisServerUnavailable as exc:
        if _redis_required():
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but no Redis server could be started: {exc}")
        pytest.skip(f"no redis-server: {exc}")
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.ping():
        pytest.fail(f"the test Redis server at {redis_server.url} does not answer")
    return redis_server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and restart."""
    try:
        server = RedisServer().start()
    except RedisServerUnavailable as exc:
        if _redis_required():
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but no Redis server could be started: {exc}")
        pytest.skip(f"no redis-server: {exc}")
    with server:
        yield server


class ExternalRedis(RedisServer):
    """A server started outside the test session (by CI); it is never stopped here."""

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.password = unquote(parts.password) if parts.password else None
        self._url = url
        self._process = None

    @property
    def url(self) -> str:
        return self._url

    def start(self, timeout: float = 10.0) -> RedisServer:
        return self

    def stop(self) -> None:
        raise RuntimeError("the CI Redis server is shared by the whole run; use private_redis")

    def __exit__(self, *exc_info: object) -> None:
        pass


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or user of the server) shares."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _close_bridges() -> Iterator[None]:
    """Close every bridge a test left open, so names never leak between tests."""
    yield
    from relay import origin
    from relay.bridge import Relay
    from relay.core import _open_bridges

    for bridge in list(_open_bridges):
        if isinstance(bridge, Relay):
            bridge.close()
        else:
            # An AsyncRelay left open: its event loop is gone, so only free its names.
            bridge._forget()
    # Each test stands for fresh processes: forget the ids and sequence
    # numbers this one saw.
    origin.accepted.forget_all()


@pytest.fixture(params=["accelerated", "pure"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """
    Run a test with relay's C accelerator (where it is built) and again with
    every function of it replaced by its pure-Python path. Modules ask for it
    with ``pytestmark = pytest.mark.usefixtures("implementation")``.
    """
    if request.param == "pure":
        monkeypatch.setattr(wire, "_c_plain_messages", None)
        monkeypatch.setattr(wire, "_c_encode_body", None)
        monkeypatch.setattr(wire, "number_message", wire._py_number_message)
        monkeypatch.setattr(signals, "_c_send_to", None)
        monkeypatch.setattr(relay_bridge, "_c_fire_messages", None)
        monkeypatch.setattr(relay_aio, "_c_fire_messages", None)
        monkeypatch.setattr(presence, "_c_latency_counts", None)
    elif not wire.ACCELERATED:
        pytest.skip("relay._speedups is not built")
    return str(request.param)


@pytest.fixture
def slow_down(monkeypatch: pytest.MonkeyPatch) -> Callable[[object, str], None]:
    """
    ``slow_down(obj, name)`` makes the method ``obj.name`` (no arguments)
    sleep 0.2 s first: it widens the window that a thread preempted just
    before the call would leave, so that a race shows every time.
    """

    def slow_down(obj: object, name: str) -> None:
        method = getattr(obj, name)

        def slowly() -> None:
            time.sleep(0.2)
            method()

        monkeypatch.setattr(obj, name, slowly)

    return slow_down

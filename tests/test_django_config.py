"""
The RELAY setting: parsing (in this process, without configuring Django), the
system checks and failures of ``manage.py check``, ``relay_worker`` and
``start()`` with bad settings (in subprocesses), and ``relay_worker`` stopping
cleanly on SIGTERM and SIGINT.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from relay.bridge import gap
from relay.contrib.django import conf

sys.path.insert(0, str(Path(__file__).parent / "djangoproject"))

from harness import DEADLINE, PYTHON, Project, free_port

URL = "redis://redis.example:6379/0"  # only parsed here, never connected to
GOOD = {"URL": URL, "NAMESPACE": "shop"}


def problems(raw: object) -> list[conf.Problem]:
    parsed, found = conf.parse(raw)
    assert (parsed is None) == bool(found)
    return found


def ids(raw: object) -> list[str]:
    return [p.id for p in problems(raw)]


# -- parsing, in this process -------------------------------------------------------


def test_minimal_settings_take_the_defaults() -> None:
    parsed, found = conf.parse(GOOD)
    assert found == []
    assert parsed == conf.RelaySettings(
        url=URL,
        namespace="shop",
        signals=(),
        models=(),
        autostart=True,
        options=MappingProxyType({}),
    )


def test_full_settings() -> None:
    raw = {
        **GOOD,
        "SIGNALS": ["relay.bridge.gap", "relay.bridge.gap"],
        "MODELS": [],
        "AUTOSTART": False,
        "OPTIONS": {"durable": True, "secret": "s", "socket_timeout": 5},
    }
    parsed, found = conf.parse(raw)
    assert found == [] and parsed is not None
    assert parsed.signals == (gap,)  # listed twice, relayed once
    assert parsed.autostart is False
    assert dict(parsed.options) == {"durable": True, "secret": "s", "socket_timeout": 5}
    with pytest.raises(TypeError):
        parsed.options["durable"] = False  # type: ignore[index]


def test_missing_or_not_a_dict() -> None:
    (missing,) = problems(None)
    assert missing.id == "relay.E001" and "missing" in missing.msg
    assert "INSTALLED_APPS" in missing.hint
    (wrong,) = problems(["redis://x"])
    assert wrong.id == "relay.E001" and "must be a dict, not list" in wrong.msg


def test_unknown_keys_suggest_the_right_one() -> None:
    found = problems({"URL": URL, "NAMESPACES": "shop"})
    assert [p.id for p in found] == ["relay.E002", "relay.E004"]
    assert found[0].msg == "RELAY has an unknown key 'NAMESPACES'."
    assert found[0].hint.startswith("Did you mean 'NAMESPACE'? The keys are: URL, NAMESPACE,")


@pytest.mark.parametrize(
    "url",
    [None, "", 42, "http://localhost:6379", "localhost:6379", "127.0.0.1:6379", "unix://"],
)
def test_bad_urls(url: object) -> None:
    raw = {"NAMESPACE": "shop"} if url is None else {**GOOD, "URL": url}
    (problem,) = problems(raw)
    assert problem.id == "relay.E003"
    assert "redis://127.0.0.1:6379/0" in problem.hint


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "rediss://user:secret@h:6380/1", "unix:///run/redis.sock"]
)
def test_good_urls(url: str) -> None:
    assert problems({**GOOD, "URL": url}) == []


@pytest.mark.parametrize("namespace", [None, "", "a:b", "a b", 5])
def test_bad_namespaces(namespace: object) -> None:
    raw = {"URL": URL} if namespace is None else {**GOOD, "NAMESPACE": namespace}
    assert ids(raw) == ["relay.E004"]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_autostart_must_be_a_bool(value: object) -> None:
    (problem,) = problems({**GOOD, "AUTOSTART": value})
    assert problem.id == "relay.E009" and repr(value) in problem.msg


def test_options() -> None:
    assert ids({**GOOD, "OPTIONS": [("durable", True)]}) == ["relay.E010"]
    (typo,) = problems({**GOOD, "OPTIONS": {"durabel": True}})
    assert typo.id == "relay.E011"
    assert typo.msg == "RELAY['OPTIONS'] has 'durabel', which relay.Relay() does not accept."
    assert typo.hint.startswith("Did you mean 'durable'? Relay() accepts ")
    assert "max_queue" in typo.hint and "secret" in typo.hint
    # Connection options of redis.Redis pass; the address and decoding do not.
    assert problems({**GOOD, "OPTIONS": {"socket_timeout": 5, "ssl_ca_certs": "ca.pem"}}) == []
    assert ids({**GOOD, "OPTIONS": {"decode_responses": True, "host": "h"}}) == ["relay.E011"] * 2
    for key in ("url", "namespace", "client", "transport"):
        (misplaced,) = problems({**GOOD, "OPTIONS": {key: "x"}})
        assert misplaced.id == "relay.E012" and repr(key) in misplaced.msg
    (namespace,) = problems({**GOOD, "OPTIONS": {"namespace": "x"}})
    assert "RELAY['NAMESPACE']" in namespace.hint
    # Every keyword argument of Relay() (but those four) is accepted.
    assert "url" not in conf.RELAY_OPTIONS and "namespace" not in conf.RELAY_OPTIONS
    assert {"durable", "secret", "secrets", "publish", "once_ttl"} <= set(conf.RELAY_OPTIONS)


def test_signals() -> None:
    assert ids({**GOOD, "SIGNALS": "shop.signals.order_note"}) == ["relay.E005"]
    (missing,) = problems({**GOOD, "SIGNALS": ["relay.no_such_module.signal"]})
    assert missing.id == "relay.E005" and "cannot be imported" in missing.msg
    (django_signal,) = problems({**GOOD, "SIGNALS": ["django.core.signals.request_started"]})
    assert django_signal.id == "relay.E006"
    assert "is a django.dispatch.Signal" in django_signal.msg
    assert "request_started = Signal(name='django.request_started')" in django_signal.hint
    (a_class,) = problems({**GOOD, "SIGNALS": ["relay.bridge.Relay"]})
    assert a_class.id == "relay.E006" and "not a relay Signal" in a_class.msg
    (mirror,) = problems({**GOOD, "SIGNALS": ["relay.contrib.django.post_save"]})
    assert mirror.id == "relay.E007" and "RELAY['MODELS']" in mirror.hint


def test_models_must_be_a_list_of_labels() -> None:
    (problem,) = problems({**GOOD, "MODELS": "shop.Order"})
    assert problem.id == "relay.E008" and "'app_label.ModelName'" in problem.hint


def test_problems_describe_themselves() -> None:
    found = problems({"URL": "http://x"})
    text = conf.describe(found)
    assert text.startswith("relay.contrib.django is misconfigured (2 problems with settings.RELAY")
    assert "(relay.E003) RELAY['URL'] must be a redis://" in text
    assert "(relay.E004) RELAY['NAMESPACE'] is missing. HINT: " in text


# -- with Django, in subprocesses ------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Any:
    instance = Project(tmp_path, None, f"redis://127.0.0.1:{free_port()}/0", "config")
    try:
        yield instance
    finally:
        instance.close()


def run_all(project: Project, runs: dict[str, tuple[list[str], Any]]) -> dict[str, Any]:
    """Run processes side by side: ``{name: (args, RELAY or "default")}`` -> results."""
    started = {}
    for name, (args, relay_setting) in runs.items():
        extra = (
            {}
            if relay_setting == "default"
            else {"RELAYTEST_RELAY_JSON": json.dumps(relay_setting)}
        )
        env = project.env(name, **extra)
        started[name] = subprocess.Popen(
            args,
            cwd=Path(__file__).parent / "djangoproject",
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=DEADLINE)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


CHECK = [PYTHON, "manage.py", "check"]
WORKER = [PYTHON, "manage.py", "relay_worker"]


def test_misconfigurations_fail_the_checks_and_the_worker(project: Project) -> None:
    ok = {"URL": URL, "NAMESPACE": "shop"}
    runs = {
        "good": (CHECK, "default"),
        "missing": (CHECK, None),
        "basics": (
            CHECK,
            {
                "URL": "http://localhost:6379",
                "NAMESPACE": "a:b",
                "AUTOSTART": "yes",
                "MODLES": [],
                "OPTIONS": {"durabel": True, "namespace": "x"},
            },
        ),
        "signals_and_models": (
            CHECK,
            {
                **ok,
                "SIGNALS": [
                    "shop.signals.django_style",
                    "shop.signals.unnamed",
                    "shop.nothing_here.signal",
                    "shop.signals.not_a_signal",
                    "shop.signals.order_note",
                ],
                "MODELS": ["shop.Ordr", "nosuchapp", "shop.Order", "shop"],
            },
        ),
        "options_type": (CHECK, {**ok, "OPTIONS": ["durable"]}),
        "option_values": (CHECK, {**ok, "OPTIONS": {"max_queue": 0}}),
        "worker_checks": (WORKER, {**ok, "URL": "http://nowhere"}),
        "worker_skip_checks": ([*WORKER, "--skip-checks"], {**ok, "URL": "http://nowhere"}),
        "start": (
            [
                PYTHON,
                "-c",
                "import django; django.setup(); import relay.contrib.django as r; r.start()",
            ],
            {**ok, "NAMESPACE": ""},
        ),
        "worker_no_redis": (WORKER, "default"),  # nothing listens on the project's URL
    }
    results = run_all(project, runs)

    def errors(name: str) -> str:
        result = results[name]
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        text: str = result.stderr
        return text

    assert results["good"].returncode == 0, results["good"].stderr
    assert "System check identified no issues" in results["good"].stdout

    assert "settings.RELAY: (relay.E001) The RELAY setting is missing." in errors("missing")

    text = errors("basics")
    for expected in (
        "settings.RELAY: (relay.E002) RELAY has an unknown key 'MODLES'.",
        "HINT: Did you mean 'MODELS'?",
        "(relay.E003) RELAY['URL'] must be a redis://, redis+cluster://, redis+sentinel://, "
        "rediss://, rediss+cluster://, rediss+sentinel://, unix:// URL, not one with http://.",
        "(relay.E004) RELAY['NAMESPACE'] 'a:b' may not contain ':' or whitespace.",
        "(relay.E009) RELAY['AUTOSTART'] must be True or False, not 'yes'.",
        "(relay.E011) RELAY['OPTIONS'] has 'durabel', which relay.Relay() does not accept.",
        "HINT: Did you mean 'durable'?",
        "(relay.E012) RELAY['OPTIONS'] may not hold 'namespace'.",
    ):
        assert expected in text, (expected, text)

    text = errors("signals_and_models")
    for expected in (
        "(relay.E006) RELAY['SIGNALS'] entry 'shop.signals.django_style' is a "
        "django.dispatch.Signal, which cannot be relayed.",
        "HINT: Define it as relay.Signal(name=...) instead, a drop-in replacement",
        "(relay.E007) RELAY['SIGNALS'] entry 'shop.signals.unnamed' is a relay Signal without "
        "a name.",
        "(relay.E005) RELAY['SIGNALS'] entry 'shop.nothing_here.signal' cannot be imported",
        "(relay.E006) RELAY['SIGNALS'] entry 'shop.signals.not_a_signal' is an int, not a relay "
        "Signal.",
        "(relay.E008) RELAY['MODELS'] entry 'shop.Ordr' is not an installed model or app.",
        "HINT: Did you mean 'shop.Order'?",
        "(relay.E008) RELAY['MODELS'] entry 'nosuchapp' is not an installed model or app.",
    ):
        assert expected in text, (expected, text)
    assert "order_note" not in text and "'shop.Order' is not" not in text
    assert "'shop' is not" not in text  # an app label: all its models

    assert "(relay.E010) RELAY['OPTIONS'] must be a dict, not list." in errors("options_type")
    text = errors("option_values")
    assert "(relay.E013) relay.contrib.django cannot build its bridge from settings.RELAY: " in text
    assert "max_queue must be at least 1, not 0" in text

    # relay_worker runs the checks first...
    text = errors("worker_checks")
    assert "SystemCheckError" in text and "(relay.E003)" in text
    # ... and without them says what is wrong all the same.
    text = errors("worker_skip_checks")
    assert "CommandError: relay.contrib.django is misconfigured (1 problem" in text
    assert "(relay.E003) RELAY['URL'] must be a redis://" in text
    assert "relay_worker cannot start." in text

    # ready() logs the problems; start() (and get_bridge()) raise them.
    text = errors("start")
    assert "ERROR relay.contrib.django: relay.contrib.django is misconfigured" in text
    assert (
        "django.core.exceptions.ImproperlyConfigured: relay.contrib.django is misconfigured" in text
    )
    assert "(relay.E004) RELAY['NAMESPACE'] must be a non-empty string, not ''." in text

    text = errors("worker_no_redis")
    assert "CommandError: relay_worker cannot reach Redis at redis://127.0.0.1:" in text


@pytest.mark.redis
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_relay_worker_stops_cleanly(
    redis_url: str, namespace: str, tmp_path: Path, signum: int
) -> None:
    project = Project(tmp_path, None, redis_url, namespace)
    try:
        worker = project.relay_worker("worker")
        text = (tmp_path / "worker.log").read_text()
        assert f"relay_worker (namespace {namespace!r} on {redis_url}) listens to " in text
        assert "django.post_save (3 receivers)" in text and "shop.order_note (1 receiver)" in text
        assert project.stop(worker, signum) == 0
        project.wait_for_log("worker", f"relay bridge stopped: namespace {namespace!r}")
    finally:
        project.close()

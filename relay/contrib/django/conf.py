"""
The ``RELAY`` setting: read, validate and resolve it.

``parse()`` turns the raw setting into a frozen ``RelaySettings``, or into a
list of ``Problem``s that say what is wrong and how to fix it. The system
checks (``relay.contrib.django.checks``) report those problems;
``load()`` raises ``ImproperlyConfigured`` listing them.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from relay.signals import Signal
from relay.transport.registry import schemes

__all__ = [
    "KEYS",
    "RELAY_OPTIONS",
    "Problem",
    "RelaySettings",
    "load",
    "parse",
    "relay_options",
]

#: The keys of the ``RELAY`` setting.
KEYS: Final = ("URL", "NAMESPACE", "SIGNALS", "MODELS", "AUTOSTART", "OPTIONS")
REQUIRED: Final = ("URL", "NAMESPACE")
URL_SCHEMES: Final = tuple(schemes())
EXAMPLE_URL: Final = "'redis://127.0.0.1:6379/0'"

#: ``Relay()`` arguments that ``OPTIONS`` may not hold, and what to do instead.
TOP_LEVEL_OPTIONS: Final = {
    "url": "set RELAY['URL'] instead",
    "namespace": "set RELAY['NAMESPACE'] instead",
    "client": "relay.contrib.django connects with RELAY['URL']; put connection options "
    "(socket_timeout=..., ssl_ca_certs=...) in OPTIONS instead",
    "transport": "relay.contrib.django connects with RELAY['URL']; build a Relay of your own "
    "for another transport",
}

#: The names Django's model signals cross under; a project signal may not take them.
RESERVED_NAMES: Final = frozenset({"django.post_save", "django.post_delete", "django.m2m_changed"})


def relay_options() -> tuple[str, ...]:
    """The keyword arguments of ``Relay()`` that ``OPTIONS`` may hold, sorted."""
    from relay.bridge import Relay

    return tuple(
        sorted(
            name
            for name, parameter in inspect.signature(Relay).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in TOP_LEVEL_OPTIONS
        )
    )


def _redis_options() -> frozenset[str]:
    """What ``Relay(**redis_options)`` passes on to ``redis.Redis`` and accepts."""
    import redis

    names = inspect.signature(redis.Redis.__init__).parameters
    # The URL gives the address; relay's payloads are binary.
    return frozenset(names) - {
        "self",
        "connection_pool",
        "host",
        "port",
        "db",
        "unix_socket_path",
        "decode_responses",
    }


RELAY_OPTIONS: Final = relay_options()


@dataclass(frozen=True)
class Problem:
    """
    One thing wrong with the ``RELAY`` setting.

    Attributes:

        id
            The system check id, such as ``"relay.E003"``.

        msg
            What is wrong.

        hint
            How to fix it.
    """

    id: str
    msg: str
    hint: str

    def __str__(self) -> str:
        return f"({self.id}) {self.msg} HINT: {self.hint}"


@dataclass(frozen=True)
class RelaySettings:
    """
    The ``RELAY`` setting, validated and resolved.

    Attributes:

        url
            The Redis URL.

        namespace
            The relay namespace.

        signals
            The project's relay ``Signal`` objects to relay, resolved from the
            dotted paths in ``SIGNALS``.

        models
            The model classes whose ``post_save``, ``post_delete`` and
            ``m2m_changed`` are relayed, resolved from ``MODELS``.

        autostart
            Whether each process starts its bridge on its own.

        options
            The other keyword arguments for ``Relay()`` (read-only).
    """

    url: str
    namespace: str
    signals: tuple[Signal, ...] = ()
    models: tuple[type[Any], ...] = ()
    autostart: bool = True
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"Did you mean {close[0]!r}? " if close else ""


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _listing(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


def parse(raw: object) -> tuple[RelaySettings | None, list[Problem]]:
    """
    Validate and resolve the raw ``RELAY`` setting.

    Arguments:

        raw
            The value of ``settings.RELAY``; ``None`` when it is missing.
            Resolving ``MODELS`` needs Django's app registry to be ready;
            ``SIGNALS`` entries are imported.

    Returns ``(settings, [])`` when it is valid, else ``(None, problems)``.
    """
    if raw is None:
        return None, [
            Problem(
                "relay.E001",
                "The RELAY setting is missing.",
                "Add RELAY = {'URL': 'redis://127.0.0.1:6379/0', 'NAMESPACE': 'myproject'} "
                "to your settings, or remove 'relay.contrib.django' from INSTALLED_APPS.",
            )
        ]
    if not isinstance(raw, Mapping):
        return None, [
            Problem(
                "relay.E001",
                f"The RELAY setting must be a dict, not {type(raw).__name__}.",
                "Set RELAY = {'URL': 'redis://127.0.0.1:6379/0', 'NAMESPACE': 'myproject'}.",
            )
        ]
    problems: list[Problem] = []
    for key in raw:
        if key not in KEYS:
            problems.append(
                Problem(
                    "relay.E002",
                    f"RELAY has an unknown key {key!r}.",
                    f"{_suggest(str(key), KEYS)}The keys are: {_listing(KEYS)}.",
                )
            )
    url = _url(raw.get("URL"), problems)
    namespace = _namespace(raw.get("NAMESPACE"), problems)
    signals = _signals(raw.get("SIGNALS", []), problems)
    models = _models(raw.get("MODELS", []), problems)
    autostart = raw.get("AUTOSTART", True)
    if type(autostart) is not bool:
        problems.append(
            Problem(
                "relay.E009",
                f"RELAY['AUTOSTART'] must be True or False, not {autostart!r}.",
                "Use True (each process starts its bridge on its first request, relayed "
                "save or send) or False (call relay.contrib.django.start() yourself).",
            )
        )
    options = _options(raw.get("OPTIONS", {}), problems)
    if problems or url is None or namespace is None:
        return None, problems
    return (
        RelaySettings(
            url=url,
            namespace=namespace,
            signals=tuple(signals),
            models=tuple(models),
            autostart=bool(autostart),
            options=MappingProxyType(dict(options)),
        ),
        [],
    )


def _url(value: object, problems: list[Problem]) -> str | None:
    hint = (
        f"Set RELAY['URL'] to your Redis URL, such as {EXAMPLE_URL}, "
        "'rediss://user:password@host:6380/0', 'unix:///run/redis.sock' or "
        "'redis+sentinel://host1:26379,host2:26379/service_name'."
    )
    if value is None:
        problems.append(Problem("relay.E003", "RELAY['URL'] is missing.", hint))
        return None
    if not isinstance(value, str) or not value:
        problems.append(
            Problem("relay.E003", f"RELAY['URL'] must be a non-empty string, not {value!r}.", hint)
        )
        return None
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        problems.append(Problem("relay.E003", f"RELAY['URL'] is not a valid URL ({exc}).", hint))
        return None
    if parts.scheme not in URL_SCHEMES:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        problems.append(
            Problem(
                "relay.E003",
                f"RELAY['URL'] must be a {', '.join(f'{name}://' for name in URL_SCHEMES)} URL, "
                f"not one with {shown}.",
                hint,
            )
        )
        return None
    if parts.scheme == "unix" and not parts.path:
        problems.append(
            Problem("relay.E003", "RELAY['URL'] is a unix:// URL without a socket path.", hint)
        )
        return None
    return value


def _namespace(value: object, problems: list[Problem]) -> str | None:
    hint = (
        "Set RELAY['NAMESPACE'] to a short name shared by every process of the project, "
        "such as 'shop' or 'shop-staging'."
    )
    if value is None:
        problems.append(Problem("relay.E004", "RELAY['NAMESPACE'] is missing.", hint))
        return None
    if not isinstance(value, str) or not value:
        problems.append(
            Problem(
                "relay.E004", f"RELAY['NAMESPACE'] must be a non-empty string, not {value!r}.", hint
            )
        )
        return None
    if ":" in value or any(c.isspace() for c in value):
        problems.append(
            Problem(
                "relay.E004",
                f"RELAY['NAMESPACE'] {value!r} may not contain ':' or whitespace.",
                hint,
            )
        )
        return None
    return value


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _signals(value: object, problems: list[Problem]) -> list[Signal]:
    entries = _string_list(value)
    if entries is None:
        problems.append(
            Problem(
                "relay.E005",
                f"RELAY['SIGNALS'] must be a list of dotted paths, not {value!r}.",
                "List the relay signals to relay, such as ['shop.signals.order_placed'].",
            )
        )
        return []
    from django.utils.module_loading import import_string

    signals: list[Signal] = []
    names: dict[str, str] = {}
    for path in entries:
        try:
            obj = import_string(path)
        except Exception as exc:
            problems.append(
                Problem(
                    "relay.E005",
                    f"RELAY['SIGNALS'] entry {path!r} cannot be imported "
                    f"({type(exc).__name__}: {exc}).",
                    "Give the dotted path of a module-level relay Signal, such as "
                    "'shop.signals.order_placed'.",
                )
            )
            continue
        if not isinstance(obj, Signal):
            problems.append(_not_a_relay_signal(path, obj))
            continue
        if obj.name is None:
            problems.append(
                Problem(
                    "relay.E007",
                    f"RELAY['SIGNALS'] entry {path!r} is a relay Signal without a name.",
                    "The name is its identity across processes: create it as "
                    f"Signal(name={_suggested_name(path)!r}).",
                )
            )
            continue
        if obj.name in RESERVED_NAMES:
            problems.append(
                Problem(
                    "relay.E007",
                    f"RELAY['SIGNALS'] entry {path!r} is the model signal {obj.name!r}.",
                    "Model signals are relayed for the models in RELAY['MODELS']; remove "
                    "this entry.",
                )
            )
            continue
        other = names.get(obj.name)
        if other is not None:
            if other != path and obj not in signals:
                problems.append(
                    Problem(
                        "relay.E007",
                        f"RELAY['SIGNALS'] entries {other!r} and {path!r} are two signals "
                        f"named {obj.name!r}.",
                        "Give each signal a name of its own.",
                    )
                )
            continue
        names[obj.name] = path
        if obj not in signals:
            signals.append(obj)
    return signals


def _suggested_name(path: str) -> str:
    module, _, attribute = path.rpartition(".")
    app = module.split(".")[0] if module else "app"
    return f"{app}.{attribute or 'signal'}"


def _not_a_relay_signal(path: str, obj: object) -> Problem:
    from django.dispatch import Signal as DjangoSignal

    if isinstance(obj, DjangoSignal):
        return Problem(
            "relay.E006",
            f"RELAY['SIGNALS'] entry {path!r} is a django.dispatch.Signal, which cannot be "
            "relayed.",
            "Define it as relay.Signal(name=...) instead, a drop-in replacement with the same "
            f"API: {path.rpartition('.')[2]} = Signal(name={_suggested_name(path)!r}). Django's "
            "own model signals are relayed through RELAY['MODELS'].",
        )
    return Problem(
        "relay.E006",
        f"RELAY['SIGNALS'] entry {path!r} is {_a(type(obj).__name__)}, not a relay Signal.",
        f"Point it at a relay.Signal(name=...) object, such as "
        f"{path.rpartition('.')[2]} = Signal(name={_suggested_name(path)!r}).",
    )


def _models(value: object, problems: list[Problem]) -> list[type[Any]]:
    entries = _string_list(value)
    if entries is None:
        problems.append(
            Problem(
                "relay.E008",
                f"RELAY['MODELS'] must be a list of model labels, not {value!r}.",
                "List models as 'app_label.ModelName' (or an app label for all its models), "
                "such as ['shop.Order', 'shop.Customer'].",
            )
        )
        return []
    if not entries:
        return []
    from django.apps import apps

    models: list[type[Any]] = []
    for label in entries:
        found = _resolve_models(apps, label)
        if found is None:
            known = [m._meta.label for m in apps.get_models()]
            known += [c.label for c in apps.get_app_configs()]
            problems.append(
                Problem(
                    "relay.E008",
                    f"RELAY['MODELS'] entry {label!r} is not an installed model or app.",
                    f"{_suggest(label, known)}Use 'app_label.ModelName' (such as "
                    "'shop.Order') or an app label for all the models of an app.",
                )
            )
            continue
        for model in found:
            if model not in models:
                models.append(model)
    return models


def _resolve_models(apps: Any, label: str) -> list[type[Any]] | None:
    if "." in label:
        try:
            return [apps.get_model(label)]
        except (LookupError, ValueError):
            return None
    try:
        config = apps.get_app_config(label)
    except LookupError:
        return None
    return list(config.get_models())


def _options(value: object, problems: list[Problem]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        problems.append(
            Problem(
                "relay.E010",
                f"RELAY['OPTIONS'] must be a dict, not {type(value).__name__}.",
                "Put keyword arguments of relay.Relay() in it, such as "
                "{'durable': True, 'secret': '...'}.",
            )
        )
        return {}
    accepted = set(RELAY_OPTIONS) | _redis_options()
    options: dict[str, Any] = {}
    for key, option in value.items():
        if key in TOP_LEVEL_OPTIONS:
            problems.append(
                Problem(
                    "relay.E012",
                    f"RELAY['OPTIONS'] may not hold {key!r}.",
                    f"Remove it: {TOP_LEVEL_OPTIONS[key]}.",
                )
            )
        elif not isinstance(key, str) or key not in accepted:
            problems.append(
                Problem(
                    "relay.E011",
                    f"RELAY['OPTIONS'] has {key!r}, which relay.Relay() does not accept.",
                    f"{_suggest(str(key), RELAY_OPTIONS)}Relay() accepts "
                    f"{_listing(RELAY_OPTIONS)}, and the connection options of redis.Redis.",
                )
            )
        else:
            options[key] = option
    return options


def load() -> RelaySettings:
    """
    Read ``settings.RELAY`` and return it validated and resolved.

    Raises ``django.core.exceptions.ImproperlyConfigured`` listing every
    problem when it is not valid.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    parsed, problems = parse(getattr(settings, "RELAY", None))
    if parsed is None:
        raise ImproperlyConfigured(describe(problems))
    return parsed


def describe(problems: list[Problem]) -> str:
    """One message listing ``problems``, for ``ImproperlyConfigured`` and log lines."""
    lines = "\n".join(f"  {problem}" for problem in problems)
    return (
        f"relay.contrib.django is misconfigured ({len(problems)} problem"
        f"{'s' if len(problems) != 1 else ''} with settings.RELAY; run "
        f"'python manage.py check' for details):\n{lines}"
    )

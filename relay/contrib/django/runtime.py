"""
This process's bridge: built from ``settings.RELAY``, started lazily, stopped at exit.

No bridge ever starts while Django sets up: gunicorn's master with
``--preload`` and the autoreloader's parent run ``django.setup()`` too, and a
bridge must never run in a process that forks its workers. The ``Relay``
object is built in ``ready()`` (that opens no connection and starts no thread),
so sends on relayed signals are queued from the start. With ``AUTOSTART`` each
process starts it on its first request, its first relayed model-signal
publish or its first send on a relayed signal; relay's own fork handling
leaves a forked child with a stopped bridge, which starts again there the same
way. At exit, the bridge publishes what is queued and stops.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any, Final

from relay import origin
from relay.bridge import Relay
from relay.contrib.django import conf, forwarding, snapshot
from relay.contrib.django.signals import MODEL_SIGNALS
from relay.signals import Registration, Signal
from relay.transport.base import TransportError

__all__ = ["autostart", "get_bridge", "relayed_signals", "run", "setup", "start", "stop"]

logger = logging.getLogger("relay.contrib.django")

#: How long to wait before trying again to autostart after Redis was unreachable.
RETRY_SECONDS: Final = 5.0
#: How long stopping at exit waits for queued messages to be published.
EXIT_TIMEOUT: Final = 10.0
_AUTOSTART_UID: Final = "relay.contrib.django.autostart"

_lock = threading.RLock()
_bridge: Relay | None = None
_settings: conf.RelaySettings | None = None
_retry_at = 0.0
_exit_hook_installed = False
_exiting = False


def _after_fork() -> None:
    # The parent's lock may have been held by a thread that does not exist
    # here. The bridge itself is reset (stopped) by relay's own fork hook.
    global _lock, _retry_at, _exiting
    _lock = threading.RLock()
    _retry_at = 0.0
    _exiting = False


origin.after_fork(_after_fork)


def get_bridge() -> Relay:
    """
    Return this process's bridge, building it from ``settings.RELAY`` on
    first use (without connecting or starting it).

    The model-signal mirrors are registered on it with the default scope
    ``"local"``, the ``SIGNALS`` with ``"all"``. Raises
    ``django.core.exceptions.ImproperlyConfigured`` listing what is wrong
    with the settings.
    """
    bridge = _bridge
    if bridge is not None:
        return bridge
    with _lock:
        if _bridge is None:
            _build(conf.load())
        assert _bridge is not None
        return _bridge


def _build(settings: conf.RelaySettings) -> None:
    """Build and register the bridge. Caller holds ``_lock``."""
    global _bridge, _settings, _exit_hook_installed
    from django.core.exceptions import ImproperlyConfigured

    try:
        bridge = Relay(settings.url, namespace=settings.namespace, **settings.options)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"relay.contrib.django cannot build its bridge from settings.RELAY: {exc}. Fix "
            "RELAY['OPTIONS'] (the keyword arguments of relay.Relay())."
        ) from exc
    try:
        for mirror in MODEL_SIGNALS:
            bridge.register(mirror, scope="local")
        for signal in settings.signals:
            bridge.register(signal)
    except ValueError as exc:
        bridge.close()
        raise ImproperlyConfigured(
            f"relay.contrib.django cannot register the signals of settings.RELAY: {exc}"
        ) from exc
    _bridge = bridge
    _settings = settings
    if not _exit_hook_installed:
        atexit.register(_stop_at_exit)
        _exit_hook_installed = True


def relayed_signals() -> tuple[Signal, ...]:
    """The signals this process's bridge relays: the model-signal mirrors, then ``SIGNALS``."""
    settings = _settings
    return MODEL_SIGNALS + (settings.signals if settings is not None else ())


def start() -> Relay:
    """
    Start this process's bridge, if it is not running, and return it.

    Returns once it is subscribed, so sends made anywhere afterwards reach
    this process. Safe to call from several threads, and again in a forked
    child (where the parent's bridge is stopped). Call it where nothing else
    would start the bridge early enough: a Celery worker's
    ``worker_process_init``, or gunicorn's ``post_worker_init`` hook to start
    each worker before its first request. Once the process has begun to exit
    (its ``atexit`` hook stopped the bridge), it starts nothing.

    Raises ``ImproperlyConfigured`` when ``settings.RELAY`` is wrong and
    ``relay.TransportError`` when Redis cannot be reached.
    """
    bridge = get_bridge()
    if bridge.running:
        return bridge
    with _lock:
        if _exiting:
            # Daemon threads (a server's request threads) still run while
            # the interpreter exits: never start again once stopped at exit.
            logger.debug("relay: not starting the bridge, this process is exiting")
        elif not bridge.running:
            bridge.start()
    return bridge


def stop(timeout: float | None = 10.0) -> bool:
    """
    Stop this process's bridge: publish what is queued, unsubscribe, join its threads.

    Arguments:

        timeout
            How long to wait for queued messages to be published.

    Returns True if everything queued was published. ``start()`` starts it again.
    """
    bridge = _bridge
    if bridge is None:
        return True
    return bridge.stop(timeout)


def autostart() -> None:
    """
    Start the bridge if ``RELAY["AUTOSTART"]`` is on and it is not running.

    Never raises for an unreachable Redis: it logs an error and tries again
    on a later call, at most every ``RETRY_SECONDS``; meanwhile local
    receivers fire and sends are queued.
    """
    global _retry_at
    bridge, settings = _bridge, _settings
    if bridge is None or settings is None or not settings.autostart or bridge.running:
        return
    from django.apps import apps

    if not apps.ready:
        # Still setting up: perhaps gunicorn's master with --preload, which forks.
        return
    if time.monotonic() < _retry_at:
        return
    # Another thread already trying (Redis slow to answer) is enough: never
    # hold up this thread's request behind it.
    if not _lock.acquire(blocking=False):
        return
    try:
        if bridge.running or time.monotonic() < _retry_at:
            return
        start()
    except TransportError as exc:
        _retry_at = time.monotonic() + RETRY_SECONDS
        logger.error(
            "relay could not start this process's bridge (%s): until it can, this process "
            "neither publishes nor hears relayed signals. Retrying in %g s.",
            exc,
            RETRY_SECONDS,
        )
    finally:
        _lock.release()


def run() -> None:
    """
    Run the bridge in the calling thread until SIGINT or SIGTERM (the
    ``relay_worker`` command). Receivers of remote sends run in this thread.
    """
    bridge = get_bridge()
    if bridge.running:
        bridge.stop()  # started early (a send while the project loaded): run it here instead
    bridge.run()


def _start_on_request(sender: Any, **kwargs: Any) -> None:
    """Receiver of Django's ``request_started``: the first request starts the bridge."""
    bridge = _bridge
    if bridge is not None and not bridge.running:
        autostart()


class _Autostarter:
    """
    Attached to each relayed project signal beside the bridge (see
    ``relay.signals.Outbox``): after a send, it starts the bridge if it is not
    running, which then publishes the queued send. Unlike a receiver, it shows
    in neither ``send()``'s responses nor ``has_listeners()``.
    """

    def __init__(self, namespace: str) -> None:
        # Its own namespace: a signal hands off to the first outbox of each.
        self.namespace = f"{namespace} autostart"

    def prepare(self, signal: Signal, sender: object, named: dict[str, Any]) -> None:
        return None

    def hand_off(self, prepared: None) -> None:
        bridge = _bridge
        if bridge is not None and not bridge.running:
            autostart()

    async def ahand_off(self, prepared: None) -> None:
        self.hand_off(prepared)

    def check_scope(self, scope: str | None) -> None:
        pass

    def receiver_connected(self, registration: Registration) -> None:
        pass


def setup() -> None:
    """
    Set relay up for this Django project (``RelayConfig.ready()``).

    Names every installed model by its label for the wire, reads
    ``settings.RELAY``, builds the bridge (no connection, no thread), connects
    the model-signal forwarders and, with ``AUTOSTART``, the receivers that
    start the bridge. A misconfiguration is logged as an error here and
    reported by the system checks; nothing is relayed then. Safe to call again.
    """
    from django.apps import apps
    from django.conf import settings as django_settings
    from django.core import signals as core_signals
    from django.core.exceptions import ImproperlyConfigured

    snapshot.register_models(apps.get_models(include_auto_created=True))
    parsed, problems = conf.parse(getattr(django_settings, "RELAY", None))
    if parsed is None:
        logger.error("%s", conf.describe(problems))
        return
    with _lock:
        if _bridge is None:
            try:
                _build(parsed)
            except ImproperlyConfigured as exc:
                logger.error("%s", exc)
                return
    forwarding.connect_models(parsed.models, before_send=autostart)
    if parsed.autostart:
        core_signals.request_started.connect(
            _start_on_request, weak=False, dispatch_uid=_AUTOSTART_UID
        )
        starter = _Autostarter(parsed.namespace)
        for signal in parsed.signals:
            if not any(isinstance(o, _Autostarter) for o in signal._attached):
                signal._attach(starter)


def _stop_at_exit() -> None:
    """Publish what is queued and stop; start first if messages wait in a never-started bridge."""
    global _exiting
    with _lock:
        _exiting = True
        bridge = _bridge
        if bridge is None:
            return
        try:
            if bridge.running:
                bridge.stop(EXIT_TIMEOUT)
            elif not bridge.flush(0):
                bridge.start()
                bridge.stop(EXIT_TIMEOUT)
        except Exception as exc:
            logger.error("relay could not publish the messages queued at exit: %s", exc)

"""
``python manage.py relay_worker``: a dedicated listener process.

It builds the bridge from ``settings.RELAY``, logs what it listens to, and
fires this project's receivers for the signals every other process sends,
until SIGINT or SIGTERM; then it publishes what is queued and exits 0.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from relay.contrib.django import runtime
from relay.signals import Signal
from relay.transport.base import TransportError

logger = logging.getLogger("relay.contrib.django")

LEVELS = {0: logging.WARNING, 1: logging.INFO}


def _remote_receivers(signal: Signal) -> int:
    """How many receivers of ``signal`` fire for sends from other processes."""
    default = signal.default_scope
    return sum(1 for entry in signal.receivers if (entry.scope or default) != "local")


class Command(BaseCommand):  # type: ignore[misc]  # Django has no type hints
    help = (
        "Run a relay listener: fire this project's receivers for the signals that every "
        "other process on RELAY['NAMESPACE'] sends, until SIGINT or SIGTERM."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self._setup_logging(int(options["verbosity"]))
        try:
            bridge = runtime.get_bridge()
        except ImproperlyConfigured as exc:
            raise CommandError(f"{exc}\nrelay_worker cannot start.") from exc
        heard = [(str(s.name), _remote_receivers(s)) for s in runtime.relayed_signals()]
        logger.info(
            "relay_worker (namespace %r on %s) listens to %s",
            bridge.namespace,
            bridge.transport.description,
            ", ".join(
                f"{name} ({count} receiver{'' if count == 1 else 's'})"
                for name, count in heard
                if count
            )
            or "nothing: no receiver fires for other processes' sends",
        )
        quiet = [name for name, count in heard if not count]
        if quiet:
            logger.info("relay_worker relays but does not listen to %s", ", ".join(quiet))
        try:
            runtime.run()
        except TransportError as exc:
            # The transport's message may name the Redis already ("cannot reach
            # Redis at ...", "Redis at ... refused the credentials ...").
            message = str(exc)
            where = bridge.transport.description
            if where not in message:
                message = f"cannot reach Redis at {where}: {message}"
            joint = " " if message.startswith("cannot reach") else ": "
            raise CommandError(f"relay_worker{joint}{message}") from exc

    def _setup_logging(self, verbosity: int) -> None:
        """Log relay's lines on stderr, at a level from ``--verbosity``."""
        relay_logger = logging.getLogger("relay")
        relay_logger.setLevel(LEVELS.get(verbosity, logging.DEBUG))
        if not relay_logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            relay_logger.addHandler(handler)

"""The Django app: ``INSTALLED_APPS = [..., "relay.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class RelayConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    """
    relay's Django app, labelled ``"relay"``.

    Its ``ready()`` names every model for the wire, builds the process's bridge
    from ``settings.RELAY`` (without starting it), connects the model-signal
    forwarders and registers the system checks. It never starts a bridge.
    """

    name = "relay.contrib.django"
    label = "relay"
    verbose_name = "relay"

    def ready(self) -> None:
        from relay.contrib.django import checks, runtime

        checks.register()
        runtime.setup()

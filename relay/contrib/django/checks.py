"""
System checks of the ``RELAY`` setting (``python manage.py check``).

Every management command runs them, so a misconfiguration stops
``runserver``, ``migrate`` and ``relay_worker`` with a message saying what is
wrong and how to fix it:

========== =================================================================
relay.E001 ``RELAY`` is missing or not a dict
relay.E002 ``RELAY`` has an unknown key (a typo)
relay.E003 ``URL`` is missing or not a redis://, rediss:// or unix:// URL
relay.E004 ``NAMESPACE`` is missing, empty, or holds ``:`` or whitespace
relay.E005 ``SIGNALS`` is not a list of dotted paths, or an entry does not import
relay.E006 a ``SIGNALS`` entry is not a relay ``Signal`` (a Django one, say)
relay.E007 a ``SIGNALS`` entry has no name, a taken name, or is a model signal
relay.E008 ``MODELS`` is not a list of labels, or a label is not an installed model or app
relay.E009 ``AUTOSTART`` is not True or False
relay.E010 ``OPTIONS`` is not a dict
relay.E011 ``OPTIONS`` has a key ``Relay()`` does not accept
relay.E012 ``OPTIONS`` has a key that belongs elsewhere (url, namespace, client, transport)
relay.E013 ``Relay()`` rejects the options' values
========== =================================================================
"""

from __future__ import annotations

from typing import Any

from relay.contrib.django import conf

__all__ = ["check_relay_settings", "register"]

OBJ = "settings.RELAY"


def check_relay_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """
    The system check of ``settings.RELAY``.

    Arguments:

        app_configs
            Ignored: the setting belongs to the project, not to an app.
    """
    from django.conf import settings
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    from relay.contrib.django import runtime

    parsed, problems = conf.parse(getattr(settings, "RELAY", None))
    errors = [checks.Error(p.msg, hint=p.hint, obj=OBJ, id=p.id) for p in problems]
    if parsed is not None:
        try:
            runtime.get_bridge()
        except ImproperlyConfigured as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="Fix RELAY['OPTIONS']: it holds keyword arguments of relay.Relay().",
                    obj=OBJ,
                    id="relay.E013",
                )
            )
    return errors


def register() -> None:
    """Register the checks (``RelayConfig.ready()``); registering again does nothing."""
    from django.core import checks

    checks.register(check_relay_settings, "relay")

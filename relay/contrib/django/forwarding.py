"""
Forward Django's model signals to their relay mirrors when the transaction commits.

For each relayed model, a receiver on Django's own ``post_save``,
``post_delete`` and (for its many-to-many relations) ``m2m_changed`` takes a
snapshot of the instance and the signal's arguments at once, and registers a
``transaction.on_commit`` callback that sends the mirror signal
(``relay.contrib.django.post_save``, ...). Outside an atomic block that happens
at once; inside one, at commit; after a rollback, never. Django's own signals
and their receivers are left as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from relay.contrib.django import signals as mirrors
from relay.contrib.django import snapshot
from relay.signals import Signal
from relay.transport.base import TransportError

__all__ = ["connect_models", "through_models"]

logger = logging.getLogger("relay.contrib.django")

#: The m2m_changed actions that are relayed: the ``pre_*`` ones describe a
#: change that has not happened yet, and only committed changes are relayed.
M2M_ACTIONS: Final = frozenset({"post_add", "post_remove", "post_clear"})

_UID: Final = "relay.contrib.django.forward"


def _nothing() -> None:
    pass


# Called before each relayed send (see connect_models): the runtime starts the
# process's bridge there when it autostarts.
_before_send: Callable[[], None] = _nothing


def _deliver(signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
    """Send a mirror signal (at commit), after the ``before_send`` hook."""
    _before_send()
    try:
        signal.send_robust(sender=sender, **kwargs)
    except (TypeError, ValueError, TransportError) as exc:
        instance = kwargs.get("instance")
        logger.error(
            "relay could not send %s for %s pk=%r, and its receivers did not run: %s",
            signal.name,
            sender._meta.label,
            getattr(instance, "pk", None),
            exc,
            exc_info=exc,
        )


def _publish(signal: Signal, sender: Any, using: str, kwargs: dict[str, Any]) -> None:
    """Send ``signal`` once the transaction on ``using`` commits (now, outside one)."""
    from django.db import transaction

    def send_on_commit() -> None:
        _deliver(signal, sender, kwargs)

    send_on_commit.__qualname__ = f"relay.contrib.django: {signal.name} {sender._meta.label}"
    try:
        transaction.on_commit(send_on_commit, using=using, robust=True)
    except transaction.TransactionManagementError as exc:
        logger.error(
            "relay did not send %s for %s: %s (relay sends model signals on commit)",
            signal.name,
            sender._meta.label,
            exc,
        )


def forward_post_save(
    sender: Any,
    instance: Any,
    created: bool,
    update_fields: Any,
    raw: bool,
    using: str,
    **kwargs: Any,
) -> None:
    """
    Receiver of Django's ``post_save`` for relayed models: sends the mirror
    ``post_save`` at commit.

    Arguments:

        sender, instance, created, update_fields, raw, using
            As Django sends them. The instance is copied now (a snapshot), so
            changes made to it before the commit do not show.
    """
    arguments = {
        "instance": snapshot.copy_instance(instance),
        "created": bool(created),
        "update_fields": None if update_fields is None else frozenset(update_fields),
        "raw": bool(raw),
        "using": using,
    }
    _publish(mirrors.post_save, sender, using, arguments)


def forward_post_delete(
    sender: Any, instance: Any, using: str, origin: Any = None, **kwargs: Any
) -> None:
    """
    Receiver of Django's ``post_delete`` for relayed models: sends the mirror
    ``post_delete`` at commit.

    Arguments:

        sender, instance, using
            As Django sends them; the instance is a snapshot taken now, with
            its primary key (Django clears it after the signal).

        origin
            The model instance or queryset whose ``delete()`` started the
            deletion. An instance crosses as a snapshot, a queryset as its
            model class.
    """
    from django.db.models import Model

    if isinstance(origin, Model):
        origin = snapshot.copy_instance(origin)
    elif origin is not None:
        origin = getattr(origin, "model", None)
    arguments = {"instance": snapshot.copy_instance(instance), "using": using, "origin": origin}
    _publish(mirrors.post_delete, sender, using, arguments)


def forward_m2m_changed(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    model: Any,
    pk_set: Any,
    using: str,
    **kwargs: Any,
) -> None:
    """
    Receiver of Django's ``m2m_changed`` for the through models of relayed
    models: sends the mirror ``m2m_changed`` at commit, for the ``post_add``,
    ``post_remove`` and ``post_clear`` actions.

    Arguments:

        sender, instance, action, reverse, model, pk_set, using
            As Django sends them. ``sender`` is the through model, ``model``
            the class of the objects added or removed; ``pk_set`` is a set
            (None for ``post_clear``).
    """
    if action not in M2M_ACTIONS:
        return
    arguments = {
        "instance": snapshot.copy_instance(instance),
        "action": action,
        "reverse": bool(reverse),
        "model": model,
        "pk_set": None if pk_set is None else set(pk_set),
        "using": using,
    }
    _publish(mirrors.m2m_changed, sender, using, arguments)


def through_models(model: Any) -> list[Any]:
    """
    The through models of the many-to-many relations of ``model``: those
    declared on it (or inherited) and those of other models pointing at it.
    """
    found: list[Any] = []
    for field in model._meta.get_fields(include_hidden=True):
        if not field.many_to_many:
            continue
        through = getattr(field, "through", None) or getattr(field.remote_field, "through", None)
        if isinstance(through, type) and through not in found:
            found.append(through)
    return found


def connect_models(models: Iterable[Any], before_send: Callable[[], None] = _nothing) -> None:
    """
    Relay the model signals of ``models``: connect the forwarders to Django's
    ``post_save`` and ``post_delete`` for each, and to ``m2m_changed`` for their
    through models. Connecting again does nothing (``dispatch_uid``).

    Arguments:

        models
            The model classes.

        before_send
            Called (without arguments) before each relayed send, at commit.
    """
    global _before_send
    from django.db.models import signals as django_signals

    _before_send = before_send

    for model in models:
        label = model._meta.label
        django_signals.post_save.connect(
            forward_post_save, sender=model, weak=False, dispatch_uid=f"{_UID}.post_save:{label}"
        )
        django_signals.post_delete.connect(
            forward_post_delete,
            sender=model,
            weak=False,
            dispatch_uid=f"{_UID}.post_delete:{label}",
        )
        for through in through_models(model):
            django_signals.m2m_changed.connect(
                forward_m2m_changed,
                sender=through,
                weak=False,
                dispatch_uid=f"{_UID}.m2m_changed:{through._meta.label}",
            )

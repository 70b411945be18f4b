"""
Receivers of every kind, each recording its calls (shop.record):

- ``existing_order_saved``: a project's existing receiver on Django's own
  post_save, which must keep firing once, in the saving process only;
- receivers of relay.contrib.django's mirrors with scope="all", none (local)
  and "once";
- a receiver of the project signal ``shop.order_note``.
"""

from __future__ import annotations

import threading
from typing import Any

from django.apps import apps
from django.db import connection
from django.db.models import Model
from django.db.models.signals import post_save as django_post_save

from relay import receiver
from relay.contrib.django import m2m_changed, post_delete, post_save
from shop import sqltrace
from shop.models import Order
from shop.record import record
from shop.signals import order_note


def tagged(value: Any) -> list[Any]:
    """A value as [type name, JSON-able value]."""
    if value is None or type(value) in (bool, int, str, dict, list):
        return [type(value).__name__, value]
    return [type(value).__name__, str(value)]


def label(obj: Any) -> str:
    if isinstance(obj, type) and issubclass(obj, Model):
        return str(obj._meta.label)
    return repr(obj)


def installed(obj: Any) -> bool:
    """True if ``obj`` is the installed model class of its label."""
    return (
        isinstance(obj, type) and issubclass(obj, Model) and apps.get_model(obj._meta.label) is obj
    )


def describe(instance: Any) -> dict[str, Any]:
    """Everything about a snapshot, read without touching deferred fields or relations."""
    before = sqltrace.count()
    deferred = instance.get_deferred_fields()
    fields = {
        f.attname: tagged(getattr(instance, f.attname))
        for f in instance._meta.concrete_fields
        if f.attname not in deferred
    }
    return {
        "class": label(type(instance)),
        "installed_class": installed(type(instance)),
        "pk": instance.pk,
        "adding": instance._state.adding,
        "db": instance._state.db,
        "deferred": sorted(deferred),
        "fields": fields,
        "sql_before": before,  # statements this thread ran before (decoding included)
        "sql_after": sqltrace.count(),
    }


def existing_order_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    record("django_post_save", number=instance.number, created=created)


def order_saved_all(
    sender: Any,
    instance: Any,
    created: bool,
    update_fields: Any,
    raw: bool,
    using: str,
    **kwargs: Any,
) -> None:
    record(
        "all_post_save",
        sender=label(sender),
        sender_installed=installed(sender),
        number=instance.number,
        created=created,
        update_fields=None if update_fields is None else sorted(update_fields),
        update_fields_type=type(update_fields).__name__,
        raw=raw,
        using=using,
        snapshot=describe(instance),
    )


def any_saved_all(sender: Any, instance: Any, **kwargs: Any) -> None:
    record(
        "any_post_save", sender=label(sender), sender_installed=installed(sender), pk=instance.pk
    )


def order_saved_unscoped(sender: Any, instance: Any, **kwargs: Any) -> None:
    record("unscoped_post_save", number=instance.number)


def order_saved_once(sender: Any, instance: Any, **kwargs: Any) -> None:
    record("once_post_save", number=instance.number)


def deleted_all(sender: Any, instance: Any, using: str, origin: Any, **kwargs: Any) -> None:
    if isinstance(origin, Model):
        shown: Any = {"instance": label(type(origin)), "pk": origin.pk}
    else:
        shown = {"class": label(origin), "installed": installed(origin)}
    record(
        "all_post_delete",
        sender=label(sender),
        sender_installed=installed(sender),
        using=using,
        snapshot=describe(instance),
        origin=shown,
    )


def m2m_all(
    sender: Any,
    instance: Any,
    action: str,
    reverse: bool,
    model: Any,
    pk_set: Any,
    using: str,
    **kwargs: Any,
) -> None:
    record(
        "all_m2m_changed",
        sender=label(sender),
        sender_installed=installed(sender),
        instance=[label(type(instance)), instance.pk],
        action=action,
        reverse=reverse,
        model=label(model),
        model_installed=installed(model),
        pk_set=None if pk_set is None else sorted(pk_set),
        pk_set_type=type(pk_set).__name__,
        using=using,
    )


def _number_in_database(pk: Any) -> Any:
    """Look the order up, in a thread of its own (its SQL is not the listener's)."""
    found: dict[str, Any] = {}

    def look_up() -> None:
        try:
            found["number"] = Order.objects.filter(pk=pk).values_list("number", flat=True).first()
        finally:
            connection.close()

    thread = threading.Thread(target=look_up)
    thread.start()
    thread.join()
    return found.get("number")


def note_received(sender: Any, text: str, order_id: Any = None, **kwargs: Any) -> None:
    record(
        "order_note",
        sender=label(sender),
        text=text,
        order_id=order_id,
        number_in_database=None if order_id is None else _number_in_database(order_id),
    )


def connect() -> None:
    django_post_save.connect(existing_order_saved, sender=Order)
    receiver(post_save, sender=Order, scope="all")(order_saved_all)
    receiver(post_save, scope="all")(any_saved_all)
    receiver(post_save, sender=Order)(order_saved_unscoped)
    receiver(post_save, sender=Order, scope="once", dispatch_uid="shop.once")(order_saved_once)
    receiver(post_delete, scope="all")(deleted_all)
    receiver(m2m_changed, scope="all")(m2m_all)
    receiver(order_note)(note_received)

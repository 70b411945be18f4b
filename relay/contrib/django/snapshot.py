"""
Model instances and model classes on the wire.

A model instance crosses as a *snapshot*: its database alias, the values of its
concrete fields that are loaded (never the deferred ones, so encoding never
queries) and whether it is unsaved, as ``[alias, [attname, ...], [value, ...],
adding]``. The receiving process builds an instance of the same model from them
with ``Model.from_db()``, as if the row had just been loaded, without a database
query: ``_state.db`` is the alias and ``_state.adding`` False (True only for an
instance that was never saved). It reflects the instance as it was when it
was saved (or sent), not the database now; related objects and deferred fields
load from the database on access, as for any instance.

A model class crosses as its label, ``"app_label.ModelName"``.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import enum
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from relay import naming, wire

__all__ = [
    "copy_instance",
    "decode_model_class",
    "decoder",
    "encode_instance",
    "encode_model_class",
    "field_values",
    "register_models",
]

logger = logging.getLogger("relay.contrib.django")

#: The wire name prefix of model instances: ``"django.model:shop.Order"``.
INSTANCE_TYPE_PREFIX: Final = "django.model:"
#: The wire name of model classes (``django.db.models.base.ModelBase``).
CLASS_TYPE_NAME: Final = "django.model_class"

# Values of these exact types cross as they are and never change in place.
_IMMUTABLE: Final = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        decimal.Decimal,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
    }
)

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
_SKIP: Final = object()


def _plain(model_label: str, attname: str, value: Any) -> Any:
    """The value of a field as it crosses the wire, or ``_SKIP`` if it cannot."""
    if type(value) in _IMMUTABLE:
        return value
    if isinstance(value, enum.Enum):
        # A TextChoices/IntegerChoices member, as assigned before save(): the
        # database holds its value, and so does the snapshot.
        value = value.value
        if type(value) in _IMMUTABLE:
            return value
    if isinstance(value, memoryview):
        return bytes(value)
    from django.db.models.fields.files import FieldFile

    if isinstance(value, FieldFile):
        return value.name
    try:
        wire.encode_kwargs({attname: value})
    except (TypeError, ValueError) as exc:
        key = (model_label, attname)
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            logger.warning(
                "%s.%s holds a value relay cannot send (%s); snapshots of %s leave the field "
                "out, and it loads from the database on access",
                model_label,
                attname,
                exc,
                model_label,
            )
        return _SKIP
    return value


def field_values(instance: Any) -> tuple[list[str], list[Any]]:
    """
    The attnames and values of the loaded concrete fields of ``instance``.

    Arguments:

        instance
            A model instance. Deferred fields are left out, so this never
            queries the database. A file field gives its name, binary data
            ``bytes``, a choices member (``TextChoices``) its value; a value
            of a type relay cannot send is left out (and logged once per
            field).
    """
    meta = instance._meta
    deferred = instance.get_deferred_fields()
    names: list[str] = []
    values: list[Any] = []
    for field in meta.concrete_fields:
        attname = field.attname
        if attname in deferred:
            continue
        value = _plain(meta.label, attname, field.value_from_object(instance))
        if value is _SKIP:
            continue
        names.append(attname)
        values.append(value)
    return names, values


def encode_instance(instance: Any) -> list[Any]:
    """Encode a model instance: ``[alias, [attname, ...], [value, ...], adding]``."""
    names, values = field_values(instance)
    return [instance._state.db, names, values, bool(instance._state.adding)]


def _build(model: Any, db: str | None, names: list[str], values: list[Any], adding: bool) -> Any:
    """An instance of ``model`` from field values, as ``QuerySet`` loads one: no query."""
    attnames = [f.attname for f in model._meta.concrete_fields]
    given = dict(zip(names, values, strict=True))
    if len(given) == len(attnames):
        ordered = [given[name] for name in attnames]
        instance = model.from_db(db, attnames, ordered)
    else:
        present = [name for name in attnames if name in given]
        instance = model.from_db(db, present, [given[name] for name in present])
    instance._state.adding = adding
    return instance


def copy_instance(instance: Any) -> Any:
    """
    A snapshot of ``instance``: a new instance of its model with a copy of its
    loaded concrete field values, built without a database query.

    Arguments:

        instance
            A model instance. Later changes to it do not show in the copy.
    """
    names, values = field_values(instance)
    values = [v if type(v) in _IMMUTABLE else copy.deepcopy(v) for v in values]
    state = instance._state
    return _build(type(instance), state.db, names, values, bool(state.adding))


def decoder(model: Any) -> Callable[[Any], Any]:
    """
    The function that builds an instance of ``model`` from its wire form.

    It validates the data (frames come from other processes) and raises
    ``ValueError`` when it is malformed, which rejects the frame.
    """
    label = model._meta.label
    attnames = frozenset(f.attname for f in model._meta.concrete_fields)

    def decode(data: Any) -> Any:
        if type(data) is not list or len(data) != 4:
            raise ValueError(f"a {label} snapshot must be [alias, attnames, values, adding]")
        db, names, values, adding = data
        if (db is not None and type(db) is not str) or type(adding) is not bool:
            raise ValueError(f"a {label} snapshot has a bad database alias or state")
        if type(names) is not list or type(values) is not list or len(names) != len(values):
            raise ValueError(f"a {label} snapshot needs as many values as attnames")
        if not all(type(name) is str for name in names) or len(set(names)) != len(names):
            raise ValueError(f"a {label} snapshot has bad attnames")
        unknown = set(names) - attnames
        if unknown:
            raise ValueError(f"{label} has no concrete fields {sorted(unknown)!r}")
        return _build(model, db, names, values, adding)

    return decode


def encode_model_class(model: Any) -> str:
    """A model class on the wire: its label."""
    label: str = model._meta.label
    return label


def decode_model_class(label: Any) -> Any:
    """The installed model class of a label; raises ``ValueError`` for an unknown one."""
    from django.apps import apps

    if type(label) is not str:
        raise ValueError("a model class crosses as its label")
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        raise ValueError(f"no installed model {label[:200]!r}") from None


def register_models(models: Iterable[Any]) -> None:
    """
    Name models by their label and let their instances and classes cross the wire.

    Arguments:

        models
            Model classes (``apps.get_models(include_auto_created=True)``).
            A model then crosses as a sender named ``"app_label.ModelName"``
            (and arrives as the class), its instances as snapshots and the
            model class itself, as a keyword argument, as its label. Safe to
            call again for the same models.
    """
    from django.db.models.base import ModelBase

    metaclasses: set[type[Any]] = set()
    for model in models:
        label = model._meta.label
        metaclasses.add(type(model))
        try:
            naming.register_name(model, label)
            wire.register_type(model, INSTANCE_TYPE_PREFIX + label, encode_instance, decoder(model))
        except ValueError as exc:
            logger.warning("relay cannot name model %s: %s", label, exc)
    for metaclass in metaclasses:
        name = (
            CLASS_TYPE_NAME
            if metaclass is ModelBase
            else f"{CLASS_TYPE_NAME}:{metaclass.__module__}.{metaclass.__qualname__}"
        )
        try:
            wire.register_type(metaclass, name, encode_model_class, decode_model_class)
        except ValueError as exc:
            logger.warning("relay cannot send model classes of %s: %s", metaclass, exc)

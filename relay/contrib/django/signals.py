"""
The relayed mirrors of Django's model signals.

Django sends its own ``post_save``, ``post_delete`` and ``m2m_changed`` in the
process that saved, and relay leaves them alone. For the models in
``RELAY["MODELS"]``, relay.contrib.django also sends these relay signals when
the transaction commits, and relays them to every other process::

    from relay import receiver
    from relay.contrib.django import post_save

    @receiver(post_save, sender=Order, scope="all")
    def invalidate(sender, instance, created, **kwargs):
        cache.delete(f"order:{instance.pk}")

Their default scope is ``"local"``: a receiver connected without a scope fires
only for saves made in its own process. Connect with ``scope="all"`` to hear
the saves of every process, or ``scope="once"`` to run in exactly one process
per save.

Keyword arguments (``instance`` is a snapshot, see
``relay.contrib.django.snapshot``):

``post_save``
    ``instance``, ``created``, ``update_fields`` (a frozenset or None),
    ``raw``, ``using``.
``post_delete``
    ``instance``, ``using``, ``origin`` (a snapshot of the instance whose
    ``delete()`` started it, or the model class of the queryset).
``m2m_changed``
    ``instance``, ``action`` (``"post_add"``, ``"post_remove"`` or
    ``"post_clear"``), ``reverse``, ``model``, ``pk_set`` (a set, or None),
    ``using``. The sender is the through model.
"""

from __future__ import annotations

from typing import Final

from relay.signals import Signal

__all__ = ["MODEL_SIGNALS", "m2m_changed", "post_delete", "post_save"]

#: Sent when a relayed model's save commits, in every process.
post_save = Signal(name="django.post_save")
#: Sent when a relayed model's delete commits, in every process.
post_delete = Signal(name="django.post_delete")
#: Sent when a change to a many-to-many relation of a relayed model commits.
m2m_changed = Signal(name="django.m2m_changed")

MODEL_SIGNALS: Final = (post_save, post_delete, m2m_changed)

for _signal in MODEL_SIGNALS:
    # Receivers that say nothing keep their Django meaning: this process only.
    _signal.default_scope = "local"
del _signal

"""
relay for Django: model signals and project signals in every process.

Add ``"relay.contrib.django"`` to ``INSTALLED_APPS`` and a ``RELAY`` setting::

    RELAY = {
        "URL": "redis://127.0.0.1:6379/0",
        "NAMESPACE": "shop",
        "SIGNALS": ["shop.signals.order_placed"],
        "MODELS": ["shop.Order", "shop.Customer"],
        "AUTOSTART": True,
        "OPTIONS": {"durable": True, "secret": "..."},
    }

Then connect to the relayed mirrors of Django's model signals with a scope::

    from relay import receiver
    from relay.contrib.django import post_save

    @receiver(post_save, sender=Order, scope="all")
    def invalidate(sender, instance, **kwargs): ...

This module imports nothing of Django's app registry, so it can be the app
module listed in ``INSTALLED_APPS``.
"""

from relay.contrib.django.runtime import get_bridge, start, stop
from relay.contrib.django.signals import m2m_changed, post_delete, post_save

__all__ = ["get_bridge", "m2m_changed", "post_delete", "post_save", "start", "stop"]

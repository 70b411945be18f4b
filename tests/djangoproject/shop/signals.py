import django.dispatch

from relay import Signal

#: The project signal in RELAY["SIGNALS"].
order_note = Signal(name="shop.order_note")

# For the misconfiguration tests: what RELAY["SIGNALS"] may not name.
django_style = django.dispatch.Signal()
unnamed = Signal()
not_a_signal = 42

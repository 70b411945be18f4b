"""
Count the SQL statements each thread runs, on every sqlite connection of the
process (sqlite3's trace callback), so receivers can show that a snapshot
arrived, and was read, without a query.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from django.db.backends.signals import connection_created

_counts: Counter[int] = Counter()


def count() -> int:
    """How many statements the calling thread has run so far."""
    return _counts[threading.get_ident()]


def _trace(connection: Any, **kwargs: Any) -> None:
    if connection.vendor != "sqlite":
        return
    ident = threading.get_ident()  # Django's sqlite connections stay in their thread

    def traced(statement: str) -> None:
        _counts[ident] += 1

    connection.connection.set_trace_callback(traced)


def install() -> None:
    connection_created.connect(_trace, dispatch_uid="shop.sqltrace")

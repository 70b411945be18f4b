"""
Who this process is on the wire: its origin id, message ids, the numbering of
its messages, and what it has accepted from other origins.

An origin names one process lifetime. A forked child is a new origin: it gets
its own id, its own counters and an empty memory of accepted messages, so it
never passes for its parent.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Hashable

from relay.accounting import Windows

__all__ = [
    "Numbering",
    "accepted",
    "after_fork",
    "new_message_id",
    "numbering",
    "origin_id",
]

_origin = ""
_id_prefix = b""
_counter = itertools.count()
_numberings: dict[Hashable, Numbering] = {}
_fork_hooks: list[Callable[[], None]] = []


def _reset() -> None:
    global _origin, _id_prefix, _counter, _numberings
    token = secrets.token_bytes(8)
    _origin = f"{socket.gethostname()}:{os.getpid()}:{token[:4].hex()}"
    _id_prefix = token
    _counter = itertools.count(1)
    _numberings = {}


def _after_fork_in_child() -> None:
    _reset()
    for hook in list(_fork_hooks):
        hook()


_reset()
os.register_at_fork(after_in_child=_after_fork_in_child)


def origin_id() -> str:
    """This process's origin id: ``host:pid:random``, new in every process."""
    return _origin


def new_message_id() -> bytes:
    """A 16-byte id unique to this message: a random per-process prefix and a counter."""
    return _id_prefix + next(_counter).to_bytes(8, "big")


class Numbering:
    """
    The sequence numbers of this process's messages on one namespace and
    signal: 1, 2, 3, ... in the order the messages are queued.

    ``started_at`` is ``time.time()`` when number 1 was taken (None before):
    frames carry it, so that a process that was listening already knows that
    it must have every number from 1. ``lock`` is for callers that must take a
    number and publish the message before anyone else takes the next one.
    """

    __slots__ = ("_next", "lock", "started_at")

    def __init__(self) -> None:
        self._next = 1
        self.started_at: float | None = None
        self.lock = threading.Lock()

    @property
    def taken(self) -> int:
        """How many numbers have been taken."""
        return self._next - 1

    def take(self) -> int:
        """The next number. The caller serialises calls (a queue's lock, say)."""
        number = self._next
        if number == 1:
            self.started_at = time.time()
        self._next = number + 1
        return number


def numbering(key: Hashable) -> Numbering:
    """
    The numbering of this process's messages on ``key`` (a namespace and a
    signal name). Every bridge of the process shares it.
    """
    found = _numberings.get(key)
    if found is None:
        found = _numberings.setdefault(key, Numbering())
    return found


def after_fork(hook: Callable[[], None]) -> Callable[[], None]:
    """
    Call ``hook`` in a forked child, after the origin has been renewed.

    Returns a function that removes the hook again.
    """
    _fork_hooks.append(hook)

    def remove() -> None:
        if hook in _fork_hooks:
            _fork_hooks.remove(hook)

    return remove


#: What this process has accepted from every origin, and what it lost. Every
#: bridge of the process shares it, so that two bridges on one namespace never
#: fire one message twice, and a loss is reported once.
accepted = Windows()
after_fork(accepted.forget_all)

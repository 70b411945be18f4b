"""
Who this process is on the wire: its origin id, message ids and the ids it has seen.

An origin names one process lifetime. A forked child is a new origin: it gets
its own id, its own id counter and an empty memory of seen messages, so it
never passes for its parent.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
from collections.abc import Callable, Hashable, Iterator

__all__ = [
    "SeenIds",
    "Sequences",
    "after_fork",
    "new_message_id",
    "origin_id",
    "received",
    "seen",
    "sequence",
]

_origin = ""
_id_prefix = b""
_counter = itertools.count()
_sequences: dict[Hashable, Iterator[int]] = {}
_fork_hooks: list[Callable[[], None]] = []


def _reset() -> None:
    global _origin, _id_prefix, _counter, _sequences
    token = secrets.token_bytes(8)
    _origin = f"{socket.gethostname()}:{os.getpid()}:{token[:4].hex()}"
    _id_prefix = token
    _counter = itertools.count(1)
    _sequences = {}


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


def sequence(key: Hashable) -> Iterator[int]:
    """
    The sequence numbers of this process's messages on ``key`` (a namespace
    and signal name): 1, 2, 3, ... Every bridge of the process shares it.
    """
    found = _sequences.get(key)
    if found is None:
        found = _sequences.setdefault(key, itertools.count(1))
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


class SeenIds:
    """
    A bounded, thread-safe memory of message ids, oldest forgotten first.

    Arguments:

        capacity
            How many ids to remember. A duplicate older than this many later
            messages is no longer recognised.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: dict[str, object] = {}
        self._trim_lock = threading.Lock()

    def add(self, message_id: str) -> bool:
        """Remember ``message_id``; return False if it was already there."""
        mark = object()
        # dict.setdefault is atomic: of two threads adding one id, one wins.
        if self._ids.setdefault(message_id, mark) is not mark:
            return False
        if len(self._ids) > self.capacity:
            self._trim()
        return True

    def _trim(self) -> None:
        with self._trim_lock:
            excess = len(self._ids) - self.capacity
            if excess > 0:
                for old in list(itertools.islice(self._ids, excess + self.capacity // 10)):
                    self._ids.pop(old, None)

    def forget_all(self) -> None:
        """Start afresh without taking the lock (a thread may have held it at fork)."""
        self._ids = {}
        self._trim_lock = threading.Lock()


#: Every bridge of this process shares it, so that two bridges on one namespace
#: never fire one message twice.
seen = SeenIds()
after_fork(seen.forget_all)


class Sequences:
    """
    The highest sequence number this process has received per key (a
    namespace, an origin and a signal name), to notice lost messages.

    Arguments:

        capacity
            How many keys to remember; the least recently seen are forgotten.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._last: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def observe_many(self, key: Hashable, seqs: list[int]) -> list[tuple[int, int]]:
        """
        Record the sequence numbers of one frame, in order; return every jump
        past the highest number seen so far as ``(first_missing, count)``.
        The first number seen for a key is never a gap: a process that starts
        listening late, or an origin restarted under a new id, has lost
        nothing.
        """
        gaps = []
        with self._lock:
            last = self._last.pop(key, None)
            for seq in seqs:
                if last is not None and seq > last + 1:
                    gaps.append((last + 1, seq - last - 1))
                if last is None or seq > last:
                    last = seq
            if last is not None:
                self._last[key] = last
            if len(self._last) > self.capacity:
                for old in list(itertools.islice(self._last, len(self._last) - self.capacity)):
                    del self._last[old]
        return gaps

    def forget_all(self) -> None:
        """Start afresh without taking the lock (a thread may have held it at fork)."""
        self._last = {}
        self._lock = threading.Lock()


#: Shared by every bridge of the process, so a gap is reported once.
received = Sequences()
after_fork(received.forget_all)

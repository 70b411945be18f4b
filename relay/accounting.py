"""
Delivery accounting: which relayed messages a process has accepted, and which it lost.

Every origin (one process lifetime) numbers its messages per namespace and
signal: 1, 2, 3, ... in the order it queues them. A receiving process keeps,
per ``(namespace, origin, signal)``, an anti-replay window like those of IPsec
and DTLS: the highest number accepted and a bitmap of the ``WINDOW`` numbers
below it. A message is accepted once: its number must be above the highest, or
inside the window and not yet seen. Anything older than the window is refused
however many messages passed in between, and a jump past the highest number is
a loss. Numbers reported lost count as seen, so a message is either fired once
or reported lost once, never both.

This module does no I/O and knows nothing of Redis; the bridges call it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Final, NamedTuple

__all__ = ["CAPACITY", "WINDOW", "Verdict", "Windows"]

#: How many numbers below the highest one a window remembers.
WINDOW: Final = 1024
#: How many (namespace, origin, signal) windows a process keeps; beyond that
#: the least recently heard is forgotten.
CAPACITY: Final = 100_000
_MASK: Final = (1 << WINDOW) - 1


class Verdict(NamedTuple):
    """
    What ``Windows.observe`` decided for the sequence numbers of one frame.

    ``fresh`` lists the indexes (into the numbers given) of the messages to
    fire; ``duplicates`` counts numbers seen before, ``stale`` numbers older
    than the window; ``lost`` lists ``(first_missing, count)`` ranges that
    never arrived. ``deferred`` is True when ``defer_losses`` was asked and a
    loss was found: nothing was recorded, so the caller can recover the
    missing messages first and observe the frame again.
    """

    fresh: list[int]
    duplicates: int
    stale: int
    lost: list[tuple[int, int]]
    deferred: bool = False


_DEFERRED: Final = Verdict([], 0, 0, [], True)


class _Window:
    __slots__ = ("bits", "high")

    def __init__(self, high: int, bits: int) -> None:
        self.high = high
        self.bits = bits  # bit i set: number high - i was accepted (or reported lost)


class Windows:
    """
    The anti-replay and loss-detecting windows of one process, thread-safe.

    Arguments:

        capacity
            How many ``(namespace, origin, signal)`` windows to keep. When a
            new one would exceed it, the least recently heard is forgotten;
            that origin's next message is then taken as a first contact.

    Memory is bounded: a window takes about 250 bytes, so the default capacity
    costs at most about 25 MB, and a few KB for a typical fleet.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._windows: OrderedDict[Hashable, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def highest(self, key: Hashable) -> int | None:
        """The highest number accepted for ``key``, or None if it was never heard."""
        window = self._windows.get(key)
        return None if window is None else window.high

    def observe(
        self,
        key: Hashable,
        seqs: Sequence[int],
        *,
        earlier_missing: bool = False,
        settled: bool = True,
        defer_losses: bool = False,
    ) -> Verdict:
        """
        Record the sequence numbers of one frame, in order, and say which to fire.

        Arguments:

            key
                The namespace, origin and signal the numbers belong to.

            seqs
                The frame's sequence numbers, in the frame's order.

            earlier_missing
                Only for a first contact (``key`` never heard): True if the
                numbers below the first one were sent while this process was
                listening, so that they count as lost; False if they may have
                been sent before it listened, and are no concern of it.

            settled
                Only for a first contact without ``earlier_missing``: True if
                the numbers below the first one are settled, and refused if
                they come later; False if they may still arrive (the frame
                comes from a log read while live copies of earlier messages
                are on their way).

            defer_losses
                If a loss is found, record nothing and return a ``deferred``
                verdict, so that the caller can fetch the missing messages
                (from a durable log) before observing this frame again.
        """
        with self._lock:
            window = self._windows.get(key)
            if window is not None:
                self._windows.move_to_end(key)
                high = window.high
                count = len(seqs)
                # The common case: the next numbers, in order.
                if seqs[0] == high + 1 and seqs[-1] == high + count and (
                    count == 1 or list(seqs) == list(range(high + 1, high + count + 1))
                ):
                    window.high = high + count
                    window.bits = ((window.bits << count) | ((1 << count) - 1)) & _MASK
                    return Verdict(list(range(count)), 0, 0, [])
                if defer_losses and _loses(high, seqs):
                    return _DEFERRED
            else:
                first = seqs[0]
                if defer_losses and (
                    (earlier_missing and first > 1) or _loses(first, seqs)
                ):
                    return _DEFERRED
                # Numbers below the first one are expected from 1 if they were
                # sent while this process listened; else they are none of its
                # concern, and refused if they come later (a replay) unless
                # they may still be on their way.
                if earlier_missing:
                    window = _Window(0, _MASK)
                else:
                    window = _Window(first - 1, _MASK if settled else 0)
                self._windows[key] = window
                if len(self._windows) > self.capacity:
                    self._windows.popitem(last=False)
            return _record(window, seqs)

    def forget_all(self) -> None:
        """Start afresh without taking the lock (a thread may have held it at fork)."""
        self._windows = OrderedDict()
        self._lock = threading.Lock()


def _loses(high: int, seqs: Sequence[int]) -> bool:
    """True if accepting ``seqs`` after ``high`` would skip a number."""
    for seq in seqs:
        if seq > high + 1:
            return True
        high = max(high, seq)
    return False


def _record(window: _Window, seqs: Sequence[int]) -> Verdict:
    fresh: list[int] = []
    lost: list[tuple[int, int]] = []
    duplicates = stale = 0
    for index, seq in enumerate(seqs):
        high = window.high
        if seq > high:
            if seq > high + 1:
                lost.append((high + 1, seq - high - 1))
            # The skipped numbers count as seen: reported lost, never fired later.
            shift = seq - high
            window.bits = ((window.bits << shift) | ((1 << shift) - 1)) & _MASK
            window.high = seq
            fresh.append(index)
            continue
        offset = high - seq
        if offset >= WINDOW:
            stale += 1
        elif window.bits >> offset & 1:
            duplicates += 1
        else:
            window.bits |= 1 << offset
            fresh.append(index)
    return Verdict(fresh, duplicates, stale, lost)

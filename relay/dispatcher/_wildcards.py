"""The ``Any`` and ``Anonymous`` markers of the deprecated module-level API."""

from __future__ import annotations

from typing import Final

__all__ = ["Anonymous", "Any"]


class _Marker:
    """A singleton that stands for a sender or a signal; pickles and copies as itself."""

    __slots__ = ()
    _name = ""

    def __repr__(self) -> str:
        return f"relay.dispatcher.{self._name}"

    def __reduce__(self) -> str:
        # Pickled by reference: unpickling gives back this very object.
        return self._name

    def __copy__(self) -> _Marker:
        return self

    def __deepcopy__(self, memo: object) -> _Marker:
        return self


class _AnyMarker(_Marker):
    """
    "Any sender" or "any signal".

    As ``connect``'s ``sender`` (the default), the receiver hears every
    sender; as its ``signal``, every signal sent through ``relay.dispatcher``.
    As ``send``'s ``sender``, only receivers connected for ``Any`` hear it.
    """

    __slots__ = ()
    _name = "Any"


class _AnonymousMarker(_Marker):
    """
    "No sender", the default sender of ``send``.

    A receiver connected for ``Anonymous`` hears only sends that name no
    sender (or name ``Anonymous``). On a ``relay.Signal``, ``Anonymous`` and
    ``None`` are the same sender: the new API's ``signal.send(None)``.
    """

    __slots__ = ()
    _name = "Anonymous"


Any: Final = _AnyMarker()
Anonymous: Final = _AnonymousMarker()

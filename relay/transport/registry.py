"""
Which broker backend serves a URL or a client.

A backend is a module with these functions (see ``relay.transport.redis``):

``from_url(url, asynchronous, options)``
    The transport for ``url``: a ``Transport``, or an ``AsyncTransport``
    with ``asynchronous``. ``options`` are keyword arguments for the client.

``from_client(client, asynchronous)``
    The transport around an existing client, or None if the backend does not
    know that kind of client.

A new broker is a new module and one ``register_scheme()`` line.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from relay.transport.base import AsyncTransport, Transport

__all__ = ["register_scheme", "schemes", "transport_for"]


class Backend(Protocol):
    def from_url(
        self, url: str, asynchronous: bool, options: dict[str, Any]
    ) -> Transport | AsyncTransport: ...

    def from_client(self, client: Any, asynchronous: bool) -> Transport | AsyncTransport | None: ...


_SCHEMES: dict[str, str] = {}
# Asked in this order for a client; the plainest kind last.
_CLIENT_BACKENDS: list[str] = []


def register_scheme(scheme: str, module: str) -> None:
    """
    Serve URLs of ``scheme`` (``"redis+cluster"``, say) with the backend
    module named ``module``, imported when first needed.
    """
    _SCHEMES[scheme] = module
    if module not in _CLIENT_BACKENDS:
        _CLIENT_BACKENDS.insert(0, module)


def schemes() -> list[str]:
    """The URL schemes relay knows, such as ``redis`` and ``redis+sentinel``."""
    return sorted(_SCHEMES)


def _backend(module: str) -> Backend:
    return cast(Backend, importlib.import_module(module))


def transport_for(
    url: str | None, client: Any, *, asynchronous: bool, options: dict[str, Any]
) -> Transport | AsyncTransport:
    """
    The transport for a broker ``url`` or an existing ``client`` (one of the
    two), threaded or ``asynchronous``. Raises ``ValueError`` for a URL whose
    scheme no backend serves and ``TypeError`` for a client none knows.
    """
    if client is not None:
        if url is not None:
            raise TypeError("pass a URL or client=, not both")
        if options:
            raise TypeError(
                f"options such as {sorted(options)[0]}= go with a URL; configure the client instead"
            )
        for name in _CLIENT_BACKENDS:
            transport = _backend(name).from_client(client, asynchronous)
            if transport is not None:
                return transport
        kinds = (
            "a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster"
            if asynchronous
            else "a redis.Redis (also from Sentinel.master_for()) or redis.cluster.RedisCluster"
        )
        raise TypeError(f"client= must be {kinds}, not {type(client).__qualname__}")
    if not isinstance(url, str):
        raise TypeError(f"the broker URL must be a string, not {type(url).__qualname__}")
    scheme = urlsplit(url).scheme.lower()
    served_by = _SCHEMES.get(scheme)
    if served_by is None:
        known = ", ".join(f"{name}://" for name in schemes())
        raise ValueError(f"invalid Redis URL {url!r}: unknown scheme {scheme!r}; use {known}")
    return _backend(served_by).from_url(url, asynchronous, options)


register_scheme("redis", "relay.transport.redis")
register_scheme("rediss", "relay.transport.redis")
register_scheme("unix", "relay.transport.redis")
register_scheme("redis+sentinel", "relay.transport.sentinel")
register_scheme("rediss+sentinel", "relay.transport.sentinel")
register_scheme("redis+cluster", "relay.transport.cluster")
register_scheme("rediss+cluster", "relay.transport.cluster")

"""Small asyncio helpers for running receivers; nothing here knows about signals."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


def is_async_callable(obj: object) -> bool:
    """
    Return True when calling ``obj`` returns a coroutine.

    Recognises ``async def`` functions and methods, ``functools.partial`` of
    them, and callable objects whose ``__call__`` is ``async def``.
    """
    if inspect.iscoroutinefunction(obj):
        return True
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    if not inspect.isroutine(obj) and not inspect.isclass(obj):
        return inspect.iscoroutinefunction(getattr(obj, "__call__", None))  # noqa: B004
    return False


def restore_context(context: contextvars.Context) -> None:
    """Copy every variable that differs in ``context`` into the current context."""
    for var, value in context.items():
        try:
            if var.get() is value:
                continue
        except LookupError:
            pass
        var.set(value)


async def run_parallel(
    calls: Sequence[Callable[[], Awaitable[Any]]], context: contextvars.Context
) -> list[Any]:
    """
    Run the coroutines made by ``calls`` concurrently in one shared ``context``.

    Results come back in the order of ``calls``. As with Django 6.1, when one
    call raises, the others are cancelled; a single error is raised as it is,
    several as an ``ExceptionGroup``.
    """
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await call()

    try:
        async with asyncio.TaskGroup() as group:
            for index, call in enumerate(calls):
                group.create_task(run(index, call), context=context)
    except BaseExceptionGroup as exc_group:
        if len(exc_group.exceptions) == 1:
            raise exc_group.exceptions[0] from None
        raise
    return results


def run_coroutine_sync(calls: Sequence[Callable[[], Awaitable[Any]]], what: str) -> list[Any]:
    """
    Run ``calls`` in parallel from synchronous code, on a private event loop.

    Context-variable changes made by the coroutines are written back to the
    caller's context. Raises RuntimeError when the calling thread already runs
    an event loop, where blocking on the coroutines would deadlock it.
    """
    ensure_no_running_loop(what)
    context = contextvars.copy_context()
    try:
        # A loop_factory keeps the Runner from replacing (and on exit
        # clearing) the calling thread's current event loop.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(run_parallel(calls, context))
    finally:
        restore_context(context)


def ensure_no_running_loop(what: str) -> None:
    """Raise RuntimeError if the current thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"Signal.{what}() cannot run async receivers from inside a running event "
        f"loop; use 'await signal.a{what}(...)' instead."
    )

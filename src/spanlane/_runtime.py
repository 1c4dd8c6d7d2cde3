"""The bridge to the running event loop: the few things anyio does not offer for both backends.

This is the one module of ``src/`` that imports ``asyncio`` and (lazily) ``trio``:

- :func:`spawn_service` starts the tracer's service task, owned by the event loop itself rather
  than by the caller's task, so that nothing the tracer does can corrupt the caller's cancel
  scopes, and a tracer that is never exited is still drained when the loop ends;
- :func:`ki_protected` keeps trio's ``KeyboardInterrupt`` off telemetry tasks, so that a real
  Ctrl-C reaches the application's main task instead of a drain worker;
- :class:`LoopHandle` lets any thread schedule a callback on the loop without waiting for it;
- :func:`is_cancellation` and :func:`cancel_requested` tell the running backend's own
  cancellation from an exception that merely looks like one; :func:`absorb_loop_cancellation`
  lets a telemetry task outlive ``asyncio.run``'s cancellation of every task, to drain.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from typing import Any

import anyio
import anyio.lowlevel

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup


class LoopGone(Exception):
    """The event loop a :class:`LoopHandle` points at has finished or is not running."""


def _trio() -> Any:
    """The trio module if the running backend is trio, else None."""
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except Exception:  # no async library is running in this thread
        return None
    return trio if cancelled is trio.Cancelled else None


def _cancellation_classes() -> tuple[type[BaseException], ...]:
    try:
        return (anyio.get_cancelled_exc_class(),)
    except Exception:
        # A worker thread has no running backend; a cancellation seen there (a context copied
        # from the loop by to_thread) is still one.
        trio = sys.modules.get("trio")
        if trio is not None:
            return (asyncio.CancelledError, trio.Cancelled)
        return (asyncio.CancelledError,)


def is_cancellation(exc: BaseException) -> bool:
    """True for the running backend's cancellation, also an exception group made only of it."""
    if isinstance(exc, _cancellation_classes()):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    return False


def cancel_requested() -> bool:
    """True when something has asked to cancel the current asyncio task.

    On asyncio a ``CancelledError`` may come from awaiting a future that someone else cancelled;
    the task itself is then not being cancelled, and ``Task.cancelling()`` says so. Python 3.10
    has no such counter, so there every ``CancelledError`` is taken to be meant for the task.
    trio has only scope cancellation, which the caller checks on its scopes.
    """
    if _trio() is not None:
        return False
    task = asyncio.current_task()
    if task is None:
        return False
    cancelling = getattr(task, "cancelling", None)
    if cancelling is None:  # pragma: no cover - Python 3.10
        return True
    return bool(cancelling())


def absorb_loop_cancellation() -> bool:
    """Undo a native ``Task.cancel()`` of the current asyncio task; True if there was one.

    When ``asyncio.run`` finishes with telemetry tasks still running (a tracer never exited),
    it cancels every task once and waits for them. A drain worker absorbs that request and
    carries on: the tracer's shutdown, which has its own deadline, decides when it stops.
    ``uncancel()`` keeps the task's cancellation count right, so that anyio's own scopes in
    the task still work. Always False on trio, whose cancellation is scope-based only.

    A cancellation that an enclosing anyio scope delivers (anyio also uses ``Task.cancel()``
    on asyncio) is never absorbed: the scope would deliver it again at every await, and a
    worker that kept absorbing it would spin at teardown instead of finishing.
    """
    if _trio() is not None:
        return False
    task = asyncio.current_task()
    if task is None:
        return False
    if anyio.current_effective_deadline() <= anyio.current_time():
        return False  # an enclosing scope is cancelled (-inf) or past its deadline
    uncancel = getattr(task, "uncancel", None)
    if uncancel is None:  # pragma: no cover - Python 3.10 counts nothing
        return True
    if getattr(task, "cancelling", lambda: 0)():
        uncancel()
        return True
    return False


async def _protected_call(func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await func(*args, **kwargs)


_protected_on_trio: Callable[..., Awaitable[Any]] | None = None


def ki_protected(
    func: Callable[..., Awaitable[Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Return an async callable that runs ``func`` with trio's KeyboardInterrupt protection.

    trio raises ``KeyboardInterrupt`` in whatever code runs when Ctrl-C arrives, unless that
    code is protected, in which case it is delivered to the main task. Telemetry tasks are
    protected so that Ctrl-C stops the application, not a drain worker. On asyncio this returns
    ``func`` (its runner turns Ctrl-C into cancellation of the main task).
    """
    global _protected_on_trio
    trio = _trio()
    if trio is None:

        async def unprotected(*args: Any, **kwargs: Any) -> Any:
            return await func(*args, **kwargs)

        return unprotected
    if _protected_on_trio is None:
        _protected_on_trio = trio.lowlevel.enable_ki_protection(_protected_call)
    wrapper = _protected_on_trio

    async def call(*args: Any, **kwargs: Any) -> Any:
        return await wrapper(func, *args, **kwargs)

    return call


# asyncio keeps only weak references to tasks: a service task waiting on an event nobody else
# references could be garbage-collected mid-flight. This set holds each one until it finishes.
_services: set[asyncio.Task[Any]] = set()


def spawn_service(func: Callable[[], Awaitable[None]], name: str) -> None:
    """Start ``func()`` as a task that belongs to the event loop, in an empty context.

    On trio it is a system task (KeyboardInterrupt-protected, cancelled when the main task
    exits); on asyncio a task of the loop (cancelled by ``asyncio.run`` when the main coroutine
    returns). ``func`` must never raise: it is nobody's child, so nobody would hear it.
    """
    trio = _trio()
    if trio is not None:
        trio.lowlevel.spawn_system_task(func, name=name, context=Context())
        return
    loop = asyncio.get_running_loop()

    async def service() -> None:
        await func()

    # Context().run: the task copies the (empty) context it is created in, on Python 3.10 too,
    # where create_task has no context argument.
    task = Context().run(loop.create_task, service(), name=name)
    _services.add(task)
    task.add_done_callback(_services.discard)


class LoopHandle:
    """Schedules callbacks on one event loop from any thread, without waiting for them."""

    __slots__ = ("_call_soon", "_gone", "_is_running")

    def __init__(self) -> None:
        trio = _trio()
        self._gone: tuple[type[BaseException], ...]
        if trio is not None:
            token = trio.lowlevel.current_trio_token()
            self._call_soon: Callable[[Callable[[], object]], object] = token.run_sync_soon
            self._is_running: Callable[[], bool] | None = None
            self._gone = (trio.RunFinishedError,)
        else:
            loop = asyncio.get_running_loop()
            self._call_soon = loop.call_soon_threadsafe
            self._is_running = loop.is_running
            self._gone = (RuntimeError,)

    def call_soon(self, func: Callable[[], object]) -> None:
        """Schedule ``func()`` on the loop; never blocks.

        Raises:
            LoopGone: the loop has finished (or, on asyncio, is closed or not running), so the
                callback would never run.
        """
        if self._is_running is not None and not self._is_running():
            raise LoopGone("the event loop is not running")
        try:
            self._call_soon(func)
        except self._gone as exc:
            raise LoopGone(str(exc)) from None


async def checkpoint() -> None:
    """Yield to the event loop once (a cancellation point)."""
    await anyio.lowlevel.checkpoint()

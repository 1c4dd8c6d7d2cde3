"""TracingLifespan: open the tracer when an ASGI server starts, drain it when the server stops.

A tracer owns a task group, so it has to live in one task for the server's whole life. The ASGI
lifespan task is exactly that: it starts before the first request and the server waits for its
``lifespan.shutdown.complete`` before it exits. Holding that message back until the tracer has
drained is what makes stopping the server lose no span.

Context variables set in the lifespan task are not visible in request tasks (servers start those
from their own tasks), so the tracer is handed to :class:`~spanlane.asgi.TracingMiddleware` by
reference: through the ASGI lifespan state (``scope["state"]["spanlane.tracer"]``, copied into
every request scope by the server) and through :attr:`TracingLifespan.tracer`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ._tracer import Tracer, open_tracer
from .exporters._base import Exporter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A Starlette/FastAPI style lifespan: ``app -> async context manager yielding state``.
AppLifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]

#: The lifespan-state key under which the open tracer is published to request scopes.
STATE_KEY = "spanlane.tracer"

_FINAL_MESSAGES = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


class TracingLifespan:
    """Opens a tracer for an ASGI app's lifetime; build it with :func:`lifespan`.

    Use it as a Starlette/FastAPI ``lifespan=`` argument (calling it with the app returns an
    async context manager yielding the lifespan state), or wrap any ASGI app with :meth:`wrap`.
    One instance serves one running app at a time; each start opens a fresh tracer with the
    same exporters and options.
    """

    def __init__(
        self,
        exporters: tuple[Exporter, ...],
        tracer_options: Mapping[str, Any],
        app_lifespan: AppLifespan | None,
    ) -> None:
        self._exporters = exporters
        self._options = dict(tracer_options)
        self._app_lifespan = app_lifespan
        self._tracer: Tracer | None = None

    def __repr__(self) -> str:
        return f"<TracingLifespan tracer={self._tracer!r}>"

    @property
    def tracer(self) -> Tracer | None:
        """The tracer while the app runs (also while it drains at shutdown), else None."""
        return self._tracer

    def __call__(self, app: Any) -> AbstractAsyncContextManager[dict[str, Any]]:
        """The lifespan context for ``app``: opens the tracer, runs ``app_lifespan`` inside it.

        Yields the lifespan state: ``{"spanlane.tracer": tracer}`` merged with the state the
        ``app_lifespan`` yields, if any.
        """
        return self._run(app)

    @asynccontextmanager
    async def _run(self, app: Any) -> AsyncIterator[dict[str, Any]]:
        if self._tracer is not None:
            raise RuntimeError("this TracingLifespan is already running an app")
        try:
            async with open_tracer(*self._exporters, **self._options) as tracer:
                self._tracer = tracer
                state: dict[str, Any] = {STATE_KEY: tracer}
                if self._app_lifespan is None:
                    yield state
                else:
                    async with self._app_lifespan(app) as app_state:
                        if app_state:
                            state.update(app_state)
                        yield state
        finally:
            self._tracer = None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Wrap an ASGI app so that its ``lifespan`` scope opens and drains the tracer.

        The app's own lifespan handling (if it has any) runs inside the open tracer; an app
        that does not speak the lifespan protocol is answered for, as a server would.
        """
        return _LifespanApp(self, app)


class _LifespanApp:
    """The ASGI app returned by :meth:`TracingLifespan.wrap`."""

    def __init__(self, owner: TracingLifespan, app: ASGIApp) -> None:
        self.owner = owner
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "lifespan":
            await self.app(scope, receive, send)
            return
        await _LifespanRun(self.app, scope, receive, send).run(self.owner)


class _LifespanRun:
    """One run of the lifespan protocol, with the app's lifespan nested inside the tracer."""

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.startup_received = False
        self.shutdown_received = False
        self.app_answered_startup = False
        self.startup_failed = False
        # Final messages wait here until the tracer has drained: the server may exit as soon
        # as it sees them.
        self.held: list[Message] = []

    async def run(self, owner: TracingLifespan) -> None:
        try:
            async with owner(self.app) as state:
                server_state = self.scope.get("state")
                if isinstance(server_state, MutableMapping):
                    server_state.update(state)
                await self._run_app()
        except Exception as exc:
            if not self.app_answered_startup and not self.held:
                # Opening the tracer failed, before anyone answered the server's startup.
                if not self.startup_received:
                    await self._receive()
                await self.send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            raise
        finally:
            for message in self.held:
                await self.send(message)

    async def _run_app(self) -> None:
        try:
            await self.app(self.scope, self._receive, self._send)
        except Exception:
            if self.app_answered_startup:
                raise
            # Like a server, treat an app that fails before answering startup as one without
            # lifespan support, and carry on without it.
        if not self.app_answered_startup:
            if not self.startup_received:
                await self._receive()
            await self.send({"type": "lifespan.startup.complete"})
            self.app_answered_startup = True
        if self.startup_failed:
            return  # the server stops without a shutdown message
        while not self.shutdown_received:
            await self._receive()
        if not self.held:
            self.held.append({"type": "lifespan.shutdown.complete"})

    async def _receive(self) -> Message:
        message = await self.receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            self.startup_received = True
        elif kind == "lifespan.shutdown":
            self.shutdown_received = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self.app_answered_startup = True
            self.startup_failed = kind == "lifespan.startup.failed"
        if kind in _FINAL_MESSAGES:
            self.held.append(message)
        else:
            await self.send(message)


def lifespan(
    *exporters: Exporter, app_lifespan: AppLifespan | None = None, **tracer_options: Any
) -> TracingLifespan:
    """A lifespan that opens a tracer at server startup and drains it at shutdown.

    For Starlette and FastAPI pass it as ``lifespan=``; for any other ASGI app use
    ``lifespan(...).wrap(app)``. Add :class:`~spanlane.asgi.TracingMiddleware` to trace the
    requests: it finds this tracer through the lifespan state.

    Args:
        *exporters: the exporters of the tracer (see :func:`spanlane.open_tracer`).
        app_lifespan: the app's own lifespan (``app -> async context manager``), run inside
            the open tracer so that its startup and shutdown work is traced too; the state it
            yields is merged into the lifespan state.
        **tracer_options: passed to :func:`spanlane.open_tracer` at each startup.

    Returns:
        A :class:`TracingLifespan`.
    """
    return TracingLifespan(exporters, tracer_options, app_lifespan)

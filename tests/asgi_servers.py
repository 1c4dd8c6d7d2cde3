"""Real servers and apps for the ASGI, httpx and example tests, all on 127.0.0.1.

- :func:`serve_hypercorn` serves an ASGI app with hypercorn on the running backend (asyncio or
  trio); :func:`serve_uvicorn` with uvicorn (asyncio only).
- :class:`WaitingExporter` is a memory exporter a test can wait on, instead of sleeping.
- :func:`downstream_app` and :func:`frontend_app` are plain ASGI apps (no framework), shaped like
  the examples: the frontend calls the downstream with a traced httpx client.

Each server listens before it starts, so the kernel queues early connections and no readiness
handshake is needed; leaving the context manager stops the server gracefully, which runs the
ASGI lifespan shutdown (and so drains a lifespan's tracer) before it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from time import time_ns
from typing import Any

import anyio
import httpx
from hypercorn.config import Config

import spanlane
from spanlane.asgi import Message, Receive, Scope, Send
from spanlane.exporters import MemoryExporter
from spanlane.httpx import TracingTransport
from spanlane.propagation import extract

ASGIApp = Callable[[Scope, Receive, Send], Any]


def listening_socket() -> socket.socket:
    """A TCP socket on a free port of 127.0.0.1, already listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.asynccontextmanager
async def serve_hypercorn(
    app: Any, backend: str, *, sock: socket.socket | None = None, graceful_timeout: float = 5.0
) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn on ``backend``; yields the base URL.

    Args:
        app: the ASGI application.
        backend: ``"asyncio"`` or ``"trio"``.
        sock: a bound socket to listen on; a new one on a free port by default. The caller keeps
            ownership of a socket it passes in.
        graceful_timeout: seconds hypercorn waits for open requests when stopping.
    """
    listening = listening_socket() if sock is None else sock
    try:
        # Listening before the server starts means the kernel queues early connections: no
        # readiness handshake is needed.
        listening.listen(64)
        port = listening.getsockname()[1]
        config = Config()
        # hypercorn takes ownership of (and closes) this duplicate; we close the original.
        config.bind = [f"fd://{os.dup(listening.fileno())}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = graceful_timeout
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if backend == "trio":
                from hypercorn.trio import serve as serve_trio

                tg.start_soon(lambda: serve_trio(app, config, shutdown_trigger=stop.wait))
            else:
                from hypercorn.asyncio import serve as serve_asyncio

                tg.start_soon(lambda: serve_asyncio(app, config, shutdown_trigger=stop.wait))
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                stop.set()
    finally:
        if sock is None:
            listening.close()


@contextlib.asynccontextmanager
async def serve_uvicorn(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn (asyncio only); yields the base URL."""
    import uvicorn

    sock = listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", ws="none", http="h11", log_level="critical", access_log=False
    )
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            # uvicorn closes the sockets it is given when it shuts down.
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


class WaitingExporter(MemoryExporter):
    """A memory exporter that lets a test wait until the spans it expects have arrived."""

    def __init__(self, name: str = "WaitingExporter") -> None:
        super().__init__(name=name)
        self._arrived: anyio.Event | None = None

    async def export(self, batch: Sequence[spanlane.SpanRecord]) -> None:
        await super().export(batch)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    async def wait_for(
        self, predicate: Callable[[list[spanlane.SpanRecord]], bool], seconds: float = 10.0
    ) -> list[spanlane.SpanRecord]:
        """Wait (at most ``seconds``) until ``predicate(spans)`` holds; return the spans."""
        with anyio.fail_after(seconds):
            while not predicate(self.spans):
                self._arrived = self._arrived or anyio.Event()
                await self._arrived.wait()
        return self.spans

    async def wait_for_count(self, count: int) -> list[spanlane.SpanRecord]:
        """Wait until at least ``count`` end records have arrived."""
        return await self.wait_for(lambda spans: len(spans) >= count)


# --- apps ---------------------------------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body", False):
            return body


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan_passthrough(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol (an app that supports it but does nothing)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def downstream_app() -> ASGIApp:
    """``GET /stock/{item}``: answers with what it saw of the trace, inside a child span.

    ``GET /status/{code}`` answers with that status code. It publishes the route the way
    Starlette does, in ``scope["route"]``.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_passthrough(receive, send)
            return
        path: str = scope["path"]
        await read_body(receive)
        if path.startswith("/status/"):
            await send_json(send, int(path.rsplit("/", 1)[1]), {})
            return
        scope["route"] = "/stock/{item}"
        with spanlane.span("check stock") as span:
            span.set_attribute("item", path.rsplit("/", 1)[1])
            parent = extract(scope["headers"])
        await send_json(
            send,
            200,
            {
                "traceparent_seen": parent is not None,
                "trace_id": f"{parent.trace_id:032x}" if parent else None,
                "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                "sampled": parent.is_sampled if parent else None,
            },
        )

    return app


class FrontendProbe:
    """What the frontend app saw, for assertions (its spans are live objects)."""

    def __init__(self) -> None:
        self.stream_span: spanlane.Span | None = None
        self.open_before_last_chunk: bool | None = None
        self.last_chunk_ns = 0
        self.release_stream: anyio.Event | None = None


class Boom(Exception):
    """The exception the frontend's ``/boom`` raises."""


def frontend_app(downstream_url: str, probe: FrontendProbe | None = None) -> ASGIApp:
    """A plain ASGI app with the routes the tests need.

    - ``/order/{item}``: calls ``{downstream_url}/stock/{item}`` with a traced httpx client;
    - ``/fail``: answers 500;
    - ``/boom``: raises :class:`Boom` before answering;
    - ``/stream``: streams three chunks, waiting for ``probe.release_stream`` before the last.
    """
    probe = probe if probe is not None else FrontendProbe()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_passthrough(receive, send)
            return
        path: str = scope["path"]
        await read_body(receive)
        if path.startswith("/order/"):
            scope["route"] = "/order/{item}"
            item = path.rsplit("/", 1)[1]
            async with httpx.AsyncClient(transport=TracingTransport()) as client:
                response = await client.get(f"{downstream_url}/stock/{item}")
            await send_json(send, 200, {"downstream": response.json()})
        elif path == "/fail":
            await send_json(send, 500, {"error": "failed on purpose"})
        elif path == "/boom":
            raise Boom("exploded on purpose")
        elif path == "/stream":
            await _stream(send, probe)
        else:
            await send_json(send, 404, {})

    return app


async def _stream(send: Send, probe: FrontendProbe) -> None:
    probe.stream_span = spanlane.current_span()
    start: Message = {"type": "http.response.start", "status": 200, "headers": []}
    await send(start)
    await send({"type": "http.response.body", "body": b"one,", "more_body": True})
    await send({"type": "http.response.body", "body": b"two,", "more_body": True})
    assert probe.release_stream is not None
    await probe.release_stream.wait()
    probe.open_before_last_chunk = probe.stream_span.is_recording
    probe.last_chunk_ns = time_ns()
    await send({"type": "http.response.body", "body": b"three", "more_body": False})

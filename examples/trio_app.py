"""A trio gateway calling a pricing service: plain ASGI apps served by hypercorn on trio.

Run the demo (starts both services on free ports, sends one request, stops both, prints the
trace, exits 0 if the trace crossed the two processes):

    python examples/trio_app.py --demo

Or serve until Ctrl-C (gateway on :8000, pricing in a child process on :8001):

    python examples/trio_app.py
    curl http://127.0.0.1:8000/quote/apple

Spans are written as JSON lines to ``./spans/gateway.jsonl`` and ``./spans/pricing.jsonl``
(``--spans-dir`` to change); ``--otlp http://localhost:4318/v1/traces`` also sends them to an
OTLP/HTTP collector. Needs trio, hypercorn and httpx (``pip install "spanlane[examples]"``).

No web framework is involved: the apps are ASGI callables, ``lifespan(...).wrap(app)`` gives
them a tracer for the server's lifetime, and the pricing service does its CPU-bound work in a
worker thread (``trio.to_thread.run_sync``) inside a span.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import httpx
import trio
from _services import clear_span_files, make_exporters, parse_args, report, start_child, stop_child
from hypercorn.config import Config
from hypercorn.trio import serve

import spanlane
from spanlane import traced
from spanlane.asgi import Receive, Scope, Send, TracingMiddleware, lifespan
from spanlane.exporters import Exporter
from spanlane.httpx import TracingTransport

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PRICES = {"apple": 0.5, "pear": 0.75, "plum": 0.3}


async def respond(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def router(routes: dict[str, Callable[[Scope, str], Awaitable[tuple[int, object]]]]) -> ASGIApp:
    """A tiny ASGI router for ``/prefix/{item}`` routes; publishes the route template the way
    Starlette does (``scope["route"]``), so that the server span is named after it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # Raising is how an ASGI app says "not supported"; for the lifespan scope, the
            # lifespan wrapper then answers the server itself.
            raise RuntimeError(f"unsupported ASGI scope type: {scope['type']}")
        prefix, _, item = scope["path"].rpartition("/")
        handler = routes.get(prefix)
        if handler is None or not item:
            await respond(send, 404, {"detail": "not found"})
            return
        scope["route"] = f"{prefix}/{{item}}"
        status, payload = await handler(scope, item)
        await respond(send, status, payload)

    return app


# --- the pricing service --------------------------------------------------------------------


def compute_price(item: str, quantity: int) -> float:
    """CPU-bound work, run in a worker thread; its span is a child of the request's span."""
    with spanlane.span("compute price", attributes={"item": item}):
        base = PRICES[item] * quantity
        return round(base * (1 + 0.01 * math.log1p(quantity)), 2)


def create_pricing_app(*exporters: Exporter) -> ASGIApp:
    async def price(scope: Scope, item: str) -> tuple[int, object]:
        if item not in PRICES:
            return 404, {"detail": f"no price for {item}"}
        amount = await trio.to_thread.run_sync(compute_price, item, 3)
        return 200, {"item": item, "price": amount}

    app = TracingMiddleware(router({"/price": price}))
    return lifespan(*exporters, service_name="pricing").wrap(app)


# --- the gateway ----------------------------------------------------------------------------


@traced
async def fetch_price(client: httpx.AsyncClient, item: str) -> httpx.Response:
    return await client.get(f"/price/{item}")


def create_gateway_app(pricing_url: str, *exporters: Exporter) -> ASGIApp:
    async def quote(scope: Scope, item: str) -> tuple[int, object]:
        async with httpx.AsyncClient(base_url=pricing_url, transport=TracingTransport()) as client:
            response = await fetch_price(client, item)
        return response.status_code, {"quote": response.json()}

    app = TracingMiddleware(router({"/quote": quote}))
    return lifespan(*exporters, service_name="gateway").wrap(app)


# --- serving --------------------------------------------------------------------------------


def hypercorn_config(port: int) -> Config:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    return config


async def stop_signal(stdin_is_parent: bool) -> None:
    """Return on SIGINT/SIGTERM, or when the parent process closes our stdin."""
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

        async def on_stdin_eof() -> None:
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_signal)
        if stdin_is_parent:
            nursery.start_soon(on_stdin_eof)


async def run_pricing(port: int, exporters: list[Exporter]) -> None:
    """The child process: serve pricing until stdin closes or a signal arrives."""
    app: Any = create_pricing_app(*exporters)
    async with trio.open_nursery() as nursery:
        trigger = partial(stop_signal, True)
        binds = await nursery.start(
            partial(serve, app, hypercorn_config(port), shutdown_trigger=trigger)
        )
        print(f"listening {binds[0].rsplit(':', 1)[1]}", flush=True)


async def run_gateway(app: ASGIApp, port: int, demo: bool) -> int:
    """Serve the gateway; in demo mode send one quote request to it, then stop."""
    served: Any = app
    stop = trio.Event()
    trigger = stop.wait if demo else partial(stop_signal, False)
    status = 0
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, served, hypercorn_config(port), shutdown_trigger=trigger)
        )
        if not demo:
            print(f"gateway on {binds[0]}")
            return 0
        try:
            async with httpx.AsyncClient(base_url=binds[0]) as client:
                response = await client.get("/quote/apple")
            print(f"GET /quote/apple -> {response.status_code} {response.text}")
            status = response.status_code
        finally:
            stop.set()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n", 1)[0], "gateway", "pricing", argv)
    if args.service == "pricing":
        trio.run(run_pricing, args.port, make_exporters("pricing", args.spans_dir, args.otlp))
        return 0

    port = 0 if args.demo else args.port
    if args.demo:
        clear_span_files(args.spans_dir, "gateway", "pricing")
    script = os.path.abspath(__file__)
    child, pricing_port = start_child(script, "pricing", 0 if args.demo else port + 1, args)
    try:
        exporters = make_exporters("gateway", args.spans_dir, args.otlp)
        app = create_gateway_app(f"http://127.0.0.1:{pricing_port}", *exporters)
        status = trio.run(run_gateway, app, port, args.demo)
    finally:
        stop_child(child)
    if not args.demo:
        return 0
    # Both tracers have drained: the files hold every span.
    return report(args.spans_dir, ["gateway", "pricing"], status)


if __name__ == "__main__":
    sys.exit(main())

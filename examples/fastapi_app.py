"""A FastAPI storefront calling an inventory service: one trace across two processes.

Run the demo (starts both services on free ports, sends one request, stops both, prints the
trace, exits 0 if the trace crossed the two processes):

    python examples/fastapi_app.py --demo

Or serve until Ctrl-C (storefront on :8000, inventory in a child process on :8001):

    python examples/fastapi_app.py
    curl http://127.0.0.1:8000/checkout/apple

Spans are written as JSON lines to ``./spans/storefront.jsonl`` and ``./spans/inventory.jsonl``
(``--spans-dir`` to change); ``--otlp http://localhost:4318/v1/traces`` also sends them to an
OTLP/HTTP collector. Needs fastapi, uvicorn and httpx (``pip install "spanlane[examples]"``).

What it shows: ``spanlane.asgi.lifespan`` opens each service's tracer at startup and drains it at
shutdown; ``TracingMiddleware`` makes a SERVER span per request; ``TracingTransport`` makes the
storefront's httpx call a CLIENT span and sends ``traceparent``, which the inventory continues.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from _services import clear_span_files, make_exporters, parse_args, report, start_child, stop_child
from fastapi import FastAPI, HTTPException, Request

import spanlane
from spanlane import traced
from spanlane.asgi import TracingMiddleware, lifespan
from spanlane.exporters import Exporter
from spanlane.httpx import TracingTransport

STOCK = {"apple": 12, "pear": 0, "plum": 3}


# --- the inventory service ------------------------------------------------------------------


@traced("reserve stock")
async def reserve(item: str, quantity: int) -> bool:
    spanlane.current_span().set_attributes({"item": item, "quantity": quantity})
    await asyncio.sleep(0)  # a database call would go here
    return STOCK.get(item, 0) >= quantity


def create_inventory_app(*exporters: Exporter) -> FastAPI:
    app = FastAPI(lifespan=lifespan(*exporters, service_name="inventory"))

    @app.get("/stock/{item}")
    async def stock(item: str, quantity: int = 1) -> dict[str, Any]:
        if item not in STOCK:
            raise HTTPException(status_code=404, detail=f"no such item: {item}")
        return {"item": item, "reserved": await reserve(item, quantity)}

    app.add_middleware(TracingMiddleware)
    return app


# --- the storefront service -----------------------------------------------------------------


def create_storefront_app(inventory_url: str, *exporters: Exporter) -> FastAPI:
    @asynccontextmanager
    async def http_client(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Runs inside the tracer's lifespan; its state is merged into the request state.
        transport = TracingTransport()
        async with httpx.AsyncClient(base_url=inventory_url, transport=transport) as client:
            yield {"inventory": client}

    app = FastAPI(
        lifespan=lifespan(*exporters, service_name="storefront", app_lifespan=http_client)
    )

    @app.get("/checkout/{item}")
    async def checkout(item: str, request: Request) -> dict[str, Any]:
        inventory: httpx.AsyncClient = request.state.inventory
        response = await inventory.get(f"/stock/{item}", params={"quantity": 2})
        if response.status_code == 404:
            raise HTTPException(status_code=404, detail=response.json()["detail"])
        response.raise_for_status()
        with spanlane.span("price cart") as span:
            span.set_attribute("item", item)
            total = 2 * 3.5
        return {"item": item, "reserved": response.json()["reserved"], "total": total}

    app.add_middleware(TracingMiddleware)
    return app


# --- serving --------------------------------------------------------------------------------


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1: connections queue until the server accepts them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def uvicorn_server(app: FastAPI) -> uvicorn.Server:
    config = uvicorn.Config(app, lifespan="on", ws="none", log_level="warning")
    return uvicorn.Server(config)


def run_inventory(port: int, exporters: list[Exporter]) -> None:
    """The child process: serve the inventory until stdin closes or a signal arrives."""
    sock = bind(port)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    server = uvicorn_server(create_inventory_app(*exporters))

    def stop_when_parent_leaves() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe (or exited)
        server.should_exit = True

    threading.Thread(target=stop_when_parent_leaves, daemon=True).start()
    server.run(sockets=[sock])


async def demo(storefront: uvicorn.Server, sock: socket.socket) -> int:
    """Serve the storefront, send one checkout request to it, then stop it."""
    task = asyncio.create_task(storefront.serve(sockets=[sock]))
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/checkout/apple")
        print(f"GET /checkout/apple -> {response.status_code} {response.text}")
    finally:
        storefront.should_exit = True
        await task
    return response.status_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n", 1)[0], "storefront", "inventory", argv)
    if args.service == "inventory":
        run_inventory(args.port, make_exporters("inventory", args.spans_dir, args.otlp))
        return 0

    port = 0 if args.demo else args.port
    if args.demo:
        clear_span_files(args.spans_dir, "storefront", "inventory")
    script = os.path.abspath(__file__)
    child, inventory_port = start_child(script, "inventory", 0 if args.demo else port + 1, args)
    try:
        exporters = make_exporters("storefront", args.spans_dir, args.otlp)
        app = create_storefront_app(f"http://127.0.0.1:{inventory_port}", *exporters)
        server = uvicorn_server(app)
        sock = bind(port)
        if not args.demo:
            print(f"storefront on http://127.0.0.1:{port}, inventory on :{inventory_port}")
            server.run(sockets=[sock])
            return 0
        status = asyncio.run(demo(server, sock))
    finally:
        stop_child(child)
    # Both tracers have drained: the files hold every span.
    return report(args.spans_dir, ["storefront", "inventory"], status)


if __name__ == "__main__":
    sys.exit(main())

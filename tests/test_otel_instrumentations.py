"""Real OpenTelemetry instrumentation packages against the bridge, compared with the SDK.

Each comparison makes the same calls twice: once with the OpenTelemetry SDK
(``TracerProvider`` + ``SimpleSpanProcessor`` + ``InMemorySpanExporter``, passed as
``tracer_provider=``), once with the bridge's provider inside ``capture_spans()``. Servers listen
on the same socket in both runs, so their ports match; what is compared is each span's name,
kind, parent (by name), status, event names, instrumentation scope and attributes, without ids or
times (see ``otel_fakes.Shape``).

Every instrumentor is uninstrumented by the ``instrumented`` fixture, even when a test fails, so
that no instrumentation leaks into other tests. Network traffic goes to 127.0.0.1 only.

Backends: everything runs on asyncio and trio, but the async redis client, which is
``redis.asyncio`` and so asyncio only.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs
import httpx
import pytest
from opentelemetry import trace

import spanlane
import spanlane.otel
from asgi_servers import lifespan_passthrough, listening_socket, serve_hypercorn
from otel_fakes import (
    EPHEMERAL,
    REMOTE_PARENT,
    SDKCapture,
    Shape,
    by_name,
    current_otel_ids,
    echo_app,
    fake_openai_app,
    record_shapes,
    span_names,
)
from spanlane import SpanRecord
from spanlane.asgi import Receive, Scope, Send
from spanlane.testing import capture_spans

pytestmark = pytest.mark.anyio

PROVIDER = spanlane.otel.install()
# Off again until this module's tests run (the fixture below), as in test_otel.py: collection
# imports every test module first, and the others must not see the bridge.
spanlane.otel.uninstall()
SERVICE = "instrumented-service"
REMOTE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REMOTE_SPAN_ID = "b7ad6b7169203331"
#: The middleware's spans for the ASGI messages of one request, after the server span's name.
INNER = (" http receive", " http send", " http send")

T = TypeVar("T")
Run = Callable[[trace.TracerProvider], Awaitable[T]]


@pytest.fixture(autouse=True, scope="module")
def installed() -> Iterator[None]:
    """The bridge is on for this module only."""
    spanlane.otel.install()
    yield
    spanlane.otel.uninstall()


@attrs.frozen
class Compared:
    """The shapes of both runs, and what each run returned."""

    sdk: list[Shape]
    bridge: list[Shape]
    sdk_result: Any
    bridge_result: Any
    records: list[SpanRecord]


async def compare(run: Run[Any], stable_ports: tuple[int, ...] = ()) -> Compared:
    """Make the calls of ``run`` with the SDK's provider, then with the bridge's."""
    sdk = SDKCapture(SERVICE)
    try:
        sdk_result = await run(sdk.provider)
    finally:
        sdk.shutdown()
    async with capture_spans(service_name=SERVICE) as captured:
        bridge_result = await run(PROVIDER)
        records = await captured.flush()
    return Compared(
        sdk.shapes(stable_ports),
        record_shapes(records, stable_ports),
        sdk_result,
        bridge_result,
        records,
    )


class Undo:
    """What a test instrumented: each undo runs once, by the test or else at teardown."""

    def __init__(self) -> None:
        self._pending: list[Callable[[], None]] = []

    def add(self, undo: Callable[[], object]) -> Callable[[], None]:
        """Register ``undo``; returns a function that runs it (the first time only)."""
        done = False

        def once() -> None:
            nonlocal done
            if not done:
                done = True
                undo()

        self._pending.append(once)
        return once

    def instrumentor(self, instrumentor: Any) -> Callable[[], None]:
        """Register an instrumentor's ``uninstrument()``."""
        return self.add(
            lambda: (
                instrumentor.uninstrument()
                if instrumentor.is_instrumented_by_opentelemetry
                else None
            )
        )

    def run_all(self) -> None:
        for once in reversed(self._pending):
            once()


@pytest.fixture
def instrumented() -> Iterator[Undo]:
    """Uninstruments at teardown whatever the test instrumented and did not undo."""
    undo = Undo()
    yield undo
    undo.run_all()


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    """One listening socket for both runs: the server's port is the same in each."""
    listening = listening_socket()
    yield listening
    listening.close()


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# --- asgi -----------------------------------------------------------------------------------------


def hello_app(provider: trace.TracerProvider) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A plain ASGI app whose handler starts its own span through the given provider."""
    tracer = provider.get_tracer("tests.app", "1.0")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan_passthrough(receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        with tracer.start_as_current_span("handler") as span:
            span.set_attribute("app.path", scope["path"])
            await anyio.lowlevel.checkpoint()
        status = 500 if scope["path"] == "/fail" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    return app


async def test_asgi_middleware_spans_match_the_sdk(
    anyio_backend: str, sock: socket.socket, instrumented: Undo
) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def run(provider: trace.TracerProvider) -> list[int]:
        app = OpenTelemetryMiddleware(hello_app(provider), tracer_provider=provider)
        async with (
            serve_hypercorn(app, anyio_backend, sock=sock) as url,
            httpx.AsyncClient() as client,
        ):
            ok = await client.get(
                f"{url}/hello?x=1", headers={"traceparent": REMOTE, "user-agent": "tests/1"}
            )
            failed = await client.get(f"{url}/fail")
        return [ok.status_code, failed.status_code]

    compared = await compare(run, (port_of(sock),))
    assert compared.sdk_result == compared.bridge_result == [200, 500]
    assert compared.bridge == compared.sdk
    assert span_names(compared.bridge) == sorted(
        [f"GET {path}{suffix}" for path in ("/hello", "/fail") for suffix in ("", *INNER)]
        + ["handler"] * 2
    )
    servers = [shape for shape in compared.bridge if shape.kind == "SERVER"]
    assert sorted(shape.parent or "" for shape in servers) == ["", REMOTE_PARENT]
    (remote,) = [record for record in compared.records if record.parent_is_remote]
    assert f"{remote.parent_span_id:016x}" == REMOTE_SPAN_ID
    assert {shape.parent for shape in compared.bridge if shape.name == "handler"} == {
        "GET /hello",
        "GET /fail",
    }
    # The instrumentation's default (old) HTTP semantic conventions, as the SDK records them.
    attributes = servers[0].attribute_dict
    assert attributes["http.method"] == "GET"
    assert attributes["net.host.port"] == port_of(sock)
    assert attributes["net.peer.port"] == EPHEMERAL


# --- fastapi --------------------------------------------------------------------------------------


async def test_fastapi_instrument_app_spans_match_the_sdk(
    anyio_backend: str, sock: socket.socket, instrumented: Undo
) -> None:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    async def run(provider: trace.TracerProvider) -> list[int]:
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def read_item(item_id: int) -> dict[str, int]:
            with provider.get_tracer("tests.app").start_as_current_span("load item"):
                return {"item_id": item_id}

        @app.get("/boom")
        async def boom() -> None:
            raise ValueError("exploded on purpose")

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
        uninstrument = instrumented.add(lambda: FastAPIInstrumentor.uninstrument_app(app))
        async with (
            serve_hypercorn(app, anyio_backend, sock=sock) as url,
            httpx.AsyncClient() as client,
        ):
            item = await client.get(f"{url}/items/42", headers={"traceparent": REMOTE})
            failed = await client.get(f"{url}/boom")
        uninstrument()
        return [item.status_code, failed.status_code]

    compared = await compare(run, (port_of(sock),))
    assert compared.sdk_result == compared.bridge_result == [200, 500]
    assert compared.bridge == compared.sdk
    spans = by_name(compared.bridge)
    server = spans["GET /items/{item_id}"]
    assert server.kind == "SERVER"
    assert server.parent == REMOTE_PARENT
    assert server.attribute_dict["http.route"] == "/items/{item_id}"
    assert spans["load item"].parent == "GET /items/{item_id}"
    failed = spans["GET /boom"]
    assert failed.status[0] == "ERROR"
    assert [event for event, _ in failed.events] == ["exception"]


# --- httpx ----------------------------------------------------------------------------------------


async def test_httpx_async_client_spans_match_the_sdk(
    anyio_backend: str, sock: socket.socket, instrumented: Undo
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    async with serve_hypercorn(echo_app(), anyio_backend, sock=sock) as url:

        async def run(provider: trace.TracerProvider) -> dict[str, Any]:
            tracer = provider.get_tracer("tests.app")
            async with httpx.AsyncClient() as client:
                HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
                uninstrument = instrumented.add(
                    lambda: HTTPXClientInstrumentor.uninstrument_client(client)
                )
                with tracer.start_as_current_span("calls") as calls:
                    echo = (await client.get(f"{url}/echo")).json()
                    status = (await client.get(f"{url}/status/503")).status_code
                uninstrument()
                # Uninstrumented: no span, no header.
                after = (await client.get(f"{url}/echo")).json()
            return {
                "echo": echo["traceparent"],
                "status": status,
                "after": after["traceparent"],
                "trace_id": format(calls.get_span_context().trace_id, "032x"),
            }

        compared = await compare(run, (port_of(sock),))
    assert compared.bridge == compared.sdk
    assert span_names(compared.bridge) == ["GET", "GET", "calls"]
    for result in (compared.sdk_result, compared.bridge_result):
        assert result["status"] == 503
        assert result["after"] is None
        assert result["echo"].split("-")[1] == result["trace_id"]
    # The traceparent the server got names the client span: injected inside it, as the SDK does.
    clients = [record for record in compared.records if record.kind is spanlane.SpanKind.CLIENT]
    injected = compared.bridge_result["echo"].split("-")[2]
    assert injected in {f"{record.span_id:016x}" for record in clients}
    statuses = sorted(shape.status[0] for shape in compared.bridge if shape.name == "GET")
    assert statuses == ["ERROR", "UNSET"]


# --- logging --------------------------------------------------------------------------------------


class Keep(logging.Handler):
    """A handler that keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept_logs() -> Iterator[tuple[logging.Logger, Keep]]:
    logger = logging.getLogger("tests.otel.logging")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.propagate = True


def log_fields(record: logging.LogRecord) -> tuple[str, str, bool, str]:
    return (
        record.otelTraceID,  # type: ignore[attr-defined]
        record.otelSpanID,  # type: ignore[attr-defined]
        record.otelTraceSampled,  # type: ignore[attr-defined]
        record.otelServiceName,  # type: ignore[attr-defined]
    )


async def test_log_records_carry_the_current_spanlane_span_ids(
    kept_logs: tuple[logging.Logger, Keep], instrumented: Undo
) -> None:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    logger, handler = kept_logs
    otel = PROVIDER.get_tracer("tests.app")
    async with capture_spans(service_name=SERVICE) as captured:
        instrumentor = LoggingInstrumentor()
        instrumentor.instrument(
            tracer_provider=PROVIDER,
            inject_trace_context=True,
            enable_log_auto_instrumentation=False,
        )
        uninstrument = instrumented.instrumentor(instrumentor)
        logger.info("outside")
        with captured.tracer.span("native") as native:
            logger.info("in a spanlane span")
            with otel.start_as_current_span("otel") as bridged:
                logger.info("in an OpenTelemetry span")
                await anyio.to_thread.run_sync(logger.info, "in a thread")
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, logger.info, "in a task's thread")
        uninstrument()
    fields = {record.getMessage(): log_fields(record) for record in handler.records}
    trace_id = f"{native.context.trace_id:032x}"
    native_id = f"{native.context.span_id:016x}"
    bridged_id = format(bridged.get_span_context().span_id, "016x")
    assert fields == {
        "outside": ("0", "0", False, SERVICE),
        "in a spanlane span": (trace_id, native_id, True, SERVICE),
        "in an OpenTelemetry span": (trace_id, bridged_id, True, SERVICE),
        "in a thread": (trace_id, bridged_id, True, SERVICE),
        "in a task's thread": (trace_id, native_id, True, SERVICE),
    }


async def test_log_records_carry_the_same_fields_as_with_the_sdk(
    kept_logs: tuple[logging.Logger, Keep], instrumented: Undo
) -> None:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    logger, handler = kept_logs

    async def run(provider: trace.TracerProvider) -> list[tuple[str, tuple[bool, str, bool]]]:
        handler.records.clear()
        instrumentor = LoggingInstrumentor()
        instrumentor.instrument(
            tracer_provider=provider,
            inject_trace_context=True,
            enable_log_auto_instrumentation=False,
        )
        uninstrument = instrumented.instrumentor(instrumentor)
        try:
            with provider.get_tracer("tests.app").start_as_current_span("parent"):
                ids = current_otel_ids()
                logger.warning("inside")
        finally:
            uninstrument()
        # The ids themselves differ between the runs; the record carries the current span's.
        kept = []
        for record in handler.records:
            trace_id, span_id, sampled, service = log_fields(record)
            kept.append((record.getMessage(), (sampled, service, (trace_id, span_id) == ids)))
        return kept

    compared = await compare(run)
    assert compared.bridge_result == compared.sdk_result == [("inside", (True, SERVICE, True))]
    assert compared.bridge == compared.sdk


# --- sqlalchemy -----------------------------------------------------------------------------------


async def test_sqlalchemy_spans_match_the_sdk(anyio_backend: str, instrumented: Undo) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Through importorskip (typed Any): mypy then passes whether or not the typing env has
    # the instrumented libraries (sqlalchemy, fakeredis and openai, here and below).
    sqlalchemy = pytest.importorskip("sqlalchemy")

    if tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (2, 1):
        # Its dependency check refuses 2.1 (nothing is instrumented), and it imports
        # sqlalchemy.ext.asyncio, which needs greenlet, no longer a dependency of 2.1.
        pytest.skip("opentelemetry-instrumentation-sqlalchemy supports sqlalchemy < 2.1")

    def queries(engine: Any) -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE fruit (name TEXT, price INTEGER)"))
            connection.execute(
                sqlalchemy.text("INSERT INTO fruit VALUES (:name, :price)"),
                {"name": "apple", "price": 3},
            )
            rows = connection.execute(sqlalchemy.text("SELECT name, price FROM fruit")).all()
        return [tuple(row) for row in rows]

    async def run(provider: trace.TracerProvider) -> list[tuple[Any, ...]]:
        # One connection, usable from the worker thread and closed from this one.
        engine = sqlalchemy.create_engine(
            "sqlite://",
            poolclass=sqlalchemy.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
        instrumentor = SQLAlchemyInstrumentor()
        instrumentor.instrument(engine=engine, tracer_provider=provider)
        uninstrument = instrumented.instrumentor(instrumentor)
        try:
            with provider.get_tracer("tests.app").start_as_current_span("work"):
                # The sync engine in a worker thread: the span current here is its parent.
                return await anyio.to_thread.run_sync(queries, engine)
        finally:
            uninstrument()
            engine.dispose()

    compared = await compare(run)
    assert compared.sdk_result == compared.bridge_result == [("apple", 3)]
    assert compared.bridge == compared.sdk
    spans = by_name(compared.bridge)
    assert {"connect", "work"} <= set(spans)
    statements = [shape for shape in compared.bridge if shape.kind == "CLIENT"]
    assert len(statements) >= 4  # connect, CREATE, INSERT, SELECT
    assert {shape.parent for shape in statements} == {"work"}
    assert {shape.attribute_dict["db.system"] for shape in statements} == {"sqlite"}


# --- redis ----------------------------------------------------------------------------------------


async def test_redis_spans_match_the_sdk(anyio_backend: str, instrumented: Undo) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    fakeredis = pytest.importorskip("fakeredis")

    # One client for both runs: each fake client has a host name of its own.
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())

    async def run(provider: trace.TracerProvider) -> list[Any]:
        instrumentor = RedisInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        uninstrument = instrumented.instrumentor(instrumentor)
        try:
            with provider.get_tracer("tests.app").start_as_current_span("cache"):
                client.set("fruit", "apple")
                value = client.get("fruit")
                with client.pipeline() as pipe:
                    pipe.incr("count")
                    pipe.incr("count")
                    counts = pipe.execute()
                client.delete("fruit", "count")
            return [value, counts]
        finally:
            uninstrument()

    compared = await compare(run)
    client.close()
    assert compared.sdk_result == compared.bridge_result == [b"apple", [1, 2]]
    assert compared.bridge == compared.sdk
    assert span_names(compared.bridge) == ["DEL", "GET", "INCRBY INCRBY", "SET", "cache"]
    for shape in compared.bridge:
        if shape.name != "cache":
            assert shape.parent == "cache"
            assert shape.kind == "CLIENT"
            assert shape.attribute_dict["db.system"] == "redis"


async def test_async_redis_spans_match_the_sdk(anyio_backend: str, instrumented: Undo) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("redis.asyncio (and so fakeredis.aioredis) runs on asyncio only")
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    fakeredis = pytest.importorskip("fakeredis")

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())

    async def run(provider: trace.TracerProvider) -> list[Any]:
        instrumentor = RedisInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        uninstrument = instrumented.instrumentor(instrumentor)
        try:
            with provider.get_tracer("tests.app").start_as_current_span("cache"):
                await client.set("fruit", "pear")
                value = await client.get("fruit")
                await client.delete("fruit")
            return [value]
        finally:
            uninstrument()

    compared = await compare(run)
    await client.aclose()
    assert compared.sdk_result == compared.bridge_result == [b"pear"]
    assert compared.bridge == compared.sdk
    assert span_names(compared.bridge) == ["DEL", "GET", "SET", "cache"]
    assert {shape.parent for shape in compared.bridge if shape.name != "cache"} == {"cache"}


# --- openai-v2 ------------------------------------------------------------------------------------


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAI client reads its configuration from the environment: none of it here."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


async def test_openai_chat_completion_spans_match_the_sdk(
    anyio_backend: str, sock: socket.socket, instrumented: Undo, no_openai_env: None
) -> None:
    openai = pytest.importorskip("openai")
    try:
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed versions
        # openai-v2 2.4b0 imports opentelemetry.util.genai.instruments, which
        # opentelemetry-util-genai 1.2 renamed: the two must be installed in step.
        pytest.skip(f"opentelemetry-instrumentation-openai-v2 cannot be imported: {exc}")

    seen: list[dict[str, Any]] = []
    async with serve_hypercorn(fake_openai_app(seen), anyio_backend, sock=sock) as url:

        async def run(provider: trace.TracerProvider) -> str | None:
            # Through Any: the class is untyped where the package is installed, and unknown
            # to mypy where it is not.
            make: Any = OpenAIInstrumentor
            instrumentor = make()
            instrumentor.instrument(tracer_provider=provider)
            uninstrument = instrumented.instrumentor(instrumentor)
            try:
                async with openai.AsyncOpenAI(
                    base_url=f"{url}/v1", api_key="sk-test", max_retries=0
                ) as client:
                    with provider.get_tracer("tests.app").start_as_current_span("assistant"):
                        completion = await client.chat.completions.create(
                            model="gpt-4o-mini",
                            messages=[{"role": "user", "content": "Say hello"}],
                            temperature=0.5,
                        )
                content: str | None = completion.choices[0].message.content
                return content
            finally:
                uninstrument()

        compared = await compare(run, (port_of(sock),))
    assert compared.sdk_result == compared.bridge_result == "Hello from the fake."
    assert compared.bridge == compared.sdk
    spans = by_name(compared.bridge)
    chat = spans["chat gpt-4o-mini"]
    assert chat.kind == "CLIENT"
    assert chat.parent == "assistant"
    attributes = chat.attribute_dict
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert attributes["gen_ai.response.id"] == "chatcmpl-spanlane-1"
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert len(seen) == 2

"""Commands: run (workers) and publish."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import click
import structlog

from rabbitflow.amqp.publish import check_destination
from rabbitflow.cli.common import common_options, fail, run_async, settings_from
from rabbitflow.errors import AppImportError, ConfigError, RabbitflowError
from rabbitflow.settings import mask_url


def load_app(target: str) -> Any:
    """Import ``MODULE:ATTR`` (the current directory on the path, as uvicorn does).

    Raises:
        AppImportError: the module has a syntax error, imports a missing package or
            raises at import; the message names the file, line and error.
        ConfigError: the target is malformed or is not an App.
    """
    from rabbitflow.app import App
    from rabbitflow.router import Router

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected MODULE:APP (e.g. workers.orders:app), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and not user_frames(exc):
            raise ConfigError(f"cannot import module {module_name!r}: {exc}") from None
        raise AppImportError(import_failure(module_name, exc), exc) from None
    except Exception as exc:  # whatever the user's module raises at import
        raise AppImportError(import_failure(module_name, exc), exc) from None
    app = getattr(module, attr, None)
    if isinstance(app, App):
        return app
    apps = [n for n, v in vars(module).items() if isinstance(v, App)]
    routers = [n for n, v in vars(module).items() if isinstance(v, Router)]
    if not apps and routers:
        raise ConfigError(
            f"module {module_name!r} defines a Router ({', '.join(routers)}) but no App: "
            f"create one there, e.g. app = App(topology=...); "
            f"app.include_router({routers[0]}), and run {module_name}:app"
        )
    found = "nothing" if app is None else type(app).__name__
    hint = f"; the module's App is {', '.join(apps)}" if apps else ""
    raise ConfigError(f"{target!r} is not a rabbitflow App (found {found}){hint}")


def import_failure(module: str, exc: BaseException) -> str:
    """One line for a module that failed to import: where, and what."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{_relative(exc.filename)}:{exc.lineno}"
        return f"cannot import {module!r}: {where}: {type(exc).__name__}: {exc.msg}"
    frames = user_frames(exc)
    where = f"{_relative(frames[-1].filename)}:{frames[-1].lineno}: " if frames else ""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"cannot import {module!r}: {where}{text} (--traceback shows where)"


def user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of a traceback that are the user's: not importlib's, click's or
    rabbitflow's own."""
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    skipped = tuple(
        os.path.dirname(os.path.abspath(path)) + os.sep
        for path in (os.path.join(own, "x"), click.__file__, importlib.__file__)
    )
    return [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
        and not os.path.abspath(frame.filename).startswith(skipped)
    ]


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` reduced to the user's frames (for ``--traceback``)."""
    lines = ["Traceback (your code, most recent call last):\n"]
    lines += traceback.format_list(user_frames(exc))
    lines += traceback.format_exception_only(exc)
    return "".join(lines)


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


@click.command()
@click.argument("target", metavar="MODULE:APP")
@click.option(
    "--topology",
    "topologies",
    multiple=True,
    type=click.Path(),
    help="Topology file(s); replaces the one given to App.",
)
@click.option("--queues", default=None, help="Run only these queues' handlers (comma-separated).")
@click.option(
    "--prefetch",
    type=click.IntRange(1, 65535),
    default=None,
    help="Default prefetch for handlers that set none.",
)
@click.option(
    "--processes",
    default="1",
    metavar="N|MIN:MAX",
    help="Worker processes under one supervisor; MIN:MAX autoscales between the bounds.",
)
@click.option("--no-declare", is_flag=True, help="Do not declare the topology at start.")
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0),
    default=None,
    help="Seconds in-flight handlers get to finish on SIGTERM (default 30).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics and /healthz on this port.",
)
@click.option(
    "--exit-on-cancel",
    is_flag=True,
    help="Exit non-zero when the broker cancels a consumer, instead of "
    "redeclaring the queue and resuming.",
)
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="When MODULE fails to import, also print the traceback of your own code.",
)
@common_options
def run(
    target: str,
    topologies: tuple[str, ...],
    queues: str | None,
    prefetch: int | None,
    processes: str,
    no_declare: bool,
    shutdown_timeout: float | None,
    metrics_port: int | None,
    exit_on_cancel: bool,
    show_traceback: bool,
    url: str | None,
    log_format: str | None,
) -> None:
    """Run the handlers of MODULE:APP until SIGINT or SIGTERM."""
    settings = settings_from(
        url,
        log_format,
        shutdown_timeout=shutdown_timeout,
        metrics_port=metrics_port,
        prefetch=prefetch,
    )
    _configure_logging(settings.effective_log_format, settings.log_level)
    from rabbitflow.worker.autoscale import parse_processes

    try:
        low, high = parse_processes(processes)
    except ConfigError as exc:
        fail(str(exc))
    if high > 1:
        scaling = None
        if high > low:
            try:
                scaling = _scaling(settings, target, topologies, queues, low, high)
            except RabbitflowError as exc:
                fail(str(exc))
        sys.exit(_supervise(settings, low, scaling))
    try:
        app = load_app(target)
        # Command-line options and the environment win; a URL given to App(url=...)
        # stays unless --url was passed.
        overrides = settings.model_dump(exclude=set() if url else {"url"})
        app.configure(**overrides)
        if topologies:
            app.use_topology(list(topologies))
        if no_declare:
            app.declare = False
        selected = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
        app.run(selected, prefetch=prefetch, exit_on_cancel=exit_on_cancel)
    except AppImportError as exc:
        if show_traceback:
            click.echo(user_traceback(exc.error), err=True, nl=False)
        fail(str(exc))
    except RabbitflowError as exc:
        fail(str(exc))


def _scaling(
    settings: Any,
    target: str,
    topologies: tuple[str, ...],
    queues: str | None,
    low: int,
    high: int,
) -> Any:
    """The autoscaling policy and the sampler of the queues the app serves."""
    from rabbitflow.amqp.connection import vhost_of
    from rabbitflow.amqp.management import management_endpoint
    from rabbitflow.topology.expand import physical_queues
    from rabbitflow.worker.autoscale import ScalePolicy, management_sampler

    app = load_app(target)
    if topologies:
        app.use_topology(list(topologies))
    selected = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    names = selected or list(app.handlers)
    served = [p for q in names for p in physical_queues(app.topology, q)] if app.topology else names
    base, user, password = management_endpoint(settings.management_url, settings.urls)
    policy = ScalePolicy(
        low,
        high,
        interval=settings.autoscale_interval,
        backlog=settings.autoscale_backlog,
        grow_after=settings.autoscale_grow_after,
        idle_after=settings.autoscale_idle,
    )
    sampler = management_sampler(base, user, password, vhost_of(settings.urls[0]), served)
    return policy, sampler


def _supervise(settings: Any, processes: int, scaling: Any = None) -> int:
    """The parent of ``--processes N``: supervises, and serves one metrics endpoint for
    all children from their shared multiprocess files."""
    from rabbitflow.worker.supervisor import Child, supervise

    argv = _child_argv(sys.argv[1:])
    if settings.metrics_port is None:
        return supervise(
            argv, processes, shutdown_timeout=settings.shutdown_timeout, scaling=scaling
        )
    from prometheus_client import Gauge

    from rabbitflow.exposition import SharedMetrics, serve
    from rabbitflow.health import combine

    shared = SharedMetrics()
    children: list[Child] = []
    gauge = Gauge(
        "rabbitflow_processes", "Worker processes under this supervisor", registry=shared.registry
    )

    def health() -> Any:
        return combine(
            (
                (
                    c.index,
                    c.process.pid if c.process else None,
                    c.restart_at is None and c.process is not None and c.process.poll() is None,
                )
                for c in list(children)
            ),
            shared.path,
        )

    try:
        server = serve(settings.metrics_port, shared.registry, health)
    except RabbitflowError as exc:
        shared.close()
        fail(str(exc))
    structlog.get_logger("rabbitflow.supervisor").info(
        "serving /metrics and /healthz for all processes", port=server.port
    )
    try:
        env = {**os.environ, **shared.child_env()}
        env.pop("RABBITFLOW_METRICS_PORT", None)
        return supervise(
            argv,
            processes,
            shutdown_timeout=settings.shutdown_timeout,
            env=env,
            records=children,
            on_exit=shared.child_exited,
            scaling=scaling,
            on_count=gauge.set,
        )
    finally:
        server.close()
        shared.close()


def _child_argv(argv: list[str]) -> list[str]:
    """The parent's arguments without ``--processes N`` (children run one each) and
    ``--metrics-port N`` (the parent serves it)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        # The parent serves the metrics port; its children write to shared files.
        if arg in ("--processes", "--metrics-port"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--metrics-port=")):
            continue
        out.append(arg)
    return out


def _configure_logging(fmt: Literal["console", "json"], level: str) -> None:
    from rabbitflow.logs import configure_logging

    configure_logging(fmt, level)


def _parse_body(text: str) -> object:
    """A command-line body: JSON when it parses as JSON, else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_json_type(content_type: str | None) -> bool:
    if content_type is None:
        return True
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _command_line_body(text: str, content_type: str | None) -> object:
    """The BODY argument: JSON when it parses as JSON, else text. A body that looks like
    JSON (``{`` or ``[`` first) but does not parse is an error, unless ``--content-type``
    names a type other than JSON; with ``--content-type`` the text is sent as written."""
    looks_like_json = text.lstrip()[:1] in ("{", "[")
    if (looks_like_json or content_type is not None) and _is_json_type(content_type):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if not looks_like_json:
                raise ConfigError(
                    f"BODY is not valid JSON ({exc.msg} at line {exc.lineno} column "
                    f"{exc.colno}) but --content-type is {content_type}"
                ) from None
            raise ConfigError(
                f"BODY looks like JSON but does not parse: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno} (char {exc.pos}); fix it, or pass "
                "--content-type text/plain to send it as text"
            ) from None
        return text if content_type is not None else value
    if content_type is not None:
        return text
    return _parse_body(text)


def _read_body_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _expiration(value: str | None) -> str | None:
    """``--expiration``: a duration (``30s``, ``500ms``) or int ms, as AMQP's string."""
    if value is None:
        return None
    from rabbitflow.units import parse_duration

    try:
        ms = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--expiration: {exc}") from None
    if ms < 0 or ms > 2**32 - 1:
        raise ConfigError("--expiration must be between 0 and 4294967295 ms")
    return str(ms)


def _read_jsonl(path: str) -> list[object]:
    """Every body of a JSON-lines file, checked before anything is sent."""
    bodies: list[object] = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    bodies.append(json.loads(line))
                except ValueError as exc:
                    raise ConfigError(f"{path}:{number}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return bodies


def _parse_headers(pairs: tuple[str, ...]) -> dict[str, object]:
    headers: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--header takes KEY=VALUE, got {pair!r}")
        headers[key] = _parse_body(value) if value[:1] in "[{0123456789-" else value
    return headers


@click.command()
@click.argument("exchange")
@click.argument("routing_key")
@click.argument("body", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False),
    help="A JSON-lines file: one message body a line.",
)
@click.option(
    "--body-file",
    type=click.Path(dir_okay=False),
    help="Send this file's bytes as one raw body (content type from --content-type, "
    "else application/octet-stream).",
)
@click.option("--header", "header", multiple=True, metavar="K=V", help="A header (repeatable).")
@click.option(
    "--content-type",
    default=None,
    help="Send BODY as written with this content type (default: JSON when BODY is "
    "JSON, else text/plain).",
)
@click.option("--message-id", default=None, help="The message id (default: a new uuid).")
@click.option("--correlation-id", default=None, help="The correlation id.")
@click.option(
    "--expiration", default=None, help="Per-message TTL: a duration (30s, 500ms) or int ms."
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=1,
    help="Send the body (or the file) this many times.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Messages per second at most.",
)
@click.option(
    "--window",
    type=click.IntRange(1, 100_000),
    default=1000,
    help="Unconfirmed messages in flight at most.",
)
@click.option(
    "--no-confirm",
    "no_confirm",
    is_flag=True,
    help="Fire-and-forget: do not wait for publisher confirms (counted as written).",
)
@click.option(
    "--delay",
    "delay",
    metavar="DURATION",
    default=None,
    help="Deliver after this delay (10m, 30s, or seconds); the exchange needs `delayed: true`.",
)
@click.option("--compress", is_flag=True, help="Gzip each body (content_encoding gzip).")
@common_options
def publish(
    exchange: str,
    routing_key: str,
    body: str | None,
    file: str | None,
    body_file: str | None,
    header: tuple[str, ...],
    content_type: str | None,
    message_id: str | None,
    correlation_id: str | None,
    expiration: str | None,
    count: int,
    rate: float | None,
    window: int,
    no_confirm: bool,
    delay: str | None,
    compress: bool,
    url: str | None,
    log_format: str | None,
) -> None:
    """Publish messages with confirms and report confirmed / returned / nacked.

    Use "" as EXCHANGE for the default exchange (ROUTING_KEY is then a queue name).
    Exits 1 when any message was not confirmed.
    """
    settings = settings_from(url, log_format)
    try:
        if sum(x is not None for x in (body, file, body_file)) != 1:
            raise ConfigError("give a BODY argument, --file F.jsonl or --body-file PATH (one)")
        check_destination(exchange, routing_key)
        bodies: list[object]
        if body_file is not None:
            bodies = [_read_body_file(body_file)]
        elif file is not None:
            bodies = list(_read_jsonl(file))
        else:
            bodies = [_command_line_body(str(body), content_type)]
        headers = _parse_headers(header)
        options = Options(
            message_id,
            correlation_id,
            content_type or ("application/octet-stream" if body_file else None),
            _expiration(expiration),
        )
        delay_s = _parse_delay(delay) if delay is not None else None
    except ConfigError as exc:
        fail(str(exc))
    sending = {"confirm": not no_confirm, "delay": delay_s, "compress": True if compress else None}
    summary = run_async(
        _publish(
            settings, exchange, routing_key, bodies, count, headers, options, rate, window, sending
        )
    )
    click.echo(summary.text)
    for line in summary.errors:
        click.echo(f"error: {line}", err=True)
    if not summary.ok:
        sys.exit(1)


@dataclass(frozen=True)
class Options:
    """Properties ``publish`` gives every message it sends."""

    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    expiration: str | None = None


def _parse_delay(text: str) -> float:
    from rabbitflow.amqp.publish import delay_seconds
    from rabbitflow.topology.delay import whole_seconds

    try:
        value: float | str = float(text) if text.replace(".", "", 1).isdigit() else text
        return float(whole_seconds(delay_seconds(value)))
    except ValueError as exc:
        raise ConfigError(f"--delay takes a duration such as 10m or seconds: {exc}") from None


class Summary:
    """The outcome line of a bulk publish (``publish``, ``replay``) and its errors."""

    def __init__(
        self, result: Any, elapsed: float, total: int, url: str, exchange: str, key: str
    ) -> None:
        done = len(result.confirmed) + len(result.written)
        self.ok = bool(result.ok) and done == total
        rate = total / elapsed if elapsed > 0 else 0.0
        failed = f", {len(result.failed)} failed" if result.failed else ""
        written = f"{len(result.written)} written (no confirms), " if result.written else ""
        self.text = (
            f"published {total} to {url}: {written}{len(result.confirmed)} confirmed, "
            f"{len(result.returned)} returned, {len(result.nacked)} nacked{failed} "
            f"in {elapsed:.2f}s ({rate:.0f} msg/s)"
        )
        where = f"exchange {exchange or '(default)'!r} with routing key {key!r}"
        self.errors: list[str] = []
        if result.returned:
            self.errors.append(
                f"{len(result.returned)} returned as unroutable: no queue is bound to {where}"
            )
        if result.nacked:
            self.errors.append(f"{len(result.nacked)} nacked by the broker ({where})")
        if result.failed:
            self.errors.append(f"first failure: {next(iter(result.failed.values()))}")


async def _publish(
    settings: Any,
    exchange: str,
    routing_key: str,
    bodies: list[object],
    count: int,
    headers: dict[str, object],
    options: Options,
    rate: float | None,
    window: int,
    sending: dict[str, Any] | None = None,
) -> Summary:
    from rich.progress import Progress

    from rabbitflow.amqp.publish import Outgoing
    from rabbitflow.producer import Producer

    def messages() -> Iterator[Outgoing]:
        for _ in range(count):
            for body in bodies:
                yield Outgoing(
                    exchange,
                    routing_key,
                    body,
                    headers or None,
                    options.message_id,
                    options.correlation_id,
                    options.content_type,
                    options.expiration,
                )

    async def paced() -> AsyncIterator[Outgoing]:
        start = time.monotonic()
        for i, item in enumerate(messages()):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield item

    total = len(bodies) * count
    show = total > 1 and sys.stderr.isatty()
    started = time.perf_counter()
    async with Producer(settings=settings, name="rabbitflow-cli") as producer:
        await producer.link.get()  # fail fast with one clear line if the broker is away
        with Progress(disable=not show, transient=True) as bar:
            task = bar.add_task("publishing", total=total)
            result = await producer.publish_many(
                paced(),
                window=window,
                progress=lambda _i: bar.advance(task),
                **(sending or {}),
            )
    elapsed = time.perf_counter() - started
    return Summary(result, elapsed, total, mask_url(settings.urls[0]), exchange, routing_key)


__all__ = ["load_app", "publish", "run"]

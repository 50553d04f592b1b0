"""The HTTP endpoint of ``--metrics-port``: ``/metrics`` (Prometheus) and ``/healthz``.

Served from a daemon thread by the standard library's WSGI server, as
``prometheus_client.start_http_server`` does, so a scrape never waits for the event loop.
With ``--processes N`` the supervisor serves it over the children's multiprocess files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from rabbitflow.errors import ConfigError
from rabbitflow.health import Health

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes every few seconds would drown the worker's logs."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_app(
    registry: CollectorRegistry, health: Callable[[], Health]
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app: ``/healthz`` → 200 or 503 with a JSON body; anything else → metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/").rstrip("/") == "/healthz":
            try:
                result = health()
            except Exception as exc:  # a health check must answer, not crash the thread
                result = Health(False, (f"health check failed: {type(exc).__name__}",))
            body = json.dumps(result.body()).encode()
            status = "200 OK" if result.ok else "503 Service Unavailable"
            start_response(
                status,
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [body]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


@dataclass
class Server:
    """A running endpoint; `close` stops it and frees the port."""

    port: int
    _httpd: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(
    port: int,
    registry: CollectorRegistry,
    health: Callable[[], Health],
    *,
    address: str = "0.0.0.0",
) -> Server:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` (0: any free port) in a thread.

    Raises:
        ConfigError: when the port cannot be bound (in use, or not permitted).
    """
    try:
        httpd = make_server(
            address,
            port,
            make_app(registry, health),
            ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on port {port}: {exc.strerror}; choose another --metrics-port"
        ) from None
    thread = threading.Thread(target=httpd.serve_forever, name="rabbitflow-metrics", daemon=True)
    thread.start()
    return Server(int(httpd.server_address[1]), httpd, thread)


class SharedMetrics:
    """The multiprocess directory of one ``--processes`` run, owned by the supervisor.

    Cleaned at start (values of an earlier run must not be summed in); a directory made
    here is removed at the end. A dead child's live gauges are dropped (`child_exited`),
    its counters kept, so totals never go backwards.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._made = directory is None
        self.path = Path(directory or tempfile.mkdtemp(prefix="rabbitflow-metrics-"))
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.iterdir():
            if stale.suffix in (".db", ".json", ".tmp"):
                stale.unlink()
        self.registry = CollectorRegistry()
        # prometheus-client's multiprocess module carries no annotations.
        MultiProcessCollector(self.registry, path=str(self.path))  # type: ignore[no-untyped-call]

    def child_env(self) -> dict[str, str]:
        """Environment for a child: where to write its metrics and health."""
        return {MULTIPROC_ENV: str(self.path), "RABBITFLOW_METRICS_DIR": str(self.path)}

    def child_exited(self, pid: int) -> None:
        """Forget a dead child's live gauges and health."""
        mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]
        (self.path / f"health_{pid}.json").unlink(missing_ok=True)

    def close(self) -> None:
        if self._made:
            shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["Server", "SharedMetrics", "make_app", "serve"]

"""Command: ``dashboard`` (needs the ``dashboard`` extra: Starlette and uvicorn)."""

from __future__ import annotations

import asyncio
import errno
import socket

import click

from rabbitflow.cli.common import common_options, fail, handle_errors, settings_from
from rabbitflow.errors import RabbitflowError
from rabbitflow.settings import Settings, mask_url
from rabbitflow.topology import Topology, load_topology

INSTALL_HINT = (
    "the dashboard needs its extra: pip install 'rabbitflow[dashboard]' (Starlette and uvicorn)"
)


@click.command()
@click.argument("files", nargs=-1)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback exposes the page (set a token).",
)
@click.option("--read-only", is_flag=True, help="No replay or purge: look, don't touch.")
@common_options
@handle_errors
def dashboard(
    files: tuple[str, ...],
    port: int,
    host: str,
    read_only: bool,
    url: str | None,
    log_format: str | None,
) -> None:
    """Serve a web page with the topology live and the dead letters a click away.

    With FILEs, the topology they declare; without, the live vhost's.
    """
    try:
        import uvicorn

        from rabbitflow.dashboard.app import DashboardConfig, create_app
        from rabbitflow.dashboard.security import loopback
    except ImportError:
        fail(INSTALL_HINT)
        raise
    settings = settings_from(url, log_format)
    topology = load_topology(list(files)) if files else None
    _probe_broker(settings, topology)
    _check_port(host, port)
    local = loopback(host)
    if not local and settings.dashboard_token is None:
        click.echo(
            f"warning: serving on {host} without RABBITFLOW_DASHBOARD_TOKEN: anyone who "
            "reaches this port can replay and purge dead letters",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}/"
    if settings.dashboard_token is not None:
        where += "?token=$RABBITFLOW_DASHBOARD_TOKEN (once per browser)"
    click.echo(
        f"rabbitflow dashboard{' (read-only)' if read_only else ''} for "
        f"{mask_url(settings.urls[0])} on {where}; Ctrl-C stops it"
    )
    app = create_app(DashboardConfig(settings, topology, read_only=read_only, loopback_only=local))
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    server.run()


def _probe_broker(settings: Settings, topology: Topology | None) -> None:
    """Fail with one line now rather than serve a page that can only show errors."""
    from rabbitflow.dashboard.source import Source

    async def probe() -> None:
        source = Source(settings, topology)
        await source.open()
        try:
            await source.status()
        finally:
            await source.close()

    try:
        asyncio.run(probe())
    except RabbitflowError as exc:
        fail(str(exc))


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is in use: choose another with --port")
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")

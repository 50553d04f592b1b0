"""Settings from the environment (prefix ``RABBITFLOW_``) and ``.env``; the only reader of
environment variables besides ``${VAR}`` expansion in topology files."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rabbitflow.units import parse_size

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_PREFETCH = 32


def _optional_size(value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    return parse_size(value)


class Settings(BaseSettings):
    """rabbitflow's settings (DESIGN.md §4). Command-line options override them."""

    model_config = SettingsConfigDict(
        env_prefix="RABBITFLOW_", env_file=".env", extra="ignore", frozen=True
    )

    url: str = DEFAULT_URL
    """One AMQP URL, or several comma-separated (the nodes of a cluster), tried in turn."""
    management_url: str = "http://localhost:15672"
    prefetch: int | None = Field(default=None, ge=1, le=65535)
    shutdown_timeout: float = Field(default=30.0, ge=0)
    log_format: Literal["console", "json"] | None = None
    log_level: str = "INFO"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    publish_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    heartbeat: int = Field(default=15, ge=0)
    max_message_size: Annotated[int, BeforeValidator(parse_size)] = 16 * 1024 * 1024
    compress_min_size: Annotated[int | None, BeforeValidator(_optional_size)] = None
    """Gzip every published body larger than this (e.g. ``64KiB``); off by default."""
    autoscale_interval: float = Field(default=5.0, gt=0)
    """``--processes MIN:MAX``: seconds between samples of the served queues."""
    autoscale_backlog: int = Field(default=1, ge=0)
    """Ready messages above which the served queues count as backlogged."""
    autoscale_grow_after: int = Field(default=3, ge=1)
    """Consecutive backlogged samples (processes busy) before a process is added."""
    autoscale_idle: float = Field(default=60.0, gt=0)
    """Seconds of idleness (nothing ready or unacked) before a process is removed."""
    queue_poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between polls of queue and dead-letter depths for the metrics."""
    metrics_dir: str | None = None
    """Set by the ``--processes`` supervisor in its children: the directory where they
    share metrics and health with the parent, which serves ``--metrics-port``."""
    tracing: bool = True
    """Propagate OpenTelemetry context (W3C ``traceparent``) when ``rabbitflow[otel]`` is
    installed; without it this setting changes nothing."""
    frame_reader: Literal["rabbitflow", "aiormq"] = "rabbitflow"
    """Who reads AMQP frames off the socket: rabbitflow's reader (rabbitflow/amqp/frames.py:
    whole socket reads, deliveries assembled as read) or aiormq's own (a frame at a time,
    slower; for comparison, or should rabbitflow's reader ever be in doubt)."""
    gc_tuning: bool = True
    """A worker freezes what exists once it has started and raises the collector's young
    threshold (rabbitflow/worker/gc_tuning.py); off leaves the garbage collector alone."""
    tls_verify: bool = True
    """Verify the broker's certificate on ``amqps://`` URLs (give a private CA with
    ``?cafile=PATH`` in the URL). Turning it off logs a warning at every connect."""
    dashboard_token: SecretStr | None = None
    """When set, every request to ``rabbitflow dashboard`` needs it (``Authorization:
    Bearer TOKEN``, or once ``?token=TOKEN`` in a browser, which sets a session cookie)."""

    def __repr_args__(self) -> Any:
        # repr() and str() end up in logs and tracebacks: never with a password.
        for key, value in super().__repr_args__():
            secret = key in ("url", "management_url") and isinstance(value, str)
            yield key, mask_url(value) if secret else value

    @property
    def urls(self) -> list[str]:
        """The broker URLs to try, in order."""
        return split_urls(self.url)

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        """``console`` on a terminal, else ``json``, unless set."""
        if self.log_format:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"


def split_urls(url: str) -> list[str]:
    """Split a comma-separated list of AMQP URLs."""
    return [u.strip() for u in url.split(",") if u.strip()]


_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@", re.I)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe to print or log."""
    return _PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names, percent-decoded (``/`` when the path is empty).

    The one parser of vhosts in rabbitflow: the CLI, the declarer and the test vhosts use it.
    """
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def vhost_url(url: str, vhost: str) -> str:
    """``url`` pointing at ``vhost`` instead (percent-encoded, ``/`` included)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

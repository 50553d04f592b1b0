"""RabbitMQ nodes of our own, for the scenarios that stop, kill, pause or cluster a broker.

The shared broker on :5672 is never touched: every node here has its own name, ports,
data and log directories (owned by the ``rabbitmq`` user, as the server insists), its own
config file and plugin file, and the system Erlang cookie (so nodes can cluster).
``rabbitmq-server -detached`` starts a node; ``rabbitmqctl -n NODE`` controls it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
HOME = "/var/lib/rabbitmq"  # holds the .erlang.cookie every node shares
BASE = Path(os.environ.get("RABBITFLOW_FAULTS_NODES", "/tmp/rabbitflow-faults-nodes"))
OFFSET = int(os.environ.get("RABBITFLOW_FAULTS_NODE_OFFSET", "0"))
"""Added to every node's index, so two test runs on one machine use different node names,
ports and directories (say 20 for the second run)."""


def _as_rabbitmq(
    argv: list[str], env: dict[str, str], timeout: float, prefix: tuple[str, ...] = ()
) -> str:
    """Run ``argv`` as the rabbitmq user; ``prefix`` goes first (``ip netns exec NS``)."""
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": HOME,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        **env,
    }
    cmd = [
        *prefix,
        "runuser",
        "-u",
        "rabbitmq",
        "--",
        "env",
        *(f"{k}={v}" for k, v in full.items()),
        *argv,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}): "
            f"{done.stdout[-2000:]} {done.stderr[-2000:]}"
        )
    return done.stdout


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Node:
    """One RabbitMQ node on 127.0.0.1 with ports 5680+n / 25680+n (and TLS on 5690+n)."""

    index: int
    conf: str = ""
    """Extra lines for rabbitmq.conf."""
    advanced: str = "[]."
    """The advanced.config term."""
    plugins: tuple[str, ...] = ()
    """Plugins to enable (``rabbitmq_management`` listens on 15680+n)."""
    open_files: int = 0
    """The node's open-file limit when set (a thousand quorum queues hold ~3,000 descriptors;
    a broker started from a login shell gets 1,024)."""
    name: str = field(init=False)
    port: int = field(init=False)
    dist_port: int = field(init=False)
    tls_port: int = field(init=False)
    management_port: int = field(init=False)
    dir: Path = field(init=False)
    prefix: tuple[str, ...] = field(init=False, default=())
    """Goes before every command run for this node (netns.NsNode: ``ip netns exec NS``)."""

    def __post_init__(self) -> None:
        n = self.index + OFFSET
        self.name = f"rffaults{n}@localhost"
        self.port = 5680 + n
        self.dist_port = 25680 + n
        self.tls_port = 5690 + n if n < 10 else 5700 + n  # 5690+n would meet 5680+n
        self.dir = BASE / f"node{n}"
        self.management_port = 15680 + n

    # -- environment -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        d = self.dir
        return {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def url(
        self, vhost: str = "", *, user: str = "guest", password: str = "guest", query: str = ""
    ) -> str:
        from urllib.parse import quote

        q = f"?{query}" if query else ""
        return (
            f"amqp://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(vhost, safe='')}{q}"
        )

    def listener(self) -> str:
        return f"127.0.0.1:{self.port}"

    def prepare(self, *, fresh: bool = True) -> None:
        """Write the node's files (data wiped when ``fresh``)."""
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        (self.dir / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        management = (
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            if "rabbitmq_management" in self.plugins
            else ""
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.listener()}\n"
            "loopback_users = none\n"
            "log.console = false\nlog.file.level = info\n"
            "cluster_partition_handling = pause_minority\n"
            f"{management}{self.conf}\n"
        )
        (self.dir / "advanced.config").write_text(self.advanced + "\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(BASE)], check=True)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, *, timeout: float = 60) -> None:
        """Start the node detached and wait until it accepts AMQP connections."""
        server, prefix = [str(RABBIT_BIN / "rabbitmq-server"), "-detached"], self.prefix
        if self.open_files:
            # prlimit raises the hard limit (root), the shell the soft one (runuser's PAM
            # session puts it back to 1,024).
            n = self.open_files
            prefix = ("prlimit", f"--nofile={n}:{n}", *prefix)
            server = ["sh", "-c", f'ulimit -n {n} && exec "$0" "$@"', *server]
        _as_rabbitmq(server, self.env(), 30, prefix)
        self.wait_up(timeout)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(self.port):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"node {self.name} did not open port {self.port} in {timeout}s; see {self.dir / 'log'}"
        )

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n NODE ARGS``."""
        return _as_rabbitmq(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args],
            self.env(),
            timeout,
            self.prefix,
        )

    def queues_ctl(self, *args: str, timeout: float = 60) -> str:
        return _as_rabbitmq(
            [str(RABBIT_BIN / "rabbitmq-queues"), "-n", self.name, *args],
            self.env(),
            timeout,
            self.prefix,
        )

    def pid(self) -> int | None:
        """The beam process of this node (None when it is not running)."""
        try:
            pid = int((self.dir / "rabbit.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and "beam" in _comm(pid) else None

    def kill9(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def pause(self) -> None:
        pid = self.pid()
        assert pid is not None, f"{self.name} is not running"
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the node, by rabbitmqctl when it answers, else by kill -9."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        try:
            self.ctl("stop", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill9()
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            self.kill9()

    # -- helpers ---------------------------------------------------------------------

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("delete_vhost", vhost, timeout=30)

    def connections(self, vhost: str) -> list[str]:
        out = self.ctl("list_connections", "-q", "--no-table-headers", "vhost", "name", timeout=30)
        return [line for line in out.splitlines() if line.split("\t")[0] == vhost]

    def channels(self, vhost: str) -> int:
        out = self.ctl("list_channels", "-q", "--no-table-headers", "vhost", timeout=30)
        return sum(1 for line in out.splitlines() if line.strip() == vhost)

    def consumers(self, vhost: str, queue: str) -> int:
        out = self.ctl(
            "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "consumers", timeout=30
        )
        for line in out.splitlines():
            parts = line.split("\t")
            if parts[0] == queue:
                return int(parts[1])
        return -1

    def messages(self, vhost: str, queue: str) -> int:
        out = self.ctl(
            "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages", timeout=30
        )
        for line in out.splitlines():
            parts = line.split("\t")
            if parts[0] == queue:
                return int(parts[1])
        return -1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"

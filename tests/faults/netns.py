"""Test hosts of our own in Linux network namespaces, for the partition tier.

Layout (everything named ``rfp*``, created by the tests and removed afterwards)::

    rfp-n1  10.213.0.11  rabbit@rfpn1 ─┐
    rfp-n2  10.213.0.12  rabbit@rfpn2 ─┤
    rfp-n3  10.213.0.13  rabbit@rfpn3 ─┼── bridge rfpbr0 (no address, host namespace)
    rfp-w   10.213.0.21  the worker   ─┤
    rfp-p   10.213.0.31  the publisher┘

Each namespace has ``lo`` and one veth (``eth0``) whose other end is a port of the
bridge. **Traffic never leaves these namespaces and the bridge**:

- a namespace has exactly one route, the connected ``10.213.0.0/24`` on ``eth0``: no
  default route, so an address outside the range is unreachable (``ENETUNREACH``) from
  inside (`Net.routes` returns them; the tier's first test asserts it);
- the bridge and the host ends of the veths carry no address and forward nothing
  (``forwarding=0``, IPv6 off), so frames reach only the other ports of the bridge;
- in the host namespace a ``blackhole 10.213.0.0/24`` route stands guard for the range:
  nothing on the host can send a packet for it out of its real interface either.

Names resolve inside each namespace through ``/etc/netns/<ns>/hosts``, which
``ip netns exec`` bind-mounts over ``/etc/hosts``. Each node namespace runs its own epmd
(started by the first Erlang VM in it); all nodes share the system Erlang cookie.

Faults: `Net.cut` (blackhole routes both ways between two namespaces: a silent drop, as a
broken link, existing connections included), `Net.isolate` (the namespace's veth taken off
the bridge: a pulled cable), `Net.degrade` (delay and loss on one namespace's link: ``tc
netem`` where the kernel has it, else `tests.faults.lossy`, a user-space forwarder).

`Net.clean` removes everything named ``rfp*`` — also what an interrupted run left: it runs
before creating and after the tier.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.nodes import BASE, Node

SUBNET = "10.213.0"
RANGE = f"{SUBNET}.0/24"
BRIDGE = "rfpbr0"
PREFIX = "rfp-"
NETNS_ETC = Path("/etc/netns")
NODE_TICKTIME = 4
"""net_ticktime of the nodes (seconds): a lost peer is noticed in ~NODE_TICKTIME (the
default 60 s would keep a partition undetected for a minute)."""


def sh(*argv: str, check: bool = True, timeout: float = 30) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why this machine cannot run the partition tier (None when it can)."""
    if os.geteuid() != 0:
        return "the partition tier needs root (network namespaces)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the partition tier needs `{tool}` (apt-get install iproute2)"
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        return "the partition tier needs rabbitmq-server installed"
    probe = f"{PREFIX}probe"
    with contextlib.suppress(RuntimeError):
        sh("ip", "netns", "del", probe)
    try:
        sh("ip", "netns", "add", probe)
        sh("ip", "-n", probe, "link", "add", "rfpprobe0", "type", "veth", "peer", "rfpprobe1")
    except RuntimeError as exc:
        return f"network namespaces do not work here: {exc}"
    finally:
        with contextlib.suppress(RuntimeError):
            sh("ip", "netns", "del", probe)
    return None


def netem_available(ns: str, dev: str = "eth0") -> str | None:
    """None when ``tc qdisc ... netem`` works in ``ns``, else tc's error."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay",
         "1ms"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return done.stderr.strip()
    sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root")
    return None


@dataclass
class Host:
    """One namespace: its name, the hostname it is known by, its address, its veth."""

    ns: str
    hostname: str
    ip: str

    @property
    def port(self) -> str:
        """The host end of its veth (a bridge port)."""
        return f"{self.hostname}h"

    def exec(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)


@dataclass
class Net:
    hosts: dict[str, Host] = field(default_factory=dict)
    degraders: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    netem: str | None = None
    """tc's error when netem is missing (then `degrade` uses the user-space forwarder)."""

    @classmethod
    def standard(cls) -> Net:
        hosts = [Host(f"{PREFIX}n{i}", f"rfpn{i}", f"{SUBNET}.1{i}") for i in (1, 2, 3)]
        hosts += [Host(f"{PREFIX}w", "rfpw", f"{SUBNET}.21")]
        hosts += [Host(f"{PREFIX}p", "rfpp", f"{SUBNET}.31")]
        return cls({h.hostname: h for h in hosts})

    # -- building and cleaning ---------------------------------------------------------

    def create(self) -> None:
        clean()
        sh("ip", "route", "add", "blackhole", RANGE)
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        _sysctl_host(BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{h.ip} {h.hostname}\n" for h in self.hosts.values()
        )
        # The CLI's own Erlang node is named after the machine: it runs beside its node.
        hosts_file += f"127.0.0.1 {os.uname().nodename}\n"
        for h in self.hosts.values():
            sh("ip", "netns", "add", h.ns)
            (NETNS_ETC / h.ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / h.ns / "hosts").write_text(hosts_file)
            sh("ip", "link", "add", h.port, "type", "veth", "peer", "eth0", "netns", h.ns)
            _sysctl_host(h.port)
            sh("ip", "link", "set", h.port, "master", BRIDGE, "up")
            ipn = ("ip", "-n", h.ns)
            sh(*h.exec(), "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
            sh(*ipn, "addr", "add", f"{h.ip}/24", "dev", "eth0")
            # One TCP segment a frame: loss (tests.faults.lossy) is then per segment.
            sh(*ipn, "link", "set", "eth0", "gso_max_segs", "1")
            sh(*ipn, "link", "set", "eth0", "up")
            sh(*ipn, "link", "set", "lo", "up")
        self.netem = netem_available(next(iter(self.hosts.values())).ns)

    def routes(self, hostname: str) -> list[str]:
        """Every route of the namespace (IPv4 and IPv6), one per line."""
        h = self.hosts[hostname]
        out = sh("ip", "-n", h.ns, "-4", "route", "show", "table", "all")
        out += sh("ip", "-n", h.ns, "-6", "route", "show", "table", "all")
        return [line for line in out.splitlines() if line.strip()]

    # -- faults --------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop everything between ``a`` and ``b`` (both directions), silently."""
        ha, hb = self.hosts[a], self.hosts[b]
        sh("ip", "-n", ha.ns, "route", "replace", "blackhole", f"{hb.ip}/32")
        sh("ip", "-n", hb.ns, "route", "replace", "blackhole", f"{ha.ip}/32")

    def mend(self, a: str, b: str) -> None:
        ha, hb = self.hosts[a], self.hosts[b]
        sh("ip", "-n", ha.ns, "route", "del", "blackhole", f"{hb.ip}/32", check=False)
        sh("ip", "-n", hb.ns, "route", "del", "blackhole", f"{ha.ip}/32", check=False)

    def isolate(self, name: str) -> None:
        """Take the namespace's link off the bridge: it reaches nobody, nobody reaches it."""
        sh("ip", "link", "set", self.hosts[name].port, "nomaster")

    def rejoin(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name].port, "master", BRIDGE)

    def degrade(self, name: str, delay_ms: int, loss_pct: float) -> str:
        """Delay every packet crossing ``name``'s link by ``delay_ms`` and drop
        ``loss_pct`` % of them, in each direction (a round trip: twice the delay, and
        1 - (1 - loss)^2 of them lose a packet); returns the means (``netem`` on both ends
        of the veth, or ``forwarder``: `tests.faults.lossy`)."""
        h = self.hosts[name]
        if self.netem is None:
            for ns, dev in ((h.ns, "eth0"), (None, h.port)):
                argv = ("tc", "qdisc", "add", "dev", dev, "root", "netem")
                argv += ("delay", f"{delay_ms}ms", "loss", f"{loss_pct}%")
                sh(*(h.exec() if ns else ()), *argv)
            return "netem"
        from tests.faults import lossy

        self.degraders[name] = lossy.start(h.port, BRIDGE, delay_ms, loss_pct)
        return "forwarder"

    def restore(self, name: str) -> None:
        h = self.hosts[name]
        proc = self.degraders.pop(name, None)
        if proc is not None:
            from tests.faults import lossy

            lossy.stop(proc, h.port, BRIDGE)
        elif self.netem is None:
            sh(*h.exec(), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            sh("tc", "qdisc", "del", "dev", h.port, "root", check=False)

    def heal_all(self) -> None:
        for name in list(self.degraders):
            self.restore(name)
        for h in self.hosts.values():
            sh("ip", "link", "set", h.port, "master", BRIDGE, check=False)
            for other in self.hosts.values():
                if other is not h:
                    sh("ip", "-n", h.ns, "route", "del", "blackhole", f"{other.ip}/32", check=False)


def _sysctl_host(dev: str) -> None:
    """A host-side interface of ours neither routes nor speaks IPv6."""
    for key in (f"net/ipv4/conf/{dev}/forwarding", f"net/ipv6/conf/{dev}/disable_ipv6"):
        path = Path("/proc/sys") / key
        if path.exists():
            path.write_text("0\n" if "forwarding" in key else "1\n")


def clean() -> None:
    """Remove every namespace, link, route and file of ours, and end the processes left in
    our namespaces (RabbitMQ nodes, epmd, workers of an interrupted run)."""
    names = [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]
    ours = [n for n in names if n.startswith(PREFIX)]
    for ns in ours:
        for _ in range(3):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        sh("ip", "netns", "del", ns, check=False)
    for line in sh("ip", "-o", "link", "show").splitlines():
        dev = line.split(":")[1].strip().split("@")[0]
        if dev.startswith("rfp"):
            sh("ip", "link", "del", dev, check=False)
    sh("ip", "route", "del", "blackhole", RANGE, check=False)
    for d in NETNS_ETC.glob(f"{PREFIX}*") if NETNS_ETC.exists() else ():
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only when empty: others' namespaces keep theirs


@dataclass
class NsNode(Node):
    """A RabbitMQ node in namespace ``host.ns``: ``rabbit@HOSTNAME`` on its own address,
    standard ports (5672, 25672, epmd 4369: the namespace is its own network)."""

    host: Host = field(default_factory=lambda: Host("", "", ""))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"rabbit@{self.host.hostname}"
        self.port = 5672
        self.dist_port = 25672
        self.dir = BASE / f"ns-{self.host.hostname}"
        self.prefix = self.host.exec()

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("ERL_EPMD_ADDRESS")
        env["RABBITMQ_NODE_IP_ADDRESS"] = self.host.ip
        env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = f"-kernel net_ticktime {NODE_TICKTIME}"
        return env

    def listener(self) -> str:
        return f"{self.host.ip}:5672"

    def url(
        self, vhost: str = "", *, user: str = "guest", password: str = "guest", query: str = ""
    ) -> str:
        return (
            super()
            .url(vhost, user=user, password=password, query=query)
            .replace("@127.0.0.1:5672/", f"@{self.host.ip}:5672/")
        )

    def wait_up(self, timeout: float = 60) -> None:
        probe = (
            "import socket,sys;s=socket.socket();s.settimeout(0.5);"
            f"sys.exit(s.connect_ex(('{self.host.ip}',5672)))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                subprocess.run([*self.prefix, sys.executable, "-c", probe], check=False).returncode
                == 0
            ):
                return
            time.sleep(0.3)
        raise RuntimeError(f"node {self.name} did not open 5672 in {timeout}s; see {self.dir}")

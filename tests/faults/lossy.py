"""Delay and loss on one bridge port, in user space: the partition tier's stand-in for
``tc qdisc ... netem`` on kernels built without ``sch_netem``.

`start` takes the host end of a namespace's veth (``PORT``) off the bridge, makes a veth
pair of ours (``PORT``'s name with ``d`` / ``e`` for its last letter) whose ``d`` end
joins the bridge in its place, and runs this module as a process that forwards every frame
between ``PORT`` and ``e``, each direction delayed by ``DELAY_MS`` and dropped with
probability ``LOSS_PCT`` %. Frames are read and written with their virtio-net header
(``PACKET_VNET_HDR``), so checksum-offloaded and GSO frames cross unchanged; the tier
sets ``gso_max_segs 1`` on every namespace's ``eth0`` so that a frame is one TCP segment
and loss is per segment. Frames only move between two interfaces of ours in the host
namespace: nothing is routed, nothing reaches another interface.

Usage: python -m tests.faults.lossy PORT E DELAY_MS LOSS_PCT
"""

from __future__ import annotations

import contextlib
import heapq
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
ETH_P_ALL = 0x0003


def _names(port: str) -> tuple[str, str]:
    return port[:-1] + "d", port[:-1] + "e"


def _sh(*argv: str, check: bool = True) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def start(port: str, bridge: str, delay_ms: int, loss_pct: float) -> subprocess.Popen[bytes]:
    """Put the forwarder between ``port`` and ``bridge``; `stop` undoes it."""
    d, e = _names(port)
    _sh("ip", "link", "add", d, "type", "veth", "peer", e)
    for dev in (d, e):
        _sh("sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
        _sh("sh", "-c", f"echo 0 > /proc/sys/net/ipv4/conf/{dev}/forwarding")
        _sh("ip", "link", "set", dev, "gso_max_segs", "1")
    _sh("ip", "link", "set", e, "up")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.lossy", port, e, str(delay_ms), str(loss_pct)],
        cwd=Path(__file__).resolve().parents[2],
    )
    time.sleep(0.3)  # the sockets are bound before traffic moves over
    _sh("ip", "link", "set", port, "nomaster")
    _sh("ip", "link", "set", d, "master", bridge, "up")
    return proc


def stop(proc: subprocess.Popen[bytes], port: str, bridge: str) -> None:
    d, _ = _names(port)
    _sh("ip", "link", "del", d, check=False)  # takes its peer e with it
    _sh("ip", "link", "set", port, "master", bridge, check=False)
    proc.terminate()
    proc.wait(10)


def _open(dev: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((dev, 0))
    s.setblocking(False)
    return s


def forward(a: str, b: str, delay_ms: int, loss_pct: float) -> None:
    sa, sb = _open(a), _open(b)
    other = {sa: sb, sb: sa}
    sel = selectors.DefaultSelector()
    sel.register(sa, selectors.EVENT_READ)
    sel.register(sb, selectors.EVENT_READ)
    rng = random.Random()
    due: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    delay = delay_ms / 1000
    running = True

    def end(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, end)
    while running:
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, out, frame = heapq.heappop(due)
            # A full queue or a vanished device: the frame is lost, as on a wire.
            with contextlib.suppress(OSError):
                out.send(frame)
        timeout = max(0.0, due[0][0] - now) if due else 0.5
        for key, _ in sel.select(timeout):
            src = key.fileobj
            assert isinstance(src, socket.socket)
            while True:
                try:
                    frame = src.recv(70000)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return  # the device went away: the run is over
                if rng.random() * 100 < loss_pct:
                    continue
                seq += 1
                heapq.heappush(due, (time.monotonic() + delay, seq, other[src], frame))


if __name__ == "__main__":
    forward(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))

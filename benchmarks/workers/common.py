"""What every benchmark worker shares: the message body, the model, the result protocol.

A worker is started as ``python -m benchmarks.workers.<impl> '<spec json>'``. It prints
``READY`` on a line of its own once it consumes (the latency pacer waits for it), and its
result as the last line of stdout, one JSON object. Workers of the ``processes`` scenario
cannot stop on their own (the count is shared), so they write their counters to
``$BENCH_STATS_DIR/<pid>.json`` once idle instead; the harness sums them and stops them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


class Item(BaseModel):
    """One order line."""

    sku: str
    qty: int
    price: float


class Order(BaseModel):
    """The benchmark message: about 200 bytes of JSON once serialised."""

    order_id: str
    customer_id: str
    amount: float
    currency: str
    items: list[Item]
    note: str
    ts: int
    """Wall-clock time of publishing, in nanoseconds (latency scenario), else 0."""


def make_body(i: int, ts: int = 0) -> bytes:
    """A ~200-byte JSON body for message number ``i``."""
    return json.dumps(
        {
            "order_id": f"ord-{i:010d}",
            "customer_id": f"cus-{i % 9973:06d}",
            "amount": 12.5 + i % 100,
            "currency": "EUR",
            "items": [
                {"sku": "sku-000123", "qty": 2, "price": 4.25},
                {"sku": "sku-000456", "qty": 1, "price": 4.0},
            ],
            "note": "benchmark message for rabbitflow",
            "ts": ts,
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Spec:
    """What the harness asks one worker to do."""

    scenario: str
    url: str
    queue: str
    count: int
    prefetch: int = 100
    validate: bool = False
    mode: str = "pipelined"
    window: int = 100
    retry_queue: str = ""
    topology: str = ""
    loop: str = "asyncio"

    @classmethod
    def from_argv(cls) -> Spec:
        """The spec passed as the first command-line argument."""
        return cls(**json.loads(sys.argv[1]))


@dataclass
class Counter:
    """Counts handled messages, keeps their timing and (for latency) their delays."""

    target: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)

    def hit(self) -> None:
        """Record one finished message; set ``done`` at the target."""
        now = time.perf_counter()
        if not self.first:
            self.first = now
            self.cpu_first = time.process_time()
        self.count += 1
        self.last = now
        if self.count >= self.target:
            self.cpu_last = time.process_time()
        if self.count >= self.target:
            self.done.set()

    def start(self) -> None:
        """Start the clock at the first delivery, if not yet started."""
        if not self.first:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()

    def hit_latency(self, ts: int) -> None:
        """Record one message published at wall-clock ``ts`` (ns)."""
        self.latencies_ns.append(time.time_ns() - ts)
        self.hit()

    def result(self) -> dict[str, Any]:
        """The throughput result of a consume run."""
        seconds = self.last - self.first
        rate = (self.count - 1) / seconds if seconds > 0 else 0.0
        out: dict[str, Any] = {"count": self.count, "seconds": seconds, "rate": rate}
        if self.cpu_last > self.cpu_first > 0 and self.count > 1:
            # CPU of the worker process (all its threads) per message: on a shared machine
            # it moves far less than the wall-clock rate.
            out["cpu_us"] = (self.cpu_last - self.cpu_first) / (self.count - 1) * 1e6
        if self.latencies_ns:
            ms = [x / 1e6 for x in self.latencies_ns]
            out.update(p50=percentile(ms, 50), p95=percentile(ms, 95), p99=percentile(ms, 99))
        return out


def ready() -> None:
    """Tell the harness the consumer is running."""
    print("READY", flush=True)


def emit(result: dict[str, Any]) -> None:
    """Print the result as the last line of stdout."""
    print(json.dumps(result), flush=True)


async def publish_all(send: Callable[[int], Awaitable[Any]], count: int, window: int) -> None:
    """Call ``send(i)`` for ``count`` messages with at most ``window`` unconfirmed at once."""
    pending: set[asyncio.Future[Any]] = set()
    for i in range(count):
        if len(pending) >= window:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                f.result()
        pending.add(asyncio.ensure_future(send(i)))
    if pending:
        for f in await asyncio.gather(*pending):
            _ = f


def bodies(count: int) -> list[bytes]:
    """The bodies to publish, built before the clock starts."""
    return [make_body(i) for i in range(count)]


class IdleStats:
    """Counters of one process of the ``processes`` scenario, written once it goes idle.

    Wall-clock times, so that the harness can combine several processes.
    """

    def __init__(self, idle: float = 0.5) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self._idle = idle
        self._written = -1
        self._thread: threading.Thread | None = None

    def hit(self) -> None:
        """Record one finished message (called on the event loop's thread)."""
        now = time.time()
        if not self.count:
            self.first = now
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        self.count += 1
        self.last = now

    def _watch(self) -> None:
        directory = os.environ["BENCH_STATS_DIR"]
        while True:
            time.sleep(0.05)
            if time.time() - self.last > self._idle and self._written != self.count:
                self._written = self.count
                data = {"count": self.count, "first": self.first, "last": self.last}
                path = os.path.join(directory, f"{os.getpid()}.json")
                with open(path + ".tmp", "w") as f:
                    json.dump(data, f)
                os.replace(path + ".tmp", path)


def run(main: Callable[[Spec], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """Run a worker's ``main`` with the spec from argv, on the loop it asks for."""
    spec = Spec.from_argv()
    result: dict[str, Any]
    if spec.loop == "uvloop":
        import uvloop

        result = uvloop.run(main(spec))
    else:
        result = asyncio.run(main(spec))
    emit(result)


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]

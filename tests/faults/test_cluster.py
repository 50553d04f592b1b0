"""A 3-node RabbitMQ cluster of our own (ports 5681-5683), quorum queues, workers and
publishers given all three URLs: kill the queue's leader, kill the worker's node, stop two
of three, a rolling restart — all under load.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.conftest import WorkerFactory
from tests.faults.harness import PublishLog, check, dead_letter_ids, publish_tracked, until
from tests.faults.nodes import Node
from tests.helpers import consumer_count_of

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]
"""The first test also pays for starting the cluster (its module fixture)."""

PREFETCH = 20
PUBLISH_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[Node]]:
    nodes = [Node(i) for i in (1, 2, 3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: n.stop(), nodes))
        for n in nodes:
            n.prepare()
        list(pool.map(lambda n: n.start(), nodes))
    try:
        for n in nodes[1:]:
            n.ctl("stop_app")
            n.ctl("join_cluster", nodes[0].name)
            n.ctl("start_app")
        yield nodes
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: n.stop(), nodes))


@pytest.fixture
def cluster_vhost(cluster: list[Node]) -> Iterator[str]:
    _all_up(cluster)
    name = f"rf-cluster-{uuid.uuid4().hex[:8]}"
    cluster[0].add_vhost(name)
    try:
        yield name
    finally:
        _all_up(cluster)
        live = next(n for n in cluster if n.pid() is not None)
        live.delete_vhost(name)


def _all_up(nodes: list[Node]) -> None:
    for n in nodes:
        n.resume()
        if n.pid() is None:
            n.start()
        n.ctl("start_app", timeout=90)


def urls(nodes: list[Node], vhost: str) -> str:
    return ",".join(n.url(vhost) for n in nodes)


async def consumers_on(nodes: list[Node], vhost: str) -> int:
    for n in nodes:
        try:
            return await consumer_count_of(n.url(vhost), "jobs")
        except Exception:
            continue
    return -1


def leader_of(node: Node, vhost: str, queue: str = "jobs") -> str:
    out = node.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "leader")
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == queue:
            return parts[1].strip()
    raise AssertionError(f"no leader for {queue}: {out}")


async def _under_load(
    cluster: list[Node],
    vhost: str,
    w_urls: str,
    workers: WorkerFactory,
    fault: object,
    name: str,
    **bounds: float,
) -> None:
    """Run a worker and a publisher on all URLs, apply ``fault`` (an async callable
    returning extra figures), then check the ledger."""
    w = workers(
        w_urls,
        HANDLER_SLEEP="0.002",
        HANDLER_PREFETCH=str(PREFETCH),
        RABBITFLOW_CONNECT_TIMEOUT="2",
    )
    w.start()
    await until(lambda: consumers_on(cluster, vhost), timeout=60, interval=0.3, message="consuming")
    log = PublishLog()
    stop = asyncio.Event()
    publisher = asyncio.create_task(
        publish_tracked(
            w_urls,
            range(10**7),
            log,
            window=20,
            pace=0.005,
            stop=stop,
            publish_timeout=PUBLISH_TIMEOUT,
            connect_timeout=2.0,
        )
    )
    try:
        await asyncio.sleep(2)
        figures = await fault(log)  # type: ignore[operator]
        await asyncio.sleep(2)
    finally:
        stop.set()
        await asyncio.wait_for(publisher, 90)
    confirmed = log.ids("confirmed")
    await until(
        lambda: confirmed <= {int(k) for k in w.done()},
        timeout=90,
        message="every confirmed message handled",
    )
    assert w.stop() == 0
    live = next(n for n in cluster if n.pid() is not None)
    v = check(
        name,
        log,
        w.ledger,
        await dead_letter_ids(live.url(vhost)),
        **figures,
        longest_publish_s=round(log.longest, 2),
        errors=dict(log.errors),
    )
    v.record()
    assert (v.lost, v.unexpected) == (0, 0)
    assert log.longest <= PUBLISH_TIMEOUT + 3 * 2.0 + 1  # never hangs
    for key, limit in bounds.items():
        assert figures[key] <= limit, (key, figures[key], limit)


async def _resumed(cluster: list[Node], vhost: str, log: PublishLog, since: float) -> float:
    """Seconds from ``since`` until the queue has a consumer again and a publish made
    after ``since`` is confirmed."""
    await until(
        lambda: consumers_on(cluster, vhost), timeout=60, interval=0.2, message="consumer back"
    )
    try:
        await until(
            lambda: log.last_confirmed > since, timeout=60, interval=0.2, message="confirms again"
        )
    except AssertionError:
        live = next(n for n in cluster if n.pid() is not None)
        status = live.ctl(
            "list_queues", "-p", vhost, "name", "leader", "members", "online", timeout=30
        )
        fresh = await _fresh_publishes(cluster, vhost)
        raise AssertionError(
            f"no confirm since the fault; publish errors {dict(log.errors)}; a fresh "
            f"connection to each live node: {fresh}; queues: {status}"
        ) from None
    return time.monotonic() - since


async def _fresh_publishes(nodes: list[Node], vhost: str) -> dict[str, str]:
    """Publish once through a new connection to each node: tells a stale publisher
    from a queue that refuses everyone."""
    from rabbitflow.producer import Producer
    from rabbitflow.settings import Settings

    out: dict[str, str] = {}
    for n in nodes:
        try:
            async with Producer(settings=Settings(url=n.url(vhost), publish_timeout=5)) as p:
                await p.publish("", "jobs", {"id": -1})
            out[n.name] = "confirmed"
        except Exception as exc:
            out[n.name] = type(exc).__name__
    return out


async def test_kill_the_queue_leader(
    cluster: list[Node], cluster_vhost: str, workers: WorkerFactory
) -> None:
    """L = 0; consuming and confirms resume within 15 s."""

    async def fault(log: PublishLog) -> dict[str, float]:
        leader = leader_of(cluster[0], cluster_vhost)
        victim = next(n for n in cluster if n.name == leader)
        began = time.monotonic()
        await asyncio.to_thread(victim.kill9)
        resumed = await _resumed([n for n in cluster if n is not victim], cluster_vhost, log, began)
        await asyncio.to_thread(victim.start)
        return {"resumed_s": round(resumed, 2)}

    await _under_load(
        cluster,
        cluster_vhost,
        urls(cluster, cluster_vhost),
        workers,
        fault,
        "cluster: kill -9 the quorum leader's node",
        resumed_s=15,
    )


async def test_kill_the_workers_node(
    cluster: list[Node], cluster_vhost: str, workers: WorkerFactory
) -> None:
    """The worker (first URL: node 2) reconnects to another node within 10 s."""
    order = [cluster[1], cluster[2], cluster[0]]

    async def fault(log: PublishLog) -> dict[str, float]:
        victim = order[0]
        began = time.monotonic()
        await asyncio.to_thread(victim.kill9)
        rest = [n for n in cluster if n is not victim]
        await until(
            lambda: consumers_on(rest, cluster_vhost),
            timeout=30,
            interval=0.2,
            message="consumer back",
        )
        reconnected = time.monotonic() - began
        await asyncio.to_thread(victim.start)
        return {"reconnect_s": round(reconnected, 2)}

    await _under_load(
        cluster,
        cluster_vhost,
        urls(order, cluster_vhost),
        workers,
        fault,
        "cluster: kill -9 the worker's node",
        reconnect_s=10,
    )


async def test_stop_two_of_three(
    cluster: list[Node], cluster_vhost: str, workers: WorkerFactory
) -> None:
    """Without a majority publishes fail or time out (never hang), nothing confirmed is
    lost, and everything resumes when the nodes return."""

    async def fault(log: PublishLog) -> dict[str, float]:
        down = cluster[1:]
        await asyncio.gather(*(asyncio.to_thread(n.ctl, "stop_app") for n in down))
        before = dict(log.errors)
        await asyncio.sleep(PUBLISH_TIMEOUT + 3)
        failed_during = sum(log.errors.values()) - sum(before.values())
        began = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(n.ctl, "start_app") for n in down))
        resumed = await _resumed(cluster, cluster_vhost, log, began)
        return {"failed_during_outage": failed_during, "resumed_s": round(resumed, 2)}

    await _under_load(
        cluster,
        cluster_vhost,
        urls(cluster, cluster_vhost),
        workers,
        fault,
        "cluster: stop_app on 2 of 3 nodes",
        resumed_s=30,
    )


async def test_rolling_restart(
    cluster: list[Node], cluster_vhost: str, workers: WorkerFactory
) -> None:
    """stop_app / start_app each node in turn, waiting for the queue to recover."""

    async def fault(log: PublishLog) -> dict[str, float]:
        worst = 0.0
        for n in cluster:
            await asyncio.to_thread(n.ctl, "stop_app")
            await asyncio.sleep(2)
            began = time.monotonic()
            await asyncio.to_thread(n.ctl, "start_app")
            worst = max(worst, await _resumed(cluster, cluster_vhost, log, began))
        return {"worst_resume_s": round(worst, 2)}

    await _under_load(
        cluster,
        cluster_vhost,
        urls(cluster, cluster_vhost),
        workers,
        fault,
        "cluster: rolling restart (stop_app/start_app)",
        worst_resume_s=30,
    )

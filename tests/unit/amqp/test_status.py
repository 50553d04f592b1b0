"""Status rows from the management API's queue list (no broker)."""

from __future__ import annotations

from rabbitflow.amqp.status import layout_from_names, layout_from_topology, rows_from_management
from rabbitflow.topology import load_text

QUEUES = [
    {
        "name": "jobs",
        "type": "classic",
        "messages": 5,
        "messages_ready": 4,
        "messages_unacknowledged": 1,
        "consumers": 2,
        "message_stats": {"publish_details": {"rate": 1.5}, "deliver_get_details": {"rate": 0.5}},
    },
    {"name": "jobs.retry.1s", "messages": 3},
    {"name": "jobs.retry.2s", "messages": 1},
    {"name": "jobs.dlq", "messages": 7},
    {
        "name": "other",
        "messages": 0,
        "messages_ready": 0,
        "messages_unacknowledged": 0,
        "consumers": 0,
    },
    {"name": "amq.gen-xyz", "messages": 0},
]


def test_generated_queues_are_folded_into_their_work_queue() -> None:
    rows = {r.queue: r for r in rows_from_management(QUEUES, None)}
    assert set(rows) == {"jobs", "other"}
    jobs = rows["jobs"]
    assert (jobs.ready, jobs.unacked, jobs.consumers) == (4, 1, 2)
    assert (jobs.publish_rate, jobs.deliver_rate) == (1.5, 0.5)
    assert (jobs.retrying, jobs.dead_letter_queue, jobs.dead_letters) == (4, "jobs.dlq", 7)
    assert (rows["other"].retrying, rows["other"].dead_letters) == (None, None)
    assert rows["other"].publish_rate is None


def test_with_a_topology_its_queues_are_shown_and_missing_ones_flagged() -> None:
    topology = load_text(
        "version: 1\nqueues:\n  jobs:\n    retry: {max_retries: 2}\n  absent: {}\n"
    )
    rows = rows_from_management(QUEUES, layout_from_topology(topology))
    assert [(r.queue, r.exists) for r in rows] == [("jobs", True), ("absent", False)]
    assert rows[0].retrying == 4


def test_a_dlq_without_its_work_queue_is_a_queue_of_its_own() -> None:
    layout = layout_from_names(["lonely.dlq", "x.retry.1s"])
    assert layout.work_queues == ("lonely.dlq", "x.retry.1s")

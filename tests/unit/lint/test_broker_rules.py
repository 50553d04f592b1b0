"""The --broker rules on a broker state built by hand (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rabbitflow.lint import load_located
from rabbitflow.lint.broker import BrokerRules, BrokerState, HandlerTimeout, lint_broker
from rabbitflow.render.definitions import to_definitions
from rabbitflow.topology.expand import expand

TEXT = """version: 1
exchanges:
  jobs: {type: direct}
queues:
  jobs.resize:
    type: quorum
    delivery_limit: 5
    bind: [{exchange: jobs, routing_key: resize}]
    retry: {max_retries: 1, delay: 1s}
"""


def setup(tmp_path: Path, text: str = TEXT) -> Any:
    file = tmp_path / "jobs.yaml"
    file.write_text(text)
    return load_located([str(file)])


def test_in_sync_broker_has_no_finding(tmp_path: Path) -> None:
    topology, locator = setup(tmp_path)
    state = BrokerState(to_definitions(expand(topology), "/"))
    assert lint_broker(topology, state, locator, BrokerRules()) == []


def test_a_differing_generated_queue_points_at_its_work_queue(tmp_path: Path) -> None:
    topology, locator = setup(tmp_path)
    document = to_definitions(expand(topology), "/")
    retry = next(q for q in document["queues"] if q["name"] == "jobs.resize.retry.1s")
    retry["arguments"]["x-message-ttl"] = 500
    [finding] = lint_broker(topology, BrokerState(document), locator, BrokerRules())
    assert (finding.rule, finding.line, finding.column) == ("RF101", 5, 3)
    assert "x-message-ttl 500 on the broker, 1000 in the files" in finding.message


def test_consumer_timeout_from_a_policy_and_from_the_default(tmp_path: Path) -> None:
    topology, locator = setup(tmp_path)
    document = to_definitions(expand(topology), "/")
    queues = [
        {
            "name": "jobs.resize",
            "arguments": {},
            "policy": "slow",
            "effective_policy_definition": {"consumer-timeout": 60000},
        }
    ]
    state = BrokerState(document, queues)
    fast = BrokerRules([HandlerTimeout("jobs.resize", 30)])
    slow = BrokerRules([HandlerTimeout("jobs.resize", 90)])
    assert lint_broker(topology, state, locator, fast) == []
    [finding] = lint_broker(topology, state, locator, slow)
    assert finding.rule == "RF102"
    assert "consumer timeout there is 1m (policy 'slow')" in finding.message
    no_policy = BrokerState(document, [{"name": "jobs.resize", "arguments": {}}])
    hour = BrokerRules([HandlerTimeout("jobs.resize", 3600)])
    [finding] = lint_broker(topology, no_policy, locator, hour)
    assert "30m (RabbitMQ's default" in finding.message
    told = BrokerRules([HandlerTimeout("jobs.resize", 90)], consumer_timeout_ms=120_000)
    assert lint_broker(topology, no_policy, locator, told) == []


def test_deprecated_features_are_warnings(tmp_path: Path) -> None:
    topology, locator = setup(tmp_path)
    document = to_definitions(expand(topology), "/")
    document["queues"].append(
        {"name": "lazy", "durable": True, "arguments": {"x-queue-mode": "lazy"}}
    )
    document["policies"] = [{"name": "ha", "pattern": ".*", "definition": {"ha-mode": "all"}}]
    used = [{"name": "global_qos", "desc": "global QoS", "doc_url": "https://example"}]
    findings = lint_broker(topology, BrokerState(document, (), used), locator, BrokerRules())
    assert [(f.rule, f.severity.value) for f in findings] == [("RF103", "warning")] * 3
    texts = " ".join(f.message for f in findings)
    assert "x-queue-mode" in texts and "ha-mode" in texts and "global_qos" in texts

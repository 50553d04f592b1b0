"""The retry schedule arithmetic of DESIGN.md §1."""

import pytest

from rabbitflow.topology.schema import RetryPolicy, retry_queue_name


@pytest.mark.parametrize(
    ("policy", "schedule"),
    [
        ({"max_retries": 4, "delay": "1s"}, (1000, 2000, 4000, 8000)),
        ({"max_retries": 4, "delay": "1s", "max_delay": "3s"}, (1000, 2000, 3000, 3000)),
        ({"max_retries": 3, "backoff": "linear", "delay": "100ms"}, (100, 200, 300)),
        ({"max_retries": 3, "backoff": "fixed", "delay": "5s"}, (5000, 5000, 5000)),
        ({"max_retries": 4, "delays": ["1s", "10s"]}, (1000, 10000, 10000, 10000)),
        ({"max_retries": 0}, ()),
        ({"max_retries": 3, "delay": "1s", "multiplier": 3}, (1000, 3000, 9000)),
    ],
)
def test_schedule_follows_the_backoff(policy: dict[str, object], schedule: tuple[int, ...]) -> None:
    assert RetryPolicy.model_validate(policy).schedule == schedule


@pytest.mark.parametrize(
    ("delay", "name"),
    [
        (500, "q.retry.500ms"),
        (1000, "q.retry.1s"),
        (90_000, "q.retry.90s"),
        (120_000, "q.retry.2m"),
        (3_600_000, "q.retry.1h"),
        (86_400_000, "q.retry.1d"),
        (1500, "q.retry.1500ms"),
    ],
)
def test_retry_queue_is_named_in_the_largest_exact_unit(delay: int, name: str) -> None:
    assert retry_queue_name("q", delay) == name

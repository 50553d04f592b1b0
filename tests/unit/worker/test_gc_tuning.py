"""A worker tunes the garbage collector once, only from CPython's defaults."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from rabbitflow.worker import gc_tuning
from rabbitflow.worker.gc_tuning import DEFAULT_THRESHOLDS, WORKER_THRESHOLDS, tune_for_worker


@pytest.fixture
def default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc_tuning.untune()
    try:
        yield
    finally:
        gc_tuning.untune()
        gc.set_threshold(*before)


def test_a_worker_freezes_what_exists_and_raises_the_young_threshold(
    default_collector: None,
) -> None:
    assert tune_for_worker() is True
    assert gc.get_threshold() == WORKER_THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the imported modules, at least
    assert tune_for_worker() is False  # once per process


def test_a_process_that_tuned_its_own_collector_keeps_its_tuning(default_collector: None) -> None:
    gc.set_threshold(5000, 20, 20)
    assert tune_for_worker() is False
    assert gc.get_threshold() == (5000, 20, 20)
    assert gc.get_freeze_count() == 0
    assert DEFAULT_THRESHOLDS == (700, 10, 10)

"""Two processes opening a new SQLite store at the same moment (the workers of
``rabbitflow run --processes 2`` on a fresh idempotency or stream-position file): both
open it. SQLite answered "database is locked" at once to one of every four such pairs,
without waiting for its busy timeout, while the file was switched to WAL."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from rabbitflow.worker.idempotency.sqlite_store import open_wal

CTX = mp.get_context("fork")  # a plain function and no event loop in the parent
PAIRS = 60
"""Without the fix the chance that all 60 pairs open cleanly is 0.75^60, about 3e-8."""


def _open(path: str, go: Any, answers: Any) -> None:
    go.wait(10)
    try:
        open_wal(Path(path), 10.0).close()
        answers.put("ok")
    except Exception as exc:  # the answer is the assertion's
        answers.put(repr(exc))


def test_two_processes_opening_a_new_file_together_both_get_it(tmp_path: Path) -> None:
    failures = []
    for n in range(PAIRS):
        path = str(tmp_path / f"store-{n}.db")
        go, answers = CTX.Event(), CTX.Queue()
        pair = [CTX.Process(target=_open, args=(path, go, answers)) for _ in range(2)]
        for p in pair:
            p.start()
        go.set()
        got = [answers.get(timeout=30) for _ in pair]
        for p in pair:
            p.join(10)
        failures += [answer for answer in got if answer != "ok"]
    assert failures == []

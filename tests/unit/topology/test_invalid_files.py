"""Each bad topology in tests/data/invalid/NAME.yaml gives exactly the lines in NAME.errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rabbitflow.errors import TopologyError
from rabbitflow.topology import load_topology

INVALID = Path(__file__).parents[2] / "data" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_file_reports_exactly_its_errors(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)
    expected = case.with_suffix(".errors").read_text(encoding="utf-8").splitlines()

    with pytest.raises(TopologyError) as caught:
        load_topology(case.name, environ={})

    assert [str(p) for p in caught.value.problems] == expected

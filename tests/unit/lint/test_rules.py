"""Each file rule: tests/data/lint/RFnnn_*.yaml gives exactly the lines in RFnnn_*.lint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rabbitflow.cli.main import main
from rabbitflow.lint import RULES, Severity, exit_code, lint_topology, load_located
from rabbitflow.lint.rules import topic_covers

ROOT = Path(__file__).parents[3]
DATA = ROOT / "tests" / "data" / "lint"
CASES = sorted(DATA.glob("RF*.yaml"))


def test_every_rule_has_its_case_file() -> None:
    assert {c.name[:5] for c in CASES} == {r.id for r in RULES}


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_rule_case_gives_exactly_its_lines(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    expected = case.with_suffix(".lint").read_text(encoding="utf-8").splitlines()

    topology, locator = load_located([case.name])
    findings = lint_topology(topology, locator)

    assert [str(f) for f in findings] == expected
    assert {f.rule for f in findings} == {case.name[:5]}


def test_a_clean_file_has_no_finding_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    result = CliRunner().invoke(main, ["lint", "clean.yaml", "--strict"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("case", "strict", "code"),
    [
        ("RF002_dead_letter_cycle.yaml", False, 1),  # an error
        ("RF001_transient_queue.yaml", False, 0),  # a warning only
        ("RF001_transient_queue.yaml", True, 1),
        ("RF009_redundant_topic_binding.yaml", True, 0),  # infos never fail
    ],
)
def test_exit_code_follows_severity_and_strict(
    case: str, strict: bool, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(DATA)
    args = ["lint", case, *(["--strict"] if strict else [])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code
    assert result.stdout.splitlines() == (DATA / case).with_suffix(".lint").read_text().splitlines()


def test_json_format_prints_one_object_per_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    result = CliRunner().invoke(
        main, ["lint", "RF007_drop_head_without_dead_letters.yaml", "--format", "json"]
    )
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["line"], r["column"]) for r in rows] == [(7, 5), (10, 5)]
    assert rows[0] == {
        "file": "RF007_drop_head_without_dead_letters.yaml",
        "line": 7,
        "column": 5,
        "rule": "RF007",
        "severity": "warning",
        "message": rows[0]["message"],
        "hint": "use overflow: reject-publish so publishers see a nack, or dead_letter: true",
    }
    assert "metrics.explicit" in rows[0]["message"]


def test_an_invalid_file_prints_validation_errors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nqueues:\n  q: {typo: 1}\n")
    result = CliRunner().invoke(main, ["lint", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:7: queues.q.typo: unknown key 'typo' (did you mean 'type'?)" in result.stderr


def test_findings_of_merged_files_point_into_the_file_that_declares_the_object(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text("version: 1\nexchanges:\n  x: {type: fanout}\n")
    (tmp_path / "b.yaml").write_text(
        "version: 1\nqueues:\n  q:\n    durable: false\n    bind: [{exchange: x}]\n"
    )
    topology, locator = load_located([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    [finding] = lint_topology(topology, locator)
    assert (finding.file, finding.line, finding.column) == (str(tmp_path / "b.yaml"), 4, 5)


@pytest.mark.parametrize(
    ("broad", "narrow", "covers"),
    [
        ("order.#", "order.placed", True),
        ("order.#", "order", True),
        ("order.*", "order", False),
        ("#", "a.*.#", True),
        ("*.#", "#", False),
        ("a.*.c", "a.b.c", True),
        ("a.b.c", "a.*.c", False),
        ("a.#.z", "a.b.#.z", True),
        ("order.*", "order.paid.#", False),
    ],
)
def test_topic_covers(broad: str, narrow: str, covers: bool) -> None:
    assert topic_covers(broad, narrow) is covers


def test_example_topologies_have_only_the_warnings_docs_lint_explains() -> None:
    """topologies/*.yaml exit 0; their four warnings are deliberate (docs/lint.md)."""
    files = [str(ROOT / "topologies" / f"{n}.yaml") for n in ("orders", "media", "rpc")]
    topology, locator = load_located(files)
    findings = lint_topology(topology, locator)
    assert exit_code(findings, strict=False) == 0
    assert sorted((Path(f.file).name, f.rule) for f in findings) == [
        ("media.yaml", "RF007"),
        ("media.yaml", "RF008"),
        ("orders.yaml", "RF007"),
        ("orders.yaml", "RF008"),
    ]
    assert all(f.severity is Severity.WARNING for f in findings)


def test_a_policy_giving_the_dead_letter_queue_a_limit_silences_rf008(tmp_path: Path) -> None:
    """The highest-priority policy that applies to a queue counts: a delivery-limit policy
    on the DLQs silences RF008, one that applies to exchanges only does not."""
    base = (
        "version: 1\nexchanges:\n  e: {type: fanout}\nqueues:\n  q:\n    type: quorum\n"
        "    delivery_limit: 5\n    dead_letter: true\n    bind: [{exchange: e}]\n"
    )
    file = tmp_path / "q.yaml"
    file.write_text(base)
    topology, locator = load_located([str(file)])
    assert [f.rule for f in lint_topology(topology, locator)] == ["RF008"]
    file.write_text(
        base + "policies:\n"
        "  dlq-limit:\n    pattern: '\\.dlq$'\n    apply_to: queues\n    priority: 1\n"
        "    definition: {delivery-limit: 50}\n"
        "  x:\n    pattern: '^q'\n    apply_to: exchanges\n    priority: 9\n"
        "    definition: {alternate-exchange: e}\n"
    )
    topology, locator = load_located([str(file)])
    assert lint_topology(topology, locator) == []


def test_names_over_255_bytes_fail_lint_through_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RF010's case: validation refuses such names (generated ones too), so lint prints
    the located validation errors and exits 1 before any rule runs."""
    monkeypatch.chdir(DATA)
    result = CliRunner().invoke(main, ["lint", "invalid_names.yaml"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("invalid_names.yaml:7:5: queues.qxxx")
    assert "queue name is 260 bytes; AMQP allows at most 255" in lines[0]
    assert lines[1] == (
        "invalid_names.yaml:9:42: queues.short.bind[0].routing_key: "
        "routing key is 261 bytes; AMQP allows at most 255"
    )

"""validate, declare --dry-run and graph: commands that never need a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rabbitflow.cli.main import main

ROOT = Path(__file__).parents[3]
ORDERS = str(ROOT / "topologies" / "orders.yaml")
INVALID = ROOT / "tests" / "data" / "invalid"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_prints_one_summary_line_per_file(runner: CliRunner) -> None:
    files = [str(ROOT / "topologies" / f"{n}.yaml") for n in ("orders", "media", "rpc")]
    result = runner.invoke(main, ["validate", *files])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{files[0]}: ok (3 exchanges, 7 queues, 7 retry queues, 3 dead-letter queues, 9 bindings)",
        f"{files[1]}: ok (2 exchanges, 4 queues, 5 retry queues, 3 dead-letter queues, 7 bindings)",
        f"{files[2]}: ok (1 exchange, 1 queue, 0 retry queues, 0 dead-letter queues, 2 bindings)",
    ]


def test_validate_prints_every_error_on_stderr_and_exits_1(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)
    result = runner.invoke(main, ["validate", "many_problems_at_once.yaml"])
    assert result.exit_code == 1
    assert result.stdout == ""
    expected = (INVALID / "many_problems_at_once.errors").read_text().splitlines()
    assert result.stderr.splitlines() == [*expected, "4 problems found"]


def test_validate_never_prints_a_traceback_for_hostile_yaml(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)
    result = runner.invoke(main, ["validate", "python_object_tag.yaml", "alias_bomb.yaml"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_accepts_the_common_options_after_the_command(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["validate", ORDERS, "--url", "amqp://u:p@127.0.0.1:1/", "--log-format", "json"]
    )
    assert result.exit_code == 0


def test_dry_run_lists_objects_and_connects_to_nothing(runner: CliRunner) -> None:
    # Port 1 refuses connections: a dry run that tried to connect would fail.
    result = runner.invoke(
        main, ["declare", ORDERS, "--dry-run", "--url", "amqp://guest:secret@127.0.0.1:1/"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        "would declare exchange orders (topic) {'alternate-exchange': 'orders.unrouted'}" in lines
    )
    assert (
        "would declare queue    payments.charge.retry.200ms {'x-queue-type': 'quorum', "
        "'x-message-ttl': 200, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': "
        "'payments.charge', 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': "
        "'reject-publish'}" in lines
    )
    assert "would bind    binding  orders -> notifications [order.*]" in lines


def test_declare_with_an_invalid_file_prints_its_errors(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)
    result = runner.invoke(main, ["declare", "wrong_version.yaml", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == (INVALID / "wrong_version.errors").read_text().splitlines()


def test_graph_defaults_to_mermaid(runner: CliRunner) -> None:
    result = runner.invoke(main, ["graph", ORDERS])
    assert result.exit_code == 0
    assert result.stdout == (ROOT / "tests" / "data" / "graphs" / "orders.mmd").read_text()


def test_graph_writes_dot_to_a_file(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "orders.dot"
    result = runner.invoke(main, ["graph", ORDERS, "--format", "dot", "-o", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert out.read_text() == (ROOT / "tests" / "data" / "graphs" / "orders.dot").read_text()


def test_graph_to_an_unwritable_path_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["graph", ORDERS, "-o", str(tmp_path / "no" / "such" / "x")])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_setting_is_one_line_naming_the_variable(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITFLOW_PREFETCH", "lots")
    result = runner.invoke(main, ["declare", ORDERS])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid setting RABBITFLOW_PREFETCH: ")
    assert "(got 'lots')" in result.stderr
    assert len(result.stderr.splitlines()) == 1

"""Bad input to `run`, `publish` and `dlq` is one line on stderr and exit 1: no traceback.

Each of these is refused before any connection, so they need no broker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def rabbitflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rabbitflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (
            "x = (\n",
            "error: cannot import 'broken': broken.py:1: SyntaxError: '(' was never closed",
        ),
        (
            "import json\nimport rf_surely_missing_package\n",
            "error: cannot import 'broken': broken.py:2: ModuleNotFoundError: No module named "
            "'rf_surely_missing_package' (--traceback shows where)",
        ),
        (
            "def f():\n    return 1 / 0\n\nf()\n",
            "error: cannot import 'broken': broken.py:2: ZeroDivisionError: division by zero "
            "(--traceback shows where)",
        ),
    ],
    ids=["syntax-error", "missing-package", "raises-at-import"],
)
def test_run_reports_a_broken_module_in_one_line(source: str, line: str, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(source, encoding="utf-8")
    result = rabbitflow("run", "broken:app", "--url", UNREACHABLE, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [line]


def test_run_traceback_shows_only_the_users_frames(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f():\n    return 1 / 0\n\nf()\n", encoding="utf-8")
    result = rabbitflow("run", "broken:app", "--traceback", "--url", UNREACHABLE, cwd=tmp_path)

    assert result.returncode == 1
    frames = [ln for ln in result.stderr.splitlines() if ln.lstrip().startswith("File ")]
    assert len(frames) == 2
    assert all("broken.py" in frame for frame in frames)
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "click" not in result.stderr and "importlib" not in result.stderr


def test_run_names_a_module_that_does_not_exist(tmp_path: Path) -> None:
    result = rabbitflow("run", "rf_no_such_module:app", "--url", UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: cannot import module 'rf_no_such_module': No module named 'rf_no_such_module'"
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["x" * 300, "key", "{}"], "exchange name is 300 characters"),
        (["ex", "k" * 256, "{}"], "routing key is 256 bytes"),
        (["заказы", "key", "{}"], "exchange name has the character 'з'"),
        (["ex", "key", '{"a": 1,'], "BODY looks like JSON but does not parse: Expecting"),
        (["ex", "key", "[1, 2"], "line 1 column 6 (char 5)"),
        (["ex", "key", "--expiration", "soon", "{}"], "--expiration: invalid duration 'soon'"),
        (["ex", "key", "{}", "--body-file", "/nonexistent"], "give a BODY argument"),
        (["ex", "key", "--body-file", "/nonexistent/body"], "cannot read /nonexistent/body"),
    ],
)
def test_publish_refuses_bad_input_in_one_line(args: list[str], fragment: str) -> None:
    result = rabbitflow("publish", *args, "--url", UNREACHABLE)

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and fragment in line


@pytest.mark.parametrize("queue", ["q" * 300, "q" * 252, "очередь"])
def test_dlq_list_refuses_a_queue_name_the_client_cannot_send(queue: str) -> None:
    result = rabbitflow("dlq", "list", queue, "--url", UNREACHABLE)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr

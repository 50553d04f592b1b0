"""The examples of docs/testing.md run as written: each code block that starts with a
``# path`` comment is written to a fresh project, and pytest runs it in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

DOC = Path(__file__).parents[3] / "docs" / "testing.md"
BLOCK = re.compile(r"```(?:python|yaml)\n# (?P<path>[\w./]+)\n(?P<code>.*?)```", re.S)


def test_docs_examples_pass(tmp_path: Path) -> None:
    files = {m["path"]: m["code"] for m in BLOCK.finditer(DOC.read_text())}
    assert {
        "topologies/payments.yaml",
        "tests/test_charge.py",
        "tests/test_charge_rabbitmq.py",
    } <= set(files)
    for path, code in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "4 passed" in result.stdout, result.stdout + result.stderr

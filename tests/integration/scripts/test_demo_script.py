"""scripts/demo.sh, the body of `make demo`, works against a broker from nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

ROOT = Path(__file__).parents[3]


def test_demo_validates_declares_twice_and_draws(amqp_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RABBITFLOW_URL": amqp_url,
        "RABBITFLOW": str(Path(sys.executable).parent / "rabbitflow"),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "topologies/orders.yaml: ok (3 exchanges, 7 queues" in out
    first, second = out.split("== declare again")
    assert "created queue" in first
    assert "created" not in second.split("== graph")[0]
    assert "flowchart LR" in out
    # Event sourcing: rebuilt from the first event, resumed after a restart, replayed.
    assert "attached at the first event (stored position: None)" in out
    assert "attached at offset 6 (stored position: 5)" in out
    assert "the projection now: A-1001 delivered, A-1002 cancelled, A-1003 shipped" in out
    assert "9 confirmed, 0 returned, 0 nacked" in out

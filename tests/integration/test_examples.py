"""The example services and the demo, end to end on the real broker."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from rabbitflow import RemoteError, Unroutable
from workers import rpc, rpc_client

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


async def test_rpc_client_gets_quotes_from_the_pricing_worker(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rpc.app.configure(url=amqp_url)
    async with rpc.app:
        monkeypatch.setenv("RABBITFLOW_URL", amqp_url)
        assert await rpc_client.main(["book", "3", "lamp", "120"]) == 0
        quote = await rpc.app.request(
            "rpc", "pricing.quote", {"sku": "chair", "quantity": 1}, model=rpc.Quote
        )
        assert quote.total == Decimal("89.00")
        # unknown sku: rejected, and the caller is told at once with an error reply
        # (DESIGN.md §13) instead of waiting out its timeout
        with pytest.raises(RemoteError) as rejected:
            await rpc.app.request("rpc", "pricing.quote", {"sku": "nope", "quantity": 1}, timeout=5)
        assert rejected.value.type == "Reject"
        assert "unknown sku 'nope'" in rejected.value.message
        with pytest.raises(Unroutable):
            await rpc.app.request("rpc", "pricing.unknown", {})
    out = capsys.readouterr().out
    assert "3 x book   @   12.50 =     37.50" in out
    assert "120 x lamp   @   39.90 =   4309.20" in out


@pytest.mark.slow
def test_demo_shows_retries_and_dead_letters() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "processed on attempt 3" in out
    assert "Reject: card declined by the issuer" in out
    assert "BodyDecodeError" in out
    assert "retry in 200ms" in out and "retry in 400ms" in out
    assert "5 dead letters wait" in out
    assert "exited with 0" in out

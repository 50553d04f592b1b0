"""``export --format asyncapi``: every example topology, with its app, passes the official
AsyncAPI parser (@asyncapi/parser under tests/asyncapi, run with Node.js)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from rabbitflow.cli.main import main
from rabbitflow.topology import load_topology
from rabbitflow.topology.expand import expand

ROOT = Path(__file__).parents[3]
CHECKER = ROOT / "tests" / "asyncapi"
EXAMPLES = ["orders", "media", "rpc"]


@pytest.fixture(scope="module")
def parser() -> Path:
    """The checker script, its npm packages installed (``npm ci``) when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is not installed: the AsyncAPI parser runs on Node.js 20")
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=CHECKER, check=True, timeout=300
        )
    return CHECKER / "check.js"


def parse(parser: Path, *files: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["node", str(parser), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def export(name: str, out: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict[str, Any]:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        main,
        ["export", f"topologies/{name}.yaml", "--format", "asyncapi", "-o", str(out), *extra],
    )
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = yaml.safe_load(out.read_text())
    return document


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_with_its_app_parses_without_errors(
    name: str, parser: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / f"{name}.asyncapi.yaml"
    document = export(name, out, monkeypatch, "--app", f"workers.{name}:app")

    [report] = parse(parser, out)

    assert report["errors"] == []
    assert report["summary"]["version"] == "3.0.0"
    decls = expand(load_topology(ROOT / "topologies" / f"{name}.yaml"))
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {e.name for e in decls.exchanges} | {q.name for q in decls.queues}
    assert report["summary"]["channels"] == len(document["channels"])
    app = importlib.import_module(f"workers.{name}").app
    receives = {
        op["channel"]["$ref"].removeprefix("#/channels/queue.")
        for op in document["operations"].values()
        if op["action"] == "receive"
    }
    assert receives == set(app.handlers)


def test_example_without_app_parses_too(
    parser: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "orders.yaml"
    document = export("orders", out, monkeypatch)
    [report] = parse(parser, out)
    assert report["errors"] == []
    assert not [op for op in document["operations"].values() if op["action"] == "receive"]


def test_handler_payload_is_the_json_schema_of_its_body_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "orders.yaml"
    document = export("orders", out, monkeypatch, "--app", "workers.orders:app")
    from workers.orders import OrderPlaced

    message = document["components"]["messages"]["payments.charge.body"]
    assert message["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    schema = OrderPlaced.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs")
    assert document["components"]["schemas"]["OrderPlaced"] == schema
    assert document["components"]["schemas"]["Line"] == defs["Line"]
    op = document["operations"]["receive.payments.charge"]
    assert op["bindings"]["amqp"]["ack"] is True
    assert "retried up to 4 times (after 200ms, 400ms, 800ms, 1s)" in op["description"]
    assert "dead-lettered to exchange 'payments.charge.dlx'" in op["description"]


def test_retry_and_dead_letter_paths_are_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = export("orders", tmp_path / "o.yaml", monkeypatch)
    ops = document["operations"]
    retry = ops["retry.payments.charge.retry.200ms"]
    assert retry["action"] == "send"
    assert retry["channel"] == {"$ref": "#/channels/queue.payments.charge.retry.200ms"}
    dead = ops["deadLetter.payments.charge"]
    assert dead["channel"] == {"$ref": "#/channels/exchange.payments.charge.dlx"}
    assert dead["messages"] == [
        {"$ref": "#/channels/exchange.payments.charge.dlx/messages/DeadLetter"}
    ]
    channel = document["channels"]["queue.payments.charge.retry.200ms"]
    assert "after 200ms the broker dead-letters each message back" in channel["description"]
    route = next(
        op
        for op in ops.values()
        if op["channel"] == {"$ref": "#/channels/exchange.orders"}
        and op["bindings"]["amqp"].get("cc") == ["order.paid.#"]
    )
    assert route["action"] == "send"
    assert "routed to queue 'shipping.prepare'" in route["summary"]


def test_the_parser_reports_a_broken_document(parser: Path, tmp_path: Path) -> None:
    """The check is real: a document missing info.version fails."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("asyncapi: 3.0.0\ninfo: {title: x}\n")
    [report] = parse(parser, bad)
    assert any("version" in e for e in report["errors"])

"""``rabbitflow run MODULE:APP`` refuses what is not an App with one line, and names the
Router of a module that has one but no App (DESIGN.md §7)."""

from __future__ import annotations

from click.testing import CliRunner

from rabbitflow.cli.main import main

APPS = "tests.integration.worker.apps.composed"


def test_a_module_with_a_router_but_no_app_names_both() -> None:
    result = CliRunner().invoke(main, ["run", f"{APPS}.payments:app"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: module '{APPS}.payments' defines a Router (router) but no App: create "
        "one there, e.g. app = App(topology=...); app.include_router(router), and run "
        f"{APPS}.payments:app"
    ]


def test_pointing_at_the_router_itself_is_the_same_error() -> None:
    result = CliRunner().invoke(main, ["run", f"{APPS}.emails:router"])
    assert result.exit_code == 1
    assert "defines a Router (router) but no App" in result.stderr
    assert "Traceback" not in result.output

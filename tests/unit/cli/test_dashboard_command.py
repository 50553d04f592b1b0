"""``rabbitflow dashboard`` before it serves: a missing extra, a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys

from click.testing import CliRunner

from rabbitflow.cli.dashboard import _check_port
from rabbitflow.cli.main import main

WITHOUT_STARLETTE = (
    "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
    "from rabbitflow.cli.main import main; main()"
)


def test_without_the_extra_it_says_what_to_install_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_STARLETTE, "dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: the dashboard needs its extra: pip install 'rabbitflow[dashboard]' "
        "(Starlette and uvicorn)"
    ]


def test_a_busy_port_is_one_line() -> None:
    runner = CliRunner()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]

        @main.command("busy-port-probe", hidden=True)
        def probe() -> None:
            _check_port("127.0.0.1", port)

        result = runner.invoke(main, ["busy-port-probe"])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(main, ["dashboard", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--read-only", "--url"):
        assert option in result.output

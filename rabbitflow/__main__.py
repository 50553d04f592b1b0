"""``python -m rabbitflow``: the same as the ``rabbitflow`` command."""

from rabbitflow.cli.main import main

main(prog_name="rabbitflow")

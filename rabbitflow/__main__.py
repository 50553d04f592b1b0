"""``python -m rabbitflow`` is the ``rabbitflow`` command."""

from rabbitflow.cli.main import main

main()

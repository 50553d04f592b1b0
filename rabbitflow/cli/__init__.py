"""The ``rabbitflow`` command line: parse options, call the library, print one line on error."""

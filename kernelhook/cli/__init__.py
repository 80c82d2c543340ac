"""The ``kernelhook`` command (also ``python -m kernelhook``), and the kernel author's tools behind it.

    command.py   the argument parser and one function per subcommand
    check.py     a kernel repo folder against the rules, before publishing
    publish.py   check, then upload a folder as the branch vN
"""

from .command import main

__all__ = ["main"]

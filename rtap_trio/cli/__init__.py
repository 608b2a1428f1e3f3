"""Command line: ``python -m rtap_trio [run|replay|config|models|devices|...] ...``.

``run`` is the default command. Errors RTAP raises on purpose end the process
with one line on stderr and the error's exit code, never a traceback. The
grammar is :mod:`.parser`; what each command does, :mod:`.commands`.
"""

from .commands import main
from .parser import build_parser

__all__ = ["build_parser", "main"]

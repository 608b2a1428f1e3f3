"""The package's version, alone in its module.

Modules that report the version (the CLI's ``--version``, Wyoming's ``info``,
evaluation reports) import it from here rather than from the root package,
whose ``__init__`` loads the settings and, on demand, the whole service: a
version string should not depend on, nor make import-linter see, any of that.
The root package re-exports it as ``rtap_trio.__version__``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

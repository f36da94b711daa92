"""A declarative GitOps reconciler for run-once deployment jobs."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _forget_the_current_folder() -> None:
    """SPEC 9.1 rule 12, no foreign code: `python -m reconciler` and `python -c ...` put the current folder
    first on `sys.path`, so a deployment repo (a pull request's checkout) could be imported from, e.g. a
    `*.dist-info` entry point naming a module beside it. Drop that one entry, the one python itself added;
    PYTHONPATH entries (even one naming the same folder) stay. The console script adds its own `bin/`
    folder instead, which is harmless."""
    if _sys.flags.safe_path or not _sys.path or not _sys.argv:
        return
    first = _sys.path[0]
    if (_sys.argv[0] == "-m" and first and _os.path.abspath(first) == _os.getcwd()) or \
            (_sys.argv[0] == "-c" and first == ""):
        del _sys.path[0]


_forget_the_current_folder()

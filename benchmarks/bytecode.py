"""Compile the package's bytecode before anything is timed, as installing it from a wheel does.

An editable install (`pip install -e .`, the README's) leaves no `.pyc` files, and where
PYTHONDONTWRITEBYTECODE is set (it is on these machines) Python never writes them: every
`reconciler` process then compiles each module it imports from source (0.3 s of a cold `validate`
at 10,000 jobs). The peers (check-jsonschema, installed from wheels) have theirs; so does a
`pip install reconciler`. Python still reads `.pyc` files with that variable set.
"""

from __future__ import annotations

import compileall
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"


def compile_package() -> None:
    if not compileall.compile_dir(str(PACKAGE), quiet=1):
        raise SystemExit(f"could not compile {PACKAGE}")

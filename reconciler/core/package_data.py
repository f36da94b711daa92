"""Files shipped with the package: the JSON Schemas and the example deployment repo.

In a wheel they live in `reconciler/_data/<name>/`; in a source checkout (editable install)
they are read from the top-level folders they are built from, so there is one source of truth.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SHIPPED = ("schemas", "servers", "definitions", "jobs")


def data_dir(name: str) -> Traversable:
    assert name in SHIPPED
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    return resources.files(f"reconciler._data.{name}")

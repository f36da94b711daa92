"""A minimal third-party driver: one JSON file per user and definition under `path`.

Server settings: `path` (absolute folder), `fail_users` (user ids whose deployment fails, to show
that the failure policy treats plugin errors like any other driver error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.core.settings import Settings
from reconciler.drivers.base import DeployRequest, Driver, Outcome, SettingsProblem


class DemoDriver(Driver):
    idempotent_apply = True

    @classmethod
    def settings_problems(cls, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
        path = settings.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            return [(("path",), "the demo driver needs an absolute `path`", "DRIVER_SETTINGS")]
        return []

    def _file(self, request: DeployRequest) -> Path:
        return Path(self.settings["path"]) / f"{request.user.id}--{request.definition.name}.json"

    def plan(self, request: DeployRequest) -> Outcome:
        exists = self._file(request).exists()
        return Outcome("PLANNED", "would update" if exists else "would create")

    def apply(self, request: DeployRequest) -> Outcome:
        if request.user.id in self.settings.get("fail_users", []):
            raise RuntimeError(f"demo target refused {request.user.id}")
        target = self._file(request)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = {"build_id": request.build_id, "digest": request.content_digest,
                "assets": sorted(request.assets), "parameters": request.public_parameters}
        target.write_text(json.dumps(body, sort_keys=True))
        request.log(f"{request.user.id}: demo wrote {target.name}")
        return Outcome("DEPLOYED", "written by the demo plugin")

    def destroy(self, request: DeployRequest) -> Outcome:
        target = self._file(request)
        if not target.exists():
            return Outcome("UNCHANGED", "nothing was deployed")
        target.unlink()
        return Outcome("DESTROYED", "removed by the demo plugin")

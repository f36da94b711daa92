"""The `command` driver: runs an argv per action (Terraform-style tools) for each user (SPEC section 6).

Never through a shell: argv is fixed in the server file, and token values reach the command only as
environment variables (`RECONCILER_TOKEN_<NAME>`), so `$(touch /tmp/x)` stays text. The user's
rendered content is written to a private folder under `.git/reconciler/work/` (never the working
tree), the command runs in `<that folder>/<workdir>`, and the folder is removed afterwards. Output is
streamed line by line into the build log, which redacts secrets. A timeout kills the whole process
group. A command may report a more precise result by writing JSON `{"status": ..., "reason": ...}`
to the file named by `RECONCILER_RESULT_FILE`.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from reconciler.core.settings import Settings
from reconciler.drivers.base import DeployRequest, Driver, DriverContext, Outcome, SettingsProblem
from reconciler.drivers.workspace import remove_tree

#: variables of the reconciler's environment a command inherits; everything else must be a token
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of a timed-out process group
TAIL = 300  # characters of the last output line kept in a failed user's reason
DRAIN_SECONDS = 2.0  # how long output may stay open after the command exited (a lingering child)
#: statuses a command may report per action through RECONCILER_RESULT_FILE
REPORTABLE = {"PLAN": {"PLANNED"}, "APPLY-AUTO": {"DEPLOYED", "UNCHANGED"},
              "DESTROY": {"DESTROYED", "UNCHANGED"}}
DEFAULT_STATUS = {"PLAN": "PLANNED", "APPLY-AUTO": "DEPLOYED", "DESTROY": "DESTROYED"}


def env_name(token: str) -> str:
    return "RECONCILER_TOKEN_" + re.sub(r"[^A-Z0-9_]", "_", token.upper())


def _workdir_problem(raw: str) -> str | None:
    norm = posixpath.normpath(raw)
    if raw.startswith("/") or norm == ".." or norm.startswith("../"):
        return f"workdir {raw!r} must stay inside the definition's content (a relative path without '..')"
    return None


class CommandDriver(Driver):
    #: the tool's semantics are unknown, so the engine must not assume a second apply is harmless
    idempotent_apply = False

    def __init__(self, settings: dict[str, Any], context: DriverContext) -> None:
        super().__init__(settings, context)
        commands = settings["commands"]
        self.commands: dict[str, list[str]] = {k: [str(a) for a in v] for k, v in commands.items()}
        self.workdir = str(settings.get("workdir", "."))
        self.timeout = float(settings.get("timeout", 600))
        self.success_codes = {int(c) for c in settings.get("success_codes", [0])}

    @classmethod
    def settings_problems(cls, settings: dict[str, Any], repo: Settings) -> list[SettingsProblem]:
        problems: list[SettingsProblem] = []
        workdir = settings.get("workdir")
        if isinstance(workdir, str) and (message := _workdir_problem(workdir)):
            problems.append((("workdir",), message, "PATH_ESCAPE"))
        commands = settings.get("commands")
        if isinstance(commands, dict):
            for action, argv in commands.items():
                if isinstance(argv, list) and argv and not str(argv[0]).strip():
                    problems.append((("commands", action), f"the {action} command has an empty program name",
                                     "DRIVER_SETTINGS"))
        return problems

    # -- the private working folder --------------------------------------------------------------
    def _materialise(self, request: DeployRequest) -> Path:
        root = self.context.work_root
        if root is None:  # outside a reconcile pass (library use): a private temporary folder
            root = Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{request.build_id}-{request.user.id}-", dir=root))
        content = folder / "content"
        content.mkdir()
        for rel, data in request.assets.items():
            norm = posixpath.normpath(rel)
            if norm.startswith(("/", "../")) or norm in ("..", "."):
                raise ValueError(f"asset path {rel!r} would leave the working folder")
            dest = content / norm
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return folder

    def _environment(self, request: DeployRequest, result_file: Path) -> dict[str, str]:
        env = {k: self.context.env[k] for k in PASSED_THROUGH if k in self.context.env}
        for name, value in request.tokens.items():
            env[env_name(name)] = value
        env.update({
            "RECONCILER_USER": request.user.id,
            "RECONCILER_SERVER": request.server.name,
            "RECONCILER_ENVIRONMENT": request.server.environment,
            "RECONCILER_ORGANIZATION": request.server.organization,
            "RECONCILER_BUILD_ID": request.build_id,
            "RECONCILER_ACTION": request.action,
            "RECONCILER_JOB": request.job,
            "RECONCILER_DEFINITION": request.definition.name,
            "RECONCILER_MODULE_TYPE": request.definition.module_type,
            "RECONCILER_RESULT_FILE": str(result_file),
        })
        return env

    # -- actions ---------------------------------------------------------------------------------
    def plan(self, request: DeployRequest) -> Outcome:
        return self._run(request)

    def apply(self, request: DeployRequest) -> Outcome:
        return self._run(request)

    def destroy(self, request: DeployRequest) -> Outcome:
        return self._run(request)

    def _run(self, request: DeployRequest) -> Outcome:
        argv = self.commands.get(request.action)
        if argv is None:
            return Outcome("FAILED", f"the server's command driver has no command for {request.action}")
        if problem := _workdir_problem(self.workdir):
            return Outcome("FAILED", problem)
        folder = self._materialise(request)
        try:
            cwd = (folder / "content" / posixpath.normpath(self.workdir)).resolve()
            if not cwd.is_relative_to((folder / "content").resolve()):
                return Outcome("FAILED", f"workdir {self.workdir!r} leaves the definition's content")
            if not cwd.is_dir():
                return Outcome("FAILED", f"workdir {self.workdir!r} is not a folder of the content of "
                                         f"definition {request.definition.name!r}")
            result_file = folder / "result.json"
            return self._execute(request, argv, cwd, result_file)
        finally:
            remove_tree(folder)  # rendered content may hold secrets: never left behind

    def _execute(self, request: DeployRequest, argv: list[str], cwd: Path, result_file: Path) -> Outcome:
        uid = request.user.id
        request.log(f"{uid}: running {' '.join(argv)} in {self.workdir}")
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=self._environment(request, result_file),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as exc:
            return Outcome("FAILED", f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        last: dict[str, str] = {}
        readers = [threading.Thread(target=_stream, args=(pipe, uid, name, request, last), daemon=True)
                   for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            code = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            code = proc.wait()
        deadline = time.monotonic() + DRAIN_SECONDS
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        if any(r.is_alive() for r in readers):  # a child still holds the output open: end the group
            request.log(f"{uid}: processes left behind by the command still hold its output; killing them")
            _signal_group(proc.pid, signal.SIGKILL)
            for reader in readers:
                reader.join(5)
        if timed_out:
            return Outcome("FAILED", f"timed out after {self.timeout:g} s; the process group was killed")
        if code not in self.success_codes:
            # the reason keeps the last line's tail: masked whole first, then cut (rule 11)
            tail = self.context.clip(last.get("stderr") or last.get("stdout") or "", TAIL)
            return Outcome("FAILED", f"{argv[0]} exited with code {code}" + (f": {tail}" if tail else ""))
        return self._reported(request, result_file, code)

    @staticmethod
    def _reported(request: DeployRequest, result_file: Path, code: int) -> Outcome:
        status, reason = DEFAULT_STATUS[request.action], f"command exited with code {code}"
        try:
            data = json.loads(result_file.read_text("utf-8"))
        except FileNotFoundError:
            return Outcome(status, reason)
        except (OSError, ValueError) as exc:
            return Outcome("FAILED", f"unreadable RECONCILER_RESULT_FILE: {exc}")
        if isinstance(data, dict) and data.get("status") in REPORTABLE[request.action] | {"FAILED"}:
            return Outcome(str(data["status"]), str(data.get("reason", reason))[:1000])
        return Outcome("FAILED", f"RECONCILER_RESULT_FILE must hold {{\"status\": one of "
                                 f"{sorted(REPORTABLE[request.action] | {'FAILED'})}, \"reason\": text}}")


def _stream(pipe: IO[bytes] | None, uid: str, name: str, request: DeployRequest,
            last: dict[str, str]) -> None:
    """Copy one output stream into the build log, line by line, as it comes."""
    if pipe is None:
        return
    with pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            request.log(f"{uid} {name}: {line}")
            if line.strip():
                last[name] = line.strip()  # cut only after masking, in _execute


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left after a grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE)
    _signal_group(proc.pid, signal.SIGKILL)

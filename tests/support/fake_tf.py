"""A Terraform-like tool for the `command` driver tests: `fake_tf.py plan|apply|destroy --state DIR`.

It reads the module (every file under the working directory), keeps per-user state in
`DIR/<server>/<user>.json`, prints a plan, and reports UNCHANGED through `RECONCILER_RESULT_FILE`.
The parameter token `mode` (env `RECONCILER_TOKEN_MODE`) makes it misbehave on demand:
`fail` exits 3, `sleep` hangs (with a grandchild in its process group, whose pid it records), `echo`
prints every RECONCILER_* variable (a careless tool that prints its secrets).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote


def module_files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def report(status: str, reason: str) -> None:
    Path(os.environ["RECONCILER_RESULT_FILE"]).write_text(json.dumps({"status": status, "reason": reason}))


def main(argv: list[str]) -> int:
    action, state_dir = argv[0], Path(argv[argv.index("--state") + 1])
    user, server = os.environ["RECONCILER_USER"], os.environ["RECONCILER_SERVER"]
    state_file = state_dir / server / f"{user}.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with (state_dir / "invocations.log").open("a") as log:
        log.write(f"{action} {user} {os.getcwd()}\n")
    mode = os.environ.get("RECONCILER_TOKEN_MODE", "ok")
    if mode == "echo":
        for name, value in sorted(os.environ.items()):
            if name.startswith("RECONCILER_"):  # raw, and the encodings a careless tool might print
                encoded = base64.b64encode(f"{name}={value}".encode()).decode()
                print(f"{name}={value} url={quote(value, safe='')} b64={encoded}", flush=True)
    if mode == "fail":
        print("Error: simulated provider failure for " + user, file=sys.stderr, flush=True)
        return 3
    if mode == "sleep":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        (state_dir / f"{user}.pids").write_text(f"{os.getpid()} {child.pid}\n")
        print("applying... (this will take a while)", flush=True)
        time.sleep(120)
        return 0
    files = module_files(Path.cwd())
    env = {k: v for k, v in os.environ.items()
           if k.startswith("RECONCILER_") and k != "RECONCILER_RESULT_FILE"}
    old = json.loads(state_file.read_text()) if state_file.exists() else None
    if action == "plan":
        before = old["files"] if old else {}
        add = len(set(files) - set(before))
        change = sum(1 for k in set(files) & set(before) if files[k] != before[k])
        remove = len(set(before) - set(files))
        print(f"Plan: {add} to add, {change} to change, {remove} to destroy.", flush=True)
        report("PLANNED", f"{add} to add, {change} to change, {remove} to destroy")
        return 0
    if action == "apply":
        state = {"files": files, "env": env, "cwd": os.getcwd()}
        if old is not None and old["files"] == files and old["env"].get("RECONCILER_TOKEN_GREETING") == \
                env.get("RECONCILER_TOKEN_GREETING"):
            print("No changes. Your infrastructure matches the configuration.", flush=True)
            report("UNCHANGED", "no changes")
            return 0
        state_file.write_text(json.dumps(state, indent=1))
        print(f"Apply complete! Resources: {len(files)} added.", flush=True)
        return 0
    if action == "destroy":
        print(f"module files: {len(files)}", flush=True)  # a destroy needs the module, as with Terraform
        if old is None:
            report("UNCHANGED", "nothing to destroy")
            return 0
        state_file.unlink()
        print(f"Destroy complete! Resources: {len(old['files'])} destroyed.", flush=True)
        return 0
    print(f"unknown action {action}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

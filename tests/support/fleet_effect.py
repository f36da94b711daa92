"""The fleet tests' command driver: one JSON line when it starts and one for its effect, with the user, the
build and the worker process (its parent), so the tests count every effect. argv: EFFECTS_FILE SECONDS."""

from __future__ import annotations

import json
import os
import sys
import time


def line(path: str, kind: str) -> None:
    record = {"kind": kind, "user": os.environ["RECONCILER_USER"], "build": os.environ["RECONCILER_BUILD_ID"],
              "action": os.environ["RECONCILER_ACTION"], "worker_pid": os.getppid(), "time": time.time(),
              "api_key_length": len(os.environ.get("RECONCILER_TOKEN_API_KEY", ""))}
    with open(path, "a", encoding="utf-8") as sink:  # one short O_APPEND write: lines never interleave
        sink.write(json.dumps(record) + "\n")


def main() -> int:
    path, seconds = sys.argv[1], float(sys.argv[2])
    line(path, "started")
    time.sleep(seconds)
    line(path, "effect")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run PASSES reconcile passes in this one process (as `watch` and `serve` do) over REPO, one new job committed
before each, and print the number of objects the collector tracks after each pass, as JSON.

    python -m tests.support.passes_probe REPO PASSES
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

from reconciler.run.reconcile_pass import PassOptions, run_pass

JOB = "blocks:\n  - {{definition: dash-000, server: srv-00, users: [user00000], content_tokens: {{title: P{n}}}}}\n"


def main(repo: Path, passes: int) -> None:
    counts = []
    for n in range(passes):
        (repo / "jobs" / f"probe-{n:03d}.yaml").write_text(JOB.format(n=n), "utf-8")
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-qm", f"probe {n}"], cwd=repo, check=True)
        result = run_pass(PassOptions(repo=repo))
        assert [record.status for record in result.ran] == ["SUCCESS"], result.ran
        del result
        counts.append(len(gc.get_objects()))
    print(json.dumps(counts))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

"""One consistent state of a deployment repo at a commit (or a working tree): pure data.

Loading it is `reconciler.ledger.load`'s job; everything above reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.core.files import RepoFiles
from reconciler.core.plan import Plan, plan
from reconciler.core.problems import Problem, sort_problems
from reconciler.core.records import Ledger
from reconciler.core.secrets import SecretEnv
from reconciler.core.settings import Settings
from reconciler.core.timeutil import utcnow
from reconciler.core.validate import Desired


@dataclass
class History:
    """Per job: (order, commit, unix time) of the commit that last added its file; tampered records."""

    added: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    tampered: dict[str, str] = field(default_factory=dict)

    def order(self) -> dict[str, tuple[int, str]]:
        return {job: (seq, commit) for job, (seq, commit, _) in self.added.items()}


@dataclass
class Snapshot:
    settings: Settings
    desired: Desired
    ledger: Ledger
    history: History
    commit: str | None
    files: RepoFiles
    settings_problems: list[Problem]

    def plan(self, env: Mapping[str, str] | SecretEnv | None = None) -> Plan:
        """The plan now. `env`: the environment the jobs would run with (only the lengths of its values
        are looked at: rule 10, secrets before claims); None leaves secrets unjudged (listings)."""
        secrets = env if isinstance(env, SecretEnv) or env is None else SecretEnv.of(env)
        result = plan(self.desired, self.ledger, utcnow(), self.history.order(), secrets)
        if self.settings_problems:
            result.problems = sort_problems([*self.settings_problems, *result.problems])
        return result

"""Hypothesis profiles for the whole suite, loaded once by tests/conftest.py.

- `ci` (chosen when the environment variable CI is set, as in .ci/run): derandomized, so every run tries the
  same examples (seeded by each test's name) and a red CI run is reproducible, a green one not luck; no
  example database is written into the checkout.
- `dev` (the default elsewhere): random examples; the local example database replays earlier failures.
- `thorough` (`RECONCILER_FUZZ_PROFILE=thorough`): random, and the fuzz tests try many more examples.
`RECONCILER_FUZZ_PROFILE` names a profile explicitly (e.g. `ci` to reproduce a CI run locally).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


PROFILE = os.environ.get("RECONCILER_FUZZ_PROFILE") or ("ci" if _in_ci() else "dev")


def load_profiles() -> None:
    # no deadline and no too-slow check: two cores are shared with other work, so time says nothing here
    # Hypothesis' own defaults as the base: recent versions load a built-in `ci` profile by themselves when
    # they see CI set, and a profile registered without a parent would inherit whatever is loaded
    base = settings(settings.get_profile("default"), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", base, derandomize=True, database=None, print_blob=True)
    settings.register_profile("dev", base, derandomize=False)
    settings.register_profile("thorough", base, derandomize=False)
    settings.load_profile(PROFILE)


def examples(usual: int, thorough: int) -> settings:
    """The settings of one fuzz test: `usual` examples per run, `thorough` under the thorough profile."""
    return settings(max_examples=thorough if PROFILE == "thorough" else usual)

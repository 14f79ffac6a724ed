"""Property-based fuzzing of the parsers a user feeds (Hypothesis): one bounded, reproducible profile.

Every test here drives the real CLI in-process (``ripple.cli.main``) and checks one invariant: exit 0 with a valid
result, or exit 2 with one ``error:`` line; never a traceback, a hang or a partial write. ``derandomize`` makes a
run reproducible (the examples depend only on the test's code and Hypothesis' version) and no example database is
written; every failure found so far is an ``@example`` on its test (the seed corpus), replayed on every run.

Budget: each test sets ``max_examples`` (``budget(n)``) so that the whole folder runs in well under 90 s on a
2-core machine; ``RIPPLE_FUZZ_SCALE=10 pytest tests/fuzz`` fuzzes ten times longer. The examples each test ran:
``pytest tests/fuzz --hypothesis-show-statistics``.
"""
from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, Phase, settings

# tests/data's literal histories (test_labels, test_labels_many), shared rather than copied
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))

settings.register_profile(
    "ripple-fuzz", deadline=None, derandomize=True, database=None, print_blob=False,
    # no explain phase: it re-runs a failure hundreds of times to list the lines it covers (minutes here)
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    # an example writes a dataset and runs the CLI (tens of ms); the fixtures (tmp_path, capsys) are shared by the
    # examples on purpose: each example works in a fresh folder of its own
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example])
settings.load_profile("ripple-fuzz")

"""Property-based fuzzing of the parsers a user feeds (Hypothesis): one bounded, reproducible profile.

Every test here drives the real CLI in-process (``ripple.cli.main``) and checks one invariant: exit 0 with a valid
result, or exit 2 with one ``error:`` line; never a traceback, a hang or a partial write. ``derandomize`` makes a
run reproducible (the examples depend only on the test's code and Hypothesis' version) and no example database is
written; every failure found so far is an ``@example`` on its test (the seed corpus), replayed on every run.

Budget: each test sets ``max_examples`` (``budget(n)``) so that the whole folder runs in well under 90 s on a
2-core machine; ``RIPPLE_FUZZ_SCALE=10 pytest tests/fuzz`` fuzzes ten times longer (the same examples first), and
``RIPPLE_FUZZ_PROFILE=ripple-fuzz-explore`` draws new ones on every run. The examples each test ran, and the exit
codes it saw: ``pytest tests/fuzz --hypothesis-show-statistics``.

The helpers of the fuzz tests (run the CLI on one example and check the invariant every verb promises) and the
folder's Hypothesis profile, loaded when a fuzz module imports this one. (Not a conftest.py: the suite's modules
import the root conftest by name, and a second one would shadow it.)
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, event, settings

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
# a fuzzing campaign beyond the suite's: new random examples every run (RIPPLE_FUZZ_PROFILE=ripple-fuzz-explore, with
# RIPPLE_FUZZ_SCALE for more of them); a failure it finds becomes an @example on its test
settings.register_profile("ripple-fuzz-explore", settings.get_profile("ripple-fuzz"), derandomize=False)
settings.load_profile(os.environ.get("RIPPLE_FUZZ_PROFILE", "ripple-fuzz"))

from test_bad_input_catalogue import _one_error_line, _snapshot  # noqa: E402 - after the path it needs

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, main

#: RIPPLE_FUZZ_SCALE multiplies every test's example budget (a longer fuzzing run than the suite's)
SCALE = float(os.environ.get("RIPPLE_FUZZ_SCALE", "1"))

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "budget", "fresh_dir", "nothing_written", "one_error", "run_cli",
           "timeout", "_snapshot"]


def timeout(seconds: int):
    """The pytest-timeout mark of a fuzz module, scaled with its budget."""
    return pytest.mark.timeout(int(seconds * max(1.0, SCALE)))


def budget(n: int) -> settings:
    """The test's example budget (``n`` examples, times ``RIPPLE_FUZZ_SCALE``) on the folder's profile."""
    return settings(max_examples=max(1, int(n * SCALE)))


def fresh_dir(tmp_path) -> str:
    """A new empty folder under the test's ``tmp_path`` for one example."""
    return tempfile.mkdtemp(dir=tmp_path)


def run_cli(capsys, argv: list[str], report_on_stdout: bool = False) -> tuple[int, str, str]:
    """``main(argv)``: (exit code, stdout, stderr). Checks the invariant: exit 0 or 2, never a traceback; exit 2
    ends stderr with one ``error:`` line (``report_on_stdout``: ``ripple validate``, whose refusal is its report on
    stdout, may have none)."""
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    with contextlib.suppress(Exception):  # the statistics' tally of exit codes; outside Hypothesis, nothing
        event(f"ripple {' '.join(a for a in argv[:2] if not a.startswith(('/', '-')))}: exit {code}")
    assert "Traceback" not in out + err, f"{argv}: a traceback\n{err}"
    assert code in (EXIT_OK, EXIT_BAD_INPUT), f"{argv}: exit {code} (a runtime failure on user input)\n{err}"
    if code == EXIT_BAD_INPUT and not (report_on_stdout and "INVALID" in out):
        one_error(err)
    return code, out, err


#: how the lines after ``error: dataset URL: INVALID, N problems`` begin: a dataset's report of several problems
#: (``DatasetInvalid``), which follows its one error line
_REPORT_LINES = re.compile(r"^(rows: |  - |Fix the tables named above)")


def one_error(err: str) -> str:
    """The one ``error:`` line of ``err``: the last line, or the head of a dataset's report of several problems."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    head = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if len(head) == 1 and re.search(r": INVALID, [0-9]+ problems$", lines[head[0]]):
        assert all(_REPORT_LINES.match(line) for line in lines[head[0] + 1:]), err
        assert "Traceback" not in err, err
        return lines[head[0]]
    return _one_error_line(err)


def nothing_written(out: str) -> None:
    """After exit 2: nothing written at ``out`` (not even a folder)."""
    assert not os.path.exists(out), f"bad input left {out}: {sorted(os.listdir(out))}"

"""Fuzzed time arguments of ``ripple labels``: ``--cutoff``, ``--cutoffs``, ``--every`` and ``--horizon``.

The histories are small and literal: ``test_labels_many``'s (posts and reshares from t=500 to 1500, cuts at
1000..1300 with H = 100 label it) and the tiny dataset's (epoch times around 2023-11-14). Each example gives times
as epoch seconds (near the history, far from it, negative, huge, fractional, signed, padded), ISO-8601 (with and
without zones, dates only, invalid dates, the years 1 and 9999) or any text, durations with and without units, and
the integer flags (``--min-posts``, ``--split-seed``, ``--chunk-rows``) at and past their bounds. The invariant:
exit 0 with a labelled dataset that is valid (``ripple validate`` and the tables oracle) and labelled at the asked
cut times, or exit 2 with one ``error:`` line and nothing written.
"""
from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
from fuzzing import budget, fresh_dir, nothing_written, run_cli, timeout
from hypothesis import example, given
from hypothesis import strategies as st
from test_fuzz_tables import problems
from test_labels import write_history
from test_labels_many import history_tables
from tiny_dataset import write_tiny_dataset

from ripple.data.history import parse_time

pytestmark = [timeout(240), pytest.mark.usefixtures("no_ray")]

HISTORIES = {"many": lambda url: write_history(url, history_tables()), "tiny": write_tiny_dataset}

_ISO = st.builds(
    lambda y, mo, d, h, mi, s, zone: f"{y:04d}-{mo:02d}-{d:02d}" + (f"T{h:02d}:{mi:02d}:{s:02d}{zone}" if h >= 0
                                                                   else ""),
    st.sampled_from([1, 1969, 1970, 2023, 2024, 9999]), st.integers(0, 13), st.integers(0, 32), st.integers(-1, 24),
    st.integers(0, 59), st.integers(0, 60), st.sampled_from(["", "Z", "+00:00", "+14:00", "-12:00", "+02", "ZZ"]))
TIME = st.integers(0, 9).flatmap(lambda k: (
    st.integers(400, 1600).map(str) if k < 3 else                      # inside test_labels_many's history
    st.integers(1_700_000_000 - 100, 1_700_001_100).map(str) if k < 4 else  # inside the tiny dataset's
    st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.integers(253_402_300_800, 2 ** 63 - 1),  # past the year 9999
              st.integers(-(2 ** 63), -62_135_596_801)).map(str) if k < 5 else  # before the year 1
    _ISO if k < 7 else
    st.sampled_from(["1000", " 1000 ", "+1000", "-0", "1000.5", "1e3", "0", "", "nan", "inf", "9" * 30, "T", "Z",
                     "1970-01-01T00:16:40Z", "1970-01-01 00:16:40", "2023-11-14T22:15:00Z", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-14:00", "٣"]) if k < 9 else
    st.text(max_size=10)))
DURATION = st.integers(0, 9).flatmap(lambda k: (
    st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 300), st.sampled_from(["", "s", "s", "m", "h", "d", "w"]))
    if k < 5 else
    st.sampled_from(["100", "100s", "1.5m", "0", "0d", "-3d", "1e2s", " 100 s ", "100S", "100sec", "9" * 400,
                     "99999999999999999999w", "1h30m", "", "5.", ".5h"]) if k < 9 else
    st.text(max_size=8)))
SEP = st.sampled_from([",", ",", ", ", ",,", " ,"])


#: cut times and a horizon that label each history (near them, the labels may succeed)
NEAR = {"many": ([1000, 1100, 1200, 1300], 100), "tiny": ([1_700_000_050, 1_700_000_150, 1_700_000_250], 100)}


@st.composite
def when(draw, history: str) -> list[str]:
    """The flags that say when: ``--cutoff T``, ``--cutoffs T1,T2,...`` or ``--every D``; and ``--horizon H``.
    Four in ten are near a labelling of ``history`` (cut times moved a little, another horizon), the rest fuzzed."""
    mode = draw(st.sampled_from(["--cutoff", "--cutoffs", "--cutoffs", "--every"]))
    if draw(st.integers(0, 9)) < 4:
        cuts, h = NEAR[history]
        jitter = st.sampled_from([0, 0, 0, 0, 1, -1, 7, -30, 30])
        if mode == "--cutoff":
            value = str(cuts[-1] + draw(jitter))
        elif mode == "--cutoffs":
            chosen = draw(st.one_of(st.just(cuts), st.lists(st.sampled_from(cuts), min_size=2, max_size=len(cuts),
                                                             unique=True)))
            value = ",".join(str(c + draw(jitter)) for c in chosen)
        else:
            value = draw(st.sampled_from([f"{h}s", f"{2 * h}s", f"{3 * h}", f"{5 * h}s", f"{h // 2}s"]))
        horizon = draw(st.sampled_from([f"{h}s", f"{h}s", f"{h}", f"{h - 1}s", f"{h + 1}s", f"{2 * h}s", "1s"]))
        return [f"{mode}={value}", f"--horizon={horizon}"]
    if mode == "--cutoff":
        value = draw(TIME)
    elif mode == "--cutoffs":
        times = draw(st.lists(st.one_of(TIME, st.sampled_from(["1000", "1100", "1200", "1300"])), max_size=6))
        value = draw(SEP).join(times)
    else:
        value = draw(DURATION)
    return [f"{mode}={value}", f"--horizon={draw(DURATION)}"]


CASE = st.sampled_from(sorted(HISTORIES)).flatmap(lambda h: st.tuples(st.just(h), when(h)))
INT_FLAGS = st.lists(st.one_of(
    st.tuples(st.just("--min-posts"), st.integers(-2, 4)),
    st.tuples(st.just("--split-seed"), st.one_of(st.integers(0, 20), st.integers(-5, 2 ** 70))),
    st.tuples(st.just("--chunk-rows"), st.one_of(st.integers(-1, 3), st.just(1 << 20)))), max_size=2)


def _cuts(flags: list[str]) -> set[int] | None:
    """The cut times ``--cutoffs`` asked for (None for the other modes)."""
    value = next((f.split("=", 1)[1] for f in flags if f.startswith("--cutoffs=")), None)
    return None if value is None else {parse_time(t) for t in value.split(",") if t.strip()}


@budget(80)
@given(case=CASE, ints=INT_FLAGS)
# the seed corpus: every failure found, replayed on every run
# defect 2: a duration too large for a float crashed with OverflowError (exit 1); now "--horizon ... is out of range"
@example(case=("many", ["--cutoff=400", "--horizon=" + "9" * 400]), ints=[])
# defect 3: a cut time outside the years 1-9999 crashed the message naming it (iso(): OSError, exit 1)
@example(case=("many", ["--cutoffs=67768036191676800", "--horizon=0"]), ints=[])
def test_labels_time_arguments(case, ints, tmp_path, capsys):
    history, flags = case
    where = fresh_dir(tmp_path)
    data = HISTORIES[history](os.path.join(where, "data"))
    out = os.path.join(where, "out")
    argv = ["labels", data, *flags, *[f"{k}={v}" for k, v in ints], "--out", out]
    code, _, _ = run_cli(capsys, argv)
    if code != 0:
        nothing_written(out)
        return
    assert problems(out) == [], f"ripple labels wrote an invalid dataset: {problems(out)}"
    assert run_cli(capsys, ["validate", out], report_on_stdout=True)[0] == 0
    asked = _cuts(flags)
    if asked is not None:  # every row at one of the asked cut times
        times = set(pq.read_table(os.path.join(out, "labels"), columns=["time"])["time"].to_pylist())
        assert times <= asked, (times, asked)

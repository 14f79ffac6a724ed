"""What ``ripple`` shows while it works: a line per stage, a line per training epoch, then the final table.

Plain lines rather than a redrawn bar, so that the console reads the same on a terminal, in a CI log and in
``ray job logs``. Progress goes to stderr and results to stdout, so ``ripple train ... > table.txt`` keeps only
the table. Everything else (ripple's INFO records, Ray's and Ray Train's own output) goes to the run's
``logs/`` folder (``ripple.runlog``); ``-v`` shows it live.
"""
from __future__ import annotations

import sys
import threading
import time


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Console:
    """The progress of one command: ``stage(name)`` as each stage starts, ``epoch(record)`` as each training
    epoch ends (``ripple.train.checkpoint.HISTORY_KEYS``, possibly from another thread).

    ``stages``: every stage's name, for the ``[i/n]`` counter; ``epochs``: the training budget, for the ETA
    (an upper bound: early stopping may end training sooner)."""

    def __init__(self, stages: list[str], epochs: int | None = None, stream=None):
        self.stages, self.epochs, self.stream = list(stages), epochs, stream or sys.stderr
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._epoch_t: list[float] = []  # when each epoch record arrived
        self._current = -1

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def stage(self, name: str) -> None:
        if name not in self.stages:  # a stage only some runs have (partition): it comes next
            self.stages.insert(self._current + 1, name)
        self._current = self.stages.index(name)
        self._line(f"[{self._current + 1}/{len(self.stages)}] {name:<10} "
                   f"(at {_duration(time.perf_counter() - self.t0)})")

    def epoch(self, record: dict) -> None:
        now = time.perf_counter()
        self._epoch_t.append(now)
        e = record["epoch"] + 1
        total = self.epochs or e
        # time per epoch as the driver sees it (training + validation + checkpoint); the first arrival also
        # holds the worker group's start, so it is used only until a second epoch has been timed
        gaps = [b - a for a, b in zip(self._epoch_t, self._epoch_t[1:])]
        per_epoch = sum(gaps) / len(gaps) if gaps else record.get("epoch_s", 0.0)
        eta = f"ETA <= {_duration(per_epoch * (total - e))}" if e < total else "last epoch"
        self._line(f"  epoch {e:>3}/{total:<3} loss {record['train_loss']:.4f}  val MSE {record['val_mse']:.4f}  "
                   f"val Spearman {record['val_spearman']:.3f}  {record['train_seeds_per_s']:,.0f} seeds/s  {eta}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

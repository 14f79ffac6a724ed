"""Early stopping and resume bookkeeping of ``ripple.train.checkpoint.TrainState`` (no Ray)."""
from __future__ import annotations

import math

import pytest

from ripple.train.checkpoint import TrainState

pytestmark = pytest.mark.timeout(60)


def run(state: TrainState, total: int, patience: int, val_mse: list[float]) -> list[int]:
    seen = []
    for epoch in state.epochs(total, patience):
        seen.append(epoch)
        state.update(epoch, val_mse[epoch])
    return seen


def test_stops_after_patience_epochs_without_improvement():
    state = TrainState()
    # improves at 0, 1; then 3 epochs without improvement (patience 3): epochs 2, 3, 4 run, 5 does not
    assert run(state, 10, 3, [5, 4, 4.5, 4.2, 4.1, 3, 2, 1, 1, 1]) == [0, 1, 2, 3, 4]
    assert state.best == 4 and state.bad_epochs == 3 and state.next_epoch == 5


def test_patience_zero_runs_every_epoch():
    assert run(TrainState(), 4, 0, [1, 2, 3, 4]) == [0, 1, 2, 3]


def test_a_resumed_state_goes_on_from_the_next_epoch_and_keeps_counting():
    state = TrainState(next_epoch=3, best=1.0, bad_epochs=1, resumed_from=2)
    assert run(state, 10, 2, [9, 9, 9, 0.5, 0.6, 0.7, 0.1, 0, 0, 0]) == [3, 4, 5]
    assert state.best == 0.5


def test_an_exhausted_state_runs_nothing():
    assert run(TrainState(next_epoch=4, best=1.0, bad_epochs=2), 10, 2, []) == []
    assert run(TrainState(next_epoch=10), 10, 0, []) == []
    assert TrainState().best == math.inf

"""The console of `ripple train`/`demo`: a line per stage, a line per epoch with an ETA."""
from __future__ import annotations

import io

from ripple.console import Console, _duration


def _record(epoch, loss=0.5):
    return {"epoch": epoch, "train_loss": loss, "val_mse": 0.25, "val_spearman": 0.6, "train_seeds_per_s": 1234.5,
            "epoch_s": 2.0}


def test_stage_and_epoch_lines():
    out = io.StringIO()
    c = Console(["validate", "train", "embed"], epochs=3, stream=out)
    c.stage("validate")
    c.stage("partition")  # a stage only some runs have: counted as the next one
    c.stage("train")
    for e in range(3):
        c.epoch(_record(e))
    c.stage("embed")
    lines = out.getvalue().splitlines()
    assert [ln.split()[0] for ln in lines if ln.startswith("[")] == ["[1/3]", "[2/4]", "[3/4]", "[4/4]"]  # the count grows when partition appears
    assert lines[1].split()[1] == "partition"
    epochs = [ln for ln in lines if ln.lstrip().startswith("epoch")]
    assert len(epochs) == 3
    assert "epoch   1/3" in epochs[0] and "loss 0.5000" in epochs[0] and "val Spearman 0.600" in epochs[0]
    assert "1,234 seeds/s" in epochs[0] and "ETA <= 4s" in epochs[0]  # 2 epochs left at epoch_s = 2 s
    assert epochs[2].endswith("last epoch")


def test_durations():
    assert [_duration(s) for s in (0.4, 59, 61, 3599, 3600 * 2 + 60)] == ["0s", "59s", "1m01s", "59m59s", "2h01m"]


def test_verbose_goes_before_or_after_the_verb():
    from ripple.cli import build_parser

    p = build_parser()
    for argv, want in ((["train"], False), (["-v", "train"], True), (["train", "-v"], True),
                       (["demo", "--verbose"], True), (["k8s", "render", "-v"], True), (["-v", "seeds", "r", "--k", "3"], True)):
        assert p.parse_args(argv).verbose is want, argv

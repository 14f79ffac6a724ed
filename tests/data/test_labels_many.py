"""``ripple labels --cutoffs/--every``: a training table at many cut times on a literal history (exact values, each
cut as a one-cut derive_labels would label it, the past as one --cutoff at the last cut), the temporal split's
rules, the --every schedule, refusals before any output, and the CLI."""
from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_labels import _seed_with_train_and_test, write_history

from ripple.cli import main
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.history import iso
from ripple.data.labels import LabelSpec, derive_labels, every_cutoffs, history_range, temporal_roles
from ripple.data.validate import validate_dataset

pytestmark = pytest.mark.timeout(120)

H = 100
CUTS = (1000, 1100, 1200, 1300)  # train, train, val (1200 + H <= 1300), test
ROLES = {1000: "train", 1100: "train", 1200: "val", 1300: "test"}
CONTENT = {  # id: (creator, created at)
    10: (1, 500), 11: (2, 600),                     # before every cut
    20: (1, 1010), 21: (2, 1050), 22: (1, 1090),    # window [1000, 1100)
    30: (1, 1120), 31: (3, 1150),                   # window [1100, 1200)
    40: (2, 1210), 41: (1, 1250),                   # window [1200, 1300)
    50: (1, 1305), 51: (3, 1390), 52: (1, 1399),    # window [1300, 1400)
    60: (4, 1450),                                  # after every window
}
SHARED = [  # (user, post, time)
    (3, 10, 700), (4, 11, 800),                     # past reshares
    (2, 20, 1020), (2, 20, 1030), (1, 20, 1040),    # c20: u2 twice counts once; the author is not reach
    (3, 20, 1105),                                  # within H of c20, though in the next window
    (4, 20, 1110),                                  # exactly H after c20: outside
    (1, 21, 1060),                                  # c21: one resharer
    (2, 30, 1130), (3, 30, 1140), (4, 30, 1190),    # c30: three resharers
    (1, 31, 1250),                                  # exactly H after c31: outside
    (1, 40, 1220), (5, 40, 1300),                   # c40: two resharers (1300 < 1210 + H)
    (2, 41, 1340),                                  # c41: one, after the past's end (1300)
    (2, 50, 1310), (3, 50, 1320), (4, 50, 1330), (5, 50, 1404),  # c50: four
    (1, 51, 1480),                                  # c51: one
    (1, 60, 1499),                                  # the history ends at 1500 = 1300 + 2H
]
FOLLOWS = [(2, 1, 100), (3, 1, 200), (4, 1, 1150), (5, 2, 300), (1, 2, 400), (5, 4, 1350)]
USERS = [1, 2, 3, 4, 5]
# (user, time) -> (cascade_reach, cascade_reach_replicate), by hand from the tables above
EXPECTED = {
    (1, 1000): (2.0, 1.0),    # c20 -> 1 + {2, 3} = 3, c22 -> 1: mean 2; halves A = c20, B = c22
    (2, 1000): (2.0, None),   # c21 -> 1 + {1}
    (1, 1100): (4.0, None),   # c30 -> 1 + {2, 3, 4}
    (3, 1100): (1.0, None),   # c31: its one reshare is exactly H late
    (1, 1200): (2.0, None),   # c41 -> 1 + {2}
    (2, 1200): (3.0, None),   # c40 -> 1 + {1, 5}
    (1, 1300): (3.0, 1.0),    # c50 -> 1 + {2, 3, 4, 5} = 5, c52 -> 1: mean 3; B = c52
    (3, 1300): (2.0, None),   # c51 -> 1 + {1}
}


def history_tables(content=None) -> dict[str, pa.Table]:
    content = CONTENT if content is None else content
    shared = [s for s in SHARED if s[1] in content]
    ids = sorted(content)
    n = len(USERS)
    cols = {
        "user": {"id": USERS, "follower_count": [99] * n, "avg_engagement": [9.0] * n,
                 "topic_vector": [[1.0 / S.NUM_TOPICS] * S.NUM_TOPICS] * n},
        "content": {"id": ids, "type": [0] * len(ids), "topic": [1] * len(ids),
                    "timestamp": [content[c][1] for c in ids], "text_emb": [[0.5] * S.TEXT_EMB_DIM] * len(ids)},
        "community": {"id": [1], "size": [n], "topic_focus": [1], "density": [0.5]},
        "follows": {"src": [f for f, _, _ in FOLLOWS], "dst": [g for _, g, _ in FOLLOWS],
                    "since_date": [t for _, _, t in FOLLOWS], "interaction_freq": [1.0] * len(FOLLOWS)},
        "created": {"src": [content[c][0] for c in ids], "dst": ids, "timestamp": [content[c][1] for c in ids]},
        "shared": {"src": [u for u, _, _ in shared], "dst": [c for _, c, _ in shared],
                   "timestamp": [t for _, _, t in shared]},
        "member_of": {"src": USERS, "dst": [1] * n},
        "reply_to": {"src": [11, 41], "dst": [10, 40]},  # the second reply is after the last cut
    }
    return {name: S.TABLES[name].from_pydict(c) for name, c in cols.items()}


def _files(root) -> dict[str, str]:
    """Digest of every file under ``root`` but the labels and the manifest (a failure names the file)."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            if not rel.startswith("labels") and rel != "manifest.json":
                with open(os.path.join(d, n), "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _rows(labels: pa.Table) -> dict:
    d = labels.to_pydict()
    return {(u, t): (r, b, s) for u, t, r, b, s in zip(d["user_id"], d["time"], d["cascade_reach"],
                                                       d["cascade_reach_replicate"], d["split"])}


@pytest.fixture
def many(tmp_path):
    data = write_history(str(tmp_path / "data"), history_tables())
    m = derive_labels(data, str(tmp_path / "out"), LabelSpec.many(CUTS, H))
    return data, Dataset(str(tmp_path / "out")), m


# ---------------------------------------------------------------- a literal history at four cut times

def test_each_cut_is_labelled_from_its_own_window(many):
    _, ds, m = many
    rows = _rows(ds.read("labels"))
    assert {k: v[:2] for k, v in rows.items()} == EXPECTED
    assert {k: v[2] for k, v in rows.items()} == {(u, t): ROLES[t] for u, t in EXPECTED}  # split by the cut's role
    info = m["labels"]
    assert info["split"] == "temporal" and info["cutoff"] == CUTS[-1]
    assert [(c["cutoff"], c["split"], c["labelled_users"]) for c in info["cutoffs"]] == [
        (1000, "train", 2), (1100, "train", 2), (1200, "val", 2), (1300, "test", 2)]
    assert [c["cutoff_iso"] for c in info["cutoffs"]] == [iso(c) for c in CUTS]
    assert [c["window_posts"] for c in info["cutoffs"]] == [3, 2, 2, 3]
    assert info["labelled_users"] == len(EXPECTED) and info["window_posts"] == 10
    assert all("reliability" in c for c in info["cutoffs"])


def test_each_cut_equals_a_one_cut_derive_labels_and_the_past_is_the_last_cuts(many, tmp_path):
    data, ds, _ = many
    labels = ds.read("labels")
    seed = _seed_with_train_and_test(2)  # every window labels two users
    for cut in CUTS:
        out = str(tmp_path / f"one-{cut}")
        derive_labels(data, out, LabelSpec(cut, H, split_seed=seed, val_fraction=0.0, test_fraction=0.5))
        one = Dataset(out).read("labels")
        assert one["time"].null_count == len(one)  # one --cutoff: no time on the rows
        at_cut = labels.filter(pc.equal(labels["time"], cut))
        cols = ["user_id", "cascade_reach", "cascade_reach_replicate"]
        assert sorted(zip(*at_cut.select(cols).to_pydict().values())) == sorted(
            zip(*one.select(cols).to_pydict().values())), cut
    assert _files(ds.url) == _files(tmp_path / f"one-{CUTS[-1]}")
    assert sorted(ds.read("content")["id"].to_pylist()) == [10, 11, 20, 21, 22, 30, 31, 40, 41]


def test_the_table_validates_and_a_user_appears_at_several_times(many):
    _, ds, _ = many
    report = validate_dataset(ds.url)
    assert report.ok, report.text()
    lab = ds.read("labels")
    assert lab["time"].null_count == 0
    times_of_u1 = sorted(t for u, t in zip(lab["user_id"].to_pylist(), lab["time"].to_pylist()) if u == 1)
    assert times_of_u1 == list(CUTS)


def test_a_cut_with_no_window_posts_is_refused_before_any_output(tmp_path):
    content = {c: v for c, v in CONTENT.items() if not 1100 <= v[1] < 1200}  # window [1100, 1200) empty
    data = write_history(str(tmp_path / "data"), history_tables(content))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"no posts in the window \[{iso(1100)}, {iso(1200)}\)"):
        derive_labels(data, str(out), LabelSpec.many(CUTS, H))
    assert not (out / "manifest.json").exists()
    assert not out.exists()


# ---------------------------------------------------------------- the temporal split and the --every schedule

def test_temporal_roles():
    assert temporal_roles(CUTS, H) == ROLES
    assert temporal_roles((0, 50, 100, 200, 300), H) == {0: "train", 50: "train", 100: "train", 200: "val",
                                                          300: "test"}
    # val is the latest cut whose window ends by the test cut: 250 - H < 200 < 250 would overlap test
    assert temporal_roles((0, 100, 250), H) == {0: "train", 100: "val", 250: "test"}
    with pytest.raises(ValueError, match=rf"the cut {iso(200)} is a training cut.*validation cut {iso(100)}"):
        temporal_roles((0, 100, 200, 250), H)


def test_temporal_roles_refuses_a_training_cut_overlapping_validation():
    with pytest.raises(ValueError, match=rf"the cut {iso(1150)} is a training cut, but its window ends at "
                                         rf"{iso(1250)}, after the validation cut {iso(1200)}"):
        temporal_roles((1000, 1150, 1200, 1300), H)


def test_temporal_roles_refuses_no_validation_or_no_training_cut():
    with pytest.raises(ValueError, match=rf"no cut's window .* ends by the test cut {iso(1300)}"):
        temporal_roles((1250, 1260, 1300), H)
    with pytest.raises(ValueError, match=rf"no training cut.*validation cut {iso(1200)}.*<= {iso(1100)}"):
        temporal_roles((1200, 1300), H)
    with pytest.raises(ValueError, match=r"--cutoffs needs at least 3 distinct times"):
        LabelSpec.many((1200, 1300, 1300), H)


def test_every_cutoffs():
    # T_test = 2000 - 200 = 1800, T_val = 1700, training from 1600 back by 150 while >= 0 + 100
    assert every_cutoffs(0, 2000, 100, 150) == (100, 250, 400, 550, 700, 850, 1000, 1150, 1300, 1450, 1600,
                                                1700, 1800)
    assert every_cutoffs(1000, 1500, 100, 7) == (1100, 1200, 1300)  # exactly 5H: one training cut
    cuts = every_cutoffs(0, 2000, 100, 150)
    roles = temporal_roles(cuts, 100)
    assert roles[1800] == "test" and roles[1700] == "val" and list(roles.values()).count("train") == 11


def test_every_cutoffs_refuses_a_short_history_and_a_step_not_positive():
    with pytest.raises(ValueError, match=r"--every: the history .* is too short .*\(5H of history"):
        every_cutoffs(1000, 1499, 100, 10)
    with pytest.raises(ValueError, match=r"--every must be > 0, got 0"):
        every_cutoffs(0, 2000, 100, 0)


def test_history_range_of_an_export_without_manifest(tmp_path):
    data = write_history(str(tmp_path / "data"), history_tables())
    assert history_range(data) == (500, 1500)


# ---------------------------------------------------------------- the CLI

def test_cli_every(tmp_path, capsys):
    data = write_history(str(tmp_path / "data"), history_tables())
    out = tmp_path / "out"
    # [500, 1500), H = 100: test 1300, val 1200, training 1100 and 1100 - 500 = 600 (>= 500 + H)
    assert main(["labels", data, "--every", "500s", "--horizon", "100s", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(c["cutoff"], c["split"], c["labelled_users"]) for c in printed["cutoffs"]] == [
        (600, "train", 1), (1100, "train", 2), (1200, "val", 2), (1300, "test", 2)]
    assert printed["split"] == "temporal"
    assert (out / "manifest.json").exists() and validate_dataset(str(out)).ok
    # the windows the literal history fills label as they do with --cutoffs
    rows = _rows(Dataset(str(out)).read("labels"))
    # [600, 700): u2's c11, whose one reshare (at 800) is H late
    assert {k: v[:2] for k, v in rows.items()} == {(2, 600): (1.0, None), **{
        k: v for k, v in EXPECTED.items() if k[1] >= 1100}}


def test_cli_cutoffs_iso(tmp_path, capsys):
    data = write_history(str(tmp_path / "data"), history_tables())
    out = tmp_path / "out"
    assert main(["labels", data, "--cutoffs", ",".join(iso(c) for c in CUTS), "--horizon", "100s",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [c["cutoff_iso"] for c in printed["cutoffs"]] == [iso(c) for c in CUTS]
    assert {k: v[:2] for k, v in _rows(Dataset(str(out)).read("labels")).items()} == EXPECTED


def test_cli_cutoff_and_cutoffs_together_is_a_usage_error(tmp_path, capsys):
    data = write_history(str(tmp_path / "data"), history_tables())
    code = main(["labels", data, "--cutoff", "1300", "--cutoffs", "1000,1200,1300", "--horizon", "100s",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "argument --cutoffs: not allowed with argument --cutoff" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _null_created_timestamp(tables: dict) -> dict:
    t = tables["created"]
    ts = t["timestamp"].to_pylist()
    ts[1] = None
    return {**tables, "created": t.set_column(2, "timestamp", pa.array(ts, pa.int64()))}


def _no_shared_timestamp(tables: dict) -> dict:
    return {**tables, "shared": tables["shared"].drop_columns(["timestamp"])}


FAULTS = {"null_created_timestamp": (_null_created_timestamp, "created.timestamp"),
          "no_shared_timestamp": (_no_shared_timestamp, "shared.timestamp")}

@pytest.mark.parametrize("flag", ["--cutoffs", "--every"])
@pytest.mark.parametrize("fault", FAULTS)
def test_cli_bad_timestamps_are_named_before_any_output(tmp_path, capsys, fault, flag):
    build, where = FAULTS[fault]
    data = write_history(str(tmp_path / "data"), build(history_tables()))
    when = ",".join(str(c) for c in CUTS) if flag == "--cutoffs" else "500s"
    code = main(["labels", data, flag, when, "--horizon", "100s", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert where in err.strip().splitlines()[-1], err
    assert not (tmp_path / "out").exists()

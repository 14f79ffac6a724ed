"""``ripple import snap-activity``: a literal activity file -> exact tables and manifest; ``ripple labels`` of it."""
from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from ripple.cli import main
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.ingest.snap import import_snap_activity
from ripple.data.storage import StorageOptions

pytestmark = pytest.mark.timeout(120)

ACTIVITY = """\
# SNAP Higgs activity: A B time KIND
1 2 100 RT
6 4 150 RT
3 2 700 RT
1 2 100 RT
5 5 300 RT

1 3 750 MT
4 1 800 RE
1 2 1900 MT
4 2 2000 RT
"""
# line 1: a comment; 2: opens post (2, 100); 3: opens post (4, 150); 4: 600 s after 2's previous retweet = the
# post gap: joins (2, 100); 5: line 2 again (dropped); 6: 5 with itself (dropped, 5 stays a user); 7: blank;
# 8, 9, 10: a mention and a reply: follows and interactions, no posts; 11: 1300 s after 700: opens (2, 2000)
GAP = 600

USERS = [1, 2, 3, 4, 5, 6]
FOLLOWER_COUNT = [1, 3, 1, 1, 0, 0]  # distinct sources of follows into the user
# 2: posts 0 (reshared by 1 and 3) and 2 (by 4), 3 followers: (2/3 + 1/3) / 2; 4: post 1 (by 6), 1 follower
AVG_ENGAGEMENT = [0.0, 0.5, 0.0, 1.0, 0.0, 0.0]
CONTENT = {"id": [0, 1, 2], "timestamp": [100, 150, 2000]}
CREATED = [{"src": 2, "dst": 0, "timestamp": 100}, {"src": 4, "dst": 1, "timestamp": 150},
           {"src": 2, "dst": 2, "timestamp": 2000}]
SHARED = [{"src": 1, "dst": 0, "timestamp": 100}, {"src": 6, "dst": 1, "timestamp": 150},
          {"src": 3, "dst": 0, "timestamp": 700}, {"src": 4, "dst": 2, "timestamp": 2000}]
FOLLOWS = [(1, 2, 100, 2.0), (1, 3, 750, 1.0), (3, 2, 700, 1.0), (4, 1, 800, 1.0), (4, 2, 2000, 1.0),
           (6, 4, 150, 1.0)]
INTERACTIONS = [(1, 2, 100, "reshare"), (6, 4, 150, "reshare"), (3, 2, 700, "reshare"), (1, 3, 750, "mention"),
                (4, 1, 800, "reply"), (1, 2, 1900, "mention"), (4, 2, 2000, "reshare")]


def rows(ds: Dataset, table: str) -> list[tuple]:
    return [tuple(r.values()) for r in ds.read(table).to_pylist()]


def write(path, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(data)
    return str(path)


def check_tables(ds: Dataset) -> None:
    user = ds.read("user")
    assert user["id"].to_pylist() == USERS
    assert user["follower_count"].to_pylist() == FOLLOWER_COUNT
    assert user["avg_engagement"].to_pylist() == AVG_ENGAGEMENT
    assert user["topic_vector"].to_pylist() == [[pytest.approx(1.0 / S.NUM_TOPICS)] * S.NUM_TOPICS] * len(USERS)
    content = ds.read("content")
    assert content["id"].to_pylist() == CONTENT["id"]
    assert content["timestamp"].to_pylist() == CONTENT["timestamp"]
    assert content["type"].to_pylist() == [0, 0, 0] and content["topic"].to_pylist() == [0, 0, 0]
    assert content["text_emb"].to_pylist() == [[0.0] * S.TEXT_EMB_DIM] * 3
    assert ds.read("created").to_pylist() == CREATED
    assert ds.read("shared").to_pylist() == SHARED
    assert rows(ds, "follows") == FOLLOWS
    assert rows(ds, "interactions") == INTERACTIONS
    for empty in ("community", "member_of", "reply_to"):
        assert ds.read(empty).num_rows == 0, empty
    assert not ds.has("labels")


def check_source(source: dict, path: str, stored: bytes, gz: bool) -> None:
    assert source["format"] == "snap-activity"
    assert source["file"] == path
    assert source["sha256"] == hashlib.sha256(stored).hexdigest()
    assert source["bytes"] == len(stored)
    assert source["gzip"] is gz
    assert source["time_unit"] == "s"
    assert (source["lines"], source["events"], source["blank"], source["comments"]) == (11, 9, 1, 1)
    assert source["events_by_kind"] == {"RT": 4, "MT": 2, "RE": 1}
    assert source["dropped"] == {"duplicate_lines": 1, "self_interactions": 1}
    assert source["posts"]["post_gap_s"] == GAP
    assert source["follows"]["graph"] == "interaction graph"


def test_literal_activity_file_gives_the_exact_tables(tmp_path):
    f = write(tmp_path / "activity.txt", ACTIVITY)
    out = str(tmp_path / "out")
    m = import_snap_activity(f, out, post_gap=GAP)
    ds = Dataset(out)
    check_tables(ds)
    assert ds.manifest.history == {"start": 100, "end": 2001}  # the last event + 1; dropped lines count for nothing
    check_source(ds.manifest.source, f, ACTIVITY.encode(), gz=False)
    assert m["rows"] == {"user": 6, "content": 3, "created": 3, "shared": 4, "follows": 6, "interactions": 7,
                         "community": 0, "member_of": 0, "reply_to": 0}


def test_gzip_input_is_recognised_and_hashed_as_stored(tmp_path):
    stored = gzip.compress(ACTIVITY.encode(), mtime=0)
    f = write(tmp_path / "activity.txt.gz", stored)
    out = str(tmp_path / "out")
    import_snap_activity(f, out, post_gap=GAP)
    ds = Dataset(out)
    check_tables(ds)
    check_source(ds.manifest.source, f, stored, gz=True)
    assert ds.manifest.source["sha256"] != hashlib.sha256(ACTIVITY.encode()).hexdigest()


def test_a_gap_just_over_post_gap_splits_the_session(tmp_path):
    """With post_gap 599 s the retweet 600 s after (2, 100) opens a post of its own: content ids stay in time
    order and later posts are renumbered."""
    f = write(tmp_path / "activity.txt", ACTIVITY)
    out = str(tmp_path / "out")
    import_snap_activity(f, out, post_gap=GAP - 1)
    ds = Dataset(out)
    assert ds.read("content")["timestamp"].to_pylist() == [100, 150, 700, 2000]
    assert ds.read("created").to_pylist() == [{"src": 2, "dst": 0, "timestamp": 100},
                                              {"src": 4, "dst": 1, "timestamp": 150},
                                              {"src": 2, "dst": 2, "timestamp": 700},
                                              {"src": 2, "dst": 3, "timestamp": 2000}]
    assert [r["dst"] for r in ds.read("shared").to_pylist()] == [0, 1, 2, 3]
    # 2: three posts of one reshare each over 3 followers
    assert ds.read("user")["avg_engagement"].to_pylist() == [0.0, pytest.approx(1 / 3), 0.0, 1.0, 0.0, 0.0]
    assert rows(ds, "follows") == FOLLOWS  # the graph does not depend on the sessions


def test_posts_of_equal_time_are_numbered_by_author(tmp_path):
    f = write(tmp_path / "activity.txt", "1 9 50 RT\n1 8 50 RT\n2 7 10 RT\n")
    out = str(tmp_path / "out")
    import_snap_activity(f, out, post_gap=GAP)
    ds = Dataset(out)
    assert ds.read("created").to_pylist() == [{"src": 7, "dst": 0, "timestamp": 10},
                                              {"src": 8, "dst": 1, "timestamp": 50},
                                              {"src": 9, "dst": 2, "timestamp": 50}]
    assert ds.manifest.history == {"start": 10, "end": 51}


def test_time_unit_ms_floors_to_seconds(tmp_path):
    f = write(tmp_path / "activity.txt", "1 2 100999 RT\n3 2 101000 MT\n")
    out = str(tmp_path / "out")
    import_snap_activity(f, out, post_gap=GAP, time_unit="ms")
    ds = Dataset(out)
    assert ds.read("created").to_pylist() == [{"src": 2, "dst": 0, "timestamp": 100}]
    assert rows(ds, "interactions") == [(1, 2, 100, "reshare"), (3, 2, 101, "mention")]
    assert ds.manifest.history == {"start": 100, "end": 102}
    assert ds.manifest.source["time_unit"] == "ms"


def test_cli_import_then_validate(tmp_path, capsys):
    f = write(tmp_path / "activity.txt", ACTIVITY)
    out = str(tmp_path / "out")
    assert main(["import", "snap-activity", f, "--out", out, "--post-gap", "10m"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == out
    assert summary["history"] == {"start": 100, "end": 2001}
    assert summary["follows"] == "interaction graph"
    assert summary["dropped"] == {"duplicate_lines": 1, "self_interactions": 1, "blank_lines": 1,
                                  "comment_lines": 1}
    check_tables(Dataset(out))
    assert main(["validate", out]) == 0


def test_import_to_s3_then_validate(tmp_path, s3_server, s3_bucket, capsys):
    import boto3

    bucket = s3_bucket.removeprefix("s3://")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").put_object(
        Bucket=bucket, Key="raw/activity.txt", Body=ACTIVITY.encode())
    f, out = f"{s3_bucket}/raw/activity.txt", f"{s3_bucket}/imported"
    assert main(["import", "snap-activity", f, "--out", out, "--post-gap", "10m",
                 "--s3-endpoint-url", s3_server]) == 0
    assert main(["validate", out, "--s3-endpoint-url", s3_server]) == 0
    ds = Dataset(out, StorageOptions(endpoint_url=s3_server))
    check_tables(ds)
    check_source(ds.manifest.source, f, ACTIVITY.encode(), gz=False)
    assert ds.manifest.history == {"start": 100, "end": 2001}


# ---------------------------------------------------------------- ripple labels on an imported history

T, H = 10_000, 1_000
HISTORY = "\n".join([
    "20 1 100 RT",      # the past: post (1, 100); follows 20 -> 1
    "21 2 200 RT",      # the past: post (2, 200); follows 21 -> 2
    "20 1 500 MT",      # the past: a second event of 20 -> 1
    "20 1 10500 RE",    # after T: not in 20 -> 1's count as of T
    "22 3 10200 MT",    # after T: 22 -> 3 is no past follows edge
    # the window [T, T+H): one post by each of the authors 1..10, reshared by 30 when it opens
    *(f"30 {b} {T + 10 * b} RT" for b in range(1, 11)),
    "20 1 12000 RT",    # after the window: the history reaches T + 2H
]) + "\n"


def test_labels_recount_interaction_freq_before_the_cutoff(tmp_path, capsys):
    f = write(tmp_path / "activity.txt", HISTORY)
    data, out = str(tmp_path / "data"), str(tmp_path / "labelled")
    assert main(["import", "snap-activity", f, "--out", data, "--post-gap", "1m"]) == 0
    whole = Dataset(data)
    assert [r for r in rows(whole, "follows") if r[:2] == (20, 1)] == [(20, 1, 100, 4.0)]  # the whole history
    assert whole.manifest.history == {"start": 100, "end": 12001}

    assert main(["labels", data, "--cutoff", str(T), "--horizon", str(H), "--out", out, "--min-posts", "1",
                 "--split-seed", "0"]) == 0
    ds = Dataset(out)
    # as of T: 20 -> 1 had two events (RT at 100, MT at 500), 21 -> 2 one; 22 -> 3 and 30 -> * come later
    assert rows(ds, "follows") == [(20, 1, 100, 2.0), (21, 2, 200, 1.0)]
    assert rows(ds, "interactions") == [(20, 1, 100, "reshare"), (21, 2, 200, "reshare"), (20, 1, 500, "mention")]
    assert ds.read("content")["timestamp"].to_pylist() == [100, 200]
    user = ds.read("user")
    assert user["id"].to_pylist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 21, 22, 30]
    assert user["follower_count"].to_pylist() == [1, 1] + [0] * 12
    assert user["avg_engagement"].to_pylist() == [1.0, 1.0] + [0.0] * 12
    labels = ds.read("labels")
    assert labels["user_id"].to_pylist() == list(range(1, 11))
    assert labels["cascade_reach"].to_pylist() == [2.0] * 10  # the author + 30, who opened each post
    assert {"train", "test"} <= set(labels["split"].to_pylist())
    info = ds.manifest.labels
    assert info["recomputed"]["follows"] == ["interaction_freq"] and "follows" not in info["as_given"]
    assert info["window_posts"] == 10
    assert main(["validate", out]) == 0

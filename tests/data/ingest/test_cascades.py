"""``ripple import cascades``: literal cascade (and social-link) files -> the exact tables and manifest."""
from __future__ import annotations

import hashlib
import json

import pytest

from ripple.cli import main
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.ingest.cascades import import_cascades

pytestmark = pytest.mark.timeout(120)

CASCADES = """\
4 100,5 110
7 1 10,2 25,3 15,2 30,7 40,

4 50,1 60,5 55
4 70,1 80,4 90
"""
# line 1: no root: 4 (earliest) creates at 100, 5 reshares; written first, numbered last (content ids follow time)
# line 2: root 7 creates at 10 (the first chunk's time, the earliest); 1 (the first chunk's user) reshares at 10;
#         chunks out of order (3 at 15 after 2 at 25); 2 again at 30 (a duplicate adoption); the root itself at 40
#         (an author re-adoption); a trailing comma
# line 3: blank; line 4: no root, out of order: 4 creates at 50, 5 at 55, 1 at 60
# line 5: no root: 4 creates at 70, 1 at 80, 4 again at 90 (an author re-adoption)

USERS = [1, 2, 3, 4, 5, 7]
FOLLOWER_COUNT = [1, 0, 1, 2, 1, 1]  # distinct sources of the diffusion links into the user
# 4: posts of 2, 1 and 1 reshares over 2 followers; 7: one post of 3 reshares over 1 follower
AVG_ENGAGEMENT = [0.0, 0.0, 0.0, pytest.approx(2 / 3), 0.0, 3.0]
CREATED = [(7, 0, 10), (4, 1, 50), (4, 2, 70), (4, 3, 100)]
SHARED = [(1, 0, 10), (3, 0, 15), (2, 0, 25), (5, 1, 55), (1, 1, 60), (1, 2, 80), (5, 3, 110)]
# each adopter -> the adopter before them (the first -> the creator), at the adoption's time
DIFFUSION = [(1, 7, 10), (3, 1, 15), (2, 3, 25), (5, 4, 55), (1, 5, 60), (1, 4, 80), (5, 4, 110)]
FOLLOWS = [(1, 4, 80, 1.0), (1, 5, 60, 1.0), (1, 7, 10, 1.0), (2, 3, 25, 1.0), (3, 1, 15, 1.0), (5, 4, 55, 2.0)]


def rows(ds: Dataset, table: str) -> list[tuple]:
    return [tuple(r.values()) for r in ds.read(table).to_pylist()]


def write(path, text: str) -> str:
    path.write_bytes(text.encode())
    return str(path)


def check_posts(ds: Dataset) -> None:
    content = ds.read("content")
    assert content["id"].to_pylist() == [0, 1, 2, 3]
    assert content["timestamp"].to_pylist() == [10, 50, 70, 100]
    assert content["type"].to_pylist() == [0] * 4 and content["topic"].to_pylist() == [0] * 4
    assert content["text_emb"].to_pylist() == [[0.0] * S.TEXT_EMB_DIM] * 4
    assert rows(ds, "created") == CREATED
    assert rows(ds, "shared") == SHARED


def test_literal_cascades_give_the_exact_tables(tmp_path):
    f = write(tmp_path / "cascades.txt", CASCADES)
    out = str(tmp_path / "out")
    import_cascades(f, out)
    ds = Dataset(out)
    user = ds.read("user")
    assert user["id"].to_pylist() == USERS
    assert user["follower_count"].to_pylist() == FOLLOWER_COUNT
    assert user["avg_engagement"].to_pylist() == AVG_ENGAGEMENT
    assert user["topic_vector"].to_pylist() == [[pytest.approx(1.0 / S.NUM_TOPICS)] * S.NUM_TOPICS] * len(USERS)
    check_posts(ds)
    assert rows(ds, "follows") == FOLLOWS
    interactions = rows(ds, "interactions")
    assert sorted(interactions, key=lambda r: r[2]) == [(*d, "diffusion") for d in DIFFUSION]
    for empty in ("community", "member_of", "reply_to"):
        assert ds.read(empty).num_rows == 0, empty
    assert not ds.has("labels")
    assert ds.manifest.history == {"start": 10, "end": 111}  # the last time + 1
    src = ds.manifest.source
    assert src["format"] == "cascades" and src["file"] == f and src["gzip"] is False and src["time_unit"] == "s"
    assert src["sha256"] == hashlib.sha256(CASCADES.encode()).hexdigest() and src["bytes"] == len(CASCADES)
    assert (src["lines"], src["cascades"], src["blank"]) == (5, 4, 1)
    assert src["dropped"] == {"duplicate_adoptions": 1, "author_readoptions": 2}
    assert src["follows"]["graph"] == "interaction graph (diffusion links)"
    assert "edges" not in src


def test_cli_import_then_validate(tmp_path, capsys):
    f = write(tmp_path / "cascades.txt", CASCADES)
    out = str(tmp_path / "out")
    assert main(["import", "cascades", f, "--out", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["history"] == {"start": 10, "end": 111}
    assert summary["dropped"] == {"duplicate_adoptions": 1, "author_readoptions": 2, "blank_lines": 1,
                                  "comment_lines": 0}
    assert rows(Dataset(out), "follows") == FOLLOWS
    assert main(["validate", out]) == 0


@pytest.mark.parametrize("unit, text, created, shared, history", [
    # 1500 ms -> 1 s, 2999 ms -> 2 s (floored)
    ("ms", "1 1500,2 2999\n", [(1, 0, 1)], [(2, 0, 2)], {"start": 1, "end": 3}),
    # 0.5 min -> 30 s, 1.25 min -> 75 s, 2.999 min -> 179.94 s -> 179 s
    ("min", "1 0.5,2 1.25,3 2.999\n", [(1, 0, 30)], [(2, 0, 75), (3, 0, 179)], {"start": 30, "end": 180}),
])
def test_time_units_are_floored_to_seconds(tmp_path, unit, text, created, shared, history):
    f = write(tmp_path / "cascades.txt", text)
    out = str(tmp_path / "out")
    assert main(["import", "cascades", f, "--out", out, "--time-unit", unit]) == 0
    ds = Dataset(out)
    assert rows(ds, "created") == created
    assert rows(ds, "shared") == shared
    assert [r[2] for r in rows(ds, "follows")] == [t for _, _, t in shared]  # since_date = the adoption's time
    assert ds.manifest.history == history
    assert ds.manifest.source["time_unit"] == unit


EDGES = """\
1,2
2,1

1,2
3,3
9,1
7,4
"""
# a repeated link (1,2), a self-link (3,3), a user only in the links (9), a blank line


@pytest.mark.parametrize("direction, follows", [
    ("follower-followee", [(1, 2), (2, 1), (7, 4), (9, 1)]),  # u follows v
    ("followee-follower", [(1, 2), (1, 9), (2, 1), (4, 7)]),  # v follows u
])
def test_given_social_graph(tmp_path, direction, follows):
    f = write(tmp_path / "cascades.txt", CASCADES)
    e = write(tmp_path / "edges.txt", EDGES)
    out = str(tmp_path / "out")
    assert main(["import", "cascades", f, "--edges", e, "--edge-direction", direction, "--out", out]) == 0
    assert main(["validate", out]) == 0
    ds = Dataset(out)
    # no times in the links: each is known from the history's start, with a neutral strength
    assert rows(ds, "follows") == [(s, d, 10, 1.0) for s, d in follows]
    assert not ds.has("interactions")
    check_posts(ds)  # the posts do not depend on the graph
    user = ds.read("user")
    assert user["id"].to_pylist() == [1, 2, 3, 4, 5, 7, 9]
    followers = {u: sum(d == u for _, d in follows) for u in user["id"].to_pylist()}
    assert user["follower_count"].to_pylist() == list(followers.values())
    # engagement over the given followers (at least 1): 7: 3 reshares; 4: 2, 1 and 1 reshares
    expect = {7: 3.0 / max(followers[7], 1), 4: (2 + 1 + 1) / 3 / max(followers[4], 1)}
    assert user["avg_engagement"].to_pylist() == [pytest.approx(expect.get(u, 0.0)) for u in followers]
    assert ds.manifest.history == {"start": 10, "end": 111}
    src = ds.manifest.source
    assert src["follows"]["graph"] == "social graph (given)"
    assert src["dropped"] == {"duplicate_adoptions": 1, "author_readoptions": 2}
    assert src["edges"] == {"file": e, "sha256": hashlib.sha256(EDGES.encode()).hexdigest(), "bytes": len(EDGES),
                            "direction": direction, "lines": 7, "links": 6, "blank": 1, "comments": 0,
                            "dropped": {"self_links": 1, "duplicate_links": 1}}


def test_given_social_graph_values_by_hand(tmp_path):
    """The default direction, every user column written out."""
    f = write(tmp_path / "cascades.txt", CASCADES)
    e = write(tmp_path / "edges.txt", EDGES)
    out = str(tmp_path / "out")
    import_cascades(f, out, edges=e)
    user = Dataset(out).read("user")
    assert user["id"].to_pylist() == [1, 2, 3, 4, 5, 7, 9]
    assert user["follower_count"].to_pylist() == [2, 1, 0, 1, 0, 0, 0]  # 1 <- 2, 9; 2 <- 1; 4 <- 7
    # 7: 3 reshares / max(0, 1); 4: (2 + 1 + 1) / 1 / 3 posts
    assert user["avg_engagement"].to_pylist() == [0.0, 0.0, 0.0, pytest.approx(4 / 3), 0.0, 3.0, 0.0]


def test_named_users_get_dense_ids_and_a_user_names_table(tmp_path):
    """Users that are not integers (names, URLs) get ids 0.. in order of first appearance, cascades file first;
    ``user_names`` maps them back, the links name the same users, and ``ripple labels`` carries the names through."""
    from ripple.data.labels import LabelSpec, derive_labels

    f = tmp_path / "cascades.txt"
    f.write_text("blog.a/x alice 100,bob 160,carol 220\ndave 300,alice 350,\nbob 400,erin 460\n")
    e = tmp_path / "edges.txt"
    e.write_text("bob,blog.a/x\ncarol , bob\nfrank,dave\nbob,bob\n")
    out = str(tmp_path / "out")
    assert main(["import", "cascades", str(f), "--edges", str(e), "--out", out]) == 0
    assert main(["validate", out]) == 0
    ds = Dataset(out)
    names = ds.read("user_names")
    assert names["name"].to_pylist() == ["blog.a/x", "alice", "bob", "carol", "dave", "erin", "frank"]
    assert names["id"].to_pylist() == list(range(7))
    assert ds.read("user")["id"].to_pylist() == list(range(7))
    assert ds.read("created").to_pylist() == [{"src": 0, "dst": 0, "timestamp": 100},
                                              {"src": 4, "dst": 1, "timestamp": 300},
                                              {"src": 2, "dst": 2, "timestamp": 400}]
    assert sorted(zip(ds.read("follows")["src"].to_pylist(), ds.read("follows")["dst"].to_pylist())) == \
        [(2, 0), (3, 2), (6, 4)]
    assert ds.manifest.source["edges"]["dropped"] == {"self_links": 1, "duplicate_links": 0}
    assert "user_names" in ds.manifest.source["user_ids"]
    # more authors in the window [250, 350), so the labels have train and test users
    more = "".join(f"author-{i} {260 + i},fan-{i} {270 + i}\n" for i in range(16))
    f.write_text(f.read_text() + more)
    assert main(["import", "cascades", str(f), "--edges", str(e), "--out", out]) == 0
    lab = str(tmp_path / "lab")
    derive_labels(out, lab, LabelSpec(cutoff=250, horizon=100))
    assert Dataset(lab).read("user_names").to_pylist() == Dataset(out).read("user_names").to_pylist()
    assert main(["validate", lab]) == 0


def test_integer_users_keep_their_ids_and_write_no_names(tmp_path):
    f = tmp_path / "cascades.txt"
    f.write_text("7 100,3 160\n")
    out = str(tmp_path / "out")
    assert main(["import", "cascades", str(f), "--out", out]) == 0
    ds = Dataset(out)
    assert not ds.has("user_names") and ds.read("user")["id"].to_pylist() == [3, 7]
    assert ds.manifest.source["user_ids"] == "as given (integers)"

"""No leakage through ``ripple import snap-activity`` -> ``ripple labels``: nothing at or after the cutoff T reaches
the graph or feature tables of the labelled dataset, and an event planted after T changes the labels and nothing
else.

The past the labelled tables must show is recomputed here from the raw lines with plain Python (its own sessions,
pair counts and engagement), on a small literal history (exact values by hand too) and on the real Higgs slice."""
from __future__ import annotations

import gzip
import os
from collections import Counter, defaultdict

import numpy as np
import pytest

from ripple.cli import EXIT_OK, main
from ripple.data.dataset import Dataset
from ripple.data.history import parse_time

pytestmark = pytest.mark.timeout(120)

HOUR = 3600
POST_GAP = HOUR  # the importer's default --post-gap
KIND = {"RT": "reshare", "MT": "mention", "RE": "reply"}
TABLES = ("user", "content", "created", "shared", "follows", "interactions", "community", "member_of", "reply_to")
SLICE = os.path.join(os.path.dirname(__file__), "..", "higgs", "higgs-activity-slice.txt.gz")
SLICE_T, SLICE_H = parse_time("2012-07-04T12:00:00Z"), 30 * HOUR

# ------------------------------------------------------------------------------------------ a literal history
T, H = 1_341_144_000, 2 * HOUR  # 2012-07-01T12:00:00Z; the window [T, T + 2h)
LINES = [
    # the past
    f"2 1 {T - 5 * HOUR} RT",         # opens post P0 by 1
    f"2 1 {T - 5 * HOUR} RT",         # the same line again: dropped
    f"3 1 {T - 5 * HOUR + 600} RT",   # P0
    f"3 3 {T - 2 * HOUR} MT",         # a user with themself: dropped (the user is kept)
    f"4 1 {T - 3 * HOUR} MT",         # 4 -> 1, a mention: a follows edge, no post
    f"2 1 {T - 2 * HOUR} RE",         # 2 -> 1's second event before T
    f"6 5 {T - HOUR} RT",             # opens post P1 by 5
    f"7 5 {T - HOUR + 1800} RT",      # P1
    f"8 5 {T + 600} RT",              # P1 too (40 min after 7's): a reshare of a past post after T; 8 -> 5 is new
    # the window
    f"3 1 {T + 600} RT",              # opens W1 by 1 (more than 1 h after its previous retweet)
    f"4 1 {T + 1200} RT",             # W1
    f"2 1 {T + 3000} RT",             # W1; 2 -> 1's third event, after T
    f"7 6 {T + 1800} RT",             # opens W2 by 6; 7 -> 6 is a new pair after T
    f"5 6 {T + 2000} RT",             # W2
    # after the window; the history ends after T + 2H
    f"2 7 {T + 3 * HOUR} RT",         # a post by 7 after the window: no label
    f"6 1 {T + 4 * HOUR + 100} MT",
    # window posts of users 100.. (so that every split has users): one or two resharers each
    *(f"{200 + i} {100 + i} {T + 60 * (i + 1)} RT" for i in range(12)),
    *(f"{300 + i} {100 + i} {T + 60 * (i + 1) + 30} RT" for i in range(0, 12, 2)),
]
PLANTED_RT = f"5 1 {T + 1500} RT"   # 5 reshares W1 (within 1 h of its previous retweet): 1's reach 4 -> 5
PLANTED_OTHER = [f"2 1 {T + 700} MT",  # a pair with past events: its past count must stay 2
                 f"7 6 {T + 100} RE"]  # a pair new after T


def parse(lines) -> list[tuple[int, int, int, str]]:
    return [(int(a), int(b), int(t), k) for a, b, t, k in (line.split() for line in lines)]


def write_text(path, lines) -> str:
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return str(path)


def import_and_label(tmp_path, name: str, lines, cutoff: int, horizon: int) -> str:
    src = write_text(tmp_path / f"{name}.txt", lines)
    out, labelled = str(tmp_path / f"{name}-imported"), str(tmp_path / f"{name}-labelled")
    assert main(["import", "snap-activity", src, "--out", out]) == EXIT_OK
    assert main(["labels", out, "--cutoff", str(cutoff), "--horizon", f"{horizon}s", "--out", labelled]) == EXIT_OK
    assert main(["validate", labelled]) == EXIT_OK
    return labelled


def rows(ds: Dataset, table: str) -> list[tuple]:
    """A table read back, every row a tuple (list cells as tuples), sorted: comparable whatever the part layout."""
    t = ds.read(table)
    cols = [[tuple(v) if isinstance(v, list) else v for v in t.column(c).to_pylist()] for c in t.column_names]
    return sorted(zip(*cols), key=repr)


# ------------------------------------------------------------------------------------------ the past, by hand
def past_of(lines, cutoff: int) -> dict:
    """What the past of ``cutoff`` is, from the raw lines alone: the events (exact repeats and a user with themself
    left out), the follows pairs (first event, count), B's posts (a retweet more than the post gap after B's
    previous one opens a post) with their reshares before the cutoff, followers and engagement per user."""
    events = {e for e in parse(lines) if e[0] != e[1]}
    past = sorted(e for e in events if e[2] < cutoff)
    pairs = defaultdict(list)
    for a, b, t, _ in past:
        pairs[(a, b)].append(t)
    follows = {p: (min(ts), len(ts)) for p, ts in pairs.items()}
    followers = Counter(b for _, b in follows)
    retweets = defaultdict(list)
    for a, b, t, k in events:
        if k == "RT":
            retweets[b].append(t)
    posts = []  # (author, created, reshares before the cutoff)
    for b, times in retweets.items():
        times.sort()
        sessions = [[times[0]]]
        for earlier, later in zip(times, times[1:]):
            if later - earlier > POST_GAP:
                sessions.append([])
            sessions[-1].append(later)
        posts += [(b, s[0], sum(t < cutoff for t in s)) for s in sessions if s[0] < cutoff]
    rates = defaultdict(list)
    for b, _, reshares in posts:
        rates[b].append(reshares / max(followers[b], 1))
    users = {u for a, b, _, _ in parse(lines) for u in (a, b)}
    return {"events": past, "follows": follows, "posts": posts, "users": users,
            "followers": {u: followers[u] for u in users},
            "engagement": {u: float(np.mean(rates[u])) if rates[u] else 0.0 for u in users}}


def assert_past_only(labelled: str, lines, cutoff: int) -> dict:
    """Nothing at or after ``cutoff`` in the labelled dataset's graph and feature tables, and every past-derived
    column what the raw lines before it imply. Returns ``past_of``."""
    ds, want = Dataset(labelled), past_of(lines, cutoff)
    t = {name: ds.read(name).to_pydict() for name in ("user", "content", "created", "shared", "follows",
                                                      "interactions")}
    for name in ("content", "created", "shared", "interactions"):
        assert all(ts < cutoff for ts in t[name]["timestamp"]), f"{name}.timestamp at or after the cutoff"
    assert all(ts < cutoff for ts in t["follows"]["since_date"]), "follows.since_date at or after the cutoff"

    f, i = t["follows"], t["interactions"]
    assert sorted(zip(i["src"], i["dst"], i["timestamp"], i["kind"])) == \
        sorted((a, b, ts, KIND[k]) for a, b, ts, k in want["events"])
    got = {(s, d): (since, freq) for s, d, since, freq in zip(f["src"], f["dst"], f["since_date"],
                                                              f["interaction_freq"])}
    assert len(got) == len(f["src"]) and got == want["follows"]  # interaction_freq: the pair's events before T

    author = dict(zip(t["created"]["dst"], t["created"]["src"]))
    assert sorted(zip(t["created"]["src"], t["created"]["timestamp"])) == sorted((b, c) for b, c, _ in want["posts"])
    assert sorted(t["content"]["id"]) == sorted(t["created"]["dst"])
    s = t["shared"]
    assert sorted((a, author[p], ts) for a, p, ts in zip(s["src"], s["dst"], s["timestamp"])) == \
        sorted((a, b, ts) for a, b, ts, k in want["events"] if k == "RT")
    assert len(s["src"]) == sum(n for *_, n in want["posts"])

    u = t["user"]
    assert set(u["id"]) == want["users"]
    assert dict(zip(u["id"], u["follower_count"])) == want["followers"]
    engagement = dict(zip(u["id"], u["avg_engagement"]))
    np.testing.assert_allclose([engagement[x] for x in sorted(want["users"])],
                               [want["engagement"][x] for x in sorted(want["users"])], rtol=1e-6, atol=1e-7)
    return want


def assert_same_past(a: str, b: str) -> None:
    """Every table but ``labels`` identical, row for row."""
    da, db = Dataset(a), Dataset(b)
    for name in TABLES:
        assert rows(da, name) == rows(db, name), f"{name} changed"


def label_of(labelled: str) -> dict[int, float]:
    t = Dataset(labelled).read("labels")
    return dict(zip(t["user_id"].to_pylist(), t["cascade_reach"].to_pylist()))


# ------------------------------------------------------------------------------------------ tests
def test_literal_history_past_is_before_the_cutoff(tmp_path):
    labelled = import_and_label(tmp_path, "base", LINES, T, H)
    want = assert_past_only(labelled, LINES, T)
    # the same past by hand
    assert want["follows"] == {(2, 1): (T - 5 * HOUR, 2), (3, 1): (T - 5 * HOUR + 600, 1), (4, 1): (T - 3 * HOUR, 1),
                               (6, 5): (T - HOUR, 1), (7, 5): (T - HOUR + 1800, 1)}
    assert sorted(want["posts"]) == [(1, T - 5 * HOUR, 2), (5, T - HOUR, 2)]
    assert {u: n for u, n in want["followers"].items() if n} == {1: 3, 5: 2}
    assert {u: e for u, e in want["engagement"].items() if e} == pytest.approx({1: 2 / 3, 5: 1.0})
    # the future: W1 by 1 (3, 4, 2), W2 by 6 (7, 5), the fillers' one or two resharers; 7's post is after the window
    assert label_of(labelled) == {1: 4.0, 6: 3.0, **{100 + i: 3.0 if i % 2 == 0 else 2.0 for i in range(12)}}
    assert set(Dataset(labelled).read("labels")["split"].to_pylist()) == {"train", "val", "test"}


def test_literal_history_planted_retweet_changes_labels_only(tmp_path):
    base = import_and_label(tmp_path, "base", LINES, T, H)
    planted = import_and_label(tmp_path, "planted", [*LINES, PLANTED_RT], T, H)
    assert_past_only(planted, [*LINES, PLANTED_RT], T)
    assert_same_past(base, planted)
    before, after = label_of(base), label_of(planted)
    assert after == {**before, 1: 5.0} and before[1] == 4.0
    # the rest of the labels table (replicate, split) as before; user 1's row differs in its reach only
    others = [[r for r in rows(Dataset(d), "labels") if r[0] != 1] for d in (base, planted)]
    assert others[0] == others[1]
    (b1,), (p1,) = ([r for r in rows(Dataset(d), "labels") if r[0] == 1] for d in (base, planted))
    assert b1[2:] == p1[2:]


def test_literal_history_planted_mention_and_reply_change_nothing(tmp_path):
    base = import_and_label(tmp_path, "base", LINES, T, H)
    for j, line in enumerate(PLANTED_OTHER):
        planted = import_and_label(tmp_path, f"planted{j}", [*LINES, line], T, H)
        assert_past_only(planted, [*LINES, line], T)
        assert_same_past(base, planted)
        assert rows(Dataset(base), "labels") == rows(Dataset(planted), "labels"), line


def test_literal_history_user_first_seen_after_the_cutoff_is_a_bare_row(tmp_path):
    """What an event after T *can* add to the past: a user the history had never named gets a row in ``user`` (every
    id seen is a user, so the labels can name users new in the window) with nothing learnt from the future in it:
    no follower, no engagement, the neutral topic vector, no edge. Every other table stays as it was."""
    base = import_and_label(tmp_path, "base", LINES, T, H)
    line = f"999 1 {T + 1500} MT"
    planted = import_and_label(tmp_path, "planted", [*LINES, line], T, H)
    for name in TABLES:
        if name != "user":
            assert rows(Dataset(base), name) == rows(Dataset(planted), name), name
    assert rows(Dataset(base), "labels") == rows(Dataset(planted), "labels")
    new = [r for r in rows(Dataset(planted), "user") if r not in rows(Dataset(base), "user")]
    assert len(new) == 1 and new[0][:3] == (999, 0, 0.0)
    assert rows(Dataset(planted), "user") == sorted([*rows(Dataset(base), "user"), new[0]], key=repr)


# ------------------------------------------------------------------------------------------ the Higgs slice
@pytest.fixture(scope="module")
def higgs(tmp_path_factory):
    """The slice's lines and its labelled dataset at SLICE_T, SLICE_H."""
    with gzip.open(SLICE, "rt") as f:
        lines = [line.rstrip("\n") for line in f]
    tmp = tmp_path_factory.mktemp("higgs")
    return tmp, lines, import_and_label(tmp, "base", lines, SLICE_T, SLICE_H)


def test_higgs_slice_past_is_before_the_cutoff(higgs):
    _, lines, labelled = higgs
    want = assert_past_only(labelled, lines, SLICE_T)
    assert len(want["follows"]) > 1000 and len(want["posts"]) > 300
    # real data: some pair's events straddle T, so the recount differs from the whole history's count
    whole = Counter((a, b) for a, b, _, _ in {e for e in parse(lines) if e[0] != e[1]})
    assert any(whole[p] > n for p, (_, n) in want["follows"].items())


def test_higgs_slice_planted_retweet_changes_labels_only(higgs):
    tmp, lines, base = higgs
    # a window post of the imported history, and an existing user who has not reshared it, at its creation time
    # (the same second as the retweet that opened it: it joins that post and moves no session boundary)
    imported = Dataset(str(tmp / "base-imported"))
    created = imported.read("created").to_pydict()
    window = sorted((ts, post, author) for author, post, ts in zip(created["src"], created["dst"],
                                                                   created["timestamp"])
                    if SLICE_T <= ts < SLICE_T + SLICE_H)
    ts, post, author = window[0]
    shared = imported.read("shared").to_pydict()
    resharers = {u for u, p in zip(shared["src"], shared["dst"]) if p == post}
    users = sorted(imported.read("user", ["id"])["id"].to_pylist())
    a = next(u for u in users if u not in resharers and u != author)
    n_posts = sum(1 for _, _, x in window if x == author)
    line = f"{a} {author} {ts} RT"
    planted = import_and_label(tmp, "planted-rt", [*lines, line], SLICE_T, SLICE_H)
    assert_same_past(base, planted)
    before, after = label_of(base), label_of(planted)
    assert after[author] == pytest.approx(before[author] + 1 / n_posts), line
    assert {u: r for u, r in after.items() if u != author} == {u: r for u, r in before.items() if u != author}


def test_higgs_slice_planted_mention_and_reply_change_nothing(higgs):
    tmp, lines, base = higgs
    f = Dataset(base).read("follows").to_pydict()
    src, dst = f["src"][0], f["dst"][0]  # a pair with events before T
    users = sorted(Dataset(base).read("user", ["id"])["id"].to_pylist())
    pairs = set(zip(f["src"], f["dst"]))
    new = next((u, v) for u, v in zip(users, users[1:]) if (u, v) not in pairs)  # no event before T
    for j, line in enumerate([f"{src} {dst} {SLICE_T} MT", f"{new[0]} {new[1]} {SLICE_T + HOUR} RE"]):
        planted = import_and_label(tmp, f"planted-{j}", [*lines, line], SLICE_T, SLICE_H)
        assert_same_past(base, planted)
        assert rows(Dataset(base), "labels") == rows(Dataset(planted), "labels"), line

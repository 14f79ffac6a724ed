"""Fuzzed files through ``ripple import snap-activity`` and ``ripple import cascades [--edges]``.

Each example is a file of random lines built from the formats' tokens and their near misses: integer, zero-padded,
signed, huge, unicode-digit and named users; numbers, signs, exponents, NaN, inf, huge and negative times; known
and unknown KINDs; any whitespace (tabs, NBSP, unicode spaces), CR/CRLF line ends, blank lines, comments, chunks with
too many or too few tokens, empty chunks and trailing commas; invalid UTF-8; plain or gzip (whole, cut short, or
with bytes after it). The invariant: exit 0 and the dataset ``ripple validate`` accepts (the tables oracle of
``test_fuzz_tables`` agrees, and the users and links are those the lines name), which ``ripple labels`` then cuts
without crashing; or exit 2 with one ``error:`` line and nothing written.
"""
from __future__ import annotations

import gzip
import os
import re

import pyarrow.parquet as pq
import pytest
from fuzzing import budget, fresh_dir, nothing_written, run_cli, timeout
from hypothesis import example, given
from hypothesis import strategies as st
from test_fuzz_tables import problems

from ripple.data.dataset import Dataset

pytestmark = [timeout(240), pytest.mark.usefixtures("no_ray")]

_INT64_MAX = (1 << 63) - 1
_UINT = re.compile(r"[0-9]+")

# ---------------------------------------------------------------- tokens and lines

_WORD = st.text(st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=6)
USER = st.one_of(
    st.integers(0, 12).map(str), st.integers(0, 12).map(lambda i: f"0{i}"),
    st.sampled_from([str(_INT64_MAX), str(_INT64_MAX + 1), "-1", "+5", "٣", "1.0", "1e3", "0x1f", "alice", "@bob"]),
    st.integers(0, 2 ** 70).map(str), _WORD)
TIME = st.one_of(
    st.integers(0, 2000).map(str), st.integers(-10, 10 ** 12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0", "+7", ".5", "5.", "1e3", "1E-3", "1e18", "9.2e18", "1e19", "1e400", "-1e400",
                     "nan", "inf", "1_000", "0x10", "", "١٢", "12:00", "9" * 30]),
    _WORD)
KIND = st.one_of(st.sampled_from(["RT", "MT", "RE", "RT", "MT", "RE", "rt", "LIKE", "RT,", "R"]), _WORD)
SEP = st.sampled_from([" ", " ", " ", "\t", "  ", "\u00a0", "\u2003", "\x0b", "\x1c", "\u3000"])
NEWLINE = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\u2028", "\x85"])
NOISE = st.one_of(st.sampled_from(["", " ", "# a comment", "#", "  # indented", "\ufeff", "\x00"]),
                  st.text(max_size=12))


@st.composite
def joined(draw, tokens: list) -> str:
    """``tokens`` joined by random whitespace, maybe with whitespace around."""
    text = tokens[0] if tokens else ""
    for t in tokens[1:]:
        text += draw(SEP) + t
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", "", " ", "\t"]))


@st.composite
def snap_line(draw, fuzzed: bool = True) -> str:
    kind = draw(st.integers(0, 9)) if fuzzed else 0
    if kind <= 6:  # a well-formed event: small ids and times, a known KIND
        a, b = draw(st.integers(0, 9)), draw(st.integers(0, 9))
        kind = draw(st.sampled_from(["RT", "MT", "RE"]))
        return draw(joined([str(a), str(b), str(draw(st.integers(0, 5000))), kind]))
    if kind <= 8:  # four (or three, or five) fuzzed tokens
        tokens = [draw(USER), draw(USER), draw(TIME), draw(KIND)]
        n = draw(st.sampled_from([4, 4, 4, 3, 5]))
        return draw(joined((tokens + [draw(KIND)])[:n]))
    return draw(NOISE)


@st.composite
def cascade_line(draw, fuzz: bool = True) -> str:
    if fuzz and draw(st.integers(0, 9)) == 9:
        return draw(NOISE)
    chunks = []
    # a well-formed user: an integer id, sometimes zero-padded (another spelling of the same id)
    user_ok = st.builds(lambda i, pad: f"0{i}" if pad == 0 else str(i), st.integers(0, 9), st.integers(0, 3))
    for j in range(draw(st.integers(1, 5))):
        fuzzed = fuzz and draw(st.integers(0, 9)) >= 8
        user = draw(USER) if fuzzed else draw(user_ok)
        time = draw(TIME) if fuzzed else str(draw(st.integers(0, 5000)))
        tokens = [user, time]
        if j == 0 and draw(st.booleans()):
            tokens.insert(0, draw(USER) if fuzzed else draw(user_ok))  # root user time
        if fuzzed and draw(st.booleans()):
            tokens = tokens[: draw(st.integers(0, len(tokens)))] + [draw(TIME)] * draw(st.integers(0, 1))
        chunks.append(draw(joined(tokens)))
    ends = ["", "", ",", ",,"] if fuzz else ["", ","]  # one trailing comma is fine, an empty chunk is not
    return draw(st.sampled_from([",", ",", ", ", " ,"])).join(chunks) + draw(st.sampled_from(ends))


@st.composite
def edge_line(draw, fuzzed: bool = True) -> str:
    kind = draw(st.integers(0, 9)) if fuzzed else 0
    if kind <= 6:
        u, v = draw(st.integers(0, 9)), draw(st.integers(0, 9))
        return f"{u}{draw(st.sampled_from([',', ', ', ' ,']))}{v}"
    if kind <= 8:
        return draw(st.sampled_from([",", ";", " ", ",,"])).join(draw(st.lists(USER, max_size=3)))
    return draw(NOISE)


_CLEAN = st.sampled_from(["", " ", "# a comment", "#"])  # lines every importer skips


@st.composite
def text_file(draw, line) -> bytes:
    """A file of lines of the format ``line(fuzzed)``: half the files hold only well-formed lines (blank lines and
    comments among them), the rest any mix; random line ends, maybe invalid UTF-8, maybe gzip."""
    if draw(st.booleans()):
        lines = draw(st.lists(st.one_of(line(False), line(False), line(False), _CLEAN), min_size=1, max_size=12))
    else:
        lines = draw(st.lists(line(True), max_size=12))
    text = "".join(ln + draw(NEWLINE) for ln in lines)
    if not draw(st.booleans()):
        text = text.rstrip("\r\n")  # no newline at the end
    data = text.encode()
    if draw(st.integers(0, 9)) == 0:  # bytes that are not UTF-8
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    if draw(st.integers(0, 3)) == 0:
        data = gzip.compress(data, mtime=0)
        cut = draw(st.integers(0, 9))
        if cut == 0:  # cut short, as an interrupted download
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif cut == 1:  # bytes after the gzip member
            data += draw(st.binary(min_size=1, max_size=8))
    return data


TIME_UNIT = st.sampled_from(["s", "s", "s", "ms", "min", "h", "d"])
POST_GAP = st.integers(0, 9).flatmap(lambda k: (
    st.just("1h") if k < 5 else st.sampled_from(["0", "30m", "0s", "1.5h", " 2 h ", "100", "2w"]) if k < 7 else
    st.sampled_from(["-1h", "=-1h", "1e3", "soon", "", "9" * 400 + "d", "99999999999999999999w"]) if k < 9 else
    st.text(max_size=6)))


# ---------------------------------------------------------------- the invariant

def _ints(tokens: list[str]) -> list[int] | None:
    """The users as ids when every token is a non-negative int64 (the importers keep them), else None."""
    if all(_UINT.fullmatch(t) and int(t) <= _INT64_MAX for t in tokens):
        return [int(t) for t in tokens]
    return None


def _data_lines(data: bytes) -> list[str]:
    """The lines the importers read as data (not blank, not a ``#`` comment)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return [ln for ln in text.split("\n") if ln.strip() and not ln.strip().startswith("#")]


def check_import(capsys, where: str, argv: list[str], many: bool) -> tuple[int, str]:
    """Run ``ripple import ...`` (``--out OUT`` appended) and check the invariant, then ``ripple labels`` of what it
    wrote (``many``: at three cut times, else one); returns (exit code, OUT)."""
    out = os.path.join(where, "out")
    code, _, _ = run_cli(capsys, [*argv, "--out", out])
    if code != 0:
        nothing_written(out)
        return code, out
    assert problems(out) == [], f"the import wrote an invalid dataset: {problems(out)}"
    assert run_cli(capsys, ["validate", out], report_on_stdout=True)[0] == 0
    # the history cut: exit 0 with labels, or exit 2 naming why; never a crash on what was imported
    start, end = Dataset(out).manifest.history["start"], Dataset(out).manifest.history["end"]
    span = end - start
    if many:  # train, val and test windows of span/8 in its middle
        cuts = ",".join(str(start + span * k // 8) for k in (3, 4, 5))
        when = ["--cutoffs", cuts, "--horizon", f"{max(1, span // 8)}s"]
    else:
        when = ["--cutoff", str(start + span // 2), "--horizon", f"{max(1, span // 4)}s"]
    labelled = os.path.join(where, "labelled")
    lcode, _, _ = run_cli(capsys, ["labels", out, *when, "--out", labelled])
    if lcode == 0:
        assert problems(labelled) == [], problems(labelled)
    else:
        nothing_written(labelled)
    return code, out


def _table(out: str, name: str) -> list[dict]:
    return pq.read_table(os.path.join(out, name)).to_pylist()


# ---------------------------------------------------------------- the properties

@budget(70)
@given(data=text_file(snap_line), unit=TIME_UNIT, gap=POST_GAP, many=st.booleans())
# the seed corpus: every failure found, replayed on every run
# defect 2: a --post-gap too large for a float crashed with OverflowError (exit 1); now "... is out of range"
@example(data=gzip.compress(b"", mtime=0), unit="s", gap="9" * 400 + "d", many=False)
# defect 4: a usage error (here `--post-gap -1h`, a value argparse takes for a flag) ended without an error: line
@example(data=gzip.compress(b"", mtime=0), unit="s", gap="-1h", many=False)
def test_import_snap_activity(data, unit, gap, many, tmp_path, capsys):
    where = fresh_dir(tmp_path)
    f = os.path.join(where, "activity.txt")
    with open(f, "wb") as fh:
        fh.write(data)
    gap_flag = [f"--post-gap{gap}"] if gap.startswith("=") else ["--post-gap", gap]  # "=-1h": --post-gap=-1h
    code, out = check_import(capsys, where, ["import", "snap-activity", f, "--time-unit", unit, *gap_flag], many)
    if code == 0:  # users and follows are exactly what the lines name: every A and B; A -> B for A != B
        events = [ln.split() for ln in _data_lines(data)]
        ids = [(int(e[0]), int(e[1])) for e in events]
        assert {u["id"] for u in _table(out, "user")} == {x for pair in ids for x in pair}
        assert {(r["src"], r["dst"]) for r in _table(out, "follows")} == {(a, b) for a, b in ids if a != b}


def _cascade_users(line: str) -> tuple[str, list[str]]:
    """(the post's author, every user token) of a cascade line the importer accepted."""
    chunks = [c.split() for c in line.split(",")]
    if not chunks[-1]:
        chunks.pop()
    root = chunks[0][0] if len(chunks[0]) == 3 else None
    users = [c[-2] for c in chunks]
    return root, users


@budget(70)
@given(data=text_file(cascade_line), edges=st.one_of(st.none(), text_file(edge_line)), unit=TIME_UNIT,
       direction=st.sampled_from(["follower-followee", "followee-follower"]), many=st.booleans())
# the seed corpus: every failure found, replayed on every run
# defect 10: two spellings of one integer id ("0", "00") were two adopters: the post's author reshared their own
# post, or one user reshared a post twice
@example(data=b"01 0,0 0,00 0", edges=None, unit="s", direction="follower-followee", many=False)
@example(data=b"00 0,0 0,01 0", edges=None, unit="s", direction="follower-followee", many=False)
def test_import_cascades(data, edges, unit, direction, many, tmp_path, capsys):
    where = fresh_dir(tmp_path)
    f = os.path.join(where, "cascades.txt")
    with open(f, "wb") as fh:
        fh.write(data)
    argv = ["import", "cascades", f, "--time-unit", unit, "--edge-direction", direction]
    if edges is not None:
        with open(os.path.join(where, "edges.txt"), "wb") as fh:
            fh.write(edges)
        argv += ["--edges", os.path.join(where, "edges.txt")]
    code, out = check_import(capsys, where, argv, many)
    if code != 0:
        return
    lines = [_cascade_users(ln) for ln in _data_lines(data)]
    links = [[t.strip() for t in ln.split(",")] for ln in _data_lines(edges)] if edges is not None else []
    tokens = [t for root, users in lines for t in ([root] if root else []) + users] + [t for uv in links for t in uv]
    as_ids = _ints(tokens)
    users = {u["id"] for u in _table(out, "user")}
    assert len(_table(out, "content")) == len(lines)  # one post per cascade
    if as_ids is not None:  # integer users are kept as the ids
        assert users == set(as_ids)
    else:
        assert users == set(range(len(users))) and len(_table(out, "user_names")) == len(users)
    # each post's author never reshares it; nobody reshares one post twice
    author = {r["dst"]: r["src"] for r in _table(out, "created")}
    shared = [(r["src"], r["dst"]) for r in _table(out, "shared")]
    assert all(author[p] != u for u, p in shared), "a post's author reshares it"
    assert len(shared) == len(set(shared)), "a user reshares one post twice"
    if edges is not None and as_ids is not None:  # the social graph as given, self-links dropped
        pairs = {(int(u), int(v)) for u, v in links}
        if direction == "followee-follower":
            pairs = {(v, u) for u, v in pairs}
        assert {(r["src"], r["dst"]) for r in _table(out, "follows")} == {(u, v) for u, v in pairs if u != v}

"""Fuzzed configs and flags: ``--config`` YAML for ``ripple train`` and ``ripple k8s render``, the flags of ``ripple
train`` and of ``ripple partition``.

A config example is YAML made from the config tree itself (every section and key of ``ripple.config``, values of
the key's type at and past its bounds: zero, negative, huge, NaN, inf; values of other types; unknown keys;
non-string keys), or any text, or a hostile document (python tags, alias bombs, deep nesting, bytes that are not
UTF-8). ``ripple train`` runs on a dataset that does not exist, so it stops at the config or the data check and
never starts Ray; ``ripple k8s render`` (object-store URLs) renders the manifests of an accepted config. The
invariant: a config the loader accepts is valid (every value of its key's type and range, and its ``config.yaml``
reads back as the same config), train then refuses the missing data and render prints manifests that are YAML;
a refused config is exit 2 with one ``error:`` line naming the file. Nothing is written either way (train's run
folder included).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import types
import typing

import pytest
import yaml
from fuzzing import _snapshot, budget, fresh_dir, run_cli, timeout
from hypothesis import example, given
from hypothesis import strategies as st

from ripple.cli import build_parser, config_from_args
from ripple.config import ConfigError, RippleConfig, from_dict

pytestmark = [timeout(240), pytest.mark.usefixtures("no_ray")]

# ---------------------------------------------------------------- YAML made from the config tree

_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 65), 2 ** 65),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
ANY = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                   max_leaves=8)
_INT = st.integers(0, 9).flatmap(lambda k: (
    st.integers(-3, 10) if k < 6 else st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 63) - 1]) if k < 8 else
    st.integers(-(2 ** 64), 2 ** 64)))
_FLOAT = st.integers(0, 9).flatmap(lambda k: (
    st.sampled_from([0.0, -0.0, -1.0, 0.5, 1.0, 1.5, 1e-300, 1e300, math.inf, -math.inf, math.nan]) if k < 6 else
    st.integers(-3, 3) if k < 7 else st.floats(allow_nan=True, allow_infinity=True)))
#: the strings some keys allow, and near misses
_WORDS = st.sampled_from(["auto", "native", "torch-sparse", "pyg-lib", "lp", "hash", "SPREAD", "PACK", "uniform",
                          "last", "layerwise", "sampled", "float16", "float32", "Always", "IfNotPresent", "16Gi",
                          "500m", "2e9", "1.5", "0", "-1Gi", "Gi", "ripple:0.1.0", "2.60.0", "follows", "shared",
                          "s3://b/x", "http://127.0.0.1:1", "a:b@x", ""])


def of_type(tp) -> st.SearchStrategy:
    """A value for a key annotated ``tp``: mostly of that type (at and past its bounds), sometimes anything."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([of_type(a) for a in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if origin is list:
        (inner,) = typing.get_args(tp)
        v = st.lists(of_type(inner), max_size=4)
    elif origin is dict:
        _, inner = typing.get_args(tp)
        keys = st.one_of(st.sampled_from(["follows", "shared", "created", "key", "client_kwargs"]), st.text(max_size=5),
                         st.integers(-2, 2))
        v = st.dictionaries(keys, of_type(inner), max_size=3)
    elif tp is bool:
        v = st.booleans()
    elif tp is int:
        v = _INT
    elif tp is float:
        v = _FLOAT
    elif tp is str:
        v = st.one_of(_WORDS, st.text(max_size=10))
    elif dataclasses.is_dataclass(tp):
        v = section(tp)
    else:  # Any
        v = ANY
    return st.one_of(v, v, v, v, ANY)


def section(cls) -> st.SearchStrategy:
    """A mapping of some of ``cls``'s keys (and, rarely, an unknown one) to values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    key = st.one_of(*[st.just(n) for n in names], st.text(max_size=6))
    return st.lists(key, max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: of_type(hints[k]) if k in hints else ANY for k in keys}))


def _dump(tree) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


def _bomb(levels: int) -> str:
    """A "billion laughs" document: ``levels`` aliases, each a list of nine of the one before (9^levels values)."""
    lines = ["storage:", "  extra:", "    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = st.sampled_from([
    "run_name: !!python/object/apply:os.system ['touch pwned']\n",
    "model: !!python/name:os.system\n",
    "train:\n  epochs: !!python/object/new:int [3]\n",
    "sampling:\n  fanouts: !!set {1: null}\n",
    "storage:\n  extra: {a: !!binary aGVsbG8=}\n",
    "train:\n  epochs: !!float 3\n",
    "a: &a [1, 1]\nb: *a\n",
    "storage:\n  extra: {x: &a [1, 1, 1, 1, 1, 1, 1, 1], y: &b [*a, *a, *a, *a, *a, *a, *a, *a],\n"
    "    z: [*b, *b, *b, *b, *b]}\n",

    "model:\n  hidden: 8\n  hidden: 16\n",
    "? [1, 2]\n: 3\n",
    "--- {}\n--- {}\n",
    "\t\x00", "- 1\n- 2\n", "42\n", "'just a string'\n", "{", "model: [1,\n",
]) | st.integers(1, 1500).map(lambda n: "storage:\n  extra:\n    x: " + "[" * n + "]" * n + "\n") | st.integers(
    1, 7).map(lambda n: _bomb(n))


def _keys(cls, where: str = "") -> list[tuple[str, object]]:
    """(dotted key, annotation) of every leaf key of the config tree."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        out += _keys(tp, f"{where}{f.name}.") if dataclasses.is_dataclass(tp) else [(f"{where}{f.name}", tp)]
    return out


KEYS = _keys(RippleConfig)


@st.composite
def one_key(draw) -> dict:
    """The config tree with one key set to a value of its type (at and past its bounds)."""
    numeric = [(k, tp) for k, tp in KEYS if tp in (int, float, int | None, float | None)]
    key, tp = draw(st.sampled_from(numeric if draw(st.booleans()) else KEYS))
    tree = draw(of_type(tp))
    for part in reversed(key.split(".")):
        tree = {part: tree}
    return tree


@st.composite
def config_text(draw) -> bytes:
    """A config file: YAML of one key of the config tree (most), of several, any text, or a hostile document;
    maybe not UTF-8."""
    kind = draw(st.integers(0, 9))
    if kind < 4:
        text = _dump(draw(one_key()))
    elif kind < 6:
        text = _dump(draw(section(RippleConfig)))
    elif kind < 7:
        text = _dump(draw(ANY))
    elif kind < 8:
        text = draw(st.text(max_size=40))
    else:
        text = draw(HOSTILE)
    data = text.encode()
    if draw(st.integers(0, 19)) == 0:
        data = data + b"\xff\xfe"
    return data


# ---------------------------------------------------------------- what an accepted config must be

def _of_type(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_of_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_of_type(v, typing.get_args(tp)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _of_type(v, typing.get_args(tp)[1])
                                               for k, v in value.items())
    if tp is typing.Any:
        return True
    if tp in (int, float):
        return isinstance(value, tp) and not isinstance(value, bool)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return isinstance(value, tp)


def invalid(cfg: RippleConfig) -> list[str]:
    """What is wrong with an accepted config: values not of their key's type, out of the range the code that reads
    them takes, or a config.yaml that does not read back as the same config."""
    out = []

    def walk(obj, where):
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{where}{f.name}.")
            elif not _of_type(value, hints[f.name]):
                out.append(f"{where}{f.name}: {value!r} is not {hints[f.name]}")
            elif isinstance(value, float) and math.isnan(value):
                out.append(f"{where}{f.name}: NaN")

    walk(cfg, "")
    m, s, t, sc = cfg.model, cfg.sampling, cfg.train, cfg.scaling
    checks = {
        "model.hidden >= 1": m.hidden >= 1, "model.heads >= 1": m.heads >= 1,
        "0 <= model.dropout <= 1": 0 <= m.dropout <= 1,
        "sampling.per_relation fanouts are -1 or >= 1": all(f == -1 or f >= 1 for v in s.per_relation.values()
                                                              for f in v),
        "train.lr is finite": math.isfinite(t.lr), "train.weight_decay >= 0 and finite": 0 <= t.weight_decay < math.inf,
        "scaling.cpus_per_worker >= 0 and finite": 0 <= sc.cpus_per_worker < math.inf,
        "partition.balance is finite": math.isfinite(cfg.partition.balance),
        "k8s CPUs are finite": all(c is None or math.isfinite(c) for c in (cfg.k8s.head_cpu, cfg.k8s.worker_cpu)),
    }
    out += [rule for rule, ok in checks.items() if not ok]
    if not out:
        again = from_dict(yaml.safe_load(cfg.to_yaml()))
        if again != cfg:
            out.append(f"config.yaml reads back as another config: {again} != {cfg}")
    return out


# ---------------------------------------------------------------- the properties

#: seconds a verb may take on one config (a hang is a failure, not a wait for pytest-timeout)
LIMIT_S = 20


def _train_argv(cfg_file: str, where: str) -> list[str]:
    return ["train", "--config", cfg_file, "--data", os.path.join(where, "no-such-data"), "--storage-path",
            os.path.join(where, "runs"), "--run-name", "r"]


@budget(120)
@given(data=config_text())
# the seed corpus: every failure found, replayed on every run
# defect 5: model.heads 0 crashed the config check itself (ZeroDivisionError, exit 1)
@example(data=b"model:\n  heads: 0\n")
# defect 6: values no code that reads them takes were accepted, and failed after Ray started (or in the render)
@example(data=b"model:\n  hidden: 0\n")
@example(data=b"model:\n  heads: -1\n")
@example(data=b"model:\n  dropout: 2\n")
@example(data=b"model:\n  dropout: .nan\n")
@example(data=b"train:\n  lr: .inf\n")
@example(data=b"train:\n  weight_decay: -1.0\n")
@example(data=b"train:\n  weight_decay: .nan\n")
@example(data=b"scaling:\n  cpus_per_worker: -2.1975054539151685e+159\n")
@example(data=b"partition:\n  balance: .inf\n")
@example(data=b"k8s:\n  worker_cpu: .inf\n")
@example(data=b"storage:\n  extra:\n    key:\n    - {}\n    1: []\n")  # a key that is not a string
# defect 8: deep nesting: a RecursionError in the YAML loader, or (shallower) when the config is written out
@example(data=("storage:\n  extra:\n    x: " + "[" * 2000 + "]" * 2000 + "\n").encode())
@example(data=("storage:\n  extra:\n    x: " + "[" * 659 + "]" * 659 + "\n").encode())
# defect 9: a "billion laughs" document (aliases) expanded when the config was copied or written out: a hang
@example(data=_bomb(7).encode())
def test_config_file(data, tmp_path, capsys, monkeypatch):
    where = fresh_dir(tmp_path)
    monkeypatch.chdir(where)  # a hostile config's relative paths land here, where the snapshot sees them
    cfg_file = os.path.join(where, "cfg.yaml")
    with open(cfg_file, "wb") as f:
        f.write(data)
    before = _snapshot(where)
    argv = _train_argv(cfg_file, where)
    try:
        cfg = config_from_args(build_parser().parse_args(argv))
    except ConfigError:
        cfg = None
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, argv)
    assert code == 2, err
    assert time.perf_counter() - t0 < LIMIT_S, f"ripple train took {time.perf_counter() - t0:.0f} s on its config"
    line = err.strip().splitlines()[-1]
    if cfg is None:
        assert "cfg.yaml" in line, line
    else:
        assert "no-such-data" in line, line
        assert invalid(cfg) == [], f"an accepted config is invalid: {invalid(cfg)}"
        # the same config renders on Kubernetes (object-store URLs: pods cannot see local paths)
        k8s = ["k8s", "render", "--config", cfg_file, "--data", "s3://b/data", "--storage-path", "s3://b/runs",
               "--run-name", "r"]
        t0 = time.perf_counter()
        kcode, out, kerr = run_cli(capsys, k8s)
        assert time.perf_counter() - t0 < LIMIT_S, f"k8s render took {time.perf_counter() - t0:.0f} s on its config"
        if kcode == 0:
            assert all(isinstance(d, dict) for d in yaml.safe_load_all(out))
    assert _snapshot(where) == before, "a refused config wrote or changed files"


_FLAG_VALUE = st.one_of(st.integers(-3, 5).map(str), st.sampled_from(["", "-", "--", "0", "1e3", "two", "-1", " 3"]),
                        st.integers(-(2 ** 70), 2 ** 70).map(str), st.text(max_size=8))
TRAIN_FLAGS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["--num-workers", "--max-failures", "--epochs", "--run-name", "--address",
                               "--s3-endpoint-url", "--init-from"]), _FLAG_VALUE),
    st.tuples(st.just("--use-gpu"), st.none()), st.tuples(st.just("-v"), st.none())), max_size=4)


def _flags(pairs) -> list[str]:
    """``--flag=value`` (so that a value beginning with '-' is a value), or a bare flag."""
    return [k if v is None else f"{k}={v}" for k, v in pairs]


@budget(80)
@given(flags=TRAIN_FLAGS)
def test_train_flags(flags, tmp_path, capsys, monkeypatch):
    where = fresh_dir(tmp_path)
    monkeypatch.chdir(where)
    argv = ["train", *_flags(flags), "--data", os.path.join(where, "no-such-data"), "--storage-path",
            os.path.join(where, "runs")]
    code, _, err = run_cli(capsys, argv)
    assert code == 2, err  # a bad flag, or the missing data: never a run
    assert os.listdir(where) == [], "a refused train wrote files"


PARTITION_FLAGS = st.lists(st.one_of(
    st.tuples(st.just("--num-parts"), st.one_of(st.integers(-1, 9).map(str), _FLAG_VALUE)),
    st.tuples(st.just("--method"), st.sampled_from(["lp", "hash", "metis", ""])),
    st.tuples(st.just("--passes"), st.one_of(st.integers(-2, 5).map(str), _FLAG_VALUE)),
    st.tuples(st.just("--balance"), st.one_of(st.sampled_from(["1.05", "1", "0.99", "nan", "inf", "-inf", "1e308",
                                                               "3"]), _FLAG_VALUE)),
    st.tuples(st.just("--chunk-rows"), st.one_of(st.integers(-1, 4).map(str), _FLAG_VALUE))), max_size=4)


@budget(60)
@given(flags=PARTITION_FLAGS)
# the seed corpus: every failure found, replayed on every run
# defect 7: `--num-parts=--` reached the verb as [] (argparse drops a lone '--' value): a TypeError, exit 1
@example(flags=[("--num-parts", "--")])
def test_partition_flags(flags, tmp_path, capsys, tiny_dataset):
    where = fresh_dir(tmp_path)
    out = os.path.join(where, "parts")
    code, _, err = run_cli(capsys, ["partition", tiny_dataset, "--out", out, *_flags(flags)]
                           + ([] if any(k == "--num-parts" for k, _ in flags) else ["--num-parts", "2"]))
    if code == 0:
        from ripple.graph.partition import read_partition_manifest

        assert sum(read_partition_manifest(out)["node_counts"]["user"]) == 8
    else:
        assert not os.path.exists(out), f"a refused partition left {out}"

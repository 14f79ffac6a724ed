"""One typed config tree, loaded from YAML (safe_load) with a small fixed set of CLI overrides.

Flag names mirror Ray's: ``--num-workers``, ``--use-gpu``, ``--storage-path``, ``--max-failures``.
Unknown keys and ill-typed values are errors that name the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from ripple.data.storage import StorageOptions, check_url
from ripple.distributed.partition import PartitionConfig
from ripple.launch.k8s import K8sConfig
from ripple.models.gnn import ModelConfig
from ripple.sampling.loader import SamplingConfig


class ConfigError(ValueError):
    """An invalid config key or value; the message names the key, the value and what is allowed."""


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    #: stop when validation MSE has not improved for this many epochs (0 = never)
    patience: int = 8

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


@dataclass
class ScalingConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    #: Ray address; None starts a local cluster (or joins RAY_ADDRESS when set)
    address: str | None = None
    #: restarts of a GraphShard actor (it reloads its partition from storage) before calls to it fail
    shard_max_restarts: int = 3

    def __post_init__(self):
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers (--num-workers) must be >= 1, got {self.num_workers}")
        if self.max_failures < -1:
            raise ConfigError(f"scaling.max_failures must be >= -1 (-1 = unlimited), got {self.max_failures}")


@dataclass
class InferenceConfig:
    #: ``layerwise``: every layer once over every edge, all neighbours (exact, O(E) per layer);
    #: ``sampled``: mini-batches with the training fanouts (the cost grows with fanout^layers per user)
    mode: str = "layerwise"
    #: in-edges per destination chunk in layer-wise inference (bounds the per-edge tensors' memory)
    chunk_edges: int = 1 << 18

    def __post_init__(self):
        if self.mode not in ("layerwise", "sampled"):
            raise ConfigError(f"inference.mode must be layerwise or sampled, got {self.mode!r}")
        if self.chunk_edges < 1:
            raise ConfigError(f"inference.chunk_edges must be >= 1, got {self.chunk_edges}")


@dataclass
class EvalConfig:
    lightgbm_threads: int = 1
    #: a sharded run computes the whole-graph baselines (PageRank, LightGBM +2-hop) on the driver from the source
    #: dataset only up to this many follows edges; above it they are reported as null
    baselines_max_edges: int = 50_000_000
    ndcg_k: int = 100


@dataclass
class RippleConfig:
    data: str = "ripple-demo/data"
    storage_path: str = "ripple-demo/runs"
    run_name: str = "demo"
    storage: StorageOptions = field(default_factory=StorageOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    #: ``partition.num_parts > 0`` partitions ``data`` into ``<storage>/<run>/partitions`` before training
    partition: PartitionConfig = field(default_factory=lambda: PartitionConfig(num_parts=0))
    #: how ``ripple k8s render`` lays the run out on Kubernetes (KubeRay); ``ripple train`` ignores it
    k8s: K8sConfig = field(default_factory=K8sConfig)

    def __post_init__(self):
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name must be a non-empty name without '/', got {self.run_name!r}")
        for key in ("data", "storage_path"):  # before the URL is echoed, written into config.yaml or rendered
            check_url(getattr(self, key), key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """Plain YAML (``safe_load``-able) of the config as written to storage and manifests: without the
        credential-like options ``storage.extra`` may hold for a local run (``StorageOptions.without_secrets``)."""
        raw = self.to_dict()
        raw["storage"] = dataclasses.asdict(self.storage.without_secrets())
        return yaml.safe_dump(raw, sort_keys=False)


def _build(cls, raw: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return _coerce(cls, raw, where)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _build(hints[k], v, f"{where}.{k}" if where else k) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e


def _coerce(tp, value, where):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, inner = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def parse_yaml(text: str | bytes, where: str) -> dict:
    """A config file's text as a dict: plain YAML only (``safe_load``: a ``!!python/...`` tag is refused), a
    mapping at the top. Errors are one-line ``ConfigError``s naming ``where``, the line and its text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = ""
        if mark is not None:
            lines = (text.decode(errors="replace") if isinstance(text, bytes) else text).splitlines()
            line = lines[mark.line].strip() if mark.line < len(lines) else ""
            at = f", line {mark.line + 1}" + (f" ({line!r})" if line else "")
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"config file {where!r}{at} is not valid YAML: {problem}; ripple reads plain YAML "
                          "(mappings, lists, strings, numbers, booleans; no python tags)") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {where!r}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> RippleConfig:
    """Defaults < YAML file < overrides (dotted keys, e.g. ``{"scaling.num_workers": 4}``).

    The file is checked on its own first, so an invalid value in it is reported with the file's name."""
    raw: dict = {}
    if path:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path!r}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.start}: {e.object[e.start]:#04x})") \
                from e
        raw = parse_yaml(text, path)
        from_dict(raw, path)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            if node.get(p) is None:  # absent, or an empty section (``scaling:``) in the file
                node[p] = {}
            elif not isinstance(node[p], dict):
                where = ".".join(parents[: i + 1])
                raise ConfigError(f"{where}: expected a mapping, got {type(node[p]).__name__} {node[p]!r}")
            node = node[p]
        node[leaf] = value
    return _build(RippleConfig, raw, "")


def from_dict(raw: dict, where: str | None = None) -> RippleConfig:
    """The config of a dict; ``where``: the file it was read from, named in errors."""
    try:
        return _build(RippleConfig, raw, "")
    except ConfigError as e:
        if where is None:
            raise
        raise ConfigError(f"config file {where!r}: {e}") from e

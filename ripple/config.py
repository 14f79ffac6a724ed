"""One typed config tree, loaded from YAML (safe_load) with a small fixed set of CLI overrides.

The bottom of the package: every section's dataclass (model, sampling, partition, train, scaling, inference, eval,
k8s) and ``ConfigError`` live here, so any layer can take a config without importing a layer above it, and Ray
workers receive the ``RippleConfig`` object itself (it pickles).

Flag names mirror Ray's: ``--num-workers``, ``--use-gpu``, ``--storage-path``, ``--max-failures``.
Unknown keys and ill-typed values are errors that name the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml

from ripple.data.storage import StorageOptions, check_url

EdgeType = tuple[str, str, str]


class ConfigError(ValueError):
    """An invalid config key or value; the message names the key, the value and what is allowed."""


@dataclass
class ModelConfig:
    hidden: int = 128
    heads: int = 4
    dropout: float = 0.1
    num_layers: int = 2
    #: next to attention, on every relation into users, a mean of pairwise messages ELU(A h_j + B h_i + C e_ji):
    #: non-linear in the follower *and* the followee (how receptive a follower is to this author's topics), where
    #: GATv2's message is W h_j whatever the destination
    sum_channel: bool = True
    #: with ``sum_channel``: the mean also enters scaled by the destination's true log in-degree (PNA's
    #: amplification scaler), so the model can add up what a mean normalises away: reach grows with how many
    #: receptive followers there are, not only with how receptive they are on average
    degree_scaler: bool = True

    def __post_init__(self):
        if self.hidden < 1 or self.heads < 1:
            raise ValueError(f"model.hidden and model.heads must be >= 1, got hidden={self.hidden}, heads={self.heads}")
        if not 0 <= self.dropout <= 1:  # NaN too
            raise ValueError(f"model.dropout must be a probability in [0, 1], got {self.dropout}")
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        if self.num_layers < 1:
            raise ValueError(f"model.num_layers must be >= 1 (got {self.num_layers})")
        if self.degree_scaler and not self.sum_channel:
            raise ValueError("model.degree_scaler scales the sum channel's mean; it needs model.sum_channel: true "
                             "(or set degree_scaler: false too)")


@dataclass
class SamplingConfig:
    #: per-hop fanouts applied to every relation; ``per_relation`` overrides by relation name
    fanouts: list[int] = field(default_factory=lambda: [15, 10])
    per_relation: dict[str, list[int]] = field(default_factory=dict)
    #: global seeds per optimizer step, split evenly over the workers
    batch_size: int = 256
    backend: str = "auto"
    #: batches sampled ahead of the model in a background thread; 0 = in the training thread; -1 (auto) = 2 when
    #: the step waits on something that frees the CPU (a GPU, remote shard calls), else 0: on a CPU worker
    #: sampling its own graph, a sampler thread only competes with the model for the same cores
    prefetch: int = -1
    #: sample on the worker's accelerator: the CSC graph, features and labels live in its memory and the native
    #: sampler runs there (whole-graph access; a partitioned graph is sampled by its shards)
    on_device: bool = False
    #: a training table at many cut times: which of a node's in-edges before a row's time are drawn: ``uniform``
    #: (any of them) or ``last`` (the most recent), PyG's ``temporal_strategy``
    temporal_strategy: str = "uniform"

    def __post_init__(self):
        if self.temporal_strategy not in ("uniform", "last"):
            raise ValueError(f"sampling.temporal_strategy must be 'uniform' or 'last', got {self.temporal_strategy!r}")
        if self.prefetch < -1:
            raise ValueError(f"sampling.prefetch must be >= 0 batches, or -1 for auto; got {self.prefetch}")
        if self.on_device and self.backend not in ("auto", "native"):
            raise ValueError(f"sampling.on_device samples with ripple's native sampler (the only one with CUDA "
                             f"kernels), but sampling.backend={self.backend!r}; set backend: native or auto")
        if not self.fanouts or any((f == 0 or f < -1) for f in self.fanouts):
            raise ValueError(f"sampling.fanouts must be a non-empty list of positive ints or -1, got {self.fanouts}")
        if self.batch_size < 1:
            raise ValueError(f"sampling.batch_size must be >= 1, got {self.batch_size}")

    def num_neighbors(self, edge_types: list[EdgeType]) -> dict[EdgeType, list[int]]:
        unknown = set(self.per_relation) - {et[1] for et in edge_types}
        if unknown:
            raise ValueError(f"sampling.per_relation names unknown relations {sorted(unknown)}; "
                             f"relations are {[et[1] for et in edge_types]}")
        return {et: list(self.per_relation.get(et[1], self.fanouts)) for et in edge_types}


METHODS = ("lp", "hash")


@dataclass
class PartitionConfig:
    #: parts (shards); in a run config 0 means "train on the dataset as it is"
    num_parts: int = 4
    method: str = "lp"
    #: label-propagation passes over the follows table (``lp`` only)
    passes: int = 4
    #: upper bound on (users in a part) / (users / P)
    balance: float = 1.05
    #: rows per streamed record batch, and edges per CSC bucket
    chunk_rows: int = 1 << 20
    seed: int = 0
    #: local folder for spill files (default: the system temp dir); removed when done
    scratch: str | None = None

    def __post_init__(self):
        if self.num_parts < 0:
            raise ValueError(f"partition.num_parts (--num-parts) must be >= 1, got {self.num_parts}")
        if self.method not in METHODS:
            raise ValueError(f"partition.method must be one of {METHODS}, got {self.method!r}")
        if self.passes < 0:
            raise ValueError(f"partition.passes must be >= 0, got {self.passes}")
        if not 1.0 <= self.balance < math.inf:  # NaN and inf too
            raise ValueError(f"partition.balance must be a finite number >= 1.0 (max part size / mean), got "
                             f"{self.balance}")
        if self.chunk_rows < 1:
            raise ValueError(f"partition.chunk_rows must be >= 1, got {self.chunk_rows}")


# ---------------------------------------------------------------------------------------------------------------
# quantities

_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": 10 ** 3, "M": 10 ** 6,
           "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``16Gi``, ``500m``, ``1.5``, ``2e9``, or a number) as a Decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 16Gi, 500Mi, 2, 500m)")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * Decimal(_SUFFIX[suffix])


# ---------------------------------------------------------------------------------------------------------------
# config section

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class K8sConfig:
    """How ``ripple k8s render`` lays the run out on Kubernetes (KubeRay). Memory and shm sizes are Kubernetes
    quantities (``16Gi``); CPUs are cores. Each pod's memory request equals its limit, and ``/dev/shm`` is a
    memory-backed emptyDir (it counts against that memory) holding Ray's object store."""

    image: str = "ripple:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    #: None: the namespace of the kubectl context that applies the manifests
    namespace: str | None = None
    #: the Ray inside the image (k8s/Dockerfile pins it)
    ray_version: str = "2.60.0"
    #: the head runs the driver (validation, evaluation, write-back) and no training worker
    head_cpu: float = 2.0
    head_memory: str = "8Gi"
    head_shm_size: str = "2Gi"
    head_object_store_memory: str = "1Gi"
    #: a worker pod's CPU request; None: exactly what its Ray Train worker(s) use (scaling.cpus_per_worker each)
    worker_cpu: float | None = None
    worker_memory: str = "8Gi"
    #: with scaling.use_gpu: GPUs per worker pod, one Ray Train worker each (pods = num_workers / gpus_per_worker)
    gpus_per_worker: int = 1
    shm_size: str = "2Gi"
    object_store_memory: str = "1Gi"
    #: tolerate the ``nvidia.com/gpu`` NoSchedule taint on GPU worker pods
    gpu_toleration: bool = True
    #: Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (kubectl create secret generic ripple-s3 ...)
    s3_secret: str = "ripple-s3"
    #: the RayCluster is deleted this long after the job ends (shutdownAfterJobFinishes is always on)
    ttl_seconds_after_finished: int = 600
    #: RayJob retries, each on a fresh cluster; training resumes from the run's checkpoints
    backoff_limit: int = 1
    #: the RayJob fails (and its cluster goes) after this long; None: no deadline
    active_deadline_seconds: int | None = 86400

    def __post_init__(self):
        def bad(key: str, value: Any, fix: str) -> Exception:
            return ConfigError(f"k8s.{key}: {value!r} is invalid: {fix}")

        if not self.image or any(c.isspace() for c in self.image):
            raise bad("image", self.image, "give an image reference, e.g. registry.example.com/ripple:0.1.0")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise bad("image_pull_policy", self.image_pull_policy, "use Always, IfNotPresent or Never")
        if self.namespace is not None and not (DNS1123_LABEL.match(self.namespace) and len(self.namespace) <= 63):
            raise bad("namespace", self.namespace, "use a DNS-1123 label (lowercase letters, digits, '-')")
        if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\S*", self.ray_version):
            raise bad("ray_version", self.ray_version, "use the image's Ray version, e.g. 2.60.0")
        if not (DNS1123_SUBDOMAIN.match(self.s3_secret) and len(self.s3_secret) <= 253):
            raise bad("s3_secret", self.s3_secret, "use a Secret name (lowercase letters, digits, '-', '.')")
        for key in ("head_cpu", "worker_cpu"):
            value = getattr(self, key)
            if value is not None and not 0 < value < math.inf:
                raise bad(key, value, "CPU cores must be > 0 and finite (e.g. 2 or 0.5)")
        if self.gpus_per_worker < 1:
            raise bad("gpus_per_worker", self.gpus_per_worker, "must be >= 1")
        if self.ttl_seconds_after_finished < 0:
            raise bad("ttl_seconds_after_finished", self.ttl_seconds_after_finished, "must be >= 0 seconds")
        if self.backoff_limit < 0:
            raise bad("backoff_limit", self.backoff_limit, "must be >= 0 retries")
        if self.active_deadline_seconds is not None and self.active_deadline_seconds <= 0:
            raise bad("active_deadline_seconds", self.active_deadline_seconds, "must be > 0 seconds, or null")
        for prefix, memory, shm, store in (("head_", "head_memory", "head_shm_size", "head_object_store_memory"),
                                           ("", "worker_memory", "shm_size", "object_store_memory")):
            sizes = {}
            for key in (memory, shm, store):
                try:
                    sizes[key] = parse_quantity(getattr(self, key))
                except ValueError as e:
                    raise bad(key, getattr(self, key), f"{e}") from None
                if sizes[key] <= 0:
                    raise bad(key, getattr(self, key), "must be > 0")
            if not sizes[store] < sizes[shm]:
                raise bad(store, getattr(self, store),
                          f"Ray's object store lives in /dev/shm: keep it below k8s.{shm} ({getattr(self, shm)})")
            if not sizes[shm] < sizes[memory]:
                raise bad(shm, getattr(self, shm),
                          f"/dev/shm is memory-backed and counts against the pod's memory: keep it below "
                          f"k8s.{memory} ({getattr(self, memory)})")

    def size_bytes(self, key: str) -> int:
        return int(parse_quantity(getattr(self, key)))




@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    #: stop when validation MSE has not improved for this many epochs (0 = never)
    patience: int = 8
    #: warm start: a new run begins from the best weights of this run (``<storage_path>/<run_name>`` URL), as a
    #: weekly retraining does from last week's model (``ripple train --init-from``)
    init_from: str | None = None
    #: one writer per run: a run's lease (``<run>/_lease.json``) whose heartbeat is older than this is free to
    #: take (a killed driver); a live holder renews it every quarter of it
    lease_ttl_s: float = 60.0

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if not self.lease_ttl_s > 0:
            raise ConfigError(f"train.lease_ttl_s must be > 0 seconds, got {self.lease_ttl_s}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"train.lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:  # NaN too; AdamW refuses it in the workers, after Ray started
            raise ConfigError(f"train.weight_decay must be >= 0 and finite, got {self.weight_decay}")


#: Ray's placement group strategies
PLACEMENT_STRATEGIES = ("SPREAD", "PACK", "STRICT_SPREAD", "STRICT_PACK")


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
    #: Ray Train's placement of the workers (``ScalingConfig.placement_strategy``). SPREAD puts them on as many
    #: nodes as it can: each worker loads its graph parts on its own node, so spreading the workers spreads the
    #: graph's memory, and each node's share falls with the number of nodes. PACK fills one node first (Ray's own
    #: default); the STRICT_ variants refuse to start rather than fall back.
    placement_strategy: str = "SPREAD"

    def __post_init__(self):
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ConfigError(f"scaling.placement_strategy must be one of {list(PLACEMENT_STRATEGIES)}, got "
                              f"{self.placement_strategy!r}")
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers (--num-workers) must be >= 1, got {self.num_workers}")
        if not 0 <= self.cpus_per_worker < math.inf:  # NaN too: Ray refuses it once the cluster is up
            raise ConfigError(f"scaling.cpus_per_worker must be >= 0 and finite, got {self.cpus_per_worker}")
        if self.max_failures < -1:
            raise ConfigError(f"scaling.max_failures must be >= -1 (-1 = unlimited), got {self.max_failures}")


@dataclass
class InferenceConfig:
    #: ``layerwise``: every layer once over every edge, all neighbours (exact, O(E) per layer);
    #: ``sampled``: mini-batches with the training fanouts (the cost grows with fanout^layers per user)
    mode: str = "layerwise"
    #: in-edges per destination chunk in layer-wise inference (bounds the per-edge tensors' memory); 64Ki is
    #: also the fastest measured: whole-graph inference at 1M users took 153 s, against 196 s at 128Ki and 262 s
    #: at 256Ki (per-edge temporaries that stay in cache)
    chunk_edges: int = 1 << 16
    #: how layer-wise inference keeps a layer's states between phases (in the object store, and on the wire to
    #: other parts): ``float16`` halves what the largest tenant of a node's memory takes, at about 1e-3 relative
    #: error in a state; ``float32`` reproduces whole-graph inference to float precision
    state_dtype: str = "float16"
    #: where the embeddings and scores are committed (any URL); default ``<run>/embeddings``. ``ripple embed RUN
    #: --data NEW --out OUT`` sets it to score another snapshot without touching the run's own
    out: str | None = None
    #: score the graph as it stood strictly before this time (epoch seconds): edges from then on dropped, activity
    #: features recomputed (``ripple.data.timeline.snapshot``); ``ripple embed RUN --data D --as-of T``
    as_of: int | None = None

    def __post_init__(self):
        if self.mode not in ("layerwise", "sampled"):
            raise ConfigError(f"inference.mode must be layerwise or sampled, got {self.mode!r}")
        if self.state_dtype not in ("float16", "float32"):
            raise ConfigError(f"inference.state_dtype must be float16 or float32, got {self.state_dtype!r}")
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
        # One sampled hop per layer: with fewer, the outer layer trains on neighbourhoods it never sees sampled but
        # layer-wise inference gives it every neighbour (scores shift); with more, the extra hop is sampled for
        # nothing.
        hops = {"sampling.fanouts": self.sampling.fanouts,
                **{f"sampling.per_relation.{k}": v for k, v in self.sampling.per_relation.items()}}
        for key, fanouts in hops.items():
            if len(fanouts) != self.model.num_layers:
                raise ConfigError(f"{key} has {len(fanouts)} hops ({fanouts}) but model.num_layers is "
                                  f"{self.model.num_layers}: give one fanout per layer")

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


#: how deep a free-form value (``storage.extra``) may nest lists and mappings, and how many values it may hold (YAML
#: aliases make a few lines name millions: a "billion laughs" document)
MAX_DEPTH, MAX_VALUES = 32, 10_000


def _too_big(value) -> str | None:
    """Why a free-form value is too deep or too large, or None (iterative, and stops at the bound: a hostile
    document must neither recurse nor expand here)."""
    todo, seen = [(value, 0)], 0
    while todo:
        v, d = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"holds more than {MAX_VALUES:,} values"
        if isinstance(v, (list, dict)):
            if d >= MAX_DEPTH:
                return f"nests more than {MAX_DEPTH} levels deep"
            todo += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return None


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
        keys = [k for k in value if not isinstance(k, str)]
        if keys:
            raise ConfigError(f"{where}: keys must be strings, got {keys[0]!r}")
        _, inner = typing.get_args(tp) or (Any, Any)
        why = _too_big(value) if inner is Any else None  # free-form (storage.extra): taken as it is, if small
        if why:
            raise ConfigError(f"{where}: {why}; give plain options")
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
    except RecursionError:
        raise ConfigError(f"config file {where!r} is not a config: its YAML is nested too deeply to read") from None
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

"""Kubernetes (KubeRay) for ripple: the ``k8s`` config section, RayJob rendering, a small kustomize, a CRD validator.

- ``K8sConfig``: the ``k8s:`` section of the config (image, pod sizes, /dev/shm and object store, the S3 Secret,
  RayJob cleanup). ``ripple train`` ignores it; ``ripple k8s render`` turns the whole config into manifests.
- ``render(cfg)`` / ``render_yaml(cfg)``: a ConfigMap holding the config (mounted on the head at
  ``/etc/ripple/config.yaml``) and a RayJob (``submissionMode: K8sJobMode``, ``jobId`` = ``ripple-<run>`` like
  ``ripple submit``) whose entrypoint is ``ripple train --config /etc/ripple/config.yaml``. One Ray Train worker
  per worker pod (one per GPU when ``gpus_per_worker`` > 1). Credentials are never rendered: the pods read
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from a Secret, and credential-like keys in ``storage.extra``
  are dropped from the shipped config.
- ``kustomize_build(path)``: the subset of kustomize that ``k8s/`` uses (resources, nested kustomizations,
  ``configMapGenerator`` without name hashes, ``patches`` (strategic merge and JSON 6902), ``labels`` /
  ``commonLabels``, ``namePrefix`` / ``nameSuffix``, ``images``), for machines without ``kubectl``. It follows
  kustomize's semantics for custom resources: a strategic-merge patch merges maps and replaces lists (kustomize
  has no merge keys for CRDs), and references to a renamed ConfigMap inside a custom resource are not rewritten.
- ``validate(doc)``: a manifest's errors against the CRD ``openAPIV3Schema`` (ray.io RayJob / RayCluster,
  kubeflow.org PyTorchJob, ...) under the API server's structural rules (unknown fields are errors, int-or-string,
  int32/int64 ranges, list-map keys unique), plus KubeRay's admission checks and basic pod-template checks;
  ConfigMap and Secret get structural checks. CEL rules (``x-kubernetes-validations``) are not evaluated.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import logging
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from ripple.config import DNS1035_LABEL, DNS1123_LABEL, DNS1123_SUBDOMAIN, ConfigError, parse_quantity
from ripple.data.storage import is_secret_name

log = logging.getLogger(__name__)

#: where the head pod sees the config, and the command the RayJob runs with it
CONFIG_DIR = "/etc/ripple"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
ENTRYPOINT = f"ripple train --config {CONFIG_PATH}"
#: the ``ray`` user of the rayproject/ray images (k8s/Dockerfile builds on them)
RAY_UID = 1000
LABELS = {"app.kubernetes.io/name": "ripple", "app.kubernetes.io/component": "training"}
#: KubeRay refuses longer RayJob names (its RayCluster appends 6 characters and must stay within 53)
MAX_RAYJOB_NAME = 47
MAX_RAYCLUSTER_NAME = 53
SUBMITTER_CPU, SUBMITTER_MEMORY = "500m", "1Gi"
WORKER_GROUP = "workers"
GPU_RESOURCE = "nvidia.com/gpu"


def _cpu(cores: float) -> str:
    """CPU cores as a quantity string: ``4`` or ``1500m``."""
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


# ---------------------------------------------------------------------------------------------------------------
# render

def _without_credentials(extra: dict, where: str, dropped: list[str]) -> dict:
    out = {}
    for k, v in extra.items():
        if is_secret_name(k):
            dropped.append(f"{where}.{k}")
        elif isinstance(v, dict):
            out[k] = _without_credentials(v, f"{where}.{k}", dropped)
        else:
            out[k] = v
    return out


def shipped_config(cfg):
    """The config as the cluster gets it: no Ray address (the job runs inside its own cluster, Ray Jobs sets
    RAY_ADDRESS) and no credentials (they come from the Secret)."""
    dropped: list[str] = []
    extra = _without_credentials(cfg.storage.extra, "storage.extra", dropped)
    if dropped:
        log.warning("not rendering %s: credentials reach the pods from Secret %s", ", ".join(dropped),
                    cfg.k8s.s3_secret)
    return dataclasses.replace(cfg, storage=dataclasses.replace(cfg.storage, extra=extra),
                               scaling=dataclasses.replace(cfg.scaling, address=None))


def rayjob_name(run_name: str) -> str:
    """``ripple-<run>`` as a DNS-1035 label (lowercase; other characters become '-')."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"ripple-{run_name}".lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > MAX_RAYJOB_NAME:
        raise ConfigError(f"run_name: {run_name!r} is too long for Kubernetes: the RayJob name {name!r} has "
                            f"{len(name)} characters, KubeRay allows {MAX_RAYJOB_NAME}; use a shorter run name")
    return name


def _remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _has_userinfo(url: str | None) -> bool:
    from urllib.parse import urlsplit

    return bool(url) and "://" in url and "@" in urlsplit(url).netloc


def _pod_security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": RAY_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}}


def _env(cfg) -> list[dict]:
    secret = cfg.k8s.s3_secret
    env = [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": var}}}
           for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if cfg.storage.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.storage.endpoint_url})
    return env


def _ray_container(cfg, name: str, cpu: str, memory: str, extra: dict[str, str], mounts: list[dict]) -> dict:
    k = cfg.k8s
    return {
        "name": name,
        "image": k.image,
        "imagePullPolicy": k.image_pull_policy,
        "resources": {"requests": {"cpu": cpu, "memory": memory, **extra}, "limits": {"memory": memory, **extra}},
        "env": _env(cfg),
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, *mounts],
        "securityContext": _container_security(),
    }


def _shm(size: str) -> dict:
    return {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def render(cfg) -> list[dict]:
    """The ConfigMap (the config, ``k8s`` section included) and the RayJob that trains ``cfg`` on KubeRay."""
    from ripple.launch.submit import submission_id

    cfg = shipped_config(cfg)
    k, scaling = cfg.k8s, cfg.scaling
    for key in ("data", "storage_path"):
        url = getattr(cfg, key)
        if not _remote(url):
            raise ConfigError(f"{key}: {url!r} is a local path, which pods on Kubernetes cannot see: use an "
                                "object-store URL (s3://bucket/prefix)")
    for key, url in (("data", cfg.data), ("storage_path", cfg.storage_path),
                     ("storage.endpoint_url", cfg.storage.endpoint_url)):
        if _has_userinfo(url):
            raise ConfigError(f"{key}: the URL carries credentials (user:secret@); they would be written into the "
                                f"manifests: remove them, the pods read Secret {k.s3_secret}")
    try:
        job_id = submission_id(cfg.run_name)
    except ValueError as e:
        raise ConfigError(f"run_name: {e}") from None
    name = rayjob_name(cfg.run_name)
    per_pod = k.gpus_per_worker if scaling.use_gpu else 1
    if scaling.num_workers % per_pod:
        raise ConfigError(f"scaling.num_workers: {scaling.num_workers} workers do not fill pods of "
                            f"k8s.gpus_per_worker = {per_pod} GPUs: use a multiple of {per_pod}")
    ray_cpus = scaling.cpus_per_worker * per_pod
    if not float(ray_cpus).is_integer():
        raise ConfigError(f"scaling.cpus_per_worker: {scaling.cpus_per_worker} gives a worker pod "
                            f"{ray_cpus} Ray CPUs; Ray nodes have whole CPUs: use a whole number")
    worker_cpu = ray_cpus if k.worker_cpu is None else k.worker_cpu
    if worker_cpu < ray_cpus:
        raise ConfigError(f"k8s.worker_cpu: {k.worker_cpu} is below the {ray_cpus:g} CPUs of the pod's Ray Train "
                            f"worker(s) (scaling.cpus_per_worker = {scaling.cpus_per_worker:g}): raise it, or "
                            "leave it null")
    pods = scaling.num_workers // per_pod
    meta = {"name": name, **({"namespace": k.namespace} if k.namespace else {}), "labels": dict(LABELS)}
    config_name = f"{name}-config"

    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {**meta, "name": config_name},
                 "data": {CONFIG_KEY: cfg.to_yaml()}}

    gpu = {GPU_RESOURCE: str(k.gpus_per_worker)} if scaling.use_gpu else {}
    head = _ray_container(cfg, "ray-head", _cpu(k.head_cpu), k.head_memory, {},
                          [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}])
    worker = _ray_container(cfg, "ray-worker", _cpu(worker_cpu), k.worker_memory, gpu, [])
    worker_spec: dict = {"securityContext": _pod_security()}
    if scaling.use_gpu and k.gpu_toleration:
        worker_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    worker_spec.update(containers=[worker], volumes=[_shm(k.shm_size)])
    worker_params = {"num-cpus": str(int(ray_cpus)),
                     "object-store-memory": str(k.size_bytes("object_store_memory"))}
    if scaling.use_gpu:
        worker_params["num-gpus"] = str(k.gpus_per_worker)

    spec: dict = {
        "submissionMode": "K8sJobMode",
        "jobId": job_id,
        "entrypoint": ENTRYPOINT,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k.ttl_seconds_after_finished,
        "backoffLimit": k.backoff_limit,
    }
    if k.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = k.active_deadline_seconds
    spec["submitterPodTemplate"] = {"spec": {
        "restartPolicy": "Never",
        "securityContext": _pod_security(),
        "containers": [{
            "name": "ray-job-submitter",
            "image": k.image,
            "imagePullPolicy": k.image_pull_policy,
            "resources": {"requests": {"cpu": SUBMITTER_CPU, "memory": SUBMITTER_MEMORY},
                          "limits": {"memory": SUBMITTER_MEMORY}},
            "securityContext": _container_security(),
        }],
    }}
    spec["rayClusterSpec"] = {
        "rayVersion": k.ray_version,
        "headGroupSpec": {
            # no Ray CPUs on the head: training workers and inference tasks go to the worker pods
            "rayStartParams": {"num-cpus": "0",
                               "object-store-memory": str(k.size_bytes("head_object_store_memory"))},
            "template": {"spec": {
                "securityContext": _pod_security(),
                "containers": [head],
                "volumes": [_shm(k.head_shm_size),
                            {"name": "config", "configMap": {"name": config_name,
                                                             "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}}],
            }},
        },
        "workerGroupSpecs": [{
            "groupName": WORKER_GROUP,
            "replicas": pods,
            "minReplicas": pods,
            "maxReplicas": pods,
            "rayStartParams": worker_params,
            "template": {"spec": worker_spec},
        }],
    }
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": spec}
    return copy.deepcopy([configmap, rayjob])  # no shared sub-objects between the documents


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config inside the ConfigMap) as readable ``|`` blocks."""


_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]
_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def render_yaml(cfg) -> str:
    """``render(cfg)`` as one multi-document YAML stream (``kubectl apply -f -``)."""
    return yaml.dump_all(render(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------------------------------------------
# kustomize (the subset k8s/ uses)

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions", "patches",
                       "labels", "commonLabels", "namePrefix", "nameSuffix", "images"}
#: built-in kinds whose commonLabels / includeSelectors / includeTemplates reach selectors and pod templates
_SELECTOR_KINDS = {"Service", "ReplicationController", "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet",
                   "Job", "CronJob", "PodDisruptionBudget", "NetworkPolicy"}


class KustomizeError(ValueError):
    """A kustomization this renderer cannot build (or kustomize would refuse); names the file and the field."""


def _load_yaml_docs(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _is_builtin(doc: dict) -> bool:
    group, _ = _group_version(str(doc.get("apiVersion", "")))
    return group == "" or "." not in group or group.endswith(".k8s.io")


def _rid(doc: dict) -> tuple:
    meta = doc.get("metadata") or {}
    return _group_version(str(doc.get("apiVersion", "")))[0], doc.get("kind"), meta.get("namespace"), meta.get("name")


def _kustomization_file(d: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (d / name).is_file():
            return d / name
    raise KustomizeError(f"{d}: no kustomization file ({', '.join(KUSTOMIZATION_FILES)})")


def kustomize_build(path: str | os.PathLike) -> list[dict]:
    """The resources ``kubectl kustomize PATH`` prints, for the kustomize features ``k8s/`` uses."""
    return _build(Path(path).resolve(), ())


def _inside(root: Path, rel: str, where: str) -> Path:
    p = (root / rel).resolve()
    if root != p and root not in p.parents:
        raise KustomizeError(f"{where}: {rel!r} is outside the kustomization root {root} (kustomize refuses it)")
    return p


def _build(root: Path, stack: tuple) -> list[dict]:
    if root in stack:
        raise KustomizeError(f"{root}: kustomization cycle through {' -> '.join(map(str, stack))}")
    kfile = _kustomization_file(root)
    k = _load_yaml_docs(kfile)
    k = k[0] if k else {}
    if not isinstance(k, dict):
        raise KustomizeError(f"{kfile}: expected a mapping")
    unknown = set(k) - _KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{kfile}: field(s) {sorted(unknown)} are not supported by this renderer "
                             f"(supported: {sorted(_KUSTOMIZATION_KEYS)}); use kubectl kustomize")
    resources: list[dict] = []

    def add(doc: dict, where: str) -> None:
        if not isinstance(doc, dict) or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            raise KustomizeError(f"{where}: a resource needs kind and metadata.name")
        if _is_builtin(doc) and doc["kind"] not in ("ConfigMap", "Secret"):
            raise KustomizeError(f"{where}: {doc['kind']} is a built-in kind; this renderer handles ConfigMap, "
                                 "Secret and custom resources only: use kubectl kustomize")
        if any(_rid(r) == _rid(doc) for r in resources):
            raise KustomizeError(f"{where}: {doc['kind']} {doc['metadata']['name']} is already in the build "
                                 "(kustomize refuses duplicate resources)")
        resources.append(doc)

    for entry in k.get("resources") or []:
        p = (root / entry).resolve()
        if p.is_dir():
            for doc in _build(p, (*stack, root)):
                add(doc, f"{kfile}: resources: {entry}")
        elif p.is_file():
            for doc in _load_yaml_docs(p):
                add(doc, str(p))
        else:
            raise KustomizeError(f"{kfile}: resources: {entry!r} is neither a file nor a folder")

    gen_options = k.get("generatorOptions") or {}
    for spec in k.get("configMapGenerator") or []:
        _generate_configmap(spec, root, gen_options, resources, add, f"{kfile}: configMapGenerator")

    for i, patch in enumerate(k.get("patches") or []):
        _apply_patch(patch, root, resources, f"{kfile}: patches[{i}]")

    prefix, suffix = k.get("namePrefix", ""), k.get("nameSuffix", "")
    if prefix or suffix:
        for doc in resources:
            doc["metadata"]["name"] = f"{prefix}{doc['metadata']['name']}{suffix}"

    label_sets = [(dict(k["commonLabels"]), True, False)] if k.get("commonLabels") else []
    for entry in k.get("labels") or []:
        label_sets.append((dict(entry.get("pairs") or {}), bool(entry.get("includeSelectors")),
                           bool(entry.get("includeTemplates"))))
    for pairs, selectors, templates in label_sets:
        for key, value in pairs.items():
            if not isinstance(value, str):
                raise KustomizeError(f"{kfile}: label {key}: {value!r} must be a string (quote it)")
        for doc in resources:
            if (selectors or templates) and _is_builtin(doc) and doc["kind"] in _SELECTOR_KINDS:
                raise KustomizeError(f"{kfile}: labels on selectors / templates of {doc['kind']} are not supported")
            doc["metadata"]["labels"] = {**(doc["metadata"].get("labels") or {}), **pairs}

    for image in k.get("images") or []:
        for doc in resources:
            _set_images(doc, image)
    return resources


def _generate_configmap(spec: dict, root: Path, gen_options: dict, resources: list[dict], add, where: str) -> None:
    unknown = set(spec) - {"name", "namespace", "behavior", "files", "literals", "options"}
    if unknown:
        raise KustomizeError(f"{where}: field(s) {sorted(unknown)} are not supported")
    name = spec.get("name")
    if not name:
        raise KustomizeError(f"{where}: a generator needs a name")
    options = {**gen_options, **(spec.get("options") or {})}
    if not options.get("disableNameSuffixHash"):
        raise KustomizeError(f"{where}: {name}: set options.disableNameSuffixHash: true (this renderer does not "
                             "compute kustomize's name hashes, and custom resources would not follow them)")
    data: dict[str, str] = {}
    for f in spec.get("files") or []:
        key, rel = f.split("=", 1) if "=" in f else (os.path.basename(f), f)
        data[key] = _inside(root, rel, f"{where}: {name}").read_text()
    for lit in spec.get("literals") or []:
        if "=" not in lit:
            raise KustomizeError(f"{where}: {name}: literal {lit!r} is not key=value")
        key, value = lit.split("=", 1)
        data[key] = value.strip('"') if value.startswith('"') and value.endswith('"') else value
    meta: dict = {"name": name}
    if spec.get("namespace"):
        meta["namespace"] = spec["namespace"]
    if options.get("labels"):
        meta["labels"] = dict(options["labels"])
    if options.get("annotations"):
        meta["annotations"] = dict(options["annotations"])
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
    behavior = spec.get("behavior", "create")
    if behavior == "create":
        add(doc, f"{where}: {name}")
        return
    if behavior not in ("merge", "replace"):
        raise KustomizeError(f"{where}: {name}: behavior {behavior!r} must be create, merge or replace")
    matches = [r for r in resources if _rid(r) == _rid(doc)]
    if not matches:
        raise KustomizeError(f"{where}: {name}: behavior {behavior} needs an existing ConfigMap {name}")
    old = matches[0]
    old_meta = old["metadata"]
    for field in ("labels", "annotations"):
        merged = {**(old_meta.get(field) or {}), **(meta.get(field) or {})}
        if merged:
            old_meta[field] = merged
    old["data"] = {**(old.get("data") or {}), **data} if behavior == "merge" else data


def _matches(doc: dict, target: dict) -> bool:
    group, version = _group_version(str(doc.get("apiVersion", "")))
    meta = doc.get("metadata") or {}
    checks = {"group": group, "version": version, "kind": doc.get("kind"), "name": meta.get("name"),
              "namespace": meta.get("namespace") or ""}
    for key, value in target.items():
        if key == "labelSelector":
            labels = meta.get("labels") or {}
            for term in str(value).split(","):
                k, _, v = term.partition("=")
                if labels.get(k.strip()) != v.strip():
                    return False
        elif key in checks:
            if not re.fullmatch(str(value), str(checks[key] or "")):
                return False
        else:
            raise KustomizeError(f"patch target field {key!r} is not supported")
    return True


def _apply_patch(entry: dict, root: Path, resources: list[dict], where: str) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"{where}: field(s) {sorted(unknown)} are not supported")
    if ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{where}: give exactly one of path and patch")
    text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    target = entry.get("target")
    if len(docs) == 1 and isinstance(docs[0], list):  # JSON 6902
        if not target:
            raise KustomizeError(f"{where}: a JSON 6902 patch needs a target")
        hits = [r for r in resources if _matches(r, target)]
        if not hits:
            raise KustomizeError(f"{where}: no resource matches target {target}")
        for doc in hits:
            try:
                _json6902(doc, docs[0])
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise KustomizeError(f"{where}: {e}") from None
        return
    for patch in docs:
        if not isinstance(patch, dict):
            raise KustomizeError(f"{where}: a strategic-merge patch must be a mapping")
        if target:
            hits = [r for r in resources if _matches(r, target)]
        else:
            pg, pv = _group_version(str(patch.get("apiVersion", "")))
            sel = {"kind": re.escape(str(patch.get("kind"))),
                   "name": re.escape(str((patch.get("metadata") or {}).get("name")))}
            hits = [r for r in resources if _matches(r, sel)
                    and (not patch.get("apiVersion") or _group_version(r["apiVersion"]) == (pg, pv))]
        if not hits:
            raise KustomizeError(f"{where}: no resource matches the patch's target")
        for doc in hits:
            if _is_builtin(doc) and doc["kind"] not in ("ConfigMap", "Secret"):
                raise KustomizeError(f"{where}: strategic merge into {doc['kind']} needs its merge keys: use "
                                     "kubectl kustomize")
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
            body["metadata"] = {k: v for k, v in (patch.get("metadata") or {}).items()
                                if k not in ("name", "namespace")}
            merged = _strategic_merge(doc, body, where)
            doc.clear()
            doc.update(merged)


def _strategic_merge(base: Any, patch: Any, where: str) -> Any:
    """kustomize's strategic merge for a kind without an OpenAPI schema: maps merge, null deletes, lists replace."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise KustomizeError(f"{where}: directive {key} is not supported")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _strategic_merge(out[key], value, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for t in tokens:
        node = node[int(t)] if isinstance(node, list) else node[t]
    return node


def _json6902(doc: dict, ops: list[dict]) -> None:
    def parent(path: str):
        tokens = _pointer(path)
        if not tokens:
            raise ValueError(f"path {path!r}: patching the whole document is not supported")
        return _resolve(doc, tokens[:-1]), tokens[-1]

    def get(path: str):
        try:
            return _resolve(doc, _pointer(path))
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"path {path!r} does not exist") from None

    def remove(path: str):
        container, key = parent(path)
        get(path)
        return container.pop(int(key)) if isinstance(container, list) else container.pop(key)

    def add(path: str, value: Any):
        container, key = parent(path)
        if isinstance(container, list):
            index = len(container) if key == "-" else int(key)
            if not 0 <= index <= len(container):
                raise ValueError(f"add {path!r}: index out of range")
            container.insert(index, value)
        elif isinstance(container, dict):
            container[key] = value
        else:
            raise ValueError(f"add {path!r}: parent is not a mapping or list")

    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if kind == "add":
            add(path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            get(path)
            container, key = parent(path)
            container[int(key) if isinstance(container, list) else key] = copy.deepcopy(op["value"])
        elif kind == "move":
            add(path, remove(op["from"]))
        elif kind == "copy":
            add(path, copy.deepcopy(get(op["from"])))
        elif kind == "test":
            if get(path) != op["value"]:
                raise ValueError(f"test {path!r} failed")
        else:
            raise ValueError(f"unknown JSON 6902 op {kind!r}")


def _split_image(image: str) -> tuple[str, str]:
    """``name`` and its ``:tag`` / ``@digest`` suffix."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash, colon = image.rfind("/"), image.rfind(":")
    return (image[:colon], image[colon:]) if colon > slash else (image, "")


def _set_images(node: Any, image: dict) -> None:
    """kustomize's images transformer: every ``image`` of ``containers`` / ``initContainers``, anywhere."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for c in value:
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    name, suffix = _split_image(c["image"])
                    if name != image.get("name"):
                        continue
                    if image.get("digest"):
                        suffix = "@" + image["digest"]
                    elif image.get("newTag") is not None:
                        suffix = f":{image['newTag']}"
                    c["image"] = f"{image.get('newName') or name}{suffix}"
        _set_images(value, image)


# ---------------------------------------------------------------------------------------------------------------
# validation

def default_crd_dir() -> Path:
    """``RIPPLE_K8S_CRDS``, else ``shared/k8s-crds`` next to the repository, else the copy vendored in
    ``k8s/crds`` (gzip-compressed, see its SOURCES.md), so a bare clone validates too."""
    env = os.environ.get("RIPPLE_K8S_CRDS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    shared = repo / ".." / "shared" / "k8s-crds"
    return shared if (shared / "ray.io_rayjobs.yaml").is_file() else repo / "k8s" / "crds"


def _structural(node: Any) -> Any:
    """A CRD openAPIV3Schema as JSON Schema with the API server's structural-schema semantics."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: ({name: _structural(sub) for name, sub in v.items()} if k == "properties" else _structural(v))
           for k, v in node.items()
           if not (k.startswith("x-kubernetes-") or k in ("nullable", "description", "format", "default"))}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("format") == "int32":
        out.update(minimum=-(2 ** 31), maximum=2 ** 31 - 1)
    elif node.get("format") == "int64":
        out.update(minimum=-(2 ** 63), maximum=2 ** 63 - 1)
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and \
            not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # the API server rejects (kubectl --validate=strict) unknown fields
    if node.get("x-kubernetes-list-type") == "map" and node.get("x-kubernetes-list-map-keys"):
        out["x-list-map-keys"] = list(node["x-kubernetes-list-map-keys"])
    elif node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(validator, keys, instance, schema):
    import jsonschema

    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry {({k: item.get(k) for k in keys})} (list-map "
                                                 f"keys {keys} must be unique)")
            seen.add(key)


@functools.lru_cache(maxsize=4)
def _crds(crd_dir: str) -> dict[tuple[str, str, str], Any]:
    """(group, version, kind) -> a jsonschema validator, for every CRD in ``crd_dir``."""
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-list-map-keys": _list_map_keys})
    out = {}
    for path in sorted([*Path(crd_dir).glob("*.yaml"), *Path(crd_dir).glob("*.yaml.gz")]):
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
            for doc in yaml.load_all(f, Loader=loader):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec.get("versions") or []:
                    schema = (v.get("schema") or {}).get("openAPIV3Schema")
                    if v.get("served", True) and schema:
                        out[(spec["group"], v["name"], spec["names"]["kind"])] = Validator(_structural(schema))
    return out


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _metadata_errors(doc: dict) -> list[str]:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required mapping"]
    errors = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: required")
    elif not (DNS1123_SUBDOMAIN.match(name) and len(name) <= 253):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and not (isinstance(ns, str) and DNS1123_LABEL.match(ns) and len(ns) <= 63):
        errors.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            errors.append(f"metadata.{field}: expected a mapping")
            continue
        for k, v in values.items():
            if not isinstance(v, str):
                errors.append(f"metadata.{field}.{k}: {v!r} must be a string")
            prefix, _, short = str(k).rpartition("/")
            if not (_LABEL_NAME.match(short) and len(short) <= 63) or (prefix and not DNS1123_SUBDOMAIN.match(prefix)):
                errors.append(f"metadata.{field}: key {k!r} is not a qualified name")
            if field == "labels" and isinstance(v, str) and not (_LABEL_VALUE.match(v) and len(v) <= 63):
                errors.append(f"metadata.labels.{k}: {v!r} is not a valid label value")
    return errors


def _core_errors(doc: dict) -> list[str]:
    kind = doc["kind"]
    allowed = {"apiVersion", "kind", "metadata", "data", "binaryData", "immutable"}
    if kind == "Secret":
        allowed |= {"stringData", "type"}
    errors = [f"{k}: unknown field (allowed: {sorted(allowed)})" for k in doc if k not in allowed]
    if doc.get("apiVersion") != "v1":
        errors.append(f"apiVersion: {doc.get('apiVersion')!r} must be v1 for {kind}")
    for field in ("data", "binaryData", "stringData"):
        values = doc.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            errors.append(f"{field}: expected a mapping")
            continue
        for k, v in values.items():
            if not (isinstance(k, str) and _DATA_KEY.match(k) and len(k) <= 253):
                errors.append(f"{field}: key {k!r} must consist of alphanumerics, '-', '_' or '.'")
            if not isinstance(v, str):
                errors.append(f"{field}.{k}: {v!r} must be a string")
    if "immutable" in doc and not isinstance(doc["immutable"], bool):
        errors.append("immutable: must be true/false")
    size = sum(len(str(v).encode()) for f in ("data", "binaryData", "stringData")
               for v in (doc.get(f) or {}).values() if isinstance(doc.get(f), dict))
    if size > 1 << 20:
        errors.append(f"{kind} holds {size} bytes; Kubernetes allows 1 MiB")
    return errors


def _quantity(value) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, InvalidOperation):
        return None


def _pod_errors(template: Any, where: str) -> list[str]:
    """Checks the API server makes when the pods are created (so: after KubeRay accepted the custom resource)."""
    spec = (template or {}).get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return [f"{where}.spec: required"]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [f"{where}.spec.containers: at least one container is required"]
    errors = []
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    names = [c.get("name") for c in containers if isinstance(c, dict)]
    if len(set(names)) != len(names):
        errors.append(f"{where}.spec.containers: duplicate container names {names}")
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            continue
        cw = f"{where}.spec.containers[{i}]"
        if not c.get("image"):
            errors.append(f"{cw}.image: required")
        for m in c.get("volumeMounts") or []:
            if isinstance(m, dict) and m.get("name") not in volumes:
                errors.append(f"{cw}.volumeMounts: {m.get('name')!r} is not a volume of the pod")
        env = [e.get("name") for e in c.get("env") or [] if isinstance(e, dict)]
        if len(set(env)) != len(env):
            errors.append(f"{cw}.env: duplicate names {env}")
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for r, value in {**requests, **limits}.items():
            if _quantity(value) is None:
                errors.append(f"{cw}.resources: {r} = {value!r} is not a quantity")
        for r, req in requests.items():
            if r in limits and None not in (_quantity(req), _quantity(limits[r])) and \
                    _quantity(req) > _quantity(limits[r]):
                errors.append(f"{cw}.resources: {r} request {req} exceeds its limit {limits[r]}")
            if "/" in r and not r.startswith(("kubernetes.io/", "requests.")) and r not in limits:
                errors.append(f"{cw}.resources: extended resource {r} needs a limit")
        for r, lim in limits.items():
            if "/" in r and r in requests and _quantity(requests[r]) != _quantity(lim):
                errors.append(f"{cw}.resources: extended resource {r}: request must equal limit")
    return errors


def _kuberay_errors(doc: dict) -> list[str]:
    """KubeRay's admission checks (ray-operator/controllers/ray/utils/validation.go) that the schema cannot say."""
    errors = []
    kind, spec = doc["kind"], doc.get("spec") or {}
    name = str((doc.get("metadata") or {}).get("name", ""))
    limit = {"RayJob": MAX_RAYJOB_NAME, "RayCluster": MAX_RAYCLUSTER_NAME}.get(kind)
    if limit and name and (len(name) > limit or not DNS1035_LABEL.match(name)):
        errors.append(f"metadata.name: {name!r}: a {kind} name must be a DNS-1035 label of at most {limit} "
                      "characters")
    cluster, where = (spec.get("rayClusterSpec"), "spec.rayClusterSpec") if kind == "RayJob" else (spec, "spec")
    if kind == "RayJob":
        if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
            errors.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes: true")
        if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
            errors.append("spec.activeDeadlineSeconds: must be > 0")
        if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
            errors.append("spec.backoffLimit: must be >= 0")
        if not cluster and not spec.get("clusterSelector"):
            errors.append("spec: one of rayClusterSpec or clusterSelector is required")
        if spec.get("submitterPodTemplate") is not None:
            errors += _pod_errors(spec["submitterPodTemplate"], "spec.submitterPodTemplate")
    if isinstance(cluster, dict):
        head = cluster.get("headGroupSpec") or {}
        errors += _pod_errors(head.get("template"), f"{where}.headGroupSpec.template")
        groups = cluster.get("workerGroupSpecs") or []
        names = [g.get("groupName") for g in groups if isinstance(g, dict)]
        if len(set(names)) != len(names):
            errors.append(f"{where}.workerGroupSpecs: duplicate groupName in {names}")
        for i, g in enumerate(groups):
            if not isinstance(g, dict):
                continue
            gw = f"{where}.workerGroupSpecs[{i}]"
            errors += _pod_errors(g.get("template"), f"{gw}.template")
            lo, hi, n = g.get("minReplicas", 0), g.get("maxReplicas", 2 ** 31 - 1), g.get("replicas")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                errors.append(f"{gw}: minReplicas {lo} > maxReplicas {hi}")
            if isinstance(n, int) and isinstance(lo, int) and isinstance(hi, int) and not lo <= n <= hi:
                errors.append(f"{gw}: replicas {n} outside [minReplicas {lo}, maxReplicas {hi}]")
    return errors


def validate(doc: Any, crd_dir: str | os.PathLike | None = None) -> list[str]:
    """Errors of one manifest (empty: valid). Custom resources are checked against the CRD schemas in ``crd_dir``
    (default ``default_crd_dir()``); ConfigMap and Secret structurally."""
    if not isinstance(doc, dict):
        return [f"a manifest must be a mapping, got {type(doc).__name__}"]
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return ["apiVersion and kind are required strings"]
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    label = f"{kind}/{meta.get('name', '?')}"
    errors = _metadata_errors(doc)
    if kind in ("ConfigMap", "Secret") and _is_builtin(doc):
        errors += _core_errors(doc)
        return [f"{label}: {e}" for e in errors]
    d = Path(crd_dir) if crd_dir is not None else default_crd_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"CRD folder {d} not found: pass crd_dir or set RIPPLE_K8S_CRDS")
    crds = _crds(str(d.resolve()))
    group, version = _group_version(api_version)
    validator = crds.get((group, version, kind))
    if validator is None:
        known = sorted(f"{g}/{v} {k}" for g, v, k in crds)
        return [f"{label}: no CRD schema for apiVersion {api_version!r} kind {kind!r} (known: {known})"]
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        if e.validator == "additionalProperties" and e.validator_value is False:
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            errors.append(f"{_path(e.absolute_path)}: unknown field(s) {extra}")
        else:
            errors.append(f"{_path(e.absolute_path)}: {e.message}")
    if kind in ("RayJob", "RayCluster") and group == "ray.io" and not errors:
        # KubeRay's admission rules read the object's structure: only meaningful once it is schema-valid
        errors += _kuberay_errors(doc)
    return [f"{label}: {e}" for e in errors]


def validate_all(docs: list, crd_dir: str | os.PathLike | None = None) -> list[str]:
    return [e for doc in docs for e in validate(doc, crd_dir)]

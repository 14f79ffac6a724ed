"""Kubernetes (KubeRay) manifests for a ripple config: what ``ripple k8s render`` prints.

``render(cfg)`` returns a ConfigMap holding the config (mounted on the head at ``/etc/ripple/config.yaml``), a
RayJob (``submissionMode: K8sJobMode``, ``jobId`` = ``ripple-<run>`` like ``ripple submit``) whose entrypoint is
``ripple train --config /etc/ripple/config.yaml``, and a NetworkPolicy for the run's head; ``render_yaml(cfg)`` is the
same as one YAML stream. One Ray Train worker per worker pod (one per GPU when ``k8s.gpus_per_worker`` > 1); pod sizes
come from the config's ``k8s`` section (``K8sConfig``, ripple/config.py). Credentials are never rendered: the pods read
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from a Secret, and credential-like keys in ``storage.extra`` are
dropped from the shipped config. The manifests under ``k8s/`` are this module's output (tests/deploy/k8s_golden.py
writes them).

The Ray job API is closed twice over. ``authOptions.mode: token`` turns on Ray's token authentication: the KubeRay
operator makes a Secret with a random ``auth_token`` (named after the RayCluster, owned by it) and sets
``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` on every Ray container and the submitter, so every request to the dashboard /
job API (8265), the client server (10001) and the GCS (6379) must carry the token. And ``head_network_policy`` lets
only the cluster's own pods, and the KubeRay operator (on the job API port), reach the head at all; people reach the
job API with ``kubectl port-forward``, which the policy does not apply to.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re

import yaml

from ripple.config import DNS1123_LABEL, ConfigError
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
SUBMITTER_CPU, SUBMITTER_MEMORY = "500m", "1Gi"
WORKER_GROUP = "workers"
GPU_RESOURCE = "nvidia.com/gpu"
#: pod-template label naming the run (the RayJob): KubeRay names a RayJob's RayCluster ``<rayjob>-<random>``, so the
#: NetworkPolicy finds the run's pods by this label rather than by ``ray.io/cluster``
INSTANCE_LABEL = "app.kubernetes.io/instance"
#: KubeRay's labels on the pods it makes (the head's ``ray.io/node-type`` is ``head``)
RAY_CLUSTER_LABEL, RAY_NODE_TYPE_LABEL = "ray.io/cluster", "ray.io/node-type"
#: Ray token authentication on every RayCluster ripple makes. No ``secretName``: the KubeRay operator generates the
#: token into a Secret named after the RayCluster (its last 50 characters), labelled ``ray.io/cluster: <RayCluster
#: name>``, key ``auth_token``, owned by the cluster, and hands it to every Ray container and the submitter.
AUTH_OPTIONS = {"mode": "token"}
#: the first Ray with token authentication; KubeRay refuses ``authOptions.mode: token`` with an older ``rayVersion``
MIN_TOKEN_AUTH_RAY = (2, 52, 0)
#: the head's ports: the dashboard / Ray Jobs API, the Ray client server, the GCS
DASHBOARD_PORT, CLIENT_PORT, GCS_PORT = 8265, 10001, 6379
#: where the KubeRay operator runs: ``default`` is where ``helm install kuberay-operator kuberay/kuberay-operator`` and
#: KubeRay's kustomize install put it; ``RIPPLE_KUBERAY_NAMESPACE`` (or ``render(..., operator_namespace=)``) changes it
KUBERAY_NAMESPACE = "default"
KUBERAY_NAMESPACE_ENV = "RIPPLE_KUBERAY_NAMESPACE"
#: the operator pod's label in both KubeRay installs (Helm: app.kubernetes.io/name kuberay-operator; kustomize: kuberay)
KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/component": "kuberay-operator"}


def _cpu(cores: float) -> str:
    """CPU cores as a quantity string: ``4`` or ``1500m``."""
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


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
    """An object-store URL: the pods cannot see this machine's disk (``file://`` included)."""
    return "://" in url and not url.startswith("file://")


def _has_userinfo(url: str | None) -> bool:
    """``scheme://user:secret@host``: credentials that would end up in the manifests."""
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
    # memory request = limit: the node reserves all the pod may use (object store in /dev/shm included), so a busy
    # node never evicts a training pod; no CPU limit: throttling would only slow the torch threads down
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


def kuberay_namespace(namespace: str | None = None) -> str:
    """The KubeRay operator's namespace: ``namespace``, else ``$RIPPLE_KUBERAY_NAMESPACE``, else ``default``."""
    ns = namespace or os.environ.get(KUBERAY_NAMESPACE_ENV) or KUBERAY_NAMESPACE
    if not (DNS1123_LABEL.match(ns) and len(ns) <= 63):
        where = "operator namespace" if namespace else KUBERAY_NAMESPACE_ENV
        raise ConfigError(f"{where}: {ns!r} is not a Kubernetes namespace (a DNS-1123 label): give the namespace the "
                          "KubeRay operator runs in, e.g. default or kuberay-system")
    return ns


def check_token_auth_ray(ray_version: str) -> None:
    """KubeRay refuses token authentication for a ``rayVersion`` below 2.52.0 (or one it cannot parse)."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+.].*)?", ray_version.strip())
    minimum = ".".join(map(str, MIN_TOKEN_AUTH_RAY))
    if m is None or tuple(int(g or 0) for g in m.groups()) < MIN_TOKEN_AUTH_RAY:
        raise ConfigError(f"k8s.ray_version: {ray_version!r} cannot run with token authentication, which ripple's "
                          f"manifests always turn on (KubeRay refuses it below Ray {minimum}): use an image with Ray "
                          f"{minimum} or newer and name its version here")


def head_network_policy(name: str, head: dict[str, str], members: dict[str, str], *, namespace: str | None = None,
                        labels: dict[str, str] | None = None, operator_namespace: str | None = None) -> dict:
    """A NetworkPolicy ``name`` for the head pods matching ``head``: ingress only from the pods matching ``members``
    (the same Ray cluster: its workers, its submitter; every port, as Ray also talks over the raylet's, the object
    manager's and the workers' ports, which Ray picks at random) and from the KubeRay operator (its namespace, its
    pod label) on the dashboard / job API port, which it polls for a RayJob's status. Anything else, from this
    namespace or another, reaches none of the head's ports (8265 job API, 10001 client, 6379 GCS). ``kubectl
    port-forward`` goes through the kubelet, not the pod network: the policy does not stop it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {}), **({"labels": dict(labels)}
                                                                                         if labels else {})},
        "spec": {
            "podSelector": {"matchLabels": dict(head)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": dict(members)}}]},
                {"from": [{"namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": kuberay_namespace(operator_namespace)}},
                           "podSelector": {"matchLabels": dict(KUBERAY_OPERATOR_LABELS)}}],
                 "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
            ],
        },
    }


def render(cfg, operator_namespace: str | None = None) -> list[dict]:
    """The ConfigMap (the config, ``k8s`` section included), the RayJob that trains ``cfg`` on KubeRay (token
    authentication on), and the NetworkPolicy that closes its head to all but its own pods and the KubeRay operator
    (in ``operator_namespace``: see ``kuberay_namespace()``)."""
    from ripple.deploy.submit import submission_id

    cfg = shipped_config(cfg)
    k, scaling = cfg.k8s, cfg.scaling
    check_token_auth_ray(k.ray_version)
    operator_namespace = kuberay_namespace(operator_namespace)
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
    # every pod of the run carries the run's name: the NetworkPolicy admits them (and only them) to the head. KubeRay's
    # own pod labels (app.kubernetes.io/name: kuberay, ray.io/*) stay as they are: its head Service selects by them
    pod_meta = {"labels": {INSTANCE_LABEL: name}}
    spec["submitterPodTemplate"] = {"metadata": copy.deepcopy(pod_meta), "spec": {
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
        # every request to the head's job API, client server and GCS must carry the cluster's token (KubeRay makes it)
        "authOptions": dict(AUTH_OPTIONS),
        "headGroupSpec": {
            # no Ray CPUs on the head: training workers and inference tasks go to the worker pods
            "rayStartParams": {"num-cpus": "0",
                               "object-store-memory": str(k.size_bytes("head_object_store_memory"))},
            "template": {"metadata": copy.deepcopy(pod_meta), "spec": {
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
            "template": {"metadata": copy.deepcopy(pod_meta), "spec": worker_spec},
        }],
    }
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": spec}
    policy = head_network_policy(f"{name}-head", {INSTANCE_LABEL: name, RAY_NODE_TYPE_LABEL: "head"},
                                 {INSTANCE_LABEL: name}, namespace=k.namespace, labels=LABELS,
                                 operator_namespace=operator_namespace)
    # one deep copy per document: a single copy of the list would keep the labels dict shared between them
    return [copy.deepcopy(configmap), copy.deepcopy(rayjob), copy.deepcopy(policy)]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config inside the ConfigMap) as readable ``|`` blocks, and no YAML anchors: a
    manifest people read and patch spells every value out."""


_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]
_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                             style="|" if "\n" in s else None))


def render_yaml(cfg, operator_namespace: str | None = None) -> str:
    """``render(cfg)`` as one multi-document YAML stream (``kubectl apply -f -``)."""
    return yaml.dump_all(render(cfg, operator_namespace), Dumper=_Dumper, sort_keys=False, default_flow_style=False)

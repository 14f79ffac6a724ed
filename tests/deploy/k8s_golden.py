"""The RayJobs and NetworkPolicies committed under k8s/ are what ``ripple k8s render`` makes of the config.yaml next to
them.

After changing a config.yaml there or the renderer (ripple/deploy/k8s.py), rewrite them from the repository root:

    python tests/deploy/k8s_golden.py

tests/deploy/test_k8s.py fails while a committed rayjob.yaml / networkpolicy.yaml differs from
``rayjob_yaml(<its folder>)`` / ``networkpolicy_yaml(<its folder>)``. The NetworkPolicy admits the KubeRay operator
from namespace ``default`` unless RIPPLE_KUBERAY_NAMESPACE names another (ripple/deploy/k8s.py, ``kuberay_namespace``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ripple.config import load_config
from ripple.deploy import k8s

K8S = Path(__file__).resolve().parents[2] / "k8s"
#: the kustomize folders that hold one training run: config.yaml + rayjob.yaml + networkpolicy.yaml + kustomization.yaml
RAYJOB_DIRS = ("base", "overlays/cpu-demo", "overlays/multi-gpu")
REGENERATE = "python tests/deploy/k8s_golden.py"

_HEADER = f"""\
# GENERATED, do not edit: the RayJob that `ripple k8s render --config config.yaml` makes of this folder's config.yaml.
# Change config.yaml, then rewrite this file with `{REGENERATE}` from the repository root
# (tests/deploy/test_k8s.py fails until you do).
# KubeRay (ray.io/v1) starts a RayCluster for the run (one head, one worker pod per Ray Train worker), a submitter Job
# runs `ray job submit` of the entrypoint with jobId ripple-<run name> (a retried submitter never starts a duplicate),
# and deletes the cluster ttlSecondsAfterFinished after the job ends. The head mounts the config from ConfigMap
# ripple-<run name>-config, which kustomization.yaml generates from config.yaml. authOptions.mode: token turns on Ray
# token authentication: KubeRay generates the token into a Secret labelled ray.io/cluster=<RayCluster name> (key
# auth_token) and gives it to every Ray container and the submitter; nothing reaches the job API without it.
# Fields: k8s/crds/ray.io_rayjobs.yaml.gz
"""

_POLICY_HEADER = f"""\
# GENERATED, do not edit: `ripple k8s render --config config.yaml`'s NetworkPolicy for this folder's config.yaml.
# Change config.yaml, then rewrite this file with `{REGENERATE}` from the repository root
# (tests/deploy/test_k8s.py fails until you do).
# Only the run's own pods (label app.kubernetes.io/instance: the RayJob's name; its head, workers and submitter) reach
# its Ray head, on any port; the KubeRay operator (pods labelled app.kubernetes.io/component: kuberay-operator in the
# namespaceSelector's namespace, `default` unless regenerated with RIPPLE_KUBERAY_NAMESPACE=<its namespace>) reaches the
# dashboard / job API port 8265 only. Nothing else reaches 8265 (job API), 10001 (Ray client) or 6379 (GCS): people use
# `kubectl port-forward`, which the policy does not apply to.
"""


def _rendered(d: str) -> dict[str, dict]:
    """kind -> document of ``render(k8s/<d>/config.yaml)``."""
    return {doc["kind"]: doc for doc in k8s.render(load_config(str(K8S / d / "config.yaml")))}


def rayjob_yaml(d: str) -> str:
    """The text k8s/<d>/rayjob.yaml must hold: a header comment and ``render(config.yaml)``'s RayJob."""
    return _HEADER + yaml.safe_dump(_rendered(d)["RayJob"], sort_keys=False, default_flow_style=False)


def networkpolicy_yaml(d: str) -> str:
    """The text k8s/<d>/networkpolicy.yaml must hold: a header comment and ``render(config.yaml)``'s NetworkPolicy."""
    return _POLICY_HEADER + yaml.safe_dump(_rendered(d)["NetworkPolicy"], sort_keys=False, default_flow_style=False)


#: file name -> its expected text, for each RayJob folder
GENERATED = {"rayjob.yaml": rayjob_yaml, "networkpolicy.yaml": networkpolicy_yaml}


def main() -> int:
    for d in RAYJOB_DIRS:
        for name, text_of in GENERATED.items():
            path = K8S / d / name
            text = text_of(d)
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The RayJobs committed under k8s/ are what ``ripple k8s render`` makes of the config.yaml next to them.

After changing a config.yaml there or the renderer (ripple/deploy/k8s.py), rewrite them from the repository root:

    python tests/deploy/k8s_golden.py

tests/deploy/test_k8s.py fails while a committed rayjob.yaml differs from ``rayjob_yaml(<its folder>)``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ripple.config import load_config
from ripple.deploy import k8s

K8S = Path(__file__).resolve().parents[2] / "k8s"
#: the kustomize folders that hold one training run: config.yaml + rayjob.yaml + kustomization.yaml
RAYJOB_DIRS = ("base", "overlays/cpu-demo", "overlays/multi-gpu")
REGENERATE = "python tests/deploy/k8s_golden.py"

_HEADER = f"""\
# GENERATED, do not edit: the RayJob that `ripple k8s render --config config.yaml` makes of this folder's config.yaml.
# Change config.yaml, then rewrite this file with `{REGENERATE}` from the repository root
# (tests/deploy/test_k8s.py fails until you do).
# KubeRay (ray.io/v1) starts a RayCluster for the run (one head, one worker pod per Ray Train worker), a submitter Job
# runs `ray job submit` of the entrypoint with jobId ripple-<run name> (a retried submitter never starts a duplicate),
# and deletes the cluster ttlSecondsAfterFinished after the job ends. The head mounts the config from ConfigMap
# ripple-<run name>-config, which kustomization.yaml generates from config.yaml. Fields: k8s/crds/ray.io_rayjobs.yaml.gz
"""


def rayjob_yaml(d: str) -> str:
    """The text k8s/<d>/rayjob.yaml must hold: a header comment and ``render(config.yaml)``'s RayJob."""
    _, rayjob = k8s.render(load_config(str(K8S / d / "config.yaml")))
    return _HEADER + yaml.safe_dump(rayjob, sort_keys=False, default_flow_style=False)


def main() -> int:
    for d in RAYJOB_DIRS:
        path = K8S / d / "rayjob.yaml"
        text = rayjob_yaml(d)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

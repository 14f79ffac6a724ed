"""Peak memory of a process tree, and where it sits: one sampler shared by the benchmarks that run Ray.

A sample is the PSS (proportional set size: a page shared by k processes counts 1/k to each, so the sum over a tree
counts it once) of every process under one root, read from ``/proc/<pid>/smaps_rollup`` and split by kind:
``anon`` (heaps: malloc arenas, tensors, Python objects), ``shmem`` (Ray's object store, which lives in /dev/shm
and is mapped by the raylet and by every process that reads an object zero-copy) and ``file`` (mapped libraries
such as libtorch, and page cache of mapped files). Each process is labelled by its role (``role``): the CLI,
Ray's daemons, and its workers by actor class, so a peak can be read as "which processes, which kind of memory".
"""
from __future__ import annotations

import re
import threading
import time

import psutil

KINDS = ("anon", "shmem", "file")
_FIELDS = {"Pss_Anon:": "anon", "Pss_Shmem:": "shmem", "Pss_File:": "file"}


def role(proc: psutil.Process) -> str:
    """A process's part in a ripple run: ``ray::GraphShard.sample`` -> ``GraphShard``, ``raylet``, ``cli`` ..."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "gone"
    head = cmd[0] if cmd else name
    if head.startswith("ray::"):
        actor = head[5:].split(".")[0].split(":")[0].strip()
        return "idle worker" if actor == "IDLE" else actor or "ray worker"
    joined = " ".join(cmd)
    if "ripple.cli" in joined:
        return "cli"
    for daemon in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if daemon in joined:
            return re.sub(r"\.py$", "", daemon)
    return name


def _rollup(pid: int) -> dict[str, int] | None:
    out = dict.fromkeys(KINDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                kind = _FIELDS.get(line.split(" ", 1)[0])
                if kind:
                    out[kind] = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return out


def sample(root_pid: int) -> dict[str, dict[str, int]]:
    """One sample of the tree under ``root_pid``: {role: {kind: bytes}} (roles with several processes summed)."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[str, dict[str, int]] = {}
    for p in procs:
        r = _rollup(p.pid)
        if r is None:
            continue
        acc = out.setdefault(role(p), dict.fromkeys(KINDS, 0))
        for k in KINDS:
            acc[k] += r[k]
        acc["processes"] = acc.get("processes", 0) + 1
    return out


def total(s: dict[str, dict[str, int]]) -> int:
    return sum(v[k] for v in s.values() for k in KINDS)


class TreeMemory:
    """Samples one or more process trees (``roots``: {name: root pid}) every ``interval`` seconds in a background
    thread. ``peak(a, b)``: per root, the largest total between two times; ``breakdown(a, b)``: per root, the
    {role: {kind: bytes}} of the sample at that peak."""

    def __init__(self, roots: dict[str, int], interval: float = 1.0):
        self.roots, self.interval = roots, interval
        self.samples: list[tuple[float, dict[str, dict]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), {n: sample(pid) for n, pid in self.roots.items()}))
            self._stop.wait(self.interval)

    def _at_peak(self, name: str, a: float, b: float) -> dict:
        inside = [s for t, s in self.samples if a <= t <= b] or [s for _, s in self.samples[-1:]]
        return max((s.get(name, {}) for s in inside), key=total, default={})

    def peak(self, a: float = 0, b: float = float("inf")) -> dict[str, int]:
        return {n: total(self._at_peak(n, a, b)) for n in self.roots}

    def breakdown(self, a: float = 0, b: float = float("inf")) -> dict[str, dict]:
        return {n: self._at_peak(n, a, b) for n in self.roots}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def describe(breakdown: dict[str, dict[str, int]], top: int = 8) -> str:
    """``breakdown`` as one line, largest roles first: ``GraphShard x4 5.1 GiB (shmem 4.0) ...``."""
    rows = sorted(breakdown.items(), key=lambda kv: -sum(kv[1][k] for k in KINDS))[:top]
    return ", ".join(f"{r} x{v.get('processes', 1)} {sum(v[k] for k in KINDS) / 2**30:.2f} GiB (" +
                     " ".join(f"{k} {v[k] / 2**30:.2f}" for k in KINDS) + ")" for r, v in rows)

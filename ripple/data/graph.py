"""One dataset's whole heterogeneous graph in one process, in dense indices (tests, demo, baselines, evaluation).

Graph layout: per relation ``(src, rel, dst)`` a CSC (``colptr`` over dst, ``row`` = src index), edges sorted by
destination, the layout PyG's neighbour samplers consume directly (no permutation, so ``e_id`` is a CSC position).
``ripple.graph.local.local_stores`` serves it as PyG stores, ``LayerwiseGraph.from_local`` to layer-wise
inference.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data import timeline as TL
from ripple.data.dataset import Dataset
from ripple.data.ids import dense_index

log = logging.getLogger(__name__)

EdgeType = tuple[str, str, str]


def build_csc(src: np.ndarray, dst: np.ndarray, num_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO -> CSC sorted by destination (stable, so equal destinations keep input order).

    Shapes:
        src, dst: [E] dense indices -> colptr [num_dst + 1] int64, row [E] int64, perm [E] (CSC position -> input)
    """
    perm = np.argsort(dst, kind="stable")
    colptr = np.zeros(num_dst + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=colptr[1:])
    return colptr, src[perm].astype(np.int64), perm


@dataclass
class LocalGraph:
    """The whole heterogeneous graph of one dataset in dense indices (one process; tests, demo, baselines)."""

    ids: dict[str, np.ndarray]                       # node type -> sorted global ids [N_t]
    x: dict[str, np.ndarray]                         # node type -> [N_t, F_t] float32
    csc: dict[EdgeType, tuple[np.ndarray, np.ndarray]]  # relation -> (colptr [N_dst+1], row [E])
    edge_attr: dict[EdgeType, np.ndarray] = field(default_factory=dict)  # relation -> [E, D] in CSC order
    #: relation -> [E] int64 time each edge came to exist, in CSC order (``ripple.data.timeline``); a relation
    #: without an entry has no times (valid at every time)
    edge_time: dict[EdgeType, np.ndarray] = field(default_factory=dict)
    #: an interaction graph's events (dense src [I], dense dst [I], time [I]); None for a social graph
    interactions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    label_index: np.ndarray | None = None            # [L] dense user index
    reach: np.ndarray | None = None                  # [L]
    replicate: np.ndarray | None = None              # [L]
    split: np.ndarray | None = None                  # [L] str
    #: [L] int64 the cut time of each label row (a training table at many cut times: the row's window starts
    #: there and its inputs are what existed before it), or None: one cut, the graph as it is
    label_time: np.ndarray | None = None

    def num_nodes(self, t: str) -> int:
        return len(self.ids[t])

    def split_index(self, name: str) -> np.ndarray:
        return self.label_index[self.split == name]

    @property
    def temporal(self) -> bool:
        """Label rows at more than one cut time: each row sees the graph as it stood at its own time."""
        return self.label_time is not None and len(np.unique(self.label_time)) > 1

    def follows_coo(self) -> tuple[np.ndarray, np.ndarray]:
        """(follower, followee) dense user indices of every follows edge."""
        colptr, row = self.csc[("user", "follows", "user")]
        return row, np.repeat(np.arange(len(colptr) - 1), np.diff(colptr))

    def edge_attr_tensors(self, device="cpu") -> dict[EdgeType, Tensor]:
        return {et: torch.from_numpy(a).to(device) for et, a in self.edge_attr.items()}


def load_local_graph(ds: Dataset) -> LocalGraph:
    """Read a dataset's model tables into a ``LocalGraph`` (never reads ``_truth``)."""
    nodes = {t: ds.read(t) for t in S.NODE_TYPES}
    ids, order = {}, {}
    for t, tab in nodes.items():
        raw = tab["id"].to_numpy()
        order[t] = np.argsort(raw, kind="stable")
        ids[t] = raw[order[t]]
    edges = {}
    for name, spec in S.EDGE_TABLES.items():
        tab = ds.read(name)
        s_t, d_t = spec.endpoints
        edges[name] = (dense_index(ids[s_t], tab["src"].to_numpy(), f"{name}.src"),
                       dense_index(ids[d_t], tab["dst"].to_numpy(), f"{name}.dst"), tab)
    n_user, n_content = len(ids["user"]), len(ids["content"])
    fol_src, fol_dst, fol_tab = edges["follows"]
    user_tab = nodes["user"].take(order["user"])
    x = {
        "user": FT.user_features(user_tab, np.bincount(fol_src, minlength=n_user),
                                 np.bincount(edges["shared"][0], minlength=n_user),
                                 np.bincount(edges["created"][0], minlength=n_user)),
        "content": FT.content_features(nodes["content"].take(order["content"]),
                                       np.bincount(edges["shared"][1], minlength=n_content)),
        "community": FT.community_features(nodes["community"].take(order["community"])),
    }
    csc, edge_attr, edge_time = {}, {}, {}
    content_time = nodes["content"]["timestamp"].to_numpy()[order["content"]]
    for rel in S.relations():
        s, d, tab = edges[rel.table]
        times = TL.edge_times(rel.table, {c: tab[c].to_numpy() for c in tab.column_names if c not in ("src", "dst")},
                              content_time, s, d)
        if rel.reverse:
            s, d = d, s
        src_t, _, dst_t = rel.edge_type
        colptr, row, perm = build_csc(s, d, len(ids[dst_t]))
        csc[rel.edge_type] = (colptr, row)
        if times is not None:
            edge_time[rel.edge_type] = times[perm]
        if rel.edge_type in FT.EDGE_DIMS:
            edge_attr[rel.edge_type] = FT.follows_edge_features(
                tab["interaction_freq"].to_numpy(), tab["since_date"].to_numpy())[perm]
    # a snapshot without labels (an imported history, a newer export scored by `ripple embed --data`) has no
    # labelled users: inference needs none
    labels = ds.read("labels") if ds.has("labels") else S.LABELS.arrow_schema().empty_table()
    interactions = None
    if ds.has("interactions"):
        it = ds.read("interactions", ["src", "dst", "timestamp"])
        interactions = (dense_index(ids["user"], it["src"].to_numpy(), "interactions.src"),
                        dense_index(ids["user"], it["dst"].to_numpy(), "interactions.dst"), it["timestamp"].to_numpy())
    g = LocalGraph(ids=ids, x=x, csc=csc, edge_attr=edge_attr, edge_time=edge_time, interactions=interactions)
    g.label_index = dense_index(ids["user"], labels["user_id"].to_numpy(), "labels.user_id")
    if "time" in labels.column_names and labels["time"].null_count < len(labels):
        g.label_time = labels["time"].to_numpy(zero_copy_only=False).astype(np.int64)
    g.reach = labels["cascade_reach"].to_numpy().astype(np.float32)
    g.replicate = labels["cascade_reach_replicate"].to_numpy().astype(np.float32)
    g.split = labels["split"].to_numpy(zero_copy_only=False).astype(str)
    log.info("graph: %s nodes, %s edges", {t: len(v) for t, v in ids.items()},
             {et[1]: len(r) for et, (_, r) in csc.items()})
    return g

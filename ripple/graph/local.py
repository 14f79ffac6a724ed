"""PyG ``FeatureStore`` / ``GraphStore`` implementations over one process's graph (``ripple.data.graph``).

Training and inference reach the graph only through these two interfaces (plus the edge-feature join in
``ripple.sampling.loader``), so the storage behind them can change — one process's tables here, shards on
Ray actors in ``ripple.graph.shards`` — without touching the training loop.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch_geometric.data import EdgeAttr, FeatureStore, GraphStore, TensorAttr
from torch_geometric.typing import EdgeTensorType

from ripple.data.graph import LocalGraph

log = logging.getLogger(__name__)

EdgeType = tuple[str, str, str]


class DictFeatureStore(FeatureStore):
    """Node features held as one dense tensor per (node type, attribute)."""

    def __init__(self):
        super().__init__()
        self._store: dict[tuple[str, str], Tensor] = {}

    @staticmethod
    def _key(attr: TensorAttr) -> tuple[str, str]:
        return (attr.group_name, attr.attr_name)

    def _put_tensor(self, tensor: Tensor, attr: TensorAttr) -> bool:
        if attr.index is not None:
            raise ValueError("DictFeatureStore stores whole tensors; put without an index")
        self._store[self._key(attr)] = tensor
        return True

    def _get_tensor(self, attr: TensorAttr) -> Tensor | None:
        t = self._store.get(self._key(attr))
        if t is None or attr.index is None:
            return t
        return t.index_select(0, attr.index)

    def _remove_tensor(self, attr: TensorAttr) -> bool:
        return self._store.pop(self._key(attr), None) is not None

    def _get_tensor_size(self, attr: TensorAttr) -> tuple[int, ...] | None:
        t = self._store.get(self._key(attr))
        return None if t is None else tuple(t.shape)

    def get_all_tensor_attrs(self) -> list[TensorAttr]:
        return [TensorAttr(group_name=g, attr_name=a) for g, a in self._store]


class CSCGraphStore(GraphStore):
    """Edge indices kept in CSC layout only (what the samplers need)."""

    def __init__(self):
        super().__init__()
        self._store: dict[EdgeType, tuple[EdgeAttr, tuple[Tensor, Tensor]]] = {}

    def _put_edge_index(self, edge_index: EdgeTensorType, edge_attr: EdgeAttr) -> bool:
        if edge_attr.layout.value != "csc":
            raise ValueError(f"CSCGraphStore takes CSC edge indices, got layout {edge_attr.layout.value!r} "
                             f"for {edge_attr.edge_type}")
        self._store[tuple(edge_attr.edge_type)] = (edge_attr, edge_index)
        return True

    def _get_edge_index(self, edge_attr: EdgeAttr) -> EdgeTensorType | None:
        hit = self._store.get(tuple(edge_attr.edge_type))
        return None if hit is None else hit[1]

    def _remove_edge_index(self, edge_attr: EdgeAttr) -> bool:
        return self._store.pop(tuple(edge_attr.edge_type), None) is not None

    def get_all_edge_attrs(self) -> list[EdgeAttr]:
        return [a for a, _ in self._store.values()]


def local_stores(graph: LocalGraph, device="cpu") -> tuple[DictFeatureStore, CSCGraphStore]:
    """PyG stores over a ``LocalGraph``'s arrays: zero-copy views on the CPU, copies on another ``device``."""
    fs, gs = DictFeatureStore(), CSCGraphStore()
    for t, x in graph.x.items():
        fs.put_tensor(torch.from_numpy(x).to(device), group_name=t, attr_name="x", index=None)
    for et, (colptr, row) in graph.csc.items():
        gs.put_edge_index((torch.from_numpy(row).to(device), torch.from_numpy(colptr).to(device)),
                          edge_type=et, layout="csc",
                          size=(graph.num_nodes(et[0]), graph.num_nodes(et[2])), is_sorted=True)
    return fs, gs

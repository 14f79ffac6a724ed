"""Layer-wise full-neighbourhood inference of ``InfluenceGNN``: every layer once over every edge.

Sampled mini-batch inference recomputes each user's 2-hop neighbourhood for every batch that touches it: hundreds
of edges per user, and the same hub projected thousands of times. Layer-wise inference computes layer l's state of
every node once, from layer l-1's states of its in-neighbours, so a layer costs one projection per node and one
attention term per edge: O(N h^2 + E h) per layer. It is also exact (all neighbours, no sampling noise) and
deterministic.

The graph is reached through a ``LayerwiseGraph``: the in-edges of the nodes this process computes ("own" nodes, a
contiguous global index range per type: the whole graph, or one partition), with global source indices, and a
``gather`` callback for previous-layer states of nodes owned elsewhere (other partitions). Nothing here knows
about Ray, ranks or devices; ``ripple.infer.embed`` runs one phase per layer over the partitions.

Per layer, ``layer_states`` reproduces ``InfluenceGNN.forward`` on the whole graph: the same GATv2 terms
(``lin_l``/``lin_r``, edge projection, LeakyReLU, attention, softmax over each destination's in-edges, self-loops
with the mean in-edge feature on same-type relations), the same residual, ELU and LayerNorm.
``tests/models/test_layerwise.py`` checks it against ``forward`` to float precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import softmax

from ripple.models.gnn import InfluenceGNN

EdgeType = tuple[str, str, str]
#: (node type, global indices [K]) -> previous-layer states [K, hidden] of nodes this process does not own
Gather = Callable[[str, Tensor], Tensor]


@dataclass
class LayerwiseGraph:
    """The in-edges of one process's own nodes.

    Shapes (n_t = own nodes of type t, E = in-edges of relation et into own nodes):
        node_offset[t]: global index of the first own node of type t; own nodes are
            ``node_offset[t] : node_offset[t] + n_t``
        x[t]: [n_t, F_t]; colptr[et]: [n_dst + 1]; row[et]: [E] global source indices (int32 or int64);
        edge_attr[et]: [E, D]
    """

    node_offset: dict[str, int]
    x: dict[str, Tensor]
    colptr: dict[EdgeType, Tensor]
    row: dict[EdgeType, Tensor]
    edge_attr: dict[EdgeType, Tensor]

    def num_own(self, t: str) -> int:
        return int(self.x[t].size(0))

    @classmethod
    def from_local(cls, graph) -> "LayerwiseGraph":
        """A ``ripple.data.graph.LocalGraph`` as one process that owns every node (offsets 0)."""
        return cls(node_offset={t: 0 for t in graph.x}, x={t: torch.from_numpy(v) for t, v in graph.x.items()},
                   colptr={et: torch.from_numpy(c) for et, (c, _) in graph.csc.items()},
                   row={et: torch.from_numpy(r) for et, (_, r) in graph.csc.items()},
                   edge_attr=graph.edge_attr_tensors())

    def to(self, device) -> "LayerwiseGraph":
        mv = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return LayerwiseGraph(dict(self.node_offset), mv(self.x), mv(self.colptr), mv(self.row), mv(self.edge_attr))


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


@torch.no_grad()
def input_states(model: InfluenceGNN, g: LayerwiseGraph, chunk_rows: int = 1 << 16) -> dict[str, Tensor]:
    """Layer 0: ``elu(input projection)`` of every own node. Shapes: -> {t: [n_t, hidden]}."""
    out = {}
    for t, x in g.x.items():
        parts = [F.elu(model.input({t: x[a:b]})[t]) for a, b in _chunks(len(x), chunk_rows)]
        out[t] = torch.cat(parts) if parts else x.new_zeros(0, model.cfg.hidden)
    return out


class _ChunkSources:
    """The sources of one chunk of edges: which start at own nodes, and the previous-layer states of the chunk's
    distinct other sources, gathered (``gather``) once for every projection the layer applies to them (GATv2's
    ``lin_l`` and the sum channel's), so a halo row crosses processes once per chunk, not once per projection.
    Memory follows the chunk, not the partition's whole halo.
    Shapes: rows [E_c] global indices; own [E_c] bool; halo states [n_halo, hidden]."""

    def __init__(self, g: LayerwiseGraph, src_t: str, rows: Tensor, gather: Gather):
        self.local = rows - g.node_offset[src_t]
        self.own = (self.local >= 0) & (self.local < g.num_own(src_t))
        self.all_own = bool(self.own.all())
        if not self.all_own:
            halo, self.inv = torch.unique(rows[~self.own], return_inverse=True)
            self.halo_states = gather(src_t, halo.long())

    def per_edge(self, projected_own: Tensor, project) -> Tensor:
        """One row per edge: own sources from ``projected_own``, the others' states projected here.
        Shapes: projected_own [n_own, K] -> [E_c, K]."""
        if self.all_own:
            return projected_own[self.local]
        out = projected_own.new_empty(len(self.local), projected_own.size(1))
        out[self.own] = projected_own[self.local[self.own]]
        out[~self.own] = project(self.halo_states)[self.inv]
        return out


def _gatv2(conv, x_j: Tensor, x_i: Tensor, dst: Tensor, edge_attr: Tensor | None, n_dst: int) -> Tensor:
    """One GATv2Conv's aggregation for ``n_dst`` destinations from projected states.

    Shapes: x_j [E, H*C] = lin_l(source state) per edge; x_i [n_dst, H*C] = lin_r(destination states); dst [E]
    local destination positions; edge_attr [E, D] -> [n_dst, H*C] (bias included)."""
    H, C = conv.heads, conv.out_channels
    x_j = x_j.view(-1, H, C)
    e = x_i.view(-1, H, C)[dst] + x_j
    if edge_attr is not None and conv.lin_edge is not None:
        e = e + conv.lin_edge(edge_attr).view(-1, H, C)
    e = F.leaky_relu(e, conv.negative_slope)
    alpha = softmax((e * conv.att).sum(-1), dst, num_nodes=n_dst)       # [E, H]
    del e
    out = torch.zeros(n_dst, H, C, dtype=x_j.dtype, device=x_j.device)
    out.index_add_(0, dst, x_j * alpha.unsqueeze(-1))
    out = out.view(n_dst, H * C)
    return out + conv.bias if conv.bias is not None else out


@torch.no_grad()
def layer_states(model: InfluenceGNN, g: LayerwiseGraph, layer: int, h_prev: dict[str, Tensor], gather: Gather,
                 chunk_edges: int = 1 << 18) -> dict[str, Tensor]:
    """States after conv layer ``layer`` (0-based) of own nodes of every type the layer updates (only users at
    the last layer), from ``h_prev`` (own nodes' states after the previous layer) and ``gather`` (others').

    Destinations are processed in chunks of about ``chunk_edges`` in-edges, and other parts' sources are
    gathered per chunk, so the per-edge tensors stay bounded whatever a hub's degree or the partition's halo.
    Per relation, only the own sources' projection ``lin_l(h_prev)`` is held whole.
    Shapes: h_prev {t: [n_t, hidden]} -> {t: [n_t, hidden]}.
    """
    hetero = model.convs[layer]
    norms = model.norms[layer]
    out: dict[str, Tensor] = {}
    for et in hetero.convs.keys():
        src_t, _, dst_t = et
        if dst_t not in norms:
            continue
        conv = hetero.convs[et]
        n_dst = g.num_own(dst_t)
        acc = out.setdefault(dst_t, h_prev[dst_t].new_zeros(n_dst, model.cfg.hidden))
        colptr, row = g.colptr[et], g.row[et]
        attr = g.edge_attr.get(et) if conv.lin_edge is not None else None
        xl_own = torch.cat([conv.lin_l(h_prev[src_t][a:b]) for a, b in _chunks(g.num_own(src_t), 1 << 16)]
                           or [h_prev[src_t].new_zeros(0, conv.heads * conv.out_channels)])
        deg = colptr[1:] - colptr[:-1]
        dev = xl_own.device
        sums = model.sums[layer][et[1]] if et[1] in model.sums[layer] else None
        if sums is not None:  # model.sum_channel: A h_j of own sources, projected once per relation as lin_l is
            a_own = torch.cat([sums.src(h_prev[src_t][lo:hi]) for lo, hi in _chunks(g.num_own(src_t), 1 << 16)]
                              or [h_prev[src_t].new_zeros(0, model.cfg.hidden)])
            col = model.degree_columns.get(et)
        a = 0
        while a < n_dst:  # destination chunks of about chunk_edges in-edges (at least one destination)
            b = max(a + 1, int(torch.searchsorted(colptr, colptr[a] + chunk_edges, right=True)) - 1)
            b = min(b, n_dst)
            e0, e1 = int(colptr[a]), int(colptr[b])
            sources = _ChunkSources(g, src_t, row[e0:e1], gather)
            x_j, own = sources.per_edge(xl_own, conv.lin_l), sources.own
            dst = torch.repeat_interleave(torch.arange(b - a, device=dev), deg[a:b])
            ea = attr[e0:e1] if attr is not None else None
            if conv.add_self_loops:  # PyG: drop existing self-loops, add one per destination (mean in-edge feature)
                keep = ~(own & (row[e0:e1] - g.node_offset[src_t] == dst + a))  # same type: own i is source i
                x_j, dst = x_j[keep], dst[keep]
                loop_attr = None
                if ea is not None:
                    ea = ea[keep]
                    loop_attr = torch.zeros(b - a, ea.size(1), dtype=ea.dtype, device=dev)
                    loop_attr.index_add_(0, dst, ea)
                    cnt = torch.bincount(dst, minlength=b - a).clamp(min=1).unsqueeze(1)
                    loop_attr = loop_attr / cnt
                    ea = torch.cat([ea, loop_attr])
                x_j = torch.cat([x_j, xl_own[a:b]])
                dst = torch.cat([dst, torch.arange(b - a, device=dev)])
            acc[a:b] += _gatv2(conv, x_j, conv.lin_r(h_prev[dst_t][a:b]), dst, ea, b - a)
            if sums is not None:
                a_j = sources.per_edge(a_own, sums.src)
                dst_all = torch.repeat_interleave(torch.arange(b - a, device=dev), deg[a:b])
                acc[a:b] += sums(a_j, sums.dst(h_prev[dst_t][a:b]), dst_all,
                                 g.edge_attr[et][e0:e1] if sums.edge is not None else None,
                                 g.x[dst_t][a:b, col] if col is not None else None)
            a = b
        del xl_own
    for t, o in out.items():  # in place: one [n_t, hidden] buffer per updated type
        F.elu(o, inplace=True).add_(h_prev[t])
        out[t] = norms[t](o)
    return out


@torch.no_grad()
def head(model: InfluenceGNN, user_states: list[Tensor]) -> Tensor:
    """The regression head over the user's state after every layer (jumping knowledge).
    Shapes: user_states L+1 x [n_user, hidden] -> [n_user] log1p reach."""
    return model.head(torch.cat(user_states, dim=-1)).squeeze(-1)


@torch.no_grad()
def infer_local(model: InfluenceGNN, g: LayerwiseGraph, chunk_edges: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """Every own user's (prediction [n_user], embedding [n_user, hidden]) when this process owns every source
    (the whole graph in one process)."""
    def gather(t: str, glob: Tensor) -> Tensor:
        raise ValueError(f"{t} nodes {glob[:5].tolist()} are outside this graph; a partition needs its "
                         "neighbours' states (ripple.infer.embed runs the partitioned case)")

    model.eval()
    h = input_states(model, g)
    users = [h["user"]]
    for layer in range(len(model.convs)):
        nxt = layer_states(model, g, layer, h, gather, chunk_edges)
        h = {**h, **nxt}
        users.append(h["user"])
    return head(model, users), h["user"]

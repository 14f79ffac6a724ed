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

Per layer, ``layer_chunks`` (``layer_states`` whole) reproduces ``InfluenceGNN.forward`` on the whole graph: the same GATv2 terms
(``lin_l``/``lin_r``, edge projection, LeakyReLU, attention, softmax over each destination's in-edges, self-loops
with the mean in-edge feature on same-type relations), the same residual, ELU and LayerNorm.
``tests/models/test_layerwise.py`` checks it against ``forward`` to float precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

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


class InputStates:
    """Layer 0's input, ``elu(input projection)`` of own nodes of one type, computed for the rows a chunk reads
    instead of held whole: the projection is cheap next to a layer, and a type's whole input states (26M posts x
    ``hidden`` floats at 170M edges) would be the largest thing a phase holds. Indexed like the state tensor it
    stands for. Shapes: x [n_t, F_t]; ``self[idx]`` -> [len(idx), hidden] float32."""

    def __init__(self, model: InfluenceGNN, t: str, x: Tensor):
        self.model, self.t, self.x = model, t, x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx) -> Tensor:
        return F.elu(self.model.input({self.t: self.x[idx]})[self.t])


#: previous-layer states of one type's own nodes: a tensor (float32, or float16 as stored between phases) or
#: ``InputStates``; ``_rows`` reads any of them as float32
States = Tensor | InputStates


def _rows(h: States, idx) -> Tensor:
    return h[idx].float()


@torch.no_grad()
def input_states(model: InfluenceGNN, g: LayerwiseGraph, chunk_rows: int = 1 << 16) -> dict[str, Tensor]:
    """Layer 0's input of every own node, whole: ``elu(input projection)``. Shapes: -> {t: [n_t, hidden]}."""
    out = {}
    for t, x in g.x.items():
        h = InputStates(model, t, x)
        parts = [h[a:b] for a, b in _chunks(len(x), chunk_rows)]
        out[t] = torch.cat(parts) if parts else x.new_zeros(0, model.cfg.hidden)
    return out


class _ChunkSources:
    """The sources of one chunk of edges, each distinct source's previous-layer state read once (own sources from
    ``h_src``, other parts' through ``gather``, which is called once per chunk) for every projection the layer
    applies to them (GATv2's ``lin_l`` and the sum channel's), so a halo row crosses processes once per chunk, not
    once per projection. Sources are projected per chunk, not per relation over every own node: memory follows
    the chunk, not the partition.
    Shapes: rows [E_c] global indices; own [E_c] bool; own/halo states [n_distinct, hidden] float32."""

    def __init__(self, g: LayerwiseGraph, src_t: str, rows: Tensor, h_src: States, gather: Gather):
        local = rows - g.node_offset[src_t]
        self.own = (local >= 0) & (local < g.num_own(src_t))
        self.all_own = bool(self.own.all())
        self.local = local
        own_ids, self.own_inv = torch.unique(local[self.own] if not self.all_own else local, return_inverse=True)
        self.own_states = _rows(h_src, own_ids.long())
        if not self.all_own:
            halo, self.inv = torch.unique(rows[~self.own], return_inverse=True)
            self.halo_states = gather(src_t, halo.long())

    def per_edge(self, project) -> Tensor:
        """One projected row per edge. Shapes: -> [E_c, K]."""
        own = project(self.own_states)[self.own_inv]
        if self.all_own:
            return own
        out = own.new_empty(len(self.local), own.size(1))
        out[self.own] = own
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


def _into(model: InfluenceGNN, layer: int) -> dict[str, list[EdgeType]]:
    """The node types conv layer ``layer`` updates (only users at the last layer), each with its in-relations."""
    into: dict[str, list[EdgeType]] = {}
    for et in model.convs[layer].convs.keys():
        if et[2] in model.norms[layer]:
            into.setdefault(et[2], []).append(et)
    return into


@torch.no_grad()
def layer_chunks(model: InfluenceGNN, g: LayerwiseGraph, layer: int, h_prev: dict[str, States], gather: Gather,
                 chunk_edges: int = 1 << 16) -> Iterator[tuple[str, int, int, Tensor]]:
    """States after conv layer ``layer`` (0-based) of own nodes of every type the layer updates, one chunk of
    destinations at a time, from ``h_prev`` (own nodes' states after the previous layer, any float dtype, or
    ``InputStates``) and ``gather`` (others').

    A type's destinations come in chunks of about ``chunk_edges`` in-edges over all the relations into it, and
    each chunk is finished (every relation's messages, ELU, residual, LayerNorm) before it is yielded: what this
    holds is bounded by the chunk, whatever a hub's degree, the partition's size or its halo. The caller keeps
    (``layer_states``) or writes (the last layer's embeddings) each chunk.
    Yields (type, a, b, states of own destinations ``a:b`` [b - a, hidden] float32).
    """
    norms = model.norms[layer]
    for dst_t, ets in _into(model, layer).items():
        n_dst = g.num_own(dst_t)
        # in-edges over every relation into dst_t, per destination: chunks hold whole in-neighbourhoods
        colptr = sum(g.colptr[et].long() for et in ets)
        a = 0
        while a < n_dst:
            b = max(a + 1, int(torch.searchsorted(colptr, colptr[a] + chunk_edges, right=True)) - 1)
            b = min(b, n_dst)
            h_dst = _rows(h_prev[dst_t], slice(a, b))
            acc = torch.zeros_like(h_dst)
            for et in ets:
                _relation_chunk(model, layer, et, g, h_prev, h_dst, gather, a, b, acc)
            yield dst_t, a, b, norms[dst_t](F.elu(acc).add_(h_dst))
            a = b


def layer_states(model: InfluenceGNN, g: LayerwiseGraph, layer: int, h_prev: dict[str, States], gather: Gather,
                 chunk_edges: int = 1 << 16, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """``layer_chunks`` kept whole: every updated type's states in ``dtype`` (float16 where states are stored
    between phases). Shapes: h_prev {t: [n_t, hidden]} -> {t: [n_t, hidden]} in ``dtype``."""
    out = {t: torch.empty(g.num_own(t), model.cfg.hidden, dtype=dtype, device=g.x[t].device)
           for t in _into(model, layer)}
    for t, a, b, h in layer_chunks(model, g, layer, h_prev, gather, chunk_edges):
        out[t][a:b] = h.to(dtype)
    return out


def _relation_chunk(model: InfluenceGNN, layer: int, et: EdgeType, g: LayerwiseGraph, h_prev: dict[str, States],
                    h_dst: Tensor, gather: Gather, a: int, b: int, acc: Tensor) -> None:
    """Adds relation ``et``'s messages into own destinations ``a:b`` to ``acc``: GATv2 attention and, with
    ``model.sum_channel``, the sum channel, as ``InfluenceGNN.forward`` computes them.
    Shapes: h_dst [b - a, hidden] float32 previous states of the destinations; acc [b - a, hidden]."""
    src_t = et[0]
    conv = model.convs[layer].convs[et]
    colptr, row = g.colptr[et], g.row[et]
    e0, e1 = int(colptr[a]), int(colptr[b])
    dev = h_dst.device
    deg = (colptr[a + 1:b + 1] - colptr[a:b]).long()
    dst = torch.repeat_interleave(torch.arange(b - a, device=dev), deg)
    sources = _ChunkSources(g, src_t, row[e0:e1], h_prev[src_t], gather)
    x_j, own = sources.per_edge(conv.lin_l), sources.own
    attr = g.edge_attr.get(et)
    ea = attr[e0:e1] if attr is not None and conv.lin_edge is not None else None
    gat_dst = dst
    if conv.add_self_loops:  # PyG: drop existing self-loops, add one per destination (mean in-edge feature)
        keep = ~(own & (sources.local == dst + a))  # same type: own i is source i
        x_j, gat_dst = x_j[keep], dst[keep]
        if ea is not None:
            ea = ea[keep]
            loop_attr = torch.zeros(b - a, ea.size(1), dtype=ea.dtype, device=dev)
            loop_attr.index_add_(0, gat_dst, ea)
            cnt = torch.bincount(gat_dst, minlength=b - a).clamp(min=1).unsqueeze(1)
            ea = torch.cat([ea, loop_attr / cnt])
        x_j = torch.cat([x_j, conv.lin_l(h_dst)])  # a self-loop's source is the destination itself
        gat_dst = torch.cat([gat_dst, torch.arange(b - a, device=dev)])
    acc += _gatv2(conv, x_j, conv.lin_r(h_dst), gat_dst, ea, b - a)
    del x_j
    sums = model.sums[layer][et[1]] if et[1] in model.sums[layer] else None
    if sums is not None:  # model.sum_channel: a mean of pairwise messages over every in-edge
        col = model.degree_columns.get(et)
        acc += sums(sources.per_edge(sums.src), sums.dst(h_dst), dst,
                    attr[e0:e1] if sums.edge is not None and attr is not None else None,
                    g.x[et[2]][a:b, col] if col is not None else None)


@torch.no_grad()
def head(model: InfluenceGNN, user_states: list[Tensor], chunk_rows: int = 1 << 16) -> Tensor:
    """The regression head over the user's state after every layer (jumping knowledge).
    Shapes: user_states L+1 x [n_user, hidden] -> [n_user] log1p reach."""
    n = len(user_states[0])
    out = torch.empty(n, device=next(model.head.parameters()).device)
    for a, b in _chunks(n, chunk_rows):  # row chunks: [n_user, (L + 1) * hidden] at once would be the phase's peak
        out[a:b] = model.head(torch.cat([u[a:b].float() for u in user_states], dim=-1)).squeeze(-1)
    return out


@torch.no_grad()
def infer_local(model: InfluenceGNN, g: LayerwiseGraph, chunk_edges: int = 1 << 16) -> tuple[Tensor, Tensor]:
    """Every own user's (prediction [n_user], embedding [n_user, hidden]) when this process owns every source
    (the whole graph in one process)."""
    def gather(t: str, glob: Tensor) -> Tensor:
        raise ValueError(f"{t} nodes {glob[:5].tolist()} are outside this graph; a partition needs its "
                         "neighbours' states (ripple.infer.embed runs the partitioned case)")

    model.eval()
    h: dict[str, States] = {t: InputStates(model, t, x) for t, x in g.x.items()}
    users = [h["user"]]
    for layer in range(len(model.convs)):
        nxt = layer_states(model, g, layer, h, gather, chunk_edges)
        h = {**h, **nxt}
        users.append(h["user"])
    return head(model, users), h["user"]

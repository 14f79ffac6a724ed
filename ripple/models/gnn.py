"""InfluenceGNN: the seed article's heterogeneous GATv2 model, made to work.

Fixes over the article's code:
  * reverse relations (content -> user, community -> user): without them content and community messages never
    reach users, the only nodes the model predicts on;
  * ``add_self_loops=False`` on bipartite relations (GATv2Conv cannot add self-loops between two node types);
  * both layers use every relation (the article's second layer dropped ``created``);
  * explicit input widths instead of lazy ``Linear(-1, ...)``, so DDP can wrap the model before the first batch;
  * a residual per layer, so a user with no sampled neighbours still keeps its own features;
  * the input dict is not mutated in place, and the target is log1p(cascade_reach).

The model knows nothing about ranks, devices or process groups.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATv2Conv, HeteroConv, HeteroDictLinear
from torch_geometric.utils import scatter, trim_to_layer

from ripple.config import ModelConfig
from ripple.data import features as FT
from ripple.data import schema as S

EdgeType = tuple[str, str, str]


class InfluenceGNN(torch.nn.Module):
    """Predicts log1p(cascade_reach) per user and exposes the user embedding it predicts from.

    Args:
        in_channels: input feature width per node type, e.g. ``{"user": 21, "content": 37, "community": 18}``.
        edge_types: relations to convolve over (forward and reverse), ``(src, rel, dst)``.
        edge_dims: edge feature width per relation that has edge features (``edge_attr``).

    Shapes:
        x_dict[t]: [N_t, in_channels[t]]
        edge_index_dict[r]: [2, E_r] (row 0 = source index into x_dict[r[0]], row 1 = target into x_dict[r[2]])
        edge_attr_dict[r]: [E_r, edge_dims[r]] for relations in ``edge_dims``
        num_sampled_nodes_dict[t]: [num_layers + 1] nodes of type t per hop (seeds first), or None
        num_sampled_edges_dict[r]: [num_layers] edges of relation r per hop, or None
        returns (prediction [N'_user], embedding [N'_user, hidden]): N'_user = N_user, or the users within
        ``num_layers - 1`` hops of the seeds when the hop counts are given (the seeds are always the first rows)
    """

    def __init__(self, in_channels: dict[str, int], edge_types: list[EdgeType], cfg: ModelConfig | None = None,
                 edge_dims: dict[EdgeType, int] | None = None, degree_columns: dict[EdgeType, int] | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.edge_types = [tuple(e) for e in edge_types]
        self.edge_dims = {tuple(k): v for k, v in (edge_dims or {}).items()}
        h = cfg.hidden
        self.input = HeteroDictLinear(dict(in_channels), h)
        self.convs = torch.nn.ModuleList()
        for layer in range(cfg.num_layers):
            # The last layer only feeds the user head: relations into content/community would be dead weight
            # (and unused parameters, which DDP rejects).
            last = layer == cfg.num_layers - 1
            rels = [et for et in self.edge_types if not last or et[2] == "user"]
            with warnings.catch_warnings():
                # HeteroConv warns that content/community states are not updated by the last layer: by design
                # here, as said above. Only that warning, only for this construction.
                warnings.filterwarnings("ignore", message="There exist node types .* do not get updated",
                                        category=UserWarning)
                self.convs.append(HeteroConv({
                    et: GATv2Conv(h, h // cfg.heads, heads=cfg.heads, add_self_loops=et[0] == et[2],
                                  edge_dim=self.edge_dims.get(et), dropout=0.0)
                    for et in rels}, aggr="sum"))
        # model.sum_channel: per layer and relation into users (see SumChannel); the degree scaler where the
        # destination's features say its true in-degree
        self.degree_columns = {tuple(k): v for k, v in (degree_columns or {}).items()} if cfg.degree_scaler else {}
        self.sums = torch.nn.ModuleList(
            torch.nn.ModuleDict({et[1]: SumChannel(h, self.edge_dims.get(et, 0), et in self.degree_columns)
                                 for et in self.edge_types if et[2] == "user"} if cfg.sum_channel else {})
            for _ in range(cfg.num_layers))
        self.norms = torch.nn.ModuleList(
            torch.nn.ModuleDict({t: torch.nn.LayerNorm(h) for t in (["user"] if layer == cfg.num_layers - 1
                                                                       else in_channels)})
            for layer in range(cfg.num_layers))
        # jumping knowledge: the head reads the user's state after every layer, so its own inputs are not washed
        # out by neighbourhood averages
        self.head = torch.nn.Sequential(torch.nn.Linear(h * (cfg.num_layers + 1), 64), torch.nn.ReLU(),
                                        torch.nn.Linear(64, 1))

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor],
                edge_attr_dict: dict[EdgeType, Tensor] | None = None,
                num_sampled_nodes_dict: dict[str, list[int]] | None = None,
                num_sampled_edges_dict: dict[EdgeType, list[int]] | None = None) -> tuple[Tensor, Tensor]:
        h = {t: F.elu(v) for t, v in self.input(dict(x_dict)).items()}
        states = [h["user"]]
        # A relation with no edges in this batch is an empty one, not a missing one: every parameter then takes
        # part in every step (a zero gradient), as data-parallel training needs.
        some = next(iter(x_dict.values()))
        edge_index_dict = {et: edge_index_dict.get(et, some.new_empty((2, 0), dtype=torch.long))
                           for et in self.edge_types if et[0] in h and et[2] in h}
        if edge_attr_dict is not None:
            edge_attr_dict = {**{et: some.new_empty((0, d)) for et, d in self.edge_dims.items()
                                 if et in edge_index_dict and edge_index_dict[et].size(1) == 0},
                              **{k: v for k, v in edge_attr_dict.items() if tuple(k) in self.edge_dims}}
        hops = self._hops(h, edge_index_dict, num_sampled_nodes_dict, num_sampled_edges_dict)
        for layer, (conv, sums, norms) in enumerate(zip(self.convs, self.sums, self.norms)):
            if hops is not None:
                # Layer l only has to update the nodes within num_layers - l - 1 hops of the seeds: the last
                # hop's nodes and the edges into them leave the batch (PyG's hierarchical sampling), and the
                # seeds' outputs are the same. At [15, 10] the last layer then passes over the first hop's
                # edges only, about a tenth of the batch.
                h, edge_index_dict, edge_attr_dict = trim_to_layer(layer, *hops, h, edge_index_dict, edge_attr_dict)
            out = conv(h, edge_index_dict, **({} if edge_attr_dict is None else {"edge_attr_dict": edge_attr_dict}))
            for et, ei in edge_index_dict.items():
                if et[1] in sums and et[2] in out:
                    ch = sums[et[1]]
                    col = self.degree_columns.get(et)
                    out[et[2]] = out[et[2]] + ch(
                        ch.src(h[et[0]])[ei[0]], ch.dst(h[et[2]]), ei[1],
                        (edge_attr_dict or {}).get(et),
                        x_dict[et[2]][:h[et[2]].size(0), col] if col is not None else None)
            h = {t: norms[t](F.elu(out[t]) + h[t]) if t in out and t in norms else h[t] for t in h}
            h = {t: F.dropout(v, self.cfg.dropout, self.training) for t, v in h.items()}
            states.append(h["user"])
        emb = h["user"]
        n = emb.size(0)  # the seeds and what the last layer kept: earlier layers' states are cut to it
        return self.head(torch.cat([s[:n] for s in states], dim=-1)).squeeze(-1), emb

    def _hops(self, h: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor],
              nodes: dict[str, list[int]] | None, edges: dict[EdgeType, list[int]] | None):
        """The batch's per-hop counts, checked against the model's depth and the batch's sizes, as
        ``trim_to_layer`` takes them; None when the batch has none (the whole batch goes through every layer)."""
        if nodes is None or edges is None:
            return None
        L = self.cfg.num_layers
        nodes = {t: [int(c) for c in nodes.get(t, [])] for t in h}
        edges = {et: [int(c) for c in edges.get(et, [0] * L)] for et in edge_index_dict}
        checks = [("num_sampled_nodes", t, c, L + 1, h[t].size(0), f"{t} nodes") for t, c in nodes.items()]
        checks += [("num_sampled_edges", et, c, L, edge_index_dict[et].size(1), "edges") for et, c in edges.items()]
        for name, key, counts, hops, size, what in checks:
            if len(counts) != hops or sum(counts) != size:
                raise ValueError(f"{name}[{key!r}] = {counts}: expected {hops} hop counts (model.num_layers = {L}) "
                                 f"summing to the batch's {size} {what}; sample with one fanout per layer, or pass "
                                 "no hop counts")
        return nodes, edges


class SumChannel(torch.nn.Module):
    """A relation's second message channel, next to its GATv2 attention: what a softmax-weighted mean cannot do.

    Every in-edge ``j -> i`` carries ``m_ji = ELU(A h_j + B h_i + C e_ji)``: non-linear in both ends and the edge,
    so it can weigh a follower by how well it matches this author, not only by the follower alone (GATv2's
    message is ``W h_j`` whatever ``i`` is). The channel returns ``W_o mean_j m_ji`` or, with a degree scaler,
    ``W_o [mean_j m_ji || mean_j m_ji * log1p(d_i) / DELTA]`` where ``d_i`` is the destination's *true* in-degree
    (read from its features, ``ripple.data.features.IN_DEGREE_COLUMNS``): PNA's amplification scaler, an estimate of
    a sum that a mean normalises away. A mean over a uniform sample of in-edges is unbiased and ``d_i`` is the
    graph's, so sampled training and layer-wise inference over every in-edge estimate the same quantity.

    ``A h`` is projected per node, then gathered per edge (as GATv2 does), so an edge costs O(hidden).
    """

    #: about log1p of a typical in-degree: keeps the scaled mean at the mean's scale
    DELTA = 3.0

    def __init__(self, hidden: int, edge_dim: int, degree: bool):
        super().__init__()
        self.src = torch.nn.Linear(hidden, hidden, bias=False)
        self.dst = torch.nn.Linear(hidden, hidden)
        self.edge = torch.nn.Linear(edge_dim, hidden, bias=False) if edge_dim else None
        self.degree = degree
        self.out = torch.nn.Linear(hidden * (2 if degree else 1), hidden)

    def forward(self, a_j: Tensor, b: Tensor, dst: Tensor, edge_attr: Tensor | None,
                log_degree: Tensor | None) -> Tensor:
        """Shapes: a_j [E, H] = ``src(h)`` of each edge's source; b [N_dst, H] = ``dst(h)`` of every destination;
        dst [E] destination positions; edge_attr [E, D] or None; log_degree [N_dst] log1p true in-degree, or None
        -> [N_dst, H] (the projected zero message where a destination has no in-edge)."""
        m = a_j + b[dst]
        if self.edge is not None and edge_attr is not None:  # like GATv2Conv: no edge term without edge features
            m = m + self.edge(edge_attr)
        mean = scatter(F.elu(m), dst, dim=0, dim_size=b.size(0), reduce="mean")
        if self.degree:
            mean = torch.cat([mean, mean * (log_degree / self.DELTA).unsqueeze(-1)], dim=-1)
        return self.out(mean)


def build_model(cfg) -> InfluenceGNN:
    """The model of a run's config (``RippleConfig``), sized for ripple's node and edge features."""
    return InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES), cfg.model, edge_dims=FT.EDGE_DIMS,
                        degree_columns=FT.IN_DEGREE_COLUMNS)

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

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import GATv2Conv, HeteroConv, HeteroDictLinear
from torch_geometric.utils import scatter

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
        returns (prediction [N_user], embedding [N_user, hidden])
    """

    def __init__(self, in_channels: dict[str, int], edge_types: list[EdgeType], cfg: ModelConfig | None = None,
                 edge_dims: dict[EdgeType, int] | None = None):
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
            self.convs.append(HeteroConv({
                et: GATv2Conv(h, h // cfg.heads, heads=cfg.heads, add_self_loops=et[0] == et[2],
                              edge_dim=self.edge_dims.get(et), dropout=0.0)
                for et in rels}, aggr="sum"))
        # model.edge_messages: per layer and relation with edge features, mean_j W [h_j || e_ji] (see ModelConfig)
        self.edge_msgs = torch.nn.ModuleList(
            torch.nn.ModuleDict({et[1]: torch.nn.Linear(h + d, h) for et, d in self.edge_dims.items()
                                 if et in self.edge_types and (layer < cfg.num_layers - 1 or et[2] == "user")}
                                if cfg.edge_messages else {})
            for layer in range(cfg.num_layers))
        self.norms = torch.nn.ModuleList(
            torch.nn.ModuleDict({t: torch.nn.LayerNorm(h) for t in (["user"] if layer == cfg.num_layers - 1
                                                                       else in_channels)})
            for layer in range(cfg.num_layers))
        # jumping knowledge: the head reads the user's state after every layer, so its own inputs are not washed
        # out by neighbourhood averages
        self.head = torch.nn.Sequential(torch.nn.Linear(h * (cfg.num_layers + 1), 64), torch.nn.ReLU(),
                                        torch.nn.Linear(64, 1))

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[EdgeType, Tensor],
                edge_attr_dict: dict[EdgeType, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        h = {t: F.elu(v) for t, v in self.input(dict(x_dict)).items()}
        states = [h["user"]]
        edge_index_dict = {k: v for k, v in edge_index_dict.items() if tuple(k) in self.edge_types}
        extra = {}
        if edge_attr_dict:
            extra["edge_attr_dict"] = {k: v for k, v in edge_attr_dict.items() if tuple(k) in self.edge_dims}
        for conv, msgs, norms in zip(self.convs, self.edge_msgs, self.norms):
            out = conv(h, edge_index_dict, **extra)
            for et in self.edge_dims:
                if et[1] in msgs and et in edge_index_dict and et[2] in out and et in extra["edge_attr_dict"]:
                    out[et[2]] = out[et[2]] + edge_message_mean(msgs[et[1]], h[et[0]], edge_index_dict[et],
                                                                edge_attr_dict[et], out[et[2]].size(0))
            h = {t: norms[t](F.elu(out[t]) + h[t]) if t in out and t in norms else h[t] for t in h}
            h = {t: F.dropout(v, self.cfg.dropout, self.training) for t, v in h.items()}
            states.append(h["user"])
        emb = h["user"]
        return self.head(torch.cat(states, dim=-1)).squeeze(-1), emb


def edge_message_mean(lin: torch.nn.Linear, h_src: Tensor, edge_index: Tensor, edge_attr: Tensor,
                      num_dst: int) -> Tensor:
    """Mean over each destination's in-edges of ``lin([h_src[j] || e_ji])``: the edge's features enter the
    message, not only the attention logit. A mean stays unbiased under uniform neighbour sampling, so training on
    sampled neighbourhoods and layer-wise inference over whole ones agree; how many followers a user has reaches
    the model through its own features. Shapes: h_src [N_src, H], edge_index [2, E], edge_attr [E, D] ->
    [num_dst, H] (zeros where a destination has no in-edge)."""
    msg = lin(torch.cat([h_src[edge_index[0]], edge_attr], dim=-1))
    return scatter(msg, edge_index[1], dim=0, dim_size=num_dst, reduce="mean")


def build_model(cfg) -> InfluenceGNN:
    """The model of a run's config (``RippleConfig``), sized for ripple's node and edge features."""
    return InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES), cfg.model, edge_dims=FT.EDGE_DIMS)

"""ripple.models.layerwise: layer-wise full-neighbourhood inference equals InfluenceGNN.forward on the whole graph."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ripple.config import RippleConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.models.gnn import build_model
from ripple.models.layerwise import LayerwiseGraph, head, infer_local, input_states, layer_states

sys.path.insert(0, str(Path(__file__).parents[1] / "sampling"))
from test_loader import tiny_graph  # noqa: E402


#: model variants whose layer-wise inference must equal forward (model.* overrides)
VARIANTS = {"attention": {"sum_channel": False, "degree_scaler": False}, "sum_channel": {"degree_scaler": False},
            "sum_channel+degree_scaler": {}}


def _model(num_layers=2, hidden=16, heads=4, seed=0, variant="attention"):
    cfg = RippleConfig()
    cfg.model.hidden, cfg.model.heads, cfg.model.num_layers = hidden, heads, num_layers
    for key, value in VARIANTS[variant].items():
        setattr(cfg.model, key, value)
    torch.manual_seed(seed)
    m = build_model(cfg)
    # non-trivial attention: PyG initialises att and biases small, which would hide a softmax bug
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def _whole_forward(model, g):
    x = {t: torch.from_numpy(v) for t, v in g.x.items()}
    ei = {}
    for et, (colptr, row) in g.csc.items():
        col = torch.repeat_interleave(torch.arange(len(colptr) - 1), torch.from_numpy(colptr).diff())
        ei[et] = torch.stack([torch.from_numpy(row), col])
    with torch.no_grad():
        return model(x, ei, g.edge_attr_tensors())


def _with_self_loop_and_isolated(g):
    """Add an existing self-loop on user 1 (PyG drops and re-adds it) and leave user 7 without in-follows."""
    colptr, row = g.csc[FOL]
    assert colptr[8] - colptr[7] == 0  # user 7 has no followers in the literal graph
    at = colptr[2]  # the end of user 1's in-edges: append (1 -> 1) there
    g.csc[FOL] = (colptr + (np.arange(len(colptr)) >= 2), np.insert(row, at, 1))
    g.edge_attr[FOL] = np.insert(g.edge_attr[FOL], at, [[5.0, 0.5]], axis=0)
    return g


FOL = ("user", "follows", "user")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_layerwise_equals_forward_on_the_whole_graph(num_layers, variant):
    g = _with_self_loop_and_isolated(tiny_graph())
    model = _model(num_layers=num_layers, variant=variant)
    pred, emb = _whole_forward(model, g)
    lp, le = infer_local(model, LayerwiseGraph.from_local(g), chunk_edges=3)  # tiny chunks: many destination chunks
    torch.testing.assert_close(le, emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp, pred, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chunk_size_does_not_change_the_result(variant):
    g = tiny_graph()
    model = _model(variant=variant)
    a = infer_local(model, LayerwiseGraph.from_local(g), chunk_edges=1)
    b = infer_local(model, LayerwiseGraph.from_local(g), chunk_edges=1 << 20)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def _split(lw: LayerwiseGraph, cut: dict[str, int], part: int) -> LayerwiseGraph:
    """Own nodes [0, cut) (part 0) or [cut, N) (part 1) of every type, with their in-edges."""
    out = LayerwiseGraph({}, {}, {}, {}, {})
    for t, x in lw.x.items():
        lo, hi = (0, cut[t]) if part == 0 else (cut[t], len(x))
        out.node_offset[t], out.x[t] = lo, x[lo:hi]
    for et, colptr in lw.colptr.items():
        lo, hi = (0, cut[et[2]]) if part == 0 else (cut[et[2]], len(colptr) - 1)
        e0, e1 = int(colptr[lo]), int(colptr[hi])
        out.colptr[et] = colptr[lo:hi + 1] - e0
        out.row[et] = lw.row[et][e0:e1]
        if et in lw.edge_attr:
            out.edge_attr[et] = lw.edge_attr[et][e0:e1]
    return out


#: states kept between layers as embed's phases keep them (inference.state_dtype), and how close the result is to
#: whole-graph float32 inference, as a fraction of the outputs' standard deviation: float32 to float precision;
#: float16 (about 5e-4 relative per state) within 0.2% (measured here: 0.02-0.05%)
STATE_DTYPES = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype", list(STATE_DTYPES), ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_partitions_exchanging_states_equal_the_whole_graph(variant, dtype):
    """The partitioned protocol: each part computes its own nodes, neighbours' states come from ``gather``; states
    between layers are kept as ``dtype``."""
    g = tiny_graph()
    model = _model(variant=variant)
    whole = infer_local(model, LayerwiseGraph.from_local(g))
    cut = {"user": 4, "content": 2, "community": 1}
    parts = [_split(LayerwiseGraph.from_local(g), cut, p) for p in (0, 1)]
    h = [input_states(model, p) for p in parts]
    users = [[hp["user"]] for hp in h]
    requested = []  # every gathered id list: a halo row crosses processes once per chunk, whatever reads it
    for layer in range(len(model.convs)):
        def gather(t, glob, prev=h):
            requested.append(glob)
            assert len(torch.unique(glob)) == len(glob)
            rows = torch.empty(len(glob), model.cfg.hidden)
            for q, part in enumerate(parts):
                local = glob - part.node_offset[t]
                mine = (local >= 0) & (local < part.num_own(t))
                rows[mine] = prev[q][t][local[mine]].float()
            return rows

        h = [{**h[q], **layer_states(model, parts[q], layer, h[q], gather, chunk_edges=4, dtype=dtype)}
             for q in (0, 1)]
        for q in (0, 1):
            users[q].append(h[q]["user"])
    pred = torch.cat([head(model, u) for u in users])
    emb = torch.cat([hq["user"] for hq in h]).float()
    tol = STATE_DTYPES[dtype]
    torch.testing.assert_close(pred, whole[0], atol=tol * float(whole[0].std()), rtol=0)
    torch.testing.assert_close(emb, whole[1], atol=tol * float(whole[1].std()), rtol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(pred, whole[0], atol=1e-5, rtol=1e-5)
    # one gather per (relation, destination chunk) with other parts' sources: the sum channel reads the rows
    # GATv2 gathered, rather than requesting them again
    chunks_with_halo = 0
    for q, part in enumerate(parts):
        for layer in range(len(model.convs)):
            ets = [et for et in model.convs[layer].convs.keys() if et[2] in model.norms[layer]]
            for dst_t in dict.fromkeys(et[2] for et in ets):
                into = [et for et in ets if et[2] == dst_t]
                colptr = sum(part.colptr[et].long() for et in into)  # chunks over every relation into dst_t
                a, n = 0, part.num_own(dst_t)
                while a < n:  # the chunking of layer_states (chunk_edges=4)
                    b = min(n, max(a + 1, int(torch.searchsorted(colptr, colptr[a] + 4, right=True)) - 1))
                    for et in into:
                        e0, e1 = int(part.colptr[et][a]), int(part.colptr[et][b])
                        local = part.row[et][e0:e1] - part.node_offset[et[0]]
                        chunks_with_halo += bool(((local < 0) | (local >= part.num_own(et[0]))).any())
                    a = b
    assert len(requested) == chunks_with_halo > 0


def test_a_part_without_its_neighbours_states_says_so():
    g = tiny_graph()
    part = _split(LayerwiseGraph.from_local(g), {"user": 4, "content": 2, "community": 1}, 0)
    with pytest.raises(ValueError, match="outside this graph"):
        infer_local(_model(), part)


def test_feature_widths_match_the_model():
    assert set(FT.NODE_DIMS) == set(S.NODE_TYPES)


def test_phase_memory_request_grows_with_the_part_and_is_capped_by_the_node():
    from ripple.infer.embed import phase_memory_bytes

    counts = {"user": [1000, 4000], "content": [3000, 100], "community": [10, 10]}
    small = phase_memory_bytes(counts, 0, hidden=64, chunk_edges=1024)
    big = phase_memory_bytes(counts, 1, hidden=64, chunk_edges=1024)
    # hidden x (2 bytes (float16 states) x own nodes + 48 bytes x chunk + a 64Ki-row group) + 300 MiB
    assert small == 64 * (2 * 4010 + 48 * 1024 + 8 * (1 << 16)) + (300 << 20)
    assert phase_memory_bytes(counts, 0, hidden=64, chunk_edges=1024, state_bytes=4) > small
    assert big > small
    assert phase_memory_bytes(counts, 1, hidden=64, chunk_edges=1024, node_memory=1e6) == 1_000_000

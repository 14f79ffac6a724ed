"""InfluenceGNN: shapes, relations per layer, self-loops, information flow from content to users."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch_geometric.nn import GATv2Conv

from ripple.config import ModelConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.models.gnn import InfluenceGNN

FOL = ("user", "follows", "user")
REV_SHARED = ("content", "rev_shared", "user")
REV_MEMBER = ("community", "rev_member_of", "user")
N = {"user": 7, "content": 4, "community": 2}


def model(hidden=16, heads=4, num_layers=2, seed=0) -> InfluenceGNN:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # the last layer has only user-destination relations; PyG warns that content/community are not updated
        warnings.simplefilter("ignore", UserWarning)
        m = InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES),
                         ModelConfig(hidden=hidden, heads=heads, dropout=0.1, num_layers=num_layers), FT.EDGE_DIMS)
    return m.eval()


def ei(pairs) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)


def inputs(seed=0):
    """Users 4 and 6 have no edges at all; user 5 has only outgoing edges.

    Content 2 is shared by user 3 only and user 3 follows user 0: content 2 reaches user 3 in one hop
    (rev_shared) and user 0 in two (then follows); it never reaches users 4 or 6.
    """
    g = torch.Generator().manual_seed(seed)
    x = {t: torch.randn(N[t], FT.NODE_DIMS[t], generator=g) for t in S.NODE_TYPES}
    shared = [(0, 0), (1, 0), (3, 2), (5, 3)]          # (user, content)
    created = [(2, 1)]
    member = [(0, 0), (1, 0), (2, 1), (3, 1)]
    e = {
        FOL: ei([(1, 0), (2, 0), (3, 0), (0, 1), (5, 1)]),
        ("user", "shared", "content"): ei(shared),
        REV_SHARED: ei([(c, u) for u, c in shared]),
        ("user", "created", "content"): ei(created),
        ("content", "rev_created", "user"): ei([(c, u) for u, c in created]),
        ("user", "member_of", "community"): ei(member),
        REV_MEMBER: ei([(k, u) for u, k in member]),
        ("content", "reply_to", "content"): ei([(1, 0), (2, 0)]),
    }
    ea = {FOL: torch.randn(e[FOL].shape[1], FT.EDGE_DIMS[FOL], generator=g)}
    return x, e, ea


def test_output_shapes_and_finite():
    m = model(hidden=16)
    x, e, ea = inputs()
    pred, emb = m(x, e, ea)
    assert pred.shape == (N["user"],)
    assert emb.shape == (N["user"], 16)
    assert torch.isfinite(pred).all() and torch.isfinite(emb).all()
    # without edge features too
    pred2, _ = m(x, e)
    assert pred2.shape == (N["user"],)


def test_relations_per_layer():
    m = model(num_layers=3)
    first = {tuple(k) for k in m.convs[0].convs.keys()}
    last = {tuple(k) for k in m.convs[-1].convs.keys()}
    assert first == set(S.EDGE_TYPES)
    assert REV_SHARED in first and REV_MEMBER in first and ("content", "rev_created", "user") in first
    assert {tuple(k) for k in m.convs[1].convs.keys()} == set(S.EDGE_TYPES)
    assert last == {et for et in S.EDGE_TYPES if et[2] == "user"}
    assert {REV_SHARED, REV_MEMBER, FOL} <= last
    assert set(m.norms[-1].keys()) == {"user"}


def test_self_loops_only_on_same_type_relations():
    m = model()
    for conv in m.convs:
        for key, c in conv.convs.items():
            et = tuple(key)
            assert isinstance(c, GATv2Conv)
            assert c.add_self_loops == (et[0] == et[2]), et
    same = {tuple(k) for k, c in m.convs[0].convs.items() if c.add_self_loops}
    assert same == {FOL, ("content", "reply_to", "content")}
    # edge features only where the relation has them
    assert m.convs[0].convs[FOL].edge_dim == FT.EDGE_DIMS[FOL]
    assert m.convs[0].convs[REV_SHARED].edge_dim is None


def test_content_gradient_reaches_users():
    m = model().train()
    x, e, ea = inputs()
    pred, _ = m(x, e, ea)
    pred.sum().backward()
    g = m.input.lins["content"].weight.grad
    assert g is not None and g.abs().sum() > 0
    assert m.input.lins["community"].weight.grad.abs().sum() > 0


def test_without_reverse_relations_content_never_reaches_users():
    """The control for the test above: drop rev_* and no gradient flows into the content projection."""
    m = model().train()
    x, e, ea = inputs()
    e = {k: v for k, v in e.items() if not k[1].startswith("rev_")}
    pred, _ = m(x, e, ea)
    pred.sum().backward()
    g = m.input.lins["content"].weight.grad
    assert g is None or g.abs().sum() == 0


def test_content_feature_changes_user_prediction():
    m = model()
    x, e, ea = inputs()
    with torch.no_grad():
        base, _ = m(x, e, ea)
        x2 = {t: v.clone() for t, v in x.items()}
        x2["content"][2] += 3.0                        # shared by user 3, who follows user 0
        moved, _ = m(x2, e, ea)
    diff = (moved - base).abs()
    assert diff[3] > 1e-4                             # one hop: content 2 -> user 3
    assert diff[0] > 1e-4                             # two hops: content 2 -> user 3 -> user 0
    assert diff[6] == 0 and diff[4] == 0              # no path from content 2


def test_isolated_user_gets_finite_prediction():
    m = model()
    x, e, ea = inputs()
    with torch.no_grad():
        pred, emb = m(x, e, ea)
        assert torch.isfinite(pred[6]) and torch.isfinite(emb[6]).all()
        # a batch where nothing has any edge at all
        empty = {et: torch.zeros(2, 0, dtype=torch.long) for et in S.EDGE_TYPES}
        pred0, _ = m(x, empty, {FOL: torch.zeros(0, 2)})
        assert torch.isfinite(pred0).all()
        # the isolated user depends only on its own features
        x2 = {t: v.clone() for t, v in x.items()}
        x2["user"][6] += 1.0
        assert not torch.equal(m(x2, e, ea)[0][6], pred[6])


def test_edge_attr_is_used_on_follows():
    m = model()
    x, e, ea = inputs()
    with torch.no_grad():
        base, _ = m(x, e, ea)
        moved, _ = m(x, e, {FOL: ea[FOL] + 5.0})
    assert not torch.allclose(base, moved)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden=130, heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        ModelConfig(num_layers=0)
    ModelConfig(hidden=132, heads=4)


def test_input_dicts_not_mutated():
    m = model().train()
    x, e, ea = inputs()
    x_copy = {t: v.clone() for t, v in x.items()}
    e_copy = {k: v.clone() for k, v in e.items()}
    ids = {t: id(v) for t, v in x.items()}
    pred, _ = m(x, e, ea)
    pred.sum().backward()
    assert list(x) == list(S.NODE_TYPES)
    assert {t: id(v) for t, v in x.items()} == ids
    for t in x:
        assert torch.equal(x[t], x_copy[t])
    assert set(e) == set(e_copy)
    for k in e:
        assert torch.equal(e[k], e_copy[k])


def test_ignores_unknown_relations_and_one_layer_model():
    m = model(num_layers=1)
    x, e, ea = inputs()
    e[("user", "unknown", "user")] = ei([(0, 1)])
    pred, emb = m(x, e, ea)
    assert pred.shape == (N["user"],) and emb.shape == (N["user"], 16)
    assert {tuple(k) for k in m.convs[0].convs.keys()} == {et for et in S.EDGE_TYPES if et[2] == "user"}


def sum_model(degree_scaler: bool, hidden=16) -> InfluenceGNN:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cfg = ModelConfig(hidden=hidden, heads=4, dropout=0.0, num_layers=1, sum_channel=True,
                          degree_scaler=degree_scaler)
        return InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES), cfg, FT.EDGE_DIMS, FT.IN_DEGREE_COLUMNS).eval()


def test_the_degree_scaler_tells_apart_what_a_mean_cannot():
    """Users 0 and 1 each have one sampled follower with the same state and the same tie; only their true follower
    counts differ. Attention and the sum channel's mean see identical neighbourhoods, so without the degree
    scaler the two users differ only through their own features; with it, through the scaled message too."""
    x, _, _ = inputs()
    x["user"][1] = x["user"][0]
    e = {FOL: ei([(2, 0), (3, 1)])}
    x["user"][3] = x["user"][2]
    ea = {FOL: torch.ones(2, FT.EDGE_DIMS[FOL])}
    col = FT.IN_DEGREE_COLUMNS[FOL]
    for scaler in (False, True):
        m = sum_model(scaler)
        with torch.no_grad():
            same = m(x, e, ea)[0]
            assert torch.allclose(same[0], same[1])
            ch = m.sums[0]["follows"]
            h = {t: torch.nn.functional.elu(v) for t, v in m.input(x).items()}
            msg = ch(ch.src(h["user"])[e[FOL][0]], ch.dst(h["user"]), e[FOL][1], ea[FOL], x["user"][:, col])
            x2 = {t: v.clone() for t, v in x.items()}
            x2["user"][1, col] += 2.0  # user 1 has many more followers than were sampled
            msg2 = ch(ch.src(h["user"])[e[FOL][0]], ch.dst(h["user"]), e[FOL][1], ea[FOL], x2["user"][:, col])
        assert torch.equal(msg[0], msg2[0])
        assert torch.equal(msg[1], msg2[1]) != scaler  # only the scaled channel reads the true degree


def test_sum_channel_messages_depend_on_both_ends():
    """m_ji = ELU(A h_j + B h_i + C e): the same follower sends a different message to different followees."""
    m = sum_model(False)
    x, _, _ = inputs()
    e = {FOL: ei([(2, 0), (2, 1)])}
    ea = {FOL: torch.ones(2, FT.EDGE_DIMS[FOL])}
    ch = m.sums[0]["follows"]
    with torch.no_grad():
        h = m.input(x)["user"]
        a = ch.src(h)[e[FOL][0]]
        base = ch(a, ch.dst(h), e[FOL][1], ea[FOL], None)
        # make the two followees' projections equal: the messages (and outputs) then agree
        hb = h.clone()
        hb[1] = hb[0]
        same = ch(a, ch.dst(hb), e[FOL][1], ea[FOL], None)
    assert not torch.allclose(base[0], base[1])
    torch.testing.assert_close(same[0], same[1])


def test_degree_scaler_needs_the_sum_channel():
    with pytest.raises(ValueError, match="degree_scaler.*sum_channel"):
        ModelConfig(sum_channel=False)


def test_in_degree_columns_hold_the_true_in_degree(tmp_path):
    """The degree scaler trusts IN_DEGREE_COLUMNS: on a generated graph, column c of each relation's destination
    features is log1p of its in-degree in that relation, as loaded for training."""
    import numpy as np

    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph

    generate(str(tmp_path / "g"), GeneratorConfig(users=300, seed=3, label_sims=2))
    g = load_local_graph(Dataset(str(tmp_path / "g")))
    for et, col in FT.IN_DEGREE_COLUMNS.items():
        colptr, _ = g.csc[et]
        np.testing.assert_allclose(np.expm1(g.x[et[2]][:, col].astype(np.float64)), np.diff(colptr), atol=1e-3,
                                   rtol=1e-5, err_msg=str(et))


def sampled_batches(num_layers: int, seed=0, batch_size=16, backend="native"):
    """Batches of a random 300-user graph from ``backend``'s sampler through NodeLoader, as the trainer gets
    them."""
    from ripple.config import SamplingConfig
    from ripple.data.graph import LocalGraph, build_csc
    from ripple.graph.local import local_stores
    from ripple.sampling.loader import make_loader, make_sampler
    from ripple.sampling.prefetch import to_device

    rng = np.random.default_rng(seed)
    n = {"user": 300, "content": 120, "community": 6}
    tables = {"follows": ("user", "user", 1500), "shared": ("user", "content", 500),
              "created": ("user", "content", 120), "member_of": ("user", "community", 300),
              "reply_to": ("content", "content", 60)}
    pairs = {tab: np.stack([rng.integers(0, n[a], m), rng.integers(0, n[b], m)], 1)
             for tab, (a, b, m) in tables.items()}
    csc, edge_attr = {}, {}
    for rel in S.relations():
        p = pairs[rel.table]
        src, dst = (p[:, 1], p[:, 0]) if rel.reverse else (p[:, 0], p[:, 1])
        colptr, row, perm = build_csc(src, dst, n[rel.edge_type[2]])
        csc[rel.edge_type] = (colptr, row)
        if rel.edge_type in FT.EDGE_DIMS:
            edge_attr[rel.edge_type] = rng.standard_normal((len(src), FT.EDGE_DIMS[rel.edge_type]),
                                                           dtype=np.float32)[perm]
    x = {t: rng.standard_normal((n[t], FT.NODE_DIMS[t])).astype(np.float32) for t in S.NODE_TYPES}
    g = LocalGraph(ids={t: np.arange(n[t], dtype=np.int64) for t in S.NODE_TYPES}, x=x, csc=csc,
                   edge_attr=edge_attr)
    fs, gs = local_stores(g)
    cfg = SamplingConfig(fanouts=[4, 3, 2][:num_layers], batch_size=batch_size, backend=backend)
    sampler = make_sampler(fs, gs, {t: g.num_nodes(t) for t in S.NODE_TYPES}, cfg, list(S.EDGE_TYPES),
                           backend=backend, seed=seed)
    loader = make_loader(fs, gs, sampler, torch.arange(0, 300, 7), batch_size, edge_attr=g.edge_attr_tensors())
    return [to_device(b, "cpu") for b in loader]


def full_model(num_layers: int) -> InfluenceGNN:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cfg = ModelConfig(hidden=16, heads=4, dropout=0.0, num_layers=num_layers)
        return InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES), cfg, FT.EDGE_DIMS, FT.IN_DEGREE_COLUMNS)


# (PyG's torch-sparse path returns no per-hop counts: its batches go whole through every layer, as before)
@pytest.mark.parametrize("backend", ["native", "pyg-lib"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.timeout(60)
def test_hop_trimmed_layers_give_the_seeds_the_same_outputs_and_gradients(num_layers, backend):
    """With the sampler's per-hop counts each layer updates only the nodes later layers read: the seeds'
    predictions, embeddings and every gradient are those of the whole batch through every layer."""
    from ripple.sampling import backends

    if backend not in backends.available():
        pytest.skip(f"{backend} is not installed")
    m = full_model(num_layers)
    batches = sampled_batches(num_layers, backend=backend)
    assert batches and all(b.num_sampled_nodes is not None and b.num_sampled_edges is not None for b in batches)
    trimmed_rows = 0
    for inp in batches:
        bs = inp.batch_size
        grads = []
        for args in (inp.model_args()[:3], inp.model_args()):
            m.zero_grad()
            pred, emb = m(*args)
            ((pred[:bs] - inp.y.nan_to_num(0.5)) ** 2).mean().backward()
            grads.append((pred[:bs].detach(), emb[:bs].detach(),
                          [p.grad.clone() if p.grad is not None else None for p in m.parameters()], len(pred)))
        (p_full, e_full, g_full, n_full), (p_trim, e_trim, g_trim, n_trim) = grads
        torch.testing.assert_close(p_trim, p_full, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(e_trim, e_full, atol=1e-5, rtol=1e-4)
        for a, b in zip(g_full, g_trim):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
        # the last layer updates the seeds and the first hop's users (they feed nothing later)
        assert n_trim == (n_full if num_layers == 1 else sum(inp.num_sampled_nodes["user"][:2]))
        trimmed_rows += n_full - n_trim
    assert num_layers == 1 or trimmed_rows > 0  # the last hop's users really left the batch


@pytest.mark.timeout(60)
def test_hop_counts_that_do_not_match_the_batch_or_the_depth_are_refused():
    m = full_model(2)
    inp = sampled_batches(2)[0]
    x, e, ea, nodes, edges = inp.model_args()
    with pytest.raises(ValueError, match=r"num_sampled_nodes\['user'\].*expected 3 hop counts"):
        m(x, e, ea, {**nodes, "user": nodes["user"][:2]}, edges)
    et = next(iter(edges))
    with pytest.raises(ValueError, match=r"num_sampled_edges.*summing to the batch's"):
        m(x, e, ea, nodes, {**edges, et: [edges[et][0] + 1, edges[et][1]]})

"""GPU tier (`pytest -m gpu`): sampling, a training step, DDP over NCCL and inference on CUDA.

Skipped with a reason where no CUDA device exists. ``RIPPLE_GPU_TIER_ON_CPU=1`` runs the same tests on the CPU
(gloo instead of NCCL), so the tier's own logic is checked on machines without a GPU before it runs on one.
"""
from __future__ import annotations

import os
import socket
from collections import Counter

import numpy as np
import pytest
import torch
from torch_geometric.sampler import NodeSamplerInput

from ripple.config import RippleConfig, SamplingConfig
from ripple.context import WorkerContext
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import load_local_graph
from ripple.graph.access import LocalAccess
from ripple.graph.local import local_stores
from ripple.models.gnn import build_model
from ripple.sampling.native import CSCGraph, NativeNeighborSampler
from ripple.sampling.prefetch import Prefetcher
from ripple.train.worker import predict

ON_CPU = os.environ.get("RIPPLE_GPU_TIER_ON_CPU") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU),
                       reason="no CUDA device here (torch.cuda.is_available() is False); run on a GPU machine, "
                              "or set RIPPLE_GPU_TIER_ON_CPU=1 to check the tier's logic on the CPU"),
]
FOL = ("user", "follows", "user")


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A generated graph of 3,000 users: hubs with in-degree far above the fanout, so the sampler's rejection
    path runs, and labelled users for the loss."""
    out = str(tmp_path_factory.mktemp("gpu") / "data")
    generate(out, GeneratorConfig(users=3000, avg_follows=20, seed=0, label_sims=20))
    return load_local_graph(Dataset(out))


def _cfg(**sampling) -> RippleConfig:
    cfg = RippleConfig()
    cfg.sampling = SamplingConfig(fanouts=[10, 5], batch_size=128, **sampling)
    cfg.model.hidden, cfg.model.heads = 32, 2
    return cfg


def test_device_report(device):
    """Names the device in the output (``-rA``), so a run's log says what it ran on."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        print(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    assert torch.zeros(1, device=device).device.type == device.type


@pytest.mark.parametrize("disjoint", [True, False])
def test_temporal_sampler_on_device_equals_the_cpu(graph, device, disjoint):
    """The temporal mode on the device: with every valid neighbour taken (no draws), the same nodes, edges and
    per-seed batches as on the CPU, for a batch of mixed seed times (disjoint) and of one time (shared)."""
    from ripple.sampling.temporal import TemporalNeighborSampler

    _, gs = local_stores(graph)
    cpu = CSCGraph.from_graph_store(gs, {t: graph.num_nodes(t) for t in S.NODE_TYPES})
    dev = CSCGraph({k: v.to(device) for k, v in cpu.colptr.items()}, {k: v.to(device) for k, v in cpu.row.items()},
                   dict(cpu.num_nodes), {k: v.to(device) for k, v in cpu.perm.items()})
    gen = torch.Generator().manual_seed(0)
    edge_time = {et: torch.randint(0, 100, (len(r),), generator=gen) for et, r in cpu.row.items()}
    seeds = torch.arange(0, 3000, 300)
    times = torch.randint(0, 100, (len(seeds),), generator=gen) if disjoint else torch.full((len(seeds),), 60)
    outs = []
    for g, d in ((cpu, torch.device("cpu")), (dev, device)):
        sampler = TemporalNeighborSampler(g, {et: [-1, -1] for et in g.colptr},
                                          edge_time={k: v.to(d) for k, v in edge_time.items()},
                                          temporal_strategy="last", disjoint=disjoint)
        outs.append(sampler.sample("user", seeds.to(d), times.to(d)))
    a, b = outs
    for t in a.node:
        assert torch.equal(a.node[t], b.node[t].cpu()), t
        if disjoint:
            assert torch.equal(a.batch[t], b.batch[t].cpu()), t
    for et in a.edge:
        assert torch.equal(a.edge[et], b.edge[et].cpu()) and torch.equal(a.row[et], b.row[et].cpu()), et
    assert b.node["user"].device.type == device.type


def test_native_sampler_on_device_keeps_neighborloader_semantics(graph, device):
    """On the device: seeds first, every sampled edge is an in-edge of its destination, per destination
    min(fanout, in-degree) distinct edges, and outputs live on the device."""
    fs, gs = local_stores(graph, device)
    nn = {et: [10, 5] for et in S.EDGE_TYPES}
    sampler = NativeNeighborSampler(CSCGraph.from_graph_store(gs, {t: graph.num_nodes(t) for t in S.NODE_TYPES},
                                                              device), nn, seed=1)
    colptr, row = (torch.from_numpy(a) for a in graph.csc[FOL])
    indeg = colptr[1:] - colptr[:-1]
    seeds = torch.argsort(indeg, descending=True)[:256]  # the hubs: degree >> fanout
    out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds, input_type="user"))
    assert out.node["user"].device.type == device.type
    users = out.node["user"].cpu()
    assert torch.equal(users[:len(seeds)], seeds)
    e = out.edge[FOL].cpu()
    src, dst = users[out.row[FOL].cpu()], users[out.col[FOL].cpu()]
    dst_of_edge = torch.searchsorted(colptr, e, right=True) - 1
    assert torch.equal(dst_of_edge, dst) and torch.equal(row[e], src)
    hop0 = out.num_sampled_edges[FOL][0]
    per_dst = Counter(dst[:hop0].tolist())
    for s in seeds.tolist():
        assert per_dst.get(s, 0) == min(10, int(indeg[s]))
    assert len(set(e[:hop0].tolist())) == hop0  # without replacement


def test_native_sampler_on_device_is_uniform(device):
    """A hub of in-degree 50 with fanout 10: each in-edge is drawn with probability 1/5 (2,000 draws)."""
    deg, fanout, trials = 50, 10, 2000
    colptr = torch.tensor([0, deg], device=device)
    row = torch.arange(1, deg + 1, device=device)
    g = CSCGraph({FOL: colptr}, {FOL: row}, {"user": deg + 1})
    sampler = NativeNeighborSampler(g, {FOL: [fanout]}, seed=0)
    counts = torch.zeros(deg)
    for _ in range(trials):
        out = sampler.sample("user", torch.tensor([0], device=device))
        counts[out.edge[FOL].cpu()] += 1
    freq = counts / trials
    assert abs(float(freq.mean()) - fanout / deg) < 1e-6
    # binomial sd of one edge's frequency: sqrt(0.2 * 0.8 / 2000) = 0.009; 5 sd
    assert float((freq - fanout / deg).abs().max()) < 0.045


@pytest.mark.parametrize("on_device", [False, True], ids=["host-sampling+prefetch", "device-sampling"])
def test_train_steps_on_device(graph, device, on_device):
    """Model and batches on the device; the loss falls over a few epochs' steps with either sampling path."""
    cfg = _cfg(on_device=on_device, prefetch=2)
    access = LocalAccess(graph, cfg, WorkerContext(device=torch.device(device)), rng_seed=0)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seeds = torch.from_numpy(graph.split_index("train"))
    losses = []
    for epoch in range(3):
        total, n_all = 0.0, 0
        for inp in Prefetcher(access.loader(seeds, cfg.sampling.batch_size), device, cfg.sampling.prefetch):
            assert all(t.device.type == device.type for t in inp.x.values())
            pred, _ = model(inp.x, inp.edge_index, inp.edge_attr)
            loss = torch.nn.functional.mse_loss(pred[:inp.batch_size], inp.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * inp.batch_size
            n_all += inp.batch_size
        losses.append(total / n_all)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert all(p.device.type == device.type for p in model.parameters())


def test_inference_on_device_matches_cpu(graph, device):
    """The same weights and the same sampled batches (host sampling, same seed) give the same predictions and
    embeddings on the device as on the CPU."""
    cfg = _cfg(on_device=False, prefetch=2, backend="native")  # seeded sampling: the same batches twice
    torch.manual_seed(0)
    model = build_model(cfg)
    users = torch.arange(600)
    on_cpu = LocalAccess(graph, cfg, WorkerContext(device=torch.device("cpu")), rng_seed=5)
    on_dev = LocalAccess(graph, cfg, WorkerContext(device=torch.device(device)), rng_seed=5)
    p_cpu, e_cpu, _ = predict(model, on_cpu, users, 256, "cpu", prefetch=0)
    p_dev, e_dev, _ = predict(model.to(device), on_dev, users, 256, device)
    assert p_dev.device.type == "cpu" and p_dev.shape == (600,) and e_dev.shape == (600, 32)
    torch.testing.assert_close(p_dev, p_cpu, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(e_dev, e_cpu, atol=2e-4, rtol=1e-3)


def test_layerwise_inference_on_device_matches_cpu(graph, device):
    """Layer-wise full-neighbourhood inference (the default write-back path) on the device equals the CPU."""
    from ripple.models.layerwise import LayerwiseGraph, infer_local

    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    p_cpu, e_cpu = infer_local(model, LayerwiseGraph.from_local(graph), chunk_edges=4096)
    p_dev, e_dev = infer_local(model.to(device), LayerwiseGraph.from_local(graph).to(device), chunk_edges=4096)
    assert p_dev.device.type == device.type
    torch.testing.assert_close(p_dev.cpu(), p_cpu, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(e_dev.cpu(), e_cpu, atol=2e-4, rtol=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_step_over_nccl(graph, device):
    """The training loop's DDP wrapping (find_unused_parameters, as ``prepare_model`` does) over NCCL: one
    process group of one rank, one step, gradients synchronised without error."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        cfg = _cfg(on_device=True)
        access = LocalAccess(graph, cfg, WorkerContext(device=torch.device(device)), rng_seed=0)
        model = build_model(cfg).to(device)
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
        inp = next(iter(Prefetcher(access.loader(torch.from_numpy(graph.split_index("train")), 64), device)))
        pred, _ = ddp(inp.x, inp.edge_index, inp.edge_attr)
        torch.nn.functional.mse_loss(pred[:inp.batch_size], inp.y).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        ctx = WorkerContext(rank=0, world_size=1, device=device)
        assert ctx.all_gather(3) == [3]
    finally:
        dist.destroy_process_group()


def test_worker_context_for_task(device):
    ctx = WorkerContext.for_task(use_gpu=device.type == "cuda")
    assert ctx.device.type == device.type


def test_ray_train_on_gpu(tmp_path, device):
    """End to end through Ray Train with ``use_gpu``: one worker per GPU, NCCL, inference tasks on the GPU."""
    if device.type != "cuda":
        pytest.skip("needs CUDA: Ray Train with use_gpu schedules on GPU resources")
    from ripple.config import load_config
    from ripple.pipeline import train

    data = str(tmp_path / "data")
    generate(data, GeneratorConfig(users=800, seed=1, label_sims=20))
    n_gpus = torch.cuda.device_count()
    cfg = load_config(None, {"data": data, "storage_path": str(tmp_path / "runs"), "run_name": "gpu",
                             "scaling.num_workers": n_gpus, "scaling.use_gpu": True, "train.epochs": 2,
                             "model.hidden": 32, "eval.baselines_max_edges": 0})
    result = train(cfg)
    tp = result["throughput"]
    assert tp["device"].startswith("cuda") and len(tp["train_seeds_per_s_per_rank"]) == n_gpus, tp
    assert tp["embedded_users"] == 800

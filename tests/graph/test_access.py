"""The ``GraphAccess`` contract: both implementations provide every member of the protocol, with its signature."""
from __future__ import annotations

import inspect

import pytest

from ripple.graph.access import GraphAccess, LocalAccess, ShardedAccess

pytestmark = pytest.mark.timeout(60)

MEMBERS = [n for n in dir(GraphAccess) if not n.startswith("_")] + list(GraphAccess.__annotations__)


@pytest.mark.parametrize("impl", [LocalAccess, ShardedAccess])
def test_implementations_have_the_protocols_methods_and_signatures(impl):
    for name in MEMBERS:
        want = getattr(GraphAccess, name, None)
        if callable(want):
            got, sig = inspect.signature(getattr(impl, name)), inspect.signature(want)
            assert list(got.parameters.values()) == list(sig.parameters.values()), (impl.__name__, name)
        elif name == "remote_sampling":  # a class attribute: what the prefetcher reads to pick its depth
            assert isinstance(getattr(impl, name), bool), (impl.__name__, name)
    assert set(GraphAccess.__annotations__) == {"backend", "remote_sampling", "sampler"}


def test_the_protocol_names_what_training_and_inference_call():
    assert {"loader", "resident_bytes", "train_users", "eval_users", "users"} <= set(MEMBERS)


def test_the_feature_store_holds_training_labels_only(tiny_dataset):
    """Val and test labels never enter a batch: the store holds NaN for them; ``eval_users`` gives them apart."""
    import numpy as np
    import torch

    from ripple.config import RippleConfig
    from ripple.context import WorkerContext
    from ripple.data.dataset import Dataset
    from ripple.data.graph import load_local_graph

    graph = load_local_graph(Dataset(tiny_dataset))
    assert {"train", "val", "test"} <= set(graph.split.tolist())
    access = LocalAccess(graph, RippleConfig(), WorkerContext(), rng_seed=0)
    y = access.feature_store.get_tensor(group_name="user", attr_name="y", index=None)
    for split in ("train", "val", "test"):
        users = torch.from_numpy(graph.split_index(split))
        stored = y[users]
        if split == "train":
            assert torch.allclose(stored, torch.from_numpy(np.log1p(graph.reach[graph.split == "train"])))
        else:
            assert torch.isnan(stored).all(), split
            got_users, got_y = access.eval_users(split)
            assert torch.equal(got_users, users)
            assert torch.allclose(got_y, torch.from_numpy(np.log1p(graph.reach[graph.split == split])))
    unlabelled = np.setdiff1d(np.arange(graph.num_nodes("user")), graph.label_index)
    assert torch.isnan(y[torch.from_numpy(unlabelled)]).all()

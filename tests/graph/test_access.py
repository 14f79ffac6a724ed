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

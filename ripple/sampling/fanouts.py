"""``num_neighbors`` checked as PyG's ``NumNeighbors`` checks it, for every ripple sampler.

A relation the graph does not have (a misspelt key), a relation of the graph without fanouts, and relations with
different numbers of hops are each a ``ValueError`` naming them: a misspelt key silently left the real relation
unsampled and added an empty, spurious one.
"""
from __future__ import annotations

EdgeType = tuple[str, str, str]


def check_num_neighbors(num_neighbors: dict, edge_types) -> dict[EdgeType, list[int]]:
    """``num_neighbors`` as {relation tuple: [fanout per hop]}, checked against the graph's ``edge_types``."""
    if not isinstance(num_neighbors, dict):
        raise ValueError(f"num_neighbors must map each relation (src, rel, dst) to its per-hop fanouts, got "
                         f"{type(num_neighbors).__name__}")
    nn = {tuple(k): [int(x) for x in v] for k, v in num_neighbors.items()}
    known = [tuple(et) for et in edge_types]
    unknown = [k for k in nn if k not in known]
    if unknown:
        raise ValueError(f"num_neighbors names relation(s) the graph does not have: {unknown}; its relations are "
                         f"{sorted(known)}: check the spelling")
    missing = [et for et in known if et not in nn]
    if missing:
        raise ValueError(f"num_neighbors has no fanouts for relation(s) {missing}; give every relation of the graph "
                         "its per-hop list (0 samples none)")
    hops = {et: len(v) for et, v in nn.items()}
    if len(set(hops.values())) > 1:
        raise ValueError(f"every relation needs the same number of hops, got {hops}; pad the shorter lists with 0")
    return nn

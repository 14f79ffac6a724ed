"""Uniform draws without replacement from many segments at once: the kernel under every ripple sampler.

Kept apart from ``ripple.sampling.native`` (which plugs into PyG's loaders) so that a process that only serves
draws, a ``GraphShard`` actor, imports torch but not PyG (about 130 MB of heap per process).
"""
from __future__ import annotations

import torch
from torch import Tensor


def segment_arange(counts: Tensor) -> Tensor:
    """[3, 2] -> [0, 1, 2, 0, 1]."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def last_segments(deg: Tensor, fanout: Tensor) -> tuple[Tensor, Tensor]:
    """The last ``min(fanout_i, deg_i)`` offsets of every segment i (``fanout_i < 0``: all of them): on a
    time-sorted valid prefix, its most recent edges (temporal strategy ``last``); no draw. Shapes: deg, fanout [F]
    -> (owner [S], offset [S]), grouped by owner, as ``sample_segments`` returns them."""
    k = torch.where(fanout < 0, deg, torch.minimum(deg, fanout))
    owner = torch.repeat_interleave(torch.arange(len(k), device=deg.device), k)
    return owner, (deg - k).index_select(0, owner) + segment_arange(k)


def sample_segments(deg: Tensor, fanout: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw ``min(fanout_i, deg_i)`` distinct offsets in ``[0, deg_i)`` for every segment i, uniformly
    (``fanout_i < 0``: all of them, in order). Segments may come from different relations, so one call serves
    every relation of a hop.

    Segments with ``deg <= fanout`` take every offset. Larger ones run Floyd's algorithm, vectorized over
    segments: step ``i`` of a segment with fanout f draws t uniform in [0, d - f + i] and keeps t, or d - f + i
    if t was drawn before — an exact uniform f-subset in f steps, with no sort and no rejection rounds. The work
    is ``O(F * max_fanout^2)`` compares; the loop runs over fanout steps, never over nodes or edges.

    Shapes:
        deg, fanout: [F] -> (owner [S] segment index, offset [S] within the segment), grouped by owner.
    """
    every = fanout < 0
    if bool(every.any()):  # fanout -1: unbounded counts, handled apart (rare: full-neighbourhood inference)
        idx_e = torch.nonzero(every).view(-1)
        idx_b = torch.nonzero(~every).view(-1)
        own_e = torch.repeat_interleave(idx_e, deg[idx_e])
        off_e = segment_arange(deg[idx_e])
        own_b, off_b = sample_segments(deg[idx_b], fanout[idx_b], generator)
        owner = torch.cat([own_e, idx_b[own_b]])
        order = torch.argsort(owner, stable=True)
        return owner[order], torch.cat([off_e, off_b])[order]
    big, u = _uniforms(deg, fanout, generator)
    return _floyd(deg, fanout, big, u)


def sample_segments_many(degs: list[Tensor], fanouts: list[Tensor], generators: list[torch.Generator]
                         ) -> list[tuple[Tensor, Tensor]]:
    """``sample_segments`` of several requests, each with its own generator (one per graph part), in one pass:
    bit for bit the draws of one call per request, with the per-call cost (``max_fanout`` vectorized steps) paid
    once. Shapes: degs[i], fanouts[i] [F_i] -> [(owner [S_i], offset [S_i])], owners indexing request i."""
    if len(degs) < 2 or any(bool((f < 0).any()) for f in fanouts):
        return [sample_segments(d, f, g) for d, f, g in zip(degs, fanouts, generators)]
    draws = [_uniforms(d, f, g) for d, f, g in zip(degs, fanouts, generators)]
    width = max(u.shape[1] for _, u in draws)
    rows = torch.tensor([0] + [len(d) for d in degs]).cumsum(0)
    # a request's uniforms padded to the widest fanout: a segment never reads a column past its own fanout
    big = torch.cat([b + rows[i] for i, (b, _) in enumerate(draws)])
    u = torch.cat([torch.nn.functional.pad(u, (0, width - u.shape[1])) for _, u in draws])
    owner, off = _floyd(torch.cat(degs), torch.cat(fanouts), big, u)
    cut = torch.searchsorted(owner, rows).tolist()
    return [(owner[a:b] - rows[i], off[a:b]) for i, (a, b) in enumerate(zip(cut[:-1], cut[1:]))]


def _uniforms(deg: Tensor, fanout: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The randomness of a draw: the segments holding more edges than their fanout, and a row of ``max_fanout``
    uniforms for each. Shapes: deg, fanout [F] (fanouts >= 0) -> (big [B], u [B, max_fanout] float64)."""
    width = int(fanout.max()) if len(fanout) else 0
    big = torch.nonzero(deg > fanout).view(-1)
    if len(big) == 0 or width == 0:
        return big[:0], torch.empty(0, width, dtype=torch.float64, device=deg.device)
    return big, torch.rand(len(big), width, device=deg.device, generator=generator, dtype=torch.float64)


def _floyd(deg: Tensor, fanout: Tensor, big: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """The draws given their uniforms (``_uniforms``): Floyd's steps for the ``big`` segments, every offset for
    the others. Shapes: deg, fanout [F]; big [B]; u [B, W >= max_fanout] -> (owner [S], offset [S])."""
    dev = deg.device
    width = int(fanout.max()) if len(fanout) else 0
    if width == 0:
        empty = torch.empty(0, dtype=torch.long, device=dev)
        return empty, empty
    k = torch.minimum(fanout, deg)
    # [F, width] offsets: row i holds segment i's draws in its first k_i columns; all-taken rows are 0..deg-1
    slots = torch.arange(width, device=dev).expand(len(deg), width).clone()
    if len(big):
        d, f = deg.index_select(0, big), fanout.index_select(0, big)
        chosen = torch.empty(len(big), width, dtype=torch.long, device=dev)
        for i in range(width):
            j = d - f + i                                   # Floyd's upper bound at this step
            t = torch.minimum((u[:, i] * (j + 1).to(torch.float64)).long(), j)
            seen = (chosen[:, :i] == t.unsqueeze(1)).any(1) if i else torch.zeros_like(t, dtype=torch.bool)
            chosen[:, i] = torch.where(seen, j, t)          # rows with f <= i are past their fanout: masked below
        slots.index_copy_(0, big, chosen)
    keep = torch.arange(width, device=dev).unsqueeze(0) < k.unsqueeze(1)
    # row-major positions of the kept slots: grouped by owner, in segment order (a 1-D nonzero and a 1-D gather
    # cost about half of a 2-D nonzero and a two-index gather)
    flat = torch.nonzero(keep.view(-1)).view(-1)
    return flat.div(width, rounding_mode="floor"), slots.view(-1).index_select(0, flat)


def sort_segments_by_time(colptr: Tensor, row: Tensor, time: Tensor, perm: Tensor | None
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """Each destination's in-edges in time order (stable). Returns (row, time, perm): ``perm[p]`` is the store's
    edge id at new CSC position p. Shapes: colptr [N + 1]; row, time, perm [E]."""
    seg = torch.repeat_interleave(torch.arange(len(colptr) - 1, device=colptr.device), colptr.diff())
    by_time = torch.argsort(time, stable=True)
    order = by_time.index_select(0, torch.argsort(seg.index_select(0, by_time), stable=True))
    store_id = order if perm is None else perm.index_select(0, order)
    return row.index_select(0, order), time.index_select(0, order), store_id


def valid_prefix(time: Tensor, start: Tensor, end: Tensor, limit: Tensor) -> Tensor:
    """How many positions of each segment [start, end) of the time-sorted ``time`` are <= ``limit``.
    Segments wholly valid or wholly in the future (most of them: a typical segment is short) are settled by their
    last and first times; only the rest run the binary search, log2(their longest) elementwise steps.
    Shapes: time [E]; start, end, limit [F] -> [F]."""
    deg = end - start
    if len(start) == 0 or len(time) == 0:
        return torch.zeros_like(start)
    top = len(time) - 1
    nonempty = deg > 0
    whole = nonempty & (time.index_select(0, (end - 1).clamp(0, top)) <= limit)
    out = torch.where(whole, deg, torch.zeros_like(deg))
    part = torch.nonzero(nonempty & ~whole & (time.index_select(0, start.clamp(max=top)) <= limit)).view(-1)
    if len(part) == 0:
        return out
    lo, hi, lim = start.index_select(0, part), end.index_select(0, part) - 1, limit.index_select(0, part)
    s0 = lo.clone()  # time[lo] <= limit < time[hi]: the answer lies in (lo, hi]
    for _ in range(int((hi - lo).max()).bit_length()):
        mid = torch.div(lo + hi, 2, rounding_mode="floor")
        ok = time.index_select(0, mid) <= lim
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return out.index_copy_(0, part, hi - s0)

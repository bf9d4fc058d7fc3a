r"""Exact proximal steps on sharded parameters (``DTensor``: FSDP2's ``fully_shard``, tensor parallelism).

A term on a ``DTensor`` parameter computes on each rank's local shard and
communicates only what the penalty couples across shards.  With the rows of
the grouping (see :func:`proxlib.to_rows`) and the placements of the
parameter, every mesh dimension is one of

* ``Replicate()``: every rank holds the same values and computes the same
  result (bit-identical);
* ``Shard(d)`` with ``d`` a *row* dimension of the grouping (``"filter"``: dim
  0; ``"channel"``: dim 1; ``"shape"``: dims 1, 2, ...): each rank holds whole
  rows, a subset of them (*partitioned rows*);
* ``Shard(d)`` with ``d`` not a row dimension (e.g. FSDP2's ``Shard(0)`` under
  ``"channel"`` or ``"shape"``, or any shard under ``"layer"``): every row is
  split across the ranks (*split rows*).

What each operator communicates per step (G rows of the full tensor, G_loc
of them on a rank, float64 statistics; ranks of one mesh dimension):

====================  ==========================  ==========================================
penalty               partitioned rows            split rows
====================  ==========================  ==========================================
group lasso           nothing                     all-reduce of 8 G_loc bytes (float32 data);
                                                  2 x that for float64 (max, then the scaled
                                                  sum of squares: overflow-safe); one for all
                                                  of a step's terms on the same ranks
GrOWL                 all-gather of the G row     the all-reduce above, shared with the
                      norms (8 G bytes)           step's group-lasso terms (every rank then
                                                  holds all G norms: no all-gather, unless
                                                  the rows are also partitioned on another
                                                  mesh dimension: then alone)
exclusive,            nothing                     one all-reduce of the row maxima (8 G_loc
group+exclusive                                   bytes; they scale the rows), one of 4
                                                  statistics per row (32 G_loc bytes: norms,
                                                  sums, counts), two for a candidate support
                                                  (its least entry with the largest entry
                                                  outside it, then 2 sums and a count),
                                                  which decides the rows of a training step
                                                  and gives their support's numbers: 4 in a
                                                  first training step.  Other rows: rounds
                                                  of one all-reduce of 4 statistics until
                                                  the support is known (typically 5-15; at
                                                  most ~64 per row), then one of the
                                                  support's 2 extremes and one of its 3
                                                  statistics.  float32 training steps after
                                                  the first: one all-gather on up to 8 ranks
                                                  (120 G_loc bytes per rank: 80 of sums
                                                  above the last step's threshold, 24 of its
                                                  3 least entries above it, 16 of maxima;
                                                  on more ranks 2 all-reduces, the sums and
                                                  24 bytes of extremes, the second not
                                                  waiting for the first), which decides the
                                                  rows from the last step's hints (2 more
                                                  for a step where some row moved more than
                                                  a hint allows).
                                                  All of a step's terms on rows split over
                                                  the same ranks together (one set of
                                                  collectives, rows concatenated)
weighted l1 / l2^2,   nothing                     nothing (elementwise)
lp
OWL (all entries)     all-gather of the whole     the same: OWL couples every entry; the
                      tensor, the prox on every   tensor is gathered once per step
                      rank, the local slice kept  (its size in bytes on every rank)
====================  ==========================  ==========================================

The statistics are sums (and maxima) over the entries of a row, so a row
split across ranks gives the same numbers, all-reduced, as on one device:
this is the stage structure of :mod:`proxlib.backends._stages` (row
statistics, a solve over one scalar per row, a row map).  The solve runs on
every rank from the same reduced numbers, so replicated results are
bit-identical across ranks; the result on each rank is the slice of the
single-process prox of the full tensor up to the summation order of the row
statistics (about 1e-16 relative in float64).

Split rows of the exclusive and group+exclusive penalties cannot be sorted
locally, so their support is found from sums instead: with y the magnitudes
(each row scaled by the power of two of its global maximum) and
z(theta) = (y - theta)_+, the solution is x = c z(theta) with theta the root
of the increasing function

.. math:: h(\theta) = \theta - b\,\|z(\theta)\|_1\,\big(1 - a/\|z(\theta)\|_2\big)

(a = 0: the exclusive lasso), found by Newton's method safeguarded by
bisection on sums over the row (all-reduced) until no entry lies strictly
inside the bracket, which fixes the support.  It starts from a lower bound
tau_0 of the root (from the row's sum and nonzero count), and first tries the
least y above tau_0 as the support's least entry (h > 0 there decides it):
in a training step that settles every row in two all-reduces, whose sums
are then the support's.  From the second float32 step on, each row's hints
(a fraction of the last threshold, and where the support's least entry
went) settle it in one collective that needs no maxima first, an
all-gather on up to 8 ranks (else two all-reduces): the sums above the
hint (which prove it a lower bound of the root) and shifted to the
guessed least entry, beside the three least entries above the hint
(:func:`_hinted_numbers`).  Then the four support statistics
of :func:`proxlib.backends._xp_kernels.group_exclusive_factor` (all-reduced)
give c to the last bit exactly as on one device, and the row map is local.

The statistics and the row maps are torch operations, the code every
device runs.  On a CPU shard whose rows are its columns (a ``Linear``'s or
a convolution's ``"shape"`` rows, a ``Linear``'s ``"channel"`` rows, under
FSDP2's ``Shard(0)``), Numba's passes over the shard's memory take their
place (:mod:`proxlib.backends.numba_split`, chosen by
``torch_dev.CPU_KERNELS`` as the single-device CPU kernels are): the
exclusive penalties' hinted statistics and row map, the group lasso's and
GrOWL's sums of squares and scaling.  The same supports and the same
solve, the sums in another order (the results within their rounding), no
float64 copy of the shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import proxlib
from proxlib import _range
from proxlib import _registry as R
from proxlib._dispatch import array_namespace
from proxlib.backends import _stages
from proxlib.backends import _xp_kernels as _k
from proxlib.backends import torch_dev

from . import _bridge as B
from .prox import _is_prox_object, _plan_key  # (prox imports this module only when a tensor is sharded)

__all__ = ["ShardedPlan", "build_plan"]

_MAX_SUPPORT_ROUNDS = 200


class _Comm:
    """The collectives of one sharded parameter under one grouping."""

    def __init__(self, leaf: DTensor, grouping: str | None):
        self.mesh = leaf.device_mesh
        self.placements = tuple(leaf.placements)
        self.shape = tuple(leaf.shape)
        rdims = B.row_dims(grouping, len(self.shape))
        self.rdims = rdims
        self.row_shape = tuple(self.shape[d] for d in rdims)
        for i, p in enumerate(self.placements):
            if not (p.is_shard() or p.is_replicate()):
                raise NotImplementedError(f"proxlib's sharded prox supports Shard and Replicate placements, got {p} on mesh dim {i}")
        self.split_groups = [
            self.mesh.get_group(i) for i, p in enumerate(self.placements) if p.is_shard() and p.dim not in rdims
        ]
        self.partitioned = any(p.is_shard() and p.dim in rdims for p in self.placements)
        # placements of a row-shaped tensor (full shape: row_shape): rows stay
        # sharded where they are partitioned, replicated elsewhere
        self.row_placements = tuple(
            Shard(rdims.index(p.dim)) if (p.is_shard() and p.dim in rdims) else Replicate() for p in self.placements
        )
        self.bytes = 0  # communicated by this rank per step, counted as it happens
        self.collectives = 0  # the collectives this rank issued through this object (a batch's: its first term's)

    @property
    def split(self) -> bool:
        return bool(self.split_groups)

    def all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        for g in self.split_groups:
            dist.all_reduce(t, op=op, group=g)
            self.bytes += t.numel() * t.element_size()
            self.collectives += 1
        return t

    @property
    def candidates(self) -> int:
        """How many least entries per row :meth:`all_reduce_sum_least`
        finds: _CANDIDATES where every group it reduces over has at most
        _GATHER_RANKS ranks (an all-gather of each rank's), else 1 (a
        maximum: an all-gather would grow with the ranks)."""
        return _CANDIDATES if all(dist.get_world_size(g) <= _GATHER_RANKS for g in self.split_groups) else 1

    def all_reduce_sum_least(self, t_sum: torch.Tensor, least: torch.Tensor, maxes: torch.Tensor) -> None:
        """In place: ``t_sum`` summed over the ranks; ``least`` (K, G), each
        rank's K least entries of G rows in increasing order (+inf where
        fewer; K = :attr:`candidates`), made the K least of all ranks';
        ``maxes`` (r, G) their maxima.  K > 1: one all-gather of all three,
        summed (in rank order: the same bits on every rank) and merged
        (:func:`_reduce_gathered`) by each rank; K = 1: an all-reduce of the
        sums, not waited for before a maximum of (-least, maxes) starts
        (one round of latency for both where the backend overlaps them).
        On the FSDP2 MLP over two gloo processes the one all-gather took
        the exclusive lasso's hinted step from 5.2 to 3.5 ms (the sums'
        all-reduce beside an all-gather of the rest: ``ab_sharded.py``'s
        way, 14:51 UTC)."""
        K = least.shape[0]
        for g in self.split_groups:
            if K > 1:
                ext = torch.cat([t_sum, least, maxes])
                gathered = ext.new_empty((dist.get_world_size(g),) + tuple(ext.shape))
                dist.all_gather(list(gathered.unbind(0)), ext, group=g)
                _reduce_gathered(gathered, t_sum, least, maxes)
                self.bytes += ext.numel() * ext.element_size()
                self.collectives += 1
                continue
            work = dist.all_reduce(t_sum, op=dist.ReduceOp.SUM, group=g, async_op=True)
            ext = torch.cat([-least, maxes])
            dist.all_reduce(ext, op=dist.ReduceOp.MAX, group=g)
            least.copy_(-ext[:1])
            maxes.copy_(ext[1:])
            work.wait()
            self.bytes += t_sum.numel() * t_sum.element_size() + ext.numel() * ext.element_size()
            self.collectives += 2

    def check_finite(self, local: torch.Tensor) -> None:
        """Raise ValueError on every rank of the mesh if any rank's shard holds
        NaN or Inf (one all-reduce of a flag per mesh dimension): a check on
        each rank's own shard alone would leave the ranks without a bad entry
        waiting in the prox's collectives for the rank that raised."""
        bad = torch.zeros(1, dtype=torch.float64, device=local.device)
        if local.numel() and not bool(torch.isfinite(local).all()):
            bad += 1
        for i in range(self.mesh.ndim):
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=self.mesh.get_group(i))
        if bad.item() > 0:
            raise ValueError("the parameter contains NaN or Inf (on some rank's shard)")

    def local_rows_of(self, full_rows: torch.Tensor) -> torch.Tensor:
        """This rank's part of a per-row tensor of the full tensor's G rows."""
        if not self.partitioned:
            return full_rows
        shaped = full_rows.reshape(self.row_shape)
        return distribute_tensor(shaped, self.mesh, self.row_placements, src_data_rank=None).to_local().reshape(-1)

    def gather_rows(self, local_rows: torch.Tensor) -> torch.Tensor:
        """The per-row tensor of all G rows from each rank's part (all-gather)."""
        if not self.partitioned:
            return local_rows
        local_shape = _local_shape(self.row_shape, self.mesh, self.row_placements)
        d = DTensor.from_local(
            local_rows.reshape(local_shape),
            self.mesh,
            self.row_placements,
            run_check=False,
            shape=torch.Size(self.row_shape),
            stride=_contiguous_stride(self.row_shape),
        )
        full = d.full_tensor().reshape(-1)
        self.bytes += full.numel() * full.element_size()
        self.collectives += 1
        return full

    def local_of(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's shard of a tensor of the parameter's full shape."""
        return distribute_tensor(full, self.mesh, self.placements, src_data_rank=None).to_local()


#: the least entries above its hint that a sharded hinted row takes, per
#: row, as candidates for its support's least entry (the first that passes
#: the test decides the row; in training an entry or two below the new
#: threshold is common: the first fails then, and without the others the
#: row took two more collectives, 2-3 ms a step on gloo)
_CANDIDATES = 3
#: the most ranks whose statistics are all-gathered, the K least entries
#: with them (above: all-reduced, and only each row's least entry)
_GATHER_RANKS = 8


def _reduce_gathered(gathered: torch.Tensor, t_sum: torch.Tensor, least: torch.Tensor, maxes: torch.Tensor) -> None:
    """From the ranks' (sums, least, maxes) stacked (``gathered``: (ranks,
    k + K + r, G)), into ``t_sum`` (k, G) the sums over the ranks, added
    in rank order; into ``least`` (K, G) the K least of all ranks' least
    entries, in increasing order; into ``maxes`` (r, G) the ranks'
    maxima: the same numbers on every rank."""
    k, K = t_sum.shape[0], least.shape[0]
    total = gathered[0, :k].clone()
    for r in range(1, gathered.shape[0]):
        total += gathered[r, :k]
    t_sum.copy_(total)
    pooled = gathered[:, k:k + K].reshape(-1, gathered.shape[-1])
    least.copy_(torch.sort(pooled, dim=0).values[:K])
    maxes.copy_(gathered[:, k + K:].amax(dim=0))


def _contiguous_stride(shape) -> tuple[int, ...]:
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= s
    return tuple(reversed(stride))


def _local_shape(shape, mesh, placements) -> tuple[int, ...]:
    """Local shape of a tensor of ``shape`` under ``placements`` (torch.chunk semantics, as DTensor)."""
    out = list(shape)
    coord = mesh.get_coordinate()
    for i, p in enumerate(placements):
        if p.is_shard():
            n = mesh.size(i)
            chunk = math.ceil(out[p.dim] / n) if out[p.dim] else 0
            start = min(chunk * coord[i], out[p.dim])
            out[p.dim] = max(0, min(chunk, out[p.dim] - start))
    return tuple(out)


# ----------------------------------------------------------------- split-row statistics


def _row_norms_split(R_, comm: _Comm, nb=False) -> torch.Tensor:
    """Norms of rows split across ranks (float64): one all-reduce for float32
    data (float32 squares are exact in float64); max then scaled sum for float64.
    ``nb``: as for :func:`_row_norms_split_blocks`."""
    return _row_norms_split_blocks([R_], comm, nb)[0]


def _row_norms_split_blocks(Rs: list, comm: _Comm, nb=False) -> list:
    """:func:`_row_norms_split` of several tensors' rows of one dtype, split
    across the same ranks, in one set of collectives (each row's norm the
    one it has alone); ``nb``: :func:`_split_kernels` of them where the
    caller has it."""
    sizes = [R_.shape[0] for R_ in Rs]
    if Rs[0].dtype != torch.float64:
        nb = _split_kernels(Rs) if nb is False else nb
        return list(torch.split(torch.sqrt(comm.all_reduce(torch.cat([_local_sumsq(R_, nb) for R_ in Rs]))), sizes))
    s, _ = _row_scale_split([R_.abs() for R_ in Rs], comm)
    B2 = [R_ / sc for R_, sc in zip(Rs, torch.split(s[:, None], sizes))]
    return list(torch.split(torch.sqrt(comm.all_reduce(torch.cat([torch.sum(b * b, dim=1) for b in B2]))) * s, sizes))


def _local_sumsq(R_, nb):
    """Each local row's sum of squares (float64; float32 squares are exact):
    the column pass of :mod:`proxlib.backends.numba_split` where ``nb`` is
    it (:func:`_split_kernels`), else the torch primitive's."""
    if nb is None:
        return torch_dev.PRIMITIVES.row_sumsq(R_)
    ss = torch.empty(R_.shape[0], dtype=torch.float64)
    nb.col_sumsq(R_.detach().T.numpy(), ss.numpy())
    return ss


def _scale_local_rows(Rw, f, nb):
    """Rw's rows times their factors ``f`` (float64), in place: the column
    pass of :mod:`proxlib.backends.numba_split` where ``nb`` is it (each
    entry's product in float64, rounded once), else the torch primitive's
    (which rounds f to Rw's dtype first).  Returns Rw."""
    if nb is None:
        return torch_dev.PRIMITIVES.scale_rows(Rw, f, out=Rw)
    A = Rw.detach().T.numpy()
    nb.scale_cols(A, f.to(torch.float64).contiguous().numpy(), A)
    torch.autograd.graph.increment_version(Rw)  # (as the torch primitive's out= does)
    return Rw


def _row_scale_split(As: list, comm: _Comm) -> tuple:
    """(s, amax): the reference's power-of-two scale of rows split across
    ranks (blocks of their magnitudes ``As``, float64; the vectors over all
    the blocks' rows) and the global row maxima it comes from (one
    all-reduce)."""
    amax = torch.cat([A.amax(dim=1) if A.shape[1] else A.new_zeros(A.shape[0]) for A in As])
    comm.all_reduce(amax, dist.ReduceOp.MAX)
    return _k.row_scale(amax[:, None], array_namespace(amax)), amax


def _bit_midpoint(lo, hi):
    """Midpoint of non-negative float64 brackets in their bit patterns (monotone
    for non-negative floats): a bisection ends within 64 halvings."""
    return ((lo.view(torch.int64) + hi.view(torch.int64)) // 2).view(torch.float64)


class _Blocks:
    """Row blocks (G_i, m_i) of one or several tensors whose rows are split
    across the same ranks, solved together: every per-row statistic is
    formed block by block and concatenated (one all-reduce for all of
    them), every per-row scalar is a vector over all the blocks' rows, and
    a map of the rows is applied block by block with each block's part of
    such vectors.  A row's numbers are those it has alone."""

    def __init__(self, blocks, sizes: list | None = None):
        self._blocks = blocks  # (a list, or a function forming it on first use: then ``sizes`` given)
        self.sizes = [Y.shape[0] for Y in blocks] if sizes is None else sizes

    @property
    def blocks(self) -> list:
        if callable(self._blocks):
            self._blocks = self._blocks()
        return self._blocks

    def rowwise(self, fn) -> torch.Tensor:
        """``fn(Y)`` (a vector over Y's rows) of every block, concatenated."""
        return torch.cat([fn(Y) for Y in self.blocks])

    def map(self, fn, *vectors) -> list:
        """``fn(Y, *(each vector's part for Y's rows, as a column))`` per block."""
        parts = [torch.split(v, self.sizes) for v in vectors]
        return [fn(Y, *(p[i][:, None] for p in parts)) for i, Y in enumerate(self.blocks)]


def _least_inside(Y, inside):
    """Per row, the least entry of Y where ``inside`` (a mask of Y's shape), inf if none."""
    if not Y.shape[1]:
        return torch.full((Y.shape[0],), float("inf"), dtype=Y.dtype, device=Y.device)
    return torch.where(inside, Y, float("inf")).amin(dim=1)


def _largest_outside(Y, inside):
    """Per row, the largest entry of Y where not ``inside``, 0 if none."""
    if not Y.shape[1]:
        return Y.new_zeros(Y.shape[0])
    return torch.where(inside, 0.0, Y).amax(dim=1)


def _support_numbers(Ys: _Blocks, sups: list, Yk, comm: _Comm):
    """Over each row's support ({y > t}: ``sups``, a mask per block) and
    with Y_k its least entry (all-reduced; 0 where there is none): the sums
    of y - Y_k and of its squares, and the count (one all-reduce)."""
    D = [torch.where(sup, Y - yk, 0.0) for Y, sup, yk in zip(Ys.blocks, sups, torch.split(Yk[:, None], Ys.sizes))]
    return comm.all_reduce(torch.stack([torch.cat([d.sum(1) for d in D]), torch.cat([(d * d).sum(1) for d in D]),
                                        torch.cat([sup.sum(1).to(Yk.dtype) for sup in sups])]))


def _support_extremes(Ys: _Blocks, sups: list, comm: _Comm):
    """(Y_k, the largest y outside): each row's least entry of its support
    (0 where there is none) and its largest entry outside it (0 if none),
    in one all-reduce (min Y_k = -max -Y_k, exactly)."""
    Yk = torch.cat([_least_inside(Y, sup) for Y, sup in zip(Ys.blocks, sups)])
    below = torch.cat([_largest_outside(Y, sup) for Y, sup in zip(Ys.blocks, sups)])
    extremes = comm.all_reduce(torch.stack([-Yk, below]), dist.ReduceOp.MAX)
    Yk, below = -extremes[0], extremes[1]
    return torch.where(torch.isfinite(Yk), Yk, 0.0), below


def _candidate_split(Ys: _Blocks, a, b, t0, active, comm: _Comm):
    """Rows whose support is decided by one candidate (two all-reduces): every
    y <= t0 <= tau is off the support (``t0``: a lower bound of tau,
    :func:`proxlib.backends._xp_kernels.tau_below`), so the least y above t0,
    Y_c, is the support's least entry where h(Y_c) > 0 on the sums at Y_c
    (the single-device column kernels' test), and the support is then
    {y > t0}.  In training (the prox zeroed entries, the gradient step
    revived them tiny, thresholds small) t0 is within a hair of tau and this
    decides every row: two all-reduces instead of a search's rounds.

    Returns (decided, support): ``support`` = (Y_c, the largest y <= t0 (0
    if none), and over {y > t0} the sums of y - Y_c, of its squares and the
    count), the numbers :func:`_group_exclusive_split_blocks` takes from
    the support {y > t0} of a decided row, formed by the same operations on
    the same entries: the same bits, with no all-reduce of their own.  The
    first all-reduce carries -Y_c and the largest y <= t0 together (a
    maximum: min Y_c = -max -Y_c exactly)."""
    above = Ys.map(lambda Y, t: Y > t, t0)
    Yc, below = _support_extremes(Ys, above, comm)  # (Y_c = 0 where no y > t0)
    F, Q, K = _support_numbers(Ys, above, Yc, comm)  # over {y > t0} = {y >= Y_c}
    return active & (Yc > 0) & (Yc - b * F * _group_factor(torch.sqrt(Q), a) > 0), (above, Yc, below, F, Q, K)


def _group_factor(nrm, a):
    """(1 - a/nrm)_+ per row (0 where nrm <= a): the group lasso part's
    shrink factor of the candidate test phi(Y_c) = Y_c - b F (1 - a/||z||)_+."""
    pos = nrm > a
    return torch.where(pos, 1.0 - a / torch.where(pos, nrm, 1.0), 0.0)


def _support_split(Ys: _Blocks, a, b, comm: _Comm, t0=None, ymax=None):
    """The support threshold of x on rows split across ranks (see the module
    doc): returns t with support {y > t}.  ``Ys``: the scaled magnitudes
    (blocks of (G_i, m_loc_i), float64); ``a``, ``b`` the scaled thresholds of
    each row (rows with a zero solution have a = 0 and b = 0 here: their
    support is all of y > 0).  ``t0``: a lower bound of each row's threshold
    (None: 0); rows whose candidate above it decides the support
    (:func:`_candidate_split`) take no search, the others search from it
    (h(t0) <= 0: a left end).  ``ymax``: the rows' global maxima of ``Y``
    where the caller has them (None: one all-reduce).  Returns (t, support):
    ``support`` is the candidate's numbers (:func:`_candidate_split`) when
    the candidate decided every row that would search (then they are the
    numbers of every row's support {y > t}), else None.

    Per round one all-reduce of (||z||_1, ||z||_2^2, |supp z|, #y inside the
    bracket) at the current theta; Newton's step on h if it stays inside the
    bracket, else the bisection of the bracket's bit patterns.  A row is done
    when no y lies strictly inside its bracket (the support is then {y > lo})
    or when Newton's iterate stops moving (the support is {y > theta}).
    """
    if ymax is None:
        ymax = Ys.rowwise(lambda Y: Y.amax(dim=1) if Y.shape[1] else Y.new_zeros(Y.shape[0]))
        comm.all_reduce(ymax, dist.ReduceOp.MAX)
    active = (b > 0) & (ymax > 0)  # b = 0: theta = 0, the support is y > 0
    lo = torch.zeros_like(ymax) if t0 is None else torch.where(active, t0, 0.0)
    hi = ymax.clone()
    theta = lo.clone()
    t_out = torch.zeros_like(lo)
    support = None
    if t0 is not None and bool(active.any()):
        # (its numbers are at lo: t0 on the rows that search, 0, as t_out, on the others)
        decided, support = _candidate_split(Ys, a, b, lo, active, comm)
        t_out = torch.where(decided, lo, t_out)
        active = active & ~decided
        if not bool(active.any()):
            return t_out, support
    for _ in range(_MAX_SUPPORT_ROUNDS):
        if not bool(active.any()):
            break

        def round_stats(Y, th, l, h):
            Z = torch.clamp(Y - th, min=0.0)
            inside = (Y > l) & (Y < h)
            return torch.stack([Z.sum(1), (Z * Z).sum(1), (Z > 0).sum(1).to(Y.dtype), inside.sum(1).to(Y.dtype)])

        stats = torch.cat(Ys.map(round_stats, theta, lo, hi), dim=1)
        comm.all_reduce(stats)
        F, Q, K, n_inside = stats
        isolated = active & (n_inside == 0)
        t_out = torch.where(isolated, lo, t_out)
        active = active & ~isolated
        if not bool(active.any()):
            break
        nrm = torch.sqrt(Q)
        pos = nrm > a
        shrink = torch.where(pos, 1.0 - a / torch.where(pos, nrm, 1.0), 0.0)
        h = theta - b * F * shrink  # increasing in theta; > 0 right of the root
        right = h > 0
        lo = torch.where(active & ~right, theta, lo)
        hi = torch.where(active & right, theta, hi)
        slope = 1.0 + b * (K * shrink + torch.where(pos, a * F * F / torch.where(pos, Q * nrm, 1.0), 0.0))
        newton = theta - h / slope
        settled = active & ((newton == theta) | (h == 0))
        t_out = torch.where(settled, theta, t_out)
        active = active & ~settled
        inside_newton = (newton > lo) & (newton < hi)
        theta = torch.where(active, torch.where(inside_newton, newton, _bit_midpoint(lo, hi)), theta)
    else:  # pragma: no cover - Newton or a bit-pattern bisection each round
        raise RuntimeError("the sharded support search did not converge")
    return t_out, None


def _group_exclusive_split(Rw, a, b, comm: _Comm):
    """Prox of a_r ||x||_2 + b_r/2 ||x||_1^2 on rows split across ranks
    (a = 0: the exclusive lasso), computed in float64, rounded once.  A row
    holding NaN or Inf is returned as it is (as by the single-device kernels)."""
    return _group_exclusive_split_blocks([Rw], [a], [b], comm)[0]


def _group_exclusive_split_blocks(Rws: list, as_: list, bs: list, comm: _Comm, hints: list | None = None) -> list:
    """:func:`_group_exclusive_split` of several tensors' rows (``Rws``, with
    their per-row thresholds ``as_``, ``bs``) split across the same ranks,
    in one set of collectives: the same numbers as one by one (every
    statistic is per row; the vectors of all the rows are concatenated).

    ``hints`` (optional; a training step's, kept by the caller between
    steps): one entry per tensor, None or a float64 tensor (2, rows): a
    guess of each row's threshold, and of its support's least magnitude;
    read, and replaced by the guesses for the next call (or None).
    Where every tensor is float32 and has hints, the rows whose hint
    proves itself and whose candidate above it passes are decided in one
    collective (two on more than _GATHER_RANKS ranks) instead of four
    (:func:`_hinted_numbers`; a training step's, every row); the others
    then take the search's route, as without hints (two collectives more
    than without, at worst; none
    where the candidate above the bound of their sums above the hint
    decides them).  The support never depends on
    the hints; the values, through the support's sums, within their
    rounding (float32 results: the same up to a last-bit difference in
    rare entries).

    On CPU shards whose rows are their columns (:func:`_split_kernels`),
    the hinted route's statistics and row map are Numba's passes over the
    shard (:mod:`proxlib.backends.numba_split`) instead of torch
    operations on float64 copies of it, which are then formed only where a
    row is left to the search."""
    sizes = [Rw.shape[0] for Rw in Rws]
    W64 = _Blocks(lambda: [Rw.to(torch.float64) for Rw in Rws], sizes)
    A = _Blocks(lambda: [W.abs() for W in W64.blocks], sizes)
    a64 = torch.cat([a.to(torch.float64) for a in as_])
    b = torch.cat([x.to(torch.float64) for x in bs])
    finite = torch.isfinite(b)
    bf = torch.where(finite, b, 0.0)
    hinted = hints is not None and all(Rw.dtype == torch.float32 for Rw in Rws)
    H = _hint_vector(hints, A.sizes) if hinted else None
    on_numba = None if H is None else _split_kernels(Rws)
    if H is None:
        numbers = _searched_numbers(A, a64, bf, finite, comm)
    else:
        numbers = _hinted_numbers(A, a64, bf, finite, H, comm, on_numba and (on_numba, Rws))
    Ys, s, a_s, nrm, row_finite, nonzero, (sups, Yk, below, Fk, D2, kf) = numbers
    c = nonzero.to(Yk.dtype)
    group_only = nonzero & (bf == 0)
    c = torch.where(group_only, 1.0 - a_s / torch.where(group_only, nrm, 1.0), c)
    general = nonzero & (a_s > 0) & (bf > 0)
    if bool(general.any()):
        # the root's bracket: c_j = Y_j / (b F_j) (clipped to 1) at the support's
        # last entry (right) and the first entry outside it (left; 0 if none)
        bb = torch.where(general, bf, 1.0)
        Fnext = Fk + kf * (Yk - below)
        right = torch.where(Fk > 0, torch.clamp(Yk / (bb * torch.where(Fk > 0, Fk, 1.0)), max=1.0), 1.0)
        left = torch.where(Fnext > 0, torch.clamp(below / (bb * torch.where(Fnext > 0, Fnext, 1.0)), max=1.0), 0.0)
        cg = _k.group_exclusive_factor(
            Yk, Fk, D2, kf, torch.where(general, left, 0.0), torch.where(general, right, 1.0),
            torch.where(general, a_s, 0.0), bb, array_namespace(Yk),
        )
        c = torch.where(general, cg, c)
    beta = bf * c
    e = (Yk - beta * Fk) / (1.0 + beta * kf)
    if hinted:
        # the next call's hints: a fraction of each row's threshold Y_k - e,
        # and the magnitude its support's least entry leaves, e c (about the
        # next step's least entry, moved by its gradient step: the next call
        # shifts its support sums to it), both unscaled, where the exclusive
        # part acts (beta > 0) on a nonzero row; 0 (none) elsewhere
        tau = (Yk - e) * s
        ok = (beta > 0) & (tau > 0) & torch.isfinite(tau) & (Yk > 0)
        nxt = torch.stack([torch.where(ok, _HINT_FRACTION * tau, 0.0), torch.where(ok, e * c * s, 0.0)])
        hints[:] = list(torch.split(nxt, A.sizes, dim=1))
    elif hints is not None:  # (float64 data: no hints)
        hints[:] = [None] * len(Rws)
    if sups is None:  # (the hints decided every row, on Numba: each support is {y >= Y_k})
        return _support_map_numba(on_numba, Rws, A.sizes, Yk, e, beta == 0, c * s, c, bf == 0, row_finite)
    return _support_map_torch(Rws, W64.blocks, Ys, sups, Yk, e, beta == 0, c * s, c, bf == 0, row_finite)


def _support_map_torch(Rws: list, W64: list, Ys: _Blocks, sups: list, Yk, e, zero_beta, cs, cw, group_part, fin) -> list:
    """The row map that ends :func:`_group_exclusive_split_blocks`, per block
    (rows ``Rws``, their float64 copies ``W64``, magnitudes ``Ys`` scaled
    by 1/s, supports ``sups``), with per-row vectors: x = w where the row
    is not finite (``fin`` False); else c w where b = 0 (``group_part``,
    c = ``cw``); else sign(w) y (c s) where beta = 0; else sign(w) ((y -
    Y_k) + e)_{support} (c s) (``cs`` = c s), rounded to the rows' dtype."""
    out = []
    for W, Rw, Y, sup, yk, ek, zb, c_s, c_w, gp, f in zip(
        W64, Rws, Ys.blocks, sups,
        *(torch.split(v[:, None], Ys.sizes) for v in (Yk, e, zero_beta, cs, cw, group_part, fin)),
    ):
        U = torch.where(sup, (Y - yk) + ek, 0.0)
        U = torch.where(zb, Y, U)
        # rows without the exclusive part (b = 0) are c w, formed from w itself as
        # on one device (the scaled copy may have lost entries below 2^-1074 s)
        X = torch.where(gp, W * c_w, torch.sign(W) * U * c_s)
        out.append(torch.where(f, X, W).to(Rw.dtype))
    return out


def _searched_numbers(A: _Blocks, a64, bf, finite, comm: _Comm):
    """The rows' scaled magnitudes and each row's support with its numbers,
    by the route without hints: the row maxima (one all-reduce; they scale
    the rows), the norms with the sums and counts of a lower bound of tau
    (one), then the candidate above it (two, :func:`_candidate_split`),
    which decides a training step's rows, or the search
    (:func:`_support_split`).  Returns (Ys, s, a_s, nrm, row_finite,
    nonzero, (sups, Y_k, below, F_k, D2, k)), as :func:`_hinted_numbers`."""
    s, amax = _row_scale_split(A.blocks, comm)
    Ys = _Blocks(A.map(lambda Ai, sc: Ai / sc, s))
    a_s = a64 / s
    # one all-reduce: the row norms, and the sums and counts of a lower bound of tau
    sq, S, n, m = comm.all_reduce(torch.stack([
        Ys.rowwise(lambda Y: (Y * Y).sum(1)), Ys.rowwise(lambda Y: Y.sum(1)), Ys.rowwise(lambda Y: (Y > 0).sum(1).to(Y.dtype)),
        Ys.rowwise(lambda Y: Y.new_full((Y.shape[0],), float(Y.shape[1]))),
    ]))
    nrm = torch.sqrt(sq)
    # NaN or Inf exactly where a row holds one (the rows are scaled: a finite
    # row's sum of squares cannot overflow); such a row is returned as it is,
    # as by the single-device kernels, and takes no part in the search
    row_finite = torch.isfinite(nrm)
    nonzero = (nrm > a_s) & finite & row_finite
    a_eff, b_eff = torch.where(nonzero, a_s, 0.0), torch.where(nonzero, bf, 0.0)
    t0 = _k.tau_below(S, n, m, a_eff, b_eff, array_namespace(S))
    support = _support_and_numbers(Ys, a_eff, b_eff, comm, t0, amax / s)  # (max |w| / s: the scaled rows' maxima, exactly)
    return Ys, s, a_s, nrm, row_finite, nonzero, support


def _support_and_numbers(Ys: _Blocks, a, b, comm: _Comm, t0, ymax):
    """(sups, Y_k, below, F_k, D2, k): each row's support from the lower
    bound ``t0`` (:func:`_support_split`) and its numbers, the candidate's
    where it decided every row (a training step's: no all-reduce more),
    else formed from the support found (two all-reduces)."""
    t, support = _support_split(Ys, a, b, comm, t0, ymax=ymax)
    if support is not None:
        return support
    sups = Ys.map(lambda Y, tc: Y > tc, t)
    Yk, below = _support_extremes(Ys, sups, comm)
    return (sups, Yk, below) + tuple(_support_numbers(Ys, sups, Yk, comm))


# The next step's hint: this fraction of the threshold found (as the
# single-device column kernels', numba_cpu._HINT_FRACTION)
_HINT_FRACTION = 1.0 - 2.0**-8


def _hint_vector(hints: list | None, sizes: list):
    """The blocks' hints (2, rows) concatenated along the rows (float64),
    or None where some block has none (or one of another shape)."""
    if not hints or len(hints) != len(sizes):
        return None
    if any(h is None or h.dtype != torch.float64 or tuple(h.shape) != (2, g) for h, g in zip(hints, sizes)):
        return None
    return torch.cat(hints, dim=1)


def _split_kernels(Rws: list):
    """:mod:`proxlib.backends.numba_split` where it runs these rows: every
    block on the CPU, its rows the columns of a C-contiguous array (strides
    (1, G): the ``"shape"`` rows of a ``Linear`` or convolution shard, a
    ``Linear``'s ``"channel"`` rows), float32 or float64, Numba importing
    and ``torch_dev.CPU_KERNELS`` not "torch"; else None (the torch
    operations)."""
    torch_dev._check_route()
    if torch_dev.CPU_KERNELS == "torch" or not all(
            Rw.device.type == "cpu" and Rw.dtype in (torch.float32, torch.float64) and Rw.ndim == 2 and Rw.T.is_contiguous() for Rw in Rws):
        return None
    if torch_dev._numba_cpu() is None:
        if torch_dev.CPU_KERNELS == "numba":
            raise RuntimeError("torch_dev.CPU_KERNELS = 'numba' but numba does not import")
        return None
    from proxlib.backends import numba_split

    return numba_split


def _hinted_stats_torch(Ys: _Blocks, H, R, K: int = 1):
    """The local sums (10, rows), least entries (K, rows) and maxima (2,
    rows) of :func:`_hinted_numbers` (before their collectives) by torch
    operations on the magnitudes ``Ys`` (float64), at the hints ``H`` and
    guesses ``R``: the squares; over {y > H} the sum, the count, the sums
    of y - H and of its squares; the length; the sum; the number of y > 0;
    over {y > H} the sums of y - R and of its squares.  Least: the K least
    y > H in increasing order (+inf where fewer).  Maxima: the largest y
    <= H (0 if none), the largest y (0 if none)."""

    def sums(Y, h, r):
        above = Y > h
        Z = torch.where(above, Y - h, 0.0)
        ZR = torch.where(above, Y - r, 0.0)
        return torch.stack([(Y * Y).sum(1), torch.where(above, Y, 0.0).sum(1), above.sum(1).to(Y.dtype),
                            Z.sum(1), (Z * Z).sum(1), Y.new_full((Y.shape[0],), float(Y.shape[1])),
                            Y.sum(1), (Y > 0).sum(1).to(Y.dtype), ZR.sum(1), (ZR * ZR).sum(1)])

    def least(Y, h):
        top = torch.where(Y > h, Y, math.inf)
        if Y.shape[1] < K:
            top = torch.cat([top, top.new_full((Y.shape[0], K - Y.shape[1]), math.inf)], dim=1)
        return torch.topk(top, K, dim=1, largest=False).values.T  # (sorted: increasing)

    def maxima(Y, h):
        return torch.stack([_largest_outside(Y, Y > h), Y.amax(dim=1) if Y.shape[1] else Y.new_zeros(Y.shape[0])])

    return torch.cat(Ys.map(sums, H, R), dim=1), torch.cat(Ys.map(least, H), dim=1), torch.cat(Ys.map(maxima, H), dim=1)


def _hinted_stats_numba(nb, Rws: list, H, R, K: int = 1):
    """The sums, least entries and maxima of :func:`_hinted_numbers`
    (before their collectives) by
    :func:`proxlib.backends.numba_split.hinted_stats`, a pass over each
    block's memory."""
    stats, least, maxes, o = [], [], [], 0
    for Rw in Rws:
        G = Rw.shape[0]
        st_, le, mx = (torch.empty((k, G), dtype=torch.float64) for k in (10, K, 2))
        nb.hinted_stats(Rw.detach().T.numpy(), H[o:o + G].numpy(), R[o:o + G].numpy(), st_.numpy(), le.numpy(), mx.numpy())
        stats.append(st_)
        least.append(le)
        maxes.append(mx)
        o += G
    return torch.cat(stats, dim=1), torch.cat(least, dim=1), torch.cat(maxes, dim=1)


def _support_map_numba(nb, Rws: list, sizes: list, Yk, e, zero_beta, cs, cw, group_part, fin) -> list:
    """The row map of :func:`_group_exclusive_split_blocks` where every
    row's support is {y >= Y_k} (``Yk``; its rows decided by their hints),
    by :func:`proxlib.backends.numba_split.support_map`: the operations of
    :func:`_support_map_torch` entry by entry, the same bits, into new
    tensors of the rows' dtype and strides."""
    case = torch.full(Yk.shape, nb.SUPPORT, dtype=torch.int64)
    case = torch.where(zero_beta, nb.SCALED, case)
    case = torch.where(group_part, nb.GROUP_ONLY, case)
    case = torch.where(fin, case, nb.COPY)
    out = []
    for Rw, parts in zip(Rws, zip(*(torch.split(v, sizes) for v in (case, Yk, e, cs, cw)))):
        X = torch.empty_like(Rw)  # (strides (1, G), as Rw's)
        nb.support_map(Rw.detach().T.numpy(), *(v.contiguous().numpy() for v in parts), X.T.numpy())
        out.append(X)
    return out


def _hinted_numbers(A: _Blocks, a64, bf, finite, HR, comm: _Comm, on_numba=None):
    """:func:`_searched_numbers` of float32 rows from a hint H_r of each
    row's threshold tau_r and one R_r of its support's least magnitude
    (``HR``: (2, rows)): in one all-gather (up to _GATHER_RANKS ranks;
    else two all-reduces that do not wait for each other:
    :meth:`_Comm.all_reduce_sum_least`) where the hints decide every
    row.

    float32 magnitudes need no scale in float64 (squares and sums of
    P < 2^40 of them are normal and finite), so the rows are taken as they
    are (s = 1, the same numbers as scaled by a power of two).  The sums:
    the squares (the norms), and over {y > H_r} the sum, the count and the
    sums of y - H_r, of y - R_r and of their squares; the extremes: the
    row's maximum, the largest y <= H_r, and the K least y above H_r (K =
    :attr:`_Comm.candidates`: 3 on up to _GATHER_RANKS ranks, gathered;
    else 1, a maximum).  Then, as the column
    kernels of numba_cpu with a hint: H_r <= tau_below of the sums above it
    (with the bound of ||z||_1/||z||_2 above H_r from its shifted sums,
    :func:`_xp_kernels.ratio_above`: sqrt(n) proved nothing for
    group+exclusive with a large a) proves phi(H_r) <= 0 (every y <= H_r
    is off the support); the least y
    above it, Y_c, is then the support's least entry if phi(Y_c) > 0, on
    the support sums at Y_c, which are the shifted sums moved by
    d = Y_c - R_r (F = F1 - k d, D2 = Q1 - d (F1 + F), F1 and Q1 the sums
    of y - R_r and its squares), or by Y_c - H_r, whichever does not cancel
    (:func:`numba_cpu._shifted_support_sums`' test where d >= 0; where
    d < 0 both are sums of positive terms, and 2 k |d| <= F bounds the
    error of F1, whose terms y - R_r may be negative, by 1.5 times that of
    the direct sum).  In training, R_r (where the support's least entry
    went, :func:`_group_exclusive_split_blocks`) is within a gradient step
    of Y_c, and the moves by it are accepted where those by Y_c - H_r
    cancel: on rows of a few entries (the MLP's 10 x 300 layer, 72 of its
    300 rows), whose least entry lies far above tau.

    Where phi(Y_c) <= 0 on such sums, Y_c is off the support too (tau >=
    Y_c), and the next of the K least entries is the candidate, on the same
    sums less the terms of the entries below it (each the very term the
    sums added: the same rounding); a candidate equal to the one before
    it is skipped (its copy is removed from the sums all the same).  In
    training this is the common failure of a hint: an entry that the
    gradient step left between H_r and the new threshold (the exclusive
    lasso on the FSDP2 MLP: in 25 of 30 steps, a row or two of 784, each
    costing the step the search route's two collectives).  The
    rows concerned (nonzero, b > 0, finite) that this does not decide take
    the search's route (:func:`_support_split`: the candidate above a lower
    bound of tau, two more all-reduces, then the search if need be), from
    the bound of their sums above the hint (or the last candidate found
    off the support, if greater) where the hint proved itself, else from
    the whole row's sums (also summed here), as without hints.

    ``on_numba``: (:mod:`proxlib.backends.numba_split`, the blocks' rows)
    where those run them (:func:`_split_kernels`): the sums and extremes
    then come from a pass over each block's memory, and the supports are
    returned as None (each {y >= Y_k}) where the hints decide every row."""
    Ys = A
    s = torch.ones_like(a64)
    a_s = a64
    H, R = HR[0], HR[1]
    # (a NaN hint is none: +inf, above which no finite entry lies, the same
    # supports and refusals; a guess R that is not finite is the hint
    # itself, else 0: its sums shifted by Y_c - R are then those shifted by
    # Y_c - H, under the same test, the same numbers as when refused; both
    # routes' sums then hold no 0 times an infinity)
    H = torch.where(torch.isnan(H), math.inf, H)
    R = torch.where(torch.isfinite(R), R, torch.where(torch.isfinite(H), H, 0.0))
    K = comm.candidates
    stats, least, maxes = _hinted_stats_numba(*on_numba, H, R, K) if on_numba else _hinted_stats_torch(Ys, H, R, K)
    comm.all_reduce_sum_least(stats, least, maxes)
    sq, S, n, F1, Q1, m, S0, n0, FR, QR = stats
    below, ymax = maxes
    nrm = torch.sqrt(sq)
    row_finite = torch.isfinite(nrm)
    nonzero = (nrm > a_s) & finite & row_finite
    a_eff, b_eff = torch.where(nonzero, a_s, 0.0), torch.where(nonzero, bf, 0.0)
    active = (b_eff > 0) & (ymax > 0)
    xp = array_namespace(S)
    t0 = _k.tau_below(S, n, m, a_eff, b_eff, xp, r=_k.ratio_above(F1, Q1, n, m, xp))
    proven = (H > 0) & (H < math.inf) & (H <= t0)
    # the candidates: the K least y above H, in increasing order (a (K,
    # rows) tensor: all K at once); candidate j's support sums are those
    # above H less the terms of the j entries below it (proved off the
    # support), its test that of the first; a row is decided by the first
    # candidate that passes, after the others before it failed (phi <= 0
    # on conditioned sums: they are off the support, and tau >= them); a
    # candidate tied with the one before it is that one, already tested
    C = least
    prev = torch.cat([H[None], C[:-1]])  # (the cut below each: {y > prev} = {y >= C})
    j = torch.arange(K, dtype=C.dtype, device=C.device)[:, None]

    # (the sums F1, Q1, FR, QR less, for each candidate, the terms y - H,
    # (y - H)^2, y - R, (y - R)^2 of the candidates below it: exclusive
    # cumulative sums, the four at once)
    dH, dR = C[:-1] - H, C[:-1] - R
    removed = torch.cumsum(torch.stack([dH, dH * dH, dR, dR * dR]), dim=1)
    sums = torch.stack([F1, Q1, FR, QR])[:, None] - torch.cat([removed.new_zeros((4, 1, C.shape[1])), removed], dim=1)
    F, D2, conditioned = _candidate_sums(C, n - j, *sums, H, R)
    passes = C - b_eff * F * _group_factor(torch.sqrt(D2), a_eff) > 0
    fresh = (C < math.inf) & (C > prev)
    through = (fresh & conditioned & ~passes) | (~fresh & (C < math.inf))  # (off the support, or a tie)
    before = torch.cat([torch.ones_like(proven)[None], torch.cumprod(through[:-1].to(torch.int64), dim=0).bool()])
    here = proven & before & fresh & conditioned & passes  # (at most one j per row)
    decided = here.any(dim=0)
    Yk, Fk, D2, kf = (torch.where(here, v, 0.0).sum(dim=0) for v in (C, F, D2, (n - j).expand_as(C)))
    cut = torch.where(decided, torch.where(here, prev, 0.0).sum(dim=0), H)
    below = torch.where(decided & ~here[0], cut, below)  # (the largest y off the support)
    # (the search's start: t0, or the last candidate found off the support, if greater)
    start = torch.maximum(t0, torch.where(proven & before & through & fresh, C, 0.0).amax(dim=0))
    rest = active & ~decided
    sups = None if on_numba and not bool(rest.any()) else Ys.map(lambda Y, c: Y > c, cut)
    if bool(rest.any()):
        # the other rows take the search's route: from t0 >= H_r, the bound
        # of the sums above H_r, where the hint proved itself (its candidate
        # did not: an entry between the hint and the new threshold; or its
        # shifted sums cancel), else from the bound of the whole row's sums
        # (the route without hints'); the candidate above it (two
        # all-reduces) decides a training step's rows; the rows decided
        # already are left out (b = 0 there)
        start = torch.where(proven, start, _k.tau_below(S0, n0, m, a_eff, b_eff, xp))
        sups2, Yk2, below2, F2, D22, k2 = _support_and_numbers(
            Ys, a_eff, torch.where(rest, b_eff, 0.0), comm, torch.where(rest, start, 0.0), ymax)
        sups = [torch.where(r, s2, s1) for r, s2, s1 in zip(torch.split(rest[:, None], Ys.sizes), sups2, sups)]
        Yk, below, Fk, D2, kf = (torch.where(rest, v2, v1) for v2, v1 in ((Yk2, Yk), (below2, below), (F2, Fk), (D22, D2), (k2, kf)))
    return Ys, s, a_s, nrm, row_finite, nonzero, (sups, Yk, below, Fk, D2, kf)


def _candidate_sums(C, n, F1, Q1, FR, QR, H, R):
    """(F, D2, conditioned): the sums of y - C and of its squares over the
    n entries y >= C (C the least of them) from their sums shifted by the
    hint H (F1, Q1) and by the guess R (FR, QR), moved by C - R where that
    does not cancel, else by C - H (see :func:`_hinted_numbers`);
    ``conditioned`` where either move is accepted (or n = 1: the sums are
    0 exactly)."""
    d = C - H
    F = F1 - n * d
    D2 = Q1 - d * (F1 + F)
    by_h = (3.0 * n * d <= F1) & (3.0 * d * (F1 + F) <= Q1)
    dr = C - R
    Fr = FR - n * dr
    Dr = QR - dr * (FR + Fr)
    by_r = torch.where(dr >= 0, (3.0 * n * dr <= FR) & (3.0 * dr * (FR + Fr) <= QR), 2.0 * n * -dr <= Fr)
    F, D2 = torch.where(by_r, Fr, F), torch.where(by_r, Dr, D2)
    one = n == 1  # (the support is C alone)
    F, D2 = torch.where(one, 0.0, F), torch.where(one, 0.0, D2)
    return F, D2, one | by_r | by_h


# ----------------------------------------------------------------------- plans


@dataclass
class ShardedPlan:
    """A term made ready for one ``DTensor`` parameter (see the module doc)."""

    key: tuple
    pen: Any
    comm: _Comm
    run_local: Callable[[torch.Tensor, float, bool], None]

    def run(self, leaf: DTensor, step: float, check_finite: bool) -> None:
        local = leaf.to_local()
        if check_finite:
            self._check_finite(leaf, local)
        self.run_local(local, step, False)

    def _check_finite(self, leaf: DTensor, local: torch.Tensor) -> None:
        """:meth:`_Comm.check_finite`, its error carrying ``leaf`` (``.leaf``):
        a rank whose own shard is finite names the term from it
        (:meth:`proxlib.torch.ProximalStep._named_non_finite`)."""
        try:
            self.comm.check_finite(local)
        except ValueError as e:
            e.leaf = leaf
            raise

    grouping: str | None = None
    on_numba: None = None  # (the local shard's kernels run inside run_local)
    split_rows: Callable | None = None  # (exclusive penalties on split rows) a step's batch's part: see build_plan
    # (exclusive penalties on split rows) the last step's guesses of each
    # row's threshold and support's least entry for the next, a float64
    # (2, rows) tensor (see _group_exclusive_split_blocks; None: none)
    split_hint: torch.Tensor | None = None

    @property
    def batched(self) -> bool:
        """Whether the term joins a step's batch of split rows (:func:`run_split_rows`)."""
        return self.split_rows is not None

    def member(self, leaf: DTensor, step: float, check_finite: bool):
        """The term's part of a step's batch of split rows (checked now, as
        :meth:`run` checks), or None where it runs alone."""
        local = leaf.to_local()
        if check_finite:
            self._check_finite(leaf, local)
        prepared = self.split_rows(local, step)
        return None if prepared is None else _SplitMember(self, leaf, *prepared)

    def run_together(self, members: list) -> None:
        run_split_rows(members)

    def holds(self, leaf) -> bool:
        """False: a sharded plan is found by comparing keys (its placements
        among them; see :meth:`proxlib.torch.prox._Plan.holds`), and has no
        in-place Numba run to take directly."""
        return False

    def value(self, leaf: DTensor) -> float:
        """Omega of the full tensor (gathered once: for logging)."""
        full = B.working_tensor(leaf.full_tensor())
        view = full if self.grouping is None else B.rows(full, self.grouping)
        return float(self.pen.value(view))


def build_plan(term, leaf: DTensor, resolve_penalty) -> ShardedPlan:
    """Check and compile ``term`` for the sharded ``leaf`` (thresholds of the
    full tensor, each rank's part of them, the collectives)."""
    key = _plan_key(leaf)
    if leaf.dtype not in (torch.float32, torch.float64):
        raise NotImplementedError(f"sharded proximal steps need float32 or float64 parameters, got {leaf.dtype}")
    grouping = term.grouping
    comm = _Comm(leaf, grouping)
    full_shape = tuple(leaf.shape)
    stand_in = torch.zeros((), dtype=leaf.dtype, device=leaf.to_local().device).expand(full_shape)
    view = stand_in if grouping is None else B.rows(stand_in, grouping)
    pen = resolve_penalty(view)
    if not isinstance(pen, R.Penalty) and not _is_prox_object(pen):  # (a builder's result: as on an unsharded tensor)
        raise TypeError(f"penalty builder returned {pen!r}, which is not a penalty object with prox(v, step) and value(x)")
    if not isinstance(pen, R.Penalty):
        raise NotImplementedError(f"a penalty outside proxlib's registry ({pen!r}) cannot run on a sharded parameter")
    if getattr(pen, "groups", None) is not None:
        raise NotImplementedError("groups= labels are not supported on sharded parameters; use a grouping")
    layout = R.layout_of(pen, view, contiguous=False)
    terms = _range.terms(pen, layout)  # (checks the weights against the rows)
    fixed = pen.fixed()
    kernel = getattr(torch_dev, pen.kernel)

    def local_view(local):
        return local if grouping is None else B.rows(local, grouping)

    def gathered_rows(local):
        """The full tensor's rows (or vector), gathered from every rank."""
        leaf_full = DTensor.from_local(local, comm.mesh, comm.placements, run_check=False, shape=torch.Size(full_shape), stride=_contiguous_stride(full_shape)).full_tensor()
        if any(p.is_shard() for p in comm.placements):  # (Replicate() everywhere: the local tensor is the full one, nothing sent)
            comm.bytes += leaf_full.numel() * leaf_full.element_size()
        return leaf_full if grouping is None else B.rows(leaf_full, grouping)

    def write_full(local, rows_full):
        full = rows_full if grouping is None else B.from_rows(rows_full, full_shape, grouping)
        local.copy_(comm.local_of(full))

    def solve_full(local, step):
        """Thresholds beyond the kernels' range (every rank sees the same full
        thresholds, so all take this branch): the public function's exact
        transformation (proxlib._range.solve) on the gathered tensor."""
        rows = gathered_rows(local)
        data = rows.reshape(layout.data.shape)
        X = _range.solve(pen, _range.Data(data), step, kernel, lambda k, x, t: k(x, *t, *fixed), terms)
        write_full(local, X.reshape(rows.shape))

    # the thresholds the public function forms at a step (the same bits:
    # proxlib._range), this rank's part of them; kept while the step is the same
    if pen.layout == "flat" and pen.kernel == "owl":
        thresholds_at = _range.AtStep(terms)  # (the full vector's)

        def run_local(local, step, check_finite):  # noqa: ANN001 - OWL couples every entry: gather once
            v = gathered_rows(local).reshape(-1)
            thr = thresholds_at(step, v)
            if thr is None:
                return solve_full(local, step)
            write_full(local, kernel(v, *thr).reshape(view.shape))

    elif pen.layout == "flat":
        def localize(full):
            """Each rank's part of elementwise thresholds, in the local shard's shape."""
            out = []
            for t in full:
                if isinstance(t, float) or t.shape[0] == 1:
                    out.append(t)
                else:
                    tv = t.reshape(view.shape)
                    full_t = tv if grouping is None else B.from_rows(tv, full_shape, grouping)
                    out.append(local_view(comm.local_of(full_t.contiguous())).reshape(-1))
            return tuple(out)

        thresholds_at = _range.AtStep(terms, localize)

        def run_local(local, step, check_finite):
            V_ = local_view(local)
            thr = thresholds_at(step, V_)
            if thr is None:
                return solve_full(local, step)
            X = kernel(V_.reshape(-1), *thr, *fixed)
            _write_rows(local, V_, X, grouping, V_.shape)

    else:
        kind = pen.kernel
        kw_fused = pen.fused_finite_check

        def localize(full):
            # per-row thresholds of this rank's rows; GrOWL's weights are over all rows' norms
            return full if kind == "growl" else tuple(comm.local_rows_of(t) for t in full)

        thresholds_at = _range.AtStep(terms, localize)

        def local_rows(local):
            V_ = local_view(local)
            G_loc = V_.shape[0] if V_.ndim > 1 else 1
            return V_, V_.reshape(G_loc, math.prod(V_.shape) // G_loc if G_loc else math.prod(V_.shape[1:]))

        def exclusive_thresholds(thr):
            """(a, b) of _group_exclusive_split: the exclusive lasso's a is 0."""
            return (torch.zeros_like(thr[0]), thr[0]) if kind == "exclusive_lasso" else (thr[0], thr[1])

        def split_rows(local, step):
            """(rows, thresholds, write) of this rank's split rows at ``step``
            for a step's batch (:func:`run_split_rows`; the exclusive
            penalties' thresholds as (a, b)), or None where the thresholds
            are beyond the kernels' range (run_local then solves)."""
            V_, Rw = local_rows(local)
            thr = thresholds_at(step, Rw)
            if thr is None:
                return None
            thr = thr if kind in ("group_lasso", "growl") else exclusive_thresholds(thr)
            return Rw, thr, lambda X: _write_rows(local, Rw, X, grouping, V_.shape)

        def run_local(local, step, check_finite):
            V_, Rw = local_rows(local)
            thr = thresholds_at(step, Rw)
            if thr is None:
                return solve_full(local, step)
            if not comm.split and kind != "growl":
                X = kernel(Rw, *thr, *fixed, **({"check_finite": check_finite} if kw_fused else {}))
            elif kind in ("group_lasso", "growl"):
                nb = _split_kernels([Rw]) if comm.split else None
                nrm = _row_norms_split(Rw, comm, nb) if comm.split else _stages.row_norms(Rw, torch_dev.PRIMITIVES)
                if check_finite and not bool(torch.isfinite(nrm).all()):
                    raise ValueError("the parameter contains NaN or Inf")
                # (GrOWL's OWL couples all G norms: gathered where the rows are also partitioned)
                f = (_norms_factor(kind, nrm, thr[0]) if kind == "group_lasso"
                     else comm.local_rows_of(_norms_factor(kind, comm.gather_rows(nrm), thr[0])))
                X = _scale_local_rows(Rw, f, nb)
            elif kind in ("exclusive_lasso", "group_exclusive"):
                X = _group_exclusive_split(Rw, *exclusive_thresholds(thr), comm)
            else:  # pragma: no cover - every row kernel is listed above
                raise NotImplementedError(f"no sharded path for {kind!r}")
            _write_rows(local, Rw, X, grouping, V_.shape)

        # (GrOWL on rows also partitioned gathers its norms: it runs alone)
        if comm.split and (kind in ("group_lasso", "exclusive_lasso", "group_exclusive") or (kind == "growl" and not comm.partitioned)):
            return ShardedPlan(key, pen, comm, run_local, grouping, split_rows=split_rows)

    return ShardedPlan(key, pen, comm, run_local, grouping)


@dataclass
class _SplitMember:
    """A sharded term's part of a step's batch of split rows."""

    plan: ShardedPlan
    leaf: Any
    rows: torch.Tensor
    thresholds: tuple
    write: Callable
    kind: str = "split_rows"


def run_split_rows(members: list) -> None:
    """The group-lasso, GrOWL, exclusive and group+exclusive terms of a step
    whose rows are split across the same ranks, solved together: one set of
    collectives for all of them instead of one per tensor (the group lasso's
    and GrOWL's row norms: :func:`_row_norms_split_blocks`, one all-reduce
    for float32 data, each GrOWL term's OWL of its G norms then on every
    rank alike; the exclusive penalties': :func:`_group_exclusive_split_blocks`,
    4 all-reduces in a first training step, then 1 collective with the
    hints each step leaves its plans for the next, float32, on up to
    _GATHER_RANKS ranks); each tensor's result is the one it has alone."""
    buckets: dict = {}
    for m in members:
        family = "norms" if m.plan.pen.kernel in ("group_lasso", "growl") else "exclusive"
        key = (tuple(id(g) for g in m.plan.comm.split_groups), m.rows.device, family, m.rows.dtype if family == "norms" else None)
        buckets.setdefault(key, []).append(m)
    with torch.no_grad():
        for (_, _, family, _), on in buckets.items():
            comm = on[0].plan.comm
            if family == "norms":
                nb = _split_kernels([m.rows for m in on])
                for m, nrm in zip(on, _row_norms_split_blocks([m.rows for m in on], comm, nb)):
                    m.write(_scale_local_rows(m.rows, _norms_factor(m.plan.pen.kernel, nrm, m.thresholds[0]), nb))
            else:
                hints = [m.plan.split_hint for m in on]
                Xs = _group_exclusive_split_blocks([m.rows for m in on], *zip(*(m.thresholds for m in on)), comm, hints)
                for m, X, h in zip(on, Xs, hints):
                    m.write(X)
                    m.plan.split_hint = h


def _norms_factor(kind: str, nrm, thr):
    """Each row's factor from the norms ``nrm`` of all the tensor's rows (split
    rows: every rank holds them all): the group lasso's (1 - a_r/||w_r||)_+,
    or GrOWL's from the OWL of the norms with weights ``thr``."""
    if kind == "group_lasso":
        return _stages.group_lasso_factor(nrm, thr)
    return _stages.growl_factor(nrm, thr, torch_dev._owl_vector)


def _write_rows(local, Rw, X, grouping, view_shape) -> None:
    """Make ``local`` hold the rows ``X`` (nothing to do when X was written in
    place into rows that are a view of ``local``)."""
    if X is Rw and Rw.untyped_storage().data_ptr() == local.untyped_storage().data_ptr():
        return
    Xv = X.reshape(view_shape)
    local.copy_(Xv if grouping is None else B.from_rows(Xv, tuple(local.shape), grouping))

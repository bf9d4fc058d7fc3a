r"""Row statistics in one Triton kernel: sums of squares and l2 norms of the rows of a matrix.

The row operators (group lasso, GrOWL) need one number per row r of ``W``
(rows along dim 0, any strides, float32 or float64): ``||w_r||_2``.  Written
with torch operations that number costs a float64 copy of ``W`` (the cast
before the squares), i.e. 8 + 8 + 8 more bytes per element than the 4 (or 8)
of reading ``W`` once.  Here ONE kernel reads every element of ``W`` exactly
once, in its own dtype, and accumulates in float64 in registers:

* :func:`row_sumsq` -- ``sum_j w_rj^2`` accumulated in float64 with no scaling
  (the ``row_sumsq`` primitive of :mod:`._stages`).  For float32 data every
  square is exact in float64 and nothing can overflow or underflow.
* :func:`row_norms` -- ``||w_r||_2`` (float64), safe from overflow and
  underflow for any data, with no host read.  float32 data: the square root of
  the sum above.  float64 data: Blue's three accumulators (the algorithm of
  LAPACK's ``dnrm2`` since 3.10; Anderson, "Algorithm 978: Safe scaling in the
  Level 1 BLAS", ACM TOMS 44, 2017): entries with ``|x| < 2^-511`` are summed
  as ``(x 2^537)^2``, entries with ``|x| > 2^486`` as ``(x 2^-538)^2``, the
  others as ``x^2``.  Scaling by powers of two is exact, no term or sum can
  overflow, and scaled squares of subnormal numbers are exact or rounded like
  normal ones, so a row of subnormals, a row at 1e300 and a row mixing both
  are as accurate as a row at 1.  The three sums are combined per row in the
  kernel's epilogue (below).  They are sums, so partial sums over pieces of a
  row add up (this is how long rows are split over programs).

Combination of the float64 sums (``ssml, smed, sbig``), as ``dnrm2``:
``sbig > 0``: ``sqrt(sbig + (smed 2^-538) 2^-538) 2^538`` (small entries are
below sbig's rounding); else with ``ymed = sqrt(smed)``, ``ysml = sqrt(ssml)
2^-537``: ``ymax sqrt(1 + (ymin/ymax)^2)``.  A NaN entry gives a NaN norm, an
infinite one (without NaN) an infinite norm, a norm beyond the largest float64
inf.

Accuracy.  Let d be the depth of the summation: ``ceil(span / BLOCK_C)``
sequential additions per lane, then the reduction over the BLOCK_C lanes
(depth < BLOCK_C), then the sum over the ``splits`` partial sums (depth <
splits); :attr:`Plan.depth` bounds it (about 2^10 at most with the GPU plan).
With u = 2^-53 and nonnegative terms, the computed sum of squares is within
``d u / (1 - d u)`` of the exact sum relative to it (float32 data: exact
squares; float64: one more u for the square).  The norm adds half of that
plus at most 4 u for the square root and the combination, plus 2^-1074
absolute when the norm itself is subnormal.  The tests check this bound
against sums in exact rational arithmetic.  The summation order differs from
torch's and NumPy's, so results agree with them to these bounds, not bit for
bit.  FMA contraction is off (``enable_fp_fusion=False``): the compiled kernel
rounds every operation as written, as the interpreter does; only the order of
the additions differs between them.

Memory access.  A program owns ``BLOCK_R`` rows and a span of the columns
and walks the span in tiles of ``BLOCK_R x BLOCK_C``.  The tile is long along
the axis of the unit stride: for C-contiguous rows ``BLOCK_C`` covers up to a
whole row (``BLOCK_R`` rows of short ones), for the transposed view of a
row-major matrix (rows are columns: the "channel" and "shape" groupings)
``BLOCK_R`` runs along memory and ``BLOCK_C`` across, so both read memory
coalesced; the unit stride is passed as a compile-time flag, so Triton
vectorises those loads.  Other strides are read as they come.  When there are
too few row blocks to fill the device (few, long rows; a whole layer as one
row), the columns are split over ``splits`` programs that write float64
partial sums, and a second launch of the same kernel adds them (reading
``splits`` floats per row).  Launches per call: one, or two with splits; no
host synchronisation, no scratch but the (accumulators, rows, splits)
partials.

On CUDA tensors the kernel is compiled by Triton; on any other tensor, or
with ``TRITON_INTERPRET=1``, it runs in Triton's interpreter (with large
tiles, which only changes the summation order), which is how CI tests it on
CPU.  Importing this module raises ImportError when Triton is missing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel

__all__ = ["row_sumsq", "row_norms", "Plan", "plan", "kernel"]

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0

# Blue's thresholds and scales for float64 (LAPACK's la_constants, radix 2,
# 53 digits, exponents -1021..1024): powers of two, so scaling is exact.
_TSML = tl.constexpr(2.0**-511)  # below: summed scaled up
_TBIG = tl.constexpr(2.0**486)  # above: summed scaled down
_SSML = tl.constexpr(2.0**537)
_SBIG = tl.constexpr(2.0**-538)
_INV_SSML = tl.constexpr(2.0**-537)
_INV_SBIG = tl.constexpr(2.0**538)

# tl.sum and tl.zeros are @triton.jit functions, which the interpreter (not
# switched on globally) cannot call: the kernel uses the builtins they wrap.
_ADD = tl.standard._sum_combine

# OUT: what the kernel writes
_PARTIAL, _SUMSQ, _NORM = 0, 1, 2


def blue_squares(x, acc, acc_s, acc_b):
    """Blue's three accumulators (module doc) plus the squares of the float64
    tile ``x``: ``(acc + x_med^2, acc_s + (x_sml 2^537)^2, acc_b + (x_big 2^-538)^2)``,
    each entry in exactly one of them (NaN in the first)."""
    a = tl.abs(x)
    small = a < _TSML
    big = a > _TBIG
    xs = tl.where(small, x, 0.0) * _SSML  # scaled after the choice: no overflow
    xb = tl.where(big, x, 0.0) * _SBIG
    xm = tl.where(small | big, 0.0, x)  # NaN lands here
    return acc + xm * xm, acc_s + xs * xs, acc_b + xb * xb


def blue_scaled_norm(smed, ssml, sbig):
    """The norm of Blue's three sums (module doc) as ``(y, s)``, norm = y s
    with s a power of two: ``y`` is finite for every finite row (no
    overflow: s = 2^538 where there are big entries) and keeps full
    precision for rows of tiny entries (s = 2^-537 where every entry is
    small, so that y is not subnormal); NaN entries give y = NaN, infinite
    ones y = inf.  ``y * s`` is the norm as ``dnrm2`` combines the sums."""
    nbig = tl.sqrt(sbig + (smed * _SBIG) * _SBIG)
    ymed = tl.sqrt(smed)
    ysml = tl.sqrt(ssml) * _INV_SSML
    ymax = tl.where(ymed > ysml, ymed, ysml)
    ymin = tl.where(ymed > ysml, ysml, ymed)
    q = ymin / tl.where(ymax > 0.0, ymax, 1.0)
    only_small = (sbig == 0.0) & (smed == 0.0)
    y = tl.where(sbig > 0.0, nbig, tl.where(only_small, tl.sqrt(ssml), ymax * tl.sqrt(1.0 + q * q)))
    s = tl.where(sbig > 0.0, _INV_SBIG, tl.where(only_small, _INV_SSML, 1.0))
    return tl.where(smed != smed, smed, y), s


#: the device functions above, bound into the kernels that use them (as_kernel's helpers)
HELPERS = {"blue_squares": blue_squares, "blue_scaled_norm": blue_scaled_norm}


def _row_stats(X, Y, G, M, s_r, s_c, span, S,
               BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ROWS_FAST: tl.constexpr, UNIT: tl.constexpr,
               BLUE: tl.constexpr, PARTIALS: tl.constexpr, OUT: tl.constexpr):  # fmt: skip
    """Statistics of rows ``pid0*BLOCK_R ..`` over columns ``[pid1*span, (pid1+1)*span)``.

    ``X``: the (G, M) data with strides (s_r, s_c); with ``PARTIALS`` instead
    the float64 partial sums of a first pass, (1 or 3, G, M) contiguous.
    ``ROWS_FAST``: the tile runs along rows (the unit stride is s_r), else
    along columns; ``UNIT``: that stride is 1.  ``BLUE``: three accumulators
    (float64 data), else one.  ``OUT``: write partial sums to Y (nacc, G, S),
    or the sums of squares / the norms to Y (G,).
    """
    pid_r = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < G
    lo = pid_s * span
    hi = tl.minimum(lo + span, M)
    acc = tl.full([BLOCK_R, BLOCK_C], 0.0, tl.float64)  # plain (BLUE: medium) squares
    acc_s = tl.full([BLOCK_R, BLOCK_C], 0.0, tl.float64)  # BLUE: small, scaled up
    acc_b = tl.full([BLOCK_R, BLOCK_C], 0.0, tl.float64)  # BLUE: big, scaled down
    # Full tiles first, masked by row only (the mask is constant along the
    # columns, so contiguous columns load as vectors), then the last partial one.
    full = lo + (hi - lo) // BLOCK_C * BLOCK_C
    for phase in tl.static_range(2):
        start = lo if phase == 0 else full
        stop = full if phase == 0 else hi
        for c in tl.range(start, stop, BLOCK_C):
            k = tl.max_contiguous(tl.multiple_of(c + tl.arange(0, BLOCK_C).to(tl.int64), BLOCK_C), BLOCK_C)
            if phase == 0:
                mask = live[:, None] & (k >= 0)[None, :]
            else:
                mask = live[:, None] & (k < hi)[None, :]
            if ROWS_FAST and UNIT:
                off = r[:, None] + k[None, :] * s_c
            elif UNIT:
                off = r[:, None] * s_r + k[None, :]
            else:
                off = r[:, None] * s_r + k[None, :] * s_c
            if PARTIALS:
                acc += tl.load(X + off, mask=mask, other=0.0)
                if BLUE:
                    acc_s += tl.load(X + G * M + off, mask=mask, other=0.0)
                    acc_b += tl.load(X + 2 * G * M + off, mask=mask, other=0.0)
            else:
                x = tl.load(X + off, mask=mask, other=0.0).to(tl.float64)
                if BLUE:
                    acc, acc_s, acc_b = blue_squares(x, acc, acc_s, acc_b)
                else:
                    acc += x * x
    smed = tl.reduce(acc, 1, _ADD)
    if OUT == 0:  # partial sums, (nacc, G, S)
        tl.store(Y + r * S + pid_s, smed, mask=live)
        if BLUE:
            tl.store(Y + G * S + r * S + pid_s, tl.reduce(acc_s, 1, _ADD), mask=live)
            tl.store(Y + 2 * G * S + r * S + pid_s, tl.reduce(acc_b, 1, _ADD), mask=live)
    elif OUT == 1:
        tl.store(Y + r, smed, mask=live)
    else:
        if BLUE:
            y, s = blue_scaled_norm(smed, tl.reduce(acc_s, 1, _ADD), tl.reduce(acc_b, 1, _ADD))
            nrm = y * s
        else:
            nrm = tl.sqrt(smed)
        tl.store(Y + r, nrm, mask=live)


# Sizes change every call: one compiled variant for all of them.  The strides
# keep Triton's divisibility specialisation (it enables vector loads).
_NO_SPECIALIZE = ["M", "span", "S"]


@functools.cache
def kernel(interpret: bool):
    """The row-statistics kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_row_stats, interpret, helpers=HELPERS, do_not_specialize=_NO_SPECIALIZE)


# ------------------------------------------------------------------ plans


@dataclass(frozen=True)
class Plan:
    """Tiles and grid of one call (see the module doc).

    ``block_r x block_c`` tile, ``rows_fast``: the tile's long side runs along
    rows; ``span`` columns per program, ``splits`` programs per row block;
    ``fin_block_r x fin_block_c``: tile of the pass that adds the partial sums
    (when ``splits > 1``); ``num_warps``."""

    block_r: int
    block_c: int
    rows_fast: bool
    span: int
    splits: int
    fin_block_r: int
    fin_block_c: int
    num_warps: int

    @property
    def depth(self) -> int:
        """Upper bound on the additions a square passes through (module doc)."""
        d = -(-self.span // self.block_c) + self.block_c
        return d + (self.fin_block_c + self.splits if self.splits > 1 else 0)


def plan(G: int, M: int, s_r: int, s_c: int, *, tile: int, programs: int, row_tile: int = 128) -> Plan:
    """Tiles for a (G, M) matrix with strides (s_r, s_c).

    ``tile``: elements per tile (per loop step of a program); ``programs``:
    split the columns until about that many programs run (the device's
    occupancy; 1 never splits); ``row_tile``: the tile's extent along memory
    when rows are the unit-stride axis."""
    p2 = triton.next_power_of_2
    G, M = max(G, 1), max(M, 1)  # empty matrices launch nothing; any plan does
    rows_fast = (s_r == 1 and (s_c != 1 or M == 1)) or (s_c != 1 and abs(s_r) < abs(s_c))
    if rows_fast:
        block_r = min(p2(G), row_tile, tile)
        block_c = min(p2(M), max(1, tile // block_r))
    else:
        block_c = min(p2(M), tile)
        block_r = min(p2(G), max(1, tile // block_c))
    row_blocks = triton.cdiv(G, block_r)
    tiles = triton.cdiv(M, block_c)
    splits = 1
    if row_blocks < programs and tiles > 1:
        splits = min(tiles, triton.cdiv(programs, row_blocks))
    span = triton.cdiv(tiles, splits) * block_c
    splits = triton.cdiv(M, span)
    fin_block_c = p2(splits)
    fin_block_r = min(p2(G), max(1, tile // fin_block_c))
    num_warps = max(1, min(8, block_r * block_c // 256))
    return Plan(block_r, block_c, rows_fast, span, splits, fin_block_r, fin_block_c, num_warps)


@functools.cache
def _sm_count(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).multi_processor_count


def default_plan(W, interpret: bool) -> Plan:
    """The plan :func:`row_norms` uses: 16 KiB tiles and 4 programs per SM on
    a GPU; in the interpreter one large tile (fewer, bigger numpy steps)."""
    G, M = W.shape
    s_r, s_c = W.stride()
    if interpret:
        return plan(G, M, s_r, s_c, tile=2**16, programs=1, row_tile=2**16)
    return plan(G, M, s_r, s_c, tile=16384 // W.element_size(), programs=4 * _sm_count(W.device.index or 0))


# ------------------------------------------------------------------ entry points


def _run(W, out_kind: int, blue: bool, p: Plan | None):
    global launches
    import torch

    if W.ndim != 2 or W.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"W must be a 2-D float32 or float64 tensor, got {W.ndim}-D {W.dtype}")
    G, M = W.shape
    if G == 0 or M == 0:
        return torch.zeros(G, dtype=torch.float64, device=W.device)
    interpret = W.device.type != "cuda" or _interpreting_everything()
    p = p or default_plan(W, interpret)
    s_r, s_c = W.stride()
    y = torch.empty(G, dtype=torch.float64, device=W.device)
    first = y if p.splits == 1 else torch.empty((3 if blue else 1, G, p.splits), dtype=torch.float64, device=W.device)
    k = kernel(interpret)
    opts = {} if interpret else {"num_warps": p.num_warps, "enable_fp_fusion": False}
    consts = dict(BLUE=blue, **opts)
    launch = [
        ((triton.cdiv(G, p.block_r), p.splits), (W, first, G, M, s_r, s_c, p.span, p.splits),
         dict(BLOCK_R=p.block_r, BLOCK_C=p.block_c, ROWS_FAST=p.rows_fast, UNIT=(s_r if p.rows_fast else s_c) == 1,
              PARTIALS=False, OUT=out_kind if p.splits == 1 else _PARTIAL)),
    ]  # fmt: skip
    if p.splits > 1:  # add the partial sums: rows of `splits` contiguous floats
        launch.append(
            ((triton.cdiv(G, p.fin_block_r), 1), (first, y, G, p.splits, p.splits, 1, p.fin_block_c, 1),
             dict(BLOCK_R=p.fin_block_r, BLOCK_C=p.fin_block_c, ROWS_FAST=False, UNIT=True, PARTIALS=True, OUT=out_kind))
        )  # fmt: skip
    for grid, args, kw in launch:
        launches += 1
        if interpret:
            k[grid](*args, **kw, **consts)
        else:
            with torch.cuda.device(W.device):
                k[grid](*args, **kw, **consts)
    return y


def row_sumsq(W, *, plan: Plan | None = None):
    """``sum_j W[r, j]^2`` for each row r, accumulated in float64 with no scaling: (G,) float64.

    ``W``: a 2-D float32 or float64 torch tensor, any strides.  Exact squares
    for float32 data (no overflow, no underflow); float64 data may overflow
    to inf or lose terms to underflow, as the unscaled sum does (use
    :func:`row_norms` for norms).  One pass over ``W`` (module doc);
    ``plan`` overrides the tiles (tests)."""
    return _run(W, _SUMSQ, False, plan)


def row_norms(W, *, plan: Plan | None = None):
    """``||W[r, :]||_2`` for each row r: (G,) float64, overflow- and underflow-safe.

    ``W``: a 2-D float32 or float64 torch tensor, any strides.  One pass over
    ``W`` and no host synchronisation; accuracy in the module doc (float64
    data: Blue's three accumulators).  ``plan`` overrides the tiles (tests)."""
    return _run(W, _NORM, W.dtype.itemsize == 8, plan)

r"""The exclusive penalties' rows in one Triton kernel (torch tensors).

The exclusive-lasso prox of a row ``w`` (length m, parameter b >= 0),

.. math:: x = \arg\min_x \tfrac12 \|x - w\|_2^2 + \tfrac{b}{2} \|x\|_1^2,

is ``x_i = sign(w_i) (|w_i| - tau)_+`` with the threshold read off the row's
sorted magnitudes (:func:`._xp_kernels.exclusive_lasso`, whose steps this
kernel repeats; see :func:`._xp_kernels.exclusive_magnitudes` for the
formulas); group+exclusive, ``+ a ||x||_2``, is ``x = c u(b c)`` with u the
exclusive prox and c the root of a monotone scalar equation
(:func:`._xp_kernels.group_exclusive`).  Written as array code each is
seventy or more torch operations per call (the scale, the sort, the shifted
sums, the support, the root search, the output), each a launch on a GPU and
several microseconds of the host's time: on a ResNet-18 step most of the
exclusive penalties' 440 and 884 launches.  Here the whole operator is ONE
launch: program ``p`` takes ``BLOCK_R`` whole rows, each padded with zeros
to ``BLOCK_M`` (a power of two >= m) lanes held in registers, and

1. loads them in their own dtype (any strides) and widens to float64;
2. scales each row by the power of two ``s`` with max|w|/s in [1, 2)
   (read off the bits of max|w|: exact);
3. sorts the scaled magnitudes decreasingly by a bitonic network
   (``log2(BLOCK_M) (log2(BLOCK_M) + 1) / 2`` compare-exchange steps; the
   padding zeros sort last, below every entry the support can hold);
4. forms the shifted sums F_j = F_{j-1} + j (Y_{j-1} - Y_j) as one
   cumulative sum;
5. group+exclusive (``GROUP``): the row norm, the group lasso's factor on
   rows with b = 0, and on the others the support at the root (the
   recurrence of D2_j, :func:`._xp_kernels.group_exclusive_shrink`) and the
   root itself by :mod:`._triton_shrink`'s safeguarded Newton steps, the
   same expressions in the same order, until every row of the program has
   converged;
6. the support size k = #{j: Y_j > beta F_j} (beta = b, or b c), Y_k, F_k,
   and x in the row's dtype; per row the array code's ``total`` (F_m + Y_1;
   group+exclusive: the row norm) where the row is finite, NaN where it
   holds NaN or Inf (which the network's maximum and minimum would drop),
   which the caller reads only with ``check_finite``.

Every expression is the array code's, in the same order; the sort yields
the same values; the cumulative sums are sequential in Triton's
interpreter (NumPy's ``cumsum``, as torch's on the CPU), so on CPU tensors
the exclusive lasso is the array code's result bit for bit (the tests check
it on Hypothesis rows).  Group+exclusive also sums a row's squares twice
(its norm, D2 at the support), in the interpreter by NumPy's pairwise sum,
in the array code by torch's: the same result to a few units in the last
place (the tests check it against the NumPy reference to the parity
tolerance, and its optimality certificates).  A GPU's scan adds in a tree
(the same non-negative terms).  Contraction into FMAs is switched off
(``enable_fp_fusion=False``); IEEE division and square root are correctly
rounded on the GPU as in NumPy.  A row holding NaN or Inf comes back as it
is, as from every backend.

In a training step (:mod:`proxlib.torch._batched`) the rows of every
tensor of one dtype and row length are read and written in place, through
the row tables of :mod:`._triton_multi` (each row's address and two-level
layout: a convolution's "filter", "channel" and "shape" rows, a Linear's
rows and columns, any dense storage), by one launch
(:func:`solve_table`): the same operations on the same values, so the same
result as the rows stacked, copied in and back.

Cost: O(m log^2 m) compare-exchanges per row in registers, plus O(steps)
per row for the root search; no scratch beyond the output and G floats;
no host synchronisation (without ``check_finite``).  The exclusive
lasso's rows longer than :data:`MAX_M` take a second kernel, which walks
them in tiles and finds the support by Newton's method from the left
(:func:`exclusive_lasso`: a handful of steps of two passes each, 3 to 7
steps on Gaussian rows of 300 and 4608 entries with b m from 0.1 to 100;
ResNet-18's "shape" rows reach 4608); group+exclusive's (and dtypes other
than float32/float64) are left to the array code.  On CUDA tensors the kernel is compiled by Triton (one variant
per padded length and dtype, compiled on its first call: seconds, see
:data:`MAX_M`); on any other tensor it
runs in Triton's interpreter, which is how CI tests it on CPU.  Importing
this module raises ImportError when Triton is missing.
"""

from __future__ import annotations

import functools
import math

import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel
from ._triton_launch import pow2_scale, run_kernel
from ._triton_multi import next_tile, row_base, row_shape, table_entries, tile_offsets
from ._triton_shrink import shrink_search

__all__ = ["exclusive_lasso", "group_exclusive", "solve_table", "fits", "kernel", "long_kernel", "MAX_M"]

#: The longest row the kernel holds (a program keeps its rows in registers;
#: longer rows are the array code's).  Its compilation grows with the padded
#: length (the sorting network is unrolled): for sm_90 on a 2-core EPYC VM,
#: 4.0 / 5.1 / 9.6 / 28 s for the exclusive lasso's float32 variants at 512 /
#: 1024 / 2048 / 4096 lanes, 5.2 / 7.5 / 20 / 73 s for group+exclusive's
#: float64 ones; once per variant, then from Triton's cache.
MAX_M = 2048
#: Lanes (rows x padded length) per program on a GPU, and in the interpreter
#: (numpy-vectorised lanes: fewer, larger programs).
GPU_LANES = 1024
INTERPRET_LANES = 2**16

#: Launches of the kernel so far (compiled or interpreted); the tests read it.
launches = 0

# tl.sum, tl.max and tl.cumsum are @triton.jit functions, which the
# interpreter (not switched on globally) cannot call: the kernel uses the
# builtins they wrap, with the combine functions the interpreter runs natively.
_ADD = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min


def _exclusive_rows(W, s_r, s_c, a, b, X, T, G, m, max_iter, SHAPE,
                    BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr, LOG_M: tl.constexpr, GROUP: tl.constexpr,
                    TABLE: tl.constexpr, F64: tl.constexpr):  # fmt: skip
    """Rows ``pid*BLOCK_R ..`` of the exclusive-lasso prox (``GROUP``: of
    group+exclusive, with the group thresholds ``a``); see the module doc.
    Row r is ``W + r s_r + j s_c`` and its result goes to ``X + r m + j``;
    with ``TABLE``, row r is read and written in place through a row table
    (``W``: its addresses, ``SHAPE``: its layouts, of float64 data where
    ``F64``, else float32; :class:`._triton_multi.RowTable`)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    j = tl.arange(0, BLOCK_M)
    live = r < G
    inside = live[:, None] & (j[None, :] < m)
    if TABLE:
        src = table_entries(W, SHAPE, r, live, j.to(tl.int64), F64)
    else:
        src = W + r[:, None] * s_r + j[None, :].to(tl.int64) * s_c
    w = tl.load(src, mask=inside, other=0.0).to(tl.float64)
    bb = tl.load(b + r, mask=live, other=0.0)

    # the scale: the largest power of two s <= max|w| (1 for a zero row), exact
    A = tl.abs(w)
    amax = tl.reduce(A, 1, _MAX)
    s = pow2_scale(amax)
    As = A / s[:, None]

    # Y: As sorted decreasingly, by a bitonic network along the rows
    Y = As
    for stage in tl.static_range(1, LOG_M + 1):
        for sub in tl.static_range(stage):
            # compare-exchange of entries i and i + d, d = 2^(stage - 1 - sub),
            # in pairs (q, p): i = q 2d + p, p < d; decreasing, except the
            # blocks of 2^stage entries with i & 2^stage (then increasing)
            q = tl.arange(0, BLOCK_M >> (stage - sub))
            up = (((q << (stage - sub)) >> stage) & 1) == 1
            pairs = tl.permute(tl.reshape(Y, (BLOCK_R, BLOCK_M >> (stage - sub), 2, 1 << (stage - 1 - sub))), (0, 1, 3, 2))
            lo, hi = tl.split(pairs)
            big = tl.maximum(lo, hi)
            small = tl.minimum(lo, hi)
            first = tl.where(up[None, :, None], small, big)
            second = tl.where(up[None, :, None], big, small)
            Y = tl.reshape(tl.permute(tl.join(first, second), (0, 1, 3, 2)), (BLOCK_R, BLOCK_M))

    # the shifted sums F_j = sum_{i<=j} (Y_i - Y_j), by F_j = F_{j-1} + j (Y_{j-1} - Y_j)
    before = tl.gather(Y, tl.broadcast_to(tl.where(j > 0, j - 1, 0)[None, :], (BLOCK_R, BLOCK_M)), 1)
    inc = tl.where(j[None, :] > 0, j.to(tl.float64)[None, :] * (before - Y), 0.0)
    F = tl.associative_scan(inc, 1, _ADD)

    # (from the data: the network's maximum and minimum drop NaNs)
    row_finite = tl.reduce((~(A < float("inf"))).to(tl.int32), 1, _ADD) == 0
    finite_b = bb < float("inf")
    beta = tl.where(finite_b, bb, 0.0)
    if GROUP:  # group+exclusive: the factor c per row (_xp_kernels.group_exclusive)
        a_s = tl.load(a + r, mask=live, other=0.0) / s
        nrm = tl.sqrt(tl.reduce(Y * Y, 1, _ADD))
        nonzero = (nrm > a_s) & finite_b
        c = nonzero.to(tl.float64)
        group_only = nonzero & (beta == 0)
        c = tl.where(group_only, 1.0 - a_s / tl.where(group_only, nrm, 1.0), c)
        general = nonzero & (a_s > 0) & (beta > 0)
        # the support at the root (_xp_kernels.group_exclusive_shrink, step 1)
        cb = Y / (beta[:, None] * F)
        cb = tl.where(F > 0, tl.where(cb > 1.0, 1.0, cb), 1.0)  # (clip(max=1): a NaN stays)
        F_before = tl.gather(F, tl.broadcast_to(tl.where(j > 0, j - 1, 0)[None, :], (BLOCK_R, BLOCK_M)), 1)
        dj = before - Y
        inc2 = tl.where(j[None, :] > 0, dj * (2.0 * F_before + j.to(tl.float64)[None, :] * dj), 0.0)
        D2j = tl.associative_scan(inc2, 1, _ADD)
        gj = cb - 1.0 + a_s[:, None] / tl.sqrt(D2j)
        positive = ((gj > 0) | (cb >= 1.0)) & (j[None, :] < m)
        kg = tl.reduce(tl.where(positive, j[None, :] + 1, 1), 1, _MAX)
        at_kg = j[None, :] == (kg - 1)[:, None]
        yk = tl.reduce(tl.where(at_kg, Y, 0.0), 1, _ADD)
        fk = tl.reduce(tl.where(at_kg, F, 0.0), 1, _ADD)
        D = tl.where(j[None, :] < kg[:, None], Y - yk[:, None], 0.0)
        d2 = tl.reduce(D * D, 1, _ADD)
        hi = tl.reduce(tl.where(at_kg, cb, 0.0), 1, _ADD)
        lo = tl.reduce(tl.where(j[None, :] == kg[:, None], cb, 0.0), 1, _ADD)
        lo = tl.where(kg < m, lo, 0.0)  # c_{m+1} = 0
        k = kg.to(tl.float64)
        # rows not searched hold a stand-in whose root is found at once
        # (_triton_shrink's: Y = (1), F = 0, a = 1/2, b = 1 on [0, 1])
        yk = tl.where(general, yk, 1.0)
        fk = tl.where(general, fk, 0.0)
        d2 = tl.where(general, d2, 0.0)
        k = tl.where(general, k, 1.0)
        lo = tl.where(general, lo, 0.0)
        hi = tl.where(general, hi, 1.0)
        ga = tl.where(general, a_s, 0.5)
        gb = tl.where(general, beta, 1.0)
        # the root of g(c) = c - 1 + a / ||u(b c)|| (step 2: _triton_shrink's
        # search, the same expressions in the same order)
        cr = shrink_search(yk, fk, d2, k, lo, hi, ga, gb, general & live, max_iter)
        c = tl.where(general, cr, c)
        bf = beta
        beta = bf * c
        total = tl.where(row_finite, nrm, float("nan"))
    else:  # the array code's F_m + Y_1
        total = tl.reduce(tl.where(j[None, :] == m - 1, F, 0.0), 1, _ADD) + tl.reduce(tl.where(j[None, :] == 0, Y, 0.0), 1, _ADD)
        total = tl.where(row_finite, total, float("nan"))

    # the support {j < k} of the exclusive lasso with parameter beta, and
    # the output (exclusive_support, exclusive_magnitudes)
    inner = tl.where(j[None, :] == 0, Y > 0, Y > beta[:, None] * F)
    k = tl.reduce(inner.to(tl.int32), 1, _ADD)
    last = tl.where(k > 1, k, 1) - 1
    at_k = j[None, :] == last[:, None]
    Yk = tl.reduce(tl.where(at_k, Y, 0.0), 1, _ADD)
    Fk = tl.reduce(tl.where(at_k, F, 0.0), 1, _ADD)
    e = (Yk - beta * Fk) / (1.0 + beta * k.to(tl.float64))
    U = tl.where(As >= Yk[:, None], (As - Yk[:, None]) + e[:, None], 0.0)
    U = tl.where((beta == 0)[:, None], As, U)
    if GROUP:
        V = U * (c * s)[:, None]
        signed = tl.where(w < 0, -V, tl.where(w >= 0, V, w))
        x = tl.where((bf == 0)[:, None], w * c[:, None], signed)
        x = tl.where(row_finite[:, None], x, w)
    else:
        U = tl.where(finite_b[:, None], U, 0.0)
        V = U * s[:, None]
        signed = tl.where(w < 0, -V, tl.where(w >= 0, V, w))
        x = tl.where(((bb == 0) | ~row_finite)[:, None], w, signed)
    store_rows(x, src, X, r, j, m, inside, TABLE, F64)  # (in place: a row is read whole before it is written, by its own program)
    tl.store(T + r, total, mask=live)


def store_rows(x, src, X, r, cols, m, inside, TABLE: tl.constexpr, F64: tl.constexpr):
    """Write the rows' results ``x`` (float64) in the data's dtype: with
    ``TABLE`` in place, where they were read (``src``: float64 data where
    ``F64``, else float32), else to ``X + r m + cols``."""
    if TABLE:
        if F64:
            tl.store(src, x, mask=inside)
        else:
            tl.store(src, x.to(tl.float32), mask=inside)
    else:
        tl.store(X + r[:, None] * m + cols[None, :], x.to(X.dtype.element_ty), mask=inside)


def _exclusive_long_rows(W, s_r, s_c, b, X, T, G, m, SHAPE, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr,
                         TABLE: tl.constexpr, F64: tl.constexpr):  # fmt: skip
    """Rows ``pid*BLOCK_R ..`` of the exclusive-lasso prox, any length, walked
    in tiles of ``BLOCK_M`` columns: the support by Newton's method from the
    left (see :func:`exclusive_lasso`).  Row r is ``W + r s_r + j s_c``, its
    result ``X + r m + j``; with ``TABLE``, in place through a row table
    (as :func:`_exclusive_rows`).  Either is read as a two-level layout
    (:func:`._triton_multi.tile_offsets`: a strided row is V = m entries
    sv = s_c apart), its tiles' offsets carried from tile to tile."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < G
    bb = tl.load(b + r, mask=live, other=0.0)
    if TABLE:
        base = row_base(W, r, live, F64)
        _, V, su, sv = row_shape(SHAPE, r, live)
    else:
        base = W + r * s_r
        V = tl.full((BLOCK_R,), 0, tl.int64) + m
        su = tl.full((BLOCK_R,), 0, tl.int64)
        sv = tl.full((BLOCK_R,), 0, tl.int64) + s_c
    lane = tl.arange(0, BLOCK_M).to(tl.int64)
    lu = lane[None, :] // V[:, None]  # (once per program: no division in the loops)
    lv = lane[None, :] - lu * V[:, None]
    bu = BLOCK_M // V
    bv = BLOCK_M - bu * V
    zero = tl.full((BLOCK_R,), 0, tl.int64)

    # the scale s (row_scale: exact) and whether the row is finite
    amax = tl.full((BLOCK_R,), 0.0, tl.float64)
    bad = tl.full((BLOCK_R,), 0, tl.int32)
    uc, vc = zero, zero
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + lane
        inside = live[:, None] & (cols[None, :] < m)
        A = tl.abs(tl.load(base[:, None] + tile_offsets(uc, vc, lu, lv, V, su, sv), mask=inside, other=0.0).to(tl.float64))
        bad += tl.reduce((~(A < float("inf"))).to(tl.int32), 1, _ADD)
        amax = tl.maximum(amax, tl.reduce(tl.where(A < float("inf"), A, 0.0), 1, _MAX))
        uc, vc = next_tile(uc, vc, bu, bv, V)
    row_finite = live & (bad == 0)
    s = pow2_scale(amax)
    finite_b = bb < float("inf")
    beta = tl.where(finite_b, bb, 0.0)

    # Newton's method from the left on phi(t) = t - beta sum (y - t)_+ (y = |w|/s),
    # increasing and concave: from the support S = {y > t} (first: y > 0), its
    # size k, least entry Y_k and shifted sum F_k = sum_S (y - Y_k), the zero of
    # phi's piece, t' = Y_k - e with e = (Y_k - beta F_k) / (1 + beta k)
    # (exclusive_magnitudes' form: no large quantity cancels), never above the
    # root; S' = {(y - Y_k) + e > 0}.  The support shrinks at every step until
    # it holds: at most m + 1 steps (a handful in practice).  The comparisons
    # are sound with unit weights: a step's threshold t' lies below the root
    # by at least b |e| / (1 + b k) (phi's piece for S at the root is
    # b sum_{S outside the support} (root - y) >= b |e|, its slope 1 + b k):
    # where b k >= 1 that is |e| / 2k, far above the comparison's rounding,
    # eps |e|, so no entry of the support is dropped on the way, and where
    # b k < 1 the threshold is small against the row, so a rounding can only
    # misplace entries whose x is within eps of the row's largest.  In a
    # metric, whose weights 1/d may span many decades, neither holds
    # (_triton_metric's exclusive kernel checks its supports at data values).
    yk = tl.full((BLOCK_R,), 0.0, tl.float64)
    e = tl.full((BLOCK_R,), 0.0, tl.float64)
    k_prev = tl.full((BLOCK_R,), 0, tl.int32) + m + 1
    done = ~(row_finite & (beta > 0))
    it = 0
    todo = tl.reduce((~done).to(tl.int32), 0, _MAX)
    while (todo > 0) & (it <= m + 1):
        k = tl.full((BLOCK_R,), 0, tl.int32)
        least = tl.full((BLOCK_R,), float("inf"), tl.float64)
        uc, vc = zero, zero
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + lane
            inside = (~done)[:, None] & (cols[None, :] < m)
            y = tl.abs(tl.load(base[:, None] + tile_offsets(uc, vc, lu, lv, V, su, sv), mask=inside, other=0.0).to(tl.float64)) / s[:, None]
            on = inside & (((y - yk[:, None]) + e[:, None]) > 0)
            k += tl.reduce(on.to(tl.int32), 1, _ADD)
            least = tl.minimum(least, tl.reduce(tl.where(on, y, float("inf")), 1, _MIN))
            uc, vc = next_tile(uc, vc, bu, bv, V)
        # (the support held: S' = S, or a rounding grew it; then the last
        # step's Y_k and e are S's; k = 0: a zero row)
        done = done | (k >= k_prev) | (k == 0)
        F = tl.full((BLOCK_R,), 0.0, tl.float64)
        uc, vc = zero, zero
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + lane
            inside = (~done)[:, None] & (cols[None, :] < m)
            y = tl.abs(tl.load(base[:, None] + tile_offsets(uc, vc, lu, lv, V, su, sv), mask=inside, other=0.0).to(tl.float64)) / s[:, None]
            on = inside & (((y - yk[:, None]) + e[:, None]) > 0)
            F += tl.reduce(tl.where(on, y - least[:, None], 0.0), 1, _ADD)
            uc, vc = next_tile(uc, vc, bu, bv, V)
        e_next = (least - beta * F) / (1.0 + beta * k.to(tl.float64))
        yk = tl.where(done, yk, least)
        e = tl.where(done, e, e_next)
        k_prev = tl.where(done, k_prev, k)
        todo = tl.reduce((~done).to(tl.int32), 0, _MAX)
        it += 1

    # x = sign(w) s ((y - Y_k) + e)_+ on the support {y >= Y_k} (exclusive_magnitudes)
    uc, vc = zero, zero
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + lane
        inside = live[:, None] & (cols[None, :] < m)
        src = base[:, None] + tile_offsets(uc, vc, lu, lv, V, su, sv)
        w = tl.load(src, mask=inside, other=0.0).to(tl.float64)
        As = tl.abs(w) / s[:, None]
        U = tl.where(As >= yk[:, None], (As - yk[:, None]) + e[:, None], 0.0)
        U = tl.where((beta == 0)[:, None], As, U)
        U = tl.where(finite_b[:, None], U, 0.0)
        mag = U * s[:, None]
        signed = tl.where(w < 0, -mag, tl.where(w >= 0, mag, w))
        x = tl.where(((bb == 0) | ~row_finite)[:, None], w, signed)
        store_rows(x, src, X, r, cols, m, inside, TABLE, F64)  # (in place: the row's last pass, each entry written after it is read)
        uc, vc = next_tile(uc, vc, bu, bv, V)
    tl.store(T + r, tl.where(row_finite, amax, float("nan")), mask=live)


_NO_SPECIALIZE = ["s_r", "s_c", "G", "m"]  # one compiled variant per block shape


@functools.cache
def kernel(interpret: bool):
    """The exclusive-rows kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_exclusive_rows, interpret, helpers={"shrink_search": shrink_search, "pow2_scale": pow2_scale,
                                                           "table_entries": table_entries, "row_base": row_base, "store_rows": store_rows,
                                                           "row_shape": row_shape},
                     do_not_specialize=_NO_SPECIALIZE)


@functools.cache
def long_kernel(interpret: bool):
    """The kernel of rows of any length (:func:`exclusive_lasso`'s rows
    longer than :data:`MAX_M`), compiled or interpreted."""
    return as_kernel(_exclusive_long_rows, interpret, helpers={"pow2_scale": pow2_scale, "row_base": row_base, "tile_offsets": tile_offsets,
                                                               "next_tile": next_tile, "store_rows": store_rows, "row_shape": row_shape},
                     do_not_specialize=_NO_SPECIALIZE)


def fits(W, group: bool = False) -> bool:
    """Whether the kernels solve ``W``: a 2-D float32/float64 torch tensor,
    with rows of at most :data:`MAX_M` entries for group+exclusive
    (``group``; the exclusive lasso's longer rows take :func:`long_kernel`)."""
    import torch

    return W.ndim == 2 and W.dtype in (torch.float32, torch.float64) and (W.shape[1] <= MAX_M or not group)


def blocks(G: int, m: int, interpret: bool) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_M, LOG_M): rows per program and their padded length."""
    block_m = max(2, triton.next_power_of_2(m))
    lanes = INTERPRET_LANES if interpret else GPU_LANES
    block_r = max(1, min(lanes // block_m, triton.next_power_of_2(G)))
    return block_r, block_m, int(math.log2(block_m))


#: Rows per program and columns per tile of :func:`long_kernel` on a GPU.
LONG_BLOCK_R, LONG_BLOCK_M = 4, 256


def long_blocks(G: int, m: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_M) of :func:`long_kernel`: rows per program and
    columns per tile (the interpreter: the whole row, numpy-vectorised)."""
    if not interpret:
        return LONG_BLOCK_R, LONG_BLOCK_M
    block_m = max(2, triton.next_power_of_2(m))
    return max(1, min(INTERPRET_LANES // block_m, triton.next_power_of_2(G))), block_m


def _launch(W, a, b, group: bool, max_iter: int):
    global launches
    import torch

    G, m = W.shape
    b = torch.broadcast_to(b.to(torch.float64), (G,)).contiguous()
    a = torch.broadcast_to(a.to(torch.float64), (G,)).contiguous() if group else b
    X = torch.empty((G, m), dtype=W.dtype, device=W.device)
    T = torch.empty(G, dtype=torch.float64, device=W.device)
    interpret = W.device.type != "cuda" or _interpreting_everything()
    launches += 1
    if m > MAX_M:  # (the exclusive lasso: fits)
        block_r, block_m = long_blocks(G, m, interpret)
        args = (W, *W.stride(), b, X, T, G, m, W)
        run_kernel(long_kernel, interpret, (triton.cdiv(G, block_r),), W.device, args, dict(BLOCK_R=block_r, BLOCK_M=block_m, TABLE=False, F64=False))
        return X, T
    block_r, block_m, log_m = blocks(G, m, interpret)
    grid = (triton.cdiv(G, block_r),)
    args = (W, *W.stride(), a, b, X, T, G, m, max_iter, W)
    shape = dict(BLOCK_R=block_r, BLOCK_M=block_m, LOG_M=log_m, GROUP=group, TABLE=False, F64=False)
    run_kernel(kernel, interpret, grid, W.device, args, shape, num_warps=_warps(block_r, block_m))
    return X, T


def _warps(block_r: int, block_m: int) -> int:
    return min(16, max(4, block_r * block_m // 256))


def solve_table(table, a, b, m: int, f64: bool, device, max_iter: int = 0, T=None):
    """The exclusive lasso (``a`` None), or group+exclusive with group
    thresholds ``a``, of every row of ``table`` (a
    :class:`._triton_multi.RowTable` of rows of ``m`` > 0 entries (at most
    :data:`MAX_M` for group+exclusive; the exclusive lasso's longer rows by
    :func:`long_kernel`), of float64 data where ``f64``, else float32, on
    ``device``), read and written in place, in one launch with no host read:
    each row as :func:`exclusive_lasso` or :func:`group_exclusive` solves it
    (the same operations on the same values: a row's result depends on that
    row alone), its parameters ``b`` and ``a`` float64, one per row.
    Returns each row's ``total`` (:func:`exclusive_lasso`'s, or the scaled
    norm: NaN exactly where the row holds NaN or Inf), into ``T`` where
    given."""
    global launches
    import torch

    R = table.rows
    T = torch.empty(R, dtype=torch.float64, device=device) if T is None else T
    if R == 0:
        return T
    interpret = device.type != "cuda" or _interpreting_everything()
    group = a is not None
    launches += 1
    if m > MAX_M:  # (the exclusive lasso: fits)
        block_r, block_m = long_blocks(R, m, interpret)
        args = (table.addr, 0, 0, b, table.addr, T, R, m, table.shape)
        run_kernel(long_kernel, interpret, (triton.cdiv(R, block_r),), device, args, dict(BLOCK_R=block_r, BLOCK_M=block_m, TABLE=True, F64=f64))
        return T
    block_r, block_m, log_m = blocks(R, m, interpret)
    args = (table.addr, 0, 0, a if group else b, b, table.addr, T, R, m, max_iter, table.shape)
    shape = dict(BLOCK_R=block_r, BLOCK_M=block_m, LOG_M=log_m, GROUP=group, TABLE=True, F64=f64)
    run_kernel(kernel, interpret, (triton.cdiv(R, block_r),), device, args, shape, num_warps=_warps(block_r, block_m))
    return T


def exclusive_lasso(W, b):
    """``(X, total)``: the exclusive-lasso prox of every row of ``W`` (a new
    contiguous tensor of W's dtype; :func:`fits` must hold, G, m > 0) with
    parameters ``b`` (float64, one per row or broadcast to G;
    :func:`._xp_kernels.exclusive_lasso`'s result), and each row's ``total``
    (float64, NaN exactly where the row holds NaN or Inf), in one launch
    with no host read.

    Rows longer than :data:`MAX_M` (too long to sort in registers) take
    :func:`long_kernel`: the support by Newton's method from the left on the
    increasing concave phi(t) = t - b sum (|w_i|/s - t)_+, each step two
    passes over the row's tiles (the support's size and least entry, then
    its shifted sum), the same threshold form as the array code
    (``exclusive_magnitudes``: Y_k - e with e = (Y_k - b F_k)/(1 + b k),
    so nothing large cancels), until the support holds (at most m + 1
    steps; a handful on real rows).  Its sums add in another order than
    the array code's, so it agrees to a few units in the last place, not
    bit for bit; its ``total`` is the row's largest magnitude."""
    return _launch(W, None, b, False, 0)


def group_exclusive(W, a, b, max_iter: int):
    """``(X, nrm)``: the group+exclusive prox of every row of ``W`` (as
    :func:`exclusive_lasso`'s ``X``; :func:`._xp_kernels.group_exclusive`'s
    result) with group thresholds ``a`` and parameters ``b`` (float64, per
    row or broadcast), the root searched for at most ``max_iter`` steps,
    and each row's scaled norm (NaN exactly where the row holds NaN or
    Inf), in one launch with no host read."""
    return _launch(W, a, b, True, max_iter)

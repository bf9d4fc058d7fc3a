r"""The row operators in a diagonal metric, in one Triton kernel (torch tensors).

Group+exclusive in the metric ``diag(d)`` (Adam's), per row,

.. math::

    x = \arg\min_x \tfrac12 \sum_i d_i (x_i - w_i)^2 + a \|x\|_2
        + \tfrac{b}{2} \|x\|_1^2 ,

with its cases the group lasso (b = 0) and the exclusive lasso (a = 0)
(:func:`._metric_kernels.group_exclusive_metric`, whose formulas these are).
Written as array code the operator is a hundred and more array operations
on a GPU tensor (the scales, the row norms, the cases, a sort, the sign),
and each step of its root searches a dozen more, with a host read every
four steps: a ResNet-18 step in Adam's metric made about 3,700 launching
operations for the group lasso and 4,600 for group+exclusive.  Here the
operator is ONE launch (:func:`group_exclusive_metric`): program ``p`` takes
rows ``p*BLOCK_R ..`` and walks them in tiles of ``BLOCK_M`` columns (any
row length, any strides, float32 or float64), several times:

1. the largest |w| and d of each row, and whether the row is finite; the
   powers of two ``sv``, ``sd`` that scale them into [1, 2) (exact, read off
   the bits); the thresholds ``a / (sv sd)`` and ``b / sd`` (b / max d
   beyond 2^600, as ``_metric_kernels._saturated`` says: solved at
   b 2^-shift, the result scaled back);
2. ``z = (d/sd)(|w|/sv)``'s largest entry, ``||v||^2`` and the metric's
   extremes; 3. ``||z||`` on ``z``'s own scale: which rows are zeroed, and
   each row's case;
4. the group lasso's rows: the bracket and the root of ``psi(s) = 1 /
   ||v / (s + mu)|| = 1`` (``mu = a / d``), ``_metric_kernels._root``'s
   safeguarded Newton steps, each step's two sums over the row's tiles
   (:func:`root_search`);
5. group+exclusive's rows: the root of ``psi(s) = s / ||x(a/s)|| = 1`` by
   the same steps, each solving the inner exclusive equation with weights
   ``d + a/s`` (:func:`exclusive_support`) and summing x over two passes;
6. the exclusive supports (weights d, or d + a/s): found without a sort,
   at data values (:func:`exclusive_support`: Newton's method from the left
   proposes, the prefix test z_j > b F_j of the array code, which is
   accurate at data values, checks), the threshold in the array code's
   form, from exact pairs z = Z + Zlo (Dekker's product);
7. the output, ``sign(w) sv u`` in the input's dtype (the row as it is
   where it holds NaN or Inf).

:func:`group_lasso_roots` is step 4's search alone, for the array code's
search (:func:`._metric_kernels._group_lasso_s`) where the kernel does not
take the data (float16).

Every expression is the array code's, in the same order; only the sums
over a row add in another order (tiles of lanes, then across tiles), so
the result agrees with the array code's to the accuracy of those sums (a
few units in the last place), not bit for bit.  A row that has stopped
keeps its value, as in the array code, so stopping per program instead of
for all rows at once changes nothing.  Contraction into FMAs is switched
off (``enable_fp_fusion=False``); IEEE division and square root are
correctly rounded on the GPU as in NumPy.

Work per row: O((4 + steps) m) for the group lasso, O(inner steps m) for
the exclusive lasso, O(steps inner steps m) for group+exclusive, reading
the row from memory each pass; no sort, no scratch but the output and no
host read.  On CUDA tensors the kernel is compiled by Triton (6 s for
sm_90 on a 2-core VM); on any other tensor it runs in Triton's
interpreter, which is how CI tests it on CPU.  Importing this module
raises ImportError when Triton is missing.
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl

from ._triton_isotonic import _interpreting_everything, as_kernel
from ._triton_launch import frexp_parts, pow2_of, pow2_scale, run_kernel

__all__ = ["group_exclusive_metric", "group_lasso_roots", "fits", "kernel", "roots_kernel"]

#: Rows per program and columns per tile on a GPU, and in the interpreter
#: (numpy-vectorised lanes: one large tile).
GPU_BLOCK_R, GPU_BLOCK_M = 4, 256
INTERPRET_LANES = 2**16

#: Launches of the kernels so far (compiled or interpreted); the tests read it.
launches = 0

# tl.sum and tl.zeros are @triton.jit functions, which the interpreter (not
# switched on globally) cannot call: the kernels use the builtins they wrap.
_ADD = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min
_DROP = tl.constexpr(2.0**-64)  # _metric_kernels._DROP
_TINY = tl.constexpr(2.0**-1074)  # _metric_kernels._TINY
_BELOW = tl.constexpr(1.0 - 8 * 2.0**-52)  # _group_lasso_s's widening of the bracket
_ABOVE = tl.constexpr(1.0 + 8 * 2.0**-52)
_INF = tl.constexpr(float("inf"))


def scaled_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd):
    """(w, v, dn) on a tile of rows ``r`` and columns ``cols``: the data in
    float64, and the data and metric scaled as ``_metric_kernels._scaled_rows``
    scales them, v = |w| / sv and dn = d / sd (outside the tile: w = 0,
    dn = 1/sd)."""
    w = tl.load(W + r[:, None] * w_r + cols[None, :] * w_c, mask=inside, other=0.0).to(tl.float64)
    dn = tl.load(D + r[:, None] * d_r + cols[None, :] * d_c, mask=inside, other=1.0).to(tl.float64) / sd[:, None]
    return w, tl.abs(w) / sv[:, None], dn


def store_signed(X, r, cols, inside, m, us, w, finite):
    """x = sign(w) us (``_xp_kernels.signed_like``; the row w as it is where
    it is not finite) into the contiguous output X, in its dtype."""
    x = tl.where(w < 0, -us, tl.where(w >= 0, us, w))
    x = tl.where(finite[:, None], x, w)
    tl.store(X + r[:, None] * m + cols[None, :], x.to(X.dtype.element_ty), mask=inside)


def row_scales(W, w_r, w_c, D, d_r, d_c, r, live, m, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """(finite, sv, sd) of the rows ``r`` in one pass over their tiles: which
    rows hold only finite data and metric (the others come back as they
    are), and ``row_scale`` of |w| and of d (exact powers of two)."""
    wmax = tl.full((BLOCK_R,), 0.0, tl.float64)
    dmax = tl.full((BLOCK_R,), 0.0, tl.float64)
    bad = tl.full((BLOCK_R,), 0, tl.int32)
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
        inside = live[:, None] & (cols[None, :] < m)
        A = tl.abs(tl.load(W + r[:, None] * w_r + cols[None, :] * w_c, mask=inside, other=0.0).to(tl.float64))
        d = tl.load(D + r[:, None] * d_r + cols[None, :] * d_c, mask=inside, other=0.0).to(tl.float64)
        bad += tl.reduce((~((A < _INF) & (tl.abs(d) < _INF))).to(tl.int32), 1, _ADD)
        wmax = tl.maximum(wmax, tl.reduce(tl.where(A < _INF, A, 0.0), 1, _MAX))
        dmax = tl.maximum(dmax, tl.reduce(tl.where(tl.abs(d) < _INF, d, 0.0), 1, _MAX))
    return live & (bad == 0), pow2_scale(wmax), pow2_scale(dmax)


def root_step(c, g, slope, left, right, stopped):
    """One step of :func:`._metric_kernels._root` on each row, from the
    increasing function's value ``g`` and slope at ``c`` on the bracket
    [left, right]: Newton's step where it stays inside, else geometric
    bisection (or the upper end divided by 2^64 while left = 0); a row
    stops where its next point repeats, g = 0 or the step leaves the
    bracket.  Returns (c, left, right, stopped)."""
    neg = g < 0
    left = tl.where(neg, c, left)
    right = tl.where(neg, right, c)
    newton = c - g / slope
    geo = tl.sqrt(left) * tl.sqrt(right)
    low = right * _DROP
    half = tl.where(left > 0, tl.where(right > 4.0 * left, geo, 0.5 * (left + right)), tl.where(low < _TINY, _TINY, low))
    ok = (newton > left) & (newton < right)
    nxt = tl.where(ok, newton, half)
    done = (nxt == c) | (g == 0)
    c = tl.where(done | stopped, c, nxt)
    stopped = stopped | done | ~((left < nxt) & (nxt < right))
    return c, left, right, stopped


def root_search(W, w_r, w_c, D, d_r, d_c, r, live, sv, sd, aa, left, right, m, max_iter,
                BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """s of the rows ``r`` with ``live`` (the others: a value not to be used),
    the root on [left, right] of psi(s) = 1 for the scaled row v = |w| / sv
    in the scaled metric d / sd, mu = aa / (d / sd), from s = left:
    :func:`._metric_kernels._root`'s steps on ``_group_lasso_s``'s function,
    every expression in the same order.  Shared by both kernels
    (:func:`._triton_isotonic.as_kernel`'s ``helpers``)."""
    c = left
    stopped = ~live
    it = 0
    todo = tl.reduce((~stopped).to(tl.int32), 0, _MAX)
    while (todo > 0) & (it < max_iter):
        # psi(c) - 1 and psi'(c) from ||w||^2 and sum w^2 / (c + mu), w = v / (c + mu)
        sw2 = tl.full((BLOCK_R,), 0.0, tl.float64)
        srw2 = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = live[:, None] & (cols[None, :] < m)
            _, v, d = scaled_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
            mu = aa[:, None] / d
            rr = 1.0 / (c[:, None] + mu)
            w = v * rr
            w2 = w * w
            sw2 += tl.reduce(tl.where(inside, w2, 0.0), 1, _ADD)
            srw2 += tl.reduce(tl.where(inside, rr * w2, 0.0), 1, _ADD)
        nw = tl.sqrt(sw2)
        g = 1.0 / nw - 1.0
        slope = srw2 / (nw * nw * nw)
        c, left, right, stopped = root_step(c, g, slope, left, right, stopped)
        todo = tl.reduce((~stopped).to(tl.int32), 0, _MAX)
        it += 1
    return c


def _group_lasso_roots(V, Dn, a, lo, hi, out, G, m, max_iter, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """s of rows ``pid*BLOCK_R ..`` of the scaled rows V (>= 0) in the
    scaled metric Dn (contiguous), from the bracket [lo, hi]: the search
    alone (scales 1, which change nothing)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < G
    one = tl.full((BLOCK_R,), 1.0, tl.float64)
    aa = tl.load(a + r, mask=live, other=1.0)
    left = tl.load(lo + r, mask=live, other=0.5)
    right = tl.load(hi + r, mask=live, other=1.0)
    c = root_search(V, m, 1, Dn, m, 1, r, live, one, one, aa, left, right, m, max_iter, BLOCK_R, BLOCK_M)
    tl.store(out + r, c, mask=live)


_SPLIT = tl.constexpr(134217729.0)  # 2^27 + 1 (Dekker): _metric_kernels._SPLIT
# _metric_kernels._saturated's bounds: b_s beyond 2^900, or beyond 2^600
# (where saturated rows are solved, b_s in [2^599, 2^600)) with a_s = 0 or
# a_s >= 2^-500
_SATURATED = tl.constexpr(2.0**900)
_B_SATURATED = tl.constexpr(2.0**600)
_SATURATED_A = tl.constexpr(2.0**-500)


def two_product(a, b):
    """(p, q), p = fl(a b), p + q = a b exactly: ``_metric_kernels.two_product``'s
    operations in its order (no FMA: the kernels compile without contraction)."""
    p = a * b
    ca = _SPLIT * a
    ah = ca - (ca - a)
    al = a - ah
    cb = _SPLIT * b
    bh = cb - (cb - b)
    bl = b - bh
    return p, (((ah * bh - p) + ah * bl) + al * bh) + al * bl


def pair_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd):
    """:func:`scaled_tile`'s (w, v, dn) and z = dn v as the exact pair
    (Z, Zlo) of :func:`two_product` (``_metric_kernels._sorted_magnitudes``'
    pairs, unsorted)."""
    w, v, dn = scaled_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
    Z, Zlo = two_product(dn, v)
    return w, v, dn, Z, Zlo


def exclusive_support(W, w_r, w_c, D, d_r, d_c, r, live, sv, sd, bb, t, m, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """(t_z, t_zl, e, H) of the exclusive equation with weights e_i = dn_i + t
    on the rows ``r`` with ``live`` (z = dn v as exact pairs, parameter
    ``bb``): the support {((Z - t_z) + (Zlo - t_zl)) + e > 0}, its threshold
    z_k - e in ``_exclusive_parts``' form, and H = sum over it of 1 / e_i
    (t = 0: the exclusive lasso; t = a / s: group+exclusive's inner equation).

    The support is {z_j : phi(z_j) > 0}, phi(t') = t' - b G(t'), G(t') =
    sum_i (z_i - t')_+ / e_i: increasing, so a top set {z >= q}.  At a data
    value phi is evaluated accurately (``_exclusive_parts``' prefix test
    z_j > b F_j: G(z_j) sums non-negative differences of exact pairs), where
    a threshold between data values is not: the support S of a threshold
    t' = t_z - e is then only a guess (where the weights span many decades
    in a row, an entry whose z is within rounding of t' may still carry
    much of x, as x_i = (z_i - t') / e_i).  Each step: S's least entry q and
    the largest entry o outside it (one pass, with H = sum_S 1/e), then G(q)
    and G(o) (a second pass), and the tests.  q in and o out: S is the
    support, and q - e with e = ((Z_q - b G(q)) + Zlo_q) / (1 + b H) its
    threshold (the form in which nothing large cancels); q out: the next S
    is Newton's from the left, {z > q - e} with e <= 0 (q and its ties
    excluded); o in (a rounding): the next S is {z >= o}.  The known-in and
    known-out data values only move towards each other: at most 2 m + 2
    steps, a handful (Newton's) on real rows."""
    tz = tl.full((BLOCK_R,), 0.0, tl.float64)
    tzl = tl.full((BLOCK_R,), 0.0, tl.float64)
    te = tl.full((BLOCK_R,), 0.0, tl.float64)
    done = ~live
    Hs = tl.full((BLOCK_R,), 0.0, tl.float64)
    it = 0
    todo = tl.reduce((~done).to(tl.int32), 0, _MAX)
    while (todo > 0) & (it <= 2 * m + 2):
        H = tl.full((BLOCK_R,), 0.0, tl.float64)
        qz = tl.full((BLOCK_R,), float("inf"), tl.float64)
        qzl = tl.full((BLOCK_R,), float("inf"), tl.float64)
        oz = tl.full((BLOCK_R,), -1.0, tl.float64)  # (none: -1, below every z >= 0)
        ozl = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = (~done)[:, None] & (cols[None, :] < m)
            w, v, dn, Z, Zlo = pair_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
            on = inside & ((((Z - tz[:, None]) + (Zlo - tzl[:, None])) + te[:, None]) > 0)
            off = inside & ~on & (Z > 0)
            H += tl.reduce(tl.where(on, 1.0 / (dn + t[:, None]), 0.0), 1, _ADD)
            # the least pair in S and the largest out of it (by Z, then Zlo)
            zt = tl.reduce(tl.where(on, Z, float("inf")), 1, _MIN)
            ztl = tl.reduce(tl.where(on & (Z == zt[:, None]), Zlo, float("inf")), 1, _MIN)
            less = (zt < qz) | ((zt == qz) & (ztl < qzl))
            qz = tl.where(less, zt, qz)
            qzl = tl.where(less, ztl, qzl)
            ot = tl.reduce(tl.where(off, Z, -1.0), 1, _MAX)
            otl = tl.reduce(tl.where(off & (Z == ot[:, None]), Zlo, -float("inf")), 1, _MAX)
            more = (ot > oz) | ((ot == oz) & (otl > ozl))
            oz = tl.where(more, ot, oz)
            ozl = tl.where(more, otl, ozl)
        has_q = qz < float("inf")
        has_o = oz >= 0
        Gq = tl.full((BLOCK_R,), 0.0, tl.float64)
        Go = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = (~done)[:, None] & (cols[None, :] < m)
            w, v, dn, Z, Zlo = pair_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
            dq = (Z - qz[:, None]) + (Zlo - qzl[:, None])
            do = (Z - oz[:, None]) + (Zlo - ozl[:, None])
            Gq += tl.reduce(tl.where(inside & has_q[:, None] & (dq > 0), dq / (dn + t[:, None]), 0.0), 1, _ADD)
            Go += tl.reduce(tl.where(inside & has_o[:, None] & (do > 0), do / (dn + t[:, None]), 0.0), 1, _ADD)
        q_in = has_q & (qz > bb * Gq)  # (the prefix test at q)
        o_out = ~has_o | ~(oz > bb * Go)
        e = ((qz - bb * Gq) + qzl) / (1.0 + bb * H)
        held = q_in & o_out
        # the next S: held: S with the threshold q - e; q out: {z > q - min(e, 0)}; o in: {z >= o}
        grow = ~held & ~(has_q & ~q_in)
        tz = tl.where(done, tz, tl.where(grow, oz, qz))
        tzl = tl.where(done, tzl, tl.where(grow, ozl, qzl))
        te = tl.where(done, te, tl.where(held, e, tl.where(grow, _TINY, tl.where(e > 0, 0.0, e))))
        Hs = tl.where(done, Hs, H)
        done = done | held
        todo = tl.reduce((~done).to(tl.int32), 0, _MAX)
        it += 1

    return tz, tzl, te, Hs


def exclusive_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd, tz, tzl, te, t):
    """(w, v, dn, E, x) on a tile (:func:`scaled_tile`'s, with E = dn + t):
    the exclusive equation's solution x = (z - t')_+ / E for the threshold
    t' = t_z - e of :func:`exclusive_support` (``_above_threshold``: from the
    exact pair z = Z + Zlo, ((Z - t_z) + (Zlo - t_zl)) + e; 0 where E = 0,
    a metric entry below the float range)."""
    w, v, dn, Z, Zlo = pair_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
    rr = ((Z - tz[:, None]) + (Zlo - tzl[:, None])) + te[:, None]
    on = (Z > tz[:, None]) | ((Z == tz[:, None]) & (Zlo >= tzl[:, None]))  # the support: z >= t_z
    rr = tl.where(on, tl.where(rr < 0.0, 0.0, rr), 0.0)  # (clip(min=0); 0 off the support)
    E = dn + t[:, None]
    return w, v, dn, E, tl.where(E > 0, rr / E, 0.0)


def _group_exclusive_metric(W, w_r, w_c, D, d_r, d_c, a, a_r, b, b_r, X, G, m, max_iter,
                            BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """Rows ``pid*BLOCK_R ..`` of group+exclusive in a metric (every case: the
    group lasso where b = 0, the exclusive lasso where a = 0), any length;
    see :func:`group_exclusive_metric`.  The expressions of
    ``_metric_kernels.group_exclusive_metric`` in their order, but for the
    exclusive supports, searched without a sort (:func:`exclusive_support`)."""
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    live = r < G
    aa = tl.load(a + r * a_r, mask=live, other=0.0)  # (a_r, b_r: 1, or 0 for one threshold for all rows)
    bb = tl.load(b + r * b_r, mask=live, other=0.0)

    # 1. the scales, the thresholds a / (sv sd) and b / sd (saturated rows: b 2^-shift)
    finite, sv, sd = row_scales(W, w_r, w_c, D, d_r, d_c, r, live, m, BLOCK_R, BLOCK_M)
    p = sv * sd
    a_s = tl.where((p < _INF) & (p > 0), aa / p, (aa / sv) / sd)
    b_s = bb / sd
    fb, eb = frexp_parts(tl.where(bb < _INF, bb, 0.0))
    es = frexp_parts(sd)[1]
    saturated = ((b_s > _SATURATED) | ((b_s > _B_SATURATED) & ((a_s == 0) | (a_s >= _SATURATED_A)))) & (bb < _INF)
    shift = tl.where(saturated, eb - es - 599, 0)
    b_s = tl.where(saturated, fb * _B_SATURATED, b_s)

    # 2. z = Dn V's largest entry, ||V||^2 and the extremes of Dn
    zmax = tl.full((BLOCK_R,), 0.0, tl.float64)
    vv = tl.full((BLOCK_R,), 0.0, tl.float64)
    dlo = tl.full((BLOCK_R,), float("inf"), tl.float64)
    dhi = tl.full((BLOCK_R,), 0.0, tl.float64)
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
        inside = finite[:, None] & (cols[None, :] < m)
        w, v, dn = scaled_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
        zmax = tl.maximum(zmax, tl.reduce(tl.where(inside, tl.abs(dn * v), 0.0), 1, _MAX))
        vv += tl.reduce(tl.where(inside, v * v, 0.0), 1, _ADD)
        dlo = tl.minimum(dlo, tl.reduce(tl.where(inside, dn, float("inf")), 1, _MIN))
        dhi = tl.maximum(dhi, tl.reduce(tl.where(inside, dn, 0.0), 1, _MAX))
    zs = pow2_scale(zmax)

    # 3. ||Dn V|| as nrm zs (scaled_row_norms): the rows kept, and their case
    zz = tl.full((BLOCK_R,), 0.0, tl.float64)
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
        inside = finite[:, None] & (cols[None, :] < m)
        w, v, dn = scaled_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd)
        q = tl.abs(dn * v) / zs[:, None]
        zz += tl.reduce(tl.where(inside, q * q, 0.0), 1, _ADD)
    nrm = tl.sqrt(zz)
    nonzero = finite & (nrm > a_s / zs) & (b_s < _INF)
    group = nonzero & (a_s > 0) & (b_s == 0)
    exclusive = nonzero & (a_s == 0) & (b_s > 0)
    both = nonzero & (a_s > 0) & (b_s > 0)
    nv = tl.sqrt(vv)
    nz = nrm * zs

    # 4. the group lasso's rows: the bracket and the root search (_group_lasso_s)
    lo = tl.maximum(nv - a_s / dlo, (nz - a_s) / dhi)
    lo = tl.where(lo < 0.0, 0.0, lo) * _BELOW  # (clip(min=0))
    hi = tl.minimum(nv - a_s / dhi, (nz - a_s) / dlo) * _ABOVE
    hi = tl.minimum(hi, nv)
    s = root_search(W, w_r, w_c, D, d_r, d_c, r, group, sv, sd, tl.where(group, a_s, 1.0),
                    tl.where(group, lo, 0.5), tl.where(group, hi, 1.0), m, max_iter, BLOCK_R, BLOCK_M)

    # 5. group+exclusive's rows (_group_exclusive_rows): s = ||x||_2 the root of
    # psi(s) = s / ||x(a/s)|| = 1, x(t) the exclusive solution with weights
    # dn + t; from s = min(||v||, (||Dn v|| - a)/min(Dn)) on [0, that]
    c = tl.minimum(nv, (nz - a_s) / dlo * _ABOVE)
    c = tl.where(both, c, 1.0)
    left = tl.full((BLOCK_R,), 0.0, tl.float64)
    right = c
    stopped = ~both
    it = 0
    todo = tl.reduce(both.to(tl.int32), 0, _MAX)
    while (todo > 0) & (it < max_iter):
        t = a_s / c
        tz, tzl, te, Hk = exclusive_support(W, w_r, w_c, D, d_r, d_c, r, ~stopped, sv, sd, b_s, t, m, BLOCK_R, BLOCK_M)
        # x's largest entry (its squares may underflow: the sums are of x / rx)
        xmax = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = (~stopped)[:, None] & (cols[None, :] < m)
            xw, xv, xdn, xE, x = exclusive_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd, tz, tzl, te, t)
            xmax = tl.maximum(xmax, tl.reduce(tl.where(inside, x, 0.0), 1, _MAX))
        rx = pow2_scale(xmax)
        nr2 = tl.full((BLOCK_R,), 0.0, tl.float64)
        P = tl.full((BLOCK_R,), 0.0, tl.float64)
        num = tl.full((BLOCK_R,), 0.0, tl.float64)
        for j0 in range(0, m, BLOCK_M):
            cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
            inside = (~stopped)[:, None] & (cols[None, :] < m)
            xw, xv, dn, E, x = exclusive_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd, tz, tzl, te, t)
            xr = x / rx[:, None]
            nr2 += tl.reduce(tl.where(inside, xr * xr, 0.0), 1, _ADD)
            P += tl.reduce(tl.where(inside, xr / E, 0.0), 1, _ADD)
            num += tl.reduce(tl.where(inside, xr * xr * dn / E, 0.0), 1, _ADD)
        nr = tl.sqrt(nr2)
        num = num + (t * P) * (b_s * P) / (1.0 + b_s * Hk)
        g = c / (nr * rx) - 1.0
        slope = num / (rx * (nr * nr * nr))
        c, left, right, stopped = root_step(c, g, slope, left, right, stopped)
        todo = tl.reduce((~stopped).to(tl.int32), 0, _MAX)
        it += 1

    # 6. the exclusive supports: at t = 0 (the exclusive lasso's rows) and
    # at t = a / s (group+exclusive's)
    t = tl.where(both, a_s / c, 0.0)
    tz, tzl, te, Hk = exclusive_support(W, w_r, w_c, D, d_r, d_c, r, exclusive | both, sv, sd, b_s, t, m, BLOCK_R, BLOCK_M)

    # 7. x = sign(w) sv u: u = v s / (s + mu) (group lasso), ((z - t')_+ / (Dn + t))
    # (exclusive, group+exclusive), v where a = b = 0, 0 where zeroed; saturated:
    # 2^-shift more
    ev = frexp_parts(sv)[1]
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M).to(tl.int64)
        inside = live[:, None] & (cols[None, :] < m)
        w, v, dn, E, x = exclusive_tile(W, w_r, w_c, D, d_r, d_c, r, cols, inside, sv, sd, tz, tzl, te, t)
        u = tl.where((exclusive | both)[:, None], x, tl.where(nonzero[:, None], v, 0.0))
        mu = a_s[:, None] / dn
        u = tl.where(group[:, None], v * (s[:, None] / (s[:, None] + mu)), u)
        fu, eu = frexp_parts(u)
        us = tl.where(saturated[:, None], fu * pow2_of(eu + (ev - 1 - shift)[:, None]), u * sv[:, None])
        store_signed(X, r, cols, inside, m, us, w, finite)


_NO_SPECIALIZE = ["G", "m", "max_iter"]  # one compiled variant per block shape (and dtypes)
_TILES = {"scaled_tile": scaled_tile, "store_signed": store_signed, "row_scales": row_scales, "pow2_scale": pow2_scale,
          "root_step": root_step}
_HELPERS = {"frexp_parts": frexp_parts, "pow2_of": pow2_of, "two_product": two_product, "pair_tile": pair_tile,
            "exclusive_support": exclusive_support, "exclusive_tile": exclusive_tile, "root_search": root_search, **_TILES}


@functools.cache
def kernel(interpret: bool):
    """The operator's kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_group_exclusive_metric, interpret, helpers=_HELPERS,
                     do_not_specialize=_NO_SPECIALIZE + ["w_r", "w_c", "d_r", "d_c"])  # (a_r, b_r: 0 or 1, specialised)


@functools.cache
def roots_kernel(interpret: bool):
    """The root search's kernel, compiled (``interpret=False``) or interpreted."""
    return as_kernel(_group_lasso_roots, interpret, helpers={"root_search": root_search, **_TILES}, do_not_specialize=_NO_SPECIALIZE)


def blocks(G: int, m: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_M): rows per program and columns per tile."""
    if not interpret:
        return GPU_BLOCK_R, GPU_BLOCK_M
    block_m = max(2, triton.next_power_of_2(m))
    return max(1, min(INTERPRET_LANES // block_m, triton.next_power_of_2(G))), block_m


def _launch(kernel_of, W, G, m, args):
    global launches
    interpret = W.device.type != "cuda" or _interpreting_everything()
    block_r, block_m = blocks(G, m, interpret)
    launches += 1
    run_kernel(kernel_of, interpret, (triton.cdiv(G, block_r),), W.device, args, dict(BLOCK_R=block_r, BLOCK_M=block_m))


def fits(W, D) -> bool:
    """Whether :func:`group_exclusive_metric` solves ``W`` in the metric ``D``:
    float32 or float64 torch tensors of one shape (G, m) on one device
    (other dtypes are the array code's)."""
    import torch

    floats = (torch.float32, torch.float64)
    return (isinstance(D, torch.Tensor) and W.ndim == 2 and D.shape == W.shape and W.dtype in floats
            and D.dtype in floats and D.device == W.device)


def group_exclusive_metric(W, D, a, b, max_iter: int):
    """The prox of ``a_r ||x_r||_2 + b_r/2 ||x_r||_1^2`` per row of ``W`` in
    the metric ``D`` (:func:`._metric_kernels.group_exclusive_metric`'s
    result, every case, to the accuracy of its row sums; :func:`fits` must
    hold; ``D`` None: the metric 1, a kept float64 1 read with stride 0):
    a new contiguous tensor of W's dtype, in one launch and no host read.  ``a``, ``b``: one per row or one for all; each root searched for
    at most ``max_iter`` steps.

    Group+exclusive's outer root (s = ||x||_2, psi(s) = s / ||x(a/s)|| = 1)
    takes the array code's safeguarded Newton steps; each step solves the
    inner exclusive equation (weights d + a/s) by :func:`exclusive_support`
    (a few passes over the row) and sums x over two passes: O(steps x
    inner steps x m) per row, no sort."""
    import torch

    G, m = W.shape
    if G == 0 or m == 0:
        return W.clone(memory_format=torch.contiguous_format)
    (a, a_r), (b, b_r) = (_per_row(t, G, W.device) for t in (a, b))
    X = torch.empty((G, m), dtype=W.dtype, device=W.device)
    D, (d_r, d_c) = (kept_scalar(1.0, W.device), (0, 0)) if D is None else (D, D.stride())
    _launch(kernel, W, G, m, (W, *W.stride(), D, d_r, d_c, a, a_r, b, b_r, X, G, m, max_iter))
    return X


def _per_row(t, G: int, device) -> tuple:
    """``(threshold, stride)`` of one threshold per row (a float64 vector of
    G, stride 1) or one for all (a single float64 value, stride 0: read by
    every row, nothing materialised; a number becomes a tensor on ``device``)."""
    import torch

    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.numel() == 1:
        return t, 0
    return torch.broadcast_to(t, (G,)).contiguous(), 1


_KEPT: dict = {}


def kept_scalar(value: float, device):
    """A float64 ``value`` on ``device``, kept (read with stride 0: nothing
    formed per call)."""
    import torch

    key = (float(value), str(device))
    if key not in _KEPT:
        _KEPT[key] = torch.full((), value, dtype=torch.float64, device=device)
    return _KEPT[key]


def zero(device):
    """A float64 0 on ``device``, kept (the group lasso's exclusive threshold
    and the exclusive lasso's group one, read with stride 0)."""
    return kept_scalar(0.0, device)


def group_lasso_roots(V, Dn, a, lo, hi, max_iter: int):
    """s per row (:func:`._metric_kernels._group_lasso_s`'s root, to the
    accuracy of its row sums), in one launch and no host read.  ``V``,
    ``Dn``: float64 torch tensors (G, m) on one device; ``a``, ``lo``,
    ``hi``: float64, one per row."""
    import torch

    G, m = V.shape
    out = torch.empty(G, dtype=torch.float64, device=V.device)
    if G == 0:
        return out
    V, Dn = V.contiguous(), Dn.contiguous()
    a, lo, hi = (torch.broadcast_to(t, (G,)).contiguous() for t in (a, lo, hi))
    _launch(roots_kernel, V, G, m, (V, Dn, a, lo, hi, out, G, m, max_iter))
    return out

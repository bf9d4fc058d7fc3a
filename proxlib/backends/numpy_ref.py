"""NumPy reference backend: the definition every other backend is tested against.

OWL uses ``scipy.optimize.isotonic_regression`` (pool-adjacent-violators);
the other operators are the array-API kernels shared with the CuPy and torch
backends: ``_stages`` with its generic primitives (group lasso, GrOWL, the
elementwise maps) and ``_xp_kernels`` (exclusive, group+exclusive, lp).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.optimize import isotonic_regression

from . import KERNELS
from . import _stages
from . import _xp_kernels as _k

__all__ = list(KERNELS)  # the same kernel names in every backend

NAME = "numpy"


def owl(v, w):
    """OWL prox of the sorted magnitudes, with the exact zero pattern.

    With a = |v| sorted decreasingly and thresholds w (already times step),
    the prox of the sorted magnitudes is the non-increasing isotonic fit of
    z = a - w clipped at 0 (the projection onto the monotone non-negative
    cone; Bogdan et al. 2015, Zeng & Figueiredo 2014); it is unsorted and the
    signs of v are restored.

    The zero pattern is decided EXACTLY (z and the sums that decide it are
    never rounded):

    * z_i = a_i - w_i is kept as the unevaluated sum zh_i + zl_i of TwoSum
      (error-free: 1 - 2.8e-45 is not rounded to 1);
    * the support of the fit is the prefix 1..k* with k* the FIRST index at
      which the exact prefix sums P_l = z_1 + ... + z_l (P_0 = 0) attain
      their maximum (the min-max formula of isotonic regression: the fit at
      l is positive iff max_{j >= l} P_j > max_{j < l} P_j).  Float prefix
      sums with a rigorous error bound leave a window of candidates (shrunk
      by recomputing the sums relative to the window's start), which exact
      rational sums then decide;
    * on the support the fit is the isotonic fit of z_1..z_k* alone (its
      blocks end at k*) computed by ``scipy.optimize.isotonic_regression``
      (pool-adjacent-violators; values accurate to k* eps max|z|), each run
      of equal rounded z handed to it as one point weighted by the run's
      length, so that a run's value is exact and never pooled with a
      neighbour an ulp away (zero weights return v, constant weights the
      correctly rounded |v| - c).  The exact
      fit there is positive; where rounding gave a value <= 0 (only within
      that rounding of 0) the trailing blocks are pooled and given their exact
      mean, which is positive: every suffix average of z_1..z_k* is at least
      the exact fit at k* > 0.

    Thresholds may be +inf (step * w overflowed): then the prox is 0.  Sums are
    formed at the scale 2^-k (exact) when n max|z| could overflow.
    Cost: a stable argsort O(n log n), PAVA O(n), the window O(n) per
    shrinking round (usually one or two) plus rational sums over the final
    window (usually a few entries).
    """
    n = v.shape[0]
    if n == 0:
        return v.copy()
    a = np.abs(v.astype(np.float64, copy=False))
    w = w.astype(np.float64, copy=False)
    out = np.zeros(n, dtype=np.float64)
    if not w[0] < np.inf:  # w is non-increasing: an infinite weight forces x = 0
        return (out * np.sign(v)).astype(v.dtype, copy=False)
    order = np.argsort(-a, kind="stable")
    a_sorted = a[order]
    if not np.isfinite(a_sorted).all():  # unchecked NaN/Inf input: propagate it
        out[order] = np.maximum(isotonic_regression(a_sorted - w, increasing=False).x, 0.0)
        return (out * np.sign(v)).astype(v.dtype, copy=False)
    zh, zl = _two_sum(a_sorted, -w)  # z = zh + zl exactly
    # scale so that no sum of n terms can overflow (a power of two: exact,
    # except that terms below 2^(k - 1074) lose bits; see _owl_support)
    zmax = max(float(a_sorted[0]), float(w[0]))
    k2 = max(0, math.frexp(zmax)[1] + math.ceil(math.log2(n + 1)) + 1 - 1023)
    sc = math.ldexp(1.0, -k2)
    k = _owl_support(zh, zl, sc)
    if k > 0:
        fit = _owl_fit_positive(zh[:k], zl[:k], sc)
        # Equal magnitudes have equal outputs in exact arithmetic (tied
        # magnitudes are always pooled, and never split by the support), but
        # scipy can pool equal neighbours into blocks whose means differ in
        # the last bit.  Give every run of tied magnitudes its first value.
        if k > 1:
            first = np.empty(k, dtype=bool)
            first[0] = True
            np.not_equal(a_sorted[1:k], a_sorted[: k - 1], out=first[1:])
            fit = fit[np.maximum.accumulate(np.where(first, np.arange(k), 0))]
        out[order[:k]] = fit
    out *= np.sign(v)
    return out.astype(v.dtype, copy=False)


def _two_sum(x, y):
    """s + e == x + y exactly, s = fl(x + y) (Knuth's TwoSum, elementwise)."""
    s = x + y
    bp = s - x
    e = (x - (s - bp)) + (y - bp)
    return s, e


_U = 2.0**-53


def _owl_support(zh, zl, sc):
    """k* = the first index l in 0..n at which P_l = sum_{i<=l} (zh_i + zl_i) is
    maximal (exact).

    A window [lo, hi] of indices that surely contains k* is narrowed with float
    sums of sc * zh relative to P_lo: |float - exact| <= (j + 2) eps C_j with
    C_j the float sum of |sc zh| (recursive summation, |zl| <= eps |zh|/2),
    plus 2^-1074 per term for the terms that underflowed when scaled; only
    indices whose upper bound reaches the largest lower bound stay.  When the
    window stops shrinking, its P_l - P_lo are summed exactly (rationals) over
    the non-zero terms.
    """
    n = zh.shape[0]
    lo, hi = 0, n
    zs = zh * sc
    while True:
        seg = zs[lo:hi]
        m = seg.shape[0]
        d = np.zeros(m + 1)
        np.cumsum(seg, out=d[1:])
        c = np.zeros(m + 1)
        np.cumsum(np.abs(seg), out=c[1:])
        j = np.arange(m + 1, dtype=np.float64)
        bound = (j + 2.0) * (2.0 * _U) * c * (1.0 + 4.0 * _U * (m + 2)) + (j + 1.0) * 2.0**-1074
        low = d - bound
        top = low.max()
        cand = np.nonzero(d + bound >= top)[0]
        new_lo, new_hi = lo + int(cand[0]), lo + int(cand[-1])
        if (new_lo, new_hi) == (lo, hi) or new_lo == new_hi:
            lo, hi = new_lo, new_hi
            break
        lo, hi = new_lo, new_hi
    if lo == hi:
        return lo
    # Only the last round's candidates can hold the maximum (elsewhere P_l <
    # top <= max P), and one whose P equals the previous candidate's (no
    # non-zero term between them) is not the first maximum: the exact sums
    # run between the candidates left, a segment at once (_exact_sum).  A
    # Fraction per term cost 10 s at n = 1e6 where the window spanned the
    # vector (equal magnitudes whose weights sum to about their sum).
    nonzero = np.concatenate([[0], np.cumsum((zh[lo:hi] != 0) | (zl[lo:hi] != 0))])
    pts = cand[np.concatenate([[True], nonzero[cand[1:]] > nonzero[cand[:-1]]])]
    best = lo
    diff = Fraction(0)  # P_l - P_best, exactly
    for p, q in zip(pts[:-1].tolist(), pts[1:].tolist()):
        diff += _exact_sum(zh[lo + p : lo + q], zl[lo + p : lo + q])
        if diff > 0:
            best, diff = lo + q, Fraction(0)
    return best


def _exact_sum(zh, zl):
    """The sum of the entries of ``zh`` and ``zl``, exactly (a Fraction):
    correctly rounded sums (``math.fsum``) of the terms and of minus the
    sums found so far, until one is 0; a Fraction per term for a few terms
    or where ``fsum`` overflows."""
    terms = [t for t in np.concatenate([zh, zl]).tolist() if t]
    if len(terms) > 8:
        total = Fraction(0)
        rest = list(terms)  # the terms and minus the sums found so far
        try:
            while True:
                s = math.fsum(rest)
                if s == 0:
                    return total
                total += Fraction(s)
                rest.append(-s)
        except OverflowError:
            pass
    return sum((Fraction(t) for t in terms), Fraction(0))


def _owl_fit_positive(zh, zl, sc):
    """The non-increasing isotonic fit of z = zh + zl (the support's prefix),
    computed at the scale sc, each block clamped into [min z, max z] of the
    block, and the trailing blocks that rounding left <= 0 replaced by their
    exact mean (unscaled result)."""
    z = zh * sc
    k = z.shape[0]
    # Runs of equal z go to the PAVA as one point weighted by its length: its
    # value is then z exactly.  As single points, a run's pooled mean came out
    # an ulp off (three copies of z summed to 3z plus an ulp) and was pooled
    # with a neighbour an ulp away (zero weights changed v by up to 2 ulps for
    # near-tied magnitudes); the exact fit pools a run of equal entries
    # anyway, so it is the same problem.
    runs = np.flatnonzero(np.concatenate([[True], z[1:] != z[:-1]]))
    res = isotonic_regression(z[runs], weights=np.diff(np.append(runs, k)).astype(np.float64), increasing=False)
    # A block's value is the mean of its z, so it lies in [min z, max z] over the
    # block; the rounded mean can leave that range (three copies of 0.05 average
    # to 0.05000000000000001, so the prox with zero weights grew |v|).  Clamp.
    starts = runs[res.blocks[:-1]]
    lo = np.minimum.reduceat(z, starts)
    hi = np.maximum.reduceat(z, starts)
    sizes = np.diff(np.append(starts, k))
    fit = np.clip(np.repeat(res.x[res.blocks[:-1]], sizes), np.repeat(lo, sizes), np.repeat(hi, sizes)) / sc
    if not fit[k - 1] > 0.0:
        # The exact fit is positive: pool the trailing blocks with fit <= 0 and
        # give them their exact mean (a suffix average: > 0), capped by the fit
        # before them (the fit is non-increasing).
        j0 = int(np.searchsorted(-fit, 0.0, side="left"))  # first index with fit <= 0 (a block start)
        total = Fraction(0)
        for x in np.concatenate([zh[j0:k], zl[j0:k]]):
            if x:
                total += Fraction(float(x))
        mean = float(total / (k - j0))
        if j0 > 0:
            mean = min(mean, float(fit[j0 - 1]))
        fit[j0:] = mean
    return fit


def growl(W, w, check_finite=False):
    return _stages.growl(W, w, owl, _stages.GENERIC, check_finite)


def group_lasso(W, a, check_finite=False):
    return _stages.group_lasso(W, a, _stages.GENERIC, check_finite)


def weighted_l1(v, w):
    return _stages.weighted_l1(v, w, _stages.GENERIC)


def weighted_l2sq(v, w):
    return _stages.weighted_l2sq(v, w, _stages.GENERIC)


exclusive_lasso = _k.exclusive_lasso


def group_exclusive(W, a, b, check_finite=False):
    """The exact group+exclusive kernel; where every b_r is 0 (mu = 0) it is
    the group lasso, and it is then computed as :func:`group_lasso` is (the
    same stages, so the same bits: the kernel's own norm, summed over the
    sorted scaled magnitudes, can differ from the stages' in the last bit)."""
    if not np.any(np.asarray(b)):
        return group_lasso(W, a, check_finite)
    return _k.group_exclusive(W, a, b, check_finite=check_finite)


lp = _k.lp

# the prox in a diagonal metric: the array-API kernels
from ._metric_kernels import (  # noqa: E402
    exclusive_lasso_metric,
    group_exclusive_metric,
    group_lasso_metric,
    lp_metric,
    weighted_l1_metric,
    weighted_l2sq_metric,
)

"""NumPy reference backend: the definition every other backend is tested against.

OWL uses ``scipy.optimize.isotonic_regression`` (pool-adjacent-violators);
the other operators are the array-API kernels shared with the CuPy and torch
backends: ``_stages`` with its generic primitives (group lasso, GrOWL, the
elementwise maps) and ``_xp_kernels`` (exclusive, group+exclusive, lp).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import isotonic_regression

from . import KERNELS
from . import _stages
from . import _xp_kernels as _k

__all__ = list(KERNELS)  # the same kernel names in every backend

NAME = "numpy"


def owl(v, w):
    """OWL prox: sort |v| (decreasing), PAVA on |v|_sorted - w, clip at 0, unsort.

    The clipped non-increasing isotonic fit of |v|_sorted - w is the projection
    onto the monotone non-negative cone, which is the OWL prox of the sorted
    magnitudes (Bogdan et al. 2015; Zeng & Figueiredo 2014).
    """
    n = v.shape[0]
    if n == 0:
        return v.copy()
    a = np.abs(v.astype(np.float64, copy=False))
    order = np.argsort(-a, kind="stable")
    a_sorted = a[order]
    z = a_sorted - w.astype(np.float64, copy=False)
    res = isotonic_regression(z, increasing=False)
    fit = res.x
    # A block's value is the mean of its z, so it lies in [min z, max z] over the
    # block; the rounded mean can leave that range (three copies of 0.05 average
    # to 0.05000000000000001, so the prox with zero weights grew |v|).  Clamp.
    starts = res.blocks[:-1]
    lo = np.minimum.reduceat(z, starts)
    hi = np.maximum.reduceat(z, starts)
    sizes = np.diff(res.blocks)
    fit = np.clip(fit, np.repeat(lo, sizes), np.repeat(hi, sizes))
    # Equal magnitudes have equal outputs in exact arithmetic, but scipy pools
    # equal neighbours into blocks whose means can differ in the last bit (e.g.
    # 12 copies of one value came back as two different values).  Give every
    # run of tied magnitudes the value of its first entry.
    if n > 1:
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(a_sorted[1:], a_sorted[:-1], out=first[1:])
        fit = fit[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    np.maximum(fit, 0.0, out=fit)
    out = np.empty(n, dtype=np.float64)
    out[order] = fit
    out *= np.sign(v)
    return out.astype(v.dtype, copy=False)


def growl(W, w, check_finite=False):
    return _stages.growl(W, w, owl, _stages.GENERIC, check_finite)


def group_lasso(W, a, check_finite=False):
    return _stages.group_lasso(W, a, _stages.GENERIC, check_finite)


def weighted_l1(v, w):
    return _stages.weighted_l1(v, w, _stages.GENERIC)


def weighted_l2sq(v, w):
    return _stages.weighted_l2sq(v, w, _stages.GENERIC)


exclusive_lasso = _k.exclusive_lasso
group_exclusive = _k.group_exclusive
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

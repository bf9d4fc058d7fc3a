"""Single-pass row operators, written once for any set of fused primitives.

The reference kernels (``_xp_kernels``) are clear but make many passes over
``W`` and allocate several temporaries of its size: upcast, abs, scale, square,
multiply, cast.  On a GPU, where these operators are bound by memory traffic,
this module does the same mathematics with two primitives that each read
``W`` once:

``row_sumsq(W)``   (G,) float64: sum of squares of each row, accumulated in
                   float64 with no scaling (one fused reduction);
``scale_rows(W, f)`` ``W``'s dtype: ``W * f[:, None]`` formed in float64 and
                   rounded once (one fused elementwise kernel),

plus ``soft_threshold`` and ``l2sq_shrink`` for the elementwise operators.
``cupy_gpu`` passes CUDA kernels (ElementwiseKernel/ReductionKernel);
``GENERIC`` below is the same contract in plain array code, which is what the
CPU tests run.  A row operator then costs one read of ``W`` for the norms and
one read plus one write for the result, and allocates the output plus O(G).

Why the unscaled sum of squares is exact enough: for float32 input, squares
of float32 numbers can neither overflow nor underflow in float64.  For float64
input a row whose sum of squares lies in [2^-900, 2^1000] lost nothing to
overflow (every partial sum is below the total) and at most m * 2^-1075 to
underflow (2^-175 relative); the other rows (zero, tiny or huge entries) are
recomputed with the scaled reference norm, so results at 1e-200 or 1e200 are as
accurate as at 1.
"""

from __future__ import annotations

from types import SimpleNamespace

from .._dispatch import array_namespace
from . import _xp_kernels as _k
from . import check_row_norms

__all__ = ["GENERIC", "row_norms", "group_lasso", "growl", "weighted_l1", "weighted_l2sq"]

_SAFE_LO = 2.0**-900
_SAFE_HI = 2.0**1000


def _generic_row_sumsq(W):
    xp = array_namespace(W)
    W64 = W.astype(xp.float64, copy=False)
    with _k._errstate(xp):  # huge rows overflow to inf: row_norms recomputes them
        return xp.sum(W64 * W64, axis=1)


def _generic_scale_rows(W, f):
    xp = array_namespace(W)
    return (W.astype(xp.float64, copy=False) * f[:, None]).astype(W.dtype, copy=False)


GENERIC = SimpleNamespace(
    row_sumsq=_generic_row_sumsq,
    scale_rows=_generic_scale_rows,
    soft_threshold=_k.weighted_l1,
    l2sq_shrink=_k.weighted_l2sq,
)


def row_norms(W, prims):
    """l2 norm of each row (float64), overflow- and underflow-safe."""
    xp = array_namespace(W)
    ssq = prims.row_sumsq(W)
    nrm = xp.sqrt(ssq)
    if W.dtype == xp.float32:
        return nrm
    unsafe = ~((ssq >= _SAFE_LO) & (ssq <= _SAFE_HI))
    if bool(xp.any(unsafe)):  # one scalar read; rows with zero, tiny or huge entries
        idx = xp.nonzero(unsafe)[0]
        nrm[idx] = _k.row_norms(W[idx], xp)
    return nrm


def group_lasso(W, a, prims, check_finite=False):
    """x_r = (1 - a_r/||w_r||)_+ w_r."""
    xp = array_namespace(W)
    a = a.astype(xp.float64, copy=False)
    nrm = row_norms(W, prims)
    if check_finite:
        check_row_norms(nrm, xp)
    keep = nrm > a
    factor = xp.where(keep, 1.0 - a / xp.where(keep, nrm, 1.0), 0.0)
    return prims.scale_rows(W, factor)


def growl(W, w, owl, prims, check_finite=False):
    """Rows rescaled to the OWL prox of their norms: x_r = (m_r / ||w_r||) w_r."""
    xp = array_namespace(W)
    nrm = row_norms(W, prims)
    if check_finite:
        check_row_norms(nrm, xp)
    new = owl(nrm, w.astype(xp.float64, copy=False))
    pos = nrm > 0
    factor = xp.where(pos, new / xp.where(pos, nrm, 1.0), 0.0)
    return prims.scale_rows(W, factor)


def weighted_l1(v, w, prims):
    return prims.soft_threshold(v, w)


def weighted_l2sq(v, w, prims):
    return prims.l2sq_shrink(v, w)

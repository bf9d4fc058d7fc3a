"""Row operators as stages: row statistics, a solve over one scalar per row, a row map.

The group lasso and GrOWL act on each row r of ``W`` through one number:

* **statistics**: the sum of squares of each row, ``row_sumsq(W)`` -- a sum,
  so partial sums over pieces of a row (a sharded tensor) add up;
* **solve**: one scalar per row from the row norms and the thresholds --
  :func:`group_lasso_factor` (each row alone) or :func:`growl_factor` (the OWL
  prox of all the norms);
* **map**: ``scale_rows(W, f)``, row r times f_r.

The elementwise operators are a single map (``soft_threshold``,
``l2sq_shrink``).  A backend supplies these few *primitives*; the operators
below are written once.  ``GENERIC`` is the array-API implementation (the
NumPy reference, torch tensors on any device, CuPy's fallback); CuPy passes
fused CUDA kernels.  A row operator then costs one read of ``W`` for the
statistics and one read plus one write for the result, and allocates the
output (none with ``out=``) plus O(G).

Primitive contract:

``row_sumsq(W)``      (G,) float64: sum of squares of each row, accumulated in
                      float64 with no scaling;
``scale_rows(W, f, out=None)``  ``W * f[:, None]`` in ``W``'s dtype (formed in
                      float64 and rounded once by the generic primitive);
``soft_threshold(v, w, out=None)``, ``l2sq_shrink(v, w, out=None)``.

Why the unscaled sum of squares is exact enough: for float32 input, squares
of float32 numbers can neither overflow nor underflow in float64.  For float64
input a row whose sum of squares lies in [2^-900, 2^1000] lost nothing to
overflow (every partial sum is below the total) and at most m * 2^-1075 to
underflow (2^-175 relative); the other rows (zero, tiny or huge entries) are
recomputed with the scaled reference norm (one scalar read decides whether
any row needs it), so results at 1e-200 or 1e200 are as accurate as at 1.
"""

from __future__ import annotations

from types import SimpleNamespace

from .._dispatch import array_namespace
from . import _xp_kernels as _k
from . import check_row_norms

__all__ = [
    "GENERIC",
    "row_norms",
    "group_lasso_factor",
    "growl_factor",
    "group_lasso",
    "growl",
    "weighted_l1",
    "weighted_l2sq",
]

_SAFE_LO = 2.0**-900
_SAFE_HI = 2.0**1000


def _into(out, X):
    if out is None:
        return X
    out[...] = X
    return out


def _generic_row_sumsq(W):
    xp = array_namespace(W)
    W64 = _k.upcast(W, xp)
    with _k.errstate(W):  # huge rows overflow to inf: row_norms recomputes them
        return xp.sum(W64 * W64, axis=1)


def _generic_scale_rows(W, f, out=None):
    xp = array_namespace(W)
    return _into(out, xp.astype(_k.upcast(W, xp) * f[:, None], W.dtype, copy=False))


def _generic_soft_threshold(v, w, out=None):
    return _into(out, _k.weighted_l1(v, w))


def _generic_l2sq_shrink(v, w, out=None):
    return _into(out, _k.weighted_l2sq(v, w))


GENERIC = SimpleNamespace(
    row_sumsq=_generic_row_sumsq,
    scale_rows=_generic_scale_rows,
    soft_threshold=_generic_soft_threshold,
    l2sq_shrink=_generic_l2sq_shrink,
)


def norms_from_sumsq(ssq, W):
    """Row norms from row sums of squares (float64) as ``(nrm, s)``, the norm
    of row r being ``nrm[r] * s[r]`` with ``s[r]`` a power of two, or
    ``s = None``: every ``s[r]`` is 1.

    ``s`` is None for data other than float64 (float32 squares are exact in
    float64 and cannot overflow it), and 1 except on the rows of float64 ``W``
    whose unscaled sum may have lost terms to underflow or overflowed: those
    are recomputed with the scaled reference norm
    (:func:`._xp_kernels.scaled_row_norms`), which keeps the norm's scale
    apart, so that a norm beyond the largest float64 (a row of four 1e308's)
    stays exact.  ``nrm`` is finite iff the row is."""
    xp = array_namespace(ssq)
    nrm = xp.sqrt(ssq)
    if W.dtype != xp.float64:
        return nrm, None
    s = xp.ones_like(nrm)
    unsafe = ~((ssq >= _SAFE_LO) & (ssq <= _SAFE_HI))
    if bool(xp.any(unsafe)):  # one scalar read; rows with zero, tiny or huge entries
        idx = xp.nonzero(unsafe)[0]
        nrm[idx], s[idx] = _k.scaled_row_norms(W[idx, :], xp)
    return nrm, s


def scaled_row_norms(W, prims):
    """``(nrm, s)``: the l2 norm of row r is ``nrm[r] * s[r]`` (float64, see
    :func:`norms_from_sumsq`; ``s`` None: 1), overflow- and underflow-safe; the primitive
    ``prims.scaled_row_norms`` where a backend has one (a fused kernel)."""
    own = getattr(prims, "scaled_row_norms", None)
    if own is not None:
        return own(W)
    return norms_from_sumsq(prims.row_sumsq(W), W)


def row_norms(W, prims):
    """l2 norm of each row (float64; inf only where it exceeds the largest float64)."""
    nrm, s = scaled_row_norms(W, prims)
    if s is None:
        return nrm
    with _k.errstate(nrm):
        return nrm * s


def group_lasso_factor(nrm, a, s=None):
    """f_r = (1 - a_r / ||w_r||)_+: the group lasso's solve stage (float64),
    with ||w_r|| = nrm_r * s_r (``s`` defaults to 1).

    The ratio is formed as (a_r / s_r) / nrm_r: no overflow where the norm
    exceeds the largest float64, and an a_r / s_r that overflows (the row is
    zeroed: nrm_r < 2 sqrt(m)) or underflows (f_r = 1 to within 2^-1074) is
    harmless.  A norm that is not finite (an unchecked row holding NaN or
    Inf) gives the factor 1: the row comes back as it is, as an unchecked
    row holding NaN or Inf does from every row penalty (rather than zeroed,
    or made all NaN)."""
    xp = array_namespace(nrm)
    a = _k.upcast(a, xp)
    if s is not None:
        with _k.errstate(nrm):
            a = a / s
    with _k.errstate(nrm):  # (a / 0 on the rows that are zeroed anyway)
        return xp.where(nrm > a, 1.0 - a / nrm, xp.isnan(nrm))  # NaN norm: 1


def growl_factor(nrm, w, owl, s=None):
    """f_r = m_r / ||w_r|| with m = OWL prox of the norms (weights ``w``):
    GrOWL's solve stage (float64; zero rows get 0).  ||w_r|| = nrm_r * s_r.

    The OWL prox couples all rows, so it runs on one common scale: the norms
    and the weights are divided by the power of two 2^k that brings the
    largest norm below 2^1020 (k = 0, no scaling, unless some norm exceeds
    that); the OWL prox is positively homogeneous, m(n / 2^k, w / 2^k) =
    m(n, w) / 2^k, and the factor is a ratio of the two scaled numbers."""
    xp = array_namespace(nrm)
    w = _k.upcast(w, xp)
    if s is not None:
        with _k.errstate(nrm):
            big = bool(xp.any(nrm * s > 2.0**1020))  # one scalar read
        if big:
            _, e_nrm = xp.frexp(nrm)
            _, e_s = xp.frexp(s)
            k = max(int(xp.max(e_nrm + e_s - 1)) - 1020, 0)
            nrm = xp.ldexp(nrm, e_s - 1 - k)  # nrm * s / 2^k (rounding only below 2^-1022)
            w = xp.ldexp(w, xp.full(w.shape, -k, dtype=e_s.dtype, device=_k.device(w)))
        else:
            nrm = nrm * s
    new = owl(nrm, w)
    pos = nrm > 0
    with _k.errstate(nrm):  # (an unchecked row's infinite norm: inf / inf, NumPy's RuntimeWarning)
        return xp.where(pos, new / xp.where(pos, nrm, 1.0), 0.0)


def group_lasso(W, a, prims, check_finite=False, out=None):
    """x_r = (1 - a_r/||w_r||)_+ w_r."""
    nrm, s = scaled_row_norms(W, prims)
    if check_finite:
        check_row_norms(nrm, array_namespace(nrm))
    return prims.scale_rows(W, group_lasso_factor(nrm, a, s), out=out)


def growl(W, w, owl, prims, check_finite=False, out=None):
    """Rows rescaled to the OWL prox of their norms: x_r = (m_r / ||w_r||) w_r."""
    nrm, s = scaled_row_norms(W, prims)
    if check_finite:
        check_row_norms(nrm, array_namespace(nrm))
    xp = array_namespace(nrm)
    wide = W.dtype == xp.float64  # float32 data: s = 1 and norms far below 2^1020 (no read)
    return prims.scale_rows(W, growl_factor(nrm, w, owl, s if wide else None), out=out)


def weighted_l1(v, w, prims, out=None):
    return prims.soft_threshold(v, w, out=out)


def weighted_l2sq(v, w, prims, out=None):
    return prims.l2sq_shrink(v, w, out=out)

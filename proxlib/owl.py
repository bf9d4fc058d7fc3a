r"""OWL (ordered weighted l1) and GrOWL (its group form over rows).

Both share one pool-adjacent-violators core: the OWL prox of a vector of
magnitudes.  GrOWL applies it to the row norms and rescales the rows.

Weight builders return the non-increasing, non-negative weight vectors used in
the literature; each docstring gives its formula with 1-based index i.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

import numpy as np

from . import _range
from . import _registry as R
from . import _validate as V
from ._dispatch import array_kind, array_namespace, size
from ._dispatch import device as _device
from ._rows import canonical_rows
from .backends import _xp_kernels as _k

__all__ = [
    "OWL",
    "GrOWL",
    "prox_owl",
    "prox_growl",
    "owl_weights_constant",
    "owl_weights_oscar",
    "owl_weights_stairwise",
    "owl_weights_piecewise_linear",
    "owl_weights_spike",
]


def _weight_vector(weights, copy: bool):
    """``weights`` checked once, when a penalty is made: a 1-D float64 array of
    its own library and device, finite, >= 0 and non-increasing (a copy unless
    ``copy`` is False), and its largest entry (the first) as a Python float.

    Strided NumPy weights (``np.sort(w)[::-1]``, the common way to make them)
    are copied to contiguous memory even with ``copy=False``: Numba compiles
    one specialisation of a kernel per memory layout (seconds, on a first
    call), and a copy of the weights costs less than the prox's sort."""
    w = V.as_float_array(weights, "weights")
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, got shape {tuple(w.shape)}")
    xp = array_namespace(w)
    w = xp.astype(w, xp.float64, copy=copy)
    if isinstance(w, np.ndarray) and not w.flags.c_contiguous:
        w = np.ascontiguousarray(w)
    if size(w) == 0:
        return w, 0.0
    V.nonincreasing(w, "weights")
    lo = float(w[-1])  # the smallest, as they do not increase
    if lo < 0:
        raise ValueError(f"weights must be >= 0, got a minimum of {lo}")
    return w, float(w[0])


def _weights_for(pen, n: int, like, what: str):
    """``pen``'s weights checked against ``n`` entries (rows) and given as
    float64 on ``like``'s library and device (a copy only where they differ)."""
    w = pen.weights
    V.length(w, n, "weights", what)
    if array_kind(w) != array_kind(like) or (array_kind(like) != "numpy" and _device(w) != _device(like)):
        xp = array_namespace(like)
        w = V.like(w, xp.zeros(0, dtype=xp.float64, device=_device(like)), "weights")
    return w


class _SortedWeights(R.Penalty):
    """Shared by OWL and GrOWL: ``weights`` checked and (by default) copied when
    the object is made, so a prox call re-checks only their length, and the
    caller may change the array it passed without effect on the penalty.
    ``copy=False`` keeps the caller's array (the ``prox_*`` functions, which use
    the object once) where it already is float64 and, for NumPy, contiguous
    (:func:`_weight_vector`)."""

    what: ClassVar[str]  # what a weight is per: "element" or "row"

    def __post_init__(self, copy: bool):
        w, top = _weight_vector(self.weights, copy)
        R.frozen_set(self, weights=w, _top=top)

    def _n(self, layout) -> int:
        return layout.rows.n_groups if layout.rows is not None else layout.data.shape[0]

    def threshold_terms(self, layout):
        w = _weights_for(self, self._n(layout), layout.data, self.what)
        return (_range.Threshold((), w, 1, top=self._top),)

    def thresholds(self, layout):
        return (_weights_for(self, self._n(layout), layout.data, self.what),)

    def prox(self, v, step=1.0, *, metric=None, check_finite: bool = True):
        if metric is None:
            x = _in_one_call(self.kernel, v, self.weights, step, check_finite)
            if x is not None:
                return x
        return super().prox(v, step, metric=metric, check_finite=check_finite)

    prox.__doc__ = R.Penalty.prox.__doc__


@dataclass(frozen=True)
class OWL(_SortedWeights):
    r"""Omega(x) = sum_i weights_i |x|_[i] (sorted magnitudes, largest first);
    ``weights`` non-increasing and >= 0, one per entry.  See :func:`prox_owl`.

    The weights are checked (and copied, unless ``copy=False`` and they
    already are float64 and, for NumPy, contiguous) when the object is made."""

    weights: Any
    copy: InitVar[bool] = True

    kernel: ClassVar[str] = "owl"
    layout: ClassVar[str] = "flat"
    arg: ClassVar[str] = "v"
    what: ClassVar[str] = "element"

    def value(self, x) -> float:
        x = V.as_float_array(x, "x")
        xp = array_namespace(x)
        w = _weights_for(self, size(x), x, "element")
        a = _k.sort_magnitudes_desc(xp.abs(_k.upcast(x, xp).reshape(-1)), xp)
        return float(xp.sum(w * a))


@dataclass(frozen=True)
class GrOWL(_SortedWeights):
    r"""Omega(W) = sum_i weights_i ||w_[i]||_2 (rows sorted by norm, largest first);
    ``weights`` non-increasing and >= 0, one per row.  See :func:`prox_growl`.

    The weights are checked (and copied, unless ``copy=False`` and they
    already are float64 and, for NumPy, contiguous) when the object is made."""

    weights: Any
    copy: InitVar[bool] = True

    kernel: ClassVar[str] = "growl"
    layout: ClassVar[str] = "rows"
    arg: ClassVar[str] = "W"
    what: ClassVar[str] = "row"
    fused_finite_check: ClassVar[bool] = True

    def value(self, x) -> float:
        x = V.as_float_array(x, "x")
        xp = array_namespace(x)
        rows = canonical_rows(x, name="x")
        w = _weights_for(self, rows.n_groups, x, "row")
        return float(xp.sum(w * xp.sort(_k.row_norms(rows.rows, xp), descending=True)))


def prox_owl(v, weights, step=1.0, *, metric=None, check_finite: bool = True):
    r"""Proximal operator of the ordered weighted l1 (OWL) norm.

    .. math::

        \operatorname{prox}(v) = \arg\min_x \tfrac12 \|x - v\|_2^2
            + \mathrm{step} \sum_{i=1}^{n} \mathrm{weights}_i \, |x|_{[i]}

    where :math:`|x|_{[1]} \ge |x|_{[2]} \ge \dots` are the sorted magnitudes of
    all entries of ``x`` (``v`` of any shape is treated as one flat vector).

    Parameters
    ----------
    v : array (NumPy, CuPy or torch), any shape, float32 or float64
        (float16/bfloat16 are computed in float32 and returned in their dtype)
    weights : array of shape (v.size,)
        Non-increasing and non-negative; a NumPy array or an array of v's library.
    step : float > 0, default 1.0
    metric : array > 0 of v's shape (or broadcastable to it), optional
        The prox in the diagonal metric ``d = metric``,
        :math:`\arg\min_x \tfrac12 \sum_i d_i (x_i - v_i)^2 + \mathrm{step} \sum_i \mathrm{weights}_i |x|_{[i]}`,
        is computed exactly only for a constant ``d`` (every entry equal):
        it is then the Euclidean prox with step / d.  Otherwise ValueError:
        the order of the solution's magnitudes is not known in advance, so
        there is no finite pool-adjacent-violators solution to offer.
    check_finite : bool, default True
        Reject NaN/Inf in ``v`` (two reductions, no temporary).  False skips
        the check, for input known to be finite: a NaN or Inf entry then
        makes the result unspecified (it may differ between backends), as
        every entry is coupled to the others through the sort and the
        pooling; unlike the row penalties, such entries do not pass through.

    Returns
    -------
    A new array of ``v``'s library, device, shape and dtype (float64 for
    integer input).

    Raises
    ------
    ValueError
        Wrong length, negative or increasing weights, step <= 0, non-finite input.
    TypeError
        Complex, boolean, object or string arrays.

    Notes
    -----
    Exact and finite: sort ``|v|`` in decreasing order, fit the non-increasing
    isotonic regression (pool-adjacent-violators) to ``|v|_sorted - step *
    weights``, clip at 0, undo the sort and restore signs.  O(n log n).  Equal
    magnitudes receive equal outputs, whatever order the sort breaks the tie in.
    On a float32/float64 torch CPU tensor the sequential pool-adjacent-violators
    pass runs on the tensor's memory with Numba's serial kernel when Numba is
    installed (``torch_dev.CPU_KERNELS = "auto"``, the default), else with
    SciPy's; on an accelerator a parallel isotonic regression runs on the
    device (see ``proxlib.backends.torch_dev``).

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> x = proxlib.prox_owl(np.array([3.0, -1.0, 2.0]), np.array([3.0, 0.5, 0.0]))
    >>> np.round(x, 6)
    array([ 0.833333, -0.833333,  0.833333])

    (|v| sorted minus weights is [0, 1.5, 1]; pooling the violators gives one
    block of mean 2.5 / 3: all three entries are tied.)
    """
    if metric is None:
        x = _in_one_call("owl", v, weights, step, check_finite)
        if x is not None:
            return x
    return OWL(weights, copy=False).prox(v, step, metric=metric, check_finite=check_finite)


def _in_one_call(kernel: str, v, weights, step, check_finite):
    """OWL's or GrOWL's common call (NumPy float arrays, a plain step, a
    backend that offers it: Numba's ``owl_checked``, ``growl_checked``),
    the weights checked and the thresholds formed in compiled code, instead
    of the general path's Python layers (tens of microseconds, most of the
    call at n = 100 or 64 x 64) and float64 temporaries (for OWL three
    passes, a fifth of the call at n = 1e6 in float32); up to 2048 entries
    (rows) the whole call is one compiled call.  The result is the general
    path's, bit for bit; None wherever the general path must decide
    (:func:`proxlib._registry.in_one_call`)."""
    return R.in_one_call(kernel, v, weights, step, check_finite, _one_weight_vector)


def _one_weight_vector(v, w) -> bool:
    """The lanes' weights: a vector (its length is checked in the lane)."""
    return w.ndim == 1


def prox_growl(W, weights, step=1.0, *, metric=None, check_finite: bool = True):
    r"""Proximal operator of the group OWL (GrOWL) norm over the rows of ``W``.

    .. math::

        \operatorname{prox}(W) = \arg\min_X \tfrac12 \|X - W\|_F^2
            + \mathrm{step} \sum_{i=1}^{G} \mathrm{weights}_i \, \|x_{[i]}\|_2

    where :math:`x_{[i]}` is the row of ``X`` with the i-th largest l2 norm.
    A 2-D ``W`` has G = W.shape[0] rows; an N-D ``W`` is treated as
    ``W.reshape(W.shape[0], -1)``; a 1-D ``W`` is one row.

    Parameters
    ----------
    W : array (NumPy, CuPy or torch), float32 or float64 (half precision in float32)
    weights : array of shape (G,), non-increasing, non-negative
    step : float > 0
    metric : array > 0 of W's shape (or broadcastable to it), optional
        Exact only for a constant ``d`` (as :func:`prox_owl`: the Euclidean
        prox with step / d); ValueError otherwise.  A metric constant within
        each row but different across rows is not enough: the row norms then
        need the OWL prox in a diagonal metric.
    check_finite : bool, default True
        Reject NaN/Inf in ``W`` (read off the row norms).  False skips the
        check, for input known to be finite: a row holding NaN or Inf then
        makes the result unspecified (it may differ between backends), as
        every row's factor depends on all the norms (:func:`prox_owl`).

    Returns
    -------
    A new array of ``W``'s library, device, shape and dtype (float64 for
    integer input).

    Notes
    -----
    Stages: the row norms n_r = ||w_r||_2 (computed without overflow), the OWL
    prox m = prox_owl(n, step*weights) of those G numbers, then row r becomes
    (m_r / n_r) w_r; zero rows stay zero.  Rows whose norms are tied get the
    same norm: this is how GrOWL ties rows.

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> W = np.array([[3.0, 4.0], [0.0, 1.0]])
    >>> proxlib.prox_growl(W, np.array([1.0, 1.0]))
    array([[2.4, 3.2],
           [0. , 0. ]])
    """
    if metric is None:
        x = _in_one_call("growl", W, weights, step, check_finite)
        if x is not None:
            return x
    return GrOWL(weights, copy=False).prox(W, step, metric=metric, check_finite=check_finite)


R.register("owl", OWL, prox_owl)
R.register("growl", GrOWL, prox_growl)


# --------------------------------------------------------------- weight builders
#
# Every builder forms its weights in float64 (NumPy) and then ``_finish``es
# them: a ValueError where a weight is not representable in float64 or in the
# requested dtype (the exact weight would be rounded to inf), else a NumPy
# array of ``dtype`` (default float64) or, with ``like=``, an array of like's
# library, device and dtype (a torch tensor on like's GPU, say).  Scalars may
# be Python or NumPy numbers or one-element arrays or tensors.


def _finish(w, dtype, like, what: str):
    """float64 weights ``w`` as the builder's result (see above)."""
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{what} overflow float64 (the largest weight exceeds {np.finfo(np.float64).max:.4g})")
    if dtype is not None:
        V.float_dtype_name(dtype)  # a floating dtype, or TypeError
    if like is None and dtype is not None and V.is_torch_dtype(dtype):
        like = importlib.import_module("torch").empty(0, dtype=dtype)  # a CPU tensor of that dtype
    if like is None:
        with np.errstate(over="ignore"):  # checked below
            out = w.astype(np.float64 if dtype is None else _dtype_of(np, dtype))
    else:
        if not V._is_array(like) or V.dtype_kind(like.dtype) != "f":
            got = f"a {type(like).__name__} of dtype {V.dtype_name(like.dtype)}" if V._is_array(like) else type(like).__name__
            raise TypeError(f"like must be a floating array or tensor, got {got}")
        ref = like
        if dtype is not None:
            xp = array_namespace(like)
            ref = xp.empty(0, dtype=_dtype_of(xp, dtype), device=_device(like))
        with np.errstate(over="ignore"):  # checked below
            out = V.like(w, ref, "weights")
    xp = array_namespace(out)
    if size(out) and not bool(xp.all(xp.isfinite(out))):
        raise ValueError(f"{what} overflow {V.dtype_name(out.dtype)} (the largest weight is {float(np.max(w)):.4g})")
    return out


def _dtype_of(xp, dtype):
    """``dtype`` (a NumPy or torch dtype, a NumPy scalar type, ``float``, a
    name) in xp's library; TypeError naming ``dtype`` where that library has
    no such dtype (bfloat16 in NumPy or CuPy)."""
    name = V.float_dtype_name(dtype)
    if not hasattr(xp, name):
        lib = getattr(xp, "__name__", "").split(".")[-1]
        raise TypeError(f"dtype {name}: the result would be a {lib} array and {lib} has no {name}; give like= a torch tensor (or dtype=torch.{name} without like=)")
    return getattr(xp, name)


def owl_weights_constant(n: int, lam: float, *, dtype=None, like=None):
    r"""Constant weights :math:`\lambda_i = \mathrm{lam}`: OWL becomes the lasso
    and GrOWL the group lasso.  (``dtype``, ``like``: see the builders' notes in
    :func:`owl_weights_oscar`.)"""
    n = V.count(n)
    lam = V.nonnegative(lam, "lam")
    return _finish(np.full(n, lam, dtype=np.float64), dtype, like, "the weights")


def owl_weights_oscar(n: int, lam1: float, lam2: float, *, dtype=None, like=None):
    r"""OSCAR / linear weights :math:`\lambda_i = \lambda_1 + \lambda_2 (n - i)`,
    i = 1..n (Bondell & Reich 2008; Zeng & Figueiredo 2014).

    Notes on every builder: the weights are formed in float64 and returned as a
    NumPy array of ``dtype`` (default float64; a torch dtype gives a CPU
    torch tensor), or, given ``like`` (an array or tensor of any library),
    as an array of like's library, device and dtype (``dtype`` overrides the
    dtype).  ``dtype`` is a floating dtype (NumPy, torch, a NumPy scalar type
    such as ``np.float32``, ``float`` or a name; TypeError otherwise).
    Scalars may be 0-d arrays or tensors.
    A weight that is not representable in the result's dtype raises
    ValueError (e.g. lam2 (n - 1) beyond the largest float).

    >>> import proxlib
    >>> proxlib.owl_weights_oscar(4, 1.0, 0.5)
    array([2.5, 2. , 1.5, 1. ])
    """
    n = V.count(n)
    lam1 = V.nonnegative(lam1, "lam1")
    lam2 = V.nonnegative(lam2, "lam2")
    with np.errstate(over="ignore"):
        w = lam1 + lam2 * np.arange(n - 1, -1, -1, dtype=np.float64)
    return _finish(w, dtype, like, "the OSCAR weights lam1 + lam2 (n - i)")


def owl_weights_stairwise(n: int, Lambda1: float, Lambda2: float, p: int, *, dtype=None, like=None):
    r"""Stairwise weights of the GrOWL poster (Zhang et al. 2018):

    .. math::

        \lambda_i = \Lambda_1 + (p - i + 1)\Lambda_2 \ (i \le p), \qquad
        \lambda_i = \Lambda_1 \ (i > p).

    ``Lambda1`` sets the sparsifying strength, ``Lambda2`` the tying strength
    among the ``p`` largest rows.  (``dtype``, ``like``: see
    :func:`owl_weights_oscar`.)
    """
    n = V.count(n)
    p = V.count(p, "p")
    if p > n:
        raise ValueError(f"p must be <= n ({n}), got {p}")
    L1 = V.nonnegative(Lambda1, "Lambda1")
    L2 = V.nonnegative(Lambda2, "Lambda2")
    i = np.arange(1, n + 1, dtype=np.float64)
    with np.errstate(over="ignore"):
        w = np.where(i <= p, L1 + (p - i + 1) * L2, L1)
    return _finish(w, dtype, like, "the stairwise weights Lambda1 + (p - i + 1) Lambda2")


def owl_weights_piecewise_linear(n: int, lambda1: float, lambda2: float, transition: float, *, dtype=None, like=None):
    r"""Piecewise-linear decay used in the GrOWL experiments.

    With :math:`p = \lceil \mathrm{transition} \cdot n \rceil` (transition in
    [0, 1]; the product is rounded to 9 decimals first, so that a fraction k/n
    gives p = k despite floating-point rounding), the weights fall linearly
    from ``lambda1`` at i = 1 to ``lambda2`` at i = p, then stay at ``lambda2``:

    .. math::

        \lambda_i = \lambda_2 + (\lambda_1 - \lambda_2)\frac{p - i}{p - 1}
        \ (i \le p), \qquad \lambda_i = \lambda_2 \ (i > p),

    (for p = 1 the first weight is ``lambda1``; for p = 0 all are ``lambda2``).
    Requires lambda1 >= lambda2 >= 0.  Formed as lambda2 + (lambda1 - lambda2)
    times a fraction in [0, 1]: nothing overflows.  (``dtype``, ``like``: see
    :func:`owl_weights_oscar`.)
    """
    n = V.count(n)
    l1 = V.nonnegative(lambda1, "lambda1")
    l2 = V.nonnegative(lambda2, "lambda2")
    t = V.in_unit_interval(transition, "transition")
    if l1 < l2:
        raise ValueError(f"lambda1 must be >= lambda2 for non-increasing weights, got {l1} < {l2}")
    # t * n rounded to 9 decimals before the ceiling: k/n * n is not always k in
    # floating point (0.07 * 100 = 7.000000000000001 would give p = 8)
    p = min(n, math.ceil(round(t * n, 9)))
    w = np.full(n, l2, dtype=np.float64)
    if p == 1:
        w[0] = l1
    elif p > 1:
        i = np.arange(1, p + 1, dtype=np.float64)
        w[:p] = l2 + (l1 - l2) * ((p - i) / (p - 1))
    return _finish(w, dtype, like, "the piecewise-linear weights")


def owl_weights_spike(n: int, lam: float, *, dtype=None, like=None):
    r"""Spike weights :math:`\lambda_1 = \mathrm{lam}`, :math:`\lambda_{i>1} = 0`:
    OWL becomes ``lam * ||x||_inf`` (GrOWL: the largest row norm).  (``dtype``,
    ``like``: see :func:`owl_weights_oscar`.)"""
    n = V.count(n)
    lam = V.nonnegative(lam, "lam")
    w = np.zeros(n, dtype=np.float64)
    if n:
        w[0] = lam
    return _finish(w, dtype, like, "the spike weights")

r"""Group lasso over the rows of a weight tensor (or over labelled groups)."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

from . import _range
from . import _registry as R
from . import _validate as V
from ._dispatch import array_namespace
from .backends import _xp_kernels as _k

__all__ = ["GroupLasso", "prox_group_lasso"]


class WeightedGroups(R.Penalty):
    r"""Base of the penalties sum_g c_g h(w_g) over the rows of W (or its
    ``groups`` labels), with group weights c_g: the group lasso, the
    exclusive lasso and their combination.  A subclass declares its
    thresholds' terms (``threshold_terms``, see :mod:`proxlib._range`) and
    ``group_values(rows, xp)``: a scalar factor f and the h(w_g)/f of each
    row; ``thresholds`` and ``value`` (f sum_g c_g h(w_g)/f) follow from them
    here."""

    layout: ClassVar[str] = "rows"
    arg: ClassVar[str] = "W"
    fused_finite_check: ClassVar[bool] = True  # from the row sums the kernels form anyway
    #: the scalar parameters that the one-call lane passes, in this order
    #: (:func:`rows_in_one_call`: the backend's ``<kernel>_checked`` forms
    #: the thresholds from them); read from the penalty's own class only, so
    #: a subclass with other thresholds takes the general path unless it
    #: declares its own
    lane_scalars: ClassVar[tuple | None] = None

    def prox(self, v, step=1.0, *, metric=None, check_finite: bool = True):
        names = type(self).__dict__.get("lane_scalars")
        if metric is None and names is not None and self.groups is None and self.group_weights is None:
            x = rows_in_one_call(self.kernel, v, tuple(getattr(self, n) for n in names), step, check_finite)
            if x is not None:
                return x
        return super().prox(v, step, metric=metric, check_finite=check_finite)

    prox.__doc__ = R.Penalty.prox.__doc__

    def thresholds(self, layout):
        return _range.products(self.threshold_terms(layout))

    def value(self, x) -> float:
        x = V.as_float_array(x, "x")
        split = R.value_in_parts(self, x)
        if split is not None:
            return split
        layout = R.layout_of(self, x, name="x")
        xp = array_namespace(layout.data)
        factor, h = self.group_values(layout.data, xp)
        return float(factor * xp.sum(layout.c * h))


@dataclass(frozen=True)
class GroupLasso(WeightedGroups):
    r"""Omega(W) = lam sum_g c_g ||w_g||_2 over the rows (or ``groups`` labels);
    see :func:`prox_group_lasso` for ``groups`` and ``group_weights``, which
    are checked and (unless ``copy=False``) copied when the object is made."""

    lam: float
    groups: Any = None
    group_weights: Any = None
    copy: InitVar[bool] = True  # keep own copies of groups and group_weights (frozen_set)

    kernel: ClassVar[str] = "group_lasso"
    metric_kernel: ClassVar[str] = "group_lasso_metric"
    lane_scalars: ClassVar[tuple] = ("lam",)

    def __post_init__(self, copy: bool):
        R.frozen_set(self, own_copies=copy, lam=V.nonnegative(self.lam, "lam"))

    def threshold_terms(self, layout):
        return (_range.weighted((self.lam,), layout, 1),)

    def group_values(self, rows, xp):
        return self.lam, _k.row_norms(rows, xp)


def prox_group_lasso(W, lam, step=1.0, *, groups=None, group_weights=None, metric=None, check_finite: bool = True):
    r"""Proximal operator of the group lasso (sum of l2 norms of groups).

    .. math::

        \operatorname{prox}(W) = \arg\min_X \tfrac12 \|X - W\|_F^2
            + \mathrm{step}\,\mathrm{lam} \sum_g c_g \|x_g\|_2

    Groups are the rows of ``W`` (an N-D ``W`` is ``W.reshape(W.shape[0], -1)``,
    a 1-D ``W`` is one group), or, for a 1-D ``W`` with ``groups=`` integer
    labels (0 <= label < 2**63, one per entry), the sets of entries sharing a
    label (any order; labels need not be consecutive).  ``c_g`` are the
    ``group_weights`` (default 1; ``"sqrt"`` for the square root of the group
    size; an array with one entry per row, or indexed by label).

    The solution is :math:`x_g = (1 - \mathrm{step\,lam}\,c_g / \|w_g\|_2)_+ w_g`
    (block soft thresholding), in three stages: the row norms (computed without
    overflow), one factor per row, the rows scaled.

    Parameters
    ----------
    W : array (NumPy, CuPy or torch), float32 or float64 (half precision in float32)
    lam : float >= 0
    step : float > 0, default 1.0
    groups : integer array of W's shape (1-D W only), optional
    group_weights : None, "sqrt" or array of non-negative floats
    metric : array > 0 of W's shape (or broadcastable to it), optional
        Solve :math:`\arg\min_X \tfrac12 \sum_i d_i (x_i - w_i)^2 + \mathrm{step\,lam} \sum_g c_g \|x_g\|_2`
        with ``d = metric`` (the proximal step of a method preconditioned by
        diag(d), e.g. Adam).  A group is 0 iff
        :math:`\|d_g w_g\|_2 \le \mathrm{step\,lam}\,c_g`; otherwise
        :math:`x_i = d_i w_i / (d_i + \mathrm{step\,lam}\,c_g / s)` with
        :math:`s = \|x_g\|_2` the root of one monotone scalar equation, solved
        to the last bit (``proxlib.backends._metric_kernels``).  A constant
        metric gives the Euclidean prox with step / d.
    check_finite : bool, default True
        ValueError if ``W`` holds NaN or Inf, detected from the row norms (no
        extra pass over W); False lets such rows through as they are (their
        norm is not finite: the factor is 1), on every backend.

    Returns
    -------
    A new array of ``W``'s library, device, shape and dtype (float64 for
    integer input).

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> proxlib.prox_group_lasso(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    array([[2.4, 3.2],
           [0. , 0. ]])
    >>> proxlib.prox_group_lasso(np.array([3.0, 0.3, 4.0, 0.4]), 1.0, groups=[0, 1, 0, 1])
    array([2.4, 0. , 3.2, 0. ])
    """
    if metric is None and groups is None and group_weights is None:
        x = rows_in_one_call("group_lasso", W, (lam,), step, check_finite)
        if x is not None:
            return x
    return GroupLasso(lam, groups, group_weights, copy=False).prox(W, step, metric=metric, check_finite=check_finite)


def rows_in_one_call(kernel: str, W, scalars: tuple, step, check_finite):
    """The common call of a row operator with scalar parameters (the group
    lasso's lam, the exclusive lasso's, group+exclusive's lam and mu; every
    group weight 1, no labels, no metric) on rows of a NumPy float array, a
    plain step, a backend that offers it (Numba's ``<kernel>_checked``):
    the thresholds formed from ``scalars`` and the general path's kernel
    run without its Python layers (most of the call up to 64 x 64: 7-9 us
    of 10-17).  The result is the general path's, bit for bit; None
    wherever the general path must decide, and reports
    (:func:`proxlib._registry.in_one_call`): a scalar that is not a Python
    or NumPy float or int among them."""
    return R.in_one_call(kernel, W, R.scalar_vector(scalars), step, check_finite, _scalars_fit)


def _scalars_fit(v, w) -> bool:
    """The lane's scalars: a vector of them."""
    return w.ndim == 1


R.register("group_lasso", GroupLasso, prox_group_lasso)

r"""Group lasso over the rows of a weight tensor (or over labelled groups)."""

from __future__ import annotations

from . import _validate as V
from ._dispatch import array_namespace, backend_for
from ._rows import group_weights as _group_weights
from ._rows import canonical_rows

__all__ = ["prox_group_lasso"]


def group_layout(W, groups, group_weights, *, name="W"):
    """The canonical rows of a group operator's input and its per-group
    weights c_g (float64)."""
    rows = canonical_rows(W, groups, name=name)
    c = _group_weights(rows, group_weights, like=W)
    return rows, c


def prox_group_lasso(W, lam, step=1.0, *, groups=None, group_weights=None, check_finite: bool = True):
    r"""Proximal operator of the group lasso (sum of l2 norms of groups).

    .. math::

        \operatorname{prox}(W) = \arg\min_X \tfrac12 \|X - W\|_F^2
            + \mathrm{step}\,\mathrm{lam} \sum_g c_g \|x_g\|_2

    Groups are the rows of ``W`` (an N-D ``W`` is ``W.reshape(W.shape[0], -1)``,
    a 1-D ``W`` is one group), or, for a 1-D ``W`` with ``groups=`` integer
    labels, the sets of entries sharing a label (any order).  ``c_g`` are the
    ``group_weights`` (default 1; ``"sqrt"`` for the square root of the group
    size; an array with one entry per row, or indexed by label).

    The solution is :math:`x_g = (1 - \mathrm{step\,lam}\,c_g / \|w_g\|_2)_+ w_g`
    (block soft thresholding); row norms are computed without overflow.

    Parameters
    ----------
    W : array, float32 or float64
    lam : float >= 0
    step : float > 0, default 1.0
    groups : integer array of W's shape (1-D W only), optional
    group_weights : None, "sqrt" or array of non-negative floats
    check_finite : bool, default True

    Returns
    -------
    A new array of ``W``'s type, shape and dtype.

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> proxlib.prox_group_lasso(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    array([[2.4, 3.2],
           [0. , 0. ]])
    >>> proxlib.prox_group_lasso(np.array([3.0, 0.3, 4.0, 0.4]), 1.0, groups=[0, 1, 0, 1])
    array([2.4, 0. , 3.2, 0. ])
    """
    # NaN/Inf are detected from the row norms inside the kernel (no extra pass).
    W = V.as_float_array(W, "W", check_finite=False)
    lam = V.nonnegative(lam, "lam")
    step = V.positive(step, "step")
    rows, c = group_layout(W, groups, group_weights)
    xp = array_namespace(W)
    a = xp.asarray(step * lam * c, dtype=W.dtype)
    with V.fused_finite_check("W"):
        X = backend_for(W).group_lasso(rows.rows, a, check_finite=check_finite)
    return rows.restore(X)


def group_lasso_value(X, lam, *, groups=None, group_weights=None) -> float:
    from .backends._xp_kernels import row_norms

    rows, c = group_layout(X, groups, group_weights, name="x")
    xp = array_namespace(X)
    return float(lam * xp.sum(c * row_norms(rows.rows, xp)))

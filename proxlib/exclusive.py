r"""Exclusive lasso and its exact combination with the group lasso.

Also the seed thesis' approximate steps, under names that say so, for
reproducing its experiments:

* :func:`prox_exclusive_lasso_thesis`: Eq. (8) of Yoon (2018),
  ``sign(w)(|w| - step*lam*||w_g||_1)_+``, which thresholds by the l1 norm of
  the *input* group instead of the exact b S_k / (1 + b k);
* :func:`prox_group_exclusive_sequential`: Algorithm 1 of the thesis, the group
  prox followed by an exclusive step.  Neither order is the prox of the sum.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

import numpy as np

from . import _range
from . import _registry as R
from . import _validate as V
from ._dispatch import array_namespace
from ._rows import ragged_parts
from .backends import _xp_kernels as _k
from .group import GroupLasso, WeightedGroups, rows_in_one_call

__all__ = [
    "ExclusiveLasso",
    "GroupExclusive",
    "prox_exclusive_lasso",
    "prox_group_exclusive",
    "prox_exclusive_lasso_thesis",
    "prox_group_exclusive_sequential",
    "mu_schedule",
]


@dataclass(frozen=True)
class ExclusiveLasso(WeightedGroups):
    r"""Omega(W) = lam/2 sum_g c_g ||w_g||_1^2; see :func:`prox_exclusive_lasso`
    (``groups`` and ``group_weights`` are checked and, unless ``copy=False``,
    copied when the object is made)."""

    lam: float
    groups: Any = None
    group_weights: Any = None
    copy: InitVar[bool] = True  # keep own copies of groups and group_weights (frozen_set)

    kernel: ClassVar[str] = "exclusive_lasso"
    metric_kernel: ClassVar[str] = "exclusive_lasso_metric"
    lane_scalars: ClassVar[tuple] = ("lam",)

    def __post_init__(self, copy: bool):
        R.frozen_set(self, own_copies=copy, lam=V.nonnegative(self.lam, "lam"))

    degrees: ClassVar[tuple] = (2,)

    def threshold_terms(self, layout):
        return (_range.weighted((self.lam,), layout, 2),)

    def group_values(self, rows, xp):
        l1 = _l1(rows)
        return self.lam / 2, l1 * l1


@dataclass(frozen=True)
class GroupExclusive(WeightedGroups):
    r"""Omega(W) = lam sum_g c_g ((1 - mu) ||w_g||_2 + mu/2 ||w_g||_1^2), 0 <= mu <= 1;
    see :func:`prox_group_exclusive` (``groups`` and ``group_weights`` are
    checked and, unless ``copy=False``, copied when the object is made)."""

    lam: float
    mu: float
    groups: Any = None
    group_weights: Any = None
    copy: InitVar[bool] = True  # keep own copies of groups and group_weights (frozen_set)

    kernel: ClassVar[str] = "group_exclusive"
    metric_kernel: ClassVar[str] = "group_exclusive_metric"

    def __post_init__(self, copy: bool):
        R.frozen_set(self, own_copies=copy, lam=V.nonnegative(self.lam, "lam"), mu=V.in_unit_interval(self.mu, "mu"))

    degrees: ClassVar[tuple] = (1, 2)
    lane_scalars: ClassVar[tuple] = ("lam", "mu")

    def threshold_terms(self, layout):
        return (
            _range.weighted((self.lam, 1.0 - self.mu), layout, 1),
            _range.weighted((self.lam, self.mu), layout, 2),
        )

    def group_values(self, rows, xp):
        l1 = _l1(rows)
        return self.lam, (1 - self.mu) * _k.row_norms(rows, xp) + self.mu / 2 * l1 * l1


def _l1(rows):
    xp = array_namespace(rows)
    return xp.sum(xp.abs(_k.upcast(rows, xp)), axis=1)


def prox_exclusive_lasso(W, lam, step=1.0, *, groups=None, group_weights=None, metric=None, check_finite: bool = True):
    r"""Proximal operator of the exclusive lasso (squared l1 norm of each group).

    .. math::

        \operatorname{prox}(W) = \arg\min_X \tfrac12 \|X - W\|_F^2
            + \mathrm{step}\,\frac{\mathrm{lam}}{2} \sum_g c_g \|x_g\|_1^2

    Groups as in :func:`proxlib.prox_group_lasso` (rows, or ``groups=`` labels
    for a 1-D ``W``; ``c_g`` the ``group_weights``, default 1).

    Exact solution per group, with b = step lam c_g and
    :math:`|w|_{(1)} \ge |w|_{(2)} \ge \dots` the sorted magnitudes:
    :math:`x = \mathrm{sign}(w)(|w| - \tau)_+`, :math:`\tau = b S_k / (1 + b k)`,
    :math:`S_k = \sum_{j \le k} |w|_{(j)}`, where k is the number of j with
    :math:`|w|_{(j)} (1 + b j) > b S_j`.  O(m log m) per group of size m.

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> proxlib.prox_exclusive_lasso(np.array([[3.0, 1.0, -0.5]]), 0.5)
    array([[ 2.,  0., -0.]])

    (b = 0.5: j = 1 passes, 3 * 1.5 > 0.5 * 3; j = 2 fails, 1 * 2 = 0.5 * 4;
    so k = 1 and tau = 0.5 * 3 / 1.5 = 1.)

    ``metric=d`` (> 0, of W's shape or broadcastable to it) solves
    :math:`\arg\min_X \tfrac12 \sum_i d_i (x_i - w_i)^2 + \mathrm{step}\,\frac{\mathrm{lam}}{2} \sum_g c_g \|x_g\|_1^2`:
    per group :math:`|x_i| = (d_i |w_i| - b L)_+ / d_i` with :math:`L = \|x_g\|_1`
    the root of a monotone piecewise-linear equation, exact by its breakpoints
    (sort by d |w|: :math:`b L = b S_k / (1 + b H_k)`, :math:`S_k = \sum_{j \le k} |w|_{(j)}`,
    :math:`H_k = \sum_{j \le k} 1/d_{(j)}`).  A constant metric gives the
    Euclidean prox with step / d.

    ``check_finite`` (default True): ValueError if ``W`` holds NaN or Inf,
    read off the row sums the kernels form anyway (no pass of its own; with
    ``metric=``, two reductions); False lets such rows through as they are.
    """
    if metric is None and groups is None and group_weights is None:
        x = rows_in_one_call("exclusive_lasso", W, (lam,), step, check_finite)
        if x is not None:
            return x
    return ExclusiveLasso(lam, groups, group_weights, copy=False).prox(W, step, metric=metric, check_finite=check_finite)


def prox_group_exclusive(
    W, lam, mu, step=1.0, *, groups=None, group_weights=None, metric=None, check_finite: bool = True
):
    r"""Exact proximal operator of the combined group + exclusive lasso.

    .. math::

        \operatorname{prox}(W) = \arg\min_X \tfrac12 \|X - W\|_F^2
            + \mathrm{step}\,\mathrm{lam} \sum_g c_g \Big((1 - \mu)\|x_g\|_2
            + \frac{\mu}{2}\|x_g\|_1^2\Big), \qquad 0 \le \mu \le 1.

    Groups as in :func:`proxlib.prox_group_lasso`.  mu = 0 is the group lasso,
    mu = 1 the exclusive lasso.

    Exact solution per group, with a = step lam c_g (1 - mu), b = step lam c_g mu:
    x = 0 iff :math:`\|w\|_2 \le a`; otherwise
    :math:`x = z\,(1 - a/\|z\|_2)` with :math:`z = \mathrm{sign}(w)(|w| - \theta)_+`
    and :math:`\theta \ge 0` the unique root of
    :math:`\theta = b\,\|z(\theta)\|_1 (1 - a/\|z(\theta)\|_2)` (the right side
    decreases in theta).  Equivalently x = c u, u the exclusive-lasso prox with
    parameter b c and c = 1 - a/||u||_2.  The root is found by bisection over the
    sorted magnitudes (which fixes the support) and then Newton's method
    safeguarded by bisection inside that interval, to the last floating-point
    bit: no tolerance parameter.

    This is not the composition of the two proxes in either order; see
    :func:`prox_group_exclusive_sequential` for the thesis' composition.

    ``metric=d`` (> 0, of W's shape or broadcastable to it) solves
    :math:`\arg\min_X \tfrac12 \sum_i d_i (x_i - w_i)^2 + \ldots` with the
    same penalty: x_g = 0 iff :math:`\|d_g w_g\|_2 \le a`; otherwise, with
    :math:`t = a / \|x_g\|_2`, :math:`|x_i| = (d_i |w_i| - b \|x_g\|_1)_+ / (d_i + t)`:
    for each t an exclusive equation solved exactly by its breakpoints, and
    one monotone equation in :math:`\|x_g\|_2` solved to the last bit
    (nested monotone roots; ``proxlib.backends._metric_kernels``).

    Examples
    --------
    >>> import numpy as np, proxlib
    >>> x = proxlib.prox_group_exclusive(np.array([[3.0, 1.0, -0.5]]), 1.0, 0.5)
    >>> np.round(x, 6)
    array([[ 1.633474,  0.101502, -0.      ]])

    ``check_finite`` (default True): ValueError if ``W`` holds NaN or Inf,
    read off the row sums and norms the kernels form anyway (no pass of its
    own; with ``metric=``, two reductions); False lets such rows through as
    they are.
    """
    if metric is None and groups is None and group_weights is None:
        x = rows_in_one_call("group_exclusive", W, (lam, mu), step, check_finite)
        if x is not None:
            return x
    return GroupExclusive(lam, mu, groups, group_weights, copy=False).prox(W, step, metric=metric, check_finite=check_finite)


R.register("exclusive_lasso", ExclusiveLasso, prox_exclusive_lasso)
R.register("group_exclusive", GroupExclusive, prox_group_exclusive)


def prox_exclusive_lasso_thesis(W, lam, step=1.0, *, groups=None, group_weights=None, check_finite: bool = True):
    r"""The seed thesis' exclusive-lasso step (Yoon 2018, Eq. 8): an APPROXIMATION.

    .. math::

        x_{g,i} = \mathrm{sign}(w_{g,i})\,(|w_{g,i}| - \mathrm{step\,lam}\,c_g\,\|w_g\|_1)_+

    It thresholds by the l1 norm of the input group, whereas the exact prox
    (:func:`prox_exclusive_lasso`) uses b S_k / (1 + b k) < b ||w||_1 and so
    shrinks less.  The two agree only where the result is zero.  Provided to
    reproduce the thesis; use :func:`prox_exclusive_lasso` otherwise.

    The threshold is formed over the whole float range: ||w_g||_1 as s_g times
    the l1 norm of the row divided by its power of two s_g (no overflow at
    1e308), and step, lam, c_g multiplied without a spurious overflow (a group
    with c_g = 0 is returned unchanged whatever step * lam).
    """
    return _thesis(W, (V.nonnegative(lam, "lam"),), step, groups, group_weights, check_finite)


def _thesis(W, scalars, step, groups, group_weights, check_finite):
    """The thesis step with threshold step * prod(scalars) * c_g * ||w_g||_1."""
    pen = ExclusiveLasso(0.0, groups, group_weights, copy=False)  # (one call: no copy of the labels, as prox_*)
    out_dtype = V.result_dtype(W)
    W = V.as_float_array(W, "W", check_finite=V.flag(check_finite, "check_finite"))
    step = V.positive(step, "step")
    split = ragged_parts(W, groups, name="W")
    if split is not None:  # groups of very different sizes: by size class (see ragged_parts)
        X = R.in_parts(pen, W, split, lambda sub, idx: _thesis(W[idx], scalars, step, sub.groups, group_weights, False))
        return X if out_dtype is None else array_namespace(X).astype(X, out_dtype)
    layout = R.layout_of(pen, W)
    xp = array_namespace(W)
    W64 = _k.upcast(layout.data, xp)
    A = xp.abs(W64)
    s = _k.row_scale(A, xp)
    l1_s = xp.sum(A / s[:, None], axis=1)  # ||w_g||_1 / s_g <= 2 m: no overflow
    m, e = _range.product((step,) + tuple(scalars))
    # tau_g / s_g, with a zero factor giving 0 (never 0 * inf); inf where it overflows
    tau_s = _range.formed(_range.Threshold((), layout.c * l1_s), m, e, W64)
    with _k.errstate(W64):
        tau = tau_s * s  # s_g > 0: inf stays inf, and |w| - inf gives 0
        X = xp.sign(W64) * xp.maximum(A - tau[:, None], 0.0)
    X = layout.restore(xp.astype(X, W.dtype))
    return X if out_dtype is None else xp.astype(X, out_dtype)


@dataclass(frozen=True)
class _ExclusiveTimes(ExclusiveLasso):
    """The exclusive lasso with lam * factor kept as two factors (no rounding
    of their product into the subnormals)."""

    factor: float = 1.0

    def threshold_terms(self, layout):
        return (_range.weighted(_factors(self.lam, self.factor), layout, 2),)


@dataclass(frozen=True)
class _GroupTimes(GroupLasso):
    """The group lasso with lam * factor kept as two factors."""

    factor: float = 1.0

    def threshold_terms(self, layout):
        return (_range.weighted(_factors(self.lam, self.factor), layout, 1),)


def _factors(lam: float, factor: float) -> tuple:
    """(lam * factor,) where that product is a normal float or 0 (so the
    result is bit for bit the composition of the public functions), else the
    two factors apart."""
    prod = lam * factor
    return (prod,) if prod == 0 or prod >= 2.0**-1022 and prod != float("inf") else (lam, factor)


def prox_group_exclusive_sequential(
    W,
    lam,
    mu,
    step=1.0,
    *,
    groups=None,
    group_weights=None,
    exclusive_step: str = "thesis",
    check_finite: bool = True,
):
    r"""The seed thesis' Algorithm 1: group prox, then exclusive step (APPROXIMATE).

    Returns ``E(G(W))`` with G the group-lasso prox at ``step*lam*(1-mu)`` and E
    the exclusive step at ``step*lam*mu``: the thesis' Eq. 8 when
    ``exclusive_step="thesis"`` (its default), the exact exclusive prox when
    ``"exact"``.  Neither is the prox of the sum, which
    :func:`prox_group_exclusive` computes; they coincide when mu is 0 or 1
    (with ``"exact"``) or the result is zero.
    """
    mu = V.in_unit_interval(mu, "mu")
    if exclusive_step not in ("thesis", "exact"):
        raise ValueError(f"exclusive_step must be 'thesis' or 'exact', got {exclusive_step!r}")
    out_dtype = V.result_dtype(W)
    W = V.as_float_array(W, "W", check_finite=V.flag(check_finite, "check_finite"))
    lam = V.nonnegative(lam, "lam")
    step = V.positive(step, "step")
    G = _GroupTimes(lam, groups, group_weights, copy=False, factor=1.0 - mu).prox(W, step, check_finite=False)
    if exclusive_step == "thesis":
        X = _thesis(G, _factors(lam, mu), step, groups, group_weights, False)
    else:
        X = _ExclusiveTimes(lam, groups, group_weights, copy=False, factor=mu).prox(G, step, check_finite=False)
    return X if out_dtype is None else array_namespace(X).astype(X, out_dtype)


def mu_schedule(n_layers: int, m: float = 0.0) -> list[float]:
    r"""Per-layer exclusivity mu_l of the thesis (Sec. 3.2), growing with depth:

    .. math:: \mu_l = m + (1 - 2m)\,\frac{l}{L - 1}, \qquad l = 0, \dots, L-1,

    so mu_0 = m (mostly group lasso at the bottom) and mu_{L-1} = 1 - m
    (mostly exclusive at the top).  The thesis prints 1/(L-1) for l/(L-1); its
    text (mu = 0 at the lowest layer, 1 at the top for m = 0) fixes the typo.
    A single layer gets mu = m.  Requires 0 <= m <= 1/2 so that mu is in [0, 1]
    and non-decreasing.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    n_layers = int(n_layers)
    m = V.real_scalar(m, "m")
    if not 0.0 <= m <= 0.5:
        raise ValueError(f"m must lie in [0, 1/2], got {m}")
    if n_layers == 1:
        return [m]
    return [m + (1 - 2 * m) * l / (n_layers - 1) for l in range(n_layers)]

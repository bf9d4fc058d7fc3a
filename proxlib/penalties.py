r"""Penalty objects: ``value(x)`` and ``prox(v, step)`` for one regulariser.

For users writing their own proximal-gradient loops::

    pen = proxlib.GroupLasso(lam=0.1)
    for _ in range(iters):
        w = pen.prox(w - lr * grad(w), step=lr)
    total = loss(w) + pen.value(w)

Each ``prox`` is the corresponding ``proxlib.prox_*`` function with the
penalty's parameters; each ``value`` evaluates Omega exactly as written in that
function's docstring (in float64).  Penalties are grouped by structure:
separable (WeightedL1, WeightedL2Sq, Lp), block-separable (GroupLasso,
ExclusiveLasso, GroupExclusive) and non-separable (OWL, GrOWL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _validate as V
from . import elementwise as _e
from . import exclusive as _x
from . import group as _g
from . import owl as _o
from ._dispatch import array_namespace
from ._rows import canonical_rows

__all__ = ["OWL", "GrOWL", "GroupLasso", "ExclusiveLasso", "GroupExclusive", "WeightedL1", "WeightedL2Sq", "Lp"]


def _arr(x, name="x"):
    return V.as_float_array(x, name)


@dataclass(frozen=True)
class OWL:
    r"""Omega(x) = sum_i weights_i |x|_[i] (sorted magnitudes, largest first)."""

    weights: Any

    def value(self, x) -> float:
        x = _arr(x)
        _o._owl_weights(self.weights, x.size, x.reshape(-1))
        return _o.owl_value(x, self.weights)

    def prox(self, v, step=1.0):
        return _o.prox_owl(v, self.weights, step)


@dataclass(frozen=True)
class GrOWL:
    r"""Omega(W) = sum_i weights_i ||w_[i]||_2 (rows sorted by norm, largest first)."""

    weights: Any

    def value(self, x) -> float:
        x = _arr(x)
        # one non-increasing weight per row, as prox_growl demands (a wrong-length
        # array used to broadcast silently into a wrong value)
        rows = canonical_rows(x)
        _o._owl_weights(self.weights, rows.n_groups, rows.rows)
        return _o.growl_value(x, self.weights)

    def prox(self, v, step=1.0):
        return _o.prox_growl(v, self.weights, step)


@dataclass(frozen=True)
class GroupLasso:
    r"""Omega(W) = lam sum_g c_g ||w_g||_2."""

    lam: float
    groups: Any = None
    group_weights: Any = None

    def value(self, x) -> float:
        return _g.group_lasso_value(_arr(x), V.nonnegative(self.lam, "lam"), groups=self.groups, group_weights=self.group_weights)

    def prox(self, v, step=1.0):
        return _g.prox_group_lasso(v, self.lam, step, groups=self.groups, group_weights=self.group_weights)


@dataclass(frozen=True)
class ExclusiveLasso:
    r"""Omega(W) = lam/2 sum_g c_g ||w_g||_1^2."""

    lam: float
    groups: Any = None
    group_weights: Any = None

    def value(self, x) -> float:
        return _x.exclusive_lasso_value(_arr(x), V.nonnegative(self.lam, "lam"), groups=self.groups, group_weights=self.group_weights)

    def prox(self, v, step=1.0):
        return _x.prox_exclusive_lasso(v, self.lam, step, groups=self.groups, group_weights=self.group_weights)


@dataclass(frozen=True)
class GroupExclusive:
    r"""Omega(W) = lam sum_g c_g ((1 - mu) ||w_g||_2 + mu/2 ||w_g||_1^2)."""

    lam: float
    mu: float
    groups: Any = None
    group_weights: Any = None

    def value(self, x) -> float:
        mu = V.in_unit_interval(self.mu, "mu")
        return _x.group_exclusive_value(_arr(x), V.nonnegative(self.lam, "lam"), mu, groups=self.groups, group_weights=self.group_weights)

    def prox(self, v, step=1.0):
        return _x.prox_group_exclusive(v, self.lam, self.mu, step, groups=self.groups, group_weights=self.group_weights)


@dataclass(frozen=True)
class WeightedL1:
    r"""Omega(x) = sum_i weights_i |x_i|."""

    weights: Any

    def value(self, x) -> float:
        x = _arr(x)
        w = _e._elementwise_weights(self.weights, x, 1.0)
        return _e.weighted_l1_value(x.reshape(-1), w)

    def prox(self, v, step=1.0):
        return _e.prox_weighted_l1(v, self.weights, step)


@dataclass(frozen=True)
class WeightedL2Sq:
    r"""Omega(x) = sum_i weights_i x_i^2 (no 1/2)."""

    weights: Any

    def value(self, x) -> float:
        x = _arr(x)
        w = _e._elementwise_weights(self.weights, x, 1.0)
        return _e.weighted_l2sq_value(x.reshape(-1), w)

    def prox(self, v, step=1.0):
        return _e.prox_weighted_l2sq(v, self.weights, step)


@dataclass(frozen=True)
class Lp:
    r"""Omega(x) = lam sum_i |x_i|^p, 0 <= p <= 1, with |0|^0 = 0."""

    lam: float
    p: float

    def value(self, x) -> float:
        lam = V.nonnegative(self.lam, "lam")
        p = V.in_unit_interval(self.p, "p")
        return _e.lp_value(_arr(x), lam, p)

    def prox(self, v, step=1.0):
        return _e.prox_lp(v, self.lam, self.p, step)


def _namespace_of(x):  # pragma: no cover - re-exported helper for adapters
    return array_namespace(x)

r"""Penalty objects: ``value(x)`` and ``prox(v, step)`` for one regulariser.

For users writing their own proximal-gradient loops::

    pen = proxlib.GroupLasso(lam=0.1)
    for _ in range(iters):
        w = pen.prox(w - lr * grad(w), step=lr)
    total = loss(w) + pen.value(w)

Each class is defined next to its ``prox_*`` function (``owl.py``,
``group.py``, ``exclusive.py``, ``elementwise.py``) and registered in
:data:`proxlib.OPERATORS`.  Parameters are checked when the object is made.
``prox`` is the corresponding function with the penalty's parameters; ``value``
evaluates Omega exactly as written in that function's docstring (in float64).
Penalties are grouped by structure: separable (WeightedL1, WeightedL2Sq, Lp),
block-separable (GroupLasso, ExclusiveLasso, GroupExclusive) and
non-separable (OWL, GrOWL).
"""

from __future__ import annotations

from ._registry import Penalty
from .elementwise import Lp, WeightedL1, WeightedL2Sq
from .exclusive import ExclusiveLasso, GroupExclusive
from .group import GroupLasso
from .owl import OWL, GrOWL

__all__ = ["Penalty", "OWL", "GrOWL", "GroupLasso", "ExclusiveLasso", "GroupExclusive", "WeightedL1", "WeightedL2Sq", "Lp"]

"""Backends: one module each, all exporting the kernels named in ``KERNELS``.

Kernel contract (the public functions in ``proxlib`` do validation and
canonicalisation; kernels do none):

* Arrays are of the backend's own type (NumPy for ``numpy``/``numba``, CuPy for
  ``cupy``), float32 or float64, C-contiguous.  Thresholds are already
  multiplied by ``step`` and cast to the data's dtype.
* Every kernel returns a NEW array of the input's dtype and shape and never
  writes into its inputs.

===================  ==========================================  =====================================
kernel               arguments                                    computes (row r of W, threshold t_r)
===================  ==========================================  =====================================
owl(v, w)            v (n,), w (n,) non-increasing >= 0          prox of sum_i w_i |x|_[i]
growl(W, w)          W (G, m), w (G,) non-increasing >= 0        prox of sum_i w_i ||x_[i]||_2 (rows)
group_lasso(W, a)    W (G, m), a (G,) >= 0                       prox of sum_r a_r ||x_r||_2
exclusive_lasso(W,b) W (G, m), b (G,) >= 0                       prox of sum_r b_r/2 ||x_r||_1^2
group_exclusive(W,a,b)  as above                                 prox of sum_r a_r||x_r||_2 + b_r/2||x_r||_1^2
weighted_l1(v, w)    v (n,), w (n,) or (1,) >= 0                 prox of sum_i w_i |x_i|
weighted_l2sq(v, w)  v (n,), w (n,) or (1,) >= 0                 prox of sum_i w_i x_i^2
lp(v, lam, p)        v (n,), Python floats lam >= 0, p in [0,1]  global prox of lam sum_i |x_i|^p
===================  ==========================================  =====================================

Diagonal metric (``D``/``d`` > 0 of the data's shape and layout, float32 or
float64; see :mod:`._metric_kernels`): ``<kernel>_metric(v, d, *thresholds)``
computes ``argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + Omega(x)`` for
``weighted_l1``, ``weighted_l2sq``, ``lp``, ``group_lasso``,
``exclusive_lasso`` and ``group_exclusive`` (OWL and GrOWL have none: exact
only for a constant metric, handled before dispatch).

Fused input check: ``group_lasso`` and ``growl`` take ``check_finite=False``;
when true they raise :class:`NonFiniteInput` if W holds NaN or Inf, detected
from the row norms they compute anyway (a row's norm is finite iff its entries
are), so the public functions need no separate pass over W (the exclusive
operators likewise, from their row sums: the penalty's
``fused_finite_check``).  Of one backend alone, a kernel with the attribute
``checks_finite`` (Numba's ``weighted_l1``, ``weighted_l2sq`` and ``lp``,
which count the non-finite entries in their own pass) takes it too.
"""

import numpy as np


def numba_layout(a):
    """The NumPy array ``a`` as Numba's kernels take it, copied only where
    they must: C-contiguous, or F-contiguous (a matrix whose rows the row
    kernels read as columns, as a training step's in-place kernels read a
    transposed weight: the same bits); otherwise a C-contiguous copy.  The
    one layout rule of the torch backend's Numba route
    (:mod:`.torch_dev`) and of a CPU tensor's NumPy view
    (:func:`proxlib._registry.numba_view`)."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


class NonFiniteInput(ValueError):
    """A kernel called with ``check_finite=True`` found NaN or Inf in its input."""


def check_row_norms(nrm, xp) -> None:
    """Raise :class:`NonFiniteInput` unless every row norm is finite."""
    if not bool(xp.all(xp.isfinite(nrm))):
        raise NonFiniteInput("input contains NaN or Inf")

KERNELS = (
    "owl",
    "growl",
    "group_lasso",
    "exclusive_lasso",
    "group_exclusive",
    "weighted_l1",
    "weighted_l2sq",
    "lp",
    # the prox in a diagonal metric (proxlib.backends._metric_kernels)
    "weighted_l1_metric",
    "weighted_l2sq_metric",
    "lp_metric",
    "group_lasso_metric",
    "exclusive_lasso_metric",
    "group_exclusive_metric",
)

r"""scikit-learn estimators for the penalised regressions that peers lack.

Each solves

.. math::

    \min_{\beta, \beta_0} \; \frac{1}{2n} \|y - X\beta - \beta_0\|^2 + \Omega(\beta)

(the scaling of scikit-learn's ``Lasso``) with :func:`proxlib.solvers.prox_grad`,
stopping on the duality gap where the penalty is a norm and on the optimality
residual otherwise; ``fit_intercept`` centres ``X`` and ``y`` first (exact for
the squared loss, the intercept is not penalised).

* :class:`OWLRegression` -- OWL / SLOPE: ``Omega = alpha sum_i w_i |beta|_[i]``;
* :class:`GrOWLRegression` -- multi-task GrOWL: ``Omega = alpha sum_i w_i
  ||beta_[i]||_2`` over the rows of the (n_features, n_targets) coefficients
  (features tied and selected across tasks);
* :class:`ExclusiveLassoRegression` -- ``Omega = alpha/2 sum_g c_g ||beta_g||_1^2``
  over groups of features (competition inside each group);
* :class:`GroupExclusiveRegression` -- ``Omega = alpha sum_g c_g ((1 - mu)
  ||beta_g||_2 + mu/2 ||beta_g||_1^2)``.

scikit-learn is an optional dependency (``pip install proxlib[sklearn]``);
this module imports it, ``import proxlib`` does not.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validate as V
from . import penalties as P
from .solvers import LeastSquares, prox_grad

__all__ = ["OWLRegression", "GrOWLRegression", "ExclusiveLassoRegression", "GroupExclusiveRegression"]


def _weights(weights, n: int, name: str = "weights") -> np.ndarray:
    """The OWL weights for n features: None (linear decay (n - i + 1)/n, i = 1..n),
    an array of length n, or a callable n -> array."""
    if weights is None:
        return np.arange(n, 0, -1, dtype=np.float64) / n
    w = weights(n) if callable(weights) else weights
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have one entry per feature ({n}), got shape {w.shape}")
    return w


def _alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha >= 0 or not np.isfinite(alpha):
        raise ValueError(f"alpha must be a finite real >= 0, got {alpha!r}")
    return float(alpha)


def _labels(groups, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    g = np.asarray(groups)
    if g.shape != (n,) or g.dtype.kind not in "iu":
        raise ValueError(f"groups must be {n} integer labels (one per feature), got {g.dtype} of shape {g.shape}")
    return g.astype(np.int64)


class _ProxRegressor(RegressorMixin, BaseEstimator):
    """Shared fit/predict: least squares + ``self._penalty(n_features)``."""

    _multi_output = False

    def _penalty(self, n_features: int):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def fit(self, X, y):
        """Fit the coefficients (and the intercept) on ``X`` (n_samples, n_features), ``y``."""
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept must be a bool, got {type(self.fit_intercept).__name__}")
        max_iter = V.positive_count(self.max_iter, "max_iter")  # (0 iterations would return zeros, with a warning)
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=self._multi_output, dtype=np.float64)
        one_d = y.ndim == 1
        Y = y[:, None] if (one_d and self._multi_output) else y
        if self.fit_intercept:
            x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
            Xc, Yc = X - x_mean, Y - y_mean
        else:
            x_mean, y_mean = np.zeros(X.shape[1]), np.zeros(Y.shape[1:])
            Xc, Yc = X, Y
        pen = self._penalty(X.shape[1])
        res = prox_grad(LeastSquares(Xc, Yc), pen, tol=self.tol, max_iter=max_iter)
        if not res.converged:
            warnings.warn(
                f"{type(self).__name__} did not reach tol={self.tol} in {self.max_iter} iterations "
                f"({res.criterion} {res.history[-1][1] if res.history else float('nan'):.3e}); raise max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        B = np.asarray(res.x)
        coef = B if B.ndim == 1 else B.T  # (n_targets, n_features) as in scikit-learn
        intercept = y_mean - coef @ x_mean if coef.ndim == 1 else y_mean - coef @ x_mean
        if one_d and self._multi_output:
            coef, intercept = coef[0], float(intercept[0])
        elif one_d:
            intercept = float(intercept)
        self.coef_, self.intercept_ = coef, intercept
        self.n_iter_ = res.n_iter
        self.dual_gap_ = res.gap
        self.optimality_residual_ = res.residual if res.gap is None else None
        self.penalty_ = pen
        return self

    def predict(self, X):
        """``X @ coef_.T + intercept_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_.T + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        if self._multi_output:
            tags.target_tags.multi_output = True
        return tags


class OWLRegression(_ProxRegressor):
    r"""Least squares with the OWL / SLOPE penalty ``alpha sum_i w_i |beta|_[i]``.

    Parameters
    ----------
    alpha : float >= 0
    weights : None, array of shape (n_features,) or callable n -> array
        Non-increasing, >= 0.  None: ``w_i = (n - i + 1)/n`` (a linear decay,
        OSCAR-like).  ``proxlib.owl_weights_*`` builders fit the callable form,
        e.g. ``lambda n: proxlib.owl_weights_oscar(n, 1.0, 0.1)``.
    fit_intercept : bool
    tol : float
        Relative duality gap at which the solver stops; where the gap is not
        defined (``alpha = 0`` or all weights 0: no penalty, no dual norm),
        the relative optimality residual instead.
    max_iter : int

    Attributes
    ----------
    coef_, intercept_, n_iter_, penalty_ (the proxlib penalty)
    dual_gap_ : float or None
        The absolute duality gap at the solution (None where it is not defined).
    optimality_residual_ : float or None
        The relative optimality residual at the solution where the solver
        stopped on it (every estimator without a duality gap), else None.
    """

    def __init__(self, alpha=1.0, weights=None, fit_intercept=True, tol=1e-8, max_iter=10_000):
        self.alpha = alpha
        self.weights = weights
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _penalty(self, n_features):
        return P.OWL(_alpha(self.alpha) * _weights(self.weights, n_features))


class GrOWLRegression(OWLRegression):
    r"""Multi-task least squares with GrOWL over the features:
    ``alpha sum_i w_i ||beta_[i]||_2``, ``beta_[i]`` the feature (row of the
    (n_features, n_targets) coefficients) with the i-th largest norm.

    Ties and selects features across tasks; constant weights give
    scikit-learn's ``MultiTaskLasso``.  A 1-D ``y`` is one task (OWL).
    Parameters as :class:`OWLRegression`; ``coef_`` has shape
    (n_targets, n_features) for a 2-D ``y``.
    """

    _multi_output = True

    def _penalty(self, n_features):
        return P.GrOWL(_alpha(self.alpha) * _weights(self.weights, n_features))


class ExclusiveLassoRegression(_ProxRegressor):
    r"""Least squares with the exclusive lasso ``alpha/2 sum_g c_g ||beta_g||_1^2``.

    Parameters
    ----------
    alpha : float >= 0
    groups : None or integer array of shape (n_features,)
        The group label of each feature; None: one group of all features.
    group_weights : None, "sqrt" or array (indexed by label)
    fit_intercept, tol (relative optimality residual), max_iter
    """

    def __init__(self, alpha=1.0, groups=None, group_weights=None, fit_intercept=True, tol=1e-10, max_iter=10_000):
        self.alpha = alpha
        self.groups = groups
        self.group_weights = group_weights
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _penalty(self, n_features):
        return P.ExclusiveLasso(_alpha(self.alpha), _labels(self.groups, n_features), self.group_weights)


class GroupExclusiveRegression(_ProxRegressor):
    r"""Least squares with the exact group + exclusive penalty
    ``alpha sum_g c_g ((1 - mu) ||beta_g||_2 + mu/2 ||beta_g||_1^2)``.

    mu = 0 is the group lasso, mu = 1 the exclusive lasso.  Parameters as
    :class:`ExclusiveLassoRegression`, plus ``mu`` in [0, 1].
    """

    def __init__(self, alpha=1.0, mu=0.5, groups=None, group_weights=None, fit_intercept=True, tol=1e-10, max_iter=10_000):
        self.alpha = alpha
        self.mu = mu
        self.groups = groups
        self.group_weights = group_weights
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter

    def _penalty(self, n_features):
        return P.GroupExclusive(_alpha(self.alpha), self.mu, _labels(self.groups, n_features), self.group_weights)

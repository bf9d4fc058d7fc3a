r"""Proximal-gradient solver over any proxlib penalty, stopping on a certificate.

.. math::

    \min_x \; F(x) = f(x) + \Omega(x)

with ``Omega`` any penalty object (``proxlib.OWL(weights)``, ``proxlib.GroupLasso(lam)``,
``proxlib.Lp(lam, p)``, ...; its parameters include the regularisation
strength) and ``f`` smooth:

* :class:`LeastSquares` ``f(x) = 1/(2n) ||A x - b||^2`` (n = number of rows of
  ``A``; ``b`` of shape (n,) or (n, T), then ``x`` is (p, T): multi-task),
  the scaling of scikit-learn's ``Lasso`` and skglm's ``Quadratic``;
* :class:`Logistic` ``f(x) = 1/n sum_i log(1 + exp(-b_i (A x)_i))``, labels
  ``b_i`` in {-1, +1};
* :class:`SmoothLoss` a callable gradient (and optionally the value, for the
  line search).

:func:`prox_grad` runs FISTA (Beck & Teboulle 2009) with the gradient restart
of O'Donoghue & Candes (2015) and a backtracking line search on the
Lipschitz constant, and stops on a certificate:

* the **duality gap** ``F(x) - D(theta)`` when ``f`` is given by a matrix and
  the penalty is a norm with a dual norm (OWL, GrOWL, group lasso, weighted
  l1): ``theta = -f'(A x)`` rescaled into the dual-norm ball, so
  ``Omega_*(A^T theta) <= 1``; the gap bounds ``F(x) - min F`` and is compared
  with ``tol * F(0)`` (scale-free);
* otherwise the **optimality residual** of the fixed point
  ``x = prox_{t Omega}(x - t grad f(x))`` (:func:`proxlib.optimality_residual`),
  compared with ``tol``; for the non-convex lp penalty this certifies a
  stationary point whose every coordinate is the global prox (no more).

Everything runs on the arrays' own library and device (NumPy, torch on any
device, CuPy): matrix products, the proxes and the certificates; only scalars
(objective values, the stopping test) reach the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _registry as R
from . import _validate as V
from . import certificates as _C
from ._dispatch import array_kind, array_namespace, device, size
from ._registry import Penalty

__all__ = ["LeastSquares", "Logistic", "SmoothLoss", "SolverResult", "prox_grad"]


def _dot(a, b, xp) -> float:
    # the arrays' own .sum() (NumPy, CuPy, torch alike): no namespace wrapper
    # in the loop; one scalar to the host
    return float((a * b).sum())


def _sqnorm(a, xp) -> float:
    return float((a * a).sum())


# ----------------------------------------------------------------------------- losses


class _LinearLoss:
    """f(x) = l(A x) with l separable; the solver keeps z = A x up to date."""

    has_dual = True

    def __init__(self, A, b, name_b: str):
        A = V.as_float_array(A, "A")
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D (n_samples, n_features), got shape {tuple(A.shape)}")
        if A.shape[0] == 0:  # (the loss is a mean over the rows: 0 rows divided by zero)
            raise ValueError("A must have at least one row (sample), got shape (0, ...)")
        xp = array_namespace(A)
        b = V.as_float_array(b, name_b)
        if array_kind(b) != array_kind(A):
            b = V.like(b, A, name_b)
        b = xp.astype(b, A.dtype)
        if b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
            raise ValueError(f"{name_b} must have shape ({A.shape[0]},) or ({A.shape[0]}, T), got {tuple(b.shape)}")
        self.A, self.b, self.xp = A, b, xp
        self.n = A.shape[0]

    @property
    def shape(self) -> tuple:
        """The shape of ``x``."""
        return (self.A.shape[1],) if self.b.ndim == 1 else (self.A.shape[1], self.b.shape[1])

    def linear(self, x):
        return self.A @ x

    def rgrad(self, dz):
        """A^T dz."""
        return self.A.T @ dz

    def value(self, x) -> float:
        return self.value_z(self.linear(x))

    def grad(self, x):
        return self.rgrad(self.dvalue_z(self.linear(x)))

    def lipschitz(self, iters: int = 30) -> float:
        """||A||_2^2 times the curvature bound of l, by power iteration (a lower
        estimate of the constant; the line search raises it when needed)."""
        xp, A = self.xp, self.A
        # a fixed pseudo-random start: the all-ones vector is an eigenvector
        # of A^T A for some matrices (A = [[1, -1], [0.1, 0.1]] gave 1% of
        # the constant, and line_search=False then diverged)
        u0 = np.random.default_rng(0).standard_normal(A.shape[1])
        u = xp.asarray(u0, dtype=A.dtype, device=device(A))
        s = 0.0
        for _ in range(iters):
            w = A.T @ (A @ u)
            s = math.sqrt(_sqnorm(w, xp))
            if s == 0.0:
                return 0.0
            u = w / s
        return s * self.curvature / self.n


class LeastSquares(_LinearLoss):
    r"""``f(x) = 1/(2n) ||A x - b||_2^2`` (Frobenius norm for a 2-D ``b``).

    Dual (for the gap): ``D(theta) = <theta, b> - n/2 ||theta||^2`` over
    ``Omega_*(A^T theta) <= 1``, with ``theta = (b - A x)/n`` at the optimum.
    """

    curvature = 1.0

    def __init__(self, A, b):
        super().__init__(A, b, "b")

    def value_z(self, z) -> float:
        r = z - self.b
        return 0.5 * _sqnorm(r, self.xp) / self.n

    def dvalue_z(self, z):
        return (z - self.b) / self.n

    def excess(self, z_y, z_new, zd, fy) -> float:
        """f(x_new) - f(y) - <grad f(y), x_new - y>, exactly ||A d||^2 / (2n)."""
        return 0.5 * _sqnorm(zd, self.xp) / self.n

    def dual_value(self, theta) -> float:
        return _dot(theta, self.b, self.xp) - 0.5 * self.n * _sqnorm(theta, self.xp)

    def value_at_zero(self) -> float:
        return 0.5 * _sqnorm(self.b, self.xp) / self.n


class Logistic(_LinearLoss):
    r"""``f(x) = 1/n sum_i log(1 + exp(-b_i (A x)_i))`` with labels ``b_i`` in {-1, +1}.

    Dual (for the gap): with ``s_i = n b_i theta_i`` in [0, 1],
    ``D(theta) = -1/n sum_i (s_i log s_i + (1 - s_i) log(1 - s_i))``.
    """

    curvature = 0.25

    def __init__(self, A, b):
        super().__init__(A, b, "b")
        xp = self.xp
        if self.b.ndim != 1 or not bool(xp.all((self.b == 1) | (self.b == -1))):
            raise ValueError("b must be a 1-D array of labels in {-1, +1}")

    def value_z(self, z) -> float:
        xp = self.xp
        t = -self.b * z
        return float(xp.sum(xp.logaddexp(xp.zeros_like(t), t))) / self.n

    def _sigma(self, z):
        # sigma(-b z) = exp(-log(1 + exp(b z))), in (0, 1)
        xp = self.xp
        t = self.b * z
        return xp.exp(-xp.logaddexp(xp.zeros_like(t), t))

    def dvalue_z(self, z):
        return -self.b * self._sigma(z) / self.n

    def excess(self, z_y, z_new, zd, fy) -> float:
        return self.value_z(z_new) - fy - _dot(self.dvalue_z(z_y), zd, self.xp)

    def dual_value(self, theta) -> float:
        xp = self.xp
        s = xp.clip(self.n * self.b * theta, 0.0, 1.0)
        ent = xp.where(s > 0, s * xp.log(xp.where(s > 0, s, 1.0)), 0.0)
        ent = ent + xp.where(s < 1, (1 - s) * xp.log(xp.where(s < 1, 1 - s, 1.0)), 0.0)
        return -float(xp.sum(ent)) / self.n

    def value_at_zero(self) -> float:
        return math.log(2.0)


class SmoothLoss:
    """A smooth loss given by its gradient ``grad(x)`` (an array like ``x``).

    ``value(x)`` (a float) enables the backtracking line search; without it
    ``lipschitz`` (a constant of the gradient) must be given and is used as is.
    The solver stops on the optimality residual (no duality gap).
    """

    has_dual = False

    def __init__(self, grad: Callable, value: Callable | None = None, lipschitz: float | None = None):
        if not callable(grad):
            raise TypeError("grad must be callable")
        if value is not None and not callable(value):
            raise TypeError("value must be callable or None")
        if value is None and lipschitz is None:
            raise ValueError("give value (for the line search) or lipschitz (a fixed step)")
        self._grad, self._value = grad, value
        self.fixed_lipschitz = None if lipschitz is None else V.positive(lipschitz, "lipschitz")

    def grad(self, x):
        """``grad(x)`` as an array of x's shape, library, dtype and device
        (the solver works in x0's precision: a float64 gradient of a float32
        iterate, from float64 data say, is rounded to float32, where it made
        every later iterate float64); a ValueError naming both shapes where
        the gradient's is not x's (which broadcasting could hide)."""
        g = self._grad(x)
        if tuple(getattr(g, "shape", ())) != tuple(x.shape):
            raise ValueError(f"loss.grad(x) must return an array of x's shape {tuple(x.shape)}, got shape {tuple(getattr(g, 'shape', ()))}")
        return V.like(g, x, "loss.grad(x)")

    def value(self, x) -> float:
        return float(self._value(x))


# ----------------------------------------------------------------------------- the solver


@dataclass
class SolverResult:
    """What :func:`prox_grad` returns.

    ``x``: the solution (the input's library and device); ``objective``:
    F(x) (when the loss has a value); ``gap``: the duality gap at ``x``
    (None without one); ``residual``: the optimality residual at ``x``
    (computed at each check where no gap is available, and at the end);
    ``criterion``: ``"gap"`` or ``"residual"``, what was compared with
    ``tol`` at the last check (the residual also where the gap was asked for
    but the dual norm of ``A^T theta`` is infinite: a zero weight on a
    direction the gradient does not vanish on); ``converged``; ``n_iter``; ``lipschitz``: the final constant;
    ``history``: ``(iteration, certificate)`` at each check.
    """

    x: Any
    objective: float | None
    gap: float | None
    residual: float
    criterion: str
    converged: bool
    n_iter: int
    lipschitz: float
    history: list = field(default_factory=list)


#: prox_grad's default tolerance by the data's precision (half precision is
#: solved in float32)
DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-5}


def prox_grad(
    loss,
    penalty: Penalty,
    x0=None,
    *,
    tol: float | None = None,
    max_iter: int = 10_000,
    lipschitz: float | None = None,
    line_search: bool = True,
    restart: bool = True,
    check_every: int = 10,
    criterion: str = "auto",
) -> SolverResult:
    r"""Minimise ``loss(x) + penalty(x)`` by accelerated proximal gradient (FISTA).

    Parameters
    ----------
    loss : LeastSquares, Logistic or SmoothLoss
    penalty : a proxlib penalty object (its parameters carry the strength)
    x0 : array, optional
        Starting point (default zeros of the loss's shape, on ``A``'s device).
    tol : float, optional
        Stop when the relative duality gap ``gap / F(0)`` (criterion "gap") or
        the optimality residual (criterion "residual") is <= tol.  Default:
        1e-10 for float64 data, 1e-5 for float32 (half precision is solved
        in float32): a float32 iterate's certificates are themselves rounded,
        and level off between about 1e-8 and 2e-6.
    max_iter : int
    lipschitz : float, optional
        Initial Lipschitz constant of grad f (default: power iteration for a
        matrix loss; a secant estimate for a callable one).
    line_search : bool
        Backtracking: double the constant until
        ``f(x+) <= f(y) + <grad f(y), x+ - y> + L/2 ||x+ - y||^2``
        (for least squares checked exactly as ``||A d||^2 / n <= L ||d||^2``).
    restart : bool
        Reset the momentum when ``<y - x+, x+ - x> > 0`` (gradient restart).
    check_every : int
        Iterations between certificate checks (each costs one product with
        ``A^T`` and a sort for the dual norm).
    criterion : "auto", "gap" or "residual"
        "auto": the gap when the loss has a dual and the penalty a dual norm.

    Returns
    -------
    SolverResult
    """
    if criterion not in ("auto", "gap", "residual"):
        raise ValueError(f"criterion must be 'auto', 'gap' or 'residual', got {criterion!r}")
    if not isinstance(penalty, Penalty):
        raise TypeError(f"penalty must be a proxlib penalty object, got {type(penalty).__name__}")
    if not isinstance(loss, (_LinearLoss, SmoothLoss)):
        raise TypeError(
            f"loss must be a LeastSquares, Logistic or SmoothLoss (a gradient function: SmoothLoss(grad, value)), "
            f"got {type(loss).__name__}"
        )
    max_iter = V.count(max_iter, "max_iter")
    check_every = V.positive_count(check_every, "check_every")
    if tol is not None:
        tol = V.nonnegative(tol, "tol")
    use_gap = getattr(loss, "has_dual", False) and _C.has_dual_norm(penalty)
    if criterion == "gap" and not use_gap:
        raise ValueError("criterion='gap' needs a matrix loss and a penalty with a dual norm")
    if criterion == "residual":
        use_gap = False
    linear = isinstance(loss, _LinearLoss)

    if x0 is None:
        if not linear:
            raise ValueError("x0 is required with a SmoothLoss")
        xp = loss.xp
        x = xp.zeros(loss.shape, dtype=loss.A.dtype, device=device(loss.A))
    else:
        x = V.as_float_array(x0, "x0")
        xp = array_namespace(x)
        if linear:
            if tuple(x.shape) != loss.shape:
                raise ValueError(f"x0 must have shape {loss.shape}, got {tuple(x.shape)}")
            x = V.like(x, loss.A, "x0") if array_kind(x) != array_kind(loss.A) else xp.astype(x, loss.A.dtype)
            xp = loss.xp  # x0 is now of A's library
        x = xp.asarray(x, copy=True)

    can_search = line_search and (linear or loss._value is not None)
    # the line search's allowance for rounding: its excess is a difference of
    # loss values of size |f(y)|, each rounded in x's precision
    eps = float(xp.finfo(x.dtype).eps)
    slack = 8.0 * eps
    if tol is None:
        tol = DEFAULT_TOL["float64"] if eps < 1e-15 else DEFAULT_TOL["float32"]
    prox = R.Plan(penalty, x)  # (validation and layout once, not per iteration)
    L = _initial_lipschitz(loss, x, xp, lipschitz)
    f0 = loss.value_at_zero() if use_gap else None

    zx = loss.linear(x) if linear else None
    y, zy = x, zx
    t = 1.0
    history: list = []
    gap = None
    res = math.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        if linear:
            g = loss.rgrad(loss.dvalue_z(zy))
            fy = loss.value_z(zy) if (can_search and not isinstance(loss, LeastSquares)) else 0.0
        else:
            g = loss.grad(y)
            fy = loss.value(y) if can_search else 0.0
            if not math.isfinite(fy):
                # no excess is comparable: the constant doubled until the step
                # vanished, and the residual at that step claimed convergence
                raise FloatingPointError(f"the loss value is {fy} at iteration {it}: the line search needs a finite value")
        while True:
            x_new = prox(y - g / L, 1.0 / L)
            d = x_new - y
            if linear:
                zd = loss.linear(d)
                z_new = zy + zd
            if not can_search:
                break
            dd = _sqnorm(d, xp)
            if linear:
                ex = loss.excess(zy, z_new, zd, fy)
            else:
                ex = loss.value(x_new) - fy - _dot(g, d, xp)
            if ex <= 0.5 * L * dd + slack * abs(fy) or dd == 0.0:
                break
            L *= 2.0
            if not math.isfinite(L):  # pragma: no cover - a gradient that is not Lipschitz
                raise FloatingPointError("the line search diverged: is the gradient Lipschitz?")
        # momentum, with the gradient restart
        step_back = x_new - x
        if restart and _dot(y - x_new, step_back, xp) > 0:
            t = 1.0
            y, zy = x_new, (z_new if linear else None)
        else:
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            beta = (t - 1.0) / t_next
            y = x_new + beta * step_back
            if linear:
                zy = z_new + beta * (z_new - zx)
            t = t_next
        x, zx = x_new, (z_new if linear else None)
        if it % check_every == 0 or it == max_iter:
            if not math.isfinite(_sqnorm(x, xp)):
                raise FloatingPointError(
                    f"the iterates are not finite at iteration {it}: the step 1/lipschitz = {1.0 / L:.3g} is too "
                    "large for the gradient (give a larger lipschitz, or keep line_search=True), or the "
                    "gradient is not finite"
                )
            if linear:
                # no drift from the incremental products: refresh both (refreshing
                # one alone makes the momentum amplify the other's rounding)
                zx = loss.linear(x)
                zy = zx if y is x else loss.linear(y)
            gap, res, crit = _certificate(loss, penalty, x, zx, L, use_gap, f0, xp)
            kind = "residual" if gap is None else "gap"
            history.append((it, crit))
            if crit <= tol:
                converged = True
                break
    if not history or history[-1][0] != it:
        gap, res, _ = _certificate(loss, penalty, x, loss.linear(x) if linear else None, L, use_gap, f0, xp)
        kind = "residual" if gap is None else "gap"
    if use_gap and not math.isfinite(res):
        res = _residual(loss, penalty, x, zx if linear else None, L, xp)
    obj = None
    if linear:
        obj = loss.value(x) + penalty.value(x)
    elif loss._value is not None:
        obj = loss.value(x) + penalty.value(x)
    return SolverResult(
        x=x,
        objective=obj,
        gap=gap,
        residual=res,
        criterion=kind,
        converged=converged,
        n_iter=it,
        lipschitz=L,
        history=history,
    )


def _initial_lipschitz(loss, x, xp, given) -> float:
    if given is not None:
        return V.positive(given, "lipschitz")
    if isinstance(loss, _LinearLoss):
        L = loss.lipschitz()
        return L if L > 0 else 1.0
    if loss.fixed_lipschitz is not None:
        return loss.fixed_lipschitz
    # secant estimate from x and a nearby point
    h = 1e-4 * (1.0 + math.sqrt(_sqnorm(x, xp)) / max(1.0, math.sqrt(size(x))))
    x1 = x + h
    dg = loss.grad(x1) - loss.grad(x)
    L = math.sqrt(_sqnorm(dg, xp)) / (h * math.sqrt(size(x)))
    return L if L > 0 and math.isfinite(L) else 1.0


def _residual(loss, penalty, x, zx, L, xp) -> float:
    g = loss.rgrad(loss.dvalue_z(zx)) if zx is not None else loss.grad(x)
    step = 1.0 / L
    return _C.optimality_residual(penalty, x - step * g, x, step)


def _certificate(loss, penalty, x, zx, L, use_gap, f0, xp):
    """(gap or None, residual, the number compared with tol)."""
    if use_gap:
        dz = loss.dvalue_z(zx)
        theta = -dz
        corr = -loss.rgrad(dz)  # A^T theta = -grad f(x)
        kappa = max(1.0, _C.dual_norm(penalty, corr))
        if math.isfinite(kappa):
            primal = loss.value_z(zx) + penalty.value(x)
            gap = max(primal - loss.dual_value(theta / kappa), 0.0)
            return gap, math.inf, gap / f0 if f0 > 0 else gap
    res = _residual(loss, penalty, x, zx, L, xp)
    return None, res, res

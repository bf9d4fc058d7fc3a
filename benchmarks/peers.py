r"""The contenders of the CPU benchmark: proxlib on each backend, the peers a
user would otherwise pick (through their public APIs), and CVXPY.

Every contender computes the SAME problem as proxlib, for one ``Case``:

=================  ==========================================================
operator           problem (step, weights, lam, mu as in ``Case``)
=================  ==========================================================
owl                argmin_x 1/2||x - v||^2 + step sum_i w_i |x|_[i]
growl              argmin_X 1/2||X - W||_F^2 + step sum_i w_i ||x_[i]||_2 (rows)
group_lasso        argmin_X 1/2||X - W||_F^2 + step lam sum_r ||x_r||_2
exclusive_lasso    argmin_X 1/2||X - W||_F^2 + step lam/2 sum_r ||x_r||_1^2
group_exclusive    argmin_X 1/2||X - W||_F^2
                     + step lam sum_r ((1-mu)||x_r||_2 + mu/2 ||x_r||_1^2)
=================  ==========================================================

Each peer's ``mapping`` states how its own scaling convention was mapped onto
these parameters (read from the peer's source; see benchmarks/README.md).
``prepare(case)`` puts the input into the layout the peer's API demands
OUTSIDE the timing, and returns the timed call plus a function that maps the
call's output back to proxlib's layout for the equality check.  A peer that
cannot run raises ``Unavailable`` with the reason.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import proxlib

OPERATORS = ("owl", "growl", "group_lasso", "exclusive_lasso", "group_exclusive")


class Unavailable(Exception):
    """This contender cannot run this case; the message says why."""


@dataclass
class Case:
    op: str
    size: str  # label, e.g. "n=1e6" or "4096x4096"
    x: np.ndarray  # v (1-D) for owl, W (2-D, rows are the groups) otherwise
    step: float
    weights: np.ndarray | None = None  # owl / growl, x's dtype, non-increasing
    lam: float = 0.0
    mu: float = 0.0
    small: bool = False  # CVXPY-sized

    @property
    def dtype(self) -> str:
        return self.x.dtype.name


@dataclass
class Prepared:
    call: Callable[[], Any]
    to_ref: Callable[[Any], np.ndarray] = lambda out: out
    note: Callable[[], str] | None = None  # asked after the calls, e.g. a solver status


@dataclass
class Contender:
    name: str
    kind: str  # "proxlib" | "peer" | "cvxpy"
    ops: tuple[str, ...]
    mapping: str  # the exact call, with the parameter mapping
    prepare: Callable[[Case], Prepared]
    package: str | None = None  # distribution name, for the version
    small_only: bool = False
    float64_only: bool = False
    rtol: dict[str, float] = field(default_factory=lambda: {"float64": 1e-10, "float32": 1e-4})

    def version(self) -> str:
        if self.package is None:
            return ""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"


# ------------------------------------------------------------------ proxlib


def _proxlib_call(case: Case, check_finite: bool):
    x, s = case.x, case.step
    kw = {"check_finite": check_finite}
    if case.op == "owl":
        return lambda: proxlib.prox_owl(x, case.weights, s, **kw)
    if case.op == "growl":
        return lambda: proxlib.prox_growl(x, case.weights, s, **kw)
    if case.op == "group_lasso":
        return lambda: proxlib.prox_group_lasso(x, case.lam, s, **kw)
    if case.op == "exclusive_lasso":
        return lambda: proxlib.prox_exclusive_lasso(x, case.lam, s, **kw)
    if case.op == "group_exclusive":
        return lambda: proxlib.prox_group_exclusive(x, case.lam, case.mu, s, **kw)
    raise ValueError(case.op)


def proxlib_contender(backend: str, check_finite: bool = True) -> Contender:
    def prepare(case: Case) -> Prepared:
        if backend not in proxlib.available_backends():
            raise Unavailable(f"proxlib backend {backend!r} does not import on this machine")
        inner = _proxlib_call(case, check_finite)

        def call():
            with proxlib.use_backend(backend):
                return inner()

        return Prepared(call)

    suffix = "" if check_finite else ", check_finite=False"
    return Contender(
        name=f"proxlib[{backend}{suffix}]",
        kind="proxlib",
        ops=OPERATORS,
        mapping=f"proxlib.prox_*(...{suffix}) inside proxlib.use_backend({backend!r})",
        prepare=prepare,
    )


# ------------------------------------------------------------------ peers


def _import(module: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a peer broken on this numpy/python
        raise Unavailable(f"import {module} failed: {type(exc).__name__}: {exc}") from None


def _skglm_owl(case: Case) -> Prepared:
    SLOPE = _import("skglm.penalties").SLOPE
    # skglm: value = alpha * sum(sort(|w|) * alphas[::-1]), i.e. the largest
    # alpha pairs with the largest magnitude; prox_vec(x, stepsize) is the prox
    # of stepsize * value.  alphas must be float64 (numba jitclass spec).
    pen = SLOPE(alphas=case.weights.astype(np.float64), alpha=1.0)
    v, s = case.x, case.step
    return Prepared(lambda: pen.prox_vec(v, s))


def _skglm_growl(case: Case) -> Prepared:
    SLOPE = _import("skglm.penalties").SLOPE
    pen = SLOPE(alphas=case.weights.astype(np.float64), alpha=1.0)
    W, s = case.x, case.step

    def call():
        # GrOWL = OWL prox of the row norms, rows rescaled (no zero rows here).
        nrm = np.linalg.norm(W, axis=1)
        return W * (pen.prox_vec(nrm, s) / nrm)[:, None]

    return Prepared(call)


def _modopt_owl(case: Case) -> Prepared:
    OWL = _import("modopt.opt.proximity").OrderedWeightedL1Norm
    # ModOpt: op(x, extra_factor) thresholds with weights * extra_factor, the
    # largest weight on the largest |x| (Figueiredo & Nowak, Eq. 24).
    op = OWL(case.weights)
    v, s = case.x, case.step
    return Prepared(lambda: op.op(v, extra_factor=s))


def _modopt_group(case: Case) -> Prepared:
    GroupLASSO = _import("modopt.opt.proximity").GroupLASSO
    # ModOpt: groups run along the FIRST axis (norm over axis 0, i.e. each
    # column is a group); threshold = weights * extra_factor.  Our rows are
    # its columns of W.T (a view, no copy).
    op = GroupLASSO(weights=case.lam)
    WT, s = case.x.T, case.step
    return Prepared(lambda: op.op(WT, extra_factor=s), to_ref=lambda out: out.T)


def _pyproximal_l21(case: Case) -> Prepared:
    L21 = _import("pyproximal").L21
    # pyproximal: the flat input is reshaped to (ndim, N') and the groups are
    # its COLUMNS; prox(x, tau) is the prox of tau * sigma * ||X||_{2,1}.
    # So ndim = m (the row length), x = W.T.ravel(): prepared untimed.
    G, m = case.x.shape
    op = L21(ndim=m, sigma=case.lam)
    flat = np.ascontiguousarray(case.x.T).ravel()
    s = case.step
    return Prepared(lambda: op.prox(flat, s), to_ref=lambda out: out.reshape(m, G).T)


def _copt_group(case: Case) -> Prepared:
    GroupL1 = _import("copt.penalty").GroupL1
    # copt: GroupL1(alpha, groups) with groups a list of contiguous, increasing
    # index arrays into the flat vector; prox(x, step_size) thresholds at
    # alpha * step_size.  Row r of W is flat indices [r*m, (r+1)*m).
    G, m = case.x.shape
    groups = [np.arange(r * m, (r + 1) * m) for r in range(G)]
    pen = GroupL1(case.lam, groups)
    flat, s = case.x.reshape(-1), case.step
    return Prepared(lambda: pen.prox(flat, s), to_ref=lambda out: out.reshape(G, m))


def _proxop_l21rows(case: Case) -> Prepared:
    L21rows = _import("proxop").L21rows
    # proxop: prox(x, gamma) is the prox of gamma * sum_i ||X[i, :]||_2 (rows,
    # via L2Norm(axis=1)); it divides by (1e-16 + ||x_i||).
    op = L21rows()
    W, g = case.x, case.step * case.lam
    return Prepared(lambda: op.prox(W, g))


PEERS = [
    Contender("skglm SLOPE.prox_vec", "peer", ("owl",),
              "SLOPE(alphas=weights.astype(float64), alpha=1).prox_vec(v, step)", _skglm_owl, "skglm"),
    Contender("skglm SLOPE on row norms", "peer", ("growl",),
              "n = norm(W, axis=1); W * (SLOPE(alphas=weights).prox_vec(n, step) / n)[:, None]  "
              "(composed by us: no peer has GrOWL)", _skglm_growl, "skglm"),
    Contender("modopt OrderedWeightedL1Norm", "peer", ("owl",),
              "OrderedWeightedL1Norm(weights).op(v, extra_factor=step)", _modopt_owl, "modopt"),
    Contender("modopt GroupLASSO", "peer", ("group_lasso",),
              "GroupLASSO(weights=lam).op(W.T, extra_factor=step).T  (groups on axis 0)", _modopt_group, "modopt"),
    Contender("pyproximal L21", "peer", ("group_lasso",),
              "L21(ndim=m, sigma=lam).prox(W.T.ravel(), tau=step).reshape(m, G).T  "
              "(groups are columns of (ndim, N'); transpose untimed)", _pyproximal_l21, "pyproximal"),
    Contender("copt GroupL1", "peer", ("group_lasso",),
              "GroupL1(lam, [arange(r*m, (r+1)*m) for r in range(G)]).prox(W.ravel(), step)",
              _copt_group, "copt"),
    Contender("proxop L21rows", "peer", ("group_lasso",),
              "L21rows().prox(W, gamma=step*lam)", _proxop_l21rows, "proxop"),
]


# ------------------------------------------------------------------ CVXPY


def _cvxpy_prepare(case: Case) -> Prepared:
    cp = _import("cvxpy")
    if "CLARABEL" not in cp.installed_solvers():
        raise Unavailable("cvxpy has no Clarabel solver installed")
    x0 = case.x.astype(np.float64)
    v = cp.Parameter(x0.shape, value=x0)
    X = cp.Variable(x0.shape)
    s = case.step
    if case.op == "owl":
        # sum_i w_i |x|_[i] = sum_k (w_k - w_{k+1}) sum_largest(|x|, k), w_{n+1} = 0
        w = case.weights.astype(np.float64)
        d = w - np.append(w[1:], 0.0)
        a = cp.abs(X)
        pen = sum(d[k] * cp.sum_largest(a, k + 1) for k in range(w.size) if d[k] > 0)
    elif case.op == "growl":
        w = case.weights.astype(np.float64)
        d = w - np.append(w[1:], 0.0)
        nrm = cp.norm(X, 2, axis=1)
        pen = sum(d[k] * cp.sum_largest(nrm, k + 1) for k in range(w.size) if d[k] > 0)
    elif case.op == "group_lasso":
        pen = case.lam * cp.sum(cp.norm(X, 2, axis=1))
    elif case.op == "exclusive_lasso":
        pen = case.lam / 2 * cp.sum(cp.square(cp.norm(X, 1, axis=1)))
    elif case.op == "group_exclusive":
        pen = case.lam * ((1 - case.mu) * cp.sum(cp.norm(X, 2, axis=1))
                          + case.mu / 2 * cp.sum(cp.square(cp.norm(X, 1, axis=1))))
    else:
        raise ValueError(case.op)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(X - v) + s * pen))
    # 1e-10: at 1e-12 Clarabel stalls ("optimal_inaccurate", errors up to 1e-3).
    opts = dict(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "may be inaccurate": reported below
            prob.solve(**opts)
        return X.value

    def note():
        return "" if prob.status == "optimal" else f"Clarabel status {prob.status!r}"

    return Prepared(call, to_ref=lambda out: np.asarray(out).astype(case.x.dtype), note=note)


CVXPY = Contender(
    "cvxpy (Clarabel)", "cvxpy", OPERATORS,
    "Problem(Minimize(1/2 sum_squares(X - v) + step*Omega(X))), v a Parameter; built and "
    "solved once untimed, then prob.solve() re-timed; OWL/GrOWL as sum_k (w_k - w_{k+1}) "
    "sum_largest(|x| or row norms, k); Clarabel, gap and feasibility tolerances 1e-10",
    _cvxpy_prepare, "cvxpy", small_only=True, float64_only=True,
    # An interior-point solution at gap tolerance eps is accurate to ~sqrt(eps) in x.
    rtol={"float64": 1e-4, "float32": 1e-4},
)


def all_contenders(backends=("numpy", "numba")) -> list[Contender]:
    out = [proxlib_contender(b) for b in backends]
    if "numba" in backends:
        out.append(proxlib_contender("numba", check_finite=False))
    return out + PEERS + [CVXPY]

r"""Time to the same duality gap: proxlib.solvers.prox_grad against scikit-learn and skglm.

    python benchmarks/bench_solvers.py                # writes benchmarks/SOLVERS.md
    python benchmarks/bench_solvers.py --quick        # smaller problems, benchmarks/_out/SOLVERS_quick.md

Every problem is  min_b 1/(2n) ||y - X b||^2 + Omega(b)  (no intercept; the
columns and y are centred).  Each contender is run with a sweep of its own
``tol`` (each library defines it differently: scikit-learn a gap relative to
||y||^2, skglm a KKT violation, proxlib a gap relative to f(0)); the duality gap
of every result is then measured by ONE function here (primal minus the dual at
the residual rescaled into the dual-norm ball) and the time reported is that of
the run at the largest tol (target, target/10, ..., target/1000) whose gap,
relative to f(0) = ||y||^2/(2n), is below the target.  Times: median of
repeats after a warm-up call (Numba compilation of skglm excluded; a run over
2 s is timed once).  The machine's load (``uptime``) is written with the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

import proxlib
from proxlib import certificates
from proxlib.solvers import LeastSquares, prox_grad

TARGETS = (1e-6, 1e-10)


def relative_gap(X, y, pen, coef) -> float:
    """(P(b) - D(theta)) / f(0), theta = (y - X b)/n rescaled so that Omega_*(X^T theta) <= 1."""
    n = X.shape[0]
    r = y - X @ coef
    theta = r / n
    kappa = max(1.0, certificates.dual_norm(pen, X.T @ theta))
    theta = theta / kappa
    primal = 0.5 * np.sum(r * r) / n + pen.value(coef)
    dual = float(np.sum(theta * y)) - 0.5 * n * float(np.sum(theta * theta))
    return max(primal - dual, 0.0) / (0.5 * np.sum(y * y) / n)


def _time(fn, repeats):
    fn()  # warm-up: JIT compilation, caches
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
        if ts[-1] > 2.0:  # a run over 2 s is timed once
            break
    return statistics.median(ts), out


# ----------------------------------------------------------------------------- contenders


def proxlib_fit(X, y, pen, tol):
    def run():
        return prox_grad(LeastSquares(X, y), pen, tol=tol, max_iter=200_000).x

    return run


def sklearn_lasso(X, y, alpha, tol):
    from sklearn.linear_model import Lasso

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Lasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=1_000_000).fit(X, y).coef_

    return run


def sklearn_multitask(X, Y, alpha, tol):
    from sklearn.linear_model import MultiTaskLasso

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return MultiTaskLasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=1_000_000).fit(X, Y).coef_.T

    return run


def skglm_lasso(X, y, alpha, tol):
    from skglm import Lasso

    def run():
        return Lasso(alpha=alpha, fit_intercept=False, tol=tol, max_iter=1000, max_epochs=1_000_000).fit(X, y).coef_

    return run


def skglm_slope(X, y, w, tol):
    from skglm import GeneralizedLinearEstimator
    from skglm.datafits import Quadratic
    from skglm.penalties import SLOPE
    from skglm.solvers import FISTA

    def run():
        est = GeneralizedLinearEstimator(Quadratic(), SLOPE(w), FISTA(max_iter=1_000_000, tol=tol, opt_strategy="fixpoint"))
        return est.fit(X, y).coef_

    return run


def skglm_group_lasso(X, y, size, alpha, tol):
    from skglm import GroupLasso

    c = np.sqrt(np.full(X.shape[1] // size, float(size)))

    def run():
        est = GroupLasso(groups=size, alpha=alpha, weights=c, tol=tol, max_iter=1000, max_epochs=1_000_000, fit_intercept=False)
        return est.fit(X, y).coef_

    return run


# ----------------------------------------------------------------------------- problems


def problems(quick: bool):
    from sklearn.datasets import load_diabetes, make_regression

    X, y = load_diabetes(return_X_y=True)
    X, y = X - X.mean(0), y - y.mean()
    amax = np.max(np.abs(X.T @ y)) / len(y)
    yield "lasso, diabetes (442 x 10), alpha = alpha_max/10", X, y, proxlib.WeightedL1(amax / 10), {
        "scikit-learn Lasso": lambda tol: sklearn_lasso(X, y, amax / 10, tol),
        "skglm Lasso": lambda tol: skglm_lasso(X, y, amax / 10, tol),
    }
    n, p = (200, 400) if quick else (500, 2000)
    X, y = make_regression(n_samples=n, n_features=p, n_informative=20, noise=10.0, random_state=0)
    X, y = X - X.mean(0), y - y.mean()
    amax = np.max(np.abs(X.T @ y)) / n
    yield f"lasso, make_regression ({n} x {p}), alpha = alpha_max/20", X, y, proxlib.WeightedL1(amax / 20), {
        "scikit-learn Lasso": lambda tol: sklearn_lasso(X, y, amax / 20, tol),
        "skglm Lasso": lambda tol: skglm_lasso(X, y, amax / 20, tol),
    }
    w = amax / 20 * np.linspace(2.0, 1.0, p)  # OSCAR-like decay
    yield f"SLOPE, make_regression ({n} x {p}), weights alpha_max/20 x [2 .. 1]", X, y, proxlib.OWL(w), {
        "skglm FISTA + SLOPE": lambda tol: skglm_slope(X, y, w, tol),
    }
    size = 5
    labels = np.repeat(np.arange(p // size), size)
    gmax = np.max(np.linalg.norm((X.T @ y / n).reshape(-1, size), axis=1)) / np.sqrt(size)
    pen = proxlib.GroupLasso(gmax / 10, groups=labels, group_weights="sqrt")
    yield f"group lasso, make_regression ({n} x {p}), groups of 5, sqrt(5) weights", X, y, pen, {
        "skglm GroupLasso": lambda tol: skglm_group_lasso(X, y, size, gmax / 10, tol),
    }
    X, Y = make_regression(n_samples=n, n_features=p // 4, n_targets=5, n_informative=20, noise=10.0, random_state=1)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    amax = np.max(np.linalg.norm(X.T @ Y, axis=1)) / n
    yield f"multi-task lasso = GrOWL with constant weights ({n} x {p // 4}, 5 tasks)", X, Y, proxlib.GrOWL(np.full(p // 4, amax / 10)), {
        "scikit-learn MultiTaskLasso": lambda tol: sklearn_multitask(X, Y, amax / 10, tol),
    }


def best_time(make, X, y, pen, target, repeats):
    """The run at the largest tol of the sweep target, target/10, ... target/1000
    whose measured relative gap is <= target (a smaller tol only iterates more)."""
    for tol in (target * 10.0 ** -k for k in range(0, 4)):
        t, coef = _time(make(tol), repeats)
        gap = relative_gap(X, y, pen, coef)
        if gap <= target:
            return t, gap, tol
    return None


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:  # pragma: no cover
        return "uptime unavailable"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "_out", "SOLVERS_quick.md") if args.quick else os.path.join(here, "SOLVERS.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    load_before = uptime()
    lines = []
    for title, X, y, pen, peers in problems(args.quick):
        print(title, flush=True)
        lines.append(f"\n### {title}\n")
        lines.append("| target gap / f(0) | contender | time (s) | ratio to fastest | measured gap / f(0) | tol used |")
        lines.append("|---|---|---|---|---|---|")
        for target in TARGETS:
            rows = [("proxlib prox_grad (FISTA)", best_time(lambda tol: proxlib_fit(X, y, pen, tol), X, y, pen, target, args.repeats))]
            for name, make in peers.items():
                try:
                    rows.append((name, best_time(make, X, y, pen, target, args.repeats)))
                except ImportError as exc:
                    rows.append((name + f" (not installed: {exc})", None))
            fastest = min((r[1][0] for r in rows if r[1] is not None), default=float("nan"))
            for name, res in rows:
                if res is None:
                    lines.append(f"| {target:.0e} | {name} | did not reach the target | | | |")
                else:
                    t, gap, tol = res
                    lines.append(f"| {target:.0e} | {name} | {t:.4f} | {t / fastest:.2f} | {gap:.1e} | {tol:.0e} |")
                print("  ", lines[-1], flush=True)
    load_after = uptime()
    import sklearn

    try:
        import skglm

        skv = getattr(skglm, "__version__", "?")
    except ImportError:
        skv = "not installed"
    head = [
        "# Solvers: time to the same duality gap",
        "",
        "Generated by `python benchmarks/bench_solvers.py" + (" --quick" if args.quick else "") + "` (see its docstring for the protocol:",
        "one gap function for every contender, each library's own `tol` swept down from the target until",
        "its result reaches the target; median of " + f"{args.repeats} repeats after a warm-up call, a run over 2 s once).",
        "",
        f"* machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, skglm {skv}, proxlib {proxlib.__version__}",
        f"* load before: `{load_before}`",
        f"* load after: `{load_after}`",
        "* The machine is shared (2 cores): with a load average above 2 the times are inflated and",
        "  noisy; the ratios within one problem and target were measured minutes apart at most.",
    ]
    with open(out, "w") as f:
        f.write("\n".join(head + lines) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1:])

"""A short tour: every operator of proxlib on a small example.

Run ``python -m proxlib.tour``.  Each block prints the input, the result and
its optimality certificate: :func:`proxlib.optimality_residual`, computed from
the optimality conditions alone (r = (v - x)/step in the subdifferential of
Omega at x; for lp the global-optimality conditions), never from the prox,
against its rounding level :func:`proxlib.residual_tolerance`.  The output
doubles as a check.
"""

from __future__ import annotations

import numpy as np

import proxlib


def _show(title: str, v, x, note: str = "", pen=None, step: float = 1.0) -> None:
    print(f"\n== {title}")
    with np.printoptions(precision=4, suppress=True):
        print("v =", np.array2string(np.asarray(v), prefix="v = "))
        print("x =", np.array2string(np.asarray(x), prefix="x = "))
    if note:
        print(note)
    if pen is not None:
        res = proxlib.optimality_residual(pen, v, x, step)
        tol = proxlib.residual_tolerance(pen, v, step)
        print(f"certificate: optimality residual {res:.1e} {'<=' if res <= tol else '>'} rounding level {tol:.1e}")


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"proxlib {proxlib.__version__}: backends available here: {proxlib.available_backends()}")

    v = np.array([3.0, -2.9, 0.4, -1.0, 2.0, 0.1])
    w = proxlib.owl_weights_oscar(v.size, 0.2, 0.3)
    x = proxlib.prox_owl(v, w)
    r = np.sort(np.abs(v - x))[::-1]
    _show(
        "OWL (OSCAR weights 0.2 + 0.3 (n - i))",
        v,
        x,
        f"ties: {np.unique(np.round(np.abs(x[x != 0]), 12)).size} distinct non-zero magnitudes; "
        f"dual-norm check max(cumsum(|r|_sorted) - cumsum(w)) = {np.max(np.cumsum(r) - np.cumsum(w)):.2e} "
        f"<= 0 up to rounding ({v.size} eps sum(w) = {v.size * np.finfo(float).eps * np.sum(w):.1e})",
        proxlib.OWL(w),
    )

    W = rng.standard_normal((5, 3))
    W[1] = W[0] * 1.01
    lam = proxlib.owl_weights_stairwise(5, 0.3, 0.4, 3)
    X = proxlib.prox_growl(W, lam)
    _show(
        "GrOWL on rows (stairwise weights, Lambda1=0.3, Lambda2=0.4, p=3)",
        W,
        X,
        "row norms after: " + np.array2string(np.linalg.norm(X, axis=1), precision=4),
        proxlib.GrOWL(lam),
    )

    X = proxlib.prox_group_lasso(W, 1.0)
    _show("group lasso, lam = 1 (rows are groups)", W, X, pen=proxlib.GroupLasso(1.0))

    X = proxlib.prox_exclusive_lasso(W, 0.8)
    _show("exclusive lasso, lam = 0.8 (each row keeps its few largest entries)", W, X, pen=proxlib.ExclusiveLasso(0.8))
    thesis = proxlib.prox_exclusive_lasso_thesis(W, 0.8)
    _show(
        "the thesis' exclusive step (Eq. 8), same lam: an approximation, and the certificate says so",
        W,
        thesis,
        pen=proxlib.ExclusiveLasso(0.8),
    )

    X = proxlib.prox_group_exclusive(W, 1.0, 0.5)
    seq = proxlib.prox_group_exclusive_sequential(W, 1.0, 0.5)
    obj = lambda Z: 0.5 * np.sum((Z - W) ** 2) + proxlib.GroupExclusive(1.0, 0.5).value(Z)  # noqa: E731
    _show(
        "group + exclusive, lam = 1, mu = 0.5 (exact prox)",
        W,
        X,
        f"objective: exact {obj(X):.6f} < thesis' sequential approximation {obj(seq):.6f} "
        f"(whose residual is {proxlib.optimality_residual(proxlib.GroupExclusive(1.0, 0.5), W, seq):.1e})",
        proxlib.GroupExclusive(1.0, 0.5),
    )

    v = rng.standard_normal(7)
    groups = np.array([2, 0, 2, 1, 0, 2, 1])
    x = proxlib.prox_group_lasso(v, 0.6, groups=groups, group_weights="sqrt")
    _show(
        "ragged groups (labels [2 0 2 1 0 2 1], weights sqrt(size))",
        v,
        x,
        pen=proxlib.GroupLasso(0.6, groups=groups, group_weights="sqrt"),
    )

    v = np.linspace(-2, 2, 9)
    for p in (0.0, 0.5, 1.0):
        _show(
            f"lp, p = {p}, lam = 0.5 (threshold {proxlib.lp_threshold(0.5, p):.4f})",
            v,
            proxlib.prox_lp(v, 0.5, p),
            pen=proxlib.Lp(0.5, p),
        )

    theta = np.array([0.0, 0.01, -0.5, 2.0])
    rw = proxlib.reweight_l1(theta, tau=0.1)
    _show(
        "re-weighted l1 step: weighted-l1 prox with weights 1/(|theta| + tau)",
        theta,
        proxlib.prox_weighted_l1(theta, 0.05 * rw.weights),
        pen=proxlib.WeightedL1(0.05 * rw.weights),
    )
    w2 = proxlib.reweight_l2(theta, 0.1).weights
    _show("weighted l2^2, weights 1/(theta^2 + tau)", theta, proxlib.prox_weighted_l2sq(theta, w2), pen=proxlib.WeightedL2Sq(w2))


if __name__ == "__main__":
    main()

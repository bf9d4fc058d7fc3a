"""proxlib.solvers and proxlib.estimators against scikit-learn and skglm.

The proximal-gradient solver, stopped on its certificate, must give the same
coefficients as scikit-learn's coordinate descent (Lasso, MultiTaskLasso,
l1 logistic regression) and skglm's SLOPE and GroupLasso to 1e-8, on their
datasets (diabetes, make_regression); on NumPy and on torch tensors; and the
estimators pass scikit-learn's ``check_estimator``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given

import proxlib
from proxlib.solvers import LeastSquares, Logistic, SmoothLoss, prox_grad
from proxlib.testing import prox_problems

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_diabetes, make_classification, make_regression  # noqa: E402
from sklearn.linear_model import Lasso, LogisticRegression, MultiTaskLasso  # noqa: E402

AGREE = 1e-8  # the bar: coefficients equal to 1e-8


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X - X.mean(0), y - y.mean()


@pytest.fixture(scope="module")
def regression():
    X, y = make_regression(n_samples=120, n_features=40, n_informative=8, noise=5.0, random_state=0)
    return X, y


def _tight_lasso(alpha, **kw):
    return Lasso(alpha=alpha, tol=1e-15, max_iter=1_000_000, **kw)


# ----------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("alpha", [1.0, 0.1, 0.01])
def test_lasso_matches_sklearn_on_diabetes(diabetes, alpha):
    X, y = diabetes
    ref = _tight_lasso(alpha, fit_intercept=False).fit(X, y).coef_
    res = prox_grad(LeastSquares(X, y), proxlib.WeightedL1(alpha), tol=1e-15, max_iter=100_000)
    assert res.converged and res.criterion == "gap"
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=AGREE)
    # the certificate at the solution: the gap bounds the objective error
    assert res.gap <= 1e-15 * LeastSquares(X, y).value_at_zero()


@pytest.mark.parametrize("alpha", [5.0, 0.5])
def test_lasso_matches_sklearn_on_make_regression_with_intercept(regression, alpha):
    from proxlib.estimators import OWLRegression

    X, y = regression
    ref = _tight_lasso(alpha).fit(X, y)
    est = OWLRegression(alpha=alpha, weights=np.ones(X.shape[1]), tol=1e-15, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=AGREE)
    assert est.intercept_ == pytest.approx(ref.intercept_, abs=AGREE)
    np.testing.assert_allclose(est.predict(X), ref.predict(X), rtol=0, atol=1e-7)


def test_multitask_growl_with_constant_weights_is_multitask_lasso(diabetes):
    from proxlib.estimators import GrOWLRegression

    X, y = diabetes
    Y = np.stack([y, 0.5 * y + 100 * X[:, 2]], axis=1)
    ref = MultiTaskLasso(alpha=1.0, tol=1e-15, max_iter=1_000_000).fit(X, Y)
    est = GrOWLRegression(alpha=1.0, weights=np.ones(X.shape[1]), tol=1e-15, max_iter=100_000).fit(X, Y)
    assert est.coef_.shape == ref.coef_.shape == (2, X.shape[1])
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=AGREE)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=0, atol=AGREE)


def test_l1_logistic_matches_liblinear():
    X, y = make_classification(200, 20, random_state=0)
    C = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear's deprecation notes on penalty=
        ref = LogisticRegression(C=C, penalty="l1", solver="liblinear", fit_intercept=False, tol=1e-12, max_iter=100_000)
        ref = ref.fit(X, y).coef_[0]
    res = prox_grad(Logistic(X, 2.0 * y - 1.0), proxlib.WeightedL1(1.0 / (C * len(y))), tol=1e-14, max_iter=100_000)
    assert res.converged and res.criterion == "gap"
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-8)


# ----------------------------------------------------------------------------- against skglm


def _skglm():
    return pytest.importorskip("skglm")


@pytest.mark.slow  # skglm compiles its solver (numba) on first use: a minute on a loaded 2-core machine
def test_slope_matches_skglm(regression):
    _skglm()
    from skglm import GeneralizedLinearEstimator
    from skglm.datafits import Quadratic
    from skglm.penalties import SLOPE
    from skglm.solvers import FISTA

    X, y = regression
    y = y - y.mean()
    X = X - X.mean(0)
    w = proxlib.owl_weights_oscar(X.shape[1], 2.0, 0.1)
    ref = GeneralizedLinearEstimator(Quadratic(), SLOPE(w), FISTA(max_iter=200_000, tol=1e-13, opt_strategy="fixpoint")).fit(X, y).coef_
    res = prox_grad(LeastSquares(X, y), proxlib.OWL(w), tol=1e-15, max_iter=100_000)
    assert res.converged
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=AGREE)
    # and proxlib's estimator with the intercept on uncentred data
    from proxlib.estimators import OWLRegression

    Xr, yr = make_regression(n_samples=120, n_features=40, n_informative=8, noise=5.0, random_state=0)
    est = OWLRegression(alpha=1.0, weights=w, tol=1e-15, max_iter=100_000).fit(Xr + 3.0, yr + 7.0)
    np.testing.assert_allclose(est.coef_, ref, rtol=0, atol=AGREE)


@pytest.mark.slow  # as above
def test_group_lasso_matches_skglm(diabetes, regression):
    # one test for both datasets: skglm compiles its solver (numba) once per process
    _skglm()
    from skglm import GroupLasso as SkGroupLasso

    for (X, y), size, alpha in ((diabetes, 2, 1.0), (regression, 4, 3.0)):
        p = X.shape[1]
        labels = np.repeat(np.arange(p // size), size)
        c = np.sqrt(np.full(p // size, float(size)))
        # (skglm's inner solver stalls short of tol 1e-14 on this data: each of its
        # 1000 outer iterations then ran up to max_epochs; 1e6 took over 20 minutes
        # on a 2-core VM, 1000 about 30 s, and the coefficients agree to 1e-8)
        ref = SkGroupLasso(groups=size, alpha=alpha, weights=c, tol=1e-14, max_iter=1000, max_epochs=1000, fit_intercept=False)
        ref = ref.fit(X, y).coef_
        pen = proxlib.GroupLasso(alpha, groups=labels, group_weights="sqrt")
        res = prox_grad(LeastSquares(X, y), pen, tol=1e-15, max_iter=100_000)
        assert res.converged and res.criterion == "gap"
        np.testing.assert_allclose(res.x, ref, rtol=0, atol=AGREE)


# ----------------------------------------------------------------------------- backends and losses


def test_torch_tensors_give_the_numpy_solution(diabetes):
    torch = pytest.importorskip("torch")
    X, y = diabetes
    pen = proxlib.OWL(np.linspace(1.0, 0.1, X.shape[1]))
    ref = prox_grad(LeastSquares(X, y), pen, tol=1e-15, max_iter=100_000)
    res = prox_grad(LeastSquares(torch.from_numpy(X), torch.from_numpy(y)), pen, tol=1e-15, max_iter=100_000)
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float64
    assert res.converged
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=0, atol=AGREE)


def test_x0_of_another_library_than_A(diabetes):
    # x0 is converted to A's library: a NumPy x0 with torch A (and the reverse)
    # once went back to x0's library and failed in A @ x
    torch = pytest.importorskip("torch")
    X, y = diabetes
    pen = proxlib.WeightedL1(1.0)
    ref = prox_grad(LeastSquares(X, y), pen, tol=1e-12).x
    start = np.full(X.shape[1], 0.5)
    res = prox_grad(LeastSquares(torch.from_numpy(X), torch.from_numpy(y)), pen, x0=start, tol=1e-12)
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float64
    np.testing.assert_allclose(res.x.numpy(), ref, rtol=0, atol=AGREE * np.abs(ref).max())
    res = prox_grad(LeastSquares(X, y), pen, x0=torch.from_numpy(start), tol=1e-12)
    assert isinstance(res.x, np.ndarray) and res.x.dtype == np.float64
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=AGREE * np.abs(ref).max())


def _float32_problems():
    rng = np.random.default_rng(0)
    for n, p in ((60, 30), (150, 80)):
        A = rng.standard_normal((n, p))
        yield LeastSquares, A, rng.standard_normal(n)
        yield Logistic, A, np.where(rng.random(n) > 0.5, 1.0, -1.0)


@pytest.mark.parametrize("pen", [proxlib.WeightedL1(0.02), proxlib.GroupLasso(0.02), proxlib.ExclusiveLasso(0.02)],
                         ids=lambda p: type(p).__name__)
def test_float32_line_search_and_default_tol(pen):
    # The line search allowed float64 rounding (8 * 2.2e-16 |f(y)|) for the
    # excess of float32 loss values, so rounding alone doubled the constant
    # (logistic: 0.6 grew to 4e4-1e6) and the steps shrank until the run
    # stalled; and the default tol (1e-10) is below a float32 certificate's
    # own rounding, so float32 runs went to max_iter.  Now the allowance is
    # float32's and the default tol 1e-5 there: float32 runs take the float64
    # run's constant, converge in about its iterations, and agree with it.
    for make, A, b in _float32_problems():
        ref = prox_grad(make(A, b), pen)
        res = prox_grad(make(A.astype(np.float32), b.astype(np.float32)), pen, max_iter=2_000)
        assert res.x.dtype == np.float32
        assert res.converged and res.history[-1][1] <= proxlib.solvers.DEFAULT_TOL["float32"]
        assert res.n_iter <= max(50, ref.n_iter)
        assert res.lipschitz < 1.5 * ref.lipschitz  # (no doubling beyond the float64 run's)
        np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-3 * max(1.0, np.abs(ref.x).max()))


def test_default_lipschitz_when_ones_is_an_eigenvector():
    # the power iteration started from the all-ones vector, an eigenvector of
    # A^T A here (eigenvalues 2 and 0.02): it returned 0.01 for the constant 1,
    # and without the line search the iterates diverged
    A, b = np.array([[1.0, -1.0], [0.1, 0.1]]), np.array([1.0, 2.0])
    loss = LeastSquares(A, b)
    true = np.linalg.norm(A, 2) ** 2 / 2
    assert 0.99 * true <= loss.lipschitz() <= true * (1 + 1e-12)
    pen = proxlib.WeightedL1(0.01)
    ref = prox_grad(loss, pen, tol=1e-14).x
    res = prox_grad(loss, pen, line_search=False, tol=1e-14)
    assert res.converged
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-9)


def test_callable_gradient_stops_on_the_residual(diabetes):
    X, y = diabetes
    n = len(y)
    pen = proxlib.GroupLasso(1.0, groups=np.repeat(np.arange(5), 2))
    loss = SmoothLoss(lambda w: X.T @ (X @ w - y) / n, value=lambda w: 0.5 * np.sum((X @ w - y) ** 2) / n)
    res = prox_grad(loss, pen, x0=np.zeros(X.shape[1]), tol=1e-13, max_iter=100_000)
    assert res.converged and res.criterion == "residual" and res.gap is None
    assert res.residual <= 1e-13
    ref = prox_grad(LeastSquares(X, y), pen, tol=1e-15, max_iter=100_000)
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)
    # a fixed step without the value (no line search)
    L = np.linalg.norm(X, 2) ** 2 / n
    res2 = prox_grad(SmoothLoss(loss.grad, lipschitz=L), pen, x0=np.zeros(X.shape[1]), tol=1e-13, max_iter=100_000)
    assert res2.converged and res2.lipschitz == L
    np.testing.assert_allclose(res2.x, ref.x, rtol=0, atol=1e-8)


def test_callable_gradient_of_another_dtype_or_shape(diabetes):
    """A SmoothLoss whose gradient is float64 (float64 data) for a float32
    x0: every iterate, and the result, became float64; the solver works in
    x0's precision, so the gradient is rounded to it (the result is the
    float32 problem's, within its tolerance).  A gradient of another shape
    broadcast or failed with NumPy's message: now a ValueError naming both
    shapes."""
    X, y = diabetes
    n = len(y)
    pen = proxlib.GroupLasso(1.0, groups=np.repeat(np.arange(5), 2))
    value = lambda w: 0.5 * float(np.sum((X @ w - y) ** 2)) / n  # noqa: E731
    loss = SmoothLoss(lambda w: X.T @ (X @ w - y) / n, value=value)
    res = prox_grad(loss, pen, x0=np.zeros(X.shape[1], dtype=np.float32), max_iter=100_000)
    assert res.x.dtype == np.float32 and res.converged
    ref = prox_grad(LeastSquares(X, y), pen, tol=1e-15, max_iter=100_000)
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-4 * np.abs(ref.x).max())
    for grad in (lambda w: (X.T @ (X @ w - y) / n)[:-1], lambda w: float(np.sum(w))):
        with pytest.raises(ValueError, match=r"loss.grad\(x\) must return an array of x's shape \(10,\)"):
            prox_grad(SmoothLoss(grad, value=value), pen, x0=np.zeros(X.shape[1]))


def test_callable_value_that_is_not_finite_raises():
    # a NaN value made every excess NaN: the line search doubled the constant
    # until the step vanished (x_new == y), and the residual at that step
    # (1e-18) returned converged=True at the start, objective NaN
    pen = proxlib.WeightedL1(0.1)
    for bad in (float("nan"), float("inf")):
        loss = SmoothLoss(lambda w: w, value=lambda w, bad=bad: bad)
        with pytest.raises(FloatingPointError, match="loss value"):
            prox_grad(loss, pen, x0=np.ones(3))


@pytest.mark.parametrize(
    "pen",
    [proxlib.ExclusiveLasso(2.0, groups=np.repeat(np.arange(5), 2)), proxlib.GroupExclusive(2.0, 0.5, groups=np.repeat(np.arange(5), 2)), proxlib.Lp(20.0, 0.5), proxlib.WeightedL2Sq(0.3)],
    ids=["exclusive", "group_exclusive", "lp", "l2sq"],
)
def test_penalties_without_dual_norm_stop_on_the_residual(diabetes, pen):
    X, y = diabetes
    res = prox_grad(LeastSquares(X, y), pen, tol=1e-12, max_iter=100_000)
    assert res.converged and res.criterion == "residual" and res.gap is None
    # the certificate is the fixed point of the prox-gradient map, checked here
    # by one more step: x = prox_{t Omega}(x - t grad f(x))
    g = X.T @ (X @ res.x - y) / len(y)
    t = 1.0 / res.lipschitz
    assert proxlib.optimality_residual(pen, res.x - t * g, res.x, t) <= 1e-12
    if isinstance(pen, proxlib.WeightedL2Sq):  # closed form: ridge
        ref = np.linalg.solve(X.T @ X / len(y) + 2 * 0.3 * np.eye(X.shape[1]), X.T @ y / len(y))
        np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-8)


def test_restart_and_line_search_options(diabetes):
    X, y = diabetes
    pen = proxlib.WeightedL1(0.1)
    ref = _tight_lasso(0.1, fit_intercept=False).fit(X, y).coef_
    for restart in (True, False):
        for line_search in (True, False):
            res = prox_grad(LeastSquares(X, y), pen, tol=1e-14, max_iter=200_000, restart=restart, line_search=line_search)
            assert res.converged, (restart, line_search)
            np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-6)
    # a too small initial constant is raised by the line search
    res = prox_grad(LeastSquares(X, y), pen, tol=1e-14, max_iter=100_000, lipschitz=1e-6)
    assert res.converged and res.lipschitz >= np.linalg.norm(X, 2) ** 2 / len(y) / 2


def test_a_loss_that_is_not_a_loss_object_raises_a_type_error_naming_loss():
    """A gradient function passed as the loss (instead of SmoothLoss(grad,
    value)) gave AttributeError: 'function' object has no attribute '_value'."""
    grad = lambda w: w - 1.0  # noqa: E731
    for bad in (grad, "least squares", None):
        with pytest.raises(TypeError, match="loss must be a LeastSquares, Logistic or SmoothLoss"):
            prox_grad(bad, proxlib.WeightedL1(0.1), np.zeros(3))


def test_bad_arguments(diabetes):
    X, y = diabetes
    with pytest.raises(ValueError, match="A must be 2-D"):
        LeastSquares(y, y)
    with pytest.raises(ValueError, match="b must have shape"):
        LeastSquares(X, y[:-1])
    with pytest.raises(ValueError, match="labels"):
        Logistic(X, y)
    for make in (LeastSquares, Logistic):  # (a mean over no rows: ZeroDivisionError in prox_grad)
        with pytest.raises(ValueError, match="at least one row"):
            make(X[:0], y[:0])
    with pytest.raises(ValueError, match="criterion"):
        prox_grad(LeastSquares(X, y), proxlib.WeightedL1(1.0), criterion="kkt")
    with pytest.raises(ValueError, match="gap"):
        prox_grad(LeastSquares(X, y), proxlib.Lp(1.0, 0.5), criterion="gap")
    with pytest.raises(TypeError, match="penalty"):
        prox_grad(LeastSquares(X, y), "l1")
    with pytest.raises(ValueError, match="x0 is required"):
        prox_grad(SmoothLoss(lambda w: w, lipschitz=1.0), proxlib.WeightedL1(1.0))
    with pytest.raises(ValueError, match="value .* or lipschitz"):
        SmoothLoss(lambda w: w)
    with pytest.raises(ValueError, match="x0 must have shape"):
        prox_grad(LeastSquares(X, y), proxlib.WeightedL1(1.0), x0=np.zeros(3))
    with pytest.raises(ValueError, match="check_every must be an integer >= 1"):  # was taken as 1, silently
        prox_grad(LeastSquares(X, y), proxlib.WeightedL1(1.0), check_every=0)
    # a step past 2/L without the line search: the iterates overflow; the error
    # says so (it was "r contains NaN or Inf", from the dual norm, naming no argument)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's overflow warnings on the way
        for crit in ("gap", "residual"):
            with pytest.raises(FloatingPointError, match="not finite at iteration .*lipschitz"):
                prox_grad(LeastSquares(X, y), proxlib.WeightedL1(1.0), line_search=False, lipschitz=1e-3, criterion=crit)
    Xc = X.copy()
    prox_grad(LeastSquares(Xc, y), proxlib.WeightedL1(1.0), max_iter=5)
    assert np.array_equal(Xc, X)  # inputs untouched


# ----------------------------------------------------------------------------- estimators


def _estimators():
    from proxlib.estimators import ExclusiveLassoRegression, GroupExclusiveRegression, GrOWLRegression, OWLRegression

    return [OWLRegression(), GrOWLRegression(), ExclusiveLassoRegression(), GroupExclusiveRegression()]


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: type(e).__name__)
def test_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed


def test_group_exclusive_estimator_reductions(diabetes):
    from proxlib.estimators import ExclusiveLassoRegression, GroupExclusiveRegression

    X, y = diabetes
    labels = np.repeat(np.arange(5), 2)
    ge1 = GroupExclusiveRegression(alpha=2.0, mu=1.0, groups=labels, tol=1e-13, max_iter=100_000).fit(X, y)
    ex = ExclusiveLassoRegression(alpha=2.0, groups=labels, tol=1e-13, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(ge1.coef_, ex.coef_, rtol=0, atol=1e-8)
    ge0 = GroupExclusiveRegression(alpha=2.0, mu=0.0, groups=labels, tol=1e-13, max_iter=100_000).fit(X, y)
    gl = prox_grad(LeastSquares(X, y), proxlib.GroupLasso(2.0, groups=labels), tol=1e-15, max_iter=100_000)
    np.testing.assert_allclose(ge0.coef_, gl.x, rtol=0, atol=1e-8)
    # the exclusive lasso keeps at least one feature of each group (it never zeroes a whole group)
    assert all(np.any(ex.coef_[labels == g] != 0) for g in range(5))


def test_estimator_parameter_errors(diabetes):
    from proxlib.estimators import ExclusiveLassoRegression, OWLRegression

    X, y = diabetes
    with pytest.raises(ValueError, match="alpha"):
        OWLRegression(alpha=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="weights must have one entry per feature"):
        OWLRegression(weights=np.ones(3)).fit(X, y)
    with pytest.raises(ValueError, match="non-increasing"):
        OWLRegression(weights=np.arange(10.0)).fit(X, y)
    with pytest.raises(ValueError, match="groups must be 10 integer labels"):
        ExclusiveLassoRegression(groups=[0, 1]).fit(X, y)
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        OWLRegression(alpha=0.01, tol=1e-16, max_iter=3).fit(X, y)
    # as scikit-learn's estimators: max_iter=0 fitted zeros (with a warning
    # saying "gap nan"), and any object passed for fit_intercept's truth value
    with pytest.raises(ValueError, match="max_iter"):
        OWLRegression(max_iter=0).fit(X, y)
    with pytest.raises(TypeError, match="fit_intercept"):
        OWLRegression(fit_intercept="no").fit(X, y)


def test_owl_estimator_default_weights_are_the_documented_linear_decay(diabetes):
    # weights=None: w_i = (n - i + 1)/n, times alpha
    from proxlib.estimators import OWLRegression

    X, y = diabetes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = OWLRegression(alpha=2.0, max_iter=5).fit(X, y)
    np.testing.assert_allclose(est.penalty_.weights, 2.0 * np.arange(10, 0, -1) / 10, rtol=1e-15, atol=0)


def test_estimators_accept_alpha_zero_and_give_least_squares(diabetes):
    # "alpha : float >= 0": alpha = 0 is ordinary least squares (no penalty)
    from proxlib.estimators import OWLRegression

    X, y = diabetes
    est = OWLRegression(alpha=0.0, tol=1e-12, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(est.coef_, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-6)


def test_exclusive_estimators_default_to_one_group_of_all_features(diabetes):
    # groups=None: "one group of all features", not one group per feature
    from proxlib.estimators import ExclusiveLassoRegression, GroupExclusiveRegression

    X, y = diabetes
    for make in (ExclusiveLassoRegression, GroupExclusiveRegression):
        est = make(alpha=0.5, max_iter=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        np.testing.assert_array_equal(est.penalty_.groups, np.zeros(10))


def test_optimality_residual_is_set_only_where_there_is_no_duality_gap(diabetes):
    # documented: optimality_residual_ is None where the solver stopped on the gap
    from proxlib.estimators import ExclusiveLassoRegression, OWLRegression

    X, y = diabetes
    owl = OWLRegression(alpha=1.0).fit(X, y)
    assert owl.dual_gap_ is not None and owl.optimality_residual_ is None
    ex = ExclusiveLassoRegression(alpha=1.0).fit(X, y)
    assert ex.dual_gap_ is None and ex.optimality_residual_ is not None


@given(prox_problems())
def test_planned_prox_equals_the_public_prox(problem):
    # the solver's prox with validation hoisted out of the loop computes the
    # same arithmetic as penalty.prox, bit for bit (ragged groups included)
    from proxlib._registry import Plan

    pen, v, step = problem
    plan = Plan(pen, v)
    for s in (step, 2.5 * step):
        np.testing.assert_array_equal(plan(v, s), pen.prox(v, s))
        assert plan(v, s).dtype == v.dtype


@pytest.mark.parametrize("pen", [proxlib.GroupLasso(0.3), proxlib.ExclusiveLasso(0.3), proxlib.GroupExclusive(0.3, 0.5)],
                         ids=lambda p: type(p).__name__)
def test_planned_prox_of_very_uneven_groups_is_not_padded(pen):
    # one group of n/2 entries and n/2 singletons: the plan padded them into
    # (n/2 + 1) x n/2 rows (here 32 MB for 32 KB of data; gigabytes from
    # n = 10^5), where the public prox solves them by size class
    import dataclasses
    import tracemalloc

    from proxlib._registry import Plan

    n = 4000
    v = np.random.default_rng(0).standard_normal(n)
    pen = dataclasses.replace(pen, groups=np.r_[np.zeros(n // 2, dtype=np.int64), np.arange(1, n // 2 + 1)])
    expected = pen.prox(v, 0.7)  # (first: the kernels compiled or loaded, untraced)
    tracemalloc.start()
    try:
        plan = Plan(pen, v)
        x = plan(v, 0.7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * v.nbytes
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("pen", [proxlib.GroupLasso(0.5), proxlib.ExclusiveLasso(0.5)], ids=lambda p: type(p).__name__)
def test_prox_grad_with_very_uneven_groups_is_not_padded(pen):
    # its plan, the gap's dual norm and value and the certificate of its
    # result (the residual criterion's at every check) each padded one group
    # of 2000 features and 2000 singletons into 2001 x 2000 rows
    import dataclasses
    import tracemalloc

    rng = np.random.default_rng(1)
    n_feat = 4000
    A, b = rng.standard_normal((20, n_feat)), rng.standard_normal(20)
    pen = dataclasses.replace(pen, groups=np.r_[np.zeros(n_feat // 2, dtype=np.int64), np.arange(1, n_feat // 2 + 1)])
    prox_grad(LeastSquares(A, b), pen, max_iter=10)  # (first: the kernels compiled or loaded, untraced)
    tracemalloc.start()
    try:
        prox_grad(LeastSquares(A, b), pen, max_iter=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * A.nbytes


def test_planned_ragged_positions_are_exact_integers():
    # the plan's map from entries to the padded rows was built from an arange
    # in x's float dtype: above 2^24 entries (float32) positions were rounded,
    # gathering the wrong entries or indexing past the end.  float16 rounds
    # from 2^11 on, which keeps the check small.
    torch = pytest.importorskip("torch")
    from proxlib._registry import Plan

    n = 2**11 + 3
    groups = np.zeros(n, dtype=np.int64)
    groups[-2:] = 1
    plan = Plan(proxlib.GroupLasso(0.3, groups=groups), torch.zeros(n, dtype=torch.float16))
    plan._ragged_rows(torch.zeros(n, dtype=torch.float16))  # (the map, made at the first call that needs it)
    mask, index = plan._gather
    assert index[0, : n - 2].tolist() == list(range(n - 2))
    assert index[1, :2].tolist() == [n - 2, n - 1]
    assert int(mask.sum()) == n


def test_unpenalised_feature_falls_back_to_the_residual(diabetes):
    # a zero weight makes the dual norm infinite wherever the gradient does not
    # vanish exactly on that feature: the solver certifies with the residual
    X, y = diabetes
    w = np.full(X.shape[1], 0.5)
    w[2] = 0.0
    res = prox_grad(LeastSquares(X, y), proxlib.WeightedL1(w), tol=1e-13, max_iter=100_000)
    assert res.converged and res.criterion == "residual" and res.gap is None
    g = X.T @ (X @ res.x - y) / len(y)
    assert abs(g[2]) <= 1e-9 * np.abs(X.T @ y).max() / len(y)  # stationary in the free direction
    assert res.x[2] != 0


def test_readme_solver_snippet_runs(diabetes):
    """The README's prox_grad example, given its X, y and weights."""
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    anchor = text.index("from proxlib.solvers import LeastSquares, prox_grad")
    code = text[anchor : text.index("```", anchor)]
    X, y = diabetes
    ns = {"proxlib": proxlib, "X": X, "y": y, "weights": proxlib.owl_weights_oscar(X.shape[1], 0.1, 0.01)}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["res"].converged and ns["res"].criterion == "gap"


def test_default_tol_of_float64_data_is_1e_10():
    """prox_grad's documented default: 1e-10 for float64 data (1e-5 only for float32)."""
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((40, 12)), rng.standard_normal(40)
    res = prox_grad(LeastSquares(A, b), proxlib.WeightedL1(0.05), check_every=1)
    assert res.converged and res.criterion == "gap"
    assert res.history[-1][1] <= 1e-10
    assert any(crit > 1e-10 for _, crit in res.history)  # (it did not stop at its first check)


def test_line_search_constant_satisfies_the_documented_condition():
    """Backtracking doubles L until f(x+) <= f(y) + <grad f(y), d> + L/2 ||d||^2:
    for f(x) = 1/4 ((x - 3)^2 + (x - 1)^2) the excess is d^2 / 2 exactly, so
    from L = 2^-10 the search ends at L = 1, the gradient's constant (a
    condition without the 1/2 stopped at 0.5: steps of twice 1/L)."""
    res = prox_grad(LeastSquares(np.ones((2, 1)), np.array([3.0, 1.0])), proxlib.WeightedL1(0.1), lipschitz=2.0**-10)
    assert res.lipschitz == 1.0
    assert res.converged and res.x.tolist() == pytest.approx([1.9], abs=1e-12)


def test_residual_is_reported_when_stopping_on_the_gap():
    """SolverResult.residual is the optimality residual at x, computed at the
    end also where the checks compared the duality gap."""
    rng = np.random.default_rng(1)
    A, b = rng.standard_normal((30, 8)), rng.standard_normal(30)
    pen = proxlib.GroupLasso(0.1, groups=np.repeat(np.arange(4), 2))
    res = prox_grad(LeastSquares(A, b), pen)
    assert res.converged and res.criterion == "gap" and res.gap is not None
    t = 1.0 / res.lipschitz
    g = A.T @ (A @ res.x - b) / len(b)
    assert res.residual == pytest.approx(proxlib.optimality_residual(pen, res.x - t * g, res.x, t), rel=1e-6, abs=1e-15)
    assert 0.0 <= res.residual <= 1e-8

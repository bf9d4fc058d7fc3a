"""proxlib.testing used as another library's test suite would: on skglm, modopt and
pyproximal (the ``bench`` extra; skipped where not installed) and on deliberately wrong
proxes, which must fail with a message that says where.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxlib
from proxlib.testing import (
    assert_prox_close,
    float_arrays,
    nonincreasing_weights,
    operator_names,
    penalties,
    prox_problems,
    steps,
)

# ----------------------------------------------------------------------------- the helper itself


@given(prox_problems())
def test_passes_on_proxlib_own_answer_for_every_operator(problem):
    pen, v, step = problem
    assert_prox_close(pen, v, pen.prox(v, step), step)


@given(prox_problems(dtype=np.float64, ragged=False))
def test_strategies_draw_valid_problems(problem):
    pen, v, step = problem
    assert v.dtype == np.float64 and step > 0 and np.all(np.isfinite(v))
    assert type(pen) in {op.penalty for op in proxlib.OPERATORS.values()}
    pen.prox(v, step)  # parameters fit the input (weights' length, group weights' length)


@given(st.integers(1, 30).flatmap(nonincreasing_weights))
def test_weights_strategy_is_nonincreasing(w):
    assert np.all(w >= 0) and np.all(np.diff(w) <= 0)


def test_every_operator_has_a_strategy():
    for name in operator_names():
        assert penalties(name, (3, 2)) is not None


def test_message_names_residual_reference_and_where():
    pen = proxlib.OWL(np.array([3.0, 2.0, 1.0, 0.0]))
    v = np.array([3.0, -1.0, 2.0, 0.5])
    x = pen.prox(v)
    x[2] += 1e-6
    with pytest.raises(AssertionError) as info:
        assert_prox_close(pen, v, x, err_msg="my OWL prox")
    msg = str(info.value)
    assert "my OWL prox" in msg and "optimality residual" in msg and "tolerance" in msg
    assert "(2,)" in msg and "reference" in msg and "max |x - reference| = 1.000e-06" in msg
    # ragged groups: the failing group is named by its label
    gl = proxlib.GroupLasso(0.5, groups=np.array([7, 3, 7, 3]))
    v = np.array([1.0, 2.0, -1.0, 0.1])
    x = gl.prox(v)
    x[1] *= 1.01
    with pytest.raises(AssertionError, match="worst group: label 3"):
        assert_prox_close(gl, v, x)


def test_message_describes_the_penalty_by_its_public_fields():
    """The penalty is described by its parameters as a user gives them: OWL's
    derived ``_top`` field was listed, and integer group labels printed as
    floats (``groups=[7., 3., 7., 3.]``)."""
    pen = proxlib.OWL(np.array([3.0, 2.0, 1.0]))
    v = np.array([3.0, 1.0, 2.0])
    x = pen.prox(v)
    x[0] += 0.1
    with pytest.raises(AssertionError, match=r"for OWL\(weights=\[3\., 2\., 1\.\] \(3\)\), step"):
        assert_prox_close(pen, v, x)
    gl = proxlib.GroupLasso(0.5, groups=np.array([7, 3, 7, 3]))
    v = np.array([1.0, 2.0, -1.0, 0.1])
    x = gl.prox(v)
    x[1] *= 1.01
    with pytest.raises(AssertionError, match=r"GroupLasso\(lam=0\.5, groups=\[7, 3, 7, 3\] \(4\)\)"):
        assert_prox_close(gl, v, x)


def test_accepts_a_tiny_nonzero_where_the_prox_is_zero():
    # the subdifferential of |.| jumps at 0, so the residual of 1e-300 instead of
    # 0 is large; the comparison with the reference accepts it
    pen, v = proxlib.WeightedL1(1.0), np.array([0.5, 3.0])
    x = np.array([1e-300, 2.0])
    assert proxlib.optimality_residual(pen, v, x) > 0.1
    assert_prox_close(pen, v, x)


@pytest.mark.parametrize("dtype,k", [(np.float32, -20), (np.float64, -60)])  # prox_problems' smallest scales
@pytest.mark.parametrize("pen", [proxlib.WeightedL1(1.0), proxlib.GroupLasso(1.0)], ids=repr)
def test_comparison_with_the_reference_is_at_the_data_scale(pen, dtype, k):
    # data far below the thresholds: the prox is 0.  The comparison with the
    # reference allowed tolerance * (max|v| + step * threshold), so x = v and
    # x = v / 2 passed (prox_problems draws such scales)
    v = (np.array([3.0, -1.0, 0.5, 2.0]) * 2.0**k).astype(dtype)
    assert not np.any(pen.prox(v))
    assert_prox_close(pen, v, pen.prox(v))
    for wrong in (v.copy(), v / 2):
        with pytest.raises(AssertionError, match="tolerance \\* max\\|v\\|"):
            assert_prox_close(pen, v, wrong)


def test_mixed_libraries_are_compared_on_the_host():
    torch = pytest.importorskip("torch")
    pen = proxlib.GrOWL(np.array([1.0, 0.5]))
    W = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert_prox_close(pen, torch.from_numpy(W), pen.prox(W))
    with pytest.raises(AssertionError):
        assert_prox_close(pen, torch.from_numpy(W), W)


@pytest.mark.parametrize("name", ["group_lasso", "exclusive_lasso", "owl", "lp"])
def test_mixed_libraries_keep_the_less_precise_dtype(name):
    # a float32 torch result checked against NumPy data was brought to the host
    # in float64, so its tolerance was float64's and proxlib's own float32 prox
    # failed (residual 1.8e-8 > tolerance 2.1e-14 for the group lasso)
    torch = pytest.importorskip("torch")
    v = np.random.default_rng(0).standard_normal((6, 5))
    pen = {
        "group_lasso": proxlib.GroupLasso(0.3),
        "exclusive_lasso": proxlib.ExclusiveLasso(0.4),
        "owl": proxlib.OWL(np.linspace(1.0, 0.1, 30)),
        "lp": proxlib.Lp(0.3, 0.5),
    }[name]
    for dtype in (torch.float32, torch.bfloat16):
        x = pen.prox(torch.from_numpy(v).to(dtype))
        for data in (v, v.astype(np.float32), v.tolist()):
            assert_prox_close(pen, data, x)
    x = pen.prox(torch.from_numpy(v).float())
    with pytest.raises(AssertionError):  # still at float32's precision, not less
        assert_prox_close(pen, v, x + 1e-2)


# ----------------------------------------------------------------------------- wrong proxes fail


@given(st.integers(1, 5), st.integers(2, 6), st.data())
def test_thesis_exclusive_step_fails(G, m, data):
    W = data.draw(float_arrays((G, m), np.float64, extreme=False))
    lam, step = data.draw(st.floats(0.05, 3.0)), data.draw(steps())
    pen = proxlib.ExclusiveLasso(lam)
    thesis = proxlib.prox_exclusive_lasso_thesis(W, lam, step)
    exact = pen.prox(W, step)
    if np.abs(thesis - exact).max() <= 1e-9 * np.abs(W).max():
        assert_prox_close(pen, W, thesis, step)  # they agree where every row is zeroed
    else:
        with pytest.raises(AssertionError, match="ExclusiveLasso"):
            assert_prox_close(pen, W, thesis, step)


def test_thesis_exclusive_step_fails_on_the_docstring_example():
    W = np.array([[3.0, 1.0, -0.5]])
    with pytest.raises(AssertionError, match="worst group: label 0"):
        assert_prox_close(proxlib.ExclusiveLasso(0.5), W, proxlib.prox_exclusive_lasso_thesis(W, 0.5))


@given(prox_problems("owl", np.float64))
def test_owl_without_pooling_fails(problem):
    # a classic bug: sorted soft thresholding without the isotonic (pooling) step
    pen, v, step = problem
    w = np.asarray(pen.weights)
    order = np.argsort(-np.abs(v).ravel(), kind="stable")
    mags = np.empty(v.size)
    mags[order] = np.maximum(np.abs(v).ravel()[order] - step * w, 0.0)
    x = (np.sign(v).ravel() * mags).reshape(v.shape)
    exact = pen.prox(v, step)
    if np.abs(x - exact).max() > 1e-9 * max(np.abs(v).max(), step * w.max(initial=0.0)):
        with pytest.raises(AssertionError):
            assert_prox_close(pen, v, x, step)


# ----------------------------------------------------------------------------- peers (bench extra)


def _peer_owl(peer, w):
    """The OWL prox of a peer as a function (v, step) -> x."""
    if peer == "skglm":
        from skglm.penalties import SLOPE

        return lambda v, step: SLOPE(w).prox_vec(v, step)
    from modopt.opt.proximity import OrderedWeightedL1Norm

    return lambda v, step: OrderedWeightedL1Norm(w).op(v, extra_factor=step)


@pytest.mark.parametrize("peer", ["skglm", "modopt"])
@settings(max_examples=20)
@given(problem=prox_problems("owl", np.float64, max_size=20))
def test_peer_owl_proxes(peer, problem):
    pytest.importorskip(peer)
    pen, v, step = problem
    v = v.ravel()
    if peer == "modopt" and v.size == 1:  # modopt squeezes a 1-element input to 0-d and fails (test below)
        return
    x = _peer_owl(peer, np.asarray(pen.weights, dtype=np.float64))(v, step)
    assert_prox_close(pen, v, np.reshape(x, v.shape), step, err_msg=f"{peer} OWL prox")


def _ordinary(a):
    """Entries of magnitude below 1e-3 set to 0: the peers below are checked at
    ordinary scales here, their behaviour at tiny ones in the tests after."""
    return np.where(np.abs(a) < 1e-3, 0.0, a)


@pytest.mark.parametrize("p", [0.5, 2.0 / 3.0])
@settings(max_examples=20)
@given(v=float_arrays(st.tuples(st.integers(1, 12)), np.float64), lam=st.floats(0.01, 3.0), step=steps())
def test_skglm_lp_proxes(p, v, lam, step):
    pytest.importorskip("skglm")
    from skglm.penalties import L0_5, L2_3

    skpen = L0_5(lam) if p == 0.5 else L2_3(lam)
    x = np.array([skpen.prox_1d(float(vi), step, 0) for vi in v])
    # p = 1/2 is accurate to the last bits.  skglm's closed form for p = 2/3
    # cancels when step * lam is small against |v|: measured residuals up to
    # 3e-6 (step * lam = 7.6e-5, |v| = 8), 4e-11 at step * lam ~ 1
    rtol = None if p == 0.5 else 1e-4
    assert_prox_close(proxlib.Lp(lam, p), v, x, step, rtol=rtol, err_msg=f"skglm {type(skpen).__name__}")


def test_skglm_l2_3_is_flagged_at_the_rounding_level():
    pytest.importorskip("skglm")
    from skglm.penalties import L2_3

    # 5 digits lost: x = 8.01622... differs from the prox in the 6th digit
    v = np.array([-8.01658787])
    x = np.array([L2_3(0.001103874976393527).prox_1d(float(v[0]), 0.06850792224898491, 0)])
    with pytest.raises(AssertionError, match="skglm L2_3") as info:
        assert_prox_close(proxlib.Lp(0.001103874976393527, 2.0 / 3.0), v, x, 0.06850792224898491, err_msg="skglm L2_3")
    assert proxlib.optimality_residual(proxlib.Lp(0.001103874976393527, 2.0 / 3.0), v, x, 0.06850792224898491) > 1e-7, str(info.value)


@settings(max_examples=20)
@given(W=float_arrays(st.tuples(st.integers(1, 4), st.integers(1, 5)), np.float64, extreme=False), lam=st.floats(0.0, 3.0), step=steps())
def test_modopt_group_lasso_and_soft_threshold(W, lam, step):
    pytest.importorskip("modopt")
    from modopt.opt.linear import Identity
    from modopt.opt.proximity import GroupLASSO, SparseThreshold

    W = _ordinary(W)
    # modopt's groups are the columns (norm over axis 0)
    x = GroupLASSO(weights=lam).op(W, extra_factor=step)
    assert_prox_close(proxlib.GroupLasso(lam), W.T, x.T, step, err_msg="modopt GroupLASSO")
    # modopt rounds the soft threshold to 15 decimals (absolute, 5e-16): at scales
    # >= 1e-3 that is within 1e-12 relative
    x = SparseThreshold(Identity(), lam, thresh_type="soft").op(W, extra_factor=step)
    assert_prox_close(proxlib.WeightedL1(lam), W, x, step, rtol=1e-12, err_msg="modopt SparseThreshold")


def test_modopt_defects_at_small_scales_are_flagged():
    pytest.importorskip("modopt")
    from modopt.opt.linear import Identity
    from modopt.opt.proximity import GroupLASSO, OrderedWeightedL1Norm, SparseThreshold

    # soft thresholding rounded to 15 decimals: at 1e-10 only 5 digits are left
    v = np.array([1.234567891234e-10, -3.1e-11])
    x = SparseThreshold(Identity(), 1e-11, thresh_type="soft").op(v)
    with pytest.raises(AssertionError, match="modopt SparseThreshold"):
        assert_prox_close(proxlib.WeightedL1(1e-11), v, x, err_msg="modopt SparseThreshold")
    # group norms floored at float32's eps: a group of norm 1.4e-9 below the
    # threshold 1e-8 must be zeroed, modopt keeps 92% of it
    W = np.array([[1e-9], [1e-9]])
    x = GroupLASSO(weights=1e-8).op(W)
    assert np.all(x != 0)
    with pytest.raises(AssertionError, match="modopt GroupLASSO"):
        assert_prox_close(proxlib.GroupLasso(1e-8), W.T, x.T, err_msg="modopt GroupLASSO")
    # one entry: np.squeeze makes it 0-d
    with pytest.raises(ValueError):
        OrderedWeightedL1Norm(np.array([1.0])).op(np.array([3.0]))


@settings(max_examples=20)
@given(W=float_arrays(st.tuples(st.integers(1, 4), st.integers(1, 5)), np.float64), sigma=st.floats(0.0, 3.0), tau=steps())
def test_pyproximal_l1_and_l21(W, sigma, tau):
    pytest.importorskip("pyproximal")
    from pyproximal import L1, L21

    x = L1(sigma=sigma).prox(W.ravel(), tau)
    assert_prox_close(proxlib.WeightedL1(sigma), W.ravel(), x, tau, err_msg="pyproximal L1")
    # L21(ndim): x.reshape(ndim, -1), groups are the columns
    G, m = W.shape
    underflows = np.sum(W**2, axis=0) == 0  # (as pyproximal forms the groups' norms)
    if (sigma == 0 and np.any(underflows)) or np.any(underflows & np.any(W != 0, axis=0)):
        # 0/0 in pyproximal (test below): a zero group, or one whose sum of
        # squares underflows to 0 as pyproximal forms it (entries below about
        # 1e-162; the long profile found a group of 3.3e-283); with sigma > 0
        # pyproximal zeroes a nonzero group whose squares underflow, which
        # proxlib.testing flags (test_pyproximal_underflowing_groups_are_flagged)
        return
    x = L21(ndim=G, sigma=sigma).prox(W.ravel(), tau).reshape(G, m)
    assert_prox_close(proxlib.GroupLasso(sigma), W.T, x.T, tau, err_msg="pyproximal L21")


def test_pyproximal_underflowing_groups_are_flagged():
    """pyproximal's L21 forms a group's norm from its plain sum of squares,
    which underflows to 0 for entries below about 1e-162: a group of
    1.5e-294 under a threshold of 1.7e-304 (its prox keeps all but 1e-10 of
    it) comes back 0, and assert_prox_close says so (the long profile drew
    this case)."""
    pytest.importorskip("pyproximal")
    from pyproximal import L21

    W = np.array([[1.52591495e-294]])
    x = L21(ndim=1, sigma=1.6529804086642734e-304).prox(W.ravel(), 1.0).reshape(1, 1)
    assert np.all(x == 0)
    with pytest.raises(AssertionError, match="pyproximal L21"):
        assert_prox_close(proxlib.GroupLasso(1.6529804086642734e-304), W.T, x.T, 1.0, err_msg="pyproximal L21")


def test_pyproximal_l21_zero_group_without_penalty_gives_nan():
    pytest.importorskip("pyproximal")
    from pyproximal import L21

    W = np.array([[0.0, 1.0], [0.0, 2.0]])
    with np.errstate(invalid="ignore"):
        x = L21(ndim=2, sigma=0.0).prox(W.ravel(), 1.0).reshape(2, 2)
    with pytest.raises(AssertionError, match="NaN or Inf entries"):
        assert_prox_close(proxlib.GroupLasso(0.0), W.T, x.T, err_msg="pyproximal L21")
def test_pyproximal_l0_thresholds_at_tau_sigma_not_sqrt_2_tau_sigma():
    # pyproximal documents L0(sigma).prox(x, tau) as prox_{tau sigma ||.||_0} =
    # hard(x, tau sigma); the prox of tau sigma ||x||_0 thresholds at
    # sqrt(2 tau sigma).  The certificate flags it; the operator it computes is
    # the prox of (tau sigma)^2 / 2 ||x||_0.
    pytest.importorskip("pyproximal")
    from pyproximal import L0

    sigma, tau = 1.0, 1.0
    v = np.array([1.2, -0.3, 2.0])  # 1 < 1.2 < sqrt(2): kept by pyproximal, zeroed by the prox
    x = L0(sigma=sigma).prox(v, tau)
    with pytest.raises(AssertionError, match=r"worst entry \(0,\)"):
        assert_prox_close(proxlib.Lp(sigma, 0.0), v, x, tau, err_msg="pyproximal L0")
    assert_prox_close(proxlib.Lp((tau * sigma) ** 2 / 2, 0.0), v, x, 1.0)


def _snippets_of_the_testing_example():
    """The README's and proxlib.testing's docstring example (a 1-D SLOPE prox)."""
    import pathlib
    import textwrap

    import proxlib.testing as T

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    anchor = readme.index("from proxlib.testing import assert_prox_close, prox_problems")
    yield readme[anchor : readme.index("```", anchor)]
    doc = T.__doc__
    anchor = doc.index("    from proxlib.testing import assert_prox_close, prox_problems")
    yield textwrap.dedent(doc[anchor : doc.index("``assert_prox_close`` needs", anchor)])


@pytest.mark.parametrize("code", list(_snippets_of_the_testing_example()), ids=["README", "docstring"])
def test_documented_example_runs_with_a_one_dimensional_slope_prox(code):
    # a SLOPE prox such as skglm's takes a vector (1-D v, one weight per entry);
    # prox_problems("owl") also draws 2-D arrays, which the example must flatten
    def my_slope_prox(v, w):
        if np.ndim(v) != 1:
            raise IndexError(f"a SLOPE prox takes a vector, got shape {np.shape(v)}")
        return proxlib.OWL(w).prox(v)

    ns = {"my_slope_prox": my_slope_prox}
    exec(compile("from hypothesis import given, settings\n" + code, "example", "exec"), ns)
    ns["test_my_slope_prox"]()

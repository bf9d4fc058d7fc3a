"""OWL and isotonic regression as device code: ``_gpu_owl`` on NumPy and torch, and its Triton kernel.

``proxlib.backends._gpu_owl`` is one namespace-generic implementation (NumPy,
CuPy, torch on any device).  Its merge rounds bridge convex runs either with
array code (``bridge="array"``) or with one Triton kernel per round
(``bridge="triton"``, what CUDA torch tensors use).  CI has no GPU, so every
test here runs on NumPy arrays and CPU torch tensors, and the Triton kernel runs
in Triton's interpreter, which executes the same kernel source:

* paths ``numpy`` (array bridge), ``torch-array`` and ``torch-triton`` against
  SciPy's PAVA (isotonic step), the NumPy reference OWL, and an exact OWL in
  rational arithmetic (tight, dtype-derived tolerances), on Hypothesis inputs
  with ties, zeros, weight plateaus, scales from the smallest subnormals to
  near the largest finite value, float32 and float64;
* the issue-11 defects on this path: supports decided exactly where the
  rounding of ``|v| - w`` decides them, pooled values inside their block's
  range (zero weights return v bit for bit, 1e308 included), tied magnitudes
  with identical outputs;
* the two bridges agree bit for bit (same arithmetic, FMA contraction off);
* the kernel compiles for sm_90 (Triton's own compiler, no GPU needed);
* launches and host synchronisations per call, counted with torch's
  dispatcher on the code path CUDA runs: O(1) per round, one scalar read per
  round, rounds <= 2 log2(n) + 2, so O(log n) in all.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import pathlib
import sys
from fractions import Fraction

import _cvx as R
import _device
import _procs
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import isotonic_regression

import proxlib
from proxlib._dispatch import array_namespace
from proxlib.backends import _gpu_owl, numpy_ref

try:
    import torch
except ImportError:  # the NumPy path is still tested
    torch = None

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
needs_triton = pytest.mark.skipif(torch is None or not HAS_TRITON, reason="triton (and torch) not installed")

PATHS = [
    pytest.param(("numpy", "array"), id="numpy"),
    pytest.param(("torch", "array"), id="torch-array", marks=needs_torch),
    pytest.param(("torch", "triton"), id="torch-triton", marks=needs_triton),
]
POLICIES = [
    pytest.param({}, id="auto"),  # the path's default
    pytest.param({"peel_density": 0, "merge": "pairs"}, id="pairs"),  # merges only, provably halving
    pytest.param({"peel_density": 0, "merge": "all"}, id="all"),
    pytest.param({"peel_density": 8}, id="peel8"),
    pytest.param({"peel_density": 10**9}, id="peel"),  # pool-adjacent-violators in parallel
]
TOL = {np.float64: 1e-12, np.float32: 1e-5}
EPS = {np.float64: np.finfo(np.float64).eps, np.float32: np.finfo(np.float32).eps}
TINY = {np.float64: 2.0**-1074, np.float32: 2.0**-149}  # subnormal spacing
BACKENDS = pathlib.Path(proxlib.__file__).parent / "backends"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Two xdist workers on two cores: torch's own threads would only fight."""
    if torch is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _to(kind, a):
    """``a`` on the path's array library: a copy, a torch tensor on the tests'
    device (CPU, or ``PROXLIB_TEST_DEVICE``: see ``_device.py``)."""
    return _device.tensor(a) if kind == "torch" else np.array(a)


def _back(x):
    return _device.to_numpy(x) if torch is not None and isinstance(x, torch.Tensor) else np.asarray(x)


def _owl(path, v, w, **policy):
    """Run ``_gpu_owl.owl`` on the path; check the result's type/dtype/shape and that inputs are untouched."""
    kind, bridge = path
    vd, wd = _to(kind, v), _to(kind, w)
    x = _gpu_owl.owl(vd, wd, bridge=bridge, **policy)
    assert type(x) is type(vd) and x.dtype == vd.dtype and tuple(x.shape) == tuple(v.shape)
    if kind == "torch":
        assert x.device == vd.device
    np.testing.assert_array_equal(_back(vd), v)
    np.testing.assert_array_equal(_back(wd), w)
    return _back(x)


def _iso(path, u, **policy):
    kind, bridge = path
    ud = _to(kind, u)
    got = _gpu_owl.isotonic_increasing(ud, bridge=bridge, **policy)
    assert type(got) is type(ud)
    np.testing.assert_array_equal(_back(ud), u)
    return _back(got)


def _scale(*arrays_):
    return max([float(np.max(np.abs(a.astype(np.float64)), initial=0.0)) for a in arrays_] + [1e-300])


# ------------------------------------------------------------ exact reference


def _check_against_exact(x, v, w):
    """``x`` is the exact prox rounded, up to the float64 pipeline's error.

    Block sums are accurate to a few ulps of the sum (compensated prefix sums),
    so block means are within a few ulps of exact; a block the rounding pools
    or splits differently has means within that error of its neighbours, so
    values move by at most a few float64 ulps of the problem's scale: the
    bound is 4 ulps of the value in the input's dtype (float32 is computed in
    float64 and rounded once) plus 16 float64 ulps of the scale plus one
    subnormal spacing.  Zero patterns agree wherever the exact value is above
    that bound.
    """
    dtype = v.dtype.type
    exact = R.exact_owl(v, w)  # rational arithmetic, correctly rounded to float64
    n = v.size
    scale = _scale(v, w)
    tol = 4 * EPS[dtype] * np.abs(exact) + 16 * EPS[np.float64] * scale + TINY[dtype]
    err = np.abs(x.astype(np.float64) - exact)
    assert np.all(err <= tol), (x, exact, err, tol)
    clear = np.abs(exact) > tol
    assert np.array_equal((x != 0)[clear], (exact != 0)[clear]), (x, exact)


# ------------------------------------------------------------------ strategies

_POOL = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0]
# Largest scales keep |v| (<= 10) and w (<= 3) finite: 1.7e307 * 10 < 1.8e308.
_SCALES64 = [2.0**-1074, 1e-310, 1e-300, 1e-150, 1e-20, 1.0, 1e20, 1e150, 1e300, 1.7e307]
_SCALES32 = [2.0**-149, 1e-42, 1e-38, 1e-20, 1e-3, 1.0, 1e3, 1e20, 3.4e37]


def _elements():
    return st.one_of(st.sampled_from(_POOL), st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False))


@st.composite
def owl_problems(draw, max_size=40):
    """(v, w) of one dtype: ties, zeros, constant vectors, weight plateaus, any scale."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n = draw(st.integers(1, max_size))
    v = draw(arrays(np.float64, n, elements=_elements()))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        v = np.full(n, draw(st.sampled_from([0.0, 1.0, -2.5])))  # all equal
    elif kind == 1:
        v = np.round(v)  # many ties and zeros
    if draw(st.booleans()):  # plateaus of equal weights
        levels = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=1, max_size=4))
        w_el = st.sampled_from(levels)
    else:
        w_el = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 3.0, allow_subnormal=False))
    w = np.array(sorted(draw(st.lists(w_el, min_size=n, max_size=n)), reverse=True))
    scale = draw(st.sampled_from(_SCALES64 if dtype == np.float64 else _SCALES32))
    return (v * scale).astype(dtype), (w * scale).astype(dtype)


@st.composite
def isotonic_inputs(draw, max_size=60):
    n = draw(st.integers(0, max_size))
    u = draw(arrays(np.float64, n, elements=_elements()))
    kind = draw(st.integers(0, 3))
    if kind == 1:
        u = np.sort(u)[::-1].copy()  # decreasing: everything pools
    elif kind == 2:
        u = np.cumsum(u)  # long monotone runs with occasional violators
    return u * draw(st.sampled_from([1e-300, 1e-150, 1e-20, 1.0, 1e20, 1e150, 1e300]))


# ------------------------------------------------------- isotonic regression


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("path", PATHS)
@given(u=isotonic_inputs())
def test_isotonic_matches_scipy_pava(path, policy, u):
    got = _iso(path, u, **policy)
    ref = isotonic_regression(u).x if u.size else np.zeros(0)
    assert got.shape == u.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * _scale(u))


@pytest.mark.parametrize("path", PATHS)
@given(u=isotonic_inputs())
def test_isotonic_blocks_are_a_partition_with_clamped_increasing_means(path, u):
    kind, bridge = path
    V, means = _gpu_owl.isotonic_blocks(_to(kind, u), bridge=bridge)
    V, means = _back(V), _back(means)
    assert V[0] == 0 and V[-1] == u.size and np.all(np.diff(V) > 0)
    assert means.shape == (V.size - 1,)
    assert np.all(np.diff(means) > -1e-12 * _scale(u))
    # each block's value is its mean, to a few ulps of the block's own scale
    # plus n eps^2 of the largest prefix sum (the compensated sums' guarantee),
    # and lies between the block's first and last entries (the clamp)
    floor = u.size**2 * np.finfo(float).eps ** 2 * 10 * _scale(u)
    for k in range(means.size):
        block = u[V[k] : V[k + 1]]
        assert abs(means[k] - math.fsum(block) / block.size) <= 1e-13 * _scale(block) + floor
        assert min(block[0], block[-1]) <= means[k] <= max(block[0], block[-1])


@pytest.mark.parametrize("path", PATHS[:2])
@pytest.mark.parametrize("scale", [1e-300, 1.0, 1e300])
def test_isotonic_blocks_overwrite_input_gives_the_same_blocks(path, scale):
    """``overwrite_input=True`` (float64: u is the scratch, scaled by 2^k in
    place) gives the blocks and means of the default call, bit for bit:
    the block ends read back from u are unscaled before the clamp."""
    kind, _ = path
    u = np.array([3.0, 1.0, 2.0, 5.0, 4.0, -1.0, 0.5, 7.0, 7.0, 6.0]) * scale
    V, means = (_back(a) for a in _gpu_owl.isotonic_blocks(_to(kind, u)))
    V2, means2 = (_back(a) for a in _gpu_owl.isotonic_blocks(_to(kind, u), overwrite_input=True))
    np.testing.assert_array_equal(V2, V)
    np.testing.assert_array_equal(means2, means)
    np.testing.assert_allclose(means2[np.cumsum(np.isin(np.arange(u.size), V[1:-1]))], isotonic_regression(u).x, rtol=1e-15)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "u, V, means",
    [([1.0, 2.0, 0.0], [0, 3], [1.0]), ([0.0, 3.0, 1.0, 2.0, 4.0], [0, 1, 4, 5], [0.0, 2.0, 4.0]), ([5.0, 1.0, 3.0], [0, 3], [3.0])],
)
def test_isotonic_blocks_pool_neighbours_of_equal_mean(path, u, V, means):
    """Blocks whose exact means are equal are one block (module doc: the
    reflex test pools ties, so the chains are strictly convex and the means
    strictly increasing): [1], [2, 0] (means 1 and 1) are the block [1, 2, 0].
    (With the reflex test ``>`` the two blocks stayed apart: the same fitted
    values, but two blocks of one mean.)"""
    kind, bridge = path
    for policy in POLICIES:
        got_V, got_means = _gpu_owl.isotonic_blocks(_to(kind, np.array(u)), bridge=bridge, **policy.values[0])
        assert _back(got_V).tolist() == V and _back(got_means).tolist() == means, policy.id


def test_a_round_that_deletes_no_vertex_raises_instead_of_looping(monkeypatch):
    """Every round deletes a vertex (a peel its reflex ones, a merge at least
    one per bridge), so the rounds end; a defect that broke that (a merge
    kernel storing its cuts one place off did) looped forever.  _hull now
    raises as soon as a round leaves the chain as long as it was."""
    monkeypatch.setattr(_gpu_owl, "_bridge_cuts_array",
                        lambda P, eg, J, pairwise, xp, dev, stats=None: xp.zeros((2, eg.shape[0] + 2), dtype=xp.int32))
    u = np.array([3.0, 1.0, 2.0, 5.0, 4.0, -1.0, 0.5, 7.0, 7.0, 6.0])
    with pytest.raises(RuntimeError, match="deleted none"):
        _gpu_owl.isotonic_blocks(u, bridge="array", peel_density=0)
    monkeypatch.undo()
    V, means = _gpu_owl.isotonic_blocks(u, bridge="array", peel_density=0)
    np.testing.assert_allclose(means[np.cumsum(np.isin(np.arange(u.size), V[1:-1]))], isotonic_regression(u).x, rtol=1e-15)


def _adversarial(n, rng):
    k = np.arange(n, dtype=np.float64)
    nested = np.zeros(n)
    step = 1
    while step < n:  # violators at every scale: a merge tree of depth log2(n)
        nested -= (np.arange(n) // step) % 2 * step
        step *= 2
    return {
        "chain_then_drop": np.concatenate([k[:-1], [-1e9]]),  # one violator, O(n) peels
        "jump_then_chain": np.concatenate([[1e9], k[:-1]]),
        "decreasing": -k,
        "increasing": k.copy(),
        "sawtooth": (k % 37) - 0.9 * (k // 37),
        "nested": nested,
        "walk": np.cumsum(rng.standard_normal(n)),
        "noise": rng.standard_normal(n),
        "ties": np.repeat(rng.standard_normal(n // 8 + 1), 8)[:n],
    }


@pytest.mark.parametrize(
    "path, n",
    [
        pytest.param(("numpy", "array"), 1000, id="numpy-1000"),
        pytest.param(("numpy", "array"), 20000, id="numpy-20000"),
        pytest.param(("torch", "array"), 1000, id="torch-array-1000", marks=needs_torch),
        pytest.param(("torch", "triton"), 1000, id="torch-triton-1000", marks=needs_triton),
    ],
)
def test_isotonic_rounds_are_logarithmic_on_adversarial_inputs(path, n):
    rng = np.random.default_rng(n)
    log2n = math.ceil(math.log2(n))
    policies = [{}, {"peel_density": 0, "merge": "pairs"}, {"peel_density": 0, "merge": "all"}]
    if path[1] == "triton":  # interpreted: its default ("all", pairwise fallback) and the provably halving one
        policies = policies[:2]
    for name, u in _adversarial(n, rng).items():
        for policy in policies:
            stats: dict = {}
            kind, bridge = path
            got = _back(_gpu_owl.isotonic_increasing(_to(kind, u), bridge=bridge, stats=stats, **policy))
            np.testing.assert_allclose(got, isotonic_regression(u).x, rtol=1e-12, atol=1e-12 * _scale(u))
            # runs at least halve every merge round (every other round in "all"
            # mode); peels shrink the vertex list by 1/8 each
            assert stats["merges"] <= 2 * log2n + 2, (name, policy, stats)
            assert stats["peels"] <= 1 + math.log(n + 1) / math.log(8 / 7), (name, policy, stats)
            assert stats.get("bridge_steps", 0) <= stats["merges"] * 2 * (log2n + 1), (name, policy, stats)


def test_compensated_prefix_sums_are_accurate_per_block():
    rng = np.random.default_rng(7)
    n = 20000
    u = 1e12 + 1e4 * rng.standard_normal(n)  # prefix sums up to 2e16, blocks from 1e12
    H, D = _gpu_owl.compensated_prefix(u)
    bound = 4 * np.finfo(float).eps
    naive_worst = 0.0
    for _ in range(300):
        i = int(rng.integers(0, n - 20))
        j = i + int(rng.integers(1, 20))
        exact = math.fsum(u[i:j])
        got = (H[j] - H[i]) + (D[j] - D[i])
        assert abs(got - exact) <= bound * abs(exact), (i, j, got, exact)
        naive_worst = max(naive_worst, abs((H[j] - H[i]) - exact) / abs(exact))
    assert naive_worst > 100 * bound  # plain prefix differences would not do


def test_compensated_prefix_sums_carry_the_low_parts():
    """H + D is the prefix sum of uh + ul: an exact difference w - y survives."""
    w = np.array([6.0, 2.8e-45, 0.0])
    y = np.array([5.0, 1.0, 3.7e-175])
    uh, ul = _gpu_owl._two_diff(w, y)
    assert [Fraction(a) + Fraction(b) for a, b in zip(uh, ul)] == [Fraction(a) - Fraction(b) for a, b in zip(w, y)]
    H, D = _gpu_owl.compensated_prefix(uh, ul)
    total = (H[3] - H[0]) + (D[3] - D[0])
    assert total == float(sum(Fraction(a) - Fraction(b) for a, b in zip(w, y)))  # 2.8e-45 - 3.7e-175 > 0


# ----------------------------------------------------------------------- OWL


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("path", PATHS)
@given(problem=owl_problems())
def test_owl_matches_numpy_reference(path, policy, problem):
    v, w = problem
    x = _owl(path, v, w, **policy)
    if sum(abs(Fraction(float(t))) for t in v) + sum(Fraction(float(t)) for t in w) > np.finfo(np.float64).max:
        # the reference's block sums overflow (v = 1.7e307 * 11 pooled gives
        # 1.7e307, exact 1.66e307): compare with the exact prox instead
        _check_against_exact(x, v, w)
        return
    ref = numpy_ref.owl(v, w)
    tol = TOL[v.dtype.type]
    np.testing.assert_allclose(
        x.astype(np.float64), ref.astype(np.float64), rtol=tol, atol=tol * _scale(v, w) + TINY[v.dtype.type]
    )
    a = np.abs(v)
    for t in np.unique(a):  # equal magnitudes get identical outputs
        assert np.unique(np.abs(x[a == t])).size == 1


@pytest.mark.parametrize("path", PATHS)
@given(problem=owl_problems(max_size=25))
@example(problem=(np.array([1.0, 5.0, 3.7e-175]), np.array([6.0, 2.8e-45, 0.0])))
@example(problem=(np.full(3, 1e308), np.zeros(3)))
@example(problem=(np.array([1.7e308, -1.7e308, 1e308, 1.0]), np.array([1.7e308, 1e308, 1e308, 0.0])))
@example(problem=(np.array([3e-45, -1e-45, 7e-45, 0.0], np.float32), np.array([3e-45, 1.4e-45, 0.0, 0.0], np.float32)))
@example(problem=(np.array([1.0, 5.0, 1e-40], np.float32), np.array([6.0, 2.8e-45, 0.0], np.float32)))
def test_owl_matches_exact_reference(path, problem):
    v, w = problem
    _check_against_exact(_owl(path, v, w), v, w)


@st.composite
def rounding_decides_support(draw):
    """Problems whose support the rounding of |v| - w would decide.

    |v| sorted = [y1, y2, c], w = [y1 + y2, d, 0] with c, d far below ulp(y2):
    z = |v| - w = [-y2, y2 - d, c] pools to one block of sum c - d, so the exact
    prox is zero iff c <= d; with y2 - d rounded to y2 the sum would be c > 0.
    Any order and signs of v, any number of such triples' magnitudes scaled apart.
    """
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    tiny_exp = (-1074, -60) if dtype == np.float64 else (-149, -30)
    y2 = 2.0 ** draw(st.integers(-2, 8)) * draw(st.sampled_from([1.0, 1.5, 1.25]))
    y1 = y2 * draw(st.sampled_from([1.0, 2.0, 3.0]))
    c = 2.0 ** draw(st.integers(*tiny_exp)) * draw(st.sampled_from([1.0, 1.5, 3.0]))
    d = c * draw(st.sampled_from([0.5, 1.0, 1.0 + 2.0**-10, 2.0, 1.0 - 2.0**-10]))
    d = float(np.asarray(d, dtype=dtype))
    mags = np.array([y1, y2, c])
    w = np.array([y1 + y2, d, 0.0])
    perm = draw(st.permutations(range(3)))
    signs = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
    v = np.empty(3)
    v[list(perm)] = mags * signs
    return v.astype(dtype), w.astype(dtype)


@pytest.mark.parametrize("path", PATHS)
@given(problem=rounding_decides_support())
@example(problem=(np.array([1.0, 5.0, 3.7e-175]), np.array([6.0, 2.8e-45, 0.0])))
def test_owl_support_is_exact_where_rounding_of_differences_decides(path, problem):
    v, w = problem
    x = _owl(path, v, w)
    exact = R.exact_owl(v, w).astype(v.dtype)  # the exact prox, rounded to the input's dtype
    np.testing.assert_array_equal(x != 0, exact != 0)
    _check_against_exact(x, v, w)


def _moderate_elements():
    """0, or magnitudes in [1e-3, 10]: a dynamic range the compensated prefix
    sums resolve exactly (module doc of _gpu_owl, *Accuracy*)."""
    mag = st.one_of(st.sampled_from([1.0, 0.5, 2.0, 3.0, 0.1, 0.05]), st.floats(1e-3, 10.0))
    return st.one_of(st.just(0.0), mag, mag.map(lambda t: -t))


@pytest.mark.parametrize("path", PATHS)
@given(
    dtype=st.sampled_from([np.float64, np.float32]),
    v=arrays(np.float64, st.integers(1, 30), elements=_moderate_elements()),
    scale=st.sampled_from([2.0**-149, 1e-40, 1e-30, 1.0, 0.05, 1e30, 3.4e37, 2.0**-1074, 1e-300, 1e300, 1.7e307]),
)
@example(dtype=np.float64, v=np.full(3, 1.0), scale=1e308)
@example(dtype=np.float64, v=np.full(3, 1.0), scale=0.05)
@example(dtype=np.float32, v=np.full(3, 1.0), scale=0.05)
def test_owl_with_zero_weights_returns_v_exactly(path, dtype, v, scale):
    """Pooled ties must not move: the mean of three 0.05 is 0.05000000000000001
    and of three 1e308 overflows without care; the prox of the zero penalty is v.

    (Magnitudes spanning more than ~1/(n eps)^2 within one vector are outside
    this guarantee: there a tiny entry next to large ones may pool with its
    neighbour, an error below n^2 eps^2 max|v|; ``test_owl_matches_exact_reference``
    covers those inputs with that bound.)"""
    if dtype == np.float32 and not 2.0**-149 <= scale <= 3.4e37:
        scale = 1.0
    v = (v * scale).astype(dtype)
    w = np.zeros_like(v)
    x = _owl(path, v, w)
    np.testing.assert_array_equal(x, v)


@pytest.mark.parametrize("path", PATHS)
@given(
    v=arrays(np.float64, st.integers(1, 30), elements=_moderate_elements()),
    c=st.sampled_from([0.0, 0.5, 1.0, 0.1, 3.0]),
    scale=st.sampled_from([1e-300, 1.0, 1e300]),
)
# found by the long run: magnitudes one ulp apart; the tied pair's block mean,
# rounded an ulp high, pooled them with the larger one (before the clamp of
# the edge means)
@example(v=np.array([10.0, np.nextafter(10.0, 0), np.nextafter(10.0, 0)]), c=0.5, scale=1e-300)
def test_owl_with_constant_weights_is_soft_thresholding_exactly(path, v, c, scale):
    """Constant weights: every block is a run of tied magnitudes, whose value is
    the correctly rounded |v| - c (the clamp makes it exact).  Same dynamic
    range as the zero-weights test."""
    v = v * scale
    w = np.full_like(v, c * scale)
    x = _owl(path, v, w)
    np.testing.assert_array_equal(x, np.sign(v) * np.maximum(np.abs(v) - w, 0.0))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("path", PATHS)
@given(problem=R.near_ties())
def test_owl_near_ties_with_zero_or_constant_weights_are_exact(path, policy, problem):
    """Zero weights return v and constant weights the correctly rounded
    |v| - c, whatever the policy, where magnitudes lie an ulp or a few apart
    (module doc of _gpu_owl, *Accuracy*: the clamped edge means and the flat
    junctions).  Before them, about one such input in ten came out changed in
    the last bit."""
    v, c = problem
    np.testing.assert_array_equal(_owl(path, v, np.zeros_like(v), **policy), v)
    ref = np.sign(v) * np.maximum(np.abs(v) - c, 0.0)
    np.testing.assert_array_equal(_owl(path, v, np.full_like(v, c), **policy), ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", ["oscar", "bh", "stair", "constant", "spike"])
def test_owl_matches_numpy_reference_large(path, weights, dtype):
    rng = np.random.default_rng(3)
    n = 100_000 if path[1] == "array" else 20_000  # the interpreter is slow
    v = rng.standard_normal(n) * rng.choice([1.0, 10.0], n)
    v[rng.integers(0, n, 500)] = 0.0
    v[:1000] = np.round(v[:1000], 1)  # many ties
    i = np.arange(1, n + 1)
    w = {
        "oscar": 0.1 + 2.0 * (n - i) / n,
        "bh": 0.1 * np.sqrt(2 * np.log(2 * n / i)),
        "stair": np.where(i <= n // 10, 1.0 + (n // 10 - i) * 1e-4, 0.5),
        "constant": np.full(n, 0.7),
        "spike": np.where(i == 1, 50.0, 0.0),
    }[weights]
    v, w = v.astype(dtype), w.astype(dtype)
    x = _owl(path, v, w)
    tol = TOL[dtype]
    np.testing.assert_allclose(x.astype(np.float64), numpy_ref.owl(v, w).astype(np.float64), rtol=tol, atol=tol * _scale(v, w))


@pytest.mark.parametrize("path", PATHS)
def test_owl_empty_and_single(path):
    for dtype in (np.float32, np.float64):
        x = _owl(path, np.zeros(0, dtype), np.zeros(0, dtype))
        assert x.shape == (0,) and x.dtype == dtype
        x = _owl(path, np.array([-3.0], dtype), np.array([1.0], dtype))
        assert x.dtype == dtype and x.tolist() == [-2.0]


# -------------------------------------------------------------- Triton kernel


@needs_triton
@pytest.mark.parametrize("policy", POLICIES[:3])
@given(problem=owl_problems(), u=isotonic_inputs())
def test_triton_and_array_bridges_agree_bit_for_bit(policy, problem, u):
    v, w = problem
    vt, wt = torch.from_numpy(v), torch.from_numpy(w)
    s1: dict = {}
    s2: dict = {}
    x1 = _gpu_owl.owl(vt, wt, bridge="triton", stats=s1, **policy)
    x2 = _gpu_owl.owl(vt, wt, bridge="array", stats=s2, peel_density=policy.get("peel_density", 0), merge=policy.get("merge", "auto"))
    assert torch.equal(x1, x2)
    assert (s1["peels"], s1["merges"]) == (s2["peels"], s2["merges"])
    ut = torch.from_numpy(u)
    V1, m1 = _gpu_owl.isotonic_blocks(ut, bridge="triton", peel_density=0)
    V2, m2 = _gpu_owl.isotonic_blocks(ut, bridge="array", peel_density=0)
    assert torch.equal(V1, V2) and torch.equal(m1, m2)


def test_bridge_choice():
    v = np.ones(3)
    assert not _gpu_owl._use_triton(v, "auto")
    with pytest.raises(ValueError, match="bridge"):
        _gpu_owl.owl(v, v, bridge="cuda")
    with pytest.raises(ValueError, match="torch tensor"):
        _gpu_owl.owl(v, v, bridge="triton")
    if torch is not None:
        assert not _gpu_owl._use_triton(torch.ones(3), "auto")  # CPU tensors: array code


@needs_triton
def test_triton_kernel_compiles_for_sm90_without_fma_contraction():
    """Triton compiles the kernel to PTX and a cubin for an H100/H200 (sm_90)
    with no GPU present; with ``enable_fp_fusion=False`` no FMA appears, so the
    compiled kernel rounds exactly like the interpreter and the array code."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from proxlib.backends import _triton_isotonic as ti

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    sig = {
        "P0": "*fp64", "P1": "*fp64", "P2": "*fp64", "eg": "*fp64", "J": "*i64",
        "R": "i32", "B": "i32", "K": "i32", "pair_stride": "i32", "cut": "*i32", "max_iter": "i32",
        "BLOCK": "constexpr",
    }  # fmt: skip
    src = ASTSource(ti.kernel(False), sig, constexprs={"BLOCK": ti.BLOCK})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    assert "fma" not in ptx and "div.rn.f64" in ptx


# --------------------------------------------- launches and synchronisations


# aten ops that launch no kernel: views and allocations
def _no_kernel(func):
    return func.is_view or func.overloadpacket.__name__ in {"empty", "empty_strided", "detach", "lift_fresh"}


# aten ops that wait for the device (CUDA): data-dependent output sizes, host copies
_SYNC_OPS = {"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
             "repeat_interleave", "is_nonzero", "equal", "item", "lift_fresh", "lift_fresh_copy", "masked_scatter",
             "allclose", "_assert_async"}  # fmt: skip


class _Recorder:
    """Counts aten ops dispatched (torch's dispatcher, CPU tensors) and Triton
    kernel calls, and every op that would synchronise with a CUDA device."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        from proxlib.backends import _triton_isotonic as ti

        rec = self
        self.events = []  # "launch" | "triton" | "read"
        self.sync_ops = []
        self.paused = False

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if not rec.paused:
                    rec._see(func, args, kwargs)
                return func(*args, **kwargs)

        self.mode = Mode()
        real_kernel = ti.kernel

        class Launcher:  # the interpreter's own tensor work is not the kernel's
            def __init__(self, k):
                self.k = k

            def __getitem__(self, grid):
                run = self.k[grid]

                def call(*a, **kw):
                    rec.events.append("triton")
                    rec.paused = True
                    try:
                        return run(*a, **kw)
                    finally:
                        rec.paused = False

                return call

        monkeypatch.setattr(ti, "kernel", lambda interpret: Launcher(real_kernel(interpret)))

    def _see(self, func, args, kwargs):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":  # int()/bool()/float()/.item() of a tensor
            self.events.append("read")
            return
        if name in _SYNC_OPS:
            self.sync_ops.append(str(func))
        if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(t is not None and t.dtype == torch.bool for t in idx):  # boolean mask: nonzero inside
                self.sync_ops.append(str(func))
        if name in ("_to_copy", "to", "copy_") and kwargs.get("device") not in (None, args[0].device):
            self.sync_ops.append(str(func))
        if not _no_kernel(func):
            self.events.append("launch")

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)

    @property
    def launches(self):
        return sum(e in ("launch", "triton") for e in self.events)

    @property
    def reads(self):
        return self.events.count("read")

    def segments(self):
        """Launches before the first read, between consecutive reads, after the last."""
        out, cur = [], 0
        for e in self.events:
            if e == "read":
                out.append(cur)
                cur = 0
            else:
                cur += 1
        return out + [cur]


# Per call, on the Triton path (justified by the code, checked below):
# * outside the rounds: sort, TwoSum, scale, first peel, compensated prefix
#   sums, first compaction, and after the rounds the clamp and the
#   searchsorted mapping: straight-line code, PROLOGUE + EPILOGUE launches;
# * one round: edge slopes and reflex test, then either a peel or a merge
#   (indices, cut array, ONE Triton kernel, cumsum, compaction): straight-line
#   code, at most PER_ROUND launches, and exactly one scalar read;
# * rounds <= 2 ceil(log2 n) + 2: merges only (peel_density 0), runs halve at
#   least every second round, plus the final round that finds no reflex vertex.
# The counts are those of the straight-line code (float32 input adds casts):
# PROLOGUE includes the first round's slopes and reflex test (up to its read),
# PER_ROUND runs from one read to the next.  Hence
#   launches <= PROLOGUE + EPILOGUE + PER_ROUND (rounds - 1)
#            <= 115 + 30 (2 ceil(log2 n) + 1) = a + b ceil(log2 n), a = 145, b = 60,
# and host reads = rounds <= 2 ceil(log2 n) + 2.
PROLOGUE, EPILOGUE, PER_ROUND = 85, 30, 30


def _owl_case(name, n, rng, dtype=np.float64):
    i = np.arange(1, n + 1)
    v = rng.standard_normal(n) * rng.choice([1.0, 10.0], n)
    v[: n // 10] = np.round(v[: n // 10], 1)
    w = {
        "bh": 0.1 * np.sqrt(2 * np.log(2 * n / i)),
        "oscar": 0.05 + 1.0 * (n - i) / n,
        "stair": np.where(i <= n // 10, 1.0 + (n // 10 - i) * 1e-4, 0.5),
        "spike": np.where(i == 1, 50.0, 0.0),
    }[name]
    return torch.from_numpy(v.astype(dtype)), torch.from_numpy(w.astype(dtype))


def _count(monkeypatch, fn):
    with _Recorder(monkeypatch) as rec:
        stats: dict = {}
        fn(stats)
    return rec, stats


@needs_triton
@pytest.mark.parametrize(
    "n, cases",
    [
        (10**3, ["bh", "spike", "oscar32", "noise", "nested", "sawtooth"]),
        (10**4, ["bh", "oscar", "stair", "stair32", "noise", "walk"]),
        (10**5, ["bh", "stair", "noise"]),
        (10**6, ["bh", "bh32"]),
    ],
)
def test_launches_and_host_syncs_per_call_are_logarithmic(monkeypatch, n, cases):
    rng = np.random.default_rng(n)
    log2n = math.ceil(math.log2(n))
    max_rounds = 2 * log2n + 2
    for name in cases:
        if name in ("noise", "walk", "nested", "sawtooth"):
            u = torch.from_numpy(_adversarial(n, rng)[name])
            rec, stats = _count(monkeypatch, lambda s: _gpu_owl.isotonic_blocks(u, bridge="triton", stats=s))
        else:
            dtype = np.float32 if name.endswith("32") else np.float64
            v, w = _owl_case(name.removesuffix("32"), n, rng, dtype)
            rec, stats = _count(monkeypatch, lambda s: _gpu_owl.owl(v, w, bridge="triton", stats=s))
        seg = rec.segments()
        msg = (name, n, stats, seg)
        assert rec.sync_ops == [], msg
        assert rec.reads == stats["rounds"] <= max_rounds, msg  # one scalar read per round
        assert rec.events.count("triton") == stats["merges"], msg  # one kernel per merge round
        assert seg[0] <= PROLOGUE and seg[-1] <= EPILOGUE, msg
        assert max(seg[1:-1], default=0) <= PER_ROUND, msg
        assert rec.launches <= PROLOGUE + EPILOGUE + PER_ROUND * (2 * log2n + 1), msg  # 145 + 60 log2n


@needs_torch
def test_array_bridge_launches_grow_with_the_bridge_steps(monkeypatch):
    """The fallback's merge rounds cost ~40 launches per bridge step (O(log^2 n)
    in all): what the Triton kernel replaces."""
    rng = np.random.default_rng(5)
    v, w = _owl_case("stair", 10**4, rng)
    arr, s_arr = _count(monkeypatch, lambda s: _gpu_owl.owl(v, w, bridge="array", peel_density=0, stats=s))
    assert s_arr["merges"] >= 2 and s_arr["bridge_steps"] >= 20
    assert arr.launches >= 35 * s_arr["bridge_steps"]
    assert arr.reads == s_arr["rounds"] + s_arr["merges"]  # plus one step-count read per merge
    assert arr.sync_ops == []  # (a Python number clipped against or assigned made a tensor of it: 80 copies here)
    if HAS_TRITON:
        tri, s_tri = _count(monkeypatch, lambda s: _gpu_owl.owl(v, w, bridge="triton", stats=s))
        assert s_tri["merges"] == s_arr["merges"]
        assert tri.launches * 5 < arr.launches


# ------------------------------------------------------------- static checks


@pytest.mark.parametrize("module", ["_gpu_owl.py", "_triton_isotonic.py"])
def test_the_only_host_reads_are_the_documented_ones(module):
    """Beyond the CuPy path's static check (no NumPy, no array copies to the host;
    test_cupy_backend.py): no float()/bool() of a device value anywhere, and
    exactly two int() reads in _gpu_owl -- the round's packed read and the array
    bridge's step count."""
    tree = ast.parse((BACKENDS / module).read_text())
    reads = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"cpu", "numpy", "item", "tolist"}, (module, node.attr, node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"float", "bool", "complex"}, (module, node.func.id, node.lineno)
            reads += node.func.id == "int"
    assert reads == {"_gpu_owl.py": 2, "_triton_isotonic.py": 0}[module]


@needs_torch
def test_short_owl_vectors_on_an_accelerator_are_solved_on_the_host(monkeypatch):
    # The torch backend's route for an OWL vector (OWL itself, GrOWL's row
    # norms): the host for CPU tensors and for device vectors of up to
    # OWL_ON_HOST_MAX entries, the device's isotonic regression beyond.
    from types import SimpleNamespace

    from proxlib.backends import torch_dev

    calls = []
    monkeypatch.setattr(torch_dev, "_owl_on_host", lambda v, w: calls.append(("host", v.shape[0])))
    monkeypatch.setattr(_gpu_owl, "owl", lambda v, w: calls.append(("device", v.shape[0])))
    cuda = lambda n: SimpleNamespace(device=torch.device("cuda", 0), shape=(n,))  # noqa: E731 - routing only
    big = torch_dev.OWL_ON_HOST_MAX + 1
    for v in (cuda(1), cuda(big - 1), cuda(big), torch.zeros(big)):
        torch_dev._owl_vector(v, None)
    assert calls == [("host", 1), ("host", big - 1), ("device", big), ("host", big)]


@needs_torch
@pytest.mark.parametrize("route", ["auto", "torch"])
@given(problem=owl_problems())
def test_owl_on_the_host_matches_the_reference(route, problem):
    # What runs for those short device vectors, run here on CPU tensors (the
    # copies to and from the host are then no-ops): Numba's serial kernel
    # ("auto") or the NumPy reference ("torch").
    from proxlib.backends import torch_dev

    v, w = problem
    saved, torch_dev.CPU_KERNELS = torch_dev.CPU_KERNELS, route
    try:
        got = torch_dev._owl_on_host(torch.from_numpy(v), torch.from_numpy(w))
    finally:
        torch_dev.CPU_KERNELS = saved
    ref = numpy_ref.owl(v, w)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.from_numpy(v).dtype
    tol = TOL[v.dtype.type]
    np.testing.assert_allclose(got.numpy(), ref, rtol=tol, atol=tol * _scale(v, w))
    if route == "torch":
        np.testing.assert_array_equal(got.numpy(), ref)  # the reference itself


@needs_torch
def test_bench_gpu_dry_run_runs_the_torch_owl_section_on_cpu(capsys):
    """benchmarks/bench_gpu.py runs on a GPU machine later; here its torch
    section runs on CPU tensors (Triton interpreted) so that the script works."""
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        rc = bench.main(["--dry-run", "--owl-sizes", "1e3", "--dtypes", "float32", "--repeat", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| 1e+03 | float32 |")]
    assert [r.split("|")[3].strip() for r in rows] == (["triton", "array"] if HAS_TRITON else ["array"])
    for r in rows:
        cells = [c.strip() for c in r.split("|")[1:-1]]
        launches, kernels, reads = int(cells[8]), int(cells[9]), int(cells[10])
        assert launches > 0 and reads >= 1 and float(cells[-1]) <= 1e-6  # agrees with the NumPy reference
        assert kernels == (int(cells[11].split("/")[1]) if cells[2] == "triton" else 0)
    assert bench.main(["--sections", "cupy", "--dry-run"]) == 2  # nothing to run: says so


def test_importing_proxlib_does_not_import_torch_or_triton():
    code = "import sys, proxlib.backends._gpu_owl; print('torch' in sys.modules, 'triton' in sys.modules)"
    out = _procs.python(code, timeout=300, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------- the exclusive kernels' host synchronisations


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("default", ["host", "accelerator"])
def test_exclusive_kernels_on_the_device_path_synchronise_only_in_the_root_search(monkeypatch, dtype, default):
    """The torch exclusive-lasso kernel, with the device's sort (``torch.sort``,
    as on CUDA; the CPU's is NumPy's), reads nothing on the host and makes no
    synchronising call (no boolean-mask assignment, no Python number copied
    to the device: ``_xp_kernels.signed_like`` and ``clip``); group+exclusive
    only in its root search: one read per four Newton steps, and on a CPU
    tensor one read and one ``nonzero`` that gather the rows that need it.
    Both agree with the NumPy reference.  Each route is chosen here, not
    left to the tensor's device: a CUDA tensor (``PROXLIB_TEST_DEVICE=cuda``)
    takes the accelerator's by default, which ``default="accelerator"``
    gives CPU tensors too (the first GPU run would otherwise have compared
    that route with itself)."""
    from proxlib.backends import _xp_kernels, torch_dev

    monkeypatch.setattr(torch_dev, "_sort_desc", lambda A, xp: torch.sort(A, dim=1, descending=True).values)
    # the array code's root search (a CUDA tensor's, where Triton imports, is
    # one kernel with no read: checked at the end), and its rows (the rows'
    # Triton kernel reads nothing at all: tests/test_triton_exclusive.py)
    monkeypatch.setattr(_xp_kernels, "ROOT_SEARCH", "array")
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "array")
    if default == "accelerator":  # a CUDA tensor's default route (torch_dev._gathers_rows)
        monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: False)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((7, 9)).astype(dtype)
    W[2] = 0.0
    W[4, :3] = -0.0
    b = rng.uniform(0.1, 2.0, 7).astype(dtype)
    a = rng.uniform(0.0, 1.0, 7).astype(dtype)
    Wt, bt, at = (_device.tensor(x) for x in (W, b, a))
    with _Recorder(monkeypatch) as rec:
        X = torch_dev.exclusive_lasso(Wt, bt)
    assert rec.reads == 0 and rec.sync_ops == [], (rec.reads, rec.sync_ops)
    tol = 4 * np.finfo(dtype).eps * np.abs(W).max()
    np.testing.assert_allclose(_device.to_numpy(X), numpy_ref.exclusive_lasso(W, b), rtol=0, atol=tol)
    monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: True)  # the host's route, on any device
    with _Recorder(monkeypatch) as rec:
        X = torch_dev.group_exclusive(Wt, at, bt)
    assert rec.reads >= 1 and all("nonzero" in op for op in rec.sync_ops), rec.sync_ops
    np.testing.assert_allclose(_device.to_numpy(X), numpy_ref.group_exclusive(W, a, b), rtol=0, atol=tol)
    # an accelerator's route: every row searched, no nonzero; the reads are
    # the search's convergence tests alone, one per four Newton steps (as many
    # as the gathered rows' search made); the same bits
    gathered_reads = rec.reads
    monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: False)
    with _Recorder(monkeypatch) as rec:
        Y = torch_dev.group_exclusive(Wt, at, bt)
    assert rec.sync_ops == [] and 1 <= rec.reads <= gathered_reads - 1, (rec.reads, rec.sync_ops)
    assert torch.equal(Y, X)
    monkeypatch.setattr(_xp_kernels, "ROOT_SEARCH", "auto")
    if _xp_kernels._triton_shrink(Wt) is not None:  # a CUDA tensor with Triton: the search is one kernel
        with _Recorder(monkeypatch) as rec:
            Z = torch_dev.group_exclusive(Wt, at, bt)
        assert rec.reads == 0 and rec.sync_ops == [], (rec.reads, rec.sync_ops)
        assert torch.equal(Z, X)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("op", ["group_lasso", "exclusive_lasso", "group_exclusive"])
def test_metric_row_kernels_on_the_device_path_synchronise_only_to_read(monkeypatch, op):
    """The torch kernels of the prox in a diagonal metric (Adam's), on an
    accelerator's route (``_gathers_rows`` False): no synchronising call
    (no ``nonzero``, no boolean-mask assignment, no Python number copied to
    the device), and host reads only where documented: one to learn which
    cases occur, then one per four steps of each root search (the exclusive
    lasso has none).  Fewer reads than the CPU's gathered route, and the same
    bits.  Rows of every kind in one call: zero rows, rows left as they are
    (a = b = 0), rows set to 0, a group-lasso-only row."""
    from proxlib.backends import _metric_kernels, torch_dev

    rng = np.random.default_rng(5)
    W = rng.standard_normal((8, 30))
    D = np.exp(rng.uniform(-2.0, 2.0, W.shape))
    W[2] = 0.0
    a = rng.uniform(0.2, 2.0, 8)
    b = rng.uniform(0.01, 0.1, 8)
    a[3], b[3] = 0.0, 0.0  # a row left as it is
    a[4] = 1e3  # a row set to 0
    b[5] = 0.0  # group lasso alone
    # (the array code's root search: its Triton kernel reads nothing, tests/test_triton_metric.py)
    monkeypatch.setattr(_metric_kernels, "METRIC_ROWS", "array")
    args = {"group_lasso": (a,), "exclusive_lasso": (b,), "group_exclusive": (a, b)}[op]
    kernel = getattr(torch_dev, op + "_metric")
    Wt, Dt, *rest = (torch.from_numpy(x) for x in (W, D, *args))
    with _Recorder(monkeypatch) as rec:
        X = kernel(Wt, Dt, *rest)
    gathered_reads = rec.reads
    monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: False)
    with _Recorder(monkeypatch) as rec:
        Y = kernel(Wt, Dt, *rest)
    assert rec.sync_ops == [], rec.sync_ops
    if op == "exclusive_lasso":
        assert rec.reads == 1, rec.reads
    else:
        assert 2 <= rec.reads < gathered_reads, (rec.reads, gathered_reads)
    assert torch.equal(Y, X)
    ref = getattr(numpy_ref, op + "_metric")(W, D, *args)
    np.testing.assert_allclose(Y.numpy(), ref, rtol=1e-13, atol=1e-300)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(1e-300, 1e300)), st.floats(-1e300, 1e300))
def test_a_number_over_a_tensor_is_the_correctly_rounded_quotient(den, num):
    """``_xp_kernels.quotient(num, den)`` on torch gives NumPy's IEEE
    quotient bit for bit (torch's ``num / den`` is ``num * (1 / den)``: two
    roundings, different in about a quarter of the entries).  (That it
    synchronises nothing: the separable metric kernels' test, through
    lp_metric's lam / d.)"""
    from proxlib.backends import _xp_kernels as K

    t = torch.from_numpy(den)
    with np.errstate(over="ignore", under="ignore"):
        expected = num / den
    np.testing.assert_array_equal(K.quotient(num, t, array_namespace(t)).numpy(), expected)
    np.testing.assert_array_equal(K.quotient(torch.full_like(t, num), t, array_namespace(t)).numpy(), expected)


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_separable_metric_kernels_on_the_device_path_never_synchronise(monkeypatch):
    """weighted l1 and l2^2 in a diagonal metric, and lp for p in {0, 1}: no
    host read and no synchronising call (soft thresholding by
    ``signed_like`` and ``clip``, not ``sign`` and ``maximum``); the NumPy
    reference's bits."""
    from proxlib.backends import torch_dev

    rng = np.random.default_rng(6)
    v = rng.standard_normal(50) * 3.0
    v[:4] = (0.0, -0.0, np.nan, np.inf)
    d = np.exp(rng.uniform(-2.0, 2.0, 50))
    w = np.array([0.7])
    vt, dt, wt = (torch.from_numpy(x) for x in (v, d, w))
    calls = (("weighted_l1_metric", (wt,), (w,)), ("weighted_l2sq_metric", (wt,), (w,)),
             ("lp_metric", (0.7, 0.0), (0.7, 0.0)), ("lp_metric", (0.7, 1.0), (0.7, 1.0)))  # fmt: skip
    for name, targs, nargs in calls:
        with _Recorder(monkeypatch) as rec:
            x = getattr(torch_dev, name)(vt, dt, *targs)
        assert rec.reads == 0 and rec.sync_ops == [], (name, rec.reads, rec.sync_ops)
        np.testing.assert_array_equal(x.numpy(), getattr(numpy_ref, name)(v, d, *nargs), err_msg=name)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("p", [1.0, 2.0 / 3.0, 0.3])
def test_lp_kernel_on_the_device_path_synchronises_only_in_its_newton_loop(monkeypatch, p):
    """The torch lp kernel makes no synchronising call (no ``sign`` of
    array-api-compat, whose NaN mend is a boolean-mask assignment, and no
    ``maximum`` with a Python number, copied to the device first:
    ``signed_like`` and ``clip``); its only host reads are the Newton loop's
    convergence tests (none for p = 1, soft thresholding).  It agrees with
    the NumPy reference: bit for bit on CPU tensors (the same operations on
    the same libm); on a GPU (``PROXLIB_TEST_DEVICE=cuda``) to the parity
    tolerance, since CUDA's pow, acos and cos may differ from the host's in
    the last bit and it divides by a number as a multiplication by its
    reciprocal (one ulp off in pow, acos or cos moved 1-5 of these 40
    results by an ulp on CPU tensors)."""
    from proxlib.backends import torch_dev

    rng = np.random.default_rng(4)
    v = rng.standard_normal(40) * 3.0
    v[:3] = (0.0, -0.0, np.nan)
    vt = _device.tensor(v)
    with _Recorder(monkeypatch) as rec:
        x = torch_dev.lp(vt, 0.7, p)
    assert rec.sync_ops == [], rec.sync_ops
    assert (rec.reads == 0) if p == 1.0 else (1 <= rec.reads <= 3), rec.reads
    got, want = _device.to_numpy(x), numpy_ref.lp(v, 0.7, p)
    if vt.device.type == "cpu":
        np.testing.assert_array_equal(got, want)
    else:
        tol = TOL[np.float64]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.nanmax(np.abs(v)))

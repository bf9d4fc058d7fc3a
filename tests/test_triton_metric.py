"""The group lasso in a diagonal metric as Triton kernels (``_triton_metric``).

CI has no GPU: the kernels run in Triton's interpreter on CPU tensors (the
same source the GPU compiles), and the compiled kernels are checked by
compiling them for sm_90 with Triton's own compiler:

* the metric group lasso on the torch route with the kernels
  (``_metric_kernels.METRIC_ROWS = "triton"``; the whole operator in one
  kernel) equals the 60-digit reference row by row to the metric tests'
  tolerance, on their Hypothesis problems, and the array code's result to
  the parity tolerance (its row sums add in another order: not bit for
  bit), also on long rows (several tiles on a GPU), strided and float32
  inputs, rows of extreme scales, NaN and Inf rows, thresholds 0 and inf;
* so does the root search alone (group+exclusive's rows with b = 0, where
  the operator is not the kernels': float16);
* group+exclusive in a metric, whole, in one kernel (every case: a = 0,
  b = 0, both; the outer root search over the inner exclusive support
  search): the 60-digit reference on the Hypothesis problems, and the
  array code to the parity tolerance on rows of 1 to 4608 entries;
* the exclusive lasso in a metric, whole, in one kernel (the support by
  Newton's method over tiles instead of a sort): the 60-digit reference on
  the Hypothesis problems, and the array code to the parity tolerance on
  rows of 1 to 4608 entries, saturated b (b / max d beyond 2^600), b = 0
  and inf, extreme and non-finite rows, strided inputs, the GPU's tiles;
* the operator is one launch and reads nothing on the host, where the
  array code makes about 180 operations and a root search of about fifteen
  a step with a read every four steps;
* both kernels compile for sm_90 with correctly rounded float64 division
  and square root and no FMA.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import _device  # noqa: E402
import _metric_ref as M  # noqa: E402
from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)
from test_metric_ops import EPS64, assert_huge_b_rows_exact, metric_row_problems, row_thresholds, rows_close  # noqa: E402

from proxlib.backends import _metric_kernels as MK  # noqa: E402
from proxlib.backends import _triton_metric as tm  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402


def _solve(W, D, a, mode, gather=False, b=None):
    """The torch route's metric group lasso with the kernels by ``mode``
    (``b``: group+exclusive's array code, its whole-operator kernel
    declined, whose rows with b = 0 take the root search's kernel alone)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(MK, "METRIC_ROWS", mode)
        if b is not None:
            m.setattr(tm, "fits", lambda W, D: False)
            return MK.group_exclusive_metric(W, D, a, b, gather=gather)
        return MK.group_lasso_metric(W, D, a, gather=gather)


def _reference(W, D, a, b=None):
    b = np.zeros(W.shape[0]) if b is None else b
    return np.array([M.exact_group_exclusive_metric_row(W[g], D[g], a[g], b[g]) for g in range(W.shape[0])])


def _solve_gx(W, D, a, b, mode, gather=False):
    """The torch route's group+exclusive in a metric, the whole operator by ``mode``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(MK, "METRIC_ROWS", mode)
        return MK.group_exclusive_metric(W, D, a, b, gather=gather)


@given(metric_row_problems(max_rows=5, max_cols=6))
def test_group_exclusive_kernel_equals_the_60_digit_reference(problem):
    W, D, lam, mu, step, gw = problem
    a, b = row_thresholds(W.shape, lam, mu, step, gw)
    before = tm.launches
    X = _solve_gx(torch.tensor(W), torch.tensor(D), torch.tensor(a), torch.tensor(b), "triton").numpy()
    assert tm.launches - before == int(W.size > 0)
    rows_close(X, _reference(W, D, a, b), W, D, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 9, 300, 4608])
def test_group_exclusive_kernel_matches_the_array_code_on_the_test_device(dtype, m):
    """Every case in one call: group thresholds that zero some rows, a = 0
    (the exclusive lasso), b = 0 (the group lasso), a and b infinite,
    saturated b, on the test device."""
    W, D, a = _problem(32, m, dtype, m + 2)
    rng = np.random.default_rng(m + 2)
    b = 10.0 ** rng.uniform(-4, 3, 32) / m
    b[2:6] = 0.0, np.inf, 1e300, 2.0**1000
    a[6] = 0.0
    args = [_device.tensor(x) for x in (W, D, a, b)]
    before = tm.launches
    got = _solve_gx(*args, "triton")
    assert tm.launches == before + 1 and got.device.type == _device.DEVICE and got.dtype == args[0].dtype
    _assert_as_array_code(got, _device.to_numpy(_solve_gx(*args, "array")), W)


def _solve_exclusive(W, D, b, mode, gather=False):
    """The torch route's exclusive lasso in a metric, the whole operator by ``mode``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(MK, "METRIC_ROWS", mode)
        return MK.exclusive_lasso_metric(W, D, b, gather=gather)


@given(metric_row_problems(max_rows=5, max_cols=6))
def test_exclusive_kernel_equals_the_60_digit_reference(problem):
    W, D, lam, _, step, gw = problem
    a, b = row_thresholds(W.shape, lam, 1.0, step, gw)  # (a = 0)
    before = tm.launches
    X = _solve_exclusive(torch.tensor(W), torch.tensor(D), torch.tensor(b), "triton").numpy()
    assert tm.launches - before == int(W.size > 0)
    rows_close(X, _reference(W, D, a, b), W, D, a, b)


@given(metric_row_problems(max_rows=4, max_cols=6, lo_exp=-30.0, hi_exp=30.0), st.floats(-320.0, 300.0))
def test_exclusive_kernel_with_wide_metrics_equals_the_exact_reference(problem, log_b):
    """Metrics spanning up to sixty decades in a row and b from 1e-320 to
    1e300: where a threshold between data values cannot be compared with
    an entry accurately (x_i = (z_i - t) / d_i with d_i tiny), the support
    is still the exact one (the kernel tests it at data values)."""
    W, D, *_ = problem
    b = np.full(W.shape[0], 10.0**log_b)
    X = _solve_exclusive(torch.tensor(W), torch.tensor(D), torch.tensor(b), "triton").numpy()
    for g in range(W.shape[0]):
        ref = M.exact_exclusive_metric_row(W[g], D[g], b[g])
        np.testing.assert_allclose(X[g], ref, rtol=0, atol=64 * (W.shape[1] + 2) * 2.0**-52 * np.abs(ref).max() + 2.0**-1070)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 9, 300, 4608])
def test_exclusive_kernel_matches_the_array_code_on_the_test_device(dtype, m):
    """Rows up to ResNet-18's longest "shape" rows, b from 1e-4/m to 1e3/m,
    b = 0, inf, and saturated (b / max d beyond 2^600, solved at b 2^-shift
    and scaled back), on the test device."""
    W, D, _ = _problem(32, m, dtype, m + 1)
    rng = np.random.default_rng(m)
    b = 10.0 ** rng.uniform(-4, 3, 32) / m
    b[:4] = 0.0, np.inf, 1e300, 2.0**1000
    args = [_device.tensor(x) for x in (W, D, b)]
    before = tm.launches
    got = _solve_exclusive(*args, "triton")
    assert tm.launches == before + 1 and got.device.type == _device.DEVICE and got.dtype == args[0].dtype
    _assert_as_array_code(got, _device.to_numpy(_solve_exclusive(*args, "array")), W)


def test_kernels_with_huge_b_in_wide_metrics_are_exact():
    """test_metric_ops.test_huge_b_in_wide_metrics_is_exact in the kernel:
    saturation from b / max(d) = 2^600 (it began at 2^900, and z_k - theta
    went subnormal for metrics spanning 2^100: x = 0 at b = 1e299), and the
    tied entries a tiny l2 threshold splits (saturated only from 2^900)."""
    t = torch.tensor
    before = tm.launches
    assert_huge_b_rows_exact(lambda W, D, b: _solve_exclusive(t(W), t(D), t(b), "triton").numpy(),
                             lambda W, D, a, b: _solve_gx(t(W), t(D), t(a), t(b), "triton").numpy())
    X = _solve_gx(t([[4.0, -1.0, 0.0]]), t([[1.0, 4.0, 1.0]]), t([2.0**-700]), t([2.0**800]), "triton").numpy()
    np.testing.assert_allclose(X[0, 0], -X[0, 1], rtol=4 * EPS64)
    # b = 1: z = 1.7e-16 (scaled) off the support, where (z - z_k) + e rounded to 2.2e-16
    w, d = np.array([[1.0, 0.0, 0.0, 3.5]]), np.array([[3.0, 1.0, 1.0, 1e16]])
    X = _solve_exclusive(t(w), t(d), t(np.ones(1)), "triton").numpy()
    ref = M.exact_exclusive_metric_row(w[0], d[0], 1.0)
    assert X[0, 0] == ref[0] == 0
    np.testing.assert_allclose(X[0], ref, rtol=0, atol=64 * 4 * EPS64 * np.abs(ref).max())
    assert tm.launches == before + 5


def test_exclusive_kernel_on_extreme_rows_as_the_array_code_on_the_test_device():
    W, D, _ = _extreme_problem()
    rng = np.random.default_rng(11)
    b = 10.0 ** rng.uniform(-3, 3, W.shape[0]) / W.shape[1]
    b[0], b[1], b[8] = 2.0**-1070, 2.0**1019, 2.0**-1074
    args = [_device.tensor(x) for x in (W, D, b)]
    with np.errstate(all="ignore"):
        _assert_as_array_code(_solve_exclusive(*args, "triton"), _device.to_numpy(_solve_exclusive(*args, "array")), W)


@given(metric_row_problems(max_rows=5, max_cols=6))
def test_kernel_equals_the_60_digit_reference(problem):
    W, D, lam, _, step, gw = problem
    a, _ = row_thresholds(W.shape, lam, 0.0, step, gw)
    before = tm.launches
    X = _solve(torch.tensor(W), torch.tensor(D), torch.tensor(a), "triton").numpy()
    assert tm.launches - before == int(W.size > 0)  # (the whole operator, every row)
    rows_close(X, _reference(W, D, a), W, D, a)


@given(metric_row_problems(max_rows=5, max_cols=6))
def test_root_search_kernel_equals_the_60_digit_reference(problem):
    """The search alone, as group+exclusive's array code runs it on rows
    with b = 0 (where the whole operator is not the kernels': float16)."""
    W, D, lam, _, step, gw = problem
    a, _ = row_thresholds(W.shape, lam, 0.0, step, gw)
    before = tm.launches
    X = _solve(torch.tensor(W), torch.tensor(D), torch.tensor(a), "triton", b=torch.zeros(W.shape[0], dtype=torch.float64)).numpy()
    searched = bool(np.any((np.hypot.reduce(D * W, axis=1) > a) & (a > 0)))  # (a norm whose squares underflow too)
    assert tm.launches - before == int(searched)  # (only where a row is searched)
    rows_close(X, _reference(W, D, a), W, D, a)


def _problem(G, m, dtype, seed):
    """Rows of scales 1e-4 to 1e4 in a metric spanning 1e-3 to 1e3, with
    thresholds that zero some rows (and a = 0 on the first, a = inf on the
    second row)."""
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((G, m)) * 10.0 ** rng.uniform(-4, 4, (G, 1))).astype(dtype)
    D = (10.0 ** rng.uniform(-3, 3, (G, m))).astype(dtype)
    a = np.linalg.norm(D.astype(np.float64) * W, axis=1) * rng.uniform(0.0, 1.2, G)
    a[:2] = 0.0, np.inf
    return W, D, a


def _assert_as_array_code(got, want, W):
    """The parity tolerance, with NaN where the array code has NaN."""
    want = np.asarray(want)
    got = _device.to_numpy(got)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(W).all(axis=1)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)  # (rows as they are)
    scale = float(np.abs(W[finite]).max()) if finite.any() else 1.0
    assert_matches_reference(got[finite], want[finite], str(W.dtype), scale)


@pytest.mark.parametrize("whole", [True, False], ids=["operator", "root search"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 9, 300, 1000])
def test_kernel_matches_the_array_code_on_the_test_device(dtype, m, whole):
    """On the test device (``benchmarks/gpu_session.sh`` runs this on CUDA:
    rows of several tiles there): the kernels' result is the array code's
    to the parity tolerance, in the input's dtype and on its device."""
    W, D, a = _problem(64, m, dtype, m)
    args = [_device.tensor(x) for x in (W, D, a)]
    b = None if whole else _device.tensor(np.zeros(64))
    got = _solve(*args, "triton", b=b)
    assert got.device.type == _device.DEVICE and got.dtype == args[0].dtype
    _assert_as_array_code(got, _device.to_numpy(_solve(*args, "array", b=b)), W)


def test_extreme_rows_as_the_array_code_on_the_test_device():
    """Subnormal rows, rows near the largest float64, a metric spanning
    2^-500 to 2^500, NaN and Inf in the data or the metric (the row comes
    back as it is), zero rows, one-entry rows: as the array code."""
    W, D, a = _extreme_problem()
    args = [_device.tensor(x) for x in (W, D, a)]
    with np.errstate(all="ignore"):
        _assert_as_array_code(_solve(*args, "triton"), _device.to_numpy(_solve(*args, "array")), W)


def _extreme_problem():
    rng = np.random.default_rng(7)
    G, m = 12, 20
    W = rng.standard_normal((G, m))
    D = 10.0 ** rng.uniform(-2, 2, (G, m))
    W[0] *= 2.0**-1070  # subnormal
    W[1] *= 2.0**1020  # near the largest float64
    D[2] = 2.0 ** rng.uniform(-500, 500, m)
    W[3, 4] = np.nan
    W[4, 0] = -np.inf
    D[5, 3] = np.inf
    W[6] = 0.0
    W[7, 1:] = 0.0
    W[8] = np.where(np.arange(m) % 2, 2.0**-1074, 0.0)
    W[9] = 1e300
    with np.errstate(all="ignore"):
        a = np.linalg.norm(np.nan_to_num(D * W, posinf=0.0, nan=0.0), axis=1) * rng.uniform(0.1, 0.9, G)
    a[0] = 2.0**-1070
    a[1] = 2.0**1019
    a[8] = 2.0**-1074
    a[9] = 1e305
    return W, D, a


def test_strided_and_mixed_inputs_on_the_test_device():
    """Any strides (a transposed matrix, a metric broadcast along a row) and
    a float32 metric of float64 data: no copy of the inputs, the array
    code's result."""
    W, D, a = _problem(40, 30, np.float64, 3)
    T = _device.tensor
    Wt = T(np.ascontiguousarray(W.T)).T  # (column-major)
    Dt = T(D[:, :1]).expand(40, 30)  # (stride 0 along the rows)
    for W_, D_ in ((Wt, T(D)), (T(W), Dt), (T(W), T(D.astype(np.float32)))):
        for solve, t in ((_solve, a), (_solve_exclusive, a / np.abs(W).sum(axis=1))):
            got = solve(W_, D_, T(t), "triton")
            want = _device.to_numpy(solve(W_, D_.to(torch.float64), T(t), "array"))
            assert got.is_contiguous()
            _assert_as_array_code(got, want, W)


def test_other_dtypes_and_shapes_are_the_array_codes():
    """float16 data is left to the array code (with the search alone by its
    kernel: one launch); an empty matrix is a copy (none)."""
    W, D, a = _problem(8, 5, np.float64, 5)
    args = torch.tensor(W).half(), torch.tensor(D), torch.tensor(a)
    before = tm.launches
    half = _solve(*args, "triton")
    assert half.dtype == torch.float16 and tm.launches == before + 1
    # (at most one float16 unit apart: the roots agree to float64 rounding)
    np.testing.assert_allclose(half.double().numpy(), _solve(*args, "array").double().numpy(), rtol=2.0**-10, atol=2.0**-24)
    before = tm.launches
    for shape in ((0, 3), (3, 0)):
        empty = torch.zeros(shape, dtype=torch.float64)
        out = _solve(empty, torch.ones(shape, dtype=torch.float64), torch.ones(shape[0], dtype=torch.float64), "triton")
        assert out.shape == shape and tm.launches == before


@pytest.mark.parametrize("gather", [True, False])
def test_operator_is_one_launch_without_host_reads(gather):
    """The array code reads the host once per search step (the host's route)
    or per four steps (a device's) and makes about 180 operations and fifteen
    a step; the kernel is one launch and no read, the search alone one launch
    and the operator's own reads."""
    rng = np.random.default_rng(2)
    W = torch.tensor(rng.standard_normal((64, 50)))
    D = torch.tensor(10.0 ** rng.uniform(-2, 2, (64, 50)))
    a = torch.tensor(np.linalg.norm((D * W).numpy(), axis=1) * rng.uniform(0.2, 0.9, 64))
    b = torch.zeros(64, dtype=torch.float64)
    counts = {}
    for mode in ("array", "triton"):
        for name, bb in (("operator", None), ("search", b)):
            with OperationCount() as c:
                X = _solve(W, D, a, mode, gather=gather, b=bb)
            counts[mode, name] = (c.launching, c.ops["aten._local_scalar_dense.default"], X)
    want = counts["array", "operator"][2].numpy()
    launching, reads, X = counts["triton", "operator"]
    assert_matches_reference(X, want, "float64", float(W.abs().max()))
    assert reads == 0 and launching <= 3  # (the kernel, the output, the thresholds' copy)
    assert counts["array", "operator"][0] > 100 and counts["array", "operator"][1] > 1
    launching, reads, X = counts["triton", "search"]
    assert_matches_reference(X, want, "float64", float(W.abs().max()))
    # (the operator's own reads: the device's route one for which cases occur,
    # the host's one per case and one for saturated rows)
    assert reads == (4 if gather else 1) and counts["array", "search"][1] > reads
    assert 3 * launching < counts["array", "search"][0]  # (the rest: the operator around the search, ~160)


@pytest.mark.parametrize("group", [False, True])
def test_exclusive_operator_is_one_launch_without_host_reads(group):
    """The array code sorts, gathers and reads; the kernel is one launch
    (the exclusive lasso, and group+exclusive with its outer root search)."""
    rng = np.random.default_rng(2)
    W = torch.tensor(rng.standard_normal((64, 50)))
    D = torch.tensor(10.0 ** rng.uniform(-2, 2, (64, 50)))
    b = torch.tensor(10.0 ** rng.uniform(-3, 1, 64))
    counts = {}
    a = torch.tensor(np.linalg.norm((D * W).numpy(), axis=1) * rng.uniform(0.2, 0.9, 64))
    for mode in ("array", "triton"):
        with OperationCount() as c:
            X = _solve_gx(W, D, a, b, mode) if group else _solve_exclusive(W, D, b, mode)
        counts[mode] = (c.launching, c.ops["aten._local_scalar_dense.default"], X)
    launching, reads, X = counts["triton"]
    assert reads == 0 and launching <= 3 and counts["array"][0] > 100
    _assert_as_array_code(X, counts["array"][2].numpy(), W.numpy())


def test_rows_of_several_tiles_and_programs(monkeypatch):
    """The GPU's blocking (rows walked in tiles of columns, several rows
    per program) in the interpreter: small tiles, a row length that is not
    a multiple of them, for both kernels.  13 rows: four programs of 4
    rows, the last holding one; rows with a = 0 and a = inf, 2 rows zeroed
    and 9 shrunk (37 rows took 84 s in the interpreter on a 2-core Zen 1 VM,
    13 about a third of that)."""
    W, D, a = _problem(13, 50, np.float64, 4)
    W, D, a = (torch.tensor(x) for x in (W, D, a))
    bx = a / W.abs().sum(dim=1)
    solvers = [lambda mode: _solve(W, D, a, mode), lambda mode: _solve_exclusive(W, D, bx, mode),
               lambda mode: _solve_gx(W, D, a * 0.5, bx, mode)]
    for solve in solvers:
        one_tile = solve("triton")
        with monkeypatch.context() as m:
            m.setattr(tm, "blocks", lambda G, m, interpret: (4, 8))
            before = tm.launches
            tiled = solve("triton")
            assert tm.launches == before + 1
        _assert_as_array_code(tiled, one_tile.numpy(), W.numpy())
        _assert_as_array_code(tiled, solve("array").numpy(), W.numpy())


def test_no_rows_no_launch():
    before = tm.launches
    z = torch.zeros(0, dtype=torch.float64)
    out = tm.group_lasso_roots(torch.zeros((0, 3), dtype=torch.float64), torch.ones((0, 3), dtype=torch.float64), z, z, z, 300)
    assert out.shape == (0,) and tm.launches == before


def test_auto_takes_the_kernel_only_on_cuda_tensors():
    from proxlib.backends import _xp_kernels

    for mode, cpu in (("auto", None), ("array", None), ("triton", tm)):
        assert _xp_kernels._triton_module(torch.zeros(2, 2), mode, "_triton_metric") is cpu
        assert _xp_kernels._triton_module(np.zeros((2, 2)), mode, "_triton_metric") is None


def _compile_sm90(kernel, sig, consts):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    compiled = triton.compile(ASTSource(kernel, sig, constexprs=consts),
                              target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    assert "fma" not in ptx and "div.rn.f64" in ptx and "sqrt.rn.f64" in ptx
    assert "sqrt.approx" not in ptx and "div.approx" not in ptx and "div.full" not in ptx


def test_root_search_kernel_compiles_for_sm90_with_correctly_rounded_float64():
    sig = {k: "*fp64" for k in ("V", "Dn", "a", "lo", "hi", "out")}
    sig.update(G="i32", m="i32", max_iter="i32", BLOCK_R="constexpr", BLOCK_M="constexpr")
    _compile_sm90(tm.roots_kernel(False), sig, dict(BLOCK_R=tm.GPU_BLOCK_R, BLOCK_M=tm.GPU_BLOCK_M))




@pytest.mark.parametrize(("dtype", "metric"), [("fp32", "fp32"), ("fp64", "fp64"), ("fp32", "fp64")])  # (fp64 metric of fp32 rows: the metric 1)
def test_operator_kernel_compiles_for_sm90_with_correctly_rounded_float64(dtype, metric):
    sig = {"W": f"*{dtype}", "w_r": "i64", "w_c": "i64", "D": f"*{metric}", "d_r": "i64", "d_c": "i64", "a": "*fp64", "a_r": "i32",
           "b": "*fp64", "b_r": "i32", "X": f"*{dtype}", "G": "i32", "m": "i32", "max_iter": "i32", "BLOCK_R": "constexpr", "BLOCK_M": "constexpr"}
    _compile_sm90(tm.kernel(False), sig, dict(BLOCK_R=tm.GPU_BLOCK_R, BLOCK_M=tm.GPU_BLOCK_M))

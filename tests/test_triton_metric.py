"""The group lasso's root search in a diagonal metric as one Triton kernel (``_triton_metric``).

CI has no GPU: the kernel runs in Triton's interpreter on CPU tensors (the
same source the GPU compiles), and the compiled kernel is checked by
compiling it for sm_90 with Triton's own compiler:

* the metric group lasso on the torch route with the kernel
  (``_metric_kernels.ROOT_SEARCH = "triton"``) equals the 60-digit
  reference row by row to the metric tests' tolerance, on their Hypothesis
  problems, and the array search's result to the parity tolerance (its
  row sums add in another order: not bit for bit), also on long rows
  (several tiles on a GPU) and rows of extreme scales;
* the search is one launch and reads nothing on the host, where the array
  code makes about fifteen operations a step and reads every four steps;
* the kernel compiles for sm_90 with correctly rounded float64 division
  and square root and no FMA.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import _device  # noqa: E402
import _metric_ref as M  # noqa: E402
from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)
from test_metric_ops import metric_row_problems, row_thresholds, rows_close  # noqa: E402

from proxlib.backends import _metric_kernels as MK  # noqa: E402
from proxlib.backends import _triton_metric as tm  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402


def _solve(W, D, a, mode, gather=False):
    """The torch route's metric group lasso with the root search by ``mode``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(MK, "ROOT_SEARCH", mode)
        return MK.group_lasso_metric(W, D, a, gather=gather)


@given(metric_row_problems(max_rows=5, max_cols=6))
def test_kernel_root_equals_the_60_digit_reference(problem):
    W, D, lam, _, step, gw = problem
    a, _ = row_thresholds(W.shape, lam, 0.0, step, gw)
    before = tm.launches
    X = _solve(torch.tensor(W), torch.tensor(D), torch.tensor(a), "triton").numpy()
    searched = bool(np.any((np.hypot.reduce(D * W, axis=1) > a) & (a > 0)))  # (a norm whose squares underflow too)
    assert tm.launches - before == int(searched)  # (only where a row is searched)
    ref = np.array([M.exact_group_exclusive_metric_row(W[g], D[g], a[g], 0.0) for g in range(W.shape[0])])
    rows_close(X, ref, W, D, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 9, 300, 1000])
def test_kernel_matches_the_array_search_on_the_test_device(dtype, m):
    """On the test device (``benchmarks/gpu_session.sh`` runs this on CUDA:
    rows of several tiles there), rows of scales 1e-4 to 1e4 with a metric
    spanning 1e-3 to 1e3, thresholds that zero some rows: the kernel's
    result is the array search's to the parity tolerance."""
    rng = np.random.default_rng(m)
    G = 64
    W = (rng.standard_normal((G, m)) * 10.0 ** rng.uniform(-4, 4, (G, 1))).astype(dtype)
    D = (10.0 ** rng.uniform(-3, 3, (G, m))).astype(dtype)
    a = np.linalg.norm(D.astype(np.float64) * W, axis=1) * rng.uniform(0.0, 1.2, G)
    args = [_device.tensor(x) for x in (W, D, a)]
    got = _solve(*args, "triton")
    assert got.device.type == _device.DEVICE and got.dtype == args[0].dtype
    want = _device.to_numpy(_solve(*args, "array"))
    assert_matches_reference(got, want, str(W.dtype), float(np.abs(W).max()))


@pytest.mark.parametrize("gather", [True, False])
def test_search_is_one_launch_without_host_reads(gather):
    """The array search reads the host once per step (the host's route) or
    per four steps (a device's) and makes about fifteen operations a step;
    the kernel's search is one launch and no read."""
    rng = np.random.default_rng(2)
    W = torch.tensor(rng.standard_normal((64, 50)))
    D = torch.tensor(10.0 ** rng.uniform(-2, 2, (64, 50)))
    a = torch.tensor(np.linalg.norm((D * W).numpy(), axis=1) * rng.uniform(0.2, 0.9, 64))
    counts = {}
    for mode in ("array", "triton"):
        with OperationCount() as c:
            X = _solve(W, D, a, mode, gather=gather)
        counts[mode] = (c.launching, c.ops["aten._local_scalar_dense.default"], X)
    launching, reads, X = counts["triton"]
    assert_matches_reference(X, counts["array"][2].numpy(), "float64", float(W.abs().max()))
    # (the operator's own reads: the device's route one for which cases occur,
    # the host's one per case and one for saturated rows)
    assert reads == (4 if gather else 1) and counts["array"][1] > reads
    assert 3 * launching < counts["array"][0]  # (the rest: the operator around the search, ~160)


def test_rows_of_several_tiles_and_programs(monkeypatch):
    """The GPU's blocking (rows walked in tiles of columns, several rows
    per program) in the interpreter: small tiles, a row length that is not
    a multiple of them."""
    rng = np.random.default_rng(4)
    W = torch.tensor(rng.standard_normal((37, 50)) * 10.0 ** rng.uniform(-3, 3, (37, 1)))
    D = torch.tensor(10.0 ** rng.uniform(-2, 2, (37, 50)))
    a = torch.tensor(np.linalg.norm((D * W).numpy(), axis=1) * rng.uniform(0.0, 1.1, 37))
    one_tile = _solve(W, D, a, "triton")
    monkeypatch.setattr(tm, "blocks", lambda G, m, interpret: (4, 8))
    before = tm.launches
    tiled = _solve(W, D, a, "triton")
    assert tm.launches == before + 1
    assert_matches_reference(tiled, one_tile.numpy(), "float64", float(W.abs().max()))
    assert_matches_reference(tiled, _solve(W, D, a, "array").numpy(), "float64", float(W.abs().max()))


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


def test_kernel_compiles_for_sm90_with_correctly_rounded_float64():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    sig = {k: "*fp64" for k in ("V", "Dn", "a", "lo", "hi", "out")}
    sig.update(G="i32", m="i32", max_iter="i32", BLOCK_R="constexpr", BLOCK_M="constexpr")
    consts = dict(BLOCK_R=tm.GPU_BLOCK_R, BLOCK_M=tm.GPU_BLOCK_M)
    compiled = triton.compile(ASTSource(tm.kernel(False), sig, constexprs=consts),
                              target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    assert "fma" not in ptx and "div.rn.f64" in ptx and "sqrt.rn.f64" in ptx
    assert "sqrt.approx" not in ptx and "div.approx" not in ptx and "div.full" not in ptx

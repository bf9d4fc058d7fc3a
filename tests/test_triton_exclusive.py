"""The exclusive penalties' rows as one Triton kernel (``_triton_exclusive``).

CI has no GPU: the kernel runs in Triton's interpreter on CPU tensors (the
same source the GPU compiles), and the compiled kernel is checked by
compiling it for sm_90 with Triton's own compiler:

* on CPU tensors the kernel's result equals, bit for bit, the array code's
  (``_xp_kernels.exclusive_lasso`` run by torch) on Hypothesis rows: lengths
  that are and are not powers of two, magnitudes across the float range
  (subnormal rows, rows near the largest float), ties and zeros, b = 0,
  tiny, huge and infinite, rows holding NaN or Inf; float32 and float64;
  any strides; several programs;
* on the test device (``PROXLIB_TEST_DEVICE``) it matches the NumPy
  reference to the parity tolerance (a GPU's scan adds the shifted sums in
  a tree: not bit for bit there);
* ``check_finite`` raises as the array code does, and nothing else reads
  the host: one launch per call, a small fraction of the array code's
  operations;
* group+exclusive (the same kernel with its root search) matches the NumPy
  reference to the parity tolerance on the same rows with group
  thresholds that zero some rows, and its results pass their optimality
  certificates (its sums over a row add in another order than the array
  code's: not bit for bit);
* the exclusive lasso's rows longer than ``MAX_M`` take the kernel of
  rows of any length (Newton's method over tiles): on the same Hypothesis
  rows (with ``MAX_M`` lowered so that they take it) it matches the NumPy
  reference to the parity tolerance, keeps non-finite rows as they are,
  and its results pass their optimality certificates; also with the GPU's
  tiles, and on the test device at ResNet-18's longest rows (4608);
* group+exclusive's rows longer than ``MAX_M`` take the metric kernel in the
  metric 1 (``_triton_metric``: supports searched over tiles, rows of any
  length; ResNet-18's 4608 on the test device), other dtypes the array code;
* both kernels compile for sm_90 with correctly rounded float64 division
  and no FMA.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxlib.backends import NonFiniteInput, _xp_kernels, numpy_ref

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import _device  # noqa: E402
from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)

import proxlib  # noqa: E402
from proxlib.backends import _triton_exclusive as tx  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402

INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _solve(W, b, mode, check_finite=False):
    """The torch route's exclusive lasso of W with the rows solved by ``mode``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_xp_kernels, "EXCLUSIVE_ROWS", mode)
        return _xp_kernels.exclusive_lasso(W, b, sort=torch_dev._sort_desc, check_finite=check_finite)


def _solve_gx(W, a, b, mode, check_finite=False):
    """The torch route's group+exclusive of W with the rows solved by ``mode``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_xp_kernels, "EXCLUSIVE_ROWS", mode)
        return _xp_kernels.group_exclusive(W, a, b, sort=torch_dev._sort_desc, check_finite=check_finite, gather=False)


def _same_bits(X, Y):
    return X.dtype == Y.dtype and X.shape == Y.shape and torch.equal(X.view(INT[X.dtype]), Y.view(INT[Y.dtype]))


@st.composite
def problems(draw):
    G = draw(st.integers(1, 9))
    m = draw(st.sampled_from([1, 2, 3, 5, 8, 9, 16, 31, 64, 100]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = 30 if dtype == torch.float32 else 300
    W = rng.standard_normal((G, m)) * 10.0 ** rng.uniform(-top, top, (G, 1))
    if draw(st.booleans()):  # ties and zeros
        W = np.round(W * 2.0 / np.abs(W).max(axis=1, keepdims=True)) * np.abs(W).max(axis=1, keepdims=True)
    if draw(st.booleans()):  # a row of subnormals and one near the largest float
        tiny, huge = (1e-40, 1e38) if dtype == torch.float32 else (1e-310, 1e307)
        W[0] = rng.standard_normal(m) * tiny
        W[-1] = rng.standard_normal(m) * huge
    b = 10.0 ** rng.uniform(-4, 4, G) / m
    special = draw(st.sampled_from(["none", "zero", "inf", "huge", "tiny", "nan row", "inf row"]))
    if special == "zero":
        b[0] = 0.0
    elif special == "inf":
        b[-1] = np.inf
    elif special == "huge":
        b[0] = 2.0**900
    elif special == "tiny":
        b[-1] = 2.0**-900
    X = torch.tensor(W, dtype=dtype)
    if special == "nan row":
        X[0, m // 2] = float("nan")
    elif special == "inf row":
        X[-1, 0] = -float("inf")
    transposed = draw(st.booleans())
    if transposed:  # the same rows as a view with other strides
        X = X.T.contiguous().T
    return X, torch.tensor(b)


@given(problems())
def test_kernel_equals_the_array_code_bit_for_bit(problem):
    W, b = problem
    before = tx.launches
    got = _solve(W, b, "triton")
    assert tx.launches == before + 1
    assert _same_bits(got, _solve(W, b, "array"))


@given(problems(), st.floats(0.0, 1.3), st.integers(0, 2**32 - 1))
def test_group_exclusive_kernel_matches_the_reference(problem, spread, seed):
    """Group thresholds up to 1.3 times the row's norm (rows zeroed, rows
    searched, a = 0 on some rows: the exclusive lasso alone) with the
    exclusive parameters of the problem (b = 0: the group lasso alone)."""
    W, b = problem
    rng = np.random.default_rng(seed)
    Wn = W.numpy()
    with np.errstate(over="ignore"):  # (a float32 row near the largest float: a norm of inf zeroes nothing)
        nrm = np.linalg.norm(np.nan_to_num(Wn.astype(np.float64), posinf=0.0, neginf=0.0), axis=1)
    a = nrm * rng.uniform(0.0, spread, nrm.shape[0])
    a[rng.uniform(size=a.shape[0]) < 0.2] = 0.0
    before = tx.launches
    got = _solve_gx(W, torch.tensor(a), b, "triton")
    assert tx.launches == before + 1 and got.dtype == W.dtype
    scale = float(np.nan_to_num(np.abs(Wn), posinf=0.0).max())
    assert_matches_reference(got, numpy_ref.group_exclusive(Wn, a, b.numpy()), str(Wn.dtype), scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_group_exclusive_kernel_passes_the_certificates(monkeypatch, dtype):
    """prox_group_exclusive on torch tensors, rows solved by the kernel:
    each row's optimality certificate holds, and the result is the array
    route's to the parity tolerance."""
    rng = np.random.default_rng(5)
    W = torch.tensor(rng.standard_normal((40, 30)) * 10.0 ** rng.uniform(-3, 3, (40, 1)), dtype=dtype)
    for lam, mu in ((0.3, 0.5), (2.0, 0.9), (0.05, 0.1)):
        pen = proxlib.GroupExclusive(lam, mu)
        results = {}
        for mode in ("array", "triton"):
            monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", mode)
            results[mode] = proxlib.prox_group_exclusive(W, lam, mu, 0.7)
        cert = proxlib.certificates.certify(pen, W, results["triton"], 0.7)
        assert cert.ok, (cert.residual, cert.tolerance)
        assert_matches_reference(results["triton"], results["array"].numpy(), str(W.numpy().dtype), float(W.abs().max()))


def test_kernel_matches_the_reference_on_the_test_device():
    """On the test device (``benchmarks/gpu_session.sh`` runs this on CUDA):
    the compiled kernel against the NumPy reference, to the parity
    tolerance; on CPU tensors the interpreter, bit for bit with the array
    code (above)."""
    rng = np.random.default_rng(3)
    for dtype, m in ((np.float64, 9), (np.float32, 64), (np.float64, 512), (np.float32, 1000)):
        W = (rng.standard_normal((300, m)) * 10.0 ** rng.uniform(-4, 4, (300, 1))).astype(dtype)
        W[0] = 0.0
        W[1, :3] = 1.0  # ties
        b = 10.0 ** rng.uniform(-3, 3, 300) / m
        b[2] = 0.0
        b[3] = np.inf
        got = _solve(_device.tensor(W), _device.tensor(b), "triton")
        assert got.device.type == _device.DEVICE and got.dtype == _device.tensor(W).dtype
        assert_matches_reference(got, numpy_ref.exclusive_lasso(W, b), str(W.dtype), float(np.abs(W).max()))


def test_more_rows_than_a_program_holds(monkeypatch):
    rng = np.random.default_rng(1)
    W = torch.tensor(rng.standard_normal((300, 20)) * 10.0 ** rng.uniform(-3, 3, (300, 1)))
    b = torch.tensor(10.0 ** rng.uniform(-2, 2, 300))
    monkeypatch.setattr(tx, "INTERPRET_LANES", 64)
    assert tx.blocks(300, 20, True)[0] == 2
    assert _same_bits(_solve(W, b, "triton"), _solve(W, b, "array"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("group", [False, True])
def test_check_finite_raises_as_the_array_code_does(bad, group):
    W = torch.randn(4, 6, dtype=torch.float64)
    W[2, 3] = bad
    b = torch.full((4,), 0.5, dtype=torch.float64)
    a = torch.full((4,), 0.3, dtype=torch.float64)
    solve = (lambda W, mode, **kw: _solve_gx(W, a, b, mode, **kw)) if group else (lambda W, mode, **kw: _solve(W, b, mode, **kw))
    for mode in ("triton", "array"):
        with pytest.raises(NonFiniteInput):
            solve(W, mode, check_finite=True)
        X = solve(W, mode)  # unchecked: the row comes back as it is
        assert torch.equal(X[2].isnan(), W[2].isnan()) and torch.equal(X[2][~X[2].isnan()], W[2][~W[2].isnan()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("group", [False, True])
def test_one_launch_no_host_read_and_few_operations(dtype, group):
    """The kernel is the operator's only launch besides its outputs'
    allocations; the array code makes sixty or more launching operations
    (group+exclusive's device route: with the Triton root search, which
    ``ROOT_SEARCH = "auto"`` takes on CUDA, and no host read; the array
    search reads the host every four steps).  The kernel reads nothing
    without check_finite."""
    rng = np.random.default_rng(2)
    W = torch.tensor(rng.standard_normal((64, 50)), dtype=dtype)
    b = torch.tensor(10.0 ** rng.uniform(-2, 1, 64))
    a = torch.tensor(np.linalg.norm(rng.standard_normal((64, 50)), axis=1) * 0.5)
    counts = {}
    for mode in ("array", "triton"):
        with pytest.MonkeyPatch.context() as m, OperationCount() as c:
            m.setattr(_xp_kernels, "ROOT_SEARCH", "triton")
            _solve_gx(W, a, b, mode) if group else _solve(W, b, mode)
        counts[mode] = c
    assert counts["triton"].ops["triton"] == 1
    assert counts["triton"].launching <= 4 and counts["array"].launching >= 60
    for c in counts.values():
        assert c.ops["aten._local_scalar_dense.default"] == 0


def test_long_group_exclusive_rows_take_the_metric_kernel_and_other_dtypes_the_array_code(monkeypatch):
    """Group+exclusive's rows longer than the sort kernel's MAX_M (lowered
    to 16 here) take the metric kernel in the metric 1 (one launch, the
    array code's result to the parity tolerance); float16 the array code."""
    from proxlib.backends import _triton_metric as tmk

    monkeypatch.setattr(tx, "MAX_M", 16)
    before, before_m = tx.launches, tmk.launches
    W = torch.randn(3, 17, dtype=torch.float64)
    a = torch.full((3,), 0.2, dtype=torch.float64)
    b = torch.full((3,), 0.1, dtype=torch.float64)
    X = _solve_gx(W, a, b, "triton")
    assert tmk.launches == before_m + 1 and tx.launches == before
    assert_matches_reference(X, _solve_gx(W, a, b, "array"), "float64", float(W.abs().max()))
    H = W.to(torch.float16)
    assert torch.equal(_solve_gx(H, a, b, "triton"), _solve_gx(H, a, b, "array")) and tmk.launches == before_m + 1
    assert not tx.fits(torch.zeros(3, 4, dtype=torch.float16)) and not tx.fits(torch.zeros(3, dtype=torch.float32))
    assert tx.fits(W[:, :16], group=True) and not tx.fits(W, group=True) and tx.fits(W) and tx.launches == before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_group_exclusive_rows_longer_than_the_sort_kernels(dtype):
    """ResNet-18's longest "shape" rows (3 x 3 x 512 = 4608) on the test
    device: the metric kernel in the metric 1 matches the NumPy reference
    to the parity tolerance, with group thresholds that zero some rows and
    exclusive ones from 1/m to 100/m; a row holding NaN comes back as it is,
    and check_finite raises before anything is written."""
    rng = np.random.default_rng(7)
    G, m = 6, 4608
    Wn = (rng.standard_normal((G, m)) * rng.uniform(0.5, 2.0, (G, 1))).astype(str(dtype).removeprefix("torch."))
    an = np.linalg.norm(Wn.astype(np.float64), axis=1) * np.array([0.0, 0.2, 0.5, 0.9, 1.1, 0.3])
    bn = np.array([1.0, 1.0, 10.0, 100.0, 1.0, 0.0]) / m
    W, a, b = (_device.tensor(x) for x in (Wn, an, bn))
    _solve_gx(W, a, b, "triton")  # (the thresholds' kept values made)
    with OperationCount() as c:
        X = _solve_gx(W, a, b, "triton")
    # the launch, its output and the per-row thresholds' views; the metric 1 is a kept 1 read with stride 0 (no tensor formed)
    assert dict(c.ops) == {"triton": 1, "aten.empty.memory_format": 1, "aten.expand.default": 2}, dict(c.ops)
    ref = numpy_ref.group_exclusive(Wn, an, bn)
    assert_matches_reference(X.cpu(), ref, str(Wn.dtype), float(np.abs(Wn).max()))
    assert not bool(X[4].any())  # ||w|| <= a: zeroed
    W[1, 7] = float("nan")
    X = _solve_gx(W, a, b, "triton")
    assert torch.equal(X[1].isnan(), W[1].isnan()) and bool(torch.isfinite(X[[0, 2, 3, 4, 5]]).all())
    with pytest.raises(NonFiniteInput):
        _solve_gx(W, a, b, "triton", check_finite=True)


def _long(W, b, monkeypatch=None, check_finite=False):
    """The exclusive lasso by the kernel of long rows (MAX_M lowered below every row)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(tx, "MAX_M", 0)
        before = tx.launches
        X = _solve(W, b, "triton", check_finite=check_finite)
        assert tx.launches == before + 1
        return X


def _matches_the_reference(X, W, b):
    """The parity tolerance against the NumPy reference on the finite rows;
    the others as they are."""
    Wn = W.numpy()
    finite = np.isfinite(Wn).all(axis=1)
    assert X.dtype == W.dtype and X.is_contiguous()
    assert torch.equal(X[~torch.tensor(finite)].isnan(), W[~torch.tensor(finite)].isnan())
    if finite.any():
        ref = numpy_ref.exclusive_lasso(Wn[finite], b.numpy()[finite])
        assert_matches_reference(X[torch.tensor(finite)], ref, str(Wn.dtype), float(np.abs(Wn[finite]).max()))


@given(problems())
def test_long_rows_kernel_matches_the_reference(problem):
    W, b = problem
    _matches_the_reference(_long(W, b), W, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_rows_kernel_passes_the_certificates(dtype):
    """prox_exclusive_lasso with the long rows' kernel: each row's
    optimality certificate holds (rows of ResNet-18's longest "shape"
    rows, 3 x 3 x 512), with the GPU's tiles."""
    rng = np.random.default_rng(8)
    W = torch.tensor(rng.standard_normal((6, 4608)) * 10.0 ** rng.uniform(-3, 3, (6, 1)), dtype=dtype)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "triton")
        m.setattr(tx, "long_blocks", lambda G, m_, interpret: (tx.LONG_BLOCK_R, tx.LONG_BLOCK_M))
        for lam in (1e-4, 1e-2, 1.0):
            before = tx.launches
            X = proxlib.prox_exclusive_lasso(W, lam, 0.7)
            assert tx.launches == before + 1
            cert = proxlib.certificates.certify(proxlib.ExclusiveLasso(lam), W, X, 0.7)
            assert cert.ok, (lam, cert.residual, cert.tolerance)


def test_long_rows_kernel_on_the_test_device():
    """On the test device (``benchmarks/gpu_session.sh`` runs this on CUDA):
    rows of 2049 and 4608 entries, against the NumPy reference."""
    rng = np.random.default_rng(9)
    for dtype, m in ((np.float32, 4608), (np.float64, 2049)):
        W = (rng.standard_normal((64, m)) * 10.0 ** rng.uniform(-4, 4, (64, 1))).astype(dtype)
        W[0] = 0.0
        W[1, :5] = 1.0  # ties
        b = 10.0 ** rng.uniform(-4, 2, 64) / m
        b[2], b[3] = 0.0, np.inf
        before = tx.launches
        got = _solve(_device.tensor(W), _device.tensor(b), "triton")
        assert tx.launches == before + 1 and got.device.type == _device.DEVICE
        assert_matches_reference(got, numpy_ref.exclusive_lasso(W, b), str(W.dtype), float(np.abs(W).max()))


def test_long_rows_kernel_checks_finite_and_reads_nothing_else():
    W = torch.randn(4, 40, dtype=torch.float64)
    b = torch.full((4,), 0.5, dtype=torch.float64)
    with OperationCount() as c:
        X = _long(W, b)
    assert c.ops["triton"] == 1 and c.launching <= 4 and c.ops["aten._local_scalar_dense.default"] == 0
    _matches_the_reference(X, W, b)
    W[1, 7] = float("nan")
    with pytest.raises(NonFiniteInput):
        _long(W, b, check_finite=True)


def test_public_function_and_proximal_step_take_the_kernel(monkeypatch):
    """prox_exclusive_lasso on a torch tensor and a ProximalStep's stacked
    rows, with the kernel: the results of the array code, bit for bit."""
    torch.manual_seed(0)
    W = torch.randn(30, 40)
    results = {}
    for mode in ("array", "triton"):
        monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", mode)
        before = tx.launches
        x = proxlib.prox_exclusive_lasso(W, 0.05)
        net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6))
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        prox = proxlib.torch.ProximalStep(opt, model=net)
        for layer in (net[0], net[2]):
            prox.add(layer, proxlib.ExclusiveLasso(0.3), grouping="row")
        prox.step()
        results[mode] = (x, net[0].weight.detach().clone(), net[2].weight.detach().clone(), tx.launches - before)
    *arrays, launched = results["array"]
    *kernels, launched_k = results["triton"]
    assert launched == 0 and launched_k >= 2
    for a, k in zip(arrays, kernels):
        assert _same_bits(a, k)


def test_auto_takes_the_kernel_only_on_cuda_tensors():
    for mode, cpu in (("auto", None), ("array", None), ("triton", tx)):
        assert _xp_kernels._triton_module(torch.zeros(2, 2), mode, "_triton_exclusive") is cpu
        assert _xp_kernels._triton_module(np.zeros((2, 2)), mode, "_triton_exclusive") is None


def test_kernel_compiles_for_sm90_with_correctly_rounded_float64():
    """Triton compiles the kernel for an H100/H200 (sm_90) with no GPU
    present (short rows; the exclusive lasso in float32 and float64,
    group+exclusive with its root search in float64): IEEE division and
    square root, no FMA, so it rounds as the interpreter and torch do."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    variants = [(dt, group, False) for dt, group in (("fp32", False), ("fp64", False), ("fp64", True))]
    variants += [(dt, group, True) for dt in ("fp32", "fp64") for group in (False, True)]  # (in place, through a row table)
    for dt, group, table in variants:
        block_r, block_m, log_m = tx.blocks(100, 9, interpret=False)
        data = "*i64" if table else f"*{dt}"  # (a table: the rows' addresses)
        sig = dict(W=data, s_r="i64", s_c="i64", a="*fp64", b="*fp64", X=data, T="*fp64", G="i32", m="i32",
                   max_iter="i32", SHAPE="*i64", BLOCK_R="constexpr", BLOCK_M="constexpr", LOG_M="constexpr", GROUP="constexpr",
                   TABLE="constexpr", F64="constexpr")
        consts = dict(BLOCK_R=block_r, BLOCK_M=block_m, LOG_M=log_m, GROUP=group, TABLE=table, F64=dt == "fp64")
        compiled = triton.compile(ASTSource(tx.kernel(False), sig, constexprs=consts),
                                  target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
        ptx = compiled.asm["ptx"]
        assert ".target sm_90" in ptx and compiled.asm["cubin"]
        assert "fma" not in ptx and "div.rn.f64" in ptx and ("sqrt.rn.f64" in ptx) == group
        assert "div.approx" not in ptx and "div.full" not in ptx and "sqrt.approx" not in ptx
    for dt, table in (("fp32", False), ("fp64", False), ("fp32", True), ("fp64", True)):  # the long rows' kernel
        data = "*i64" if table else f"*{dt}"
        sig = dict(W=data, s_r="i64", s_c="i64", b="*fp64", X=data, T="*fp64", G="i32", m="i32", SHAPE="*i64",
                   BLOCK_R="constexpr", BLOCK_M="constexpr", TABLE="constexpr", F64="constexpr")
        consts = dict(BLOCK_R=tx.LONG_BLOCK_R, BLOCK_M=tx.LONG_BLOCK_M, TABLE=table, F64=dt == "fp64")
        compiled = triton.compile(ASTSource(tx.long_kernel(False), sig, constexprs=consts),
                                  target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
        ptx = compiled.asm["ptx"]
        assert ".target sm_90" in ptx and compiled.asm["cubin"]
        assert "fma" not in ptx and "div.rn.f64" in ptx
        assert "div.approx" not in ptx and "div.full" not in ptx


# ---------------------------------------------------------------- in place, through row tables


def _net(dtype, layout="contiguous"):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3), torch.nn.Flatten(),
                              torch.nn.Linear(5 * 4 * 4, 7)).to(device=_device.DEVICE, dtype=dtype)  # fmt: skip
    return net.to(memory_format=torch.channels_last) if layout == "channels_last" else net


def _penalty(kind: str, G: int, weights: bool):
    w = np.linspace(0.5, 1.5, G) if weights else None
    return proxlib.ExclusiveLasso(0.05, group_weights=w) if kind == "exclusive" else proxlib.GroupExclusive(0.05, 0.3, group_weights=w)


def _stepped(net, groupings, kind, *, check_finite=False, weights=False, steps=2):
    prox = proxlib.torch.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.5), check_finite=check_finite)
    for layer, grouping in zip([m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))], groupings):
        prox.add(layer, _penalty(kind, proxlib.to_rows(layer.weight.detach(), grouping).shape[0], weights), grouping=grouping)
    for _ in range(steps):
        prox.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.fixture
def torch_route(monkeypatch):
    """The exclusive penalties' kernel on, and CPU tensors on the torch route (the GPU's)."""
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "triton")
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "torch")


def _no_tables(monkeypatch):
    """The exclusive penalties' terms stacked (copied, solved, copied back) instead."""
    from proxlib.torch import _batched

    monkeypatch.setattr(_batched, "TABLE_KINDS", {k: v for k, v in _batched.TABLE_KINDS.items() if k in ("group_lasso", "growl")})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kind", ["exclusive", "group+exclusive"])
@pytest.mark.parametrize("groupings", [("channel", "shape", "filter"), ("shape", "filter", "shape")])
@pytest.mark.parametrize("weights", [False, True])
def test_a_step_solves_the_rows_in_place_as_the_stacks_do(dtype, layout, kind, groupings, weights, torch_route, monkeypatch):
    """A training step's exclusive rows read and written where they are (one
    launch per row length), equal to the stacked kernel's bit for bit on CPU
    tensors (the same kernel on the same rows): convolutions' "channel" rows
    (two levels), "shape" rows (strided) and "filter" rows, a Linear's
    columns, channels-last storage, per-row weights; two steps."""
    lengths = {proxlib.to_rows(layer.weight.detach(), g).shape[1]
               for layer, g in zip([m for m in _net(dtype) if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))], groupings)}
    before = tx.launches
    got = _stepped(_net(dtype, layout), groupings, kind, weights=weights)
    assert tx.launches - before == 2 * len(lengths)
    _no_tables(monkeypatch)
    ref = _stepped(_net(dtype, layout), groupings, kind, weights=weights)
    for g, r in zip(got, ref):
        if torch.device(_device.DEVICE).type == "cpu":
            assert _same_bits(g, r)
        else:  # (a GPU's reductions may be blocked otherwise for another launch's rows)
            assert_matches_reference(g.cpu().numpy(), r.cpu().numpy(), "float32" if dtype == torch.float32 else "float64", float(r.abs().max()))
    assert sum(int((g == 0).sum()) for g in got[::2]) > 0  # (some entries zeroed)


@pytest.mark.parametrize("check_finite", [False, True])
@pytest.mark.parametrize("kind", ["exclusive", "group+exclusive"])
def test_a_step_is_one_launch_per_row_length_and_no_operation_per_tensor(kind, check_finite, torch_route):
    """Four or eight convolutions of two row lengths: the launches and the
    torch operations of a step do not grow with the number of tensors (the
    tables and thresholds are kept from step to step); with the check, per
    table: the norms' launch, their maximum and its read."""
    from proxlib.backends import _triton_multi as tm

    def count(n):
        torch.manual_seed(0)
        convs = [torch.nn.Conv2d(4, 3 + i % 2, 3).to(_device.DEVICE) for i in range(n)]
        prox = proxlib.torch.ProximalStep(torch.optim.SGD([p for c in convs for p in c.parameters()], lr=0.1), check_finite=check_finite)
        for c in convs:
            prox.add(c, _penalty(kind, 4, False), grouping="shape")  # (rows of 3 and 4 entries)
        prox.step()
        launches = tx.launches + tm.launches
        with OperationCount() as c:
            prox.step()
        assert c.ops["triton"] == tx.launches + tm.launches - launches
        return dict(c.ops)

    four, eight = count(4), count(8)
    assert four == eight
    expected = {"triton": 4, "aten.max.default": 2, "aten._local_scalar_dense.default": 2, "aten.empty.memory_format": 2} if check_finite else {"triton": 2}
    assert eight == expected, eight


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kind", ["exclusive", "group+exclusive"])
def test_rows_longer_than_the_sort_kernels(kind, dtype, layout, torch_route, monkeypatch):
    """Rows longer than MAX_M: the exclusive lasso's are read and written
    in place by the long rows' kernel (its tiles over two-level layouts:
    the GPU's small tiles, so that a tile crosses the layouts' blocks),
    group+exclusive's stacked as before next to the short rows in place;
    the same bits as all stacked."""
    monkeypatch.setattr(tx, "MAX_M", 20)
    monkeypatch.setattr(tx, "long_blocks", lambda G, m, interpret: (2, 8))
    groupings = ("channel", "shape", "filter")  # rows of 54 entries (6 x 9) and 80 beyond MAX_M, of 5 below it
    before = tx.launches
    got = _stepped(_net(dtype, layout), groupings, kind)
    if kind == "exclusive":
        assert tx.launches - before == 2 * 3
    _no_tables(monkeypatch)
    ref = _stepped(_net(dtype, layout), groupings, kind)
    for g, r in zip(got, ref):
        assert _same_bits(g, r)


def test_tables_are_kept_across_steps_for_both_penalties(torch_route, monkeypatch):
    """A step with exclusive and group+exclusive terms on rows of the same
    length builds each penalty's table once: later steps make none (on a GPU
    a table costs two copies to the device)."""
    from test_triton_multi import tables_built

    built = tables_built(monkeypatch)
    net = _net(torch.float32)
    prox = proxlib.torch.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.5))
    prox.add(net[0], proxlib.ExclusiveLasso(0.05), grouping="channel")  # rows of 6 x 9 = 54 entries
    prox.add(net[2], proxlib.GroupExclusive(0.05, 0.3), grouping="filter")  # rows of 6 x 9 = 54 entries
    prox.step()
    assert len(built) == 2
    for _ in range(3):
        prox.step()
    assert len(built) == 2

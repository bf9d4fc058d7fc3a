"""Group+exclusive's root search as one Triton kernel (``_triton_shrink``).

CI has no GPU: the kernel runs in Triton's interpreter on CPU tensors (the same
source the GPU compiles), and the compiled kernel is checked by compiling it
for sm_90 with Triton's own compiler:

* the factor c of every row equals, bit for bit, the array code's
  (``_xp_kernels.group_exclusive_factor`` on NumPy arrays, whose square
  roots and divisions are correctly rounded as the GPU's are), on the
  statistics that the reference operator forms for Hypothesis rows (scales
  from 1e-6 to 1e6, thresholds that zero rows, tiny and large b), on
  brackets that start below 2^-1022, on degenerate brackets and on more rows
  than one program holds;
* the torch backend's group+exclusive takes it with ``ROOT_SEARCH =
  "triton"``: one launch and no host read for the search (none at all on the
  device route), a third of the array code's operations, and the same
  result as the reference to the parity tolerance;
* the kernel compiles for sm_90 with correctly rounded float64 division and
  square root and no FMA.

(torch's own float64 square root on the CPU is not always correctly rounded
-- about 1% of random inputs come out one unit off -- so on CPU tensors the
array code run by torch and the kernel can differ in the last bits of c; on
CUDA both round correctly.)
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxlib.backends import _xp_kernels, numpy_ref

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import _device  # noqa: E402
from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)

from proxlib.backends import _triton_shrink as ts  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402

NP = _xp_kernels.array_namespace(np.zeros(1))
FACTOR = _xp_kernels.group_exclusive_factor


def _factor_inputs(W, a, b):
    """The arguments of every root search the NumPy reference runs for rows W."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(tuple(np.array(x, dtype=np.float64) for x in args[:-1]))
        return FACTOR(*args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(_xp_kernels, "group_exclusive_factor", spy)
        numpy_ref.group_exclusive(W, a, b)
    return calls


def _same_bits(x, y):
    return np.array_equal(np.asarray(x).view(np.int64), np.asarray(y).view(np.int64))


def _kernel(args):
    return ts.group_exclusive_factor(*(torch.from_numpy(x) for x in args), _xp_kernels._MAX_ROOT_ITER).numpy()


@st.composite
def problems(draw):
    G = draw(st.integers(1, 12))
    m = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = 10.0 ** draw(st.integers(-6, 6))
    W = rng.standard_normal((G, m)) * scale
    if draw(st.booleans()):  # ties and zeros
        W = np.round(W / scale) * scale
    nrm = np.linalg.norm(W, axis=1)
    a = nrm * rng.uniform(0.0, 1.3, G)  # some rows zeroed (||w|| <= a)
    b = 10.0 ** rng.uniform(-3, 3, G) / m
    return W, a, b


@given(problems())
def test_kernel_equals_the_array_search_bit_for_bit(problem):
    W, a, b = problem
    calls = _factor_inputs(W, a, b)
    for args in calls:
        assert _same_bits(_kernel(args), FACTOR(*args, NP))


def test_kernel_equals_the_array_code_on_the_test_device():
    """On the test device (``PROXLIB_TEST_DEVICE``; ``benchmarks/gpu_session.sh``
    runs this on CUDA): the compiled kernel against the array code run by
    torch on CUDA tensors, whose float64 division and square root round
    correctly, bit for bit; on CPU tensors the interpreter against the array
    code on NumPy."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((500, 9)) * 10.0 ** rng.uniform(-4, 4, (500, 1))
    a = np.linalg.norm(W, axis=1) * rng.uniform(0.0, 0.95, 500)
    b = 10.0 ** rng.uniform(-3, 3, 500)
    (args,) = _factor_inputs(W, a, b)
    got = ts.group_exclusive_factor(*(_device.tensor(x) for x in args), _xp_kernels._MAX_ROOT_ITER)
    assert got.device.type == _device.DEVICE
    if _device.DEVICE == "cpu":
        want = FACTOR(*args, NP)
    else:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_xp_kernels, "ROOT_SEARCH", "array")
            T = [_device.tensor(x) for x in args]
            want = _device.to_numpy(FACTOR(*T, _xp_kernels.array_namespace(T[0])))
    assert _same_bits(_device.to_numpy(got), want)


def test_brackets_below_the_least_normal_and_degenerate_ones():
    """left below 2^-1022 (and 0) is clipped as the array code clips it; a
    bracket of one point, of two adjacent floats, and a stand-in row."""
    rng = np.random.default_rng(0)
    G = 9
    Yk = rng.uniform(0.5, 1.0, G)
    Fk = rng.uniform(0.0, 2.0, G)
    D2 = rng.uniform(0.0, 1.0, G)
    kf = rng.integers(1, 5, G).astype(np.float64)
    left = np.array([0.0, 1e-320, 2.0**-1022, 0.25, 0.5, 0.3, np.nextafter(0.3, 1.0), 0.0, 0.1])
    right = np.array([1.0, 1.0, 1.0, 0.25, 0.75, np.nextafter(0.3, 1.0), np.nextafter(0.3, 1.0), 1.0, 0.9])
    a = rng.uniform(0.01, 0.5, G)
    b = 10.0 ** rng.uniform(-2, 2, G)
    args = (Yk, Fk, D2, kf, left, right, a, b)
    assert _same_bits(_kernel(args), FACTOR(*args, NP))


def test_more_rows_than_a_program_holds(monkeypatch):
    """Several programs (a small block), and rows converging at different steps."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((300, 7)) * 10.0 ** rng.uniform(-3, 3, (300, 1))
    a = np.linalg.norm(W, axis=1) * rng.uniform(0.0, 0.9, 300)
    b = 10.0 ** rng.uniform(-2, 2, 300)
    (args,) = _factor_inputs(W, a, b)
    assert args[0].shape[0] > 200
    monkeypatch.setattr(ts, "INTERPRET_BLOCK", 64)
    assert _same_bits(_kernel(args), FACTOR(*args, NP))


def test_no_rows_no_launch():
    before = ts.launches
    out = ts.group_exclusive_factor(*(torch.zeros(0, dtype=torch.float64) for _ in range(8)), 200)
    assert out.shape == (0,) and ts.launches == before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gather", [True, False])
def test_torch_route_searches_in_one_launch_without_host_reads(monkeypatch, dtype, gather):
    """group+exclusive on the torch route with the kernel (ROOT_SEARCH
    "triton", as "auto" on CUDA): the search is one launch and reads nothing;
    the device route (gather False) then reads nothing at all, where the
    array code read once per four steps.  (The array code's rows: the
    rows' own Triton kernel searches inside itself, tests/test_triton_exclusive.py.)"""
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "array")
    rng = np.random.default_rng(2)
    W = torch.tensor(rng.standard_normal((64, 50)), dtype=dtype)
    a = torch.tensor(np.linalg.norm(W.double().numpy(), axis=1) * rng.uniform(0.2, 0.9, 64))
    b = torch.tensor(10.0 ** rng.uniform(-2, 1, 64))
    counts = {}
    for mode in ("array", "triton"):
        monkeypatch.setattr(_xp_kernels, "ROOT_SEARCH", mode)
        before = ts.launches
        with OperationCount() as c:
            X = _xp_kernels.group_exclusive(W, a, b, sort=torch_dev._sort_desc, gather=gather)
        counts[mode] = (c.launching, c.ops["aten._local_scalar_dense.default"], ts.launches - before)
        Wn = W.numpy()
        assert_matches_reference(X, numpy_ref.group_exclusive(Wn, a.numpy(), b.numpy()), str(Wn.dtype), float(np.abs(Wn).max()))
    launching, reads, kernels = counts["triton"]
    assert kernels == 1 and counts["array"][2] == 0
    assert reads == (1 if gather else 0)  # (gather: the host's own read of which rows to search)
    assert counts["array"][1] >= reads + 1
    assert 3 * launching < counts["array"][0]


def test_auto_takes_the_kernel_only_on_cuda_tensors(monkeypatch):
    monkeypatch.setattr(_xp_kernels, "ROOT_SEARCH", "auto")
    assert _xp_kernels._triton_shrink(torch.zeros(2, dtype=torch.float64)) is None
    assert _xp_kernels._triton_shrink(np.zeros(2)) is None
    monkeypatch.setattr(_xp_kernels, "ROOT_SEARCH", "triton")
    assert _xp_kernels._triton_shrink(torch.zeros(2, dtype=torch.float64)) is ts
    assert _xp_kernels._triton_shrink(np.zeros(2)) is None  # (NumPy and CuPy arrays: the array code)


def test_kernel_compiles_for_sm90_with_correctly_rounded_float64():
    """Triton compiles the kernel for an H100/H200 (sm_90) with no GPU
    present: IEEE division and square root (div.rn.f64, sqrt.rn.f64), no
    FMA (``enable_fp_fusion=False``), so it rounds as the interpreter and
    NumPy do."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    sig = {k: "*fp64" for k in ("Yk", "Fk", "D2", "kf", "left", "right", "a", "b", "out")}
    sig.update(G="i32", max_iter="i32", BLOCK="constexpr")
    src = ASTSource(ts.kernel(False), sig, constexprs={"BLOCK": ts.BLOCK})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and compiled.asm["cubin"]
    assert "fma" not in ptx and "div.rn.f64" in ptx and "sqrt.rn.f64" in ptx
    assert "sqrt.approx" not in ptx and "div.approx" not in ptx and "div.full" not in ptx

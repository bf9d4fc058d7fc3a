"""The Triton row-statistics kernel (``_triton_rows``) and the torch backend's CUDA path for rows.

CI has no GPU: the kernel runs in Triton's interpreter on CPU tensors (the same
source the GPU compiles), and the compiled kernel is checked by compiling it
for sm_90 with Triton's own compiler:

* row norms and sums of squares on Hypothesis matrices (zero rows, one row,
  one column, empty shapes, scales from the smallest subnormal to near the
  largest finite value, entries of different scales in one row, C-contiguous,
  transposed, sliced, broadcast views), float32 and float64, with the
  interpreter's tiles and with small GPU-like tiles that take several column
  tiles, column splits and the second pass -- against sums in exact rational
  arithmetic (the bound documented in the module, from the plan's summation
  depth) and against the NumPy reference ``_xp_kernels.row_norms``;
* NaN and Inf propagate; bad input raises TypeError;
* the kernel compiles for sm_90 with vector loads along the unit stride for
  the plans of a 4096x4096 matrix and of its transposed view, no FMA, no
  register spills;
* the torch backend's group lasso and GrOWL on the CUDA code path
  (``torch_dev.ROW_STATS = "triton"``, CPU tensors through the interpreter):
  one or two kernel launches, no host read (float64 data: one, for norms
  beyond the largest float64) and no synchronising operation
  (counted as test_device_owl counts them; on CUDA GrOWL's OWL of the norms
  adds the isotonic step's reads, one per round), float32 and float64, with
  and without ``out=``; results equal the NumPy reference to the parity
  tolerance;
* ``benchmarks/bench_gpu.py --dry-run`` runs the rows section on CPU tensors.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import pathlib
import runpy
from decimal import Decimal, localcontext
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import proxlib
from proxlib.backends import _xp_kernels, numpy_ref

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)
from test_device_owl import _Recorder  # noqa: E402  (host reads and synchronising aten ops)

from proxlib.backends import _triton_rows as tr  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402

U = 2.0**-53
TINY64 = 2.0**-1074
BACKENDS = pathlib.Path(proxlib.__file__).parent / "backends"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Two xdist workers on two cores: torch's own threads would only fight."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# ------------------------------------------------------------------ inputs

# Scales of whole matrices, rows or single entries (entries are O(1) numbers times these).
_SCALES = {
    np.float32: [2.0**-149, 1e-44, 1e-40, 1e-38, 1e-20, 1.0, 1e20, 1e38],
    # 2^-511 and 2^486: the thresholds between Blue's accumulators
    np.float64: [2.0**-1074, 1e-320, 1e-310, 1e-300, 2.0**-511, 1e-150, 1.0, 1e150, 2.0**486, 1e300],
}
_POOL = [0.0, 1.0, -1.0, 0.5, -3.0, 2.75, 1.5]
LAYOUTS = ["c", "t", "step", "tstep", "bcast"]


@st.composite
def matrices(draw, max_rows=7, max_cols=40):
    """(W, layout): a float32/float64 matrix and how to lay it out in memory."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    G = draw(st.integers(0, max_rows))
    M = draw(st.integers(0, max_cols))
    el = st.one_of(st.sampled_from(_POOL), st.floats(-3.0, 3.0, allow_subnormal=False))
    base = draw(arrays(np.float64, (G, M), elements=el))
    scales = st.sampled_from(_SCALES[dtype])
    mode = draw(st.integers(0, 2))  # one scale, one per row, one per entry
    shape = {0: (1, 1), 1: (G, 1), 2: (G, M)}[mode]
    W = (base * draw(arrays(np.float64, shape, elements=scales))).astype(dtype)
    if G and draw(st.booleans()):
        W[draw(st.integers(0, G - 1))] = 0.0
    return W, draw(st.sampled_from(LAYOUTS))


def laid_out(W, layout):
    """A torch view holding ``W``'s values with the given memory layout, never
    sharing ``W``'s memory (a kernel writing into it in place must leave the
    reference's input alone: "t" of a single column is no copy otherwise)."""
    t = torch.from_numpy(np.array(W, order="C"))
    G, M = t.shape
    if layout == "c":
        return t.clone()
    if layout == "t":  # the transposed view of a row-major (M, G) matrix: strides (1, G)
        return t.T.contiguous().T
    if layout == "step":  # a slice: storage offset, strides (2 (3M + 2), 3)
        big = torch.full((2 * G + 1, 3 * M + 2), float("nan"), dtype=t.dtype)
        big[1::2, 2::3] = t
        return big[1::2, 2::3]
    if layout == "tstep":  # a slice of a transposed view: strides (2, 3 (2G + 1))
        big = torch.full((3 * M + 1, 2 * G + 1), float("nan"), dtype=t.dtype)
        big[1::3, 1::2] = t.T
        return big[1::3, 1::2].T
    assert layout == "bcast"  # column 0 broadcast along the row: stride 0
    return t[:, :1].expand(G, M) if M else t


def exact_norms(A):
    """Row norms in exact rational arithmetic, then a 50-digit square root (Decimal)."""
    out = []
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 50, 10**6, -(10**6)
        for row in np.asarray(A, dtype=np.float64):
            S = sum((Fraction(float(x)) ** 2 for x in row), Fraction(0))
            out.append((Decimal(S.numerator) / Decimal(S.denominator)).sqrt())
    return out, ctx.copy()


def exact_sumsq(A):
    return [sum((Fraction(float(x)) ** 2 for x in row), Fraction(0)) for row in np.asarray(A, dtype=np.float64)]


PLANS = {
    "interpreter": None,  # one large tile (the default off CUDA)
    # small tiles and many programs: several column tiles per program, column
    # splits and the second pass, row-major and column-major tiles
    "gpu-like": dict(tile=32, programs=16, row_tile=8),
    "tiny": dict(tile=4, programs=64, row_tile=2),
}


def _plan(V, name):
    if PLANS[name] is None:
        return tr.default_plan(V, interpret=True)
    return tr.plan(*V.shape, *V.stride(), **PLANS[name])


def norm_bound(p):
    """Relative error bound of the norms (module doc), first order, with margin."""
    return ((p.depth + 1) / 2 + 4) * U * (1 + 1e-6)


# ------------------------------------------------------------------ the kernel


@pytest.mark.parametrize("plan_name", list(PLANS))
@given(case=matrices())
@example(case=(np.array([[1e308, 1e308, -1e308]]), "c"))  # norm 1.7e308: finite, each square overflows
@example(case=(np.array([[2.0**-1074, 3 * 2.0**-1074, 2.0**-1022]]), "t"))  # subnormals, exact
@example(case=(np.array([[1e300, 1e-300, 2.0**-1074, 1.0]]), "c"))  # all three accumulators
@example(case=(np.array([[1.0, 2.0**-600], [2.0**-600, 2.0**-1074]]), "step"))
@example(case=(np.array([[3.0e38, -3.0e38], [1e-45, 0.0]], np.float32), "tstep"))
@example(case=(np.zeros((3, 0)), "c"))
@example(case=(np.zeros((0, 4), np.float32), "t"))
def test_row_norms_match_exact_and_reference(plan_name, case):
    W, layout = case
    V = laid_out(W, layout)
    vals = V.numpy().copy()
    p = _plan(V, plan_name)
    before = tr.launches
    got = tr.row_norms(V, plan=p)
    assert got.dtype == torch.float64 and got.shape == (W.shape[0],) and got.device == V.device
    assert tr.launches - before == (0 if W.size == 0 else 1 if p.splits == 1 else 2)
    np.testing.assert_array_equal(V.numpy(), vals)  # input untouched
    exact, ctx = exact_norms(vals)
    rel = Decimal(norm_bound(p))
    for r, (g, e) in enumerate(zip(got.tolist(), exact)):
        err = ctx.abs(ctx.subtract(Decimal(g), e))
        assert err <= rel * e + Decimal(TINY64), (r, g, e, p)
    ref = _xp_kernels.row_norms(vals, np)  # the NumPy reference (scaled by the row maximum)
    ref_rel = norm_bound(p) + (W.shape[1] + 4) * U  # its own error: sequential-sum bound
    np.testing.assert_allclose(got.numpy(), ref, rtol=ref_rel, atol=TINY64)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # float64 squares beyond the range
@pytest.mark.parametrize("plan_name", list(PLANS))
@given(case=matrices())
def test_row_sumsq_matches_exact_sum(plan_name, case):
    """float32 data: exact squares, only the summation rounds; float64 data: the
    unscaled sum (squares rounded, underflowing to subnormals, overflowing to inf)."""
    W, layout = case
    V = laid_out(W, layout)
    p = _plan(V, plan_name)
    got = tr.row_sumsq(V, plan=p)
    assert got.dtype == torch.float64 and got.shape == (W.shape[0],)
    big = Fraction(np.finfo(np.float64).max)
    d = p.depth + (W.dtype == np.float64)
    for g, S in zip(got.tolist(), exact_sumsq(V.numpy())):
        if S * (1 + Fraction(2 * d) * Fraction(U)) > big:
            assert g == math.inf or abs(Fraction(g) - S) <= Fraction(d * U * 1.000001) * S
            continue
        assert math.isfinite(g)
        tol = Fraction(d * U * 1.000001) * S + W.shape[1] * Fraction(TINY64)
        assert abs(Fraction(g) - S) <= tol, (g, float(S), p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_nan_and_inf_propagate(dtype, plan_name):
    nan, inf = float("nan"), float("inf")
    W = torch.tensor(
        [[1.0, nan, 2.0], [inf, 1.0, 0.0], [-inf, nan, 1e-30], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1e-40, -inf, inf]],
        dtype=dtype,
    )
    for V in (W, W.T.contiguous().T):
        got = tr.row_norms(V, plan=_plan(V, plan_name))
        assert torch.isnan(got[0]) and torch.isnan(got[2])
        assert got[1] == inf and got[5] == inf
        assert got[3] == 0 and got[4] == 5


def test_bad_input_raises_type_error():
    for bad in (torch.ones(3), torch.ones((2, 2), dtype=torch.int64), torch.ones((2, 2, 2))):
        with pytest.raises(TypeError, match="W must be"):
            tr.row_norms(bad)


def test_plans():
    """Tiles run along the unit stride; few long rows split their columns."""
    p = tr.plan(4096, 4096, 4096, 1, tile=4096, programs=528)
    assert (p.block_r, p.block_c, p.rows_fast, p.splits) == (1, 4096, False, 1)
    p = tr.plan(4096, 4096, 1, 4096, tile=4096, programs=528)
    assert (p.block_r, p.block_c, p.rows_fast) == (128, 32, True)
    assert 528 // 2 <= 32 * p.splits <= 2 * 528 and p.span % p.block_c == 0 and p.splits == math.ceil(4096 / p.span)
    p = tr.plan(100_000, 9, 9, 1, tile=4096, programs=528)  # 3x3 kernels as rows
    assert (p.block_r, p.block_c, p.splits) == (256, 16, 1)
    p = tr.plan(1, 10**7, 10**7, 1, tile=4096, programs=528)  # a whole layer as one row
    assert 528 // 2 <= p.splits <= 2 * 528 and p.block_r == 1 and p.depth < 2 * 4096


@pytest.fixture(autouse=True)
def _group_lasso_by_its_stages(monkeypatch):
    """The group lasso through its stages (the row statistics this module
    tests), not the multi-tensor kernel (``test_triton_multi.py``) that
    ``PROXLIB_TEST_TRITON_KERNELS`` turns on."""
    monkeypatch.setattr(torch_dev, "GROUP_ROWS", "array")


# ------------------------------------------------------------------ compiled for sm_90


def _compile(p, dtype, blue, partials, out, specialised):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    k = tr.kernel(False)
    sig = {"X": "*fp64" if partials else f"*{dtype}", "Y": "*fp64", "G": "i32", "M": "i32", "s_r": "i32", "s_c": "i32",
           "span": "i32", "S": "i32", "BLOCK_R": "constexpr", "BLOCK_C": "constexpr", "ROWS_FAST": "constexpr",
           "UNIT": "constexpr", "BLUE": "constexpr", "PARTIALS": "constexpr", "OUT": "constexpr"}  # fmt: skip
    # what Triton's launcher specialises for a 4096x4096 matrix: 16-byte aligned
    # pointers, sizes and strides divisible by 16 (M, span and S never are)
    attrs = {(k.arg_names.index(n),): [["tt.divisibility", 16]] for n in specialised}
    if partials:
        consts = dict(BLOCK_R=p.fin_block_r, BLOCK_C=p.fin_block_c, ROWS_FAST=False, UNIT=True)
    else:
        consts = dict(BLOCK_R=p.block_r, BLOCK_C=p.block_c, ROWS_FAST=p.rows_fast, UNIT=True)
    consts.update(BLUE=blue, PARTIALS=partials, OUT=out)
    src = ASTSource(k, sig, constexprs=consts, attrs=attrs)
    opts = {"num_warps": p.num_warps, "enable_fp_fusion": False}
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["ptx"]


@pytest.mark.parametrize("layout", ["rows", "channel"])
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_kernel_compiles_for_sm90_with_vector_loads_along_the_unit_stride(layout, dtype):
    """The plans of a 4096x4096 matrix (rows C-contiguous) and of its transposed
    view ("channel": rows are columns) on an H200 (132 SMs) compile to loads of
    16 bytes per thread along memory (coalesced), correctly rounded square
    roots and divisions, no FMA and no spills; the second pass too."""
    import triton

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    item = 4 if dtype == "fp32" else 8
    strides = (4096, 1) if layout == "rows" else (1, 4096)
    p = tr.plan(4096, 4096, *strides, tile=16384 // item, programs=4 * 132)
    assert p.rows_fast == (layout == "channel")
    blue = dtype == "fp64"
    spec = ["X", "Y", "G", "s_r" if layout == "rows" else "s_c"]
    ptx = _compile(p, dtype, blue, False, 2 if p.splits == 1 else 0, spec)
    vector = "ld.global.v4.b32" if dtype == "fp32" else "ld.global.v2.b64"
    assert ".target sm_90" in ptx and vector in ptx, sorted(set(ptx.split()) & {"ld.global.b32", "ld.global.b64"})
    assert "fma" not in ptx and ".local" not in ptx
    if p.splits > 1:  # the pass that adds the partial sums, then finishes the norms
        ptx = _compile(p, dtype, blue, True, 2, ["X", "Y", "G"])
    assert "sqrt.rn.f64" in ptx and "fma" not in ptx and ".local" not in ptx
    if blue:
        assert "div.rn.f64" in ptx


# ------------------------------------------------------------------ the torch backend's CUDA path


def _pause_in_owl(monkeypatch, rec):
    """Record nothing inside GrOWL's OWL of the norms (on CPU NumPy's, on CUDA
    ``_gpu_owl``'s, whose reads its own tests count); returns its call log."""
    real, calls = torch_dev._owl_vector, []

    def owl(v, w):
        calls.append(1)
        rec.paused = True
        try:
            return real(v, w)
        finally:
            rec.paused = False

    monkeypatch.setattr(torch_dev, "_owl_vector", owl)
    return calls


@st.composite
def row_problems(draw):
    """(op, W, layout, thresholds, use_out): thresholds at the scale of the row norms."""
    W, layout = draw(matrices(max_rows=6, max_cols=24))
    op = draw(st.sampled_from(["group_lasso", "growl"]))
    nrm = _xp_kernels.row_norms(W, np)
    G = W.shape[0]
    c = draw(arrays(np.float64, G, elements=st.sampled_from([0.0, 0.3, 0.9, 1.0, 1.5])))
    if op == "group_lasso":
        thr = c * nrm  # zero rows, shrunk rows, kept rows
    else:
        scale = float(np.median(nrm)) if np.any(nrm > 0) else 1.0
        thr = np.sort(c)[::-1] * scale
    thr = thr.astype(W.dtype)
    thr[~np.isfinite(thr)] = np.finfo(W.dtype).max
    use_out = None if layout == "bcast" else draw(st.sampled_from([None, "new", "self"]))  # no writing into a broadcast
    return op, W, layout, thr, use_out


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the reference's unscaled squares
@given(problem=row_problems())
@example(problem=("group_lasso", np.array([[3.0, 4.0], [0.0, 0.0], [1e-40, 1e-40]], np.float32), "t",
                  np.array([1.0, 1.0, 1e-41], np.float32), "self"))  # fmt: skip
@example(problem=("growl", np.array([[1e300, 1e300], [1e-300, 0.0], [2.0, 1.0]]), "c",
                  np.array([1e299, 5e-301, 0.0]), None))  # fmt: skip
@example(problem=("group_lasso", np.array([[1e-40], [0.0]], np.float32), "t",
                  np.array([3e-41, 0.0], np.float32), "self"))  # fmt: skip  (written in place into W itself before)
def test_torch_rows_on_the_cuda_path_match_numpy_without_host_reads(problem):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch_dev, "ROW_STATS", "triton")
        _check_cuda_path(mp, *problem)


def _check_cuda_path(monkeypatch, op, W, layout, thr, use_out):
    V = laid_out(W, layout)
    vals = V.numpy().copy()
    if layout == "bcast":  # the values the kernel sees (column 0 repeated)
        W = vals.copy()
    t = torch.from_numpy(thr)
    out = {None: None, "new": torch.empty_like(V), "self": V}[use_out]
    before = tr.launches
    with _Recorder(monkeypatch) as rec:
        owl_calls = _pause_in_owl(monkeypatch, rec)
        X = getattr(torch_dev, op)(V, t, out=out)
    # float64: one read decides whether a norm lies beyond the largest float64,
    # and GrOWL one more whether the norms need a common scale for its OWL
    reads = 0 if W.dtype != np.float64 else (2 if op == "growl" else 1)
    assert rec.reads == reads and rec.sync_ops == [], (rec.reads, rec.sync_ops)
    assert owl_calls == ([1] if op == "growl" else [])
    assert tr.launches - before in ((0,) if W.size == 0 else (1, 2))
    ref = getattr(numpy_ref, op)(W, thr)
    assert X.dtype == V.dtype and X.shape == V.shape and not X.requires_grad
    if use_out is not None:
        assert X is out
    if use_out != "self":
        np.testing.assert_array_equal(V.numpy(), vals)
    scale = float(np.max(np.abs(W), initial=0.0))
    assert_matches_reference(X, ref, np.dtype(W.dtype).name, scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_rows_cuda_path_check_finite(monkeypatch, dtype):
    """check_finite=True costs one scalar read (the norms' finiteness; float64
    data: one more, for norms beyond the largest float64) and raises on NaN/Inf."""
    from proxlib.backends import NonFiniteInput

    monkeypatch.setattr(torch_dev, "ROW_STATS", "triton")
    W = torch.randn(6, 5, dtype=dtype).T  # (5, 6) transposed view
    a = torch.full((5,), 0.5, dtype=dtype)
    with _Recorder(monkeypatch) as rec:
        torch_dev.group_lasso(W, a, check_finite=True)
    assert rec.reads == (2 if dtype == torch.float64 else 1) and rec.sync_ops == []
    W = W.clone()
    W[2, 3] = float("nan")
    with pytest.raises(NonFiniteInput):
        torch_dev.group_lasso(W, a, check_finite=True)


def test_cuda_path_rows_whose_norm_exceeds_float64(monkeypatch):
    """||w|| = 2e308 (beyond float64): the row is recomputed scaled, not
    reported as non-finite, and the group lasso's factor is exact."""
    monkeypatch.setattr(torch_dev, "ROW_STATS", "triton")
    W = torch.tensor([[1e308, -1e308, 1e308, 1e308], [3.0, 4.0, 0.0, 0.0]], dtype=torch.float64)
    X = torch_dev.group_lasso(W, torch.full((2,), 1.5e308, dtype=torch.float64), check_finite=True)
    assert X[0, 0].item() == pytest.approx(0.25e308, rel=1e-15) and X[0, 1].item() == pytest.approx(-0.25e308, rel=1e-15)
    assert not torch.any(X[1])
    torch.testing.assert_close(torch_dev.group_lasso(W, torch.ones(2, dtype=torch.float64))[0], W[0], rtol=0, atol=0)


def test_row_stats_choice(monkeypatch):
    """One place decides: the kernel for CUDA tensors when Triton imports."""
    cuda, cpu = SimpleNamespace(device=torch.device("cuda", 0)), torch.ones(2, 2)
    assert torch_dev._triton_rows(cuda) is tr and torch_dev._triton_rows(cpu) is None
    monkeypatch.setattr(torch_dev, "ROW_STATS", "triton")
    assert torch_dev._triton_rows(cpu) is tr
    monkeypatch.setattr(torch_dev, "ROW_STATS", "torch")
    assert torch_dev._triton_rows(cuda) is None
    monkeypatch.setattr(torch_dev, "ROW_STATS", "auto")
    before = tr.launches
    torch_dev.group_lasso(torch.ones(3, 4), torch.ones(3))  # CPU tensors: torch operations
    assert tr.launches == before


def test_the_kernel_module_reads_nothing_back():
    """No host reads in _triton_rows: no float()/bool()/int() of a device value, no copies to the host."""
    tree = ast.parse((BACKENDS / "_triton_rows.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"cpu", "numpy", "item", "tolist"}, node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"float", "bool", "int", "complex"}, node.lineno


# ------------------------------------------------------------------ the benchmark script


def test_bench_gpu_dry_run_runs_the_rows_section_on_cpu(capsys, monkeypatch):
    """The rows section runs on CPU tensors (Triton interpreted, 64x48): every
    operator, layout, dtype and row-statistics path (and the multi-tensor
    kernel's, "multi"), agreeing with NumPy.
    It does so as the script runs alone (``CPU_KERNELS = "auto"``, not the
    tests' "torch"), where float32/float64 CPU tensors would go to Numba."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "auto")
    # (the exclusive penalties' rows by the array code, as by default: the
    # launch counts below are those of the row statistics' routes)
    from proxlib.backends import _xp_kernels

    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "array")
    main = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"))["main"]
    threads = torch.get_num_threads()
    try:
        rc = main(["--dry-run", "--sections", "rows", "--repeat", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0 and "## Row operators on torch tensors" in out
    assert torch_dev.CPU_KERNELS == "auto"  # restored
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    rows = [r for r in rows if r[0] in ("group_lasso", "growl", "exclusive_lasso", "group_exclusive", "copy")]
    seen = {(r[0], r[1], r[2], r[3]) for r in rows}
    for op in ("group_lasso", "growl"):
        for dt in ("float32", "float64"):
            for layout in ("rows", "channel"):
                assert {(op, layout, dt, "multi"), (op, layout, dt, "triton"), (op, layout, dt, "torch")} <= seen
    assert ("group_exclusive", "channel", "float32", "torch") in seen
    for r in rows:
        if r[0] == "copy":
            continue
        launches, triton_launches, reads, diff = int(r[9]), int(r[10]), int(r[11]), float(r[12])
        assert launches > 0 and diff <= (1e-5 if r[2] == "float32" else 1e-12)
        if r[3] == "multi":  # (_triton_multi: the group lasso whole, GrOWL's norms and map)
            assert triton_launches == (1 if r[0] == "group_lasso" else 2)
            if r[0] == "group_lasso":  # norms as (y, s) pairs: no read
                assert reads == 0
        elif r[3] == "triton":
            assert 1 <= triton_launches <= 2
            if r[0] == "group_lasso":  # float64: one read for norms beyond the largest float64
                assert reads == (0 if r[2] == "float32" else 1)
        else:
            assert triton_launches == 0


# ------------------------------------------------ a training step's batches on the CUDA path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_step_on_the_cuda_path(monkeypatch, dtype):
    """``ProximalStep``'s batches (``proxlib.torch._batched``) with the row
    statistics of the CUDA path (the Triton kernel, in the interpreter): the
    same bits as the terms one by one; float32 group lasso and weighted l1
    read nothing on the host and make no synchronising call, with one Triton
    launch per group-lasso tensor (float64: one read per tensor, for norms
    beyond the largest float64)."""
    import proxlib.torch as pt
    from proxlib.torch import _batched

    monkeypatch.setattr(torch_dev, "ROW_STATS", "triton")
    shapes = [(6, 4, 3, 3), (5, 6, 3, 3), (7, 5)]

    def run(enabled):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, dtype=dtype, generator=torch.Generator().manual_seed(j))) for j, s in enumerate(shapes)]
        prox = pt.ProximalStep(None)
        for p in params:
            prox.add(p, proxlib.GroupLasso(0.3), grouping="channel")
            prox.add(p, proxlib.WeightedL1(0.01), label=f"l1{tuple(p.shape)}")
        prox.step(lr=1.0)  # (the thresholds formed: a step at a new learning rate reads them once)
        before = tr.launches
        with _Recorder(monkeypatch) as rec:
            prox.step(lr=1.0)
        return [p.detach().clone() for p in params], rec, tr.launches - before

    got, rec, launches = run(True)
    want, _, _ = run(False)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert rec.sync_ops == []
    assert rec.reads == (0 if dtype == torch.float32 else len(shapes))
    assert launches == len(shapes)

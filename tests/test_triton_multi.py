"""A step's group lasso of many tensors in one Triton launch (``_triton_multi``).

CI has no GPU: the kernel runs in Triton's interpreter on CPU tensors (the
same source the GPU compiles; with ``PROXLIB_TEST_DEVICE=cuda`` on CUDA
tensors), and the compiled kernel is checked by compiling it for sm_90:

* ``row_layout`` reads the two-level layout off the offsets of a plan's own
  rows for every grouping of Linear and Conv weights, contiguous,
  channels-last and transposed, and declines the layouts it cannot
  describe (a sliced tensor's "layer" row, entries sharing memory);
* the norms (``launch(NORMS)``) equal the exact rational norms to the
  summation's bound, on Hypothesis tensors whose rows mix scales from the
  smallest subnormal to near the largest float64 (the norm's scale s keeps
  y finite and not subnormal); the map writes, bit for bit, each row times
  ``f = 1 - (a/s)/y`` (0 below the threshold, 1 for a NaN norm) rounded to
  the data's dtype; one launch (``BOTH``) writes the same bits as the two;
* a ``ProximalStep`` with the kernel equals the torch stages to the parity
  tolerance, NaN rows pass through unchecked, a checked step that meets
  NaN raises before anything is written (two dtypes: two groups), the
  version counters move, a step equals its terms one by one bit for bit;
* a step is one launch per dtype (two with the check) and no torch
  operation per tensor, whatever the number of tensors;
* the kernel compiles for sm_90 with correctly rounded float64 division and
  square root, no FMA and no spills.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

import _device  # noqa: E402
from test_backends import assert_matches_reference  # noqa: E402  (the parity tolerance)

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.backends import _triton_multi as tm  # noqa: E402
from proxlib.backends import _xp_kernels  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
from proxlib.groupings import to_rows  # noqa: E402
from proxlib.torch import _batched  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402

DEVICE = torch.device(_device.DEVICE)
GROUPINGS = ("filter", "channel", "shape")


@pytest.fixture
def kernel_on(monkeypatch):
    monkeypatch.setattr(torch_dev, "GROUP_ROWS", "triton")


def _offsets(t: torch.Tensor) -> torch.Tensor:
    """The memory offset of each entry of ``t`` (from its first), in its shape."""
    out = torch.zeros((), dtype=torch.int64)
    for dim, (n, stride) in enumerate(zip(t.shape, t.stride())):
        shape = [1] * t.ndim
        shape[dim] = n
        out = out + (torch.arange(n) * stride).reshape(shape)
    return out.expand(t.shape)


def _weight(shape, dtype, layout: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed":  # a Linear weight stored as the transpose of its (in, out) buffer
        return torch.randn(shape[::-1], generator=g, dtype=dtype).T
    W = torch.randn(shape, generator=g, dtype=dtype)
    return W.to(memory_format=torch.channels_last) if layout == "channels_last" else W


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize(("shape", "layout"), [((6, 5, 3, 3), "contiguous"), ((6, 5, 3, 3), "channels_last"),
                                                ((6, 5, 1, 4), "channels_last"), ((7, 4), "contiguous"),
                                                ((7, 4), "transposed"), ((4, 3, 2, 2, 2), "contiguous")])  # fmt: skip
def test_row_layout_reproduces_the_plans_rows(grouping, shape, layout):
    """Every grouping of Linear and Conv (2-D, 3-D) weights, contiguous,
    channels-last and transposed: the layout gives every row's offsets, in
    order."""
    W = _weight(shape, torch.float64, layout)
    rows = to_rows(_offsets(W), grouping).numpy()
    got = tm.row_layout(np.ascontiguousarray(rows))
    assert got is not None
    base, U, V, su, sv = got
    j = np.arange(U * V)
    np.testing.assert_array_equal(base[:, None] + (j // V) * su + (j % V) * sv, rows)


def test_overlapping_tensors_keep_the_torch_stages(kernel_on):
    """A tensor whose entries share memory (an expanded view) is not written
    by the kernel (it would write an entry twice): the plan's layout is
    None; dense tensors of every memory format are taken."""
    from proxlib.torch._batched import _non_overlapping

    assert not _non_overlapping(torch.zeros(4, 1).expand(4, 3))
    assert not _non_overlapping(torch.zeros(10).as_strided((3, 4), (2, 1)))
    for W in (torch.zeros(5, 4, 3, 3), torch.zeros(5, 4, 3, 3).to(memory_format=torch.channels_last), torch.zeros(4, 7).T,
              torch.zeros(6, 5)[::2, 1:]):
        assert _non_overlapping(W)


def test_row_layout_declines_what_it_cannot_describe():
    """A sliced tensor's whole-layer row (three levels of strides) and
    irregular offsets give None; so do empty rows."""
    W = torch.zeros(6, 5, 4)[:, :3, :2]
    assert tm.row_layout(np.ascontiguousarray(_offsets(W).reshape(1, -1).numpy())) is None
    assert tm.row_layout(np.array([[0, 1, 3]])) is None
    assert tm.row_layout(np.zeros((3, 0), dtype=np.int64)) is None
    assert tm.row_layout(np.array([[0, 1], [2, 4]])) is None  # rows of different layouts


# ---------------------------------------------------------------- the kernel against exact arithmetic


def _exact_norm(row) -> Fraction:
    return sum((Fraction(float(x)) ** 2 for x in row), Fraction(0))


def _close_sqrt(y: float, s: float, sq: Fraction, n: int) -> bool:
    """|y s - sqrt(sq)| <= (n + 8) 2^-52 sqrt(sq), as squares: y s in float
    arithmetic exact (s a power of two), compared with rationals."""
    got = Fraction(y) * Fraction(s)
    rel = Fraction(n + 8, 2**52)
    return (got * got >= sq * (1 - rel) ** 2) and (got * got <= sq * (1 + rel) ** 2)


@st.composite
def tensors(draw):
    """(W, grouping, a): a small Linear or Conv weight of mixed row scales (from
    the smallest subnormal to near the largest float64, per row and within a
    row; exact zeros), a layout, a grouping and thresholds per row."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    conv = draw(st.booleans())
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5))) + ((draw(st.integers(1, 3)), 2) if conv else ())
    layout = draw(st.sampled_from(["contiguous", "channels_last"] if conv else ["contiguous", "transposed"]))
    seed = draw(st.integers(0, 2**16))
    W = _weight(shape, torch.float64, layout, seed)
    rng = np.random.default_rng(seed)
    big, small = (1000, -1070) if dtype == torch.float64 else (120, -145)
    exps = rng.integers(small, big, size=W.shape) if draw(st.booleans()) else np.full(W.shape, rng.integers(small, big))
    W = W * torch.from_numpy(np.ldexp(1.0, exps)).to(W.dtype)
    W[torch.from_numpy(rng.random(W.shape) < 0.2)] = 0.0
    W = W.to(dtype)  # (float32: subnormals and zeros where the exponent is below its range)
    grouping = draw(st.sampled_from(GROUPINGS))
    G = to_rows(W, grouping).shape[0]
    norms = to_rows(W.to(torch.float64), grouping).norm(dim=1)
    a = norms * torch.from_numpy(rng.uniform(0.0, 2.0, G))  # some rows zeroed, some shrunk
    return W.to(DEVICE), grouping, a.to(DEVICE)


def _table(W, grouping):
    rows = to_rows(_offsets(W), grouping).numpy()
    layout = tm.row_layout(np.ascontiguousarray(rows))
    return tm.RowTable([W], [layout], W.device)


@settings(deadline=None)
@given(problem=tensors())
def test_norms_are_exact_to_the_summation_bound_and_the_map_to_the_bit(problem):
    W, grouping, a = problem
    f64 = W.dtype == torch.float64
    rows = to_rows(W, grouping).cpu()
    Y = tm.launch(_table(W, grouping), a, f64, W.device, tm.NORMS)
    y, s = Y[0].cpu().tolist(), Y[1].cpu().tolist()
    for r in range(rows.shape[0]):
        assert y[r] < float("inf") and (y[r] == 0 or y[r] >= 2.0**-1022), (r, y[r])
        assert _close_sqrt(y[r], s[r], _exact_norm(rows[r].tolist()), rows.shape[1]), (r, y[r], s[r])
    # the map from those norms, bit for bit: f = 1 - (a/s)/y above the threshold, else 0
    yt, st_ = Y[0], Y[1]
    a_s = a / st_
    f = torch.where(yt > a_s, 1.0 - a_s / yt, torch.isnan(yt).to(torch.float64))
    expect = rows.to(W.device) * f.to(W.dtype)[:, None]
    two, one = W.clone(), W.clone()
    tm.launch(_table(two, grouping), a, f64, W.device, tm.MAP, Y)
    tm.launch(_table(one, grouping), a, f64, W.device, tm.BOTH)
    torch.testing.assert_close(to_rows(two, grouping), expect, rtol=0, atol=0)
    torch.testing.assert_close(one, two, rtol=0, atol=0)


@pytest.mark.parametrize("tiles", [(tm.GPU_BLOCK_R, tm.GPU_BLOCK), (2, 8), (tm.INTERPRET_BLOCK_R, tm.INTERPRET_BLOCK)])
@pytest.mark.parametrize(("shape", "grouping", "layout"), [((3, 512, 3, 3), "filter", "contiguous"),
                                                           ((40, 7, 3, 3), "channel", "contiguous"),
                                                           ((9, 70, 3, 3), "channel", "channels_last"),
                                                           ((600, 5), "shape", "transposed")])  # fmt: skip
def test_long_rows_and_the_gpus_tiles(tiles, shape, grouping, layout, monkeypatch):
    """Rows of 9 to 4608 entries whose second level V (1, 9, 600, 4608)
    divides the tile or not, lies below or beyond it: the tiles' offsets
    carried from tile to tile give every entry once (the same norms, to the
    summation's bound, and the map's bits) with the GPU's tiles, small ones
    and the interpreter's."""
    monkeypatch.setattr(tm, "INTERPRET_BLOCK_R", tiles[0])
    monkeypatch.setattr(tm, "INTERPRET_BLOCK", tiles[1])
    for dtype in (torch.float32, torch.float64):
        W = _weight(shape, dtype, layout).to(DEVICE)
        rows = to_rows(W, grouping)
        norms = rows.to(torch.float64).norm(dim=1)
        a = norms * torch.linspace(0.0, 1.5, rows.shape[0], dtype=torch.float64, device=DEVICE)
        Y = tm.launch(_table(W, grouping), a, dtype == torch.float64, W.device, tm.NORMS)
        m = rows.shape[1]
        torch.testing.assert_close(Y[0] * Y[1], norms, rtol=(m + 8) * 2.0**-52, atol=0)
        a_s = a / Y[1]
        f = torch.where(Y[0] > a_s, 1.0 - a_s / Y[0], torch.zeros_like(a))
        expect = rows * f.to(dtype)[:, None]
        X = W.clone()
        tm.launch(_table(X, grouping), a, dtype == torch.float64, W.device, tm.BOTH)
        torch.testing.assert_close(to_rows(X, grouping), expect, rtol=0, atol=0)


def test_non_finite_rows_give_non_finite_norms_and_come_back_as_they_are():
    W = torch.randn(4, 6, dtype=torch.float64, device=DEVICE)
    W[1, 2], W[2, 0], W[3, 5] = float("nan"), float("inf"), float("-inf")
    W[3, 1] = float("nan")
    a = torch.full((4,), 0.5, dtype=torch.float64, device=DEVICE)
    Y = tm.launch(_table(W, "filter"), a, True, W.device, tm.NORMS)
    assert torch.isfinite(Y[0]).tolist() == [True, False, False, False]
    X = W.clone()
    tm.launch(_table(X, "filter"), a, True, W.device, tm.BOTH)
    torch.testing.assert_close(X[1:], W[1:], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("out", [None, "new", "self"])
@pytest.mark.parametrize("check_finite", [False, True])
def test_public_kernels_out_of_place_and_in_place(dtype, layout, out, check_finite, kernel_on):
    """``torch_dev.group_lasso`` / ``scale_rows`` (the public functions'
    torch route) on rows of any strides: out of place they read W and write
    the result where it goes (no copy of W where the strides allow), leave W
    as it was, and give the bits of the stages on the kernel's norms."""
    base = torch.randn(9, 14, dtype=dtype, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    W = {"contiguous": base, "transposed": base.T, "sliced": base[::2, 1:12]}[layout]
    keep = W.clone()
    G = W.shape[0]
    a = W.to(torch.float64).norm(dim=1) * torch.linspace(0.2, 1.4, G, dtype=torch.float64, device=DEVICE)
    y, s = tm.row_norms(W)
    a_s = a if s is None else a / s
    expect = W * torch.where(y > a_s, 1.0 - a_s / y, torch.zeros_like(y)).to(dtype)[:, None]
    target = {None: None, "new": torch.empty_like(W), "self": W}[out]
    X = torch_dev.group_lasso(W, a, check_finite=check_finite, out=target)
    torch.testing.assert_close(X, expect, rtol=0, atol=0)
    assert X is target if out else X.shape == W.shape
    if out != "self":
        torch.testing.assert_close(W, keep, rtol=0, atol=0)
    f = torch.linspace(0.0, 2.0, G, dtype=torch.float64, device=DEVICE)
    Z = tm.scale_rows(keep, f, out=None)
    torch.testing.assert_close(Z, keep * f.to(dtype)[:, None], rtol=0, atol=0)


# ---------------------------------------------------------------- in a training step


def _net(dtype, layout="contiguous"):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 5, 3), torch.nn.Flatten(),
                              torch.nn.Linear(5 * 4 * 4, 7)).to(device=DEVICE, dtype=dtype)  # fmt: skip
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    return net


def _penalty(kind: str, G: int, weights: bool):
    if kind == "GrOWL":  # (stairwise weights: rows tied and zeroed)
        return pt.growl(lambda n: proxlib.owl_weights_stairwise(n, 0.4, 0.05, n // 2))
    return proxlib.GroupLasso(0.3, group_weights=np.linspace(0.5, 1.5, G) if weights else None)


def _stepped(net, groupings, check_finite, *, weights=False, steps=1, kind="group lasso"):
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.5), check_finite=check_finite)
    layers = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer, grouping in zip(layers, groupings):
        G = to_rows(layer.weight.detach(), grouping).shape[0]
        prox.add(layer, _penalty(kind, G, weights), grouping=grouping)
    for _ in range(steps):
        prox.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(("kind", "weights"), [("group lasso", False), ("group lasso", True), ("GrOWL", False)])
def test_a_step_matches_the_torch_stages(dtype, layout, kind, weights, monkeypatch):
    groupings = ("channel", "shape", "filter")
    monkeypatch.setattr(torch_dev, "GROUP_ROWS", "array")
    ref = _stepped(_net(dtype, layout), groupings, True, weights=weights, steps=2, kind=kind)
    monkeypatch.setattr(torch_dev, "GROUP_ROWS", "triton")
    launches = tm.launches
    got = _stepped(_net(dtype, layout), groupings, True, weights=weights, steps=2, kind=kind)
    assert tm.launches == launches + 4  # two steps, each the norms and the map (GrOWL: the OWL between)
    for g, r in zip(got, ref):
        assert_matches_reference(g.cpu().numpy(), r.cpu().numpy(), "float32" if dtype == torch.float32 else "float64", float(r.abs().max()))
    assert any(bool((g == 0).all(dim=-1).any()) for g in got[::2])  # some rows zeroed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["group lasso", "GrOWL"])
def test_a_step_equals_its_terms_one_by_one(kind, dtype, kernel_on, monkeypatch):
    """The batch and each term alone (the public functions' torch route: the
    group lasso whole by the kernel, GrOWL's norms and map by it) give the
    same bits."""
    groupings = ("channel", "filter", "shape")
    together = _stepped(_net(dtype), groupings, False, kind=kind)
    monkeypatch.setattr(_batched, "ENABLED", False)
    alone = _stepped(_net(dtype), groupings, False, kind=kind)
    for x, y in zip(together, alone):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["group lasso", "exclusive", "group+exclusive"])
def test_nan_rows_pass_unchecked_and_a_checked_step_writes_nothing(kind, kernel_on, monkeypatch):
    """A float32 and a float64 group (or the exclusive penalties' tables, in
    place too: ``_xp_kernels.EXCLUSIVE_ROWS``): a checked step raises before
    any is written; unchecked, a NaN row comes back as it is, the others
    are solved, and the version counters move."""
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "triton")
    penalty = {"group lasso": lambda: proxlib.GroupLasso(0.3), "exclusive": lambda: proxlib.ExclusiveLasso(0.05),
               "group+exclusive": lambda: proxlib.GroupExclusive(0.05, 0.3)}[kind]
    net = _net(torch.float32)
    net[4].double()  # a second dtype: a second group, checked before either is written
    with torch.no_grad():
        net[4].weight[2, 3] = float("nan")
    layers = (net[0], net[2], net[4])
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.5), check_finite=True)
    for layer in layers:
        prox.add(layer, penalty(), grouping="filter")
    before = [p.detach().clone() for p in net.parameters()]
    versions = [layer.weight._version for layer in layers]
    with pytest.raises(ValueError, match="NaN or Inf"):
        prox.step()
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0, equal_nan=True)
    prox.check_finite = False
    prox.step()
    assert torch.isnan(net[4].weight[2, 3]) and bool(torch.isfinite(net[4].weight[2, :3]).all())
    torch.testing.assert_close(net[4].weight[2], before[4][2], rtol=0, atol=0, equal_nan=True)  # (the row as it was)
    assert not torch.equal(net[4].weight[1], before[4][1]) and not torch.equal(net[0].weight, before[0])
    assert all(layer.weight._version > v for layer, v in zip(layers, versions))


@pytest.mark.parametrize(("kind", "check_finite"), [("group lasso", False), ("group lasso", True), ("GrOWL", True)])
def test_a_step_is_one_launch_per_dtype_and_no_operation_per_tensor(kind, check_finite, kernel_on):
    """Four or eight convolutions, float32 and float64 ones: the kernel's
    launches and the torch operations of a step do not grow with the number
    of tensors (the tables and thresholds are kept from step to step)."""

    def count(n):
        torch.manual_seed(0)
        convs = [torch.nn.Conv2d(4, 4, 3).to(device=DEVICE, dtype=torch.float32 if i % 2 else torch.float64) for i in range(n)]
        prox = pt.ProximalStep(torch.optim.SGD([p for c in convs for p in c.parameters()], lr=0.1), check_finite=check_finite)
        for c in convs:
            prox.add(c, _penalty(kind, 4, False), grouping="channel")
        prox.step()
        launches = tm.launches
        with OperationCount() as c:
            prox.step()
        kernel = c.ops["triton"]  # (the kernel's launches, counted as operations)
        assert kernel == tm.launches - launches
        return kernel, c.launching - kernel, c.total - kernel

    four, eight = count(4), count(8)
    assert four[0] == eight[0] == (4 if check_finite or kind == "GrOWL" else 2)
    assert four[1:] == eight[1:]
    # with the check, per dtype: the norms' buffer, their maximum and its read
    # (GrOWL: the buffer, its copy to the host; on a device, the factors' copy back)
    assert eight[1] == (0 if not check_finite else 6 if kind == "group lasso" else 4 + 2 * (DEVICE.type != "cpu")), eight


# ---------------------------------------------------------------- compiled for sm_90


@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
@pytest.mark.parametrize("phase", [tm.NORMS, tm.MAP, tm.BOTH, tm.SCALE])
def test_kernel_compiles_for_sm90_exactly_rounded(dtype, phase):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    k = tm.kernel(False)
    sig = {"ADDR": "*i64", "SHAPE": "*i64", "A": "*fp64", "Y": "*fp64", "R": "i32", "OUT": "i64",
           "PHASE": "constexpr", "F64": "constexpr", "BLOCK_R": "constexpr", "BLOCK": "constexpr"}  # fmt: skip
    consts = dict(PHASE=phase, F64=dtype == "fp64", BLOCK_R=tm.GPU_BLOCK_R, BLOCK=tm.GPU_BLOCK)
    src = ASTSource(k, sig, constexprs=consts)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "enable_fp_fusion": False}).asm["ptx"]
    assert ".target sm_90" in ptx
    assert "fma.rn" not in ptx and ".ftz" not in ptx  # (no contraction, subnormals kept)
    if phase in (tm.NORMS, tm.BOTH):
        assert "sqrt.rn.f64" in ptx
    if phase in (tm.MAP, tm.BOTH):
        assert "div.rn.f64" in ptx
    assert "local" not in ptx.split(".entry")[1].split("{", 1)[0] and ".local" not in ptx  # no spills


def tables_built(monkeypatch) -> list:
    """The row tables built from now on (one entry each), counted."""
    built = []

    class Counted(tm.RowTable):
        def __init__(self, *args):
            built.append(args)
            super().__init__(*args)

    monkeypatch.setattr(tm, "RowTable", Counted)
    return built


def test_tables_are_kept_across_steps_for_both_penalties(kernel_on, monkeypatch):
    """A step with group lasso and GrOWL terms of one dtype builds each
    penalty's table once: later steps make none (on a GPU a table costs two
    copies to the device)."""
    built = tables_built(monkeypatch)
    net = _net(torch.float32)
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.5))
    prox.add(net[0], _penalty("group lasso", 3, False), grouping="channel")
    prox.add(net[2], _penalty("GrOWL", 6, False), grouping="channel")
    prox.step()
    assert len(built) == 2
    for _ in range(3):
        prox.step()
    assert len(built) == 2


def test_public_calls_keep_their_tables(kernel_on, monkeypatch):
    """The public kernels' row tables are kept by memory, shape and strides
    (a table is a function of them alone): calls in a loop on one tensor
    build one, in place or not; other strides build another."""
    built = tables_built(monkeypatch)
    tm._strided_rows_table.cache_clear()
    W = torch.randn(6, 9, dtype=torch.float64, device=DEVICE)
    for _ in range(3):
        X = tm.group_lasso(W, 0.5)
    assert len(built) == 1
    torch.testing.assert_close(tm.group_lasso(W, 0.5, out=W), X, rtol=0, atol=0)  # (in place: W's table again)
    assert len(built) == 1
    V = W.T.contiguous().T  # (the same values in other strides)
    torch.testing.assert_close(tm.group_lasso(V, 0.5), tm.group_lasso(X, 0.5), rtol=0, atol=0)
    assert len(built) == 3  # (V's and X's)


@pytest.mark.parametrize("kind", ["group lasso", "GrOWL", "exclusive", "group+exclusive"])
@pytest.mark.parametrize("weights", [False, True])
def test_a_schedule_costs_a_step_no_operation_per_tensor(kind, weights, kernel_on, monkeypatch):
    """A learning rate that changes at every step (a schedule): the tables'
    per-row thresholds are formed on the host and copied to the device once
    per table (on CPU tensors, no copy: the launches alone), with the bits
    of the thresholds formed on the device (the step equals the terms one
    by one, which form them so)."""
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "triton")

    def penalty(G):
        w = np.linspace(0.5, 1.5, G) if weights else None
        if kind == "GrOWL":  # (its OWL weights: stairwise, or linear)
            return _penalty("GrOWL", G, False) if weights else proxlib.GrOWL(np.linspace(0.4, 0.1, G))
        return {"group lasso": lambda: proxlib.GroupLasso(0.3, group_weights=w), "exclusive": lambda: proxlib.ExclusiveLasso(0.05, group_weights=w),
                "group+exclusive": lambda: proxlib.GroupExclusive(0.05, 0.3, group_weights=w)}[kind]()

    results = []
    for batched in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", batched)
        torch.manual_seed(0)
        convs = [torch.nn.Conv2d(4, 4, 3).to(DEVICE) for _ in range(6)]
        prox = pt.ProximalStep(torch.optim.SGD([p for c in convs for p in c.parameters()], lr=0.1))
        for c in convs:
            prox.add(c, penalty(4), grouping="filter")
        prox.step(lr=0.31)
        with OperationCount() as count:
            prox.step(lr=0.17)
        for lr in (0.23, 1.0 / 3.0):
            prox.step(lr=lr)
        results.append([c.weight.detach().clone() for c in convs])
        if batched and kind == "GrOWL":  # (the norms' launch, their copy to the host, the OWL there, the factors' launch)
            assert count.ops["triton"] == 2 and count.total <= 6, dict(count.ops)
        elif batched:
            tables = 2 if kind == "group+exclusive" else 1  # (its a and b)
            if DEVICE.type == "cpu":
                assert dict(count.ops) == {"triton": 1, "aten.lift_fresh.default": tables}, dict(count.ops)
            else:  # (and per table: its pinning and its copy to the device, not blocking)
                assert count.total <= 1 + 4 * tables and count.ops["triton"] == 1, dict(count.ops)
    for x, y in zip(*results):
        if DEVICE.type == "cpu":
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        else:  # (one by one: the public kernels, whose reductions a GPU may block otherwise)
            assert_matches_reference(x.cpu().numpy(), y.cpu().numpy(), "float32", float(y.abs().max()))

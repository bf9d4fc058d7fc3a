"""proxlib.torch._batched: a step's group-lasso and GrOWL terms run as one batch.

The batch must change nothing but the number of operations: every parameter
after a step equals, bit for bit, the terms applied one by one
(``_batched.ENABLED = False``) and the public functions applied in the terms'
order; its per-tensor operations are counted.  Runs on :data:`_device.DEVICE`
(CPU tensors through the torch operations in CI; CUDA with
``PROXLIB_TEST_DEVICE=cuda``)."""

from __future__ import annotations

import collections

import _device
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.backends import _metric_kernels, _xp_kernels, torch_dev  # noqa: E402
from proxlib.torch import _batched  # noqa: E402
from proxlib.torch._opcount import OperationCount  # noqa: E402
from test_torch_prox import _expected  # noqa: E402  (the public function on a grouping's rows)


def _oscar(G):
    return proxlib.owl_weights_oscar(G, 0.05, 0.02)


def _net(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5),
    ).to(device=_device.DEVICE, dtype=dtype)


# (module index, penalty, the public function of (rows, step), grouping, label): row terms of
# every grouping (rows that are views of the parameter, and a convolution's "channel" rows,
# which are not), with other terms on the same tensors between them, so the batch must keep
# each tensor's order
def _terms():
    gl = lambda lam: (proxlib.GroupLasso(lam), lambda R, s: proxlib.prox_group_lasso(R, lam, s))  # noqa: E731
    growl = (pt.growl(_oscar), lambda R, s: proxlib.prox_growl(R, _oscar(R.shape[0]), s))
    wl1 = (proxlib.WeightedL1(0.02), lambda R, s: proxlib.prox_weighted_l1(R, 0.02, s))
    ex = (proxlib.ExclusiveLasso(0.3), lambda R, s: proxlib.prox_exclusive_lasso(R, 0.3, s))
    w = np.random.default_rng(0).uniform(0.0, 0.05, size=(5, 128))  # one threshold per entry of the Linear weight
    wl1_entries = (proxlib.WeightedL1(w), lambda R, s: proxlib.prox_weighted_l1(R, _like(w, R), s))
    return [
        (0, *gl(0.4), "channel", "a"),
        (0, *growl, "filter", "b"),
        (2, *gl(0.3), "channel", "c"),
        (2, *wl1, None, "d"),
        (2, *growl, "channel", "e"),
        (2, *gl(0.5), "shape", "f"),
        (4, *growl, "channel", "g"),
        (4, *ex, "filter", "h"),
        (4, *gl(0.2), "filter", "i"),
        (0, *gl(0.1), "layer", "j"),
        (4, *gl(0.05), None, "k"),
        (4, *wl1_entries, None, "l"),
    ]


def _like(a, x):
    """The NumPy array ``a`` as ``x`` holds data (a tensor on x's device, or NumPy)."""
    return torch.as_tensor(a).to(x.device) if isinstance(x, torch.Tensor) else a


def _train(dtype, batched: bool, lrs, monkeypatch, terms=None):
    """Parameters after SGD steps at the learning rates ``lrs``, each followed
    by the prox of every term; and the public functions' result for each."""
    monkeypatch.setattr(_batched, "ENABLED", batched)
    net = _net(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=lrs[0])
    prox = pt.ProximalStep(opt, model=net)
    terms = _terms() if terms is None else terms
    for i, pen, _, grouping, label in terms:
        prox.add(net[i], pen, grouping=grouping, label=label, strength=0.7)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device=_device.DEVICE, dtype=dtype)
    expected = []
    for lr in lrs:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        want = {i: net[i].weight.detach().clone() for i in (0, 2, 4)}
        for i, _, fn, grouping, _ in terms:
            W = want[i]
            step = lr * 0.7
            if W.dtype in (torch.float16, torch.bfloat16):  # the working float32 copy, rounded back
                want[i] = _expected(W.float(), fn, grouping, step).to(W.dtype)
            else:
                want[i] = _expected(W, fn, grouping, step)
        prox.step()
        expected.append(want)
    return net, prox, expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_batched_step_equals_the_terms_one_by_one_and_the_public_functions(dtype, monkeypatch):
    """Three steps (the learning rate changing at each: new thresholds) with
    eleven terms on three tensors: the batched step equals the terms one by
    one and the public functions in the terms' order, bit for bit on the
    CPU (on another device to the parity tolerance: see _close_or_equal)."""
    lrs = [0.5, 0.5, 0.25]
    net_b, prox_b, expected = _train(dtype, True, lrs, monkeypatch)
    net_u, _, _ = _train(dtype, False, lrs, monkeypatch)
    for pb, pu in zip(net_b.parameters(), net_u.parameters()):
        _close_or_equal(pb.detach(), pu.detach(), dtype)
    for i in (0, 2, 4):  # the last step against the public functions
        _close_or_equal(net_b[i].weight.detach(), expected[-1][i], dtype)
    # every term was in a batch (half precision: the row terms through their float32 rows;
    # weighted l1 only in place, on float32/float64)
    wl1 = dtype != torch.bfloat16
    assert [t.plan().batched for t in prox_b.terms] == [True] * 3 + [wl1] + [True] * 7 + [wl1]


def test_each_step_equals_the_public_functions_in_the_terms_order(monkeypatch):
    """The batched step against the public functions, step by step (float32
    and then the model in float64 mid-training: the plans are rebuilt)."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    terms = _terms()
    net = _net(torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    prox = pt.ProximalStep(opt, model=net)
    for i, pen, _, grouping, label in terms:
        prox.add(net[i], pen, grouping=grouping, label=label)
    for k in range(4):
        if k == 2:
            net.to(torch.float64)
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(k)).to(device=_device.DEVICE, dtype=net[0].weight.dtype)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        want = {i: net[i].weight.detach().clone() for i in (0, 2, 4)}
        for i, _, fn, grouping, _ in terms:
            want[i] = _expected(want[i], fn, grouping, 0.4)
        ptrs = [net[i].weight.data_ptr() for i in (0, 2, 4)]
        prox.step()
        for i in (0, 2, 4):
            assert torch.equal(net[i].weight.detach(), want[i]), (k, i)
        assert [net[i].weight.data_ptr() for i in (0, 2, 4)] == ptrs  # written in place
    assert net[0].weight.dtype == torch.float64


def test_float64_rows_that_need_their_scale_kept_apart(monkeypatch):
    """float64 rows whose plain sum of squares under- or overflows (entries
    near 1e-200 and 1e200, zero rows) take the scaled norms in the batch as
    in the public function: the same bits."""
    torch.manual_seed(3)
    shapes = [(5, 4, 3, 3), (6, 5), (4, 6, 3, 3)]
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64, generator=torch.Generator().manual_seed(j)).to(_device.DEVICE))
                  for j, s in enumerate(shapes)]
        with torch.no_grad():
            params[0][1] *= 1e-200
            params[0][:, 2] *= 1e200
            params[1][3] = 0.0
            params[2][:, 1] *= 1e-170
            params[2][0] *= 1e150
        opt = torch.optim.SGD(params, lr=1.0)
        prox = pt.ProximalStep(opt)
        prox.add(params[0], proxlib.GroupLasso(1e-3), grouping="channel")
        prox.add(params[1], pt.growl(_oscar), grouping="filter")
        prox.add(params[2], pt.growl(lambda G: proxlib.owl_weights_oscar(G, 1e-180, 1e-181)), grouping="channel")
        prox.add(params[2], proxlib.GroupLasso(1e-190), grouping="filter", label="x")
        before = [p.detach().clone() for p in params]
        prox.step()
        results[enabled] = [p.detach().clone() for p in params]
    for a, b in zip(results[True], results[False]):
        assert torch.equal(a, b)
    want = _expected(before[0], lambda R, s: proxlib.prox_group_lasso(R, 1e-3, s), "channel", 1.0)
    assert torch.equal(results[True][0], want)
    assert not torch.equal(results[True][0], before[0])


def test_group_lasso_batch_of_float32_and_float64_tensors(monkeypatch):
    """One batch of group-lasso terms on float32 and float64 tensors: the
    float64 rows' norms keep a scale s apart, the float32 rows' have none
    (s = 1 in the concatenated scales), and every tensor gets the public
    function's bits, as one by one."""
    torch.manual_seed(4)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(j)).to(device=_device.DEVICE, dtype=dt))
                  for j, (s, dt) in enumerate([((5, 4, 3, 3), torch.float32), ((6, 5), torch.float64), ((3, 7), torch.float32)])]
        opt = torch.optim.SGD(params, lr=1.0)
        prox = pt.ProximalStep(opt)
        for p in params:
            prox.add(p, proxlib.GroupLasso(0.3), grouping="channel")
        before = [p.detach().clone() for p in params]
        prox.step()
        results[enabled] = [p.detach().clone() for p in params]
        if enabled:
            assert all(t.plan().batched for t in prox.terms)
    for a, b, w in zip(results[True], results[False], before):
        assert torch.equal(a, b)
        want = _expected(w, lambda R, s: proxlib.prox_group_lasso(R, 0.3, s), "channel", 1.0)
        assert torch.equal(a, want) and not torch.equal(a, w)


def test_growl_batch_of_rows_whose_norms_exceed_2_1020(monkeypatch):
    """A GrOWL batch of float64 tensors with rows of entries near 1e308 (their
    norms exceed 2^1020, and their sums of squares overflow: norms with a
    scale s apart): the host's one-call solve declines, and each member is
    solved by the rescaling stage with its own scales, as the public function
    solves it: the same bits, batched or one by one."""
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64, generator=torch.Generator().manual_seed(j)).to(_device.DEVICE))
                  for j, s in enumerate([(5, 4), (3, 6)])]
        with torch.no_grad():
            params[0][1] *= 1e307
            params[1][0] *= 1e306
        opt = torch.optim.SGD(params, lr=1.0)
        prox = pt.ProximalStep(opt)
        for p in params:
            prox.add(p, pt.growl(lambda G: proxlib.owl_weights_oscar(G, 1e306, 1e305)), grouping="filter")
        before = [p.detach().clone() for p in params]
        prox.step()
        results[enabled] = [p.detach().clone() for p in params]
    for a, b, w in zip(results[True], results[False], before):
        assert torch.equal(a, b)
        want = _expected(w, lambda R, s: proxlib.prox_growl(R, proxlib.owl_weights_oscar(R.shape[0], 1e306, 1e305), s), "filter", 1.0)
        assert torch.equal(a, want) and not torch.equal(a, w)


def test_growl_members_solved_on_the_device_and_on_the_host(monkeypatch):
    """On an accelerator GrOWL's OWL of more than ``OWL_ON_HOST_MAX`` norms
    runs on the device; a batch mixes both kinds of members.  Here the route
    sends every other size to the device path (:mod:`._gpu_owl`, on CPU
    tensors), for the public function and the batch alike: the same bits."""
    monkeypatch.setattr(torch_dev, "solved_on_host", lambda n, device: n % 2 == 0)
    torch.manual_seed(1)
    # channel rows: 4, 7, 5, 5, 6 (two members on the host, apart: the second
    # one's factors start after the first one's)
    shapes = [(6, 4, 3, 3), (5, 7), (4, 5, 3, 3), (9, 5), (3, 6)]
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(j)).to(_device.DEVICE)) for j, s in enumerate(shapes)]
        opt = torch.optim.SGD(params, lr=0.5)
        prox = pt.ProximalStep(opt)
        for p in params:
            prox.add(p, pt.growl(_oscar), grouping="channel")
        before = [p.detach().clone() for p in params]
        prox.step()
        results[enabled] = [p.detach().clone() for p in params]
    for a, b, W in zip(results[True], results[False], before):
        assert torch.equal(a, b)
        assert torch.equal(a, _expected(W, lambda R, s: proxlib.prox_growl(R, _oscar(R.shape[0]), s), "channel", 0.5))


def test_check_finite_raises_before_any_write(monkeypatch):
    """A non-finite entry in one tensor of a batch: ``check_finite=True``
    raises before any tensor of the batch is written."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    net = _net(torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt, model=net, check_finite=True)
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="channel")
    prox.add(net[2], pt.growl(_oscar), grouping="filter")
    prox.add(net[4], proxlib.GroupLasso(0.5), grouping="filter")
    with torch.no_grad():
        net[4].weight[2, 3] = float("nan")
    before = [net[i].weight.detach().clone() for i in (0, 2, 4)]
    with pytest.raises(ValueError, match="NaN or Inf"):
        prox.step()
    for i, W in zip((0, 2, 4), before):
        torch.testing.assert_close(net[i].weight.detach(), W, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------- operation counts

def _ops_per_step(n_layers: int, pen, grouping: str, dtype) -> int:
    return _op_counts(n_layers, pen, grouping, dtype)[0]


def _op_counts(n_layers: int, pen, grouping: str, dtype) -> tuple:
    """(launching, all) torch operations of a step over ``n_layers`` convolutions."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(6, 6, 3) for _ in range(n_layers)]).to(device=_device.DEVICE, dtype=dtype)
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.1))
    for layer in net:
        prox.add(layer, pen, grouping=grouping)
    prox.step()
    prox.step()
    with OperationCount() as c:
        prox.step()
    return c.launching, c.total


@pytest.mark.skipif(torch_dev.ROW_STATS == "auto" and _device.DEVICE == "cuda", reason="counts the torch operations' statistics (Triton's are one launch)")
@pytest.mark.parametrize(
    ("pen", "grouping", "dtype", "per_layer", "views"),
    [
        # statistics: the float64 copy, square, sum, sqrt (+ float64: the scales s = 1 and the
        # range check's ge, le, and, not, any, and its read); "channel" rows of a convolution:
        # + their copy; the map: one multiplication.  Views (no launch; the host's time):
        # the rows, the factors' part and column; "channel": + the rows' permutation
        (proxlib.GroupLasso(0.1), "filter", torch.float32, 5, 3),
        (proxlib.GroupLasso(0.1), "channel", torch.float32, 6, 4),
        (proxlib.GroupLasso(0.1), "filter", torch.float64, 11, 3),
        (pt.growl(_oscar), "filter", torch.float32, 5, 3),
        (pt.growl(_oscar), "channel", torch.float32, 6, 4),
    ],
)
def test_a_batch_costs_a_few_operations_per_tensor_and_one_solve(pen, grouping, dtype, per_layer, views, monkeypatch):
    """The operations that make new data (a kernel launch each on a device)
    in a step over n convolutions: ``per_layer`` for each (the statistics
    and the map), and the solve once for all of them (a fixed number); and
    ``views`` views per tensor.  One by one, each tensor also paid for its
    own solve: 15-25 operations.  (The torch stages: with the multi-tensor
    kernel, ``torch_dev.GROUP_ROWS``, the group lasso costs no operation
    per tensor, ``test_triton_multi.py``.)"""
    monkeypatch.setattr(_batched, "ENABLED", True)
    monkeypatch.setattr(torch_dev, "GROUP_ROWS", "array")
    (four, four_all), (eight, eight_all) = (_op_counts(n, pen, grouping, dtype) for n in (4, 8))
    assert (eight - four) == 4 * per_layer
    assert (eight_all - eight) - (four_all - four) == 4 * views
    fixed = four - 4 * per_layer
    assert 0 < fixed <= 10
    monkeypatch.setattr(_batched, "ENABLED", False)
    assert _ops_per_step(4, pen, grouping, dtype) >= 4 * (per_layer + 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weighted_l1_batch_keeps_every_bit(dtype, monkeypatch):
    """Weighted l1 terms (one threshold, and one per entry) on tensors with
    NaN, +-0, +-inf and extreme entries, at steps that change (a new host
    threshold each time: :func:`_batched._host_threshold`) and one beyond the
    kernels' range (that term then runs on its own): every bit, NaNs
    included, as the terms one by one."""
    big = float(torch.finfo(dtype).max)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        rng = np.random.default_rng(5)  # the same tensors and weights in both runs
        params = []
        for j, shape in enumerate([(7, 3), (4, 2, 3, 3), (11,)]):
            x = torch.as_tensor(rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, size=shape), dtype=dtype)
            flat = x.view(-1)
            flat[:4] = torch.tensor([float("nan"), 0.0, -0.0, float("inf")], dtype=dtype)
            flat[4] = -big
            params.append(torch.nn.Parameter(x.to(_device.DEVICE)))
        params.append(torch.nn.Parameter(torch.tensor([-3.0, 2.5], dtype=dtype, device=_device.DEVICE)))
        prox = pt.ProximalStep(None)
        prox.add(params[0], proxlib.WeightedL1(0.3))
        prox.add(params[1], proxlib.WeightedL1(rng.uniform(0, 2, size=(4, 2, 3, 3))))
        prox.add(params[2], proxlib.WeightedL1(1e-3))
        prox.add(params[0], proxlib.WeightedL1(1e-200 if dtype == torch.float64 else 1e-40), label="tiny")
        # (one weight per entry, two entries: not one threshold, as a 2-entry threshold tensor once was taken)
        prox.add(params[3], proxlib.WeightedL1(np.array([1.0, 0.25])))
        out = []
        for lr in (1.0, 0.5, 1e300, 0.25):
            prox.step(lr=lr)
            out.append([p.detach().cpu().clone() for p in params])
        results[enabled] = out
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            assert torch.equal(a.view(torch.int64 if dtype == torch.float64 else torch.int32),
                               b.view(torch.int64 if dtype == torch.float64 else torch.int32))
    assert results[True][0][3].tolist() == [-2.0, 2.25]  # (lr 1: each entry by its own weight)


@pytest.mark.skipif(_device.DEVICE == "cuda", reason="on CUDA the multi-tensor operations are counted the same; kept to CPU for speed")
def test_weighted_l1_batch_is_three_operations_for_any_number_of_tensors(monkeypatch):
    """A step of weighted l1 terms with one threshold each: three operations
    that make new data whatever the number of tensors (each a multi-tensor
    operation: a few launches on a GPU); one by one, three per tensor."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    counts = [_ops_per_step(n, proxlib.WeightedL1(0.01), None, torch.float32) for n in (4, 8)]
    assert counts == [3, 3]
    monkeypatch.setattr(_batched, "ENABLED", False)
    assert _ops_per_step(4, proxlib.WeightedL1(0.01), None, torch.float32) == 12


def _close_or_equal(a, b, dtype):
    """Bit for bit on the CPU; on another device within the parity tolerance
    (a stack's row reductions may be blocked differently there; half
    precision, computed in float32 and rounded back: one unit in its last
    place, where a float32 difference lands on the other side of a rounding)."""
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:
        tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype) or torch.finfo(dtype).eps
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stack_max", [1 << 22, 40])
def test_row_wise_terms_are_stacked_and_solved_once(dtype, stack_max, monkeypatch):
    """Exclusive and group+exclusive terms on tensors whose rows share a
    length are stacked and solved by one call of the kernel (``STACK_MAX``
    small: several stacks); per-row thresholds, zero rows and the rows of
    every grouping.  Each tensor equals its public function's result, and
    the terms one by one."""
    monkeypatch.setattr(_batched, "STACK_MAX", stack_max)
    # (the stacks: under EXCLUSIVE_ROWS the rows are solved in place through row tables instead, tested in test_triton_exclusive.py)
    monkeypatch.setattr(_batched, "TABLE_KINDS", {k: v for k, v in _batched.TABLE_KINDS.items() if k not in _batched.ROW_WISE})
    # rows: group+exclusive on "channel" rows of length 6 (three tensors), exclusive on "filter" rows of
    # length 5 and 18, and on the "shape" rows of length 5 of a sixth tensor
    shapes = [(6, 5), (4, 5), (6, 5, 1, 1), (5, 2, 3, 3), (3, 4, 1, 2), (5, 2, 1, 1)]
    calls = collections.Counter()
    for name in ("exclusive_lasso", "group_exclusive"):
        kernel = getattr(torch_dev, name)
        monkeypatch.setattr(torch_dev, name, lambda *a, _k=kernel, _n=name, **kw: calls.update([_n]) or _k(*a, **kw))

    def terms(i, shape):
        if i % 2:  # per-row weights: one per filter
            c = np.linspace(0.1, 2.0, shape[0])
            return (proxlib.ExclusiveLasso(0.8, group_weights=c),
                    lambda R, s, c=c: proxlib.prox_exclusive_lasso(R, 0.8, s, group_weights=_like(c, R)), "filter")
        c = np.linspace(2.0, 0.2, shape[1])  # one per input channel
        return (proxlib.GroupExclusive(0.6, 0.3, group_weights=c),
                lambda R, s, c=c: proxlib.prox_group_exclusive(R, 0.6, 0.3, s, group_weights=_like(c, R)), "channel")

    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(sh, generator=torch.Generator().manual_seed(j), dtype=dtype).to(_device.DEVICE))
                  for j, sh in enumerate(shapes)]
        with torch.no_grad():
            params[1][2] = 0.0
            params[3][:, 1] = 0.0
        prox = pt.ProximalStep(None)
        specs = [terms(i, sh) for i, sh in enumerate(shapes[:5])]
        for p, (pen, _, grouping) in zip(params, specs):
            prox.add(p, pen, grouping=grouping)
        prox.add(params[5], proxlib.ExclusiveLasso(0.2), grouping="shape", label="shape")
        results[enabled] = []
        for lr in (0.5, 0.25):  # (the second step forms the rows that are a copy as their stack is solved)
            before = [p.detach().clone() for p in params]
            calls.clear()
            prox.step(lr=lr)
            results[enabled].append([p.detach().clone() for p in params])
            if enabled:
                assert all(t.plan().batched for t in prox.terms)
                # one call per stack: the three group+exclusive tensors (30, 30, 24 entries; with STACK_MAX = 40
                # each alone), the exclusive rows of length 5 (two tensors: 20 + 10 entries), of length 18
                assert calls == {"group_exclusive": 1 if stack_max > 100 else 3, "exclusive_lasso": 2}
                want = [_expected(W, fn, g, lr) for W, (_, fn, g) in zip(before, specs)]
                want.append(_expected(before[5], lambda R, s: proxlib.prox_exclusive_lasso(R, 0.2, s), "shape", lr))
                for got, w in zip(results[True][-1], want):
                    _close_or_equal(got, w, dtype)
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            _close_or_equal(a, b, dtype)


@pytest.mark.parametrize(
    ("pen", "grouping", "message"),
    [
        (proxlib.WeightedL1(0.5), None, "the parameter"),  # checked as the public path checks (no norms)
        (proxlib.GroupExclusive(0.1, 0.4), "filter", "NaN or Inf"),  # the kernel checks the whole stack
        (proxlib.ExclusiveLasso(0.3), "channel", "NaN or Inf"),
    ],
)
def test_check_finite_raises_before_any_write_weighted_l1_and_row_wise(pen, grouping, message, monkeypatch):
    """``check_finite=True``: an Inf in one of three tensors of a weighted-l1
    batch or an exclusive stack raises before any of them is written."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    params = [torch.nn.Parameter(torch.randn(4, 6).to(_device.DEVICE)) for _ in range(3)]
    with torch.no_grad():
        params[1][2, 1] = float("-inf")
    prox = pt.ProximalStep(None, check_finite=True)
    for p in params:
        prox.add(p, pen, grouping=grouping)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=message):
        prox.step(lr=1.0)
    for p, W in zip(params, before):
        assert torch.equal(p.detach(), W)


@pytest.mark.skipif(_device.DEVICE == "cuda", reason="counts the CPU's operations (its sort is NumPy's)")
def test_row_wise_stacks_cost_two_operations_per_tensor(monkeypatch):
    """Exclusive terms on n tensors with rows of one length: the kernel's
    operations once, plus the stacking and the copy back per tensor (the
    array code's: the Triton kernel of the rows is one operation either way)."""
    monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "array")
    monkeypatch.setattr(_batched, "ENABLED", True)
    four, eight = (_ops_per_step(n, proxlib.ExclusiveLasso(0.1), "filter", torch.float32) for n in (4, 8))
    assert eight - four == 4 * 1  # the copy back; the stack is one cat whatever n
    monkeypatch.setattr(_batched, "ENABLED", False)
    assert _ops_per_step(4, proxlib.ExclusiveLasso(0.1), "filter", torch.float32) > 4 * 40


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("stack_max", [1 << 22, 50])
def test_lp_terms_are_concatenated_and_solved_once(dtype, stack_max, monkeypatch):
    """lp terms on tensors of several shapes (p = 1/2, 2/3 and 0.3 in one
    step; p = 0 and 1 and lam = 0 on their own; ``STACK_MAX`` small: several
    stacks) over entries with +-0, +-inf, NaN, huge and tiny magnitudes, at
    steps that change (one beyond the kernels' range: those terms then run
    on their own): every bit, NaNs included, as the terms one by one; the
    first step also as the public function."""
    monkeypatch.setattr(_batched, "STACK_MAX", stack_max)
    shapes = [(7, 3), (4, 2, 3, 3), (11,), (5, 5), (3, 4)]
    terms = [(0, 0.3, 0.5), (1, 0.05, 0.5), (2, 1.0, 2.0 / 3.0), (3, 0.2, 0.3), (0, 0.01, 2.0 / 3.0),
             (4, 0.1, 0.0), (4, 0.1, 1.0), (3, 0.0, 0.5), (1, 0.002, 0.3)]  # fmt: skip
    # (a later term on a tensor is weak: it keeps what the earlier ones decided)
    big = float(torch.finfo(dtype).max)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        rng = np.random.default_rng(8)  # the same tensors in both runs
        params = []
        for shape in shapes:
            x = torch.as_tensor(rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3, size=shape), dtype=torch.float64)
            flat = x.view(-1)
            flat[:5] = torch.tensor([float("nan"), 0.0, -0.0, float("inf"), -big])
            params.append(torch.nn.Parameter(x.to(device=_device.DEVICE, dtype=dtype)))
        first = [p.detach().clone() for p in params]
        prox = pt.ProximalStep(None)
        for k, (i, lam, p) in enumerate(terms):
            prox.add(params[i], proxlib.Lp(lam, p), label=str(k))
        out = []
        for lr in (1.0, 0.5, 1e300, 0.25):
            prox.step(lr=lr)
            out.append([q.detach().cpu().clone() for q in params])
        results[enabled] = out
        assert [t.plan().batched for t in prox.terms] == [True] * len(terms)
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
            assert torch.equal(torch.signbit(a), torch.signbit(b))
    want = first
    for i, lam, p in terms:  # the first step (lr = 1) by the public function, in the terms' order
        w = want[i].float() if dtype == torch.bfloat16 else want[i]
        want[i] = proxlib.prox_lp(w, lam, p, 1.0, check_finite=False).to(dtype)
    for a, b in zip(results[True][0], want):
        b = b.cpu()
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("p", [0.5, 2.0 / 3.0, 0.3])
def test_lp_with_one_lam_and_with_lam_spread_are_the_same_bits_as_cuda_divides(p):
    """The batch solves lp terms with each lam spread over its entries
    (arrays); a term alone passes lam as a number.  Both must make the same
    operations on every device: on CUDA, torch divides a tensor by a number
    as ``tensor * (1 / number)`` (``_device.cuda_division``), not as a
    tensor by a tensor, so the closed-form start of p = 2/3 (``3 av^2 /
    (16 c)`` and ``c / 3`` with c = 2 lam / 3 a number in one path, an array
    in the other) differed in about 0.2% of the entries by 1-3 units in the
    last place, and the batched step was not the terms' one by one."""
    from proxlib import _range
    from proxlib._dispatch import array_namespace

    rng = np.random.default_rng(0)
    v = torch.from_numpy(rng.standard_normal(4000) * 10.0 ** rng.uniform(-1.0, 1.0, 4000))
    with _device.cuda_division():
        for lam in 10.0 ** rng.uniform(-3.0, 1.0, 8):
            lam = float(lam)
            alone = _xp_kernels.lp(v, lam, p)
            tau, beta = _range.lp_constants(lam, p)
            spread = [torch.full(v.shape, c, dtype=torch.float64) for c in (lam, tau, beta)]
            batched = _xp_kernels.lp_solve(v, torch.abs(v), spread[0], p, *spread[1:], array_namespace(v))
            assert torch.equal(alone, batched), (lam, int((alone != batched).sum()))


@pytest.mark.skipif(_device.DEVICE == "cuda", reason="counts the CPU's operations (kept to CPU for speed)")
def test_lp_batch_costs_a_few_operations_per_tensor_and_one_loop(monkeypatch):
    """lp terms (p = 1/2) on n tensors: the Newton loop's operations once,
    plus six per tensor (its float64 copy, its lam, tau and beta filled
    over its entries, the rounding to its dtype, the copy back); one by one,
    every tensor paid for a whole loop."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    four, eight = (_ops_per_step(n, proxlib.Lp(0.01, 0.5), None, torch.float32) for n in (4, 8))
    assert eight - four == 4 * 6
    monkeypatch.setattr(_batched, "ENABLED", False)
    assert _ops_per_step(4, proxlib.Lp(0.01, 0.5), None, torch.float32) > 4 * 40


# ---------------------------------------------------------------- property: any mix of terms

_SHAPES = [(3, 4), (4, 3), (5, 4), (2, 3, 2, 2), (3, 2, 3, 3), (4, 3, 1, 1), (6,)]
_GROUPINGS = [None, "filter", "channel", "shape", "layer"]


@st.composite
def _steps(draw):
    """Tensors (shapes, scales, zero rows) and terms of every batched kind on
    them in any order and grouping, steps, a dtype."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    n = draw(st.integers(1, 4))
    shapes = [draw(st.sampled_from(_SHAPES)) for _ in range(n)]
    scales = [10.0 ** draw(st.integers(-20, 20)) for _ in range(n)]
    zero_rows = [draw(st.booleans()) for _ in range(n)]
    terms = []
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, n - 1))
        kind = draw(st.sampled_from(["group_lasso", "growl", "weighted_l1", "weighted_l1_entries", "exclusive", "group_exclusive",
                                     "lp 1/2", "lp 2/3", "lp 0.3"]))  # fmt: skip
        grouping = None if len(shapes[i]) < 2 or kind.startswith(("weighted", "lp")) else draw(st.sampled_from(_GROUPINGS))
        lam = 10.0 ** draw(st.integers(-3, 1))
        terms.append((i, kind, grouping, lam))
    lrs = draw(st.lists(st.sampled_from([1.0, 0.5, 0.3, 1e-3]), min_size=1, max_size=3))
    return dtype, shapes, scales, zero_rows, terms, lrs, draw(st.integers(0, 2**16))


def _penalty(kind, lam, shape):
    if kind == "group_lasso":
        return proxlib.GroupLasso(lam)
    if kind == "growl":
        return pt.growl(lambda G, lam=lam: proxlib.owl_weights_oscar(G, lam, lam / 4))
    if kind == "weighted_l1":
        return proxlib.WeightedL1(lam)
    if kind == "weighted_l1_entries":
        return proxlib.WeightedL1(np.random.default_rng(1).uniform(0, lam, size=shape))
    if kind == "exclusive":
        return proxlib.ExclusiveLasso(lam)
    if kind.startswith("lp"):
        return proxlib.Lp(lam, {"lp 1/2": 0.5, "lp 2/3": 2.0 / 3.0, "lp 0.3": 0.3}[kind])
    return proxlib.GroupExclusive(lam, 0.5)


@given(problem=_steps())
@example(problem=(  # a convolution's "channel" rows (a copy: the broadcast map, rows formed at the stack's solve)
    torch.float32, [(3, 2, 3, 3), (2, 3, 2, 2)], [1.0, 1e-3], [False, True],
    [(0, "group_lasso", "channel", 0.1), (1, "growl", "channel", 0.1), (0, "group_exclusive", "channel", 0.1),
     (1, "exclusive", "channel", 0.1), (0, "weighted_l1", None, 0.01), (1, "group_lasso", "channel", 1e-3)],
    [1.0, 0.5], 3))
def test_any_mix_of_terms_batched_equals_one_by_one(problem):
    """Hypothesis: tensors of several shapes and scales (zero rows included),
    terms of every batched kind on them in any order and grouping (several on
    one tensor), one to three steps: the batched steps equal the terms one by
    one, bit for bit (on another device, the row-wise stacks to the parity
    tolerance)."""
    dtype, shapes, scales, zero_rows, terms, lrs, seed = problem
    results = {}
    for enabled in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_batched, "ENABLED", enabled)
            results[enabled] = _run_steps(dtype, shapes, scales, zero_rows, terms, lrs, seed)
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            _close_or_equal(a, b, dtype)


def _run_steps(dtype, shapes, scales, zero_rows, terms, lrs, seed):
    """The parameters after each step (a fresh ProximalStep on fresh tensors)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape, scale, zero in zip(shapes, scales, zero_rows):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
        if zero and len(shape) > 1:
            x[0] = 0.0
        params.append(torch.nn.Parameter(x.to(device=_device.DEVICE, dtype=dtype)))
    prox = pt.ProximalStep(None)
    for k, (i, kind, grouping, lam) in enumerate(terms):
        prox.add(params[i], _penalty(kind, lam, shapes[i]), grouping=grouping, label=str(k))
    out = []
    for lr in lrs:
        prox.step(lr=lr)
        out.append([p.detach().clone() for p in params])
    return out


# ---------------------------------------------------------------- in a diagonal metric

_METRIC_KERNELS = _batched.METRIC_ROW_WISE + _batched.METRIC_SEPARABLE


def _metric_step(params, metrics, terms, lrs, check_finite=False):
    """``ProximalStep(metric=...)`` over ``terms`` ((param index, penalty,
    grouping)) with the metric ``metrics[i]`` for parameter i; the
    parameters after each step at the learning rates ``lrs``."""
    by_id = {id(p): d for p, d in zip(params, metrics)}
    prox = pt.ProximalStep(torch.optim.SGD(params, lr=1.0), metric=lambda opt, p: by_id[id(p)], check_finite=check_finite)
    for k, (i, pen, grouping) in enumerate(terms):
        prox.add(params[i], pen, grouping=grouping, label=str(k))
    out = []
    for lr in lrs:
        prox.step(lr=lr)
        out.append([p.detach().clone() for p in params])
    return prox, out


def _metric_problem(dtype, seed=0):
    """Parameters of several shapes and scales (a zero row), metrics > 0
    spanning two decades, and terms of every metric kernel: row terms whose
    rows share a length across tensors, separable ones with one threshold
    and one per entry, lp with p = 1/2 on two tensors, p = 1 and lam = 0,
    and a last term on a tensor already in a pending batch."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (4, 5), (6, 5, 1, 1), (5, 2, 3, 3), (3, 4, 1, 2), (3, 2, 1, 1), (6, 5, 1, 1),
              (7,), (4, 4), (3, 3), (5,), (2, 3), (4, 2)]  # fmt: skip
    params = []
    for j, shape in enumerate(shapes):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 10.0 ** (j % 5 - 2)
        params.append(torch.nn.Parameter(x.to(device=_device.DEVICE, dtype=dtype)))
    with torch.no_grad():
        params[1][2] = 0.0
    work = torch.float32 if dtype == torch.bfloat16 else dtype
    metrics = [(0.1 * 100.0 ** torch.rand(s, generator=gen, dtype=torch.float64)).to(device=_device.DEVICE, dtype=work) for s in shapes]
    rng = np.random.default_rng(seed)
    terms = [
        (0, proxlib.GroupLasso(0.3), "filter"),  # rows of length 5 (with the next)
        (1, proxlib.GroupLasso(0.2), "filter"),
        (2, proxlib.GroupLasso(0.4), "channel"),  # rows of length 6
        (3, proxlib.ExclusiveLasso(0.8, group_weights=np.linspace(0.1, 2.0, 5)), "filter"),  # length 18
        (4, proxlib.ExclusiveLasso(0.2), "shape"),  # length 3 (with the next)
        (5, proxlib.ExclusiveLasso(0.5), "shape"),
        (6, proxlib.GroupExclusive(0.6, 0.3), "channel"),
        (7, proxlib.WeightedL1(0.05), None),
        (8, proxlib.WeightedL1(rng.uniform(0, 0.3, size=(4, 4))), None),
        (9, proxlib.Lp(0.1, 0.5), None),
        (10, proxlib.Lp(0.05, 0.5), None),
        (11, proxlib.Lp(0.05, 1.0), None),
        (8, proxlib.Lp(0.0, 0.5), None),  # lam = 0: on its own (after the weighted l1 batch holding its tensor)
        (12, proxlib.WeightedL2Sq(rng.uniform(0, 2, size=(4, 2))), None),
        (0, proxlib.WeightedL1(0.01), None),  # its tensor is in the pending group-lasso batch: that batch runs first
    ]
    return params, metrics, terms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("stack_max", [1 << 22, 25])
@pytest.mark.parametrize("gather", [True, False])
def test_metric_terms_are_stacked_and_solved_once(dtype, stack_max, gather, monkeypatch):
    """``ProximalStep(metric=...)``: terms of every metric kernel, batched:
    the row terms whose rows share a length stacked and solved by one call
    of the kernel, the separable ones concatenated (``STACK_MAX`` small:
    several stacks, a tensor beyond it alone; the row kernels' host route,
    which gathers the rows of each case, and the device route, which does
    not).  Every step equals the terms one by one, bit for bit."""
    monkeypatch.setattr(_batched, "STACK_MAX", stack_max)
    monkeypatch.setattr(_batched, "METRIC_STACK_MAX_CPU", stack_max)
    monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: gather)
    calls = collections.Counter()
    for name in _METRIC_KERNELS:
        kernel = getattr(torch_dev, name)
        monkeypatch.setattr(torch_dev, name, lambda *a, _k=kernel, _n=name, **kw: calls.update([_n]) or _k(*a, **kw))
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params, metrics, terms = _metric_problem(dtype)
        calls.clear()
        prox, results[enabled] = _metric_step(params, metrics, terms, [0.5, 0.25, 0.25])
        if enabled:
            assert all(t.plan().batched for t in prox.terms)
            per_step = {k: v // 3 for k, v in calls.items()}
            # one call per stack: rows of length 5 (two tensors), 6; 18, 3 (two tensors); lp: the p = 1/2
            # stack, p = 1 and lam = 0 alone; weighted l1: the first two tensors, then (after the lam = 0
            # term ran their batch) the last term's
            want = {"group_lasso_metric": 2, "exclusive_lasso_metric": 2, "group_exclusive_metric": 1,
                    "weighted_l1_metric": 2, "lp_metric": 3, "weighted_l2sq_metric": 1}
            if stack_max < 100:  # 30 + 20 entries of length-5 rows, 24 + 6 of length 3: two stacks each
                want.update(group_lasso_metric=3, exclusive_lasso_metric=3)
            assert per_step == want
        else:
            assert sum(calls.values()) == 3 * len(terms)
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            _close_or_equal(a, b, dtype)
    assert not all(torch.equal(a, b) for a, b in zip(results[True][0], _metric_problem(dtype)[0]))  # the steps did something


@pytest.mark.parametrize(
    ("where", "message"),
    [("parameter", "the parameter"), ("metric-inf", "the metric"), ("metric-zero", "must be > 0")],
)
def test_metric_batch_raises_before_any_write(where, message, monkeypatch):
    """``check_finite=True``: an Inf in one of three tensors of a metric
    batch, or in its metric, or a zero in its metric, raises before any of
    them is written."""
    monkeypatch.setattr(_batched, "ENABLED", True)
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 6, generator=gen).to(_device.DEVICE)) for _ in range(3)]
    metrics = [torch.rand(4, 6, generator=gen).to(_device.DEVICE) + 0.5 for _ in range(3)]
    target = params[2] if where == "parameter" else metrics[2]
    with torch.no_grad():
        target[1, 3] = 0.0 if where == "metric-zero" else float("inf")
    before = [p.detach().clone() for p in params]
    terms = [(0, proxlib.GroupLasso(0.3), "filter"), (1, proxlib.WeightedL1(0.2), None), (2, proxlib.GroupLasso(0.3), "filter")]
    with pytest.raises(ValueError, match=message):
        _metric_step(params, metrics, terms, [1.0], check_finite=True)
    for p, W in zip(params, before):
        assert torch.equal(p.detach(), W)


def _metric_ops_per_step(n_layers: int, pen, grouping) -> int:
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(6, 6, 3) for _ in range(n_layers)]).to(_device.DEVICE)
    params = [layer.weight for layer in net]
    metrics = [torch.rand(p.shape, generator=torch.Generator().manual_seed(i)).to(_device.DEVICE) + 0.1 for i, p in enumerate(params)]
    by_id = {id(p): d for p, d in zip(params, metrics)}
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.1), metric=lambda opt, p: by_id[id(p)])
    for layer in net:
        prox.add(layer, pen, grouping=grouping)
    prox.step()
    with OperationCount() as c:
        prox.step()
    return c.launching


@pytest.mark.skipif(_device.DEVICE == "cuda", reason="counts the operations of the device route on CPU tensors (kept to CPU for speed)")
@pytest.mark.parametrize(
    ("pen", "grouping", "per_layer"),
    [
        # the copy back (the rows of "filter" are views; the stack is one cat of the rows and
        # one of the metrics whatever n; the metric is read in its own dtype, float32 here:
        # no float64 copy of it per tensor)
        (proxlib.GroupLasso(0.1), "filter", 1),
        (proxlib.GroupExclusive(0.1, 0.2), "filter", 1),
        (proxlib.ExclusiveLasso(0.3), "filter", 1),
        # the separable kernels' layout is the tensor's
        (proxlib.WeightedL1(0.01), None, 1),
        (proxlib.Lp(0.01, 0.5), None, 1),
    ],
)
def test_a_metric_batch_costs_a_few_operations_per_tensor_and_one_solve(pen, grouping, per_layer, monkeypatch):
    """Metric terms on n convolutions whose rows share a length, on the
    device route (no gathering of rows): ``per_layer`` operations that make
    new data for each tensor, the kernel's (root searches, sorts, Newton
    loops) once for all; one by one, every tensor paid for a whole solve.
    (The array code's counts: the metric group lasso's Triton kernel, off
    until it has run on a GPU, is one launch per call either way.)"""
    monkeypatch.setattr(torch_dev, "_gathers_rows", lambda W: False)
    monkeypatch.setattr(_metric_kernels, "METRIC_ROWS", "array")
    monkeypatch.setattr(_batched, "ENABLED", True)
    four, eight = (_metric_ops_per_step(n, pen, grouping) for n in (4, 8))
    assert eight - four == 4 * per_layer
    monkeypatch.setattr(_batched, "ENABLED", False)
    assert _metric_ops_per_step(8, pen, grouping) > eight + 4 * 10


def _metric_penalty(kind, lam, shape):
    if kind == "weighted_l2sq":
        return proxlib.WeightedL2Sq(lam)
    if kind == "lp 0":
        return proxlib.Lp(lam, 0.0)
    if kind == "lp 1":
        return proxlib.Lp(lam, 1.0)
    return _penalty(kind, lam, shape)


@st.composite
def _metric_steps(draw):
    """Tensors (shapes, scales, zero rows), metrics (a scale per tensor, and
    a spread of up to ten decades over its entries), and terms of every
    metric kernel on them in any order and grouping; steps; a dtype."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    n = draw(st.integers(1, 4))
    shapes = [draw(st.sampled_from(_SHAPES)) for _ in range(n)]
    scales = [10.0 ** draw(st.integers(-20, 20)) for _ in range(n)]
    zero_rows = [draw(st.booleans()) for _ in range(n)]
    metric_scales = [(10.0 ** draw(st.integers(-10, 10)), draw(st.integers(0, 10))) for _ in range(n)]
    terms = []
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, n - 1))
        kind = draw(st.sampled_from(["group_lasso", "exclusive", "group_exclusive", "weighted_l1", "weighted_l1_entries",
                                     "weighted_l2sq", "lp 1/2", "lp 0.3", "lp 0", "lp 1"]))  # fmt: skip
        separable = kind.startswith(("weighted", "lp"))
        grouping = None if len(shapes[i]) < 2 or separable else draw(st.sampled_from(_GROUPINGS))
        terms.append((i, kind, grouping, 10.0 ** draw(st.integers(-3, 1))))
    lrs = draw(st.lists(st.sampled_from([1.0, 0.5, 1e-3]), min_size=1, max_size=2))
    return dtype, shapes, scales, zero_rows, metric_scales, terms, lrs, draw(st.integers(0, 2**16))


@given(problem=_metric_steps())
def test_any_mix_of_metric_terms_batched_equals_one_by_one(problem):
    """Hypothesis: metric terms of every kind on tensors of several shapes
    and scales, in metrics of any scale and spread, several on one tensor,
    one or two steps: the batched steps equal the terms one by one, bit for
    bit (on another device, the row-wise stacks to the parity tolerance)."""
    dtype, shapes, scales, zero_rows, metric_scales, terms, lrs, seed = problem
    results = {}
    for enabled in (True, False):
        gen = torch.Generator().manual_seed(seed)
        params, metrics = [], []
        for shape, scale, zero, (dscale, spread) in zip(shapes, scales, zero_rows, metric_scales):
            x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
            if zero and len(shape) > 1:
                x[0] = 0.0
            params.append(torch.nn.Parameter(x.to(device=_device.DEVICE, dtype=dtype)))
            d = dscale * 10.0 ** (spread * torch.rand(shape, generator=gen, dtype=torch.float64))
            metrics.append(d.to(device=_device.DEVICE, dtype=dtype))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_batched, "ENABLED", enabled)
            specs = [(i, _metric_penalty(kind, lam, shapes[i]), grouping) for i, kind, grouping, lam in terms]
            results[enabled] = _metric_step(params, metrics, specs, lrs)[1]
    for step_b, step_u in zip(results[True], results[False]):
        for a, b in zip(step_b, step_u):
            _close_or_equal(a, b, dtype)


@pytest.mark.skipif(_device.DEVICE == "cuda", reason="counts the operations of the device route on CPU tensors (kept to CPU for speed)")
def test_adam_metric_step_forms_the_metrics_together(monkeypatch):
    """``metric="adam"``: the tensors' metrics (Adam's denominators) are
    formed by three multi-tensor operations for all of them, and their step
    counts (CPU tensors in torch's default Adam) read together, so a
    weighted-l1 step in Adam's metric costs one operation per tensor, as
    with a given metric: the copy back (the metric is read in its own
    dtype)."""
    monkeypatch.setattr(_batched, "ENABLED", True)

    def launching(n_layers):
        torch.manual_seed(0)
        net = torch.nn.Sequential(*[torch.nn.Conv2d(6, 6, 3) for _ in range(n_layers)]).to(_device.DEVICE)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(torch.randn(2, 6, 2 * n_layers + 2, 2 * n_layers + 2, device=_device.DEVICE)).sum().backward()
        opt.step()
        prox = pt.ProximalStep(opt, model=net, metric="adam")
        for layer in net:
            prox.add(layer, proxlib.WeightedL1(0.01))
        prox.step()
        with OperationCount() as c:
            prox.step()
        return c.launching, c.ops["aten._foreach_sqrt.default"]

    (four, sqrt4), (eight, sqrt8) = launching(4), launching(8)
    assert eight - four == 4 * 1
    assert sqrt4 == sqrt8 == 1


_norms = st.one_of(st.just(0.0), st.floats(2.0**-1074, 2.0**1000), st.sampled_from([1.0, 2.5, 0.25]))


@given(
    st.lists(st.tuples(st.lists(_norms, min_size=0, max_size=12), st.booleans(), st.booleans()), min_size=1, max_size=6),
    st.integers(-40, 40),
)
def test_host_growl_factors_of_a_batch_are_each_tensors_bit_for_bit(segments, log_step):
    """GrOWL's factors of several tensors' row norms in one Numba call
    (:func:`torch_dev.host_growl_factors`, as a GPU step forms them on the
    host) equal each tensor's own solve stage with the host OWL
    (``_stages.growl_factor`` with Numba's ``owl``), bit for bit: zero and
    tied norms, norms over the float range, scales s (float64 rows, powers of
    two; 1 for the float32 members) or none, an infinite first weight."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    from proxlib.backends import _stages

    nrm = np.array([x for seg, _, _ in segments for x in seg], dtype=np.float64)
    starts = np.cumsum([0] + [len(seg) for seg, _, _ in segments])
    wide = any(w for _, w, _ in segments)
    rng = np.random.default_rng(len(nrm))
    s = np.concatenate([2.0 ** rng.integers(-30, 30, len(seg)) if w else np.ones(len(seg)) for seg, w, _ in segments]) if wide else None
    w = np.concatenate([
        np.full(len(seg), np.inf) if inf_w and len(seg) else np.sort(rng.random(len(seg)))[::-1] * 2.0**log_step
        for seg, _, inf_w in segments
    ])
    owl = lambda v, t: nb.owl(v, t, parallel=False)  # noqa: E731
    orders = np.full(len(nrm), -1, dtype=np.int64)
    for call in range(3):  # without kept orders, then with them (the second call sorts from the first's)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch_dev, "_host_numba", lambda: nb)  # (as on a GPU machine; the suite sets CPU_KERNELS "torch")
            got = torch_dev.host_growl_factors(nrm, s, w, starts, None if call == 0 else orders)
        with np.errstate(over="ignore"):  # (a norm times its scale past float64 is inf: past 2^1020)
            huge = s is not None and np.any(nrm * s > 2.0**1020)
        if huge:
            assert got is None  # (the stage rescales: solved tensor by tensor)
            return
        assert got is not None
        want = np.concatenate([np.zeros(0)] + [
            _stages.growl_factor(nrm[a:b], w[a:b], owl, s[a:b] if wide and segments[i][1] else None)
            for i, (a, b) in enumerate(zip(starts[:-1], starts[1:]))
        ])
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
        for a, b in zip(starts[:-1], starts[1:]):  # each segment's kept order: a permutation of its norms
            assert b == a or orders[a] < 0 or sorted(orders[a:b]) == list(range(b - a))
        if call == 1:  # each segment's norms reversed: the kept orders then far from sorted
            nrm = np.concatenate([np.zeros(0)] + [nrm[a:b][::-1] for a, b in zip(starts[:-1], starts[1:])])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_growl_batch_with_the_host_owl_on_numba(dtype, monkeypatch):
    """A GPU step's host OWL is Numba's: there the batch solves every
    member's norms in one call (:func:`torch_dev.host_growl_factors`), and
    the step equals the terms one by one (each through ``host_owl``) and the
    public functions, bit for bit; the one call is made once per step."""
    nb = pytest.importorskip("proxlib.backends.numba_cpu")
    monkeypatch.setattr(torch_dev, "_host_numba", lambda: nb)
    calls = []
    one_call = nb.growl_segments
    monkeypatch.setattr(nb, "growl_segments", lambda *a: calls.append(len(a[3]) - 1) or one_call(*a))
    shapes = [(6, 4, 3, 3), (5, 7), (4, 5, 3, 3), (9, 5), (3, 1, 3, 3)]
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_batched, "ENABLED", enabled)
        params = [torch.nn.Parameter(torch.randn(s, generator=torch.Generator().manual_seed(j), dtype=dtype).to(_device.DEVICE))
                  for j, s in enumerate(shapes)]
        opt = torch.optim.SGD(params, lr=0.5)
        prox = pt.ProximalStep(opt)
        for p in params:
            prox.add(p, pt.growl(_oscar), grouping="channel")
        before = [p.detach().clone() for p in params]
        for _ in range(2):
            prox.step()
        results[enabled] = [p.detach().clone() for p in params]
    assert calls == [5, 5]  # (the batch: one call per step for the five tensors; one by one: none)
    for a, b, W in zip(results[True], results[False], before):
        assert torch.equal(a, b)
        once = _expected(W, lambda R, s: proxlib.prox_growl(R, _oscar(R.shape[0]), s), "channel", 0.5)
        assert torch.equal(a, _expected(once, lambda R, s: proxlib.prox_growl(R, _oscar(R.shape[0]), s), "channel", 0.5))


@pytest.mark.parametrize("penalty", ["group lasso", "exclusive"])
@pytest.mark.parametrize("kernels", ["array", "triton"])
def test_tensors_sharing_memory_keep_the_terms_order(penalty, kernels, monkeypatch):
    """Distinct parameters over overlapping memory (views of one tensor):
    the step equals the terms applied one after another (a batch reads all
    its tensors before writing any, and the Triton kernels read and write
    them in one launch: a term whose tensor overlaps a pending batch's runs
    that batch first); parameters over disjoint parts of one memory stay in
    one batch."""
    if kernels == "triton":
        pytest.importorskip("triton")
        monkeypatch.setattr(_xp_kernels, "EXCLUSIVE_ROWS", "triton")
        monkeypatch.setattr(torch_dev, "GROUP_ROWS", "triton")
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "torch")

    def stepped(batched: bool, rows):
        monkeypatch.setattr(_batched, "ENABLED", batched)
        base = torch.randn(8, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(_device.DEVICE)
        params = [torch.nn.Parameter(base[a:b]) for a, b in rows]
        prox = pt.ProximalStep(torch.optim.SGD(params, lr=0.5))
        for p in params:
            prox.add(p, proxlib.GroupLasso(0.4) if penalty == "group lasso" else proxlib.ExclusiveLasso(0.3), grouping="filter")
        prox.step()
        return base

    for rows in ([(0, 6), (2, 8)], [(0, 4), (4, 8)]):  # overlapping, disjoint
        torch.testing.assert_close(stepped(True, rows), stepped(False, rows), rtol=0, atol=0)
    if kernels == "triton":  # (the disjoint ones: one launch for both)
        from proxlib.backends import _triton_exclusive, _triton_multi

        module = _triton_multi if penalty == "group lasso" else _triton_exclusive
        before = module.launches
        stepped(True, [(0, 4), (4, 8)])
        assert module.launches == before + 1

"""proxlib.torch.ProximalStep: exactly proxlib's prox, in place, at lr * strength."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.torch import _bridge  # noqa: E402


def _growl_weights(G):
    return proxlib.owl_weights_stairwise(G, 0.2, 0.05, G // 2)


# (penalty for the hook, the same penalty as a NumPy function of (rows, step), grouping)
CASES = {
    "group-lasso/channel": (proxlib.GroupLasso(0.7), lambda R, s: proxlib.prox_group_lasso(R, 0.7, s), "channel"),
    "group-lasso/filter": (proxlib.GroupLasso(0.7), lambda R, s: proxlib.prox_group_lasso(R, 0.7, s), "filter"),
    "group-lasso/layer": (proxlib.GroupLasso(0.7), lambda R, s: proxlib.prox_group_lasso(R, 0.7, s), "layer"),
    "growl/channel": (pt.growl(_growl_weights), lambda R, s: proxlib.prox_growl(R, _growl_weights(R.shape[0]), s), "channel"),
    "exclusive/filter": (proxlib.ExclusiveLasso(0.9), lambda R, s: proxlib.prox_exclusive_lasso(R, 0.9, s), "filter"),
    "group-exclusive/shape": (proxlib.GroupExclusive(0.8, 0.3), lambda R, s: proxlib.prox_group_exclusive(R, 0.8, 0.3, s), "shape"),
    "sequential/shape": (
        pt.GroupExclusiveSequential(0.8, 0.3),
        lambda R, s: proxlib.prox_group_exclusive_sequential(R, 0.8, 0.3, s),
        "shape",
    ),
    "weighted-l1": (proxlib.WeightedL1(0.5), lambda R, s: proxlib.prox_weighted_l1(R, 0.5, s), None),
    "weighted-l2sq": (proxlib.WeightedL2Sq(0.5), lambda R, s: proxlib.prox_weighted_l2sq(R, 0.5, s), None),
    "lp": (proxlib.Lp(0.3, 0.5), lambda R, s: proxlib.prox_lp(R, 0.3, 0.5, s), None),
}


def _expected(W: np.ndarray, fn, grouping, step):
    if grouping is None:
        return fn(W, step)
    return proxlib.from_rows(fn(proxlib.to_rows(W, grouping), step), W.shape, grouping)


def _conv_pair(dtype=torch.float32):
    torch.manual_seed(0)
    a = torch.nn.Conv2d(3, 4, 3).to(dtype)
    b = torch.nn.Conv2d(3, 4, 3).to(dtype)
    b.load_state_dict(a.state_dict())
    return a, b


def _sgd_step(module, opt, x):
    opt.zero_grad()
    module(x).pow(2).mean().backward()
    opt.step()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hook_applies_exactly_proxlibs_prox(case, dtype):
    pen, fn, grouping = CASES[case]
    a, b = _conv_pair(dtype)
    lr, strength = 0.3, 0.4
    opt_a = torch.optim.SGD(a.parameters(), lr=lr)
    opt_b = torch.optim.SGD(b.parameters(), lr=lr)
    prox = pt.ProximalStep(opt_a)
    prox.add(a, pen, grouping=grouping, strength=strength)
    prox.attach()
    x = torch.randn(2, 3, 6, 6, dtype=dtype, generator=torch.Generator().manual_seed(1))
    ptr = a.weight.data_ptr()
    for _ in range(3):
        _sgd_step(a, opt_a, x)
        _sgd_step(b, opt_b, x)
        expected = _expected(b.weight.detach().numpy().copy(), fn, grouping, lr * strength)
        with torch.no_grad():
            b.weight.copy_(torch.from_numpy(expected))
        np.testing.assert_array_equal(a.weight.detach().numpy(), expected)
    assert a.weight.dtype == dtype
    assert a.weight.data_ptr() == ptr
    assert prox.n_steps == 3
    # bias untouched by the prox: identical to the reference's
    np.testing.assert_array_equal(a.bias.detach().numpy(), b.bias.detach().numpy())


def test_prox_is_in_place_and_keeps_autograd_bookkeeping():
    lin = torch.nn.Linear(10, 6)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(0.5), grouping="channel")
    w = lin.weight
    ptr, storage, version = w.data_ptr(), w.untyped_storage().data_ptr(), w._version
    before = w.detach().clone()
    prox.step()
    assert lin.weight is w and w.data_ptr() == ptr and w.untyped_storage().data_ptr() == storage
    assert w._version > version  # as copy_ would: stale saved tensors are detected
    assert w.requires_grad and w.grad is None
    assert not torch.equal(before, w.detach())


def test_lr_scheduler_changes_the_step():
    """With zero gradients SGD leaves w alone, so each step shrinks every row
    norm by exactly lr_t * strength * lam (group lasso, rows that stay non-zero)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64) * 10)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.GroupLasso(2.0), grouping="filter", strength=3.0)
    prox.attach()
    for t in range(4):
        lr = opt.param_groups[0]["lr"]
        before = torch.linalg.vector_norm(p.detach(), dim=1)
        p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
        after = torch.linalg.vector_norm(p.detach(), dim=1)
        np.testing.assert_allclose((before - after).numpy(), lr * 3.0 * 2.0, rtol=1e-12)
        assert lr == pytest.approx(0.1 * 0.5**t)


def test_each_param_group_uses_its_own_lr():
    a = torch.nn.Parameter(torch.full((2, 3), 5.0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.full((2, 3), 5.0, dtype=torch.float64))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=1.0)
    prox = pt.ProximalStep(opt)
    prox.add(a, proxlib.WeightedL1(1.0))
    prox.add(b, proxlib.WeightedL1(1.0))
    prox.step()
    assert torch.all(a == 4.9) and torch.all(b == 4.99)
    prox.step(lr=1.0)  # an explicit lr overrides
    assert torch.allclose(a, torch.tensor(3.9, dtype=torch.float64)) and torch.allclose(b, torch.tensor(3.99, dtype=torch.float64))


def test_attaching_twice_applies_the_prox_once_and_detach_removes_it():
    p = torch.nn.Parameter(torch.full((2, 2), 5.0, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.WeightedL1(1.0))
    prox.attach()
    prox.attach()
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.all(p == 4.5) and prox.n_steps == 1
    prox.detach()
    opt.step()
    assert torch.all(p == 4.5)


def test_zero_lr_or_strength_is_the_identity():
    p = torch.nn.Parameter(torch.randn(3, 3))
    opt = torch.optim.SGD([p], lr=0.0)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.GroupLasso(1.0))
    before = p.detach().clone()
    prox.step()
    assert torch.equal(p.detach(), before)


def test_parametrized_weight_writes_to_the_leaf():
    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 4)
    torch.nn.utils.parametrize.register_parametrization(lin, "weight", Double())
    leaf = lin.parametrizations.weight.original
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(0.3), grouping="channel")
    ptr = leaf.data_ptr()
    ref = leaf.detach().numpy().copy()
    prox.step()
    expected = proxlib.from_rows(proxlib.prox_group_lasso(proxlib.to_rows(ref, "channel"), 0.3, 0.5), ref.shape, "channel")
    np.testing.assert_array_equal(leaf.detach().numpy(), expected)
    assert leaf.data_ptr() == ptr
    np.testing.assert_array_equal(lin.weight.detach().numpy(), 2 * expected)


def test_pruned_weight_writes_to_weight_orig_and_follows_later_pruning():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.WeightedL1(0.1))  # added before pruning: the module is re-resolved
    torch.nn.utils.prune.l1_unstructured(lin, "weight", amount=0.5)
    assert pt.ProxTerm(lin, proxlib.WeightedL1(0.1)).leaf is lin.weight_orig
    ref = lin.weight_orig.detach().numpy().copy()
    prox.step()
    np.testing.assert_array_equal(lin.weight_orig.detach().numpy(), proxlib.prox_weighted_l1(ref, 0.1, 0.5))
    lin(torch.zeros(1, 6))  # prune recomputes module.weight = weight_orig * mask in a forward pre-hook
    np.testing.assert_array_equal(lin.weight.detach().numpy(), (lin.weight_orig * lin.weight_mask).detach().numpy())


def test_value_is_strength_times_penalty_and_values_are_labelled():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="channel", strength=2.0)
    prox.add(net[1], pt.growl(_growl_weights), grouping="channel", strength=0.5)
    W0, W1 = (net[i].weight.detach().numpy().astype(np.float64) for i in (0, 1))
    v0 = 2.0 * proxlib.GroupLasso(0.5).value(proxlib.to_rows(W0, "channel"))
    v1 = 0.5 * proxlib.GrOWL(_growl_weights(5)).value(proxlib.to_rows(W1, "channel"))
    assert prox.value() == pytest.approx(v0 + v1, rel=1e-6)
    assert list(prox.values()) == ["Linear.weight", "Linear.weight#1"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_params_are_computed_in_float32_and_keep_their_dtype(dtype):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 4).to(dtype))
    opt = torch.optim.SGD([p], lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.GroupLasso(0.4), grouping="filter")
    ref = proxlib.prox_group_lasso(p.detach().float().numpy(), 0.4, 0.5)
    prox.step()
    assert p.dtype == dtype
    assert torch.equal(p.detach(), torch.from_numpy(ref).to(dtype))


def test_state_dict_round_trip():
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(1.0), strength=0.25)
    prox.step()
    prox.terms[0].strength = 0.125
    state = prox.state_dict()
    fresh = pt.ProximalStep(opt)
    fresh.add(lin, proxlib.GroupLasso(1.0), strength=1.0)
    fresh.load_state_dict(state)
    assert fresh.n_steps == 1 and fresh.terms[0].strength == 0.125
    with pytest.raises(ValueError, match="terms"):
        pt.ProximalStep(opt).load_state_dict(state)


def test_bad_configurations_are_rejected():
    lin = torch.nn.Linear(3, 2)
    other = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    with pytest.raises(TypeError, match="penalty"):
        prox.add(lin, object())
    with pytest.raises(ValueError, match="grouping"):
        prox.add(lin, proxlib.GroupLasso(1.0), grouping="rows")
    with pytest.raises(ValueError, match="strength"):
        prox.add(lin, proxlib.GroupLasso(1.0), strength=-1)
    with pytest.raises(TypeError, match="no tensor"):
        prox.add(lin, proxlib.GroupLasso(1.0), name="nope")
    prox.add(other, proxlib.GroupLasso(1.0))
    with pytest.raises(ValueError, match="not in the optimizer"):
        prox.step()
    with pytest.raises(ValueError, match="not in the optimizer"):
        prox.attach()
    with pytest.raises(ValueError, match="optimizer"):
        pt.ProximalStep().step()
    with pytest.raises(TypeError, match="floating"):
        _bridge.working_tensor(torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2), (2, 3, 2), (0, 3, 2, 2)])
@pytest.mark.parametrize("grouping", list(proxlib.GROUPINGS) + ["output", "input", "row", "column"])
def test_torch_row_views_match_proxlibs(shape, grouping):
    W = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    R = _bridge.rows(torch.from_numpy(W), grouping)
    np.testing.assert_array_equal(R.numpy(), proxlib.to_rows(W, grouping))
    back = _bridge.from_rows(R, shape, grouping)
    np.testing.assert_array_equal(back.numpy(), W)


def test_examples_in_docstrings_run():
    for name in ("prox", "tying", "reweighting", "metrics", "structured", "training", "data", "__init__"):
        mod = importlib.import_module(f"proxlib.torch.{name}" if name != "__init__" else "proxlib.torch")
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        assert res.failed == 0, f"{mod.__name__}: {res.failed} failing example(s)"

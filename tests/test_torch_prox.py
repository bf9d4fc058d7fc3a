"""proxlib.torch.ProximalStep: exactly proxlib's prox (its torch kernels), in place, at lr * strength.

The hook computes with torch operations on the parameter (proxlib's torch
backend): the result equals the public ``prox_*`` function on the same tensor
bit for bit, and the NumPy reference to the parity tolerance of the dtype.
Configuration errors surface at ``add``/``attach``; ``torch.compile`` of the
model and of ``optimizer.step`` with the hook attached both run."""

from __future__ import annotations

import doctest
import importlib
import math
import re
import sys
import warnings

import _procs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.backends import torch_dev  # noqa: E402
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


def _expected(W, fn, grouping, step):
    if grouping is None:
        return fn(W, step)
    return proxlib.from_rows(fn(proxlib.to_rows(W, grouping), step), W.shape, grouping)


RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


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


CPU_KERNELS = [
    "torch",
    pytest.param("numba", marks=pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")),
]


@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hook_applies_exactly_proxlibs_prox(case, dtype, cpu_kernels, monkeypatch):
    """Three SGD steps with the hook equal three SGD steps each followed by the
    public function on the torch tensor (bit for bit), and agree with the
    NumPy reference to the dtype's tolerance; on both routes of CPU tensors
    (torch operations, Numba's serial kernels: ``torch_dev.CPU_KERNELS``)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)
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
        W = b.weight.detach().clone()
        expected = _expected(W, fn, grouping, lr * strength)
        with proxlib.use_backend("numpy"):
            reference = _expected(W.numpy(), fn, grouping, lr * strength)
        assert type(expected) is torch.Tensor and expected.dtype == dtype
        with torch.no_grad():
            b.weight.copy_(expected)
        assert torch.equal(a.weight.detach(), expected)
        np.testing.assert_allclose(a.weight.detach().numpy(), reference, rtol=RTOL[dtype], atol=RTOL[dtype] * float(W.abs().max()))
    assert a.weight.dtype == dtype
    assert a.weight.data_ptr() == ptr
    assert prox.n_steps == 3
    # bias untouched by the prox: identical to the reference's
    assert torch.equal(a.bias.detach(), b.bias.detach())


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
@pytest.mark.parametrize("pen", [proxlib.WeightedL1(0.2), proxlib.WeightedL2Sq(0.2), proxlib.WeightedL2Sq(np.array([0.2]))], ids=repr)
def test_an_elementwise_term_keeps_a_0d_parameter_0d(pen, cpu_kernels, batched, monkeypatch):
    """A 0-d parameter (a learnable scale or temperature) under a weighted
    l1 / l2-squared term keeps its shape: its one weight was a (1,)
    threshold, and the torch route (every GPU's) wrote the result with
    ``out=`` into the parameter, which torch resized to shape (1,) (a
    deprecation warning only).  The step equals the public function."""
    from proxlib.torch import _batched

    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)
    monkeypatch.setattr(_batched, "ENABLED", batched)
    p = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    prox = pt.ProximalStep()
    prox.add(p, pen, strength=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (torch's warning of the resize)
        for _ in range(2):
            w = p.detach().clone()
            prox.step(lr=0.1)
            assert p.shape == ()
            assert torch.equal(p.detach(), pen.prox(w, 0.05))


@pytest.mark.parametrize("grouping", ["channel", None])
def test_a_misspelled_cpu_route_is_refused_by_a_training_term(grouping, monkeypatch):
    """``torch_dev.CPU_KERNELS = "Torch"`` (not a route) made every public
    call raise a ValueError naming the setting, while a training term whose
    rows are a view of the parameter (or a convolution's channels) silently
    ran Numba's in-place kernel; it now raises the same error."""
    torch.manual_seed(0)
    mod = torch.nn.Linear(4, 3) if grouping is None else torch.nn.Conv2d(2, 3, 2)
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "Torch")
    with pytest.raises(ValueError, match="CPU_KERNELS must be"):
        proxlib.prox_group_lasso(torch.randn(3, 4), 0.1)
    with pytest.raises(ValueError, match="CPU_KERNELS must be"):
        pt.ProxTerm(mod, proxlib.GroupLasso(0.1), grouping).apply(0.1)


@pytest.mark.parametrize("route", ["auto", "torch"])
def test_steps_follow_data_replaced_in_the_same_memory(route, monkeypatch):
    """``param.data = ...`` with a view of the same memory (the same data_ptr)
    but other strides or shape rebuilds the term's plan: a transposed square
    weight, then its first rows.  Each step equals the public function on
    the tensor as it is then, and bumps the version counter (several terms,
    two tensors, the direct path of ProximalStep.step included)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(net[0], proxlib.GroupLasso(0.3), grouping="filter", label="a")
    prox.add(net[0], proxlib.WeightedL1(0.05), label="b")
    prox.add(net[1], proxlib.GroupLasso(0.2), grouping="channel", label="c")

    def expected(W0, W1):
        W0 = _expected(W0, lambda R, s: proxlib.prox_group_lasso(R, 0.3, s), "filter", 0.1)
        W0 = proxlib.prox_weighted_l1(W0, 0.05, 0.1)
        return W0, _expected(W1, lambda R, s: proxlib.prox_group_lasso(R, 0.2, s), "channel", 0.1)

    w0, w1 = net[0].weight, net[1].weight
    with torch.no_grad():
        w0.mul_(3.0)
    for change in (None, "transpose", "rows"):
        if change == "transpose":
            w0.data = w0.data.t()  # same memory, other strides
        elif change == "rows":
            w0.data = w0.data.t()[:5]  # same memory and strides, other shape
        want = expected(w0.detach().clone(), w1.detach().clone())
        versions = w0._version, w1._version
        prox.step()
        assert torch.equal(w0.detach(), want[0]) and torch.equal(w1.detach(), want[1]), change
        assert w0._version > versions[0] and w1._version > versions[1]


def _two_terms(route, monkeypatch):
    """A two-layer net with a group lasso term and a weighted l1 term,
    ``torch_dev.CPU_KERNELS`` set to ``route``, and ``check_step()``: one
    prox step at lr 0.1, which must equal the public functions on the
    weights as they are then, bit for bit.  Returns (net, prox, check_step)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net)
    prox.add(net[0], proxlib.GroupLasso(0.3), grouping="channel")
    prox.add(net[1], proxlib.WeightedL1(0.05))

    def check_step():
        w0, w1 = net[0].weight, net[1].weight
        want0 = _expected(w0.detach().clone(), lambda R, s: proxlib.prox_group_lasso(R, 0.3, s), "channel", 0.1)
        want1 = proxlib.prox_weighted_l1(w1.detach().clone(), 0.05, 0.1)
        prox.step()
        assert torch.equal(w0.detach(), want0) and torch.equal(w1.detach(), want1)

    return net, prox, check_step


def _spy_on_kept_steps(prox, monkeypatch) -> list:
    """The list to which each call of ``prox._run_prepared`` (the kept step)
    appends what it returned: the number of terms it ran."""
    ran = []
    run_prepared = prox._run_prepared

    def spy(*args):
        ran.append(run_prepared(*args))
        return ran[-1]

    monkeypatch.setattr(prox, "_run_prepared", spy)
    return ran


def test_prepared_steps_follow_every_change(monkeypatch):
    """A plain step whose terms all ran their Numba plans is kept and rerun
    with one check per term (ProximalStep._run_prepared).  Whatever changes
    between steps, each step still applies every term exactly once, at the
    current lr and strength, on the tensor the module holds then: the lr of
    a group changed (a scheduler), a strength changed, a term added, a
    module's parameter replaced (the middle term: the first runs kept, the
    rest on the general path), a tensor no longer requiring a gradient, a
    step of lr 0.  Equal to the public functions, bit for bit; and the kept
    step does run (all terms) where nothing changed."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "auto")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Linear(8, 6), torch.nn.Linear(6, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net)
    prox.add(net[0], proxlib.GroupLasso(0.3), grouping="channel")
    prox.add(net[1], proxlib.WeightedL1(0.05))
    prox.add(net[2], proxlib.ExclusiveLasso(0.4), grouping="shape")
    ran = _spy_on_kept_steps(prox, monkeypatch)

    def expected(term, W, step):
        pen = term.penalty
        if isinstance(pen, proxlib.GroupLasso):
            return _expected(W, lambda R, s: proxlib.prox_group_lasso(R, pen.lam, s), term.grouping, step)
        if isinstance(pen, proxlib.WeightedL1):
            return proxlib.prox_weighted_l1(W, pen.weights, step)
        return _expected(W, lambda R, s: proxlib.prox_exclusive_lasso(R, pen.lam, s), term.grouping, step)

    def check_step(lr=None):
        want = {}  # id(leaf) -> (leaf, its expected value): the terms in order
        for term in prox.terms:
            leaf = term.leaf
            W = want.get(id(leaf), (leaf, leaf.detach().clone()))[1]
            step = (lr if lr is not None else opt.param_groups[0]["lr"]) * term.strength
            if leaf.requires_grad and step > 0:
                W = expected(term, W, step)
            want[id(leaf)] = (leaf, W)
        versions = {key: leaf._version for key, (leaf, _) in want.items()}
        prox.step(lr=lr)
        for key, (leaf, W) in want.items():
            assert torch.equal(leaf.detach(), W), tuple(leaf.shape)
            if leaf.requires_grad and (lr is None or lr > 0):
                assert leaf._version > versions[key]  # written through Numba: the counter bumped

    check_step()  # the general path, which keeps the step
    assert ran == [] and prox._prepared is not None
    check_step()
    assert ran == [3]
    opt.param_groups[0]["lr"] = 0.05  # a scheduler's change
    check_step()
    prox.terms[1].strength = 3.0
    check_step()
    assert ran == [3, 3, 3]
    check_step(lr=0.0)  # every term skipped, the kept step kept
    assert ran[-1] == 3 and prox._prepared is not None
    old = net[1].weight
    old_values = old.detach().clone()
    net[1].weight = torch.nn.Parameter(old.detach() * 2.0)  # the middle term's tensor replaced
    check_step(lr=0.07)
    assert ran[-1] == 1 and prox._prepared is None  # the first term kept, then the general loop
    assert torch.equal(old.detach(), old_values)  # the replaced tensor is left alone
    check_step(lr=0.07)  # the general path, which keeps the step again (the new tensor)
    check_step(lr=0.07)
    assert ran[-2:] == [1, 3]
    net[2].weight.requires_grad_(False)
    check_step(lr=0.07)
    assert ran[-1] == 2 and prox._prepared is None  # a skipped term: the general path from now on
    net[2].weight.requires_grad_(True)
    check_step(lr=0.07)
    prox.add(net[2], proxlib.WeightedL1(0.01), label="added")
    check_step(lr=0.07)
    assert ran[-1] == 0  # the terms changed: the general path, which keeps the four
    check_step(lr=0.07)
    assert ran[-1] == 4


def test_prepared_steps_follow_the_tensors_metadata(monkeypatch):
    """The kept step (ProximalStep._run_prepared) checks, per term, the
    memory, shape, strides and route its plan was made for, not only the
    tensor object: ``w.data = ...`` keeps the object and replaces its
    memory (a clone), its shape (a slice starting at the same address) or
    its strides (an F-ordered view of the same memory), and
    ``torch_dev.CPU_KERNELS`` may change between steps.  Each such step
    leaves the kept step at that term and equals the public function on the
    tensor as it is then, bit for bit; the step after is kept again."""
    net, prox, check_step = _two_terms("auto", monkeypatch)
    ran = _spy_on_kept_steps(prox, monkeypatch)
    check_step()
    check_step()
    assert ran == [2]
    w0 = net[0].weight
    changes = [
        lambda: setattr(w0, "data", w0.detach().clone() * 2.0),  # other memory
        lambda: setattr(w0, "data", w0.detach().as_strided((5, 6), (1, 5))),  # the same address and shape, other strides
        lambda: setattr(w0, "data", w0.detach()[:, :4]),  # the same address and strides, another shape
    ]
    for change in changes:
        n = len(ran)
        change()
        check_step()
        assert ran[n:] == [0] and prox._prepared is None
        check_step()  # (the general path, which keeps the step again)
        check_step()
        assert ran[n:] == [0, 2]
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "torch")  # the route changed: the plans rebuilt on it
    check_step()
    assert ran[-1] == 0 and prox._prepared is None
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "auto")
    for _ in range(3):  # (the plans made again for the route, then the step kept again)
        check_step()
    assert ran[-1] == 2


@pytest.mark.parametrize("route", ["auto", "torch"])
def test_steps_follow_parameters_swapped_by_torch(route, monkeypatch):
    """torch swaps a module's parameters in place (``torch.utils.swap_tensors``:
    the same objects, their contents replaced) in ``module.to()`` and
    ``load_state_dict`` under
    ``torch.__future__.set_swap_module_params_on_conversion(True)``; it
    refuses a tensor that has a weak reference, and a term's plan held one to
    its parameter ("Couldn't swap Linear.weight" after the first step).  Both
    now run, and the next steps (the kept one included) equal the public
    function on the swapped tensors, bit for bit."""
    net, prox, check_step = _two_terms(route, monkeypatch)
    check_step()
    check_step()
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        w0 = net[0].weight
        net.to(torch.float64)
        assert net[0].weight is w0 and w0.dtype == torch.float64  # (swapped: the same object)
        check_step()
        check_step()
        net.load_state_dict({k: v * 2.0 for k, v in net.state_dict().items()})
        assert net[0].weight is w0
        check_step()
        check_step()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


@given(st.lists(st.integers(0, 4), min_size=2, max_size=4), st.sampled_from([None, "filter", "channel", "shape", "layer"]))
def test_plan_row_maps_are_the_generic_rows(shape, grouping):
    """A plan's rows and their way back (prox._row_maps, the grouping's
    lengths settled once by groupings.row_maps) are the generic
    ``rows(t, grouping).reshape(rows_shape)`` and ``from_rows``: the same
    values, strides, and view-or-copy, for any shape (zero lengths
    included); and the way back gives the tensor again."""
    from proxlib.torch import prox as P

    shape = tuple(shape)
    t = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    v = P._view_of(grouping)(t)
    rows_shape = (shape[0], math.prod(shape[1:])) if grouping is None else tuple(v.shape)
    data, restore = P._row_maps(grouping, shape, rows_shape)
    want = v.reshape(rows_shape)
    got = data(t)
    assert got.shape == want.shape and torch.equal(got, want) and got.stride() == want.stride()
    assert (got.data_ptr() == t.data_ptr()) == (want.data_ptr() == t.data_ptr())
    X = got.clone() * 2.0  # (the row-wise kernels' results)
    back = restore(X)
    generic = P._restore_of(grouping, shape)(X.reshape(v.shape))
    assert back.shape == generic.shape == shape and torch.equal(back, generic) and back.stride() == generic.stride()
    assert torch.equal(restore(got), t)


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


def test_add_after_the_hook_was_removed_by_its_handle_is_as_after_detach():
    """attach() returns the hook's handle; after handle.remove() the step
    no longer runs, but add() still acted attached: it refused a tensor
    whose parameter group has no 'lr' ("call step(lr=...) instead of
    attach()"), which a detached ProximalStep accepts (its steps take
    step(lr=...))."""
    p = torch.nn.Parameter(torch.full((2, 2), 5.0, dtype=torch.float64))
    q = torch.nn.Parameter(torch.full((2, 2), 5.0, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.5)
    opt.add_param_group({"params": [q]})
    del opt.param_groups[1]["lr"]  # (a group without lr: only step(lr=...) can prox it)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.WeightedL1(1.0))
    handle = prox.attach()
    with pytest.raises(ValueError, match="has no 'lr'"):
        prox.add(q, proxlib.WeightedL1(1.0), label="q")
    handle.remove()
    prox.add(q, proxlib.WeightedL1(1.0), label="q")
    prox.step(lr=0.5)
    assert torch.all(p == 4.5) and torch.all(q == 4.5)


def test_zero_lr_or_strength_is_the_identity():
    p = torch.nn.Parameter(torch.randn(3, 3))
    opt = torch.optim.SGD([p], lr=0.0)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.GroupLasso(1.0))
    before = p.detach().clone()
    prox.step()
    assert torch.equal(p.detach(), before)



def test_a_tensor_without_a_gradient_gets_its_prox_unless_its_strength_is_zero():
    """As ProximalStep's Notes say: a tensor the step's forward pass did not
    use (grad None: SGD skips it) still gets its Euclidean prox, proximal
    SGD's step with a zero gradient, exactly the public function's; with
    its term's strength set to 0 it is left as it is."""
    torch.manual_seed(0)
    used, unused = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(list(used.parameters()) + list(unused.parameters()), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(used, proxlib.GroupLasso(1.0), grouping="channel", strength=0.5)
    term = prox.add(unused, proxlib.GroupLasso(1.0), grouping="channel", strength=0.5)
    prox.attach()
    before = unused.weight.detach().clone()
    used(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert unused.weight.grad is None
    want = proxlib.prox_group_lasso(before.T, 1.0, 0.1 * 0.5).T  # ("channel" rows: the columns)
    assert torch.equal(unused.weight.detach(), want) and not torch.equal(want, before)
    term.strength = 0.0
    kept = unused.weight.detach().clone()
    opt.zero_grad()
    used(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert unused.weight.grad is None and torch.equal(unused.weight.detach(), kept)

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
    ref = leaf.detach().clone()
    prox.step()
    expected = proxlib.from_rows(proxlib.prox_group_lasso(proxlib.to_rows(ref, "channel"), 0.3, 0.5), ref.shape, "channel")
    assert torch.equal(leaf.detach(), expected)
    assert leaf.data_ptr() == ptr
    assert torch.equal(lin.weight.detach(), 2 * expected)


def test_a_weight_computed_by_a_forward_hook_is_refused():
    """torch.nn.utils.weight_norm's ``weight`` is recomputed from weight_g and
    weight_v before every forward: ``ProximalStep().add(lin, ...)`` took it as
    the leaf, ``step(lr=...)`` wrote the prox into it (its sum 0.0 after a
    strong group lasso) and the next forward brought the old weight back (a
    silent no-op).  It is refused at add(), naming the tensor; the leaf
    passed explicitly is taken."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (weight_norm's deprecation)
        lin = torch.nn.utils.weight_norm(torch.nn.Linear(4, 3))
    prox = pt.ProximalStep()
    with pytest.raises(ValueError, match=r"Linear.weight is computed from other tensors"):
        prox.add(lin, proxlib.GroupLasso(10.0), grouping="channel")
    prox.add(lin, proxlib.GroupLasso(10.0), name="weight_v", grouping="channel")
    prox.step(lr=1.0)
    assert torch.all(lin.weight_v.detach() == 0)


def test_pruned_weight_writes_to_weight_orig_and_follows_later_pruning():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.WeightedL1(0.1))  # added before pruning: the module is re-resolved
    torch.nn.utils.prune.l1_unstructured(lin, "weight", amount=0.5)
    assert pt.ProxTerm(lin, proxlib.WeightedL1(0.1)).leaf is lin.weight_orig
    ref = lin.weight_orig.detach().clone()
    prox.step()
    assert torch.equal(lin.weight_orig.detach(), proxlib.prox_weighted_l1(ref, 0.1, 0.5))
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
    assert list(prox.values()) == ["Linear.weight:GroupLasso[channel]", "Linear.weight:GrOWL[channel]"]
    named = pt.ProximalStep(opt, model=net)
    named.add(net[0], proxlib.GroupLasso(0.5), grouping="channel", strength=2.0)
    named.add(net[1], pt.growl(_growl_weights), grouping="channel", strength=0.5)
    assert list(named.values()) == ["0.weight:GroupLasso[channel]", "1.weight:GrOWL[channel]"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_params_are_computed_in_float32_and_keep_their_dtype(dtype):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 4).to(dtype))
    opt = torch.optim.SGD([p], lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(p, proxlib.GroupLasso(0.4), grouping="filter")
    ref = proxlib.prox_group_lasso(p.detach().float(), 0.4, 0.5)
    assert torch.equal(proxlib.prox_group_lasso(p.detach(), 0.4, 0.5), ref.to(dtype))  # the public function too
    prox.step()
    assert p.dtype == dtype
    assert torch.equal(p.detach(), ref.to(dtype))


def test_a_term_removed_then_added_again_gets_a_free_default_label():
    """Without model=, default labels are numbered: removing the first of
    two terms on Linear weights and adding it again raised 'a term labelled
    Linear.weight:GroupLasso#1 exists already' (the count of such terms
    gave the remaining term's label); it takes the free one, and a
    checkpoint of the original order loads into it by label."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    prox = pt.ProximalStep(opt)
    ta = prox.add(a, proxlib.GroupLasso(0.5), strength=0.25)
    prox.add(b, proxlib.GroupLasso(0.5), strength=0.75)
    state = prox.state_dict()
    prox.terms.remove(ta)
    again = prox.add(a, proxlib.GroupLasso(0.5))
    assert again.label == "Linear.weight:GroupLasso" and len({t.label for t in prox.terms}) == 2
    prox.load_state_dict(state)
    assert again.strength == 0.25 and prox.terms[0].strength == 0.75


def test_terms_added_in_another_order_load_their_own_strengths_and_masks_without_model():
    """Without model=, default labels are numbered in the order the terms
    were added: a checkpoint of terms on a and b, loaded into a step that
    added b first, gave a's strength and frozen mask to b (same label, same
    shape).  The state records each term's tensor (its index among the
    optimizer's parameters) and the terms are matched by it."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=1.0)
    first = pt.ProximalStep(opt, keep_zero=True)
    first.add(a, proxlib.GroupLasso(0.5), strength=100.0)  # zeroes a's rows: frozen
    first.add(b, proxlib.GroupLasso(0.5), strength=0.01)  # shrinks b's rows, zeroes none
    first.step()
    state = first.state_dict()
    assert state["params"] == {"Linear.weight:GroupLasso": 0, "Linear.weight:GroupLasso#1": 2}
    assert bool(state["frozen"]["Linear.weight:GroupLasso"].all()) and not bool(state["frozen"]["Linear.weight:GroupLasso#1"].any())
    again = pt.ProximalStep(opt, keep_zero=True)
    tb = again.add(b, proxlib.GroupLasso(0.5))
    ta = again.add(a, proxlib.GroupLasso(0.5))
    assert (tb.label, ta.label) == ("Linear.weight:GroupLasso", "Linear.weight:GroupLasso#1")
    again.load_state_dict(state)
    assert (ta.strength, tb.strength) == (100.0, 0.01)
    frozen = again.frozen()
    assert bool(frozen[ta.label].all()) and not bool(frozen[tb.label].any())
    assert state["params"] == {"Linear.weight:GroupLasso": 0, "Linear.weight:GroupLasso#1": 2}  # (the caller's state: unchanged)


def test_terms_of_one_penalty_on_same_shaped_tensors_without_an_optimizer_refuse_to_guess():
    """Without model= or an optimizer nothing but the order the terms were
    added tells apart two terms of one penalty on tensors of one shape:
    loading a state into terms added in the other order gave one layer's
    strength and frozen mask to the other.  It raises now, as it does where
    the state records the tensors (saved with an optimizer) but the loading
    step has none yet; with the optimizer given first the terms are matched
    by tensor."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)
    saver = pt.ProximalStep(keep_zero=True)
    saver.add(a, proxlib.GroupLasso(100.0), strength=1.0)  # zeroes a's rows: frozen
    saver.add(b, proxlib.GroupLasso(0.01), strength=0.5)
    saver.step(lr=0.1)
    state = saver.state_dict()
    assert "params" not in state and bool(state["frozen"]["Linear.weight:GroupLasso"].all())
    loader = pt.ProximalStep(keep_zero=True)
    tb, ta = loader.add(b, proxlib.GroupLasso(0.01)), loader.add(a, proxlib.GroupLasso(100.0))
    with pytest.raises(ValueError, match=r"numbered in the order they were added.*no tensor that tells them apart.*model="):
        loader.load_state_dict(state)
    assert (ta.strength, tb.strength) == (1.0, 1.0) and loader.frozen() == {}  # (left as it was)
    named = pt.ProximalStep(keep_zero=True)
    named.add(a, proxlib.GroupLasso(100.0), strength=1.0, label="a")
    named.add(b, proxlib.GroupLasso(0.01), strength=0.5, label="b")
    labelled = pt.ProximalStep(keep_zero=True)
    labelled.add(b, proxlib.GroupLasso(0.01), label="b")
    labelled.add(a, proxlib.GroupLasso(100.0), label="a")
    labelled.load_state_dict(named.state_dict())  # (labels the user chose: matched by label)
    assert [t.strength for t in labelled.terms] == [0.5, 1.0]

    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    with_opt = pt.ProximalStep(opt)
    with_opt.add(a, proxlib.GroupLasso(1.0), strength=1.0)
    with_opt.add(b, proxlib.GroupLasso(1.0), strength=0.5)
    state = with_opt.state_dict()
    later = pt.ProximalStep()  # (the optimizer passed at attach(), after loading)
    later.add(b, proxlib.GroupLasso(1.0))
    later.add(a, proxlib.GroupLasso(1.0))
    with pytest.raises(ValueError, match=r"has no optimizer, which numbers them"):
        later.load_state_dict(state)
    first = pt.ProximalStep(opt)
    tb, ta = first.add(b, proxlib.GroupLasso(1.0)), first.add(a, proxlib.GroupLasso(1.0))
    first.load_state_dict(state)
    assert (ta.strength, tb.strength) == (1.0, 0.5)


def test_terms_on_tensors_of_different_shapes_are_matched_by_shape_without_an_optimizer():
    """Without an optimizer the state records each term's tensor's shape:
    terms of one penalty on tensors of different shapes, added in another
    order, get their own strengths and frozen masks."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 5), torch.nn.Linear(5, 4)
    saver = pt.ProximalStep(keep_zero=True)
    saver.add(a, proxlib.GroupLasso(100.0), strength=1.0)
    saver.add(b, proxlib.GroupLasso(0.01), strength=0.5)
    saver.step(lr=0.1)
    state = saver.state_dict()
    assert state["shapes"] == {"Linear.weight:GroupLasso": [5, 6], "Linear.weight:GroupLasso#1": [4, 5]}
    loader = pt.ProximalStep(keep_zero=True)
    tb, ta = loader.add(b, proxlib.GroupLasso(0.01)), loader.add(a, proxlib.GroupLasso(100.0))
    loader.load_state_dict(state)
    assert (ta.strength, tb.strength) == (1.0, 0.5)
    frozen = loader.frozen()
    assert bool(frozen[ta.label].all()) and not bool(frozen[tb.label].any())
    before = b.weight.detach().clone()
    loader.step(lr=0.1)
    assert bool(b.weight.ne(0).any()) and not torch.equal(b.weight, before)  # (b shrunk, not frozen at zero)


def test_terms_matched_by_tensor_only_one_to_one():
    """Two terms of one penalty on one tensor cannot be told apart by their
    tensor: they are matched by label; a state with another set of terms
    still raises; with model= the labels name the tensors and the state
    records no indices."""
    lin, other = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(list(lin.parameters()) + list(other.parameters()), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(0.5), strength=0.25)
    prox.add(lin, proxlib.GroupLasso(0.5), strength=0.75)
    state = prox.state_dict()
    prox.terms[0].strength = prox.terms[1].strength = 1.0
    prox.load_state_dict(state)
    assert [t.strength for t in prox.terms] == [0.25, 0.75]
    fewer = pt.ProximalStep(opt)
    fewer.add(other, proxlib.GroupLasso(0.5))
    with pytest.raises(ValueError, match="different terms"):
        fewer.load_state_dict(state)
    named = pt.ProximalStep(opt, model=torch.nn.Sequential(lin, other))
    named.add(lin, proxlib.GroupLasso(0.5))
    assert "params" not in named.state_dict()


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
    with pytest.raises(ValueError, match="different terms"):
        pt.ProximalStep(opt).load_state_dict(state)


def test_state_dict_keys_terms_by_parameter_name_not_position():
    """Re-adding the terms in another order cannot swap their strengths."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net)
    prox.add(net[0], proxlib.GroupLasso(1.0), grouping="channel", strength=0.1)
    prox.add(net[1], proxlib.GroupLasso(1.0), grouping="channel", strength=0.7)
    state = prox.state_dict()
    assert state["strengths"] == {"0.weight:GroupLasso[channel]": 0.1, "1.weight:GroupLasso[channel]": 0.7}
    again = pt.ProximalStep(opt, model=net)
    again.add(net[1], proxlib.GroupLasso(1.0), grouping="channel", strength=5.0)
    again.add(net[0], proxlib.GroupLasso(1.0), grouping="channel", strength=5.0)
    again.load_state_dict(state)
    assert [t.strength for t in again.terms] == [0.7, 0.1]
    fewer = pt.ProximalStep(opt, model=net)
    fewer.add(net[0], proxlib.GroupLasso(1.0), grouping="channel")
    with pytest.raises(ValueError, match=r"unknown in state \['1.weight"):
        fewer.load_state_dict(state)
    more = pt.ProximalStep(opt, model=net)
    more.add(net[0], proxlib.GroupLasso(1.0), grouping="channel")
    more.add(net[1], proxlib.GroupLasso(1.0), grouping="channel")
    more.add(net[1], proxlib.WeightedL1(1.0), name="bias")
    with pytest.raises(ValueError, match=r"missing from state \['1.bias"):
        more.load_state_dict(state)
    with pytest.raises(ValueError, match="label"):
        more.add(net[1], proxlib.WeightedL1(2.0), name="bias")  # the same label twice
    with pytest.raises(ValueError, match="not a parameter of the model"):
        more.add(torch.nn.Parameter(torch.zeros(2, 2)), proxlib.WeightedL1(1.0))


def test_groupings_that_misread_a_conv_layout_are_rejected_at_add():
    """The groupings' table assumes a weight (out, in, *k).  A transposed
    conv's is (in, out/groups, *k): "filter" rows were its input channels,
    without a word.  A grouped conv's dim 1 counts channels within a group:
    a "channel" row held one channel of every group.  Those are refused
    (add_ssl adds no term); what keeps its meaning is accepted."""
    tconv = torch.nn.ConvTranspose2d(3, 5, 2)
    gconv = torch.nn.Conv2d(4, 6, 3, groups=2)
    conv = torch.nn.Conv2d(4, 6, 3)
    prox = pt.ProximalStep(torch.optim.SGD([*tconv.parameters(), *gconv.parameters(), *conv.parameters()], lr=0.1))
    for g in ("filter", "channel", "shape", "output"):
        with pytest.raises(ValueError, match="ConvTranspose2d: its weight is laid out"):
            prox.add(tconv, proxlib.GroupLasso(1.0), grouping=g)
    for g in ("channel", "shape"):
        with pytest.raises(ValueError, match="groups=2"):
            prox.add(gconv, proxlib.GroupLasso(1.0), grouping=g)
    with pytest.raises(ValueError, match="ConvTranspose2d"):
        pt.add_ssl(prox, [conv, tconv], 1e-3, ("filter", "channel"))
    assert prox.terms == []
    prox.add(tconv, proxlib.GroupLasso(1.0), grouping="layer")
    prox.add(tconv, proxlib.GroupLasso(1.0), label="tconv rows")  # grouping None: the tensor's own rows
    prox.add(gconv, proxlib.GroupLasso(1.0), grouping="filter")
    prox.add(conv, proxlib.GroupLasso(1.0), grouping="shape")
    assert len(prox.terms) == 4
    # tie_rows (default grouping "channel") reads the same rows
    with pytest.raises(ValueError, match="ConvTranspose2d: its weight is laid out"):
        pt.tie_rows(tconv, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="groups=2"):
        pt.tie_rows(gconv, np.zeros(2, dtype=np.int64))
    assert not torch.nn.utils.parametrize.is_parametrized(tconv) and not torch.nn.utils.parametrize.is_parametrized(gconv)


def test_proximal_step_flags_must_be_bools():
    # ProximalStep(check_finite="no") checked (a truthy string) and
    # keep_zero=None did not freeze: neither is a bool
    opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    for flag in ("check_finite", "keep_zero"):
        for bad in ("no", None, 1):
            with pytest.raises(TypeError, match=flag):
                pt.ProximalStep(opt, **{flag: bad})
        assert getattr(pt.ProximalStep(opt, **{flag: np.True_}), flag) is True


def test_a_lazy_module_before_its_first_forward_is_refused_clearly():
    # add() on an uninitialised LazyLinear raised torch's "Can't access the
    # shape of an uninitialized parameter" RuntimeError from inside the term
    net = torch.nn.Sequential(torch.nn.LazyLinear(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    prox = pt.ProximalStep(torch.optim.SGD(net.parameters(), lr=0.1), model=net)
    with pytest.raises(ValueError, match="'weight' is not initialised yet.*forward pass"):
        prox.add(net[0], proxlib.GroupLasso(0.1), grouping="channel")
    assert prox.terms == []
    net(torch.randn(2, 3))  # materialised in place: the same Parameter object, which the optimizer holds
    prox.add(net[0], proxlib.GroupLasso(0.1), grouping="channel")
    before = net[0].weight.detach().clone()
    prox.step()
    torch.testing.assert_close(net[0].weight.detach(), proxlib.prox_group_lasso(before.T, 0.1 * 0.1).T)


def test_a_second_proximal_step_attached_on_the_same_tensors_warns():
    # a ProximalStep made again (on resuming, a notebook cell run twice) and
    # attached while the old one still was: both hooks proxed the weight
    import warnings

    lin, other = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    opt = torch.optim.SGD([*lin.parameters(), *other.parameters()], lr=0.1)
    first = pt.ProximalStep(opt)
    first.add(lin, proxlib.GroupLasso(0.1))
    first.attach()
    second = pt.ProximalStep(opt)
    second.add(lin, proxlib.GroupLasso(0.1))
    with pytest.warns(UserWarning, match=r"another ProximalStep is attached .*Linear\.weight:GroupLasso.*twice"):
        second.attach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first.detach()
        second.attach()  # the old one detached: no warning
        elsewhere = pt.ProximalStep(opt)
        elsewhere.add(other, proxlib.GroupLasso(0.1))
        elsewhere.attach()  # other tensors: no warning
        second.attach()  # attaching itself again replaces its own hook
        del other.weight  # a term of another ProximalStep that no longer resolves
        second.attach()  # is that one's error at its own step, not this attach's


def test_bad_configurations_are_rejected_at_add():
    lin = torch.nn.Linear(3, 2)
    other = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    with pytest.raises(TypeError, match="penalty"):
        prox.add(lin, object())
    with pytest.raises(ValueError, match="grouping"):
        prox.add(lin, proxlib.GroupLasso(1.0), grouping="rows")
    with pytest.raises(ValueError, match="grouping 'channel' needs"):
        prox.add(lin, proxlib.GroupLasso(1.0), grouping="channel", name="bias")  # a 1-D bias
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="strength"):
            prox.add(lin, proxlib.GroupLasso(1.0), strength=bad)
    for bad in ("1", None, True):
        with pytest.raises(TypeError, match="strength"):
            prox.add(lin, proxlib.GroupLasso(1.0), strength=bad)
    with pytest.raises(TypeError, match="no tensor"):
        prox.add(lin, proxlib.GroupLasso(1.0), name="nope")
    with pytest.raises(TypeError, match="target"):
        prox.add("weight", proxlib.GroupLasso(1.0))
    with pytest.raises(TypeError, match="target"):
        prox.add(3.0, proxlib.GroupLasso(1.0))
    with pytest.raises(ValueError, match="weights"):  # one weight per row: 3 input neurons, not 2
        prox.add(lin, proxlib.GrOWL(np.array([1.0, 0.5])), grouping="channel")
    with pytest.raises(ValueError, match="weights"):
        prox.add(lin, pt.growl(lambda G: np.ones(G + 1)), grouping="channel")
    with pytest.raises(ValueError, match="not in the optimizer"):
        prox.add(other, proxlib.GroupLasso(1.0))
    assert prox.terms == []  # nothing half-added
    late = pt.ProximalStep()
    late.add(other, proxlib.GroupLasso(1.0))
    with pytest.raises(ValueError, match="not in the optimizer"):
        late.attach(opt)
    with pytest.raises(ValueError, match="not in the optimizer"):
        late.step(opt)
    with pytest.raises(ValueError, match="optimizer"):
        pt.ProximalStep().step()
    good = pt.ProximalStep(opt)
    good.add(lin, proxlib.GroupLasso(1.0))
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            good.step(lr=bad)
    with pytest.raises(ValueError, match="every"):
        pt.ProximalStep(opt, every=0)
    with pytest.raises(TypeError, match="optimizer"):
        pt.ProximalStep(lin)
    with pytest.raises(TypeError, match="floating"):
        _bridge.working_tensor(torch.zeros(2, dtype=torch.int64))


def test_frozen_parameters_are_skipped():
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(10.0))
    lin.weight.requires_grad_(False)
    before = lin.weight.detach().clone()
    prox.step()
    assert torch.equal(lin.weight, before)
    lin.weight.requires_grad_(True)
    prox.step()
    assert torch.count_nonzero(lin.weight) == 0


@pytest.mark.parametrize("metric", [None, "adam"])
def test_frozen_parameters_outside_the_optimizer_are_accepted_and_skipped(metric):
    """An optimizer built from the trainable parameters alone (fine-tuning:
    ``SGD(p for p in model.parameters() if p.requires_grad)``): a term on a
    frozen tensor is accepted at add() and attach() (it raised "not in the
    optimizer's param_groups"), its steps leave the tensor alone, the other
    terms step; unfrozen while still outside the optimizer, the step raises
    naming the term, and add() still refuses a trainable tensor outside it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net[0].weight.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = (torch.optim.Adam if metric else torch.optim.SGD)(trainable, lr=0.5)
    prox = pt.ProximalStep(opt, model=net, metric=metric)
    prox.add(net[0], proxlib.GroupLasso(10.0))
    prox.add(net[1], proxlib.GroupLasso(10.0))
    prox.attach()
    frozen = net[0].weight.detach().clone()
    net(torch.randn(5, 4)).square().sum().backward()
    opt.step()  # (the hook's proximal step)
    prox.step()
    assert torch.equal(net[0].weight, frozen)
    assert torch.count_nonzero(net[1].weight) == 0
    net[0].weight.requires_grad_(True)
    with pytest.raises(ValueError, match="0.weight:GroupLasso.*not in the optimizer"):
        prox.step()
    other = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="not in the optimizer"):
        pt.ProximalStep(opt).add(other, proxlib.GroupLasso(1.0))
    other.weight.requires_grad_(False)
    pt.ProximalStep(opt).add(other, proxlib.GroupLasso(1.0))  # frozen: accepted


def test_every_n_steps_uses_lr_times_n():
    """With zero gradients, a prox every 3 optimizer steps at step 3 * lr * strength."""
    p = torch.nn.Parameter(torch.full((2, 3), 5.0, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.1)
    prox = pt.ProximalStep(opt, every=3)
    prox.add(p, proxlib.WeightedL1(1.0), strength=2.0)
    prox.attach()
    for k in range(1, 7):
        p.grad = torch.zeros_like(p)
        opt.step()
        expected = 5.0 - 0.6 * (k // 3)
        assert torch.allclose(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15), k
    assert prox.n_steps == 2 and prox.n_optimizer_steps == 6


def test_a_step_does_no_validation_or_layout_work(monkeypatch):
    """Everything is checked and built at add(); a step only scales the
    thresholds and calls the kernel (the parameter's own storage)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="channel")
    prox.add(net[1], pt.growl(_growl_weights), grouping="channel")
    prox.add(net[1], proxlib.GroupExclusive(0.5, 0.5), grouping="filter")
    prox.add(net[0], proxlib.WeightedL1(0.1), name="bias")

    def forbidden(*a, **k):
        raise AssertionError("validation or layout work inside a step")

    for name in ("as_float_array", "nonnegative_float64", "nonincreasing", "check_all_finite"):
        monkeypatch.setattr(proxlib._validate, name, forbidden)
    monkeypatch.setattr(proxlib._registry, "layout_of", forbidden)
    prox.step()
    prox.step()


_EVERY_KIND_OF_TERM = (
    "import sys, torch, proxlib, proxlib.torch as pt\n"
    "from proxlib.backends import torch_dev\n"
    "torch_dev.CPU_KERNELS = sys.argv[1]\n"
    "net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))\n"
    "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
    "prox = pt.ProximalStep(opt, model=net)\n"
    "prox.add(net[0], proxlib.GroupLasso(0.1), grouping='channel')\n"
    "prox.add(net[2], pt.growl(lambda G: proxlib.owl_weights_oscar(G, 0.1, 0.01)), grouping='channel')\n"
    "prox.add(net[2], proxlib.GroupExclusive(0.1, 0.5), grouping='filter', label='ge')\n"
    "prox.add(net[0], proxlib.ExclusiveLasso(0.1), grouping='shape', label='ex')\n"
    "prox.add(net[0], proxlib.Lp(0.01, 0.5), name='bias')\n"
    "prox.add(net[2], proxlib.WeightedL1(0.01), name='bias')\n"
    "prox.attach()\n"
    "for _ in range(3):\n"
    "    opt.zero_grad(); net(torch.randn(4, 8)).sum().backward(); opt.step()\n"
)


def test_the_torch_operations_path_never_loads_numba():
    """With ``CPU_KERNELS = "torch"`` (the code every other device runs) a
    training loop with every kind of term loads no numba at all."""
    code = _EVERY_KIND_OF_TERM + "print(sorted(m for m in sys.modules if m.startswith('numba') or m.endswith('numba_cpu')))\n"
    out = _procs.python(code, "torch", timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_default_cpu_path_starts_no_numba_threads():
    """By default CPU tensors go to Numba's serial kernels: a training loop
    with every kind of term runs them and never starts Numba's thread pool
    (nothing competes with torch's threads, no environment variable needed)."""
    pytest.importorskip("numba")
    code = _EVERY_KIND_OF_TERM + (
        "import numba\n"
        "assert 'proxlib.backends.numba_cpu' in sys.modules\n"
        "try:\n"
        "    print(numba.threading_layer())\n"
        "except ValueError as e:\n"
        "    print('no pool:', e)\n"
    )
    out = _procs.python(code, "auto", timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no pool: Threading layer is not initialized."


def test_compiled_model_and_compiled_optimizer_step_with_the_hook():
    """torch.compile(model) and torch.compile(optimizer.step) with the hook
    attached run (the hook is a graph break) and give the eager result."""
    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
        prox = pt.ProximalStep(opt, model=net)
        prox.add(net[0], proxlib.GroupLasso(0.3), grouping="channel")
        prox.add(net[2], pt.growl(_growl_weights), grouping="channel")
        prox.attach()
        return net, opt, prox

    X = torch.randn(16, 10, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(4))
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        net, opt, prox = make()
        model = torch.compile(net, backend="aot_eager") if compiled else net
        step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()
            step()
        assert prox.n_steps == 3
        results.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2), (2, 3, 2), (0, 3, 2, 2)])
@pytest.mark.parametrize("grouping", list(proxlib.GROUPINGS) + ["output", "input", "row", "column"])
def test_torch_row_views_match_proxlibs(shape, grouping):
    W = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    R = _bridge.rows(torch.from_numpy(W), grouping)
    np.testing.assert_array_equal(R.numpy(), proxlib.to_rows(W, grouping))
    back = _bridge.from_rows(R, shape, grouping)
    np.testing.assert_array_equal(back.numpy(), W)


def test_tied_rows_compile_without_a_graph_break():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    pt.tie_rows(lin, np.array([0, 1, 0, -1, 2, 1]))
    x = torch.randn(3, 6)
    explanation = torch._dynamo.explain(lin)(x)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(lin, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), lin(x))


def test_examples_in_docstrings_run():
    for name in ("prox", "tying", "reweighting", "metrics", "structured", "training", "data", "__init__"):
        mod = importlib.import_module(f"proxlib.torch.{name}" if name != "__init__" else "proxlib.torch")
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        assert res.failed == 0, f"{mod.__name__}: {res.failed} failing example(s)"


_W_L1 = np.linspace(0.1, 2.3, 40 * 24).reshape(40, 24)

# (penalty on a Linear(24, 40) weight, the public function of (rows, lam, step), grouping, lam values)
_PUBLIC_EQUAL = {
    "group lasso, columns": (lambda lam: proxlib.GroupLasso(lam, group_weights="sqrt"),
                             lambda R, lam, s: proxlib.prox_group_lasso(R, lam, s, group_weights="sqrt"), "channel", (0.7, 1e300)),
    "group lasso, rows": (lambda lam: proxlib.GroupLasso(lam, group_weights="sqrt"),
                          lambda R, lam, s: proxlib.prox_group_lasso(R, lam, s, group_weights="sqrt"), "filter", (0.7, 1e300)),
    "weighted l1": (lambda lam: proxlib.WeightedL1(lam * _W_L1), lambda R, lam, s: proxlib.prox_weighted_l1(R, lam * _W_L1, s), None, (0.7, 1e300)),
    "exclusive, rows": (lambda lam: proxlib.ExclusiveLasso(lam, group_weights="sqrt"),
                        lambda R, lam, s: proxlib.prox_exclusive_lasso(R, lam, s, group_weights="sqrt"), "filter", (0.7, 1e300)),
    "exclusive, columns": (proxlib.ExclusiveLasso, proxlib.prox_exclusive_lasso, "shape", (0.7, 1e300)),
    "group+exclusive, rows": (lambda lam: proxlib.GroupExclusive(lam, 0.3, group_weights="sqrt"),
                              lambda R, lam, s: proxlib.prox_group_exclusive(R, lam, 0.3, s, group_weights="sqrt"), "filter", (0.7, 1e300)),
}


@pytest.mark.parametrize("route", ["auto", "torch"])
@pytest.mark.parametrize("case", list(_PUBLIC_EQUAL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_equal_the_public_function_over_the_float_range(case, dtype, route, monkeypatch):
    """Every step equals the public function at step = lr * strength, bit
    for bit, on each CPU route (Numba in place, torch operations): the
    thresholds are formed as the public function forms them ((step * lam)
    * weights, not step * (lam * weights), which differ in the last bit),
    kept while the step is the same, and beyond the kernels' range (lam *
    step above float32's or float64's range) the problem is transformed as
    the public function transforms it (proxlib._range), where forming
    step * thresholds gave inf (zeros for the exclusive operators, whose
    saturated prox is tiny but not zero).  (The exclusive columns' float32
    steps are bit for bit here because each column spans a few binades: its
    sums are exact; see _exclusive_cols for wider ones.)"""
    if case == "exclusive, columns" and dtype == torch.float64 and route == "auto":
        pytest.skip("the columns' hints may change the last bits in float64 (see test_exclusive_columns_keep_threshold_hints)")
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
    make, public, grouping, lams = _PUBLIC_EQUAL[case]
    strength = 1.37
    for lam in lams:
        torch.manual_seed(0)
        lin = torch.nn.Linear(24, 40).to(dtype)
        with torch.no_grad():
            lin.weight.mul_(10.0)
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        prox = pt.ProximalStep(opt)
        prox.add(lin, make(lam), grouping=grouping, strength=strength)
        lrs = [0.1, 0.1, 0.0317, 3e-3, 0.1, 0.0417, 0.0051] if lam < 1 else [1e10, 1e10, 3e-250, 1e-300]
        for lr in lrs:
            W = lin.weight.detach().clone()
            want = _expected(W, lambda R, s: public(R, lam, s), grouping, lr * strength)
            prox.step(lr=lr)
            got = lin.weight.detach()
            assert torch.equal(got, want), (lam, lr, (got - want).abs().max())
        assert not bool(got.eq(0).all()) or lam > 1


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_convolution_channel_rows_run_in_place_on_numba(dtype, monkeypatch):
    """A convolution's "channel" rows (no 2-D view of the weight gives them)
    run Numba's channel-row kernels on the parameter itself: no copy, and
    bit for bit the public function on the rows, at the first step and at
    the kept ones after it (their runners made once: numba_cpu.serial_in_place)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "numba")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 8, 3).to(dtype)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    prox.add(conv, pt.growl(_growl_weights), grouping="channel", label="growl")
    prox.add(conv, proxlib.GroupLasso(0.3), grouping="channel", label="gl")
    assert all(term.plan(conv.weight).on_numba is not None for term in prox.terms)
    ptr = conv.weight.data_ptr()
    for _ in range(3):
        W = conv.weight.detach().clone()
        expected = _expected(W, lambda R, s: proxlib.prox_growl(R, _growl_weights(R.shape[0]), s), "channel", 0.1)
        expected = _expected(expected, lambda R, s: proxlib.prox_group_lasso(R, 0.3, s), "channel", 0.1)
        prox.step()
        assert conv.weight.data_ptr() == ptr
        assert torch.equal(conv.weight.detach(), expected)
        assert prox._prepared is not None  # (kept from the first step on: the next ones run it)


def _exclusive_shape_runner(monkeypatch):
    """A float64 Linear(48, 40) and the in-place Numba runner of its "shape"
    exclusive-lasso term (lambda 0.05), which keeps threshold hints."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "numba")
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 40).to(torch.float64)
    prox = pt.ProximalStep(torch.optim.SGD(lin.parameters(), lr=0.05))
    prox.add(lin, proxlib.ExclusiveLasso(0.05), grouping="shape")
    run = prox.terms[0].plan(lin.weight).on_numba
    assert run is not None and run.hint is not None
    return lin, run


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
def test_exclusive_columns_hints_survive_a_step_of_zero(monkeypatch):
    """The in-place runner of a "shape" exclusive term (hints kept between
    steps) called at step 0 (the identity), then at a positive step:
    scaling the hints by step / last divided by zero (ZeroDivisionError);
    now that step equals the public function."""
    lin, run = _exclusive_shape_runner(monkeypatch)
    run(0.05)
    run(0.0)
    W = lin.weight.detach().numpy().copy()
    with proxlib.use_backend("numba"):
        want = proxlib.from_rows(proxlib.prox_exclusive_lasso(proxlib.to_rows(W, "shape"), 0.05, 0.05), W.shape, "shape")
    run(0.05)
    got = lin.weight.detach().numpy()
    np.testing.assert_array_equal(got == 0, want == 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(np.abs(W).max()))


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
def test_exclusive_columns_hints_scaled_by_a_ratio_beyond_float64(monkeypatch):
    """The in-place runner of a "shape" exclusive term scales its hints by
    step / last; from a step of 1e-300 (hints 0) to one of 1e300 (beyond
    the kernels' range: _range.solve) that ratio is inf, and 0 * inf warned
    "invalid value encountered in multiply" (an error under
    ``-W error``).  Such hints are none to the kernel: no warning now, and the
    next step equals the public function."""
    lin, run = _exclusive_shape_runner(monkeypatch)
    for step in (0.05, 1e-300, 1e300, 0.05):
        with torch.no_grad():
            lin.weight.normal_()
        W = lin.weight.detach().numpy().copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run(step)
        with proxlib.use_backend("numba"):
            want = proxlib.from_rows(proxlib.prox_exclusive_lasso(proxlib.to_rows(W, "shape"), 0.05, step), W.shape, "shape")
        got = lin.weight.detach().numpy()
        np.testing.assert_array_equal(got == 0, want == 0)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * float(np.abs(want).max()))


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
@pytest.mark.parametrize("penalty", ["exclusive", "group-exclusive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exclusive_columns_keep_threshold_hints_between_steps(penalty, dtype, monkeypatch):
    """A Linear weight's "shape" rows (its columns) on Numba's in-place route
    keep each row's threshold guess between steps (numba_cpu._exclusive_cols'
    hints): after the first step they are set on every row, and every step
    still equals the public function (no hints) on the weights before it:
    bit for bit in float32, to the dtype's tolerance with the same zeros in
    float64."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "numba")
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 40).to(dtype)
    opt = torch.optim.SGD(lin.parameters(), lr=0.05, momentum=0.9)
    pen, fn = ((proxlib.ExclusiveLasso(0.05), lambda R, s: proxlib.prox_exclusive_lasso(R, 0.05, s)) if penalty == "exclusive"
               else (proxlib.GroupExclusive(0.05, 0.5), lambda R, s: proxlib.prox_group_exclusive(R, 0.05, 0.5, s)))
    prox = pt.ProximalStep(opt)
    prox.add(lin, pen, grouping="shape")
    run = prox.terms[0].plan(lin.weight).on_numba
    assert run is not None and run.hint.shape == (48,) and not run.hint.any()
    x = torch.randn(16, 48, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for step, lr in enumerate([0.05, 0.05, 0.05, 0.04, 0.03, 0.05, 0.05]):  # (a schedule: hints scaled with the step)
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        lin(x).pow(2).mean().backward()
        opt.step()
        W = lin.weight.detach().numpy().copy()
        with proxlib.use_backend("numba"):
            want = proxlib.from_rows(fn(proxlib.to_rows(W, "shape"), lr), W.shape, "shape")
        prox.step()
        got = lin.weight.detach().numpy()
        np.testing.assert_array_equal(got == 0, want == 0)
        if dtype == torch.float32:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(np.abs(W).max()))
        assert (got == 0).any()  # the prox zeroes entries: the revived ones are what the hints skip
    assert (run.hint > 0).sum() >= 40


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
@pytest.mark.parametrize("case", ["group-lasso/channel", "weighted-l1", "exclusive/filter"])
def test_numba_route_follows_a_changing_learning_rate(case, monkeypatch):
    """The in-place runner forms the thresholds again only when the step
    changes (a constant lr reuses them): with the lr changed between steps
    (a schedule), every step still equals the public function at lr *
    strength, bit for bit."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", "numba")
    pen, fn, grouping = CASES[case]
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 9)
    opt = torch.optim.SGD(lin.parameters(), lr=0.3)
    prox = pt.ProximalStep(opt)
    prox.add(lin, pen, grouping=grouping, strength=0.5)
    assert prox.terms[0].plan(lin.weight).on_numba is not None
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(2))
    for lr in (0.3, 0.3, 0.05, 0.05, 0.3):
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        lin(x).pow(2).mean().backward()
        opt.step()
        W = lin.weight.detach().clone()
        with proxlib.use_backend("numba"):
            want = _expected(W.numpy(), fn, grouping, lr * 0.5)
        prox.step()
        np.testing.assert_array_equal(lin.weight.detach().numpy(), want)


#: learning rates of a schedule: usual ones, and ones whose thresholds leave
#: the normal range (a subnormal step * lam: formed by _range.mul_pow2) or the
#: kernels' range (_range.solve), and 0 (no prox)
_SCHEDULE_LRS = st.one_of(st.floats(1e-6, 10.0), st.sampled_from([0.3, 0.05, 2.0**-1040, 1e-300, 1e300, 0.0]))


@pytest.mark.skipif("numba" not in proxlib.available_backends(), reason="no numba")
@given(case=st.sampled_from(sorted(CASES)), dtype=st.sampled_from([torch.float32, torch.float64]), conv=st.booleans(),
       lrs=st.lists(_SCHEDULE_LRS, min_size=2, max_size=6), seed=st.integers(0, 2**16))
def test_numba_runners_follow_any_learning_rate_schedule(case, dtype, conv, lrs, seed):
    """Every penalty's plan on a Linear or convolution weight, stepped at a
    new lr at each step (a schedule; the in-place runners form their
    thresholds again by compiled calls, numba_cpu.threshold_former, and
    rescale their hints) equals the public function at lr * strength on the
    weights before it, whichever path the threshold takes (normal,
    subnormal, beyond the kernels' range): bit for bit, except in float64
    where the rows are the columns of a matrix (a Linear's "channel" and
    "shape" rows, a convolution's "shape" rows): the runners read them
    column-wise, summing in another order than the public function's rows
    (and the exclusive operators keep threshold hints there), so the same
    zeros and the same values to 1e-12 of the largest entry."""
    before = torch_dev.CPU_KERNELS
    torch_dev.CPU_KERNELS = "numba"
    try:
        _steps_at_lrs(case, dtype, conv, lrs, seed)
    finally:
        torch_dev.CPU_KERNELS = before


def _steps_at_lrs(case, dtype, conv, lrs, seed):
    pen, fn, grouping = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    layer = (torch.nn.Conv2d(3, 4, 3) if conv else torch.nn.Linear(12, 9)).to(dtype)
    prox = pt.ProximalStep(torch.optim.SGD(layer.parameters(), lr=0.3))
    prox.add(layer, pen, grouping=grouping, strength=0.5)
    for lr in lrs:
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=dtype))
        W = layer.weight.detach().numpy().copy()
        step = lr * 0.5
        with proxlib.use_backend("numba"):
            want = _expected(W, fn, grouping, step) if step > 0 else W
        prox.step(lr=lr)
        got = layer.weight.detach().numpy()
        if dtype == torch.float64 and (grouping == "shape" or (grouping == "channel" and not conv)):
            np.testing.assert_array_equal(got == 0, want == 0)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(np.abs(W).max()))
        else:
            np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------ regressions


@pytest.mark.parametrize("keep_zero", [False, True], ids=["plain", "keep-zero"])
@pytest.mark.parametrize("how", ["hook", "step"])
@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
def test_prox_uses_the_lr_of_a_reloaded_optimizer(cpu_kernels, how, keep_zero, monkeypatch):
    """``optimizer.load_state_dict`` replaces ``param_groups`` (a new list of
    new dicts): the next proximal step uses the reloaded lr, on the kept
    Numba step (ProximalStep._run_prepared), the general path and the
    keep_zero path, attached or through step().  Zero gradients: the SGD
    step leaves the weight as it is, so the step is the prox alone (lr 0:
    the identity)."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5, bias=False).double()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, keep_zero=keep_zero)
    prox.add(lin, proxlib.GroupLasso(0.5))
    if how == "hook":
        prox.attach()

    def one_step():
        lin.weight.grad = torch.zeros_like(lin.weight)
        opt.step()
        if how == "step":
            prox.step()

    for _ in range(2):  # (the second runs the kept step on the Numba route)
        one_step()
    for lr in (0.0, 0.03, 0.0):
        state = opt.state_dict()
        state["param_groups"][0]["lr"] = lr
        opt.load_state_dict(state)
        want = proxlib.prox_group_lasso(lin.weight.detach().clone(), 0.5, lr) if lr > 0 else lin.weight.detach().clone()
        one_step()
        assert torch.equal(lin.weight.detach(), want), lr


def test_a_strength_tensor_must_hold_one_number():
    """A strength tensor of several entries raises a ValueError naming
    ``strength`` (not torch's "only one element tensors ..."); one of one
    entry is its number."""
    lin = torch.nn.Linear(6, 5)
    prox = pt.ProximalStep(torch.optim.SGD(lin.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="strength"):
        prox.add(lin, proxlib.GroupLasso(1.0), strength=torch.tensor([1.0, 2.0]))
    assert prox.terms == []
    prox.add(lin, proxlib.GroupLasso(1.0), strength=torch.tensor(0.5))
    assert prox.terms[0].strength == 0.5


def test_load_state_dict_checks_everything_before_changing_anything():
    """A state with a bad entry (``every`` < 1 as the constructor refuses
    it, a strength of a later term not >= 0, a negative counter, a frozen
    mask of the wrong shape) raises naming it and leaves the ProximalStep as
    it was; the optimizer's steps go on with the old state."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net, every=2, keep_zero=True)
    prox.add(net[0], proxlib.GroupLasso(1.0), strength=0.5)
    prox.add(net[1], proxlib.GroupLasso(1.0), strength=0.25)
    prox.attach()
    good = prox.state_dict()
    first, second = good["strengths"]
    bad_states = {
        "every": [dict(good, every=0), dict(good, every=-3), dict(good, every=1.5), dict(good, every=True)],
        "n_steps": [dict(good, n_steps=-1), dict(good, n_steps=1.5)],
        "n_optimizer_steps": [dict(good, n_optimizer_steps=-2)],
        second: [dict(good, strengths={first: 2.0, second: bad}) for bad in (float("nan"), -1.0, "x", torch.tensor([1.0, 2.0]))],
        "frozen mask": [dict(good, frozen={first: torch.zeros(2, 2, dtype=torch.bool)})],
    }
    for what, states in bad_states.items():
        for bad in states:
            with pytest.raises((ValueError, TypeError), match=re.escape(what)):
                prox.load_state_dict(bad)
            now = prox.state_dict()
            assert now["strengths"] == good["strengths"] and now["every"] == 2 and now["n_steps"] == good["n_steps"], what
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).sum().backward()
        opt.step()
    assert prox.n_optimizer_steps == 3 and prox.n_steps == 1


def test_penalty_classes_are_rejected_at_add():
    """A penalty class (``GroupLasso`` for ``GroupLasso(lam)``), also from a
    builder, is refused at add() (TypeError naming ``penalty``), before any
    optimizer step; nothing is half-added."""
    lin = torch.nn.Linear(6, 5)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    for cls in (proxlib.GroupLasso, proxlib.WeightedL1, pt.GroupExclusiveSequential, torch.nn.Linear):
        with pytest.raises(TypeError, match="penalty"):
            prox.add(lin, cls)
    with pytest.raises(TypeError, match="penalty"):
        prox.add(lin, lambda n: proxlib.GroupLasso)  # a builder returning a class
    assert prox.terms == []


def test_a_terms_plan_fields_are_read_only():
    """``penalty``, ``grouping``, ``target``, ``name`` and ``metric`` are what
    a term's plan is built from: assigning one raises AttributeError (the
    term keeps its penalty); ``strength`` may change and is honoured."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt)
    term = prox.add(lin, proxlib.GroupLasso(0.5), grouping="channel")
    for attr, value in (("penalty", proxlib.GroupLasso(5.0)), ("grouping", "filter"), ("target", torch.nn.Linear(6, 5)),
                        ("name", "bias"), ("metric", True)):
        with pytest.raises(AttributeError, match=f"ProxTerm.{attr} is read-only"):
            setattr(term, attr, value)
    assert term.penalty == proxlib.GroupLasso(0.5) and term.grouping == "channel"
    term.strength = 2.0
    W = lin.weight.detach().clone()
    prox.step()
    assert torch.equal(lin.weight.detach(), _expected(W, lambda R, s: proxlib.prox_group_lasso(R, 0.5, s), "channel", 0.2))


def test_a_term_removed_from_terms_is_no_longer_applied():
    """Terms compare by identity: ``prox.terms.remove(term)`` (and ``in``)
    raised 'Boolean value of Tensor ... is ambiguous' where an earlier term
    targets another tensor (the dataclass's == compared the targets); a
    removed term is not applied at the next step, the others are."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    prox = pt.ProximalStep(opt)
    ta = prox.add(a.weight, proxlib.GroupLasso(0.5))
    tb = prox.add(b.weight, proxlib.GroupLasso(0.5))
    prox.step()
    prox.step()  # (the kept step, where the route keeps it)
    assert tb in prox.terms and len({ta, tb}) == 2
    prox.terms.remove(tb)
    Wa, Wb = a.weight.detach().clone(), b.weight.detach().clone()
    prox.step()
    assert torch.equal(a.weight.detach(), proxlib.prox_group_lasso(Wa, 0.5, 0.1))
    assert torch.equal(b.weight.detach(), Wb)


def test_meta_tensors_raise_naming_the_term_in_step_and_value():
    """A term on a tensor on the meta device (deferred initialisation) is
    added (its shape is checked), but a step or value() raises a ValueError
    naming the term, the same in both; after materialising the module the
    term runs."""
    lin = torch.nn.Linear(6, 5, device="meta")
    prox = pt.ProximalStep()
    prox.add(lin, proxlib.GroupLasso(0.5), grouping="channel", label="fc")
    for call in (lambda: prox.step(lr=0.1), prox.value, prox.values):
        with pytest.raises(ValueError, match=r"term 'fc'.*'weight'.*meta device"):
            call()
    lin.to_empty(device="cpu")
    with torch.no_grad():
        lin.weight.copy_(torch.randn(5, 6))
    W = lin.weight.detach().clone()
    prox.step(lr=0.1)
    assert torch.equal(lin.weight.detach(), _expected(W, lambda R, s: proxlib.prox_group_lasso(R, 0.5, s), "channel", 0.1))
    assert prox.value() > 0


@pytest.mark.parametrize("penalty", [proxlib.GroupLasso(0.5), pt.growl(_growl_weights), proxlib.ExclusiveLasso(0.5),
                                     proxlib.Lp(0.1, 0.5), proxlib.WeightedL1(0.1), pt.GroupExclusiveSequential(0.3, 0.2)],
                         ids=["group-lasso", "growl", "exclusive", "lp", "weighted-l1", "sequential"])
@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
def test_check_finite_errors_name_the_term(penalty, cpu_kernels, monkeypatch):
    """With check_finite, a NaN or Inf raises a ValueError (of the type the
    check raises) whose message names the term of the tensor that holds it,
    on every route and in a metric; nothing is named where the tensors are
    finite."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net, check_finite=True)
    prox.add(net[0], proxlib.GroupLasso(0.1), grouping="channel")
    prox.add(net[1], penalty, grouping="channel")
    with torch.no_grad():
        net[1].weight[2, 3] = float("inf")
    label = prox.terms[1].label
    assert label.startswith("1.weight:")
    with pytest.raises(ValueError, match=rf"^term {re.escape(repr(label))}: .*NaN or Inf"):
        prox.step()
    metric = pt.ProximalStep(opt, model=net, check_finite=True, metric=lambda o, p: torch.full_like(p, float("nan")) if p is net[1].weight else torch.ones_like(p))
    metric.add(net[0], proxlib.GroupLasso(0.1), grouping="channel")
    metric.add(net[1], proxlib.WeightedL1(0.1), name="bias")
    metric.add(net[1], proxlib.GroupLasso(0.1), grouping="channel")
    with torch.no_grad():
        net[1].weight[2, 3] = 1.0
    with pytest.raises(ValueError, match=r"^term '1.weight:GroupLasso\[channel\]': the metric contains NaN or Inf"):
        metric.step()


def test_step_of_several_optimizer_steps():
    """``step(steps=r)`` is the proximal step for r optimizer steps, step
    lr * strength * r (as the hook's ``every``); ``steps`` an integer >= 1."""
    p = torch.nn.Parameter(torch.full((2, 3), 5.0, dtype=torch.float64))
    prox = pt.ProximalStep(torch.optim.SGD([p], lr=0.1))
    prox.add(p, proxlib.WeightedL1(1.0), strength=2.0)
    prox.step(steps=3)
    assert torch.allclose(p.detach(), torch.tensor(5.0 - 0.6, dtype=torch.float64), rtol=0, atol=1e-15)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="steps"):
            prox.step(steps=bad)
    assert prox.n_steps == 1


def test_readme_torch_snippet_runs():
    """The README's first example (torch tensors in, a ProximalStep attached)
    runs as written: one prox after the one optimizer step."""
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## With PyTorch") :]
    start = section.index("```python") + len("```python")
    ns: dict = {}
    exec(compile(section[start : section.index("```", start)], "README.md", "exec"), ns)
    assert isinstance(ns["X"], torch.Tensor) and tuple(ns["X"].shape) == (784, 300)
    assert ns["prox"].n_steps == 1 and len(ns["prox"].terms) == 2


@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
@pytest.mark.parametrize("penalty", [proxlib.GroupLasso(0.5), proxlib.ExclusiveLasso(0.5), proxlib.WeightedL1(0.5), proxlib.Lp(0.5, 0.5)],
                         ids=["group-lasso", "exclusive", "weighted-l1", "lp"])
@pytest.mark.parametrize("lr", [math.nan, math.inf])
@pytest.mark.parametrize("keep_zero", [False, True], ids=["plain", "keep-zero"])
def test_a_non_finite_learning_rate_raises_and_leaves_the_weights(lr, penalty, keep_zero, cpu_kernels, monkeypatch):
    """A group's lr that is NaN or Inf (a scheduler gone wrong) makes the
    step lr * strength not finite: the step raises a ValueError naming the
    term, as ``step(lr=nan)`` and the public function refuse such a step,
    and leaves the weights as they were (it wrote NaN, or set the whole
    tensor to zero, hiding the NaN the optimizer's own step made); also on
    the kept step (two steps before) and in a metric."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, keep_zero=keep_zero)
    prox.add(lin, penalty, grouping="channel" if penalty.layout != "flat" else None)
    prox.step()
    prox.step()
    opt.param_groups[0]["lr"] = lr
    W = lin.weight.detach().clone()
    with pytest.raises(ValueError, match=r"^term 'Linear.weight:\w+(\[channel\])?': the proximal step .* is not finite"):
        prox.step()
    assert torch.equal(lin.weight.detach(), W)
    opt.param_groups[0]["lr"] = 1e300  # lr * strength overflows
    prox.terms[0].strength = 1e10
    with pytest.raises(ValueError, match="not finite"):
        prox.step()
    assert torch.equal(lin.weight.detach(), W)
    sgd = torch.optim.SGD(lin.parameters(), lr=0.1)
    sgd.param_groups[0]["lr"] = lr
    metric = pt.ProximalStep(sgd, metric=lambda o, p: torch.ones_like(p))
    metric.add(lin, penalty)
    with pytest.raises(ValueError, match="not finite"):
        metric.step()
    assert torch.equal(lin.weight.detach(), W)


def test_a_strength_changed_after_add_is_checked():
    """``term.strength = s`` takes the checks of ``add``'s strength (a
    finite number >= 0; a one-entry tensor is its number): a NaN strength
    set all the weights to zero at the next step, a negative one skipped
    the term silently, a string failed only at the step."""
    lin = torch.nn.Linear(6, 5)
    prox = pt.ProximalStep(torch.optim.SGD(lin.parameters(), lr=0.1))
    term = prox.add(lin, proxlib.GroupLasso(1.0))
    for bad, err in ((math.nan, ValueError), (math.inf, ValueError), (-1.0, ValueError), ("0.5", TypeError), (torch.tensor([1.0, 2.0]), ValueError)):
        with pytest.raises(err, match="strength"):
            term.strength = bad
        assert term.strength == 1.0
    term.strength = torch.tensor(0.25)
    assert type(term.strength) is float and term.strength == 0.25
    assert prox.state_dict()["strengths"] == {"Linear.weight:GroupLasso": 0.25}


def test_a_label_changed_after_add_stays_unique_and_keeps_its_frozen_groups():
    """``term.label`` may change, but two terms of a ProximalStep may not
    share one: a duplicate label raises a ValueError at the assignment (it
    used to pass, then the state_dict kept one strength for the two terms,
    and with ``keep_zero`` one term's frozen mask zeroed the other's tensor).
    A renamed term keeps its frozen groups (they were keyed by the old
    label and dropped)."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)
    with torch.no_grad():
        a.weight[0] = 1e-3  # zeroed and frozen by the first step
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)
    prox = pt.ProximalStep(opt, keep_zero=True)
    prox.add(a, proxlib.GroupLasso(0.5), label="A")
    tb = prox.add(b, proxlib.WeightedL1(1e-6), label="B")
    with pytest.raises(ValueError, match="'A'"):
        tb.label = "A"
    assert tb.label == "B"
    with pytest.raises(TypeError, match="label"):
        tb.label = 3
    with pytest.raises(TypeError, match="label"):
        prox.add(a, proxlib.WeightedL1(0.1), label=3)
    tb.label = "B"  # (its own label again)
    Wb = b.weight.detach().clone()
    prox.step()
    assert torch.all(a.weight.detach()[0] == 0) and bool(prox.frozen()["A"][0].all())
    assert torch.equal(b.weight.detach() != 0, Wb != 0)
    prox.terms[0].label = "A2"
    assert set(prox.frozen()) == {"A2", "B"} and bool(prox.frozen()["A2"][0].all())
    assert set(prox.state_dict()["strengths"]) == {"A2", "B"}
    with torch.no_grad():
        a.weight[0] = 1.0
    prox.step()  # the frozen row is set back to zero first
    assert torch.all(a.weight.detach()[0] == 0)


def test_a_parameter_replaced_after_add_raises_naming_the_term():
    """A term's parameter replaced by another tensor that the optimizer does
    not hold (``load_state_dict(assign=True)``) makes the hook raise a
    ValueError naming the term (it said only "a tensor of shape (5, 6) with
    a prox term"), as add() and attach() name it."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 5))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, model=net)
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="channel")
    prox.add(net[1], proxlib.GroupLasso(0.5))
    prox.attach()
    prox.step()
    net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()}, assign=True)
    net(torch.randn(3, 6)).sum().backward()
    with pytest.raises(ValueError, match=r"^term '0.weight:GroupLasso\[channel\]': its tensor \(shape \(5, 6\)\) is not in the optimizer"):
        opt.step()
    with pytest.raises(ValueError, match=r"^term '0.weight:GroupLasso\[channel\]'.* not in the optimizer"):
        prox.attach()


@pytest.mark.parametrize("cpu_kernels", CPU_KERNELS)
def test_an_optimizer_without_lr_is_refused_at_attach(cpu_kernels, monkeypatch):
    """The hook reads each term's lr from its tensor's parameter group: an
    optimizer whose groups have no ``lr`` is refused by attach() (and by
    add() once attached) with a ValueError naming the term, where the first
    optimizer step failed with a bare KeyError 'lr'; a step() without lr=
    raises the same error, also after kept steps; step(lr=) runs."""
    monkeypatch.setattr(torch_dev, "CPU_KERNELS", cpu_kernels)

    class NoLR(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"scale": 0.1})

        def step(self, closure=None):
            pass

    lin = torch.nn.Linear(6, 5)
    opt = NoLR(lin.parameters())
    prox = pt.ProximalStep(opt)
    prox.add(lin, proxlib.GroupLasso(0.5))
    with pytest.raises(ValueError, match=r"^term 'Linear.weight:GroupLasso': the NoLR parameter group .* has no 'lr'"):
        prox.attach()
    assert prox._handle is None
    for _ in range(2):
        prox.step(lr=0.1)  # (kept steps on the Numba route)
    with pytest.raises(ValueError, match="has no 'lr'"):
        prox.step()
    assert prox.n_steps == 2
    sgd = torch.optim.SGD(lin.parameters(), lr=0.1)
    attached = pt.ProximalStep(sgd)
    attached.add(lin, proxlib.GroupLasso(0.5))
    attached.attach()
    sgd.param_groups[0].pop("lr")
    with pytest.raises(ValueError, match="has no 'lr'"):
        attached.add(lin, proxlib.WeightedL1(0.5))
    assert len(attached.terms) == 1


@pytest.mark.parametrize("make_opt", [lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True), lambda ps: torch.optim.SGD(ps, lr=0.1, fused=True),
                                      lambda ps: torch.optim.Adam(ps, lr=0.1)], ids=["adam-fused", "sgd-fused", "adam"])
def test_a_step_skipped_by_the_grad_scaler_takes_no_proximal_step(make_opt):
    """torch.amp.GradScaler skips the optimizer step on inf gradients: for a
    fused optimizer it still calls step() (with ``optimizer.found_inf``
    set, the kernel skipping the update), and the hook ran the prox and
    counted the step; now nothing moves and ``every`` keeps its count.
    The next, finite step is the optimizer's step then the prox."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))

    def two_steps(attached: bool):
        torch.manual_seed(0)
        lin = torch.nn.Linear(6, 5)
        opt = make_opt(lin.parameters())
        prox = pt.ProximalStep(opt)
        prox.add(lin, proxlib.GroupLasso(0.5))
        if attached:
            prox.attach()
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        for skipped in (True, False):
            opt.zero_grad()
            scaler.scale(lin(x).pow(2).mean()).backward()
            if skipped:
                lin.weight.grad[0, 0] = math.inf
                W = lin.weight.detach().clone()
            scaler.step(opt)
            scaler.update()
            if skipped:
                assert torch.equal(lin.weight.detach(), W)
                assert prox.n_steps == 0 and prox.n_optimizer_steps == 0
        return lin, prox

    lin, prox = two_steps(True)
    assert prox.n_steps == 1 and prox.n_optimizer_steps == 1
    plain, _ = two_steps(False)
    assert torch.equal(lin.weight.detach(), proxlib.prox_group_lasso(plain.weight.detach(), 0.5, 0.1))


def test_frozen_masks_follow_the_tensor_to_another_device():
    # keep_zero's masks stayed on the device where the groups froze: after
    # model.to(device) the check skipped them silently (the frozen groups
    # were no longer held at zero) and a later freeze failed on mixing devices.
    # The meta device stands in for a GPU (no data: only where the mask lives)
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight[1] = 0.0
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, keep_zero=True)
    prox.add(lin, proxlib.GroupLasso(0.01), grouping="filter", label="w")
    prox.step()
    assert prox.frozen()["w"][1].all() and prox.frozen()["w"].device.type == "cpu"
    lin.to("meta")
    prox._enforce_frozen(opt)
    assert prox.frozen()["w"].device.type == "meta"


def test_load_state_dict_restores_every():
    """``every`` is in the state (and checked on loading): a ProximalStep
    made again with the default every=1 and loaded from a checkpoint of
    every=3 takes every=3 (the hook's period and its step's factor)."""
    lin = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    saved = pt.ProximalStep(opt, every=3)
    saved.add(lin, proxlib.GroupLasso(1.0), label="gl")
    fresh = pt.ProximalStep(opt)
    fresh.add(lin, proxlib.GroupLasso(1.0), label="gl")
    fresh.load_state_dict(saved.state_dict())
    assert fresh.every == 3 and fresh.state_dict()["every"] == 3


def test_frozen_parameters_are_skipped_with_keep_zero_too():
    """keep_zero steps run on their own path (term by term, freezing as they
    go): a tensor with requires_grad=False is skipped there as well, neither
    proxed nor frozen."""
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt, keep_zero=True)
    prox.add(lin, proxlib.GroupLasso(10.0), label="gl")
    lin.weight.requires_grad_(False)
    before = lin.weight.detach().clone()
    prox.step()
    assert torch.equal(lin.weight, before) and not prox.frozen()
    lin.weight.requires_grad_(True)
    prox.step()
    assert torch.count_nonzero(lin.weight) == 0 and bool(prox.frozen()["gl"].all())


def test_numpy_weights_with_negative_strides_for_a_torch_input():
    # np.sort(w)[::-1] is a view with a negative stride, which torch cannot
    # wrap: proxlib copies it (the weights are small) instead of raising
    torch = pytest.importorskip("torch")
    w = np.sort(np.array([0.1, 0.5, 0.9]))[::-1]
    v = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    for f in (proxlib.prox_owl, proxlib.prox_weighted_l1):
        np.testing.assert_array_equal(f(v, w).numpy(), f(v, w.copy()).numpy())


def test_misuse_outside_add_is_refused_clearly_and_changes_nothing():
    """The refusals no other test reaches: a model that is not a module, an
    attach() with no optimizer anywhere, a metric term applied without its
    metric, and states whose strengths are not keyed by label or that hold
    frozen masks for unknown terms (load_state_dict checks everything
    before it changes anything); and a strength-0 term's value is 0."""
    with pytest.raises(TypeError, match="^model must be a torch.nn.Module, got list$"):
        pt.ProximalStep(model=[])
    lin = torch.nn.Linear(6, 5)
    with pytest.raises(ValueError, match=r"^attach\(\) needs an optimizer$"):
        pt.ProximalStep().attach()
    adam = torch.optim.Adam(lin.parameters(), lr=0.1)
    metric_term = pt.ProximalStep(adam, metric="adam").add(lin, proxlib.GroupLasso(0.5))
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError, match=r"apply\(\) needs metric="):
        metric_term.apply(0.1)
    assert torch.equal(lin.weight.detach(), before)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    prox = pt.ProximalStep(opt, keep_zero=True)
    term = prox.add(lin, proxlib.GroupLasso(0.5), strength=2.0)
    good = prox.state_dict()
    for bad, message in (
        ({**good, "strengths": [3.0]}, "per-term strengths keyed by label"),
        ({**good, "strengths": {term.label: 3.0}, "frozen": {"elsewhere": torch.zeros(5, 6, dtype=torch.bool)}},
         r"frozen masks for unknown terms \['elsewhere'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            prox.load_state_dict(bad)
        assert term.strength == 2.0 and prox.state_dict()["strengths"] == good["strengths"]
    term.strength = 0.0
    assert term.value() == 0.0 and prox.value() == 0.0

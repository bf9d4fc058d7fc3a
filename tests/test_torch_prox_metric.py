"""ProximalStep(optimizer, metric="adam"): the prox in Adam's diagonal metric after every step.

The hook's result is compared bit for bit with the public operator called
with ``metric=adam_metric(optimizer, w)`` on the post-step weights of an
identical model trained without the hook (so the comparison covers the
state it reads: second moment, step count, betas, eps, lr).  A constant
metric gives the Euclidean ProximalStep with strength / metric (to rounding),
and every configuration that has no exact metric prox is refused at add().
"""

from __future__ import annotations

import copy
import sys

import _procs
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402
from proxlib.torch.adaptive import adam_metric  # noqa: E402

# (penalty, grouping, strength): every operator with a metric kernel, row and
# flat layouts; strengths that zero some but not all groups/entries in 3 Adam steps
CASES = {
    "group-lasso/channel": (proxlib.GroupLasso(0.7), "channel", 0.5),
    "group-lasso/filter": (proxlib.GroupLasso(0.7), "filter", 0.4),
    "exclusive/filter": (proxlib.ExclusiveLasso(0.9), "filter", 0.1),
    "group-exclusive/shape": (proxlib.GroupExclusive(0.8, 0.3), "shape", 0.1),
    "weighted-l1": (proxlib.WeightedL1(0.4), None, 0.1),
    "weighted-l1/array": (lambda G: proxlib.WeightedL1(np.linspace(0.1, 0.9, 6 * 3 * 3 * 3).reshape(6, 3, 3, 3)), None, 0.1),
    "weighted-l2sq/array": (lambda G: proxlib.WeightedL2Sq(np.linspace(0.1, 2.0, 6 * 3 * 3 * 3).reshape(6, 3, 3, 3)), None, 0.1),
    "lp-half": (proxlib.Lp(0.05, 0.5), None, 0.1),
    "lp-0.3/channel": (proxlib.Lp(0.05, 0.3), "channel", 0.1),
}

OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.9)),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.03, weight_decay=0.1),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.05, amsgrad=True, weight_decay=0.01),
    "adam-foreach": lambda ps: torch.optim.Adam(ps, lr=0.05, foreach=True),
}


def _net(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 4)).to(dtype)


def _batch(dtype, k):
    g = torch.Generator().manual_seed(10 + k)
    return torch.randn(8, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, 4, (8,), generator=g)


def _loss_step(net, opt, dtype, k):
    X, y = _batch(dtype, k)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(X), y).backward()
    opt.step()


def _resolved(penalty, w, grouping):
    rows = w if grouping is None else proxlib.to_rows(w, grouping)
    n = rows.shape[0] if rows.ndim > 1 else 1
    return penalty(n) if callable(penalty) and not hasattr(penalty, "prox") else penalty


def _direct(penalty, w, d, step, grouping):
    """The public operator in the metric d on the post-step weights."""
    pen = _resolved(penalty, w, grouping)
    if grouping is None:
        return pen.prox(w, step, metric=d)
    X = pen.prox(proxlib.to_rows(w, grouping), step, metric=proxlib.to_rows(d, grouping))
    return proxlib.from_rows(X, tuple(w.shape), grouping)


def _snapshot(opt, w):
    """A step post-hook, registered before the prox's: the weights after the
    optimizer's update, before the prox."""
    seen = []
    opt.register_step_post_hook(lambda *a: seen.append(w.detach().clone()))
    return seen


# every operator with Adam in float64 and float32; the other optimizers in float64 on three
HOOK_CASES = [(c, "adam", dt) for c in CASES for dt in ("float64", "float32")] + [
    (c, o, "float64") for o in OPTIMIZERS if o != "adam" for c in ("group-lasso/channel", "group-exclusive/shape", "lp-half")
]


@pytest.mark.parametrize("case, opt_name, dtype_name", HOOK_CASES)
def test_hook_is_the_metric_prox_of_the_post_step_weights(case, opt_name, dtype_name):
    dtype = getattr(torch, dtype_name)
    penalty, grouping, strength = CASES[case]
    net = _net(dtype)
    ref = copy.deepcopy(net)
    opt = OPTIMIZERS[opt_name](net.parameters())
    ropt = OPTIMIZERS[opt_name](ref.parameters())
    w = net[0].weight
    seen = _snapshot(opt, w)
    prox = pt.ProximalStep(opt, model=net, metric="adam")
    prox.add(net[0], penalty, grouping=grouping, strength=strength)
    prox.attach()
    for k in range(3):
        _loss_step(net, opt, dtype, k)
        d = adam_metric(opt, w)
        expected = _direct(penalty, seen[-1], d, opt.param_groups[0]["lr"] * strength, grouping)
        assert torch.equal(w, expected), f"step {k}: max diff {(w - expected).abs().max().item()}"
        # the same trajectory as a model without the hook that takes the direct prox
        _loss_step(ref, ropt, dtype, k)
        with torch.no_grad():
            ref[0].weight.copy_(_direct(penalty, ref[0].weight.detach(), adam_metric(ropt, ref[0].weight), opt.param_groups[0]["lr"] * strength, grouping))
        assert torch.equal(w, ref[0].weight)
        assert torch.equal(net[3].weight, ref[3].weight)  # no prox there: the same Adam steps
    assert prox.n_steps == 3
    # a non-trivial metric, and a prox that changed the weights (zeroing some, not all)
    assert float(d.max() / d.min()) > 2
    assert not torch.equal(w, seen[-1])
    if opt_name == "adam" and "l2sq" not in case:
        assert 0 < int((w == 0).sum()) < w.numel()


def _metric_steps_on_both_routes(monkeypatch, build):
    """``build()`` -> (optimizer, ProximalStep in Adam's metric, loss(k),
    the parameters Numba writes in place, the tensors to compare), run on
    the torch route and on Numba's (``CPU_KERNELS`` "torch", "auto"): three
    Adam steps, each followed by ``prox.step()``.  On both the in-place
    parameters keep their memory and the prox bumps their version
    counters; on Numba's they take no stack.  Returns ({route: clones of the
    tensors}, the leaves that Numba's route stacked)."""
    pytest.importorskip("numba")
    from proxlib.backends import torch_dev
    from proxlib.torch import _batched

    solve_stack = _batched._solve_metric_stack
    results, stacked = {}, []
    for route in ("torch", "auto"):
        monkeypatch.setattr(torch_dev, "CPU_KERNELS", route)
        opt, prox, loss, in_place, outputs = build()
        stacked.clear()
        monkeypatch.setattr(_batched, "_solve_metric_stack", lambda members, *a: (stacked.extend(m.leaf for m in members), solve_stack(members, *a))[1])
        ptrs = [p.data_ptr() for p in in_place]
        for k in range(3):
            opt.zero_grad()
            loss(k).backward()
            opt.step()
            versions = [p._version for p in in_place]
            prox.step()
            assert [p.data_ptr() for p in in_place] == ptrs
            assert all(p._version > v for p, v in zip(in_place, versions))
        results[route] = [t.detach().clone() for t in outputs]
    assert not any(leaf is p for leaf in stacked for p in in_place)
    return results, stacked


@pytest.mark.parametrize("case", ["weighted-l1", "weighted-l1/array", "weighted-l2sq/array", "lp-half"])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_numba_writes_the_separable_metric_prox_into_the_parameter(case, dtype_name, monkeypatch):
    """On CPU tensors with Numba (``CPU_KERNELS = "auto"``, the default) the
    weighted l1, weighted squared l2 and lp in Adam's metric are Numba's
    one pass written into the parameter's memory, term by term, where the
    torch route concatenates the terms' entries, metrics and thresholds and
    copies the results back: the same bits (lp: to the parity tolerance,
    its powers being libm's, not torch's), with a second term on the
    Linear and a non-contiguous parameter, which keeps the copies; the same
    memory, the version counter bumped (:func:`_metric_steps_on_both_routes`)."""
    dtype = getattr(torch, dtype_name)
    penalty, grouping, strength = CASES[case]
    second = proxlib.WeightedL2Sq(0.5) if "l2sq" in case else proxlib.WeightedL1(0.3)

    def build():
        net = _net(dtype)
        with torch.no_grad():
            strided = torch.nn.Parameter(torch.randn(5, 7, dtype=dtype, generator=torch.Generator().manual_seed(3)).t())
        assert not strided.is_contiguous()
        opt = torch.optim.Adam([*net.parameters(), strided], lr=0.05, betas=(0.8, 0.9))
        prox = pt.ProximalStep(opt, model=net, metric="adam")
        prox.add(net[0], penalty, grouping=grouping, strength=strength)
        prox.add(net[3], second, strength=strength)
        prox.add(strided, second, strength=strength, label="strided")

        def loss(k):
            X, y = _batch(dtype, k)
            return torch.nn.functional.cross_entropy(net(X), y) + 0.1 * (k + 1) * strided.sum()

        return opt, prox, loss, [net[0].weight, net[3].weight], [net[0].weight, net[3].weight, strided]

    results, stacked = _metric_steps_on_both_routes(monkeypatch, build)
    assert stacked and all(leaf.shape == (7, 5) for leaf in stacked)  # only the strided tensor took the copies
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for got, ref in zip(results["auto"], results["torch"]):
        if case.startswith("lp"):
            torch.testing.assert_close(got, ref, rtol=tol, atol=tol * float(ref.abs().max()))
        else:
            assert torch.equal(got, ref), f"max diff {(got - ref).abs().max().item()}"
    assert 0 < int((results["auto"][0] == 0).sum()) < results["auto"][0].numel() or "l2sq" in case


@pytest.mark.parametrize("penalty", ["group lasso", "exclusive", "group+exclusive"])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_numba_row_kernels_in_the_metric_in_place(penalty, dtype_name, monkeypatch):
    """The group lasso, the exclusive lasso and both together in Adam's
    metric on CPU tensors with Numba: each term's rows solved by Numba's
    row kernel and written into the parameter where its rows are a view of
    it (a convolution's "filter" rows, a Linear's "channel" rows: its
    columns), the stacks where they are a copy (a convolution's "channel"
    rows); the steps agree with the torch route's array code to the parity
    tolerance (the row sums of the group lasso's search add in another
    order), zeroing the same groups (group lasso) or entries (the others)."""
    dtype = getattr(torch, dtype_name)
    pen, scale = {
        "group lasso": (proxlib.GroupLasso(0.7), 1.0),
        "exclusive": (proxlib.ExclusiveLasso(0.9), 0.3),
        "group+exclusive": (proxlib.GroupExclusive(0.8, mu=0.5), 0.5),
    }[penalty]

    def build():
        net = _net(dtype)
        conv2 = torch.nn.Conv2d(3, 5, 3).to(dtype)
        opt = torch.optim.Adam([*net.parameters(), *conv2.parameters()], lr=0.05, betas=(0.8, 0.9))
        prox = pt.ProximalStep(opt, metric="adam")
        prox.add(net[0], pen, grouping="filter", strength=0.4 * scale, label="conv filters")
        prox.add(net[3], pen, grouping="channel", strength=0.3 * scale, label="linear columns")
        prox.add(conv2, pen, grouping="channel", strength=0.3 * scale, label="conv channels")

        def loss(k):
            X, y = _batch(dtype, k)
            return torch.nn.functional.cross_entropy(net(X), y) + conv2(X).square().mean()

        return opt, prox, loss, [net[0].weight, net[3].weight], [net[0].weight, net[3].weight, conv2.weight]

    results, stacked = _metric_steps_on_both_routes(monkeypatch, build)
    assert stacked and all(leaf.shape == (5, 3, 3, 3) for leaf in stacked)  # only the conv's "channel" rows took the copies
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for got, ref in zip(results["auto"], results["torch"]):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol * float(ref.abs().max()))
        assert torch.equal(got == 0, ref == 0)
    if penalty == "group lasso":
        assert any(bool((proxlib.to_rows(r, g) == 0).all(1).any()) for r, g in zip(results["auto"], ("filter", "channel", "channel")))
    else:  # (entries, not whole rows)
        assert any(0 < int((r == 0).sum()) < r.numel() for r in results["auto"])


def test_compiled_optimizer_step_with_the_metric_hook():
    """torch.compile(optimizer.step) with the metric hook attached: the hook
    is a graph break, and its result is the metric prox (d read from the
    compiled optimizer's state) of the weights the compiled step produced."""
    torch._dynamo.reset()
    net = _net(torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    w = net[0].weight
    seen = _snapshot(opt, w)
    prox = pt.ProximalStep(opt, metric="adam")
    prox.add(net[0], proxlib.GroupLasso(0.7), grouping="channel", strength=0.5)
    prox.attach()
    step = torch.compile(opt.step, backend="aot_eager")
    for k in range(3):
        X, y = _batch(torch.float64, k)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        step()
        expected = _direct(proxlib.GroupLasso(0.7), seen[-1], adam_metric(opt, w), 0.05 * 0.5, "channel")
        assert torch.equal(w, expected)
    assert prox.n_steps == 3 and len(seen) == 3
    assert int((w == 0).sum()) > 0


def test_the_metric_changes_the_result():
    """The comparison above can fail: the Euclidean step differs from the metric step."""
    results = []
    for metric in (None, "adam"):
        net = _net(torch.float64)
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        prox = pt.ProximalStep(opt, metric=metric)
        prox.add(net[0], proxlib.GroupLasso(0.7), grouping="channel", strength=0.01)
        prox.attach()
        _loss_step(net, opt, torch.float64, 0)
        results.append(net[0].weight.detach().clone())
    assert not torch.allclose(results[0], results[1], rtol=1e-3, atol=0)


@pytest.mark.parametrize("case", ["group-lasso/channel", "exclusive/filter", "group-exclusive/shape", "weighted-l1/array", "weighted-l2sq/array", "lp-half"])
def test_constant_metric_with_sgd_is_the_euclidean_step(case):
    """SGD has no metric (d = 1); a constant metric delta with strength
    s * delta is the Euclidean step with strength s (the metric kernels
    against the Euclidean kernels: same math, other roundings)."""
    penalty, grouping, _ = CASES[case]
    strength = 1.5 if case == "group-lasso/channel" else 0.3  # some groups/entries zero, not all, with SGD
    for delta in (1.0, 4.0):
        out = []
        for metric in (lambda opt, p, c=delta: torch.full_like(p, c), None):
            net = _net(torch.float64)
            opt = torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
            prox = pt.ProximalStep(opt, metric=metric)
            prox.add(net[0], penalty, grouping=grouping, strength=strength * delta if metric else strength)
            prox.attach()
            for k in range(3):
                _loss_step(net, opt, torch.float64, k)
            out.append(net[0].weight.detach().clone())
        assert (out[0] == 0).sum() == (out[1] == 0).sum()
        if "l2sq" not in case:
            assert 0 < int((out[0] == 0).sum()) < out[0].numel()
        torch.testing.assert_close(out[0], out[1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("penalty, grouping", [
    (proxlib.ExclusiveLasso(1e10), "filter"), (proxlib.GroupExclusive(1e10, 0.3), "shape"),
    (proxlib.GroupLasso(1e10), "channel"), (proxlib.Lp(1e10, 0.5), None),
])
def test_thresholds_beyond_float64_in_the_metric(penalty, grouping):
    """lr * strength * lam beyond float64 (1e310): the step solves the problem
    divided by a power of two, as the public function does, bit for bit.
    The saturated exclusive lasso keeps each filter's largest entries, tiny
    (about 1e-301) but not zero: inf thresholds gave zeros."""
    net = _net(torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    w = net[0].weight
    d = torch.linspace(0.5e10, 2e10, w.numel(), dtype=torch.float64).reshape(w.shape)  # b / d about 1e300
    seen = _snapshot(opt, w)
    prox = pt.ProximalStep(opt, metric=lambda o, p: d)
    strength = 1e303  # lr * strength * lam = 1e310
    prox.add(net[0], penalty, grouping=grouping, strength=strength)
    prox.attach()
    for k in range(2):
        _loss_step(net, opt, torch.float64, k)
        expected = _direct(penalty, seen[-1], d, 1e-3 * strength, grouping)
        assert torch.equal(w, expected)
        if k == 0 and isinstance(penalty, proxlib.ExclusiveLasso):  # (a filter of these may get no gradient after)
            assert int((w != 0).sum()) >= w.shape[0] and float(w.detach().abs().max()) < 1e-290


def test_every_and_explicit_lr():
    """every=k: step lr * strength * k in the metric at that step; step(lr=) likewise."""
    net = _net(torch.float64)
    ref = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    ropt = torch.optim.Adam(ref.parameters(), lr=0.05)
    prox = pt.ProximalStep(opt, every=2, metric="adam")
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter", strength=0.5)
    prox.attach()
    for k in range(4):
        _loss_step(net, opt, torch.float64, k)
        _loss_step(ref, ropt, torch.float64, k)
        if k % 2 == 1:
            w = ref[0].weight
            with torch.no_grad():
                w.copy_(_direct(proxlib.GroupLasso(0.5), w.detach(), adam_metric(ropt, w), 0.05 * 0.5 * 2, "filter"))
        assert torch.equal(net[0].weight, ref[0].weight)
    assert prox.n_steps == 2
    prox.detach()
    prox.step(lr=0.2)
    w = ref[0].weight
    with torch.no_grad():
        w.copy_(_direct(proxlib.GroupLasso(0.5), w.detach(), adam_metric(ropt, w), 0.2 * 0.5, "filter"))
    assert torch.equal(net[0].weight, w)


def test_half_precision_parameter():
    """bfloat16 weights: the prox in float32 of the upcast weight and metric, rounded once."""
    net = _net(torch.float32).to(torch.bfloat16)
    ref = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=0.05, eps=1e-3)
    ropt = torch.optim.Adam(ref.parameters(), lr=0.05, eps=1e-3)
    prox = pt.ProximalStep(opt, metric="adam")
    prox.add(net[0], proxlib.GroupLasso(0.7), grouping="channel")
    prox.attach()
    _loss_step(net, opt, torch.bfloat16, 0)
    _loss_step(ref, ropt, torch.bfloat16, 0)
    w = ref[0].weight
    X = _direct(proxlib.GroupLasso(0.7), w.detach().float(), adam_metric(ropt, w), 0.05, "channel")
    assert torch.equal(net[0].weight, X.to(torch.bfloat16))


# ------------------------------------------------------------------ errors


def _adam_setup(**kw):
    net = _net(torch.float64)
    return net, torch.optim.Adam(net.parameters(), lr=0.05, **kw)


def test_metric_adam_needs_adam():
    net = _net(torch.float64)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="metric='adam' needs a torch.optim.Adam or AdamW optimizer, got SGD"):
        pt.ProximalStep(sgd, metric="adam")
    for other in (torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax):
        with pytest.raises(TypeError, match=other.__name__):
            pt.ProximalStep(other(net.parameters()), metric="adam")
    with pytest.raises(ValueError, match="pass the Adam or AdamW optimizer"):
        pt.ProximalStep(metric="adam")
    _, adam = _adam_setup()
    prox = pt.ProximalStep(adam, metric="adam")
    with pytest.raises(TypeError, match="got SGD"):
        prox.attach(sgd)
    with pytest.raises(TypeError, match="got SGD"):
        prox.step(sgd)


def test_bad_metric_argument():
    _, adam = _adam_setup()
    for bad in ("Adam", "euclidean", 1.0, True):
        with pytest.raises(ValueError, match="metric must be None, 'adam' or a callable"):
            pt.ProximalStep(adam, metric=bad)


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps > 0"):
        pt.ProximalStep(_adam_setup(eps=0.0)[1], metric="adam")
    net, adam = _adam_setup()
    prox = pt.ProximalStep(adam, metric="adam")
    adam.param_groups[0]["eps"] = 0.0
    with pytest.raises(ValueError, match="eps > 0"):
        prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter")


@pytest.mark.parametrize(
    "penalty, exc, match",
    [
        (pt.growl(lambda G: proxlib.owl_weights_oscar(G, 0.3, 0.1)), ValueError, "GrOWL has an exact prox in a diagonal metric only when the metric is constant"),
        (pt.owl(lambda n: proxlib.owl_weights_oscar(n, 0.3, 0.1)), ValueError, "OWL has an exact prox in a diagonal metric only when"),
        (pt.GroupExclusiveSequential(0.8, 0.3), TypeError, "needs one of proxlib's penalties"),
    ],
)
def test_penalties_without_an_exact_metric_prox_are_refused_at_add(penalty, exc, match):
    net, adam = _adam_setup()
    prox = pt.ProximalStep(adam, metric="adam")
    with pytest.raises(exc, match=match):
        prox.add(net[0], penalty, grouping="channel")
    assert prox.terms == []
    pt.ProximalStep(adam).add(net[0], penalty, grouping="channel")  # Euclidean: accepted


def test_no_state_yet_and_bad_callable_output():
    net, adam = _adam_setup()
    prox = pt.ProximalStep(adam, metric="adam")
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter", label="conv")
    net(_batch(torch.float64, 0)[0]).sum().backward()  # (a gradient, but no step taken yet)
    with pytest.raises(ValueError, match="'conv': the optimizer has no Adam state for its tensor yet"):
        prox.step()
    for bad, match in ((lambda o, p: torch.ones(3), r"shape \(6, 3, 3, 3\), got \(3,\)"), (lambda o, p: 1.0, "got float")):
        prox = pt.ProximalStep(adam, metric=bad)
        prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter")
        with pytest.raises(ValueError, match=match):
            prox.step()
    prox = pt.ProximalStep(metric=lambda o, p: torch.ones_like(p))
    prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter")
    with pytest.raises(ValueError, match="needs an optimizer"):
        prox.step(lr=0.1)


def test_check_finite_checks_the_metric():
    net, adam = _adam_setup()
    w0 = net[0].weight.detach().clone()
    for value, match in ((float("nan"), "the metric"), (0.0, "metric must be > 0"), (-1.0, "metric must be > 0")):
        prox = pt.ProximalStep(adam, metric=lambda o, p, v=value: torch.full_like(p, v), check_finite=True)
        prox.add(net[0], proxlib.GroupLasso(0.5), grouping="filter")
        with pytest.raises(ValueError, match=match):
            prox.step()
        assert torch.equal(net[0].weight, w0)


def test_sharded_parameters_are_refused():
    """A DTensor parameter (one-process gloo mesh) with metric='adam': ValueError at add()."""
    code = _procs.ONE_RANK_MESH + r"""
from torch.distributed.tensor import Shard, distribute_tensor
import proxlib, proxlib.torch as pt
w = torch.nn.Parameter(distribute_tensor(torch.randn(4, 3, dtype=torch.float64), mesh, [Shard(0)]))
opt = torch.optim.Adam([w], lr=0.1)
try:
    pt.ProximalStep(opt, metric="adam").add(w, proxlib.GroupLasso(0.5))
except ValueError as e:
    print("refused:", e)
pt.ProximalStep(opt).add(w, proxlib.GroupLasso(0.5))  # Euclidean: accepted
dist.destroy_process_group()
"""
    out = _procs.python(code, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused: proximal steps in an optimizer's metric are not supported on sharded (DTensor) parameters" in out.stdout


def test_readme_metric_snippet_runs():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Proximal steps in a diagonal metric") :]
    start = section.index("```python") + len("```python")
    code = section[start : section.index("```", start)]
    model = torch.nn.Module()
    model.conv2 = torch.nn.Conv2d(3, 4, 3)
    ns = {"torch": torch, "pt": pt, "proxlib": proxlib, "model": model}
    exec(compile(code, "README.md", "exec"), ns)
    opt, prox = ns["opt"], ns["prox"]
    seen = []
    opt.register_step_post_hook(lambda *a: seen.append(model.conv2.weight.detach().clone()))
    prox.attach()  # again, after the snapshot hook (attach replaces the first)
    model.conv2(torch.randn(2, 3, 5, 5)).square().sum().backward()
    opt.step()
    expected = proxlib.from_rows(
        proxlib.prox_group_lasso(proxlib.to_rows(seen[0], "filter"), 1.0, 1e-3 * 1e-2, metric=proxlib.to_rows(adam_metric(opt, model.conv2.weight), "filter")),
        (4, 3, 3, 3),
        "filter",
    )
    assert prox.n_steps == 1 and torch.equal(model.conv2.weight, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adam_metric_is_formed_without_a_host_read(dtype):
    """Fused (and capturable) Adam keep the step count on the parameter's
    device: the metric is formed there (no ``item()``, which on a GPU waits
    for the device, once per tensor and step) with a float64 bias correction
    and a square root, as the fused step forms it: the default formula's
    value to a unit in the last place."""
    from proxlib.torch import adaptive
    from proxlib.torch._opcount import OperationCount

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(300, dtype=dtype))
    q = torch.nn.Parameter(p.detach().clone())
    plain = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999))
    fused = torch.optim.Adam([q], lr=1e-3, betas=(0.9, 0.999), fused=True)
    eps = float(torch.finfo(dtype).eps)
    for _ in range(150):
        g = torch.randn(300, dtype=dtype)
        p.grad, q.grad = g.clone(), g.clone()
        plain.step()
        fused.step()
        state = {"exp_avg_sq": plain.state[p]["exp_avg_sq"], "step": fused.state[q]["step"]}  # the same moments
        with OperationCount() as count:
            d = adaptive.denominator(fused.param_groups[0], state)
        assert "aten._local_scalar_dense.default" not in count.ops
        want = adam_metric(plain, p)
        torch.testing.assert_close(d, want, rtol=2 * eps, atol=0)
    with OperationCount() as count:
        adam_metric(plain, p)
    assert count.ops["aten._local_scalar_dense.default"] == 1  # (the default Adam's step count: on the host already)


def test_a_metric_formed_from_the_parameter_records_no_graph():
    """A callable metric computed from the parameter (``p.abs() + 1``) on a
    step called by hand (outside the optimizer's no_grad) required grad:
    torch warned at the finiteness check ("Converting a tensor with
    requires_grad=True to a scalar") and autograd recorded a graph for each
    step.  The metric is now formed under no_grad; the step is the same."""
    import warnings

    net = _net(torch.float64)
    w = net[0].weight
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    prox = pt.ProximalStep(opt, metric=lambda o, p: p.abs() + 1, check_finite=True)
    prox.add(net[0], proxlib.GroupLasso(0.1), grouping="channel")
    expected = _direct(proxlib.GroupLasso(0.1), w.detach().clone(), w.detach().abs() + 1, 0.5, "channel")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prox.step()
    assert torch.equal(w.detach(), expected)


def test_tensors_adam_never_stepped_are_skipped():
    """A tensor that never had a gradient (an unused branch, an expert not
    routed to yet) has no Adam state: Adam skips it, and the attached step
    raised "the optimizer has no Adam state for its tensor yet" at the first
    optimizer step, stopping the training.  Its terms are skipped now (the
    tensor unchanged, as Adam leaves it); the others get the same prox as
    without the skipped terms, and once the tensor has a state its terms
    run too."""

    def setup(with_unused_terms):
        torch.manual_seed(0)
        used, unused = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
        adam = torch.optim.Adam([*used.parameters(), *unused.parameters()], lr=0.05)
        prox = pt.ProximalStep(adam, metric="adam")
        if with_unused_terms is not None:
            prox.add(used, proxlib.GroupLasso(0.5), label="used")
        if with_unused_terms:
            prox.add(unused, proxlib.GroupLasso(0.5), label="unused")
            prox.add(unused, proxlib.WeightedL1(0.1), label="unused.l1")
        prox.attach()
        return used, unused, adam

    x = torch.randn(2, 4, dtype=torch.float64)
    used, unused, adam = setup(True)
    ref_used, _, ref_adam = setup(False)
    plain_used, _, plain_adam = setup(None)  # (no prox at all)
    U0 = unused.weight.detach().clone()
    for net, opt in ((used, adam), (ref_used, ref_adam), (plain_used, plain_adam)):
        net(x).sum().backward()
        opt.step()  # (the hook's prox: it raised here)
    assert torch.equal(unused.weight.detach(), U0)
    assert torch.equal(used.weight.detach(), ref_used.weight.detach())
    assert not torch.equal(used.weight.detach(), plain_used.weight.detach())  # (its prox ran)
    unused(x).sum().backward()
    adam.step()  # now both have a state: both get their prox
    assert not torch.equal(unused.weight.detach(), U0)


def test_each_parameter_groups_eps_enters_its_metric():
    """The step forms every tensor's metric together (multi-tensor
    operations, grouped by bias correction, eps, device and dtype): two
    parameter groups with different eps must each get their own d =
    sqrt(v_hat) + eps, as adam_metric gives it tensor by tensor."""
    dtype = torch.float64
    net = _net(dtype)
    opt = torch.optim.Adam([{"params": [net[0].weight], "eps": 1e-8}, {"params": [net[3].weight], "eps": 0.5},
                            {"params": [net[0].bias, net[3].bias]}], lr=0.05)
    ws = [net[0].weight, net[3].weight]
    seen = [_snapshot(opt, w) for w in ws]
    prox = pt.ProximalStep(opt, model=net, metric="adam")
    for m in (net[0], net[3]):
        prox.add(m, proxlib.GroupLasso(0.7), grouping="channel", strength=0.5)
    prox.attach()
    _loss_step(net, opt, dtype, 0)
    for w, s in zip(ws, seen):
        expected = _direct(proxlib.GroupLasso(0.7), s[-1], adam_metric(opt, w), 0.05 * 0.5, "channel")
        torch.testing.assert_close(w.detach(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_capturable_adam_metric_is_formed_without_a_host_read(dtype):
    """Capturable Adam, like fused, keeps the step count on the parameter's
    device: its group's metric is formed there as the fused one's (no
    ``item()``), to a unit in the last place of the default formula.
    (Capturable Adam does not step on the CPU: its group and a tensor step
    count are given to ``denominator`` directly.)"""
    from proxlib.torch import adaptive
    from proxlib.torch._opcount import OperationCount

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(300, dtype=dtype))
    plain = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999))
    group = dict(plain.param_groups[0], capturable=True)
    eps = float(torch.finfo(dtype).eps)
    for _ in range(20):
        p.grad = torch.randn(300, dtype=dtype)
        plain.step()
        state = {"exp_avg_sq": plain.state[p]["exp_avg_sq"], "step": plain.state[p]["step"].clone()}
        with OperationCount() as count:
            d = adaptive.denominator(group, state)
        assert "aten._local_scalar_dense.default" not in count.ops
        torch.testing.assert_close(d, adam_metric(plain, p), rtol=2 * eps, atol=0)

"""proxlib.torch.adaptive.adam_metric: Adam's denominator, bit for bit.

The check is torch's own update: after ``optimizer.step()`` from ``w0``,
the parameter must equal ``w0' - lr * m_hat / d`` formed as torch forms it
(``w0'`` is ``w0`` after AdamW's decoupled decay), with ``d`` from
:func:`adam_metric` and ``m_hat = exp_avg / (1 - beta1^t)``.  A ``d`` that is
off by one unit in the last place changes that update for some entries; the
test shows this on the mathematically equal ``sqrt(v / bc2) + eps`` (which
torch does not use) so that the comparison is known to be able to fail.
"""

from __future__ import annotations

import numpy as np
import pytest

import proxlib

torch = pytest.importorskip("torch")

from proxlib.torch.adaptive import adam_metric  # noqa: E402

CONFIGS = [
    (torch.optim.Adam, {}),
    (torch.optim.Adam, dict(amsgrad=True)),
    (torch.optim.Adam, dict(weight_decay=0.05)),  # coupled decay: in the gradient
    (torch.optim.AdamW, dict(weight_decay=0.1)),
    (torch.optim.AdamW, dict(weight_decay=0.1, amsgrad=True)),
    (torch.optim.Adam, dict(foreach=True, betas=(0.8, 0.95), eps=1e-6)),
    (torch.optim.Adam, dict(betas=(torch.tensor(0.9), torch.tensor(0.99)))),
]


def _train(cls, kw, dtype, steps=12, seed=0, check=None):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(7, 5, generator=g, dtype=dtype))
    b = torch.nn.Parameter(torch.randn(5, generator=g, dtype=dtype))
    opt = cls([{"params": [w], "lr": 0.01}, {"params": [b], "lr": 0.003}], **kw)
    for _ in range(steps):
        x = torch.randn(16, 7, generator=g, dtype=dtype)
        loss = torch.tanh(x @ w + b).pow(3).sum()
        opt.zero_grad()
        loss.backward()
        before = {p: p.detach().clone() for p in (w, b)}
        opt.step()
        if check is not None:
            check(opt, before)
    return opt, w, b


def _expected(opt, p, w0, d):
    group = next(gr for gr in opt.param_groups if any(q is p for q in gr["params"]))
    state = opt.state[p]
    lr, wd = group["lr"], group["weight_decay"]
    beta1 = group["betas"][0]
    t = state["step"].item()
    if group.get("decoupled_weight_decay", False) and wd != 0:
        w0 = w0.mul(1 - lr * wd)
    bias_correction1 = 1 - beta1**t
    return w0.addcdiv(state["exp_avg"], d, value=-(lr / bias_correction1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls, kw", CONFIGS)
def test_one_adam_step_is_w_minus_lr_mhat_over_d(cls, kw, dtype):
    def check(opt, before):
        for p, w0 in before.items():
            d = adam_metric(opt, p)
            assert d.shape == p.shape and d.dtype == p.dtype and d.device == p.device
            assert not d.requires_grad
            torch.testing.assert_close(_expected(opt, p, w0, d), p.detach(), rtol=0, atol=0)

    _train(cls, kw, dtype, check=check)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_comparison_can_fail(dtype):
    # sqrt(v / (1 - beta2^t)) + eps is the same number in exact arithmetic but
    # not torch's rounding: the update it predicts differs somewhere
    mismatches = 0

    def check(opt, before):
        nonlocal mismatches
        for p, w0 in before.items():
            state, group = opt.state[p], opt.param_groups[0 if p.dim() == 2 else 1]
            d_other = (state["exp_avg_sq"] / (1 - group["betas"][1] ** state["step"].item())).sqrt() + group["eps"]
            mismatches += int(not torch.equal(_expected(opt, p, w0, d_other), p.detach()))

    _train(torch.optim.Adam, {}, dtype, steps=30, check=check)
    assert mismatches > 0


def test_metric_is_sqrt_vhat_plus_eps_to_rounding():
    opt, w, _ = _train(torch.optim.AdamW, dict(weight_decay=0.1, eps=1e-3), torch.float64)
    st = opt.state[w]
    beta2 = opt.param_groups[0]["betas"][1]
    v_hat = st["exp_avg_sq"] / (1 - beta2 ** st["step"].item())
    torch.testing.assert_close(adam_metric(opt, w), v_hat.sqrt() + 1e-3, rtol=4e-16, atol=0)


def test_amsgrad_uses_the_running_maximum():
    opt, w, _ = _train(torch.optim.Adam, dict(amsgrad=True), torch.float64, steps=20)
    st = opt.state[w]
    assert not torch.equal(st["max_exp_avg_sq"], st["exp_avg_sq"])  # the case where it matters
    bc2 = (1 - opt.param_groups[0]["betas"][1] ** st["step"].item()) ** 0.5
    torch.testing.assert_close(adam_metric(opt, w), st["max_exp_avg_sq"].sqrt() / bc2 + opt.param_groups[0]["eps"], rtol=0, atol=0)


def test_metric_prox_after_an_adam_step_matches_the_direct_computation():
    # the use it is for: the prox of lr * strength * Omega in the metric d
    opt, w, _ = _train(torch.optim.Adam, {}, torch.float64)
    d = adam_metric(opt, w)
    lr, strength = opt.param_groups[0]["lr"], 0.5
    X = proxlib.prox_group_lasso(w.detach(), 1.0, lr * strength, metric=d)
    ref = proxlib.prox_group_lasso(w.detach().numpy(), 1.0, lr * strength, metric=d.numpy())
    np.testing.assert_allclose(X.numpy(), ref, rtol=1e-13, atol=1e-15)


def test_errors():
    w = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([w])
    with pytest.raises(ValueError, match="after optimizer.step"):
        adam_metric(opt, w)  # no state yet
    with pytest.raises(ValueError, match="not in any"):
        adam_metric(opt, torch.nn.Parameter(torch.randn(3)))
    with pytest.raises(TypeError, match="Adam or AdamW"):
        adam_metric(torch.optim.SGD([w], lr=0.1), w)
    with pytest.raises(TypeError, match="Adam or AdamW"):
        adam_metric(torch.optim.NAdam([w]), w)  # same state names, another denominator
    with pytest.raises(TypeError, match="optimizer"):
        adam_metric(object(), w)
    z = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        adam_metric(torch.optim.Adam([z]), z)


def test_assume_adam_for_an_optimizer_with_adams_state():
    class MyAdam(torch.optim.Optimizer):  # a third-party optimizer keeping Adam's state
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8))

    w = torch.nn.Parameter(torch.ones(3))
    opt = MyAdam([w])
    opt.state[w] = {"step": torch.tensor(2.0), "exp_avg_sq": torch.full((3,), 4.0)}
    with pytest.raises(TypeError):
        adam_metric(opt, w)
    d = adam_metric(opt, w, assume_adam=True)
    torch.testing.assert_close(d, torch.full((3,), 2.0 / (1 - 0.999**2) ** 0.5 + 1e-8))


def test_one_element_tensor_betas_set_after_construction_are_squeezed():
    """torch's Adam squeezes one-element tensor betas (``_to_scalar``) in its
    constructor and again at every step, so betas set in ``param_groups``
    afterwards (a scheduler, a loaded state) still work; the metric squeezes
    them as well: of a scalar parameter it is a scalar, and it reproduces the
    step (a (1,)-shaped beta2 made it of shape (1,))."""
    p = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=0.01)
    opt.param_groups[0]["betas"] = (torch.tensor([0.9], dtype=torch.float64), torch.tensor([0.99], dtype=torch.float64))
    for g in (0.3, -0.2, 0.5):
        w0 = p.detach().clone()
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        d = adam_metric(opt, p)
        assert d.shape == p.shape == ()
        bc1 = 1 - opt.param_groups[0]["betas"][0].squeeze() ** opt.state[p]["step"].item()  # (as torch's step forms it)
        torch.testing.assert_close(w0.addcdiv(opt.state[p]["exp_avg"], d, value=-(0.01 / bc1)), p.detach(), rtol=0, atol=0)


def test_metrics_formed_together_equal_each_one_bit_for_bit():
    """``denominators`` (a step's metrics, the step counts read together)
    equals ``denominator`` tensor by tensor, bit for bit, with tensors
    stepped different numbers of times (their counts differ), in float32
    and float64, in two groups of other betas."""
    from proxlib.torch import adaptive

    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3, 4, dtype=dt)) for dt in (torch.float32, torch.float64, torch.float32)]
    opt = torch.optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "betas": (0.8, 0.95)}], lr=1e-2)
    for k in range(5):
        for j, p in enumerate(ps):
            p.grad = torch.randn_like(p) if k < 2 + j else None  # (stepped 2, 3 and 4 times)
        opt.step()
    entries = [(adaptive._group_of(opt, p), opt.state[p]) for p in ps]
    assert len({float(s["step"]) for _, s in entries}) == 3
    together = adaptive.denominators(entries)
    for d, entry in zip(together, entries):
        one = adaptive.denominator(*entry)
        assert d.dtype == one.dtype and torch.equal(d, one)

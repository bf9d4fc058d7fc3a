"""The training procedures' options: keep_zero, every N steps / per epoch, warm-up,
DataLoaders, loss functions, schedulers, pruning amounts, the re-weighting guard."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import _procs  # noqa: E402
import proxlib  # noqa: E402
import proxlib.torch as pt  # noqa: E402


def _toy(n=256, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, 0] - X[:, 1] > 0).long()
    return X, y


def _mlp(d=8, h=16, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))


# ------------------------------------------------------------------ keep_zero


@pytest.mark.parametrize("make_opt, metric", [
    (lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9), None),
    (lambda ps: torch.optim.Adam(ps, lr=0.05), None),
    (lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1, amsgrad=True), None),
    (lambda ps: torch.optim.Adam(ps, lr=0.05), "adam"),  # the prox in Adam's metric, then the frozen rows
], ids=["sgd-momentum", "adam", "adamw-amsgrad", "adam-metric"])
def test_keep_zero_rows_stay_zero_and_their_optimizer_state_is_cleared(make_opt, metric):
    X, y = _toy()
    X[:, 4:] = 0  # four unused inputs: their rows only shrink
    net = _mlp()
    opt = make_opt(net.parameters())
    prox = pt.ProximalStep(opt, model=net, keep_zero=True, metric=metric)
    # in Adam's metric the step is lr * strength / d, d ~ |gradient|: a much smaller strength
    prox.add(net[0], proxlib.GroupLasso(1.0), grouping="channel", strength=1.0 if metric is None else 1e-3)
    prox.attach()
    seen = None
    for step in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[:64]), y[:64]).backward()
        opt.step()
        mask = prox.frozen().get("0.weight:GroupLasso[channel]")
        W = net[0].weight.detach()
        if mask is None:
            continue
        # frozen entries are whole input rows (columns of the Linear weight), exactly zero
        assert torch.equal(mask, mask[:1].expand_as(mask))
        assert torch.all(W[mask] == 0)
        for v in opt.state[net[0].weight].values():
            if isinstance(v, torch.Tensor) and v.shape == W.shape:
                assert torch.all(v[mask] == 0)
        if seen is not None:
            assert torch.all(mask[seen])  # once frozen, always frozen
        seen = mask
    assert seen is not None and bool(seen[0, 4:].all()) and not bool(seen[0].all())  # the unused inputs frozen, not every input


@pytest.mark.parametrize("make_opt, scalars", [
    (lambda ps: torch.optim.Adam(ps, lr=0.1), ("step",)),
    (lambda ps: torch.optim.NAdam(ps, lr=0.1), ("step", "mu_product")),
    (lambda ps: torch.optim.ASGD(ps, lr=0.1), ("step", "eta", "mu")),
], ids=["adam", "nadam", "asgd"])
def test_keep_zero_leaves_the_scalar_state_of_a_frozen_0d_parameter(make_opt, scalars):
    """keep_zero clears the per-entry optimizer state of frozen entries and
    leaves scalar state such as ``step`` alone; on a 0-d parameter (a
    learnable scale) the scalar state has the parameter's shape and was
    zeroed too: Adam's step count of the frozen scalar read 0 after every
    step.  The per-entry state is still cleared."""
    s = torch.nn.Parameter(torch.tensor(0.01))
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = make_opt([s, w])
    prox = pt.ProximalStep(opt, keep_zero=True)
    prox.add(s, proxlib.WeightedL1(1.0), label="s")
    prox.attach()
    for _ in range(3):
        opt.zero_grad()
        ((s - 0.005) ** 2 + (w**2).sum()).backward()
        opt.step()
        assert prox.frozen()["s"].item() and s.item() == 0.0
        for k in scalars:
            assert torch.equal(opt.state[s][k], opt.state[w][k]), k  # as the unfrozen tensor's
        for k, v in opt.state[s].items():
            if k not in scalars:
                assert v.item() == 0.0, k


def test_without_keep_zero_a_zeroed_row_regrows_through_momentum():
    # the behaviour keep_zero exists to prevent: momentum moves a row the prox zeroed
    for keep in (False, True):
        lin = torch.nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[1.0, 0.12, 2.0], [1.0, 0.12, 2.0]]))
        opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
        prox = pt.ProximalStep(opt, keep_zero=keep)
        prox.add(lin, proxlib.GroupLasso(1.0), grouping="channel", strength=1.0)  # threshold 0.1 per step
        prox.attach()
        x = torch.tensor([[0.0, 1.0, 0.0]])
        for i in range(3):
            opt.zero_grad()
            # step 0 pushes input 1 down to 0.02 (then zeroed by the prox) and loads the momentum; no gradient after
            (lin(x).sum() * (1.0 if i == 0 else 0.0)).backward()
            opt.step()
            if i == 0:
                assert torch.all(lin.weight.detach()[:, 1] == 0)
        col = lin.weight.detach()[:, 1]
        if keep:
            assert torch.all(col == 0)
        else:
            assert torch.all(col < 0)  # momentum carried it through zero


def test_keep_zero_elementwise_and_state_dict_round_trip():
    lin = torch.nn.Linear(6, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=1.0, momentum=0.9)
    prox = pt.ProximalStep(opt, keep_zero=True, every=2)
    prox.add(lin, proxlib.WeightedL1(1.0), strength=0.2, label="l1")
    prox.attach()
    for _ in range(4):
        opt.zero_grad()
        lin(torch.randn(5, 6)).pow(2).mean().backward()
        opt.step()
    assert prox.n_steps == 2
    m = prox.frozen()["l1"]
    assert m.shape == lin.weight.shape and m.any()
    assert torch.all(lin.weight.detach()[m] == 0)
    state = prox.state_dict()
    fresh = pt.ProximalStep(torch.optim.SGD(lin.parameters(), lr=1.0), keep_zero=True)
    fresh.add(lin, proxlib.WeightedL1(1.0), strength=0.2, label="l1")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.frozen()["l1"], m)
    bad = dict(state, frozen={"l1": torch.zeros(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        fresh.load_state_dict(bad)
    # a checkpoint with frozen groups loaded into keep_zero=False was accepted
    # and its masks never applied: the groups were free to regrow
    plain = pt.ProximalStep(torch.optim.SGD(lin.parameters(), lr=1.0))
    plain.add(lin, proxlib.WeightedL1(1.0), strength=0.2, label="l1")
    with pytest.raises(ValueError, match=r"frozen groups .*keep_zero=False.*\['l1'\]"):
        plain.load_state_dict(state)
    assert plain.n_steps == 0  # nothing changed
    plain.load_state_dict(dict(state, frozen={"l1": torch.zeros_like(m)}))  # nothing frozen: nothing lost


def test_keep_zero_step_without_hook_enforces_too():
    lin = torch.nn.Linear(4, 3, bias=False)
    prox = pt.ProximalStep(keep_zero=True)
    prox.add(lin, proxlib.GroupLasso(1.0), grouping="channel", strength=1.0)
    with torch.no_grad():
        lin.weight[:, 2] = 0.01
    prox.step(lr=1.0)
    assert torch.all(prox.frozen()[next(iter(prox.frozen()))][:, 2])
    with torch.no_grad():
        lin.weight[:, 2] = 5.0  # something wrote into a frozen row
    prox.step(lr=1e-9)
    assert torch.all(lin.weight[:, 2] == 0)


def test_keep_zero_freezes_nothing_at_a_step_of_zero():
    # a warm-up from lr 0 (or strength 0) runs no prox, yet every zero row of
    # the term was frozen: a zero-initialised head stayed zero for good
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))  # (no dead unit)
    torch.nn.init.zeros_(net[2].weight)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: min(1.0, e / 3))
    prox = pt.ProximalStep(opt, model=net, keep_zero=True)
    prox.add(net[2], proxlib.GroupLasso(1e-4), grouping="channel")
    off = prox.add(net[0], proxlib.GroupLasso(1.0), grouping="channel", strength=0.0)
    with torch.no_grad():
        net[0].weight[:, 1] = 0
    prox.attach()
    X, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
        sched.step()
    frozen = prox.frozen()
    assert not frozen["2.weight:GroupLasso[channel]"].any() and bool((net[2].weight.detach() != 0).all())
    assert off.label not in frozen or not frozen[off.label].any()


def test_keep_zero_masks_of_a_removed_term_do_not_outlive_it():
    # a term removed from prox.terms left its frozen mask under its label: a
    # new term of that label (on another tensor) was zeroed by it at its
    # first step, and state_dict() saved it (a fresh ProximalStep with the
    # same terms refused it: 'frozen masks for unknown terms')
    a, b = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(4, 3, bias=False)
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=1.0)
    prox = pt.ProximalStep(opt, keep_zero=True)
    old = prox.add(a, proxlib.GroupLasso(10.0), grouping="channel", label="gl")
    prox.add(a, proxlib.WeightedL1(1e-9), label="kept")
    prox.step()
    assert torch.all(a.weight == 0) and prox.frozen()["gl"].all()
    prox.terms.remove(old)
    assert set(prox.frozen()) == {"kept"}
    fresh = pt.ProximalStep(opt, keep_zero=True)
    fresh.add(a, proxlib.WeightedL1(1e-9), label="kept")
    fresh.load_state_dict(prox.state_dict())
    W = b.weight.detach().clone()
    prox.add(b, proxlib.GroupLasso(1e-6), grouping="channel", label="gl")
    prox.step(lr=1e-9)
    assert torch.equal(b.weight.detach(), proxlib.prox_group_lasso(proxlib.to_rows(W, "channel"), 1e-6, 1e-9).T)


# ------------------------------------------------------------------ fit, DataLoader, scheduler


def test_fit_accepts_a_dataloader_loss_and_scheduler():
    X, y = _toy()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    net = _mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    seen = []
    loss_fn = lambda out, t: (seen.append(out.shape[0]), torch.nn.functional.cross_entropy(out, t))[1]  # noqa: E731
    losses = pt.fit(net, loader, opt, epochs=3, loss_fn=loss_fn, scheduler=sched)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert sum(seen) == 3 * 256 and len(seen) == 3 * 8
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.5**3)
    assert pt.evaluate(net, loader) == pytest.approx(pt.evaluate(net, X, y))
    # per-step scheduling
    opt2 = torch.optim.SGD(net.parameters(), lr=1.0)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.9)
    pt.fit(net, X, y, opt2, epochs=1, batch_size=64, scheduler=sched2, scheduler_interval="step")
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.9**4)


def test_fit_rejects_bad_data():
    net = _mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = _toy()
    with pytest.raises(TypeError, match="y"):
        pt.fit(net, X, None, opt)
    with pytest.raises(TypeError, match="iterator"):
        pt.fit(net, iter([(X, y)]), opt)
    with pytest.raises(ValueError, match="same number"):
        pt.fit(net, X, y[:10], opt)
    with pytest.raises(TypeError, match="optimizer"):
        pt.fit(net, X, y, "sgd")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    with pytest.raises(TypeError, match=r"^data: y is only used with a tensor of inputs \(a DataLoader yields its own targets\)$"):
        pt.fit(net, loader, y, opt)
    with pytest.raises(TypeError, match=r"^data must be a tensor of inputs \(with y\), a tuple \(X, y\) or a DataLoader, got int$"):
        pt.fit(net, 3, opt)
    with pytest.raises(ValueError, match="^scheduler_interval must be 'epoch' or 'step', got 'batch'$"):
        pt.fit(net, X, y, opt, scheduler_interval="batch")
    with pytest.raises(TypeError, match=r"^test must be \(X_test, y_test\) or a DataLoader, got a tuple of 3$"):
        pt.growl_two_stage(net, [net[0]], X, y, weights=lambda G: np.linspace(1, 0, G), make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                           epochs=1, retrain_epochs=1, test=(X, y, y))

    class Batches:  # (re-iterable, without a length)
        def __iter__(self):
            return iter([(X, y)])

    with pytest.raises(TypeError, match="^the prox once per epoch needs the number of batches per epoch"):
        pt.growl_two_stage(net, [net[0]], Batches(), weights=lambda G: np.linspace(1, 0, G),
                           make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1), epochs=1, retrain_epochs=1, prox_every="epoch")
    with pytest.raises(TypeError, match=r"^layers: 'act' \(ReLU\) has no weight tensor to tie$"):
        pt.growl_two_stage(net, {"act": net[1]}, X, y, weights=lambda G: np.linspace(1, 0, G),
                           make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1), epochs=1, retrain_epochs=1)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"^amount has no fraction for layer\(s\) \['out'\]$"):
        pt.affine_scaling_prune(net, {"hidden": net[0], "out": net[2]}, X, y, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                epochs=1, retrain_epochs=1, amount={"hidden": 0.5})
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))  # (refused before any training)


def test_fit_takes_a_tuple_of_tensors_as_x_and_y_and_advances_progress_per_step():
    """fit(model, (X, y), opt) is fit(model, X, y, opt): the same batches
    from the same generator, so the same weights bit for bit; ``progress``
    gets one update per optimizer step."""
    X, y = _toy()
    nets = []
    for args in (((X, y),), (X, y)):
        torch.manual_seed(0)
        net = _mlp()
        opt = torch.optim.SGD(net.parameters(), lr=0.2)

        class Progress:
            n = 0

            def update(self, k):
                self.n += k

        bar = Progress()
        pt.fit(net, *args, opt, epochs=2, batch_size=48, generator=torch.Generator().manual_seed(3), progress=bar)
        assert bar.n == 2 * math.ceil(X.shape[0] / 48)
        nets.append(net)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))


def test_fit_and_evaluate_on_no_samples_are_nan_not_zero():
    # an epoch without a batch reported a mean loss of 0.0 (a perfect fit) and
    # evaluate on no samples an accuracy of 0.0
    net = _mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = _toy(n=8)
    dropped = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16, drop_last=True)
    before = [p.detach().clone() for p in net.parameters()]
    losses = pt.fit(net, dropped, opt, epochs=2)
    assert len(losses) == 2 and all(np.isnan(v) for v in losses)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    assert np.isnan(pt.evaluate(net, X[:0], y[:0])) and np.isnan(pt.evaluate(net, dropped))
    assert pt.evaluate(net, X, y) == pytest.approx(float((net(X).argmax(1) == y).float().mean()))
    assert np.isfinite(pt.fit(net, X, y, opt, batch_size=16)[0])


def test_fit_and_two_stage_step_a_reduce_on_plateau_with_the_training_loss():
    # ReduceLROnPlateau.step() needs a metric: fit raised a TypeError after the first epoch
    X, y = _toy(n=64)
    net = _mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = []

    class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics):
            seen.append(metrics)
            super().step(metrics)

    losses = pt.fit(net, X, y, opt, epochs=3, batch_size=16, scheduler=Plateau(opt, patience=0, factor=0.5))
    assert seen == pytest.approx(losses)
    seen.clear()
    pt.fit(net, X, y, opt, epochs=1, batch_size=16, scheduler=Plateau(opt), scheduler_interval="step")
    assert len(seen) == 4 and all(isinstance(v, float) for v in seen)
    seen.clear()
    net = _mlp()
    r = pt.two_stage(net, {"fc1": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
                     configure=lambda prox: prox.add(net[0], proxlib.GroupLasso(0.01), grouping="channel"),
                     epochs=2, retrain_epochs=1, batch_size=16, prox_every=3, make_scheduler=lambda o: Plateau(o))
    assert seen == pytest.approx(r.losses)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fit_mean_loss_of_a_low_precision_model_is_summed_in_float32(dtype):
    # the batch losses were summed in the model's dtype: in bfloat16 the mean of
    # 128 batch losses came out 5% low
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(4096, 8, generator=g).to(dtype), torch.randint(0, 3, (4096,), generator=g)
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 3).to(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # the same model for every batch
    gen = torch.Generator().manual_seed(1)
    (loss,) = pt.fit(net, X, y, opt, batch_size=32, generator=gen)
    with torch.no_grad():
        perm = torch.randperm(4096, generator=torch.Generator().manual_seed(1))
        batches = [torch.nn.functional.cross_entropy(net(X[i]), y[i]) for i in perm.split(32)]
        expected = sum(float(b) for b in batches) / len(batches)  # each batch loss as fit sees it, summed exactly
    assert loss == pytest.approx(expected, rel=1e-6)


class _Counter:
    """A ProximalStep stand-in penalty that records the steps it is given."""

    def __init__(self):
        self.steps = []

    def prox(self, v, step=1.0):
        self.steps.append(step)
        return v

    def value(self, x):
        return 0.0


def test_two_stage_warmup_prox_every_epoch_and_dataloader():
    X, y = _toy(n=200)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=50, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    net = _mlp()
    pen = _Counter()
    made = []

    def make_optimizer(ps):
        made.append(torch.optim.SGD(ps, lr=0.1))
        return made[-1]

    scheds = []

    def make_scheduler(opt):
        scheds.append(torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
        return scheds[-1]

    r = pt.two_stage(net, {"fc1": net[0]}, loader, make_optimizer=make_optimizer,
                     configure=lambda prox: prox.add(net[0], pen, strength=2.0), epochs=5, warmup_epochs=2,
                     retrain_epochs=1, prox_every="epoch", keep_zero=True, make_scheduler=make_scheduler, test=loader)
    assert r.prox_every == 4  # batches per epoch
    # 3 prox epochs, one prox each, step = lr (halved each epoch, warm-up included) * 4 * strength
    assert pen.steps == pytest.approx([0.1 * 0.5**e * 4 * 2.0 for e in (2, 3, 4)])
    assert len(made) == 2 and len(scheds) == 2
    assert r.frozen_entries == {"Linear.weight:_Counter": 0}
    with pytest.raises(ValueError, match="warmup_epochs"):
        pt.two_stage(net, {}, loader, make_optimizer=make_optimizer, epochs=1, warmup_epochs=2, retrain_epochs=0)


def test_two_stage_keep_zero_prunes_more_permanently():
    # the same run with and without keep_zero: the frozen rows are zero at the end of stage 1
    X, y = _toy(n=256, d=12)
    out = {}
    for keep in (False, True):
        net = _mlp(d=12)
        r = pt.growl_two_stage(net, {"fc1": net[0]}, X, y, weights=lambda G: proxlib.owl_weights_stairwise(G, 0.3, 0.02, G // 2),
                               make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), epochs=8, retrain_epochs=1,
                               batch_size=32, keep_zero=keep, prox_every=4, generator=torch.Generator().manual_seed(1))
        out[keep] = r
    frozen = out[True].frozen_entries["fc1.growl"]
    assert frozen == out[True].metrics_trained["fc1"].zero_rows * 16 > 0
    assert out[False].frozen_entries is None


def test_two_stage_ends_stage_one_with_a_proximal_step():
    """Where prox_every = N does not divide stage 1's optimizer steps, the r
    steps after the last proximal step get theirs (step lr * r * strength,
    the lr of the last epoch: before the scheduler's step), right after the
    last optimizer step, so the tying sees the prox's zero rows: 8 of the 9
    noise inputs here (none without that last step: the last SGD steps move
    every zeroed column off zero)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(256, 3, generator=g)
    X = torch.cat([base, 0.05 * torch.randn(256, 9, generator=g)], 1)  # inputs 3..11: noise
    y = (base @ torch.tensor([1.0, -1.0, 0.5]) > 0).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    r = pt.two_stage(net, {"fc1": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
                     configure=lambda prox: prox.add(net[0], proxlib.GroupLasso(0.3), grouping="channel"),
                     epochs=3, retrain_epochs=0, batch_size=32, prox_every=5, generator=torch.Generator().manual_seed(1))
    zero_columns = int((r.weights_trained["fc1"].abs().sum(0) == 0).sum())
    assert zero_columns == r.metrics_trained["fc1"].zero_rows == int((r.tying["fc1"].labels < 0).sum()) == 8
    # the steps: 24 optimizer steps (8 per epoch), a prox after steps 5, 10, 15, 20 and the last 4
    pen = _Counter()
    made = []

    def make_optimizer(ps):
        made.append(torch.optim.SGD(ps, lr=0.1))
        return made[-1]

    net = _mlp()
    pt.two_stage(net, {"fc1": net[0]}, *_toy(n=256), make_optimizer=make_optimizer, epochs=4, warmup_epochs=1,
                 configure=lambda prox: prox.add(net[0], pen, strength=2.0), retrain_epochs=0, batch_size=32,
                 prox_every=5, make_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    lrs = [0.05, 0.025, 0.025, 0.0125, 0.0125]  # the epoch of each prox (after the warm-up: lr halved once)
    assert pen.steps == pytest.approx([lr * n * 2.0 for lr, n in zip(lrs, (5, 5, 5, 5, 4))])
    assert made[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)  # the scheduler stepped after every epoch


# ------------------------------------------------------------------ pruning amounts


def test_magnitude_prune_per_layer_list_and_global():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(10, 10), torch.nn.Linear(10, 4)
    with torch.no_grad():
        b.weight.copy_(10 + torch.rand(4, 10))  # b's weights are all larger than a's
    masks = pt.magnitude_prune([a, b], amount=[0.5, 0.25])
    assert [int((m == 0).sum()) for m in masks] == [50, 10]
    a2, b2 = torch.nn.Linear(10, 10), torch.nn.Linear(10, 4)
    with torch.no_grad():
        a2.weight.copy_(a.weight_orig)
        b2.weight.copy_(b.weight_orig)
    masks = pt.magnitude_prune([a2, b2], amount=0.5, scope="global")
    assert [int((m == 0).sum()) for m in masks] == [70, 0]  # 70 of 140 weights, all from the small layer
    with pytest.raises(ValueError, match="one amount"):
        pt.magnitude_prune([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)], amount=[0.1, 0.2], scope="global")
    with pytest.raises(ValueError, match="2 modules"):
        pt.magnitude_prune([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)], amount=[0.1])
    with pytest.raises(ValueError, match="scope"):
        pt.magnitude_prune([torch.nn.Linear(2, 2)], amount=0.1, scope="net")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pt.magnitude_prune([torch.nn.Linear(2, 2)], amount=np.float32(1.5))
    # per-module fractions as an array or a tensor (refused as "amount must lie in [0, 1], got
    # array([0.5, 0.25])"), one number as a 0-d tensor
    for am in (np.array([0.5, 0.25]), torch.tensor([0.5, 0.25])):
        masks = pt.magnitude_prune([torch.nn.Linear(10, 10), torch.nn.Linear(10, 4)], amount=am)
        assert [int((m == 0).sum()) for m in masks] == [50, 10]
    assert int((pt.magnitude_prune([torch.nn.Linear(10, 4)], amount=torch.tensor(0.5))[0] == 0).sum()) == 20
    with pytest.raises(ValueError, match="2 modules"):
        pt.magnitude_prune([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)], amount=np.array([0.1]))
    # no modules: no masks, in either scope (global raised torch.cat's "expected a non-empty list")
    assert pt.magnitude_prune([], amount=0.5) == [] and pt.magnitude_prune([], amount=0.5, scope="global") == []


def test_magnitude_prune_checks_threshold_and_parametrizations_first():
    """``threshold`` must be a finite number >= 0 (NaN pruned every weight);
    a module whose weight has a parametrization other than AffineScaling
    (TiedRows) is refused naming it, not as "no AffineScaling", and before
    any module is changed (the AffineScaling of the first one not baked)."""
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="threshold"):
            pt.magnitude_prune([torch.nn.Linear(3, 2)], threshold=bad)
    with pytest.raises(TypeError, match="threshold"):
        pt.magnitude_prune([torch.nn.Linear(3, 2)], threshold="0.1")
    scaled, tied = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    pt.affine_scaling(scaled)
    pt.tie_rows(tied, np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"Linear.weight has the parametrization\(s\) \['TiedRows'\]"):
        pt.magnitude_prune([scaled, tied], threshold=0.1)
    assert torch.nn.utils.parametrize.is_parametrized(scaled, "weight") and not hasattr(scaled, "weight_mask")
    masks = pt.magnitude_prune([scaled], threshold=0.0)  # |w| <= 0 pruned: the exact zeros only
    assert bool(masks[0].all())


def test_magnitude_prune_checks_every_module_has_the_tensor_first():
    """A module without ``<name>`` (a ReLU in the list, a bias-free layer's
    ``bias``) is refused naming it before any module is changed: it raised
    an AttributeError after the first module's AffineScaling was baked."""
    for bad, name in ((torch.nn.ReLU(), "weight"), (torch.nn.Linear(4, 3, bias=False), "bias")):
        scaled = torch.nn.Linear(4, 3)
        pt.affine_scaling(scaled, name)
        with pytest.raises(TypeError, match=f"has no tensor named '{name}'"):
            pt.magnitude_prune([scaled, bad], amount=0.5, name=name)
        assert torch.nn.utils.parametrize.is_parametrized(scaled, name) and not hasattr(scaled, f"{name}_mask")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        pt.magnitude_prune([torch.nn.Linear(4, 3).weight], amount=0.5)


def test_schedule_load_state_dict_checks_every_first():
    """AffineScalingSchedule.load_state_dict refuses ``every`` < 1 (as the
    constructor does) and bad counters, before changing anything."""
    lin = torch.nn.Linear(3, 2)
    pt.affine_scaling(lin)
    sched = pt.AffineScalingSchedule([lin], every=2)
    sched.step()
    good = sched.state_dict()
    for key, bad in (("every", 0), ("every", -1), ("every", 2.5), ("every", True), ("n_steps", -1), ("n_held", 1.5)):
        with pytest.raises((ValueError, TypeError), match=key):
            sched.load_state_dict(dict(good, **{key: bad}))
        assert sched.state_dict() == good
    with pytest.raises(ValueError, match="every"):
        pt.AffineScalingSchedule([lin], every=0)
    sched.load_state_dict(dict(good, every=3, n_steps=2))
    assert sched.step() and not sched.step()  # the 3rd step re-weights, the 4th not


def test_affine_scaling_prune_per_layer_amounts_cycle_and_dataloader():
    X, y = _toy(n=200, d=10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=40, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    net = _mlp(d=10)
    seen = []
    r = pt.affine_scaling_prune(net, {"a": net[0], "b": net[2]}, loader, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.3),
                                rule="focuss", tau=1e-3, every="epoch", cycle=True, epochs=4, amount={"a": 0.8, "b": 0.5},
                                retrain_epochs=1, test=loader, on_reweight=lambda s: seen.append(s.n_reweights))
    assert r.n_reweights == 4 and seen == [1, 2, 3, 4]
    assert r.metrics["a"].sparsity == pytest.approx(0.8, abs=0.01) and r.metrics["b"].sparsity == pytest.approx(0.5, abs=0.04)


# ------------------------------------------------------------------ the re-weighting guard


def _grown(guard: bool, n_reweights: int = 40):
    """Greedy l1 re-weighting after training left |q| = 1.3 > 1: unguarded, each re-weighting
    multiplies theta by |q| + tau / omega > 1.3 (theta_new = q (|theta| + tau))."""
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.fill_(0.2)
    pt.affine_scaling(lin)
    pt.reweight(lin, rule="l1", tau=1e-3, guard=guard)  # first: rescale, q = theta / omega
    q = lin.parametrizations.weight.original
    with torch.no_grad():
        q.mul_(1.3)  # what training did to q (theta = 0.2 -> 0.26)
    held = 0
    for _ in range(n_reweights):
        held += pt.reweight(lin, rule="l1", tau=1e-3, guard=guard)
    return lin.weight.detach(), held


def test_guard_keeps_greedy_reweighting_from_growing_weights():
    W, held = _grown(guard=False)
    assert held == 0
    assert float(W.abs().max()) > 1e3  # the blow-up: 0.26 * 1.3^40 ~ 9e3
    W, held = _grown(guard=True)
    # the first greedy re-weighting held every entry back (q = theta / omega_new < 1 from then on,
    # so later ones keep theta as it is): theta only moved through training (x1.3 on q once)
    assert held == 12
    assert float(W.abs().max()) <= 0.2 * 1.3 * (1 + 1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_guard_never_increases_a_magnitude_not_even_by_rounding(dtype):
    # the held entries get q = theta / omega_new, and (theta / omega_new) * omega_new
    # rounded one unit above |theta| for a few of them (of 2000 here); in half precision the
    # guard compared in float32 what the forward computes as half(q) * half(omega)
    torch.manual_seed(0)
    lin = torch.nn.Linear(50, 40).to(dtype)
    pt.affine_scaling(lin)
    pt.reweight(lin, rule="l1", tau=1e-3)  # first: rescale
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_((torch.rand(40, 50) * 3).to(dtype))
    theta = lin.weight.detach().clone()
    assert pt.reweight(lin, rule="l1", tau=1e-3) > 0
    assert torch.all(lin.weight.detach().abs() <= theta.abs())


def test_guard_lets_weights_shrink_and_matches_greedy_otherwise():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    b.load_state_dict(a.state_dict())
    for lin in (a, b):
        pt.affine_scaling(lin)
        pt.reweight(lin, rule="focuss", p=0.5, tau=1e-4)
        with torch.no_grad():
            lin.parametrizations.weight.original.mul_(0.5)  # |q| shrank: greedy shrinks theta
    theta = a.weight.detach().clone()
    assert pt.reweight(a, rule="focuss", p=0.5, tau=1e-4, guard=True) == 0
    pt.reweight(b, rule="focuss", p=0.5, tau=1e-4, guard=False)
    assert torch.equal(a.weight, b.weight)
    assert torch.all(a.weight.detach().abs() <= theta.abs())


def test_reweight_raises_on_non_finite():
    lin = torch.nn.Linear(3, 2)
    pt.affine_scaling(lin)
    with torch.no_grad():
        lin.parametrizations.weight.original[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        pt.reweight(lin, rule="l2", tau=1e-3)
    assert int(lin.parametrizations.weight[0].n_reweights) == 0  # nothing changed


def test_reweight_refuses_an_omega_beyond_the_parameters_dtype():
    """FOCUSS's omega = |theta|^(2-p) + tau of half-precision weights is
    formed in float32, finite there, and overflowed once stored: weights of
    300 became inf without a word (and the next re-weighting blamed a
    diverged training).  Now a FloatingPointError, nothing changed."""
    lin = torch.nn.Linear(4, 3).half()
    with torch.no_grad():
        lin.weight.fill_(300.0)
    pt.affine_scaling(lin)
    theta = lin.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="beyond torch.float16's range"):
        pt.reweight(lin, rule="focuss", p=0.0)
    assert torch.equal(lin.weight.detach(), theta)
    assert int(lin.parametrizations.weight[0].n_reweights) == 0
    assert pt.reweight(lin, rule="l1") == 0 and torch.isfinite(lin.weight).all()  # omega = 300 + tau fits


def test_reweighting_options_are_checked_before_training():
    """AffineScalingSchedule checks the re-weighting options when it is built
    (a bad ``rule`` raised only at the first re-weighting, ``every`` steps
    into training); ``reweight`` refuses a negative or NaN ``sigma`` (the
    noise was silently skipped) before changing anything."""
    lin = torch.nn.Linear(3, 2)
    pt.affine_scaling(lin)
    for kw, match in (({"rule": "l3"}, "rule"), ({"init": "greed"}, "init"), ({"tau": 0.0}, "tau"),
                      ({"rule": "focuss", "p": 3.0}, "p"), ({"init": "noise", "sigma": -0.1}, "sigma")):
        with pytest.raises(ValueError, match=match):
            pt.AffineScalingSchedule([lin], every=5, **kw)
    pt.AffineScalingSchedule([lin], every=5, rule="l1", p=None, tau=lambda t: 1e-3)  # p unused by l1; tau a schedule
    q = lin.parametrizations.weight.original.detach().clone()
    for sigma in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            pt.reweight(lin, init="noise", sigma=sigma)
    assert torch.equal(lin.parametrizations.weight.original, q) and int(lin.parametrizations.weight[0].n_reweights) == 0


def test_affine_scaling_must_come_before_tied_rows():
    """AffineScaling after TiedRows: reweight formed theta from the untied leaf,
    so its first (rescaling) re-weighting moved the weights by 0.13 and the tied
    rows came apart.  Registering it second is refused; the other order keeps
    the ties through re-weighting."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    pt.tie_rows(lin, [0, 0, 1, -1])
    with pytest.raises(ValueError, match=r"has the parametrization\(s\) \['TiedRows'\] already"):
        pt.affine_scaling(lin)
    torch.nn.utils.parametrize.register_parametrization(lin, "weight", pt.AffineScaling((3, 4)))  # by hand
    with pytest.raises(ValueError, match="AffineScaling comes after"):
        pt.reweight(lin)
    with pytest.raises(ValueError, match="AffineScaling comes after"):
        pt.AffineScalingSchedule([lin], every=1)
    lin = torch.nn.Linear(4, 3)
    pt.affine_scaling(lin)
    pt.tie_rows(lin, [0, 0, 1, -1])
    W0 = lin.weight.detach().clone()
    pt.reweight(lin, tau=1e-3)  # the first re-weighting rescales: theta unchanged
    W = lin.weight.detach()
    torch.testing.assert_close(W, W0)
    assert torch.equal(W[:, 0], W[:, 1]) and bool((W[:, 3] == 0).all())


def test_remove_affine_scaling_keeps_the_ties_after_it():
    """remove_affine_scaling removed every parametrization of the weight: the
    TiedRows after the AffineScaling went too, and retraining untied the rows."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    pt.affine_scaling(lin)
    pt.reweight(lin, tau=1e-3)
    pt.tie_rows(lin, [0, 0, 1, -1])
    q = lin.parametrizations.weight.original
    W0 = lin.weight.detach().clone()
    pt.remove_affine_scaling(lin)
    assert [type(p).__name__ for p in lin.parametrizations.weight] == ["TiedRows"]
    assert lin.parametrizations.weight.original is q and torch.equal(lin.weight, W0)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    W = lin.weight.detach()
    assert torch.equal(W[:, 0], W[:, 1]) and bool((W[:, 3] == 0).all())


def test_affine_scaling_prune_reweights_before_each_block_as_algorithm_1():
    # Fedorov & Rao's Algorithm 1 (reweight_first=True): omega from the
    # weights a block of training starts from, then the block.  The schedule
    # could only re-weight after each block: the first epoch trained with
    # omega = 1 and the last re-weighting (a greedy one shrinks theta) came
    # after the last step, untrained
    X, y = _toy(n=200, d=10)
    for first, expected in ((True, [0, 5, 10, 15]), (False, [5, 10, 15, 20])):  # 5 steps an epoch
        net = _mlp(d=10)
        at = []
        r = pt.affine_scaling_prune(net, {"a": net[0], "b": net[2]}, X, y, batch_size=40,
                                    make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.3), rule="l1", tau=1e-3,
                                    every="epoch", cycle=True, epochs=4, amount=0.5, retrain_epochs=0,
                                    on_reweight=lambda s: at.append(s.n_steps), reweight_first=first)
        assert r.n_reweights == 4 and at == expected
    # the schedule alone, either way
    lin = torch.nn.Linear(3, 2)
    pt.affine_scaling(lin)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    for before, expected in ((True, [0, 2]), (False, [2, 4])):
        seen = []
        sched = pt.AffineScalingSchedule([lin], every=2, on_reweight=lambda s: seen.append(s.n_steps))
        handle = sched.attach(opt, before=before)
        for _ in range(4):
            opt.zero_grad()
            lin(torch.randn(4, 3)).sum().backward()
            opt.step()
        handle.remove()
        assert seen == expected and sched.n_steps == 4


def test_schedule_cycle_and_tau_annealing():
    layers = [torch.nn.Linear(3, 3) for _ in range(3)]
    for l in layers:
        pt.affine_scaling(l)
    taus = []
    sched = pt.AffineScalingSchedule(layers, every=1, rule="l2", tau=lambda t: taus.append(t) or 0.1 * 0.5**t, cycle=True)
    for _ in range(4):
        sched.step()
    assert [int(l.parametrizations.weight[0].n_reweights) for l in layers] == [2, 1, 1]
    assert taus == [0, 1, 2, 3]
    # omega of the 4th re-weighting (layer 0 again) used tau = 0.1 / 8
    th = layers[0].weight.detach()
    omega = layers[0].parametrizations.weight[0].omega
    assert omega.shape == th.shape
    with pytest.raises(TypeError, match="unknown"):
        pt.AffineScalingSchedule(layers, every=1, rul="l1")
    with pytest.raises(ValueError, match="at least one module"):  # was a ZeroDivisionError at the first re-weighting
        pt.AffineScalingSchedule([], every=1, cycle=True)
    assert sched.state_dict()["n_reweights"] == 4


@pytest.mark.parametrize("kw, err, name", [
    (dict(epochs=2.7), TypeError, "epochs"),  # was 2 epochs, silently
    (dict(epochs="2"), TypeError, "epochs"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(batch_size=3.9), ValueError, "batch_size"),  # was batches of 3, silently
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=True), ValueError, "batch_size"),
])
def test_fit_counts_are_integers(kw, err, name):
    X, y = _toy(n=16, d=4)
    net = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(err, match=name):
        pt.fit(net, X, y, opt, **{"epochs": 1, **kw})
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # refused before training


def test_steps_per_epoch_checks_its_counts():
    # batch_size 0 raised ZeroDivisionError, a negative one gave a negative
    # count (10, -3 -> -3) and 2.5 was truncated to 2 (10 -> 5 batches)
    from proxlib.torch.training import steps_per_epoch

    assert steps_per_epoch(10, 3) == 4 and steps_per_epoch(np.int64(10), np.int32(5)) == 2 and steps_per_epoch(0, 3) == 0
    for n, b in ((10, 0), (10, -3), (10, 2.5), (-5, 3), (10.5, 3), (10, True)):
        with pytest.raises((TypeError, ValueError), match="batch_size" if n == 10 else "n must"):
            steps_per_epoch(n, b)


def test_fit_and_two_stage_take_numpy_integers():
    X, y = _toy(n=16, d=4)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    assert len(pt.fit(net, X, y, opt, epochs=np.int64(2), batch_size=np.int32(8))) == 2
    r = pt.two_stage(net, {"fc": net[0]}, X, y, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                     epochs=np.int64(2), warmup_epochs=np.int64(1), retrain_epochs=np.int64(1),
                     batch_size=np.int64(8), prox_every=np.int64(2))
    assert r.prox_every == 2 and len(r.losses) == 3
    for bad, err in ((dict(prox_every=1.5), ValueError), (dict(retrain_epochs=0.5), TypeError)):
        with pytest.raises(err, match=next(iter(bad))):
            pt.two_stage(net, {"fc": net[0]}, X, y, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                         **{"epochs": 1, "retrain_epochs": 0, **bad})


def test_affine_scaling_prune_checks_its_counts_before_changing_the_model():
    X, y = _toy(n=16, d=4)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(TypeError, match="retrain_epochs"):
        pt.affine_scaling_prune(net, {"fc": net[0]}, X, y, make_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                epochs=1, retrain_epochs=1.5, amount=0.5)
    assert not torch.nn.utils.parametrize.is_parametrized(net[0])


def _refused_before_training(call, match):
    """``call(net, X, y, progress)`` raises a ValueError or TypeError matching
    ``match`` before any training step, leaving the model's state as it was;
    returns the model."""
    X, y = _toy(n=64)
    net = _mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = []

    class Progress:
        def update(self, n):
            steps.append(n)

    with pytest.raises((ValueError, TypeError), match=match):
        call(net, X, y, Progress())
    assert steps == []
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    return net


@pytest.mark.parametrize("bad, match", [
    (dict(amount=1.5), "amount"),
    (dict(amount=None), "amount= or threshold="),
    (dict(amount=0.5, threshold=0.1), "amount= or threshold="),
    (dict(threshold=-1.0), "threshold"),
    (dict(amount=0.5, scope="layers"), "scope"),
    (dict(amount=[0.5]), "fractions"),
    # a key that is not a layer (a typo, or a layer left out of layers) was ignored: that layer neither trained nor pruned
    (dict(amount={"a": 0.5, "b": 0.5, "c": 0.3}), r"fractions for \['c'\], which are not among the layers"),
    (dict(amount=0.5, rule="l3"), "rule"),
    (dict(amount=0.5, p=3.0, rule="focuss"), "p must"),
    (dict(amount=0.5, test=(torch.zeros(4, 8),)), "test"),
])
def test_affine_scaling_prune_checks_its_options_before_training(bad, match):
    # the pruning options were checked by magnitude_prune after the whole
    # re-weighted training, and a bad rule left the layers re-parametrised
    net = _refused_before_training(
        lambda net, X, y, progress: pt.affine_scaling_prune(
            net, {"a": net[0], "b": net[2]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
            epochs=2, retrain_epochs=1, batch_size=16, every=2, progress=progress, **bad),
        match)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in net)


@pytest.mark.parametrize("every, match", [(0, "^every must be an integer >= 1"), ("epochs", "^every must be an integer >= 1 or 'epoch'")])
def test_affine_scaling_prune_names_its_every_option(every, match):
    # the error named two_stage's option: "prox_every must be an integer >= 1, got 0"
    net = _refused_before_training(
        lambda net, X, y, progress: pt.affine_scaling_prune(
            net, {"a": net[0], "b": net[2]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
            epochs=2, retrain_epochs=1, batch_size=16, every=every, amount=0.5, progress=progress),
        match)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in net)


def test_affine_scaling_prune_leaves_no_layer_reparametrised_when_one_is_refused():
    X, y = _toy(n=64)
    net = _mlp()
    w0 = net[0].weight
    before = w0.detach().clone()
    pt.affine_scaling(net[2])  # the second layer has one already: refused
    with pytest.raises(ValueError, match="AffineScaling"):
        pt.affine_scaling_prune(net, {"a": net[0], "b": net[2]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
                                epochs=1, retrain_epochs=0, amount=0.5)
    assert not torch.nn.utils.parametrize.is_parametrized(net[0])
    assert net[0].weight is w0 and torch.equal(w0.detach(), before)


@pytest.mark.parametrize("conv, side", [(lambda: torch.nn.Conv2d(4, 4, 3, groups=2), 3), (lambda: torch.nn.ConvTranspose2d(4, 4, 3), 7)])
def test_two_stage_refuses_a_conv_layout_tie_rows_refuses_before_training(conv, side):
    """A grouped or transposed conv with grouping="channel": tie_rows refused it
    only after the whole of stage 1 had been trained."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(conv(), torch.nn.Flatten(), torch.nn.Linear(4 * side * side, 2))
    X, y = torch.randn(16, 4, 5, 5), torch.randint(0, 2, (16,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = []

    class Progress:
        def update(self, n):
            steps.append(n)

    with pytest.raises(ValueError, match="grouping 'channel' on a"):
        pt.two_stage(net, {"conv": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
                     epochs=2, retrain_epochs=1, batch_size=8, progress=Progress())
    assert steps == []
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_two_stage_refuses_a_sharded_weight_before_training():
    """A model under FSDP2's fully_shard (a one-process gloo mesh): tie_rows
    refuses its DTensor weights, and two_stage refused them only after the
    whole of stage 1 had been trained; now before any step."""
    code = _procs.ONE_RANK_MESH + r"""
from torch.distributed.fsdp import fully_shard
import proxlib.torch as pt
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(6, 3))
fully_shard(net, mesh=mesh)
X, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
steps = []
class Progress:
    def update(self, n):
        steps.append(n)
try:
    pt.two_stage(net, {"fc": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
                 epochs=1, retrain_epochs=1, batch_size=8, progress=Progress())
except NotImplementedError as e:
    print("refused:", e, "| steps:", len(steps))
dist.destroy_process_group()
"""
    out = _procs.python(code, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused: two_stage's tying (tie_rows) on a sharded parameter" in out.stdout, out.stdout
    assert "| steps: 0" in out.stdout, out.stdout


@pytest.mark.parametrize("bad, match", [
    (dict(weights=np.ones(5)), "weights"),
    (dict(weights=-np.ones(8)), "weights"),
    (dict(strength=-1.0), "strength"),
])
def test_growl_two_stage_checks_its_weights_and_strength_before_the_warm_up(bad, match):
    # the GrOWL terms are added after the warm-up epochs: weights of the wrong
    # length or sign, or a negative strength, were refused only after them
    kw = dict(weights=np.ones(8), strength=0.1) | bad
    _refused_before_training(
        lambda net, X, y, progress: pt.growl_two_stage(
            net, {"fc1": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
            epochs=3, warmup_epochs=2, retrain_epochs=1, batch_size=16, progress=progress, **kw),
        match)


@pytest.mark.parametrize("bad, match", [
    (dict(grouping="channels"), "grouping"),
    (dict(preference="high"), "preference"),
    (dict(tying_options={"max_iters": 10}), "max_iters"),
    (dict(tying_options={"preference": 0.5}), "preference"),
    (dict(test=(torch.zeros(4, 8),)), "test"),
])
def test_two_stage_checks_the_tying_options_before_training(bad, match):
    # grouping, preference and tying_options reached find_tying only after
    # the whole of stage 1 (a typo cost the training)
    _refused_before_training(
        lambda net, X, y, progress: pt.two_stage(
            net, {"fc1": net[0]}, X, y, make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
            epochs=2, retrain_epochs=1, batch_size=16, progress=progress, **bad),
        match)


def test_magnitude_prune_threshold_compares_exactly_not_in_the_weights_dtype():
    """``|w| <= threshold`` pruned, exactly: torch rounded the threshold to the
    weights' dtype, so float32(0.1) = 0.10000000149 > 0.1 was pruned with
    threshold=0.1 (and float32(1e-3) with threshold=1e-3)."""
    for t in (0.1, 1e-3):
        lin = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[t, t / 2, -t]]))  # float32(t) > t: kept; t / 2 pruned
        assert float(lin.weight[0, 0].detach()) > t
        mask = pt.magnitude_prune([lin], threshold=t)[0]
        assert mask.tolist() == [[1.0, 0.0, 1.0]]
    half = torch.nn.Linear(2, 1, bias=False).half()
    with torch.no_grad():
        half.weight.copy_(torch.tensor([[0.1, 0.2]]))  # float16(0.1) = 0.09998 <= 0.1: pruned
    assert pt.magnitude_prune([half], threshold=0.1)[0].tolist() == [[0.0, 1.0]]


def test_sigma_without_init_noise_is_refused_not_ignored():
    """``sigma`` > 0 adds noise only with ``init="noise"``: with the default
    greedy init (or rescale) it was accepted and silently ignored, by
    reweight, AffineScalingSchedule and affine_scaling_prune alike."""
    lin = torch.nn.Linear(3, 2)
    pt.affine_scaling(lin)
    q = lin.parametrizations.weight.original.detach().clone()
    for init in ("greedy", "rescale"):
        with pytest.raises(ValueError, match="sigma"):
            pt.reweight(lin, init=init, sigma=0.1)
        with pytest.raises(ValueError, match="sigma"):
            pt.AffineScalingSchedule([lin], every=5, init=init, sigma=0.1)
    with pytest.raises(ValueError, match="sigma"):
        pt.reweight(lin, sigma=0.1)  # init defaults to greedy
    assert torch.equal(lin.parametrizations.weight.original, q) and int(lin.parametrizations.weight[0].n_reweights) == 0
    pt.reweight(lin, init="rescale", sigma=0.0)  # sigma 0: no noise asked, accepted
    pt.AffineScalingSchedule([lin], every=5, init="noise", sigma=0.1)


def test_reweight_raises_floating_point_error_naming_the_layer_when_float32_omega_overflows():
    """The documented error of an omega beyond the dtype's range is a
    FloatingPointError naming the layer (as for half precision); for float32
    weights (FOCUSS, |theta|^(2-p) of 1e30) the core's ValueError came
    through instead, without the layer, past a caller's FloatingPointError
    handler."""
    lin = torch.nn.Linear(2, 2, bias=False)
    pt.affine_scaling(lin)
    with torch.no_grad():
        lin.parametrizations.weight.original.fill_(1e30)
    theta = lin.weight.detach().clone()
    with pytest.raises(FloatingPointError, match=r"re-weighting \w*Linear.weight \(rule 'focuss'.*not representable in float32"):
        pt.reweight(lin, rule="focuss", p=0.5)
    assert torch.equal(lin.weight.detach(), theta) and int(lin.parametrizations.weight[0].n_reweights) == 0


def test_keep_zero_hook_zeroes_frozen_rows_after_an_optimizer_step_without_a_prox():
    """With ``every=2`` the hook runs the prox every other optimizer step,
    but the documented promise is that frozen entries (and their optimizer
    state) are set to 0 after *every* optimizer step: a gradient step in
    between must not leave a frozen row nonzero until the next prox."""
    lin = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.12, 2.0], [1.0, 0.12, 2.0]]))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    prox = pt.ProximalStep(opt, keep_zero=True, every=2)
    prox.add(lin, proxlib.GroupLasso(1.0), grouping="channel", strength=1.0, label="gl")  # threshold 0.2 per prox
    prox.attach()
    x = torch.tensor([[0.0, 1.0, 0.0]])
    for i, scale in enumerate((1.0, 0.0, 1.0)):  # input 1 gets a gradient at steps 1 and 3 (no prox at step 3)
        opt.zero_grad()
        (lin(x).sum() * scale).backward()
        opt.step()
        if i == 1:  # the prox of step 2 zeroed input 1 and froze it
            assert prox.n_steps == 1 and bool(prox.frozen()["gl"][:, 1].all())
    assert prox.n_steps == 1  # step 3 ran no prox
    assert torch.all(lin.weight.detach()[:, 1] == 0)
    assert torch.all(opt.state[lin.weight]["momentum_buffer"][:, 1] == 0)


def test_keep_zero_freezes_only_groups_that_are_entirely_zero():
    """A group joins the frozen set when every entry is 0; a row that merely
    holds some zero entries stays free (and keeps training)."""
    lin = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.05, 2.0]]))  # channel rows: columns
    prox = pt.ProximalStep(keep_zero=True)
    prox.add(lin, proxlib.GroupLasso(1.0), grouping="channel", strength=1.0, label="gl")
    prox.step(lr=0.1)  # column 1 (norm 0.05) -> 0; column 0 (1, 0) -> (0.9, 0), partly zero
    expected = torch.tensor([[False, True, False], [False, True, False]])
    assert torch.equal(prox.frozen()["gl"], expected)
    assert lin.weight[0, 0].item() == pytest.approx(0.9)


def test_two_stage_names_the_layer_whose_tying_did_not_converge():
    """AffinityPropagation stopped unconverged on a layer: two_stage's warning
    names that layer and points at the line that called two_stage (or
    growl_two_stage), where find_tying's pointed into proxlib's training
    module (``training.py:345``, e.g. in the demo) without saying which
    layer.  The converged layer gets no warning."""
    X, y = _toy(n=64)
    for how in ("two_stage", "growl_two_stage"):
        net = _mlp()
        layers = {"fc1": net[0], "fc2": net[2]}
        kw = dict(make_optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1), epochs=1, retrain_epochs=0, batch_size=32,
                  tying_options={"max_iter": 1})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if how == "two_stage":
                r = pt.two_stage(net, layers, X, y, **kw)
            else:
                r = pt.growl_two_stage(net, layers, X, y, weights=lambda G: proxlib.owl_weights_stairwise(G, 1e-3, 1e-4, G // 2), **kw)
        unconverged = [n for n, t in r.tying.items() if not t.converged]
        assert unconverged, how  # (max_iter=1 stops AffinityPropagation on these layers' rows)
        ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "did not converge" in str(w.message)]
        assert sorted(str(w.message).split("'")[1] for w in ours) == sorted(unconverged), how
        assert all(w.filename == __file__ for w in ours), (how, [w.filename for w in ours])


def test_magnitude_prune_amount_rounds_the_count_to_the_nearest():
    """``amount`` prunes round(amount * size) weights (documented), per layer
    and globally: 0.36 of 10 is 4, not the 3 that truncation gives."""
    lin = torch.nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(1.0, 11.0)[None])
    assert int((pt.magnitude_prune([lin], amount=0.36)[0] == 0).sum()) == 4
    a, b = torch.nn.Linear(5, 1, bias=False), torch.nn.Linear(5, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.arange(1.0, 6.0)[None])
        b.weight.copy_(torch.arange(6.0, 11.0)[None])
    masks = pt.magnitude_prune([a, b], amount=0.36, scope="global")
    assert [m.tolist() for m in masks] == [[[0.0, 0.0, 0.0, 0.0, 1.0]], [[1.0] * 5]]


def test_magnitude_prune_threshold_prunes_a_weight_equal_to_it():
    """``|w| <= threshold`` is pruned (documented): a weight exactly at the
    threshold goes, and threshold=0 prunes the exact zeros."""
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.5, 0.25, 0.75]]))
    assert pt.magnitude_prune([lin], threshold=0.5)[0].tolist() == [[0.0, 0.0, 0.0, 1.0]]
    zero = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        zero.weight.copy_(torch.tensor([[0.0, -1e-30, 2.0]]))
    assert pt.magnitude_prune([zero], threshold=0.0)[0].tolist() == [[0.0, 1.0, 1.0]]


@given(
    st.sampled_from(["sgd", "momentum", "adam"]),
    st.sampled_from([("group", "channel"), ("group", "filter"), ("l1", None), ("growl", "channel")]),
    st.floats(0.05, 3.0),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
)
def test_keep_zero_invariants_over_random_training(optimizer, term, strength, steps, seed):
    """Hypothesis: ProximalStep(keep_zero=True) over a few training steps
    (SGD, SGD with momentum, Adam; group lasso on input or output neurons,
    l1, GrOWL): after every step each frozen group is exactly 0 in the
    weight and in every optimizer state of its shape, a frozen set never
    shrinks, and every group of the term that is exactly 0 is frozen
    (it was zero after a prox, the only step that zeroes groups here)."""
    torch.manual_seed(seed % 1000)
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.3), "momentum": lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=0.05)}[optimizer]
    opt = make(net.parameters())
    prox = pt.ProximalStep(opt, model=net, keep_zero=True)
    kind, grouping = term
    pen = {"group": proxlib.GroupLasso(1.0), "l1": proxlib.WeightedL1(1.0), "growl": pt.growl(lambda G: np.linspace(1.0, 0.2, G))}[kind]
    t = prox.add(net[0], pen, grouping=grouping, strength=strength)
    prox.attach()
    X, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    previous = None
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
        w = net[0].weight.detach()
        frozen = prox.frozen().get(t.label, torch.zeros_like(w, dtype=torch.bool))
        assert not w[frozen].any()
        for v in opt.state[net[0].weight].values():
            if isinstance(v, torch.Tensor) and v.shape == w.shape:
                assert not v[frozen].any()
        if previous is not None:
            assert not (previous & ~frozen).any()  # never shrinks
        if kind == "l1":
            zero = w == 0
        else:
            R = proxlib.to_rows(w, grouping)
            zero = proxlib.from_rows((R == 0).all(1, keepdim=True).expand(R.shape).to(w.dtype), tuple(w.shape), grouping) != 0
        assert torch.equal(zero, frozen)
        previous = frozen
    event("some groups frozen" if previous.any() else "no group frozen")

r"""The seeds' training procedures end to end.

* :func:`fit` / :func:`evaluate` -- minibatch training and accuracy on
  in-memory tensors ``(X, y)`` or any iterable of ``(inputs, targets)``
  batches (a ``torch.utils.data.DataLoader``), with a loss function and an
  optional learning-rate scheduler.
* :func:`two_stage` / :func:`growl_two_stage` -- the GrOWL poster's procedure:
  (1) train with proximal steps (GrOWL on the input neurons, or any other
  terms), optionally after warm-up epochs without them, with the prox applied
  every N optimizer steps or once per epoch (step ``lr * N * strength``) and,
  with ``keep_zero``, every row it zeroes kept at zero with its optimizer
  state cleared; (2) find the tying structure of the chosen layers
  (:func:`~proxlib.torch.find_tying`); (3) retrain with zero rows pruned and
  each cluster of rows tied (:class:`~proxlib.torch.TiedRows`) and a fresh
  optimizer (state reset).  The retraining stage has no penalty; the
  optimizer's own ``weight_decay`` still applies if ``make_optimizer`` sets it.
* :func:`affine_scaling_prune` -- Fedorov & Rao: train in ``q`` with
  ``theta = q * omega``, ``omega`` re-weighted every K steps (all layers, or
  one layer at a time), then magnitude pruning (per layer or global, one
  amount or one per layer) and retraining with the mask fixed.

SSL and the combined group + exclusive penalty are prox terms only
(:func:`~proxlib.torch.add_ssl`, :func:`~proxlib.torch.add_group_exclusive`),
trained with :func:`fit` and an attached :class:`~proxlib.torch.ProximalStep`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .. import _validate
from . import _bridge as B
from ..groupings import row_maps
from .metrics import LayerMetrics, model_metrics
from .prox import ProximalStep, growl
from .reweighting import AffineScalingSchedule, affine_scaling, magnitude_prune, remove_affine_scaling
from .reweighting import _check_options as _check_reweight_options
from .reweighting import _check_prune_options
from .tying import NOT_CONVERGED, Tying, find_tying, tie_rows

__all__ = [
    "fit",
    "evaluate",
    "steps_per_epoch",
    "TwoStageResult",
    "two_stage",
    "growl_two_stage",
    "AffineScalingResult",
    "affine_scaling_prune",
]


# ------------------------------------------------------------------ data sources


class _TensorBatches:
    """Shuffled minibatches of in-memory tensors, one pass per ``iter()``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, generator, shuffle: bool = True):
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
        batch_size = _validate.positive_count(batch_size, "batch_size")
        self.X, self.y, self.batch_size, self.generator, self.shuffle = X, y, batch_size, generator, shuffle

    def __len__(self) -> int:
        return steps_per_epoch(self.X.shape[0], self.batch_size)

    def __iter__(self):
        n = self.X.shape[0]
        idx_all = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = idx_all[i : i + self.batch_size]
            yield self.X[idx], self.y[idx]


def _source(data, y, batch_size: int, generator, *, shuffle: bool = True, what: str = "data"):
    """``(X, y)`` tensors, a tuple of them, or an iterable of batches -> a re-iterable of batches."""
    if isinstance(data, torch.Tensor):
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{what}: with a tensor of inputs, y must be a tensor of targets, got {type(y).__name__}")
        return _TensorBatches(data, y, batch_size, generator, shuffle)
    if y is not None:
        raise TypeError(f"{what}: y is only used with a tensor of inputs (a DataLoader yields its own targets)")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return _TensorBatches(data[0], data[1], batch_size, generator, shuffle)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        if iter(data) is data:
            raise TypeError(f"{what}: an iterator is consumed after one epoch; pass a DataLoader or another re-iterable")
        return data
    raise TypeError(f"{what} must be a tensor of inputs (with y), a tuple (X, y) or a DataLoader, got {type(data).__name__}")


def _n_batches(batches) -> int:
    try:
        return int(len(batches))
    except TypeError as e:
        raise TypeError("the prox once per epoch needs the number of batches per epoch: pass a DataLoader with a length") from e


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of minibatches of ``batch_size`` in ``n`` samples (the last one may be smaller).

    ``n`` an integer >= 0 and ``batch_size`` an integer >= 1 (Python or
    NumPy; a TypeError or ValueError naming the argument otherwise)."""
    return -(-_validate.count(n, "n") // _validate.positive_count(batch_size, "batch_size"))


# ------------------------------------------------------------------ fit / evaluate


def fit(
    model: torch.nn.Module,
    X,
    y=None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    loss_fn: Callable = F.cross_entropy,
    scheduler=None,
    scheduler_interval: str = "epoch",
    progress=None,
) -> list[float]:
    """Minibatch training; returns the mean loss of each epoch (NaN for an
    epoch without a batch, e.g. a ``DataLoader`` with ``drop_last=True`` and
    fewer samples than ``batch_size``: no step was taken).

    Call as ``fit(model, X, y, optimizer)`` (tensors: shuffled by ``generator``
    into batches of ``batch_size``) or ``fit(model, loader, optimizer)`` (any
    re-iterable of ``(inputs, targets)`` batches, e.g. a
    ``torch.utils.data.DataLoader``; ``batch_size`` and ``generator`` are
    then the loader's business).  Each step minimises ``loss_fn(model(inputs),
    targets)``.  Hooks registered on ``optimizer`` (a
    :class:`~proxlib.torch.ProximalStep`, a schedule) run after every step.
    ``scheduler`` (a ``torch.optim.lr_scheduler`` object) is stepped after
    every epoch (``scheduler_interval="epoch"``) or every optimizer step
    (``"step"``); a ``ReduceLROnPlateau``, which needs a metric, is given
    the epoch's mean training loss (the step's loss with ``"step"``).  ``progress`` (e.g. a ``tqdm`` bar) is advanced by one per
    step.
    """
    if isinstance(y, torch.optim.Optimizer) and optimizer is None:
        y, optimizer = None, y
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    epochs = _validate.count(epochs, "epochs")
    batches = _source(X, y, batch_size, generator)
    model.train()
    losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            n = int(targets.shape[0]) if isinstance(targets, torch.Tensor) and targets.ndim else 1
            # stays on the device (no sync per step), summed in float32 at least: a
            # bfloat16 sum of 128 batch losses was 5% off the mean
            total = total + loss.detach().to(torch.promote_types(loss.dtype, torch.float32)) * n
            count += n
            if scheduler is not None and scheduler_interval == "step":
                _step_scheduler(scheduler, loss.detach())
            if progress is not None:
                progress.update(1)
        losses.append(float(total) / count if count else float("nan"))  # not 0.0: nothing was fitted
        if scheduler is not None and scheduler_interval == "epoch":
            _step_scheduler(scheduler, losses[-1])
    return losses


def _step_scheduler(scheduler, loss) -> None:
    """``scheduler.step()``; a ``ReduceLROnPlateau`` gets ``loss`` as its
    metric (its ``step()`` has no default: it raised a TypeError after the
    first epoch)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(float(loss))
    else:
        scheduler.step()


def evaluate(model: torch.nn.Module, X, y=None, *, batch_size: int = 1024) -> float:
    """Classification accuracy (argmax of the outputs) of ``model`` on tensors
    ``(X, y)`` or on a DataLoader of ``(inputs, targets)`` batches (NaN on no
    samples).  The model is evaluated in eval mode and left in training mode."""
    batches = _source(X, y, batch_size, None, shuffle=False, what="evaluate")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, targets in batches:
            correct += int((model(inputs).argmax(1) == targets).sum())
            total += int(targets.shape[0])
    model.train()
    return correct / total if total else float("nan")  # not 0.0: there is nothing to be right or wrong about


def _check_test(test) -> None:
    """The checks :func:`_accuracy` would make of ``test`` (TypeError or
    ValueError), before any training."""
    if test is None:
        return
    args = test if isinstance(test, tuple) else (test,)
    if len(args) > 2:
        raise TypeError(f"test must be (X_test, y_test) or a DataLoader, got a tuple of {len(args)}")
    _source(args[0], args[1] if len(args) == 2 else None, 1, None, shuffle=False, what="test")


def _accuracy(model, test) -> float:
    if test is None:
        return float("nan")
    return evaluate(model, *test) if isinstance(test, tuple) else evaluate(model, test)


# ------------------------------------------------------------------ two stages


@dataclass
class TwoStageResult:
    """What :func:`two_stage` measured.  Accuracies are on ``test`` (NaN without it).

    ``prox_every``: the optimizer steps between two proximal steps in stage 1;
    ``frozen_entries``: per prox term (by label), the weights kept at zero by
    ``keep_zero`` at the end of stage 1 (``None`` without it)."""

    tying: dict[str, Tying]
    accuracy_trained: float
    accuracy: float
    metrics_trained: dict[str, LayerMetrics]
    metrics: dict[str, LayerMetrics]
    losses: list[float] = field(default_factory=list)
    weights_trained: dict[str, torch.Tensor] = field(default_factory=dict)
    prox_every: int = 1
    frozen_entries: dict[str, int] | None = None


def _named(layers) -> dict:
    return dict(layers) if isinstance(layers, dict) else {f"layer{i}": m for i, m in enumerate(layers)}


def _resolve_every(every, batches, name: str = "prox_every") -> int:
    if every == "epoch":
        return max(_n_batches(batches), 1)
    if isinstance(every, str):
        raise ValueError(f"{name} must be an integer >= 1 or 'epoch', got {every!r}")
    return _validate.positive_count(every, name)


def two_stage(
    model: torch.nn.Module,
    layers,
    X,
    y=None,
    *,
    make_optimizer: Callable,
    configure: Callable[[ProximalStep], object] | None = None,
    epochs: int,
    retrain_epochs: int,
    batch_size: int = 64,
    grouping: str = "channel",
    preference: float = 0.6,
    random_state: int = 0,
    tying_options: dict | None = None,
    generator: torch.Generator | None = None,
    test=None,
    progress=None,
    prox_every: int | str = 1,
    keep_zero: bool = False,
    warmup_epochs: int = 0,
    loss_fn: Callable = F.cross_entropy,
    make_scheduler: Callable | None = None,
) -> TwoStageResult:
    """Train (with the prox terms ``configure(prox)`` adds), tie, retrain.

    Parameters
    ----------
    model, layers
        The network and the layers whose rows are tied (dict name -> module or list).
    X, y
        Training data: tensors (on the model's device), or a DataLoader of
        ``(inputs, targets)`` batches as ``X`` (``y`` omitted).
    make_optimizer : params -> Optimizer
        Called once per stage, so the retraining stage starts with fresh
        optimizer state.
    configure : ProximalStep -> any, optional
        Adds the stage-1 prox terms (none: plain training).
    epochs, retrain_epochs, batch_size
        Stage lengths (``epochs`` includes the warm-up epochs); the batch size
        of tensor data.
    warmup_epochs : int, default 0
        The first ``warmup_epochs`` of stage 1 run without the prox terms.
    prox_every : int or ``"epoch"``, default 1
        Apply the prox terms once every N optimizer steps with step
        ``lr * N * strength`` (``"epoch"``: N = batches per epoch, as the
        original GrOWL code does); see :class:`~proxlib.torch.ProximalStep`.
        Stage 1 always ends with a proximal step: where N does not divide
        its number of optimizer steps (after the warm-up), the r < N steps
        after the last one get theirs right after the last optimizer step
        (step ``lr * r * strength``, before the scheduler's step of that
        epoch), so the tying sees the prox's result (its zero rows).
    keep_zero : bool, default False
        Rows that a prox sets to zero stay zero, their optimizer state
        cleared (``ProximalStep(keep_zero=True)``).
    grouping, preference, random_state, tying_options
        Passed to :func:`~proxlib.torch.find_tying` for each layer
        (``tying_options``: its other keywords, e.g. ``max_iter``).  The
        default preference 0.6 is the original code's.
    loss_fn : (outputs, targets) -> loss, default cross entropy
    make_scheduler : optimizer -> LR scheduler, optional
        Called once per stage with that stage's optimizer; stepped every epoch.
    test : (X_test, y_test) or a DataLoader, optional
        For the accuracies.

    Returns
    -------
    :class:`TwoStageResult`; the model is left tied (its ``state_dict`` holds
    the cluster labels of every tied layer).
    """
    layers = _named(layers)
    epochs, retrain_epochs = _validate.count(epochs, "epochs"), _validate.count(retrain_epochs, "retrain_epochs")
    warmup_epochs = _validate.count(warmup_epochs, "warmup_epochs")
    if warmup_epochs > epochs:
        raise ValueError(f"warmup_epochs must be an integer in [0, epochs={epochs}], got {warmup_epochs!r}")
    kw = _tying_keywords(layers, grouping, preference, random_state, tying_options)
    _check_test(test)
    batches = _source(X, y, batch_size, generator)
    every = _resolve_every(prox_every, batches)
    opt = make_optimizer(model.parameters())
    sched = make_scheduler(opt) if make_scheduler is not None else None
    losses = fit(model, batches, opt, epochs=warmup_epochs, loss_fn=loss_fn, scheduler=sched, progress=progress)
    prox = ProximalStep(opt, every=every, keep_zero=keep_zero)
    if configure is not None:
        configure(prox)
    losses += _fit_with_prox(model, batches, opt, prox, epochs - warmup_epochs, loss_fn, sched, progress)
    frozen = {k: int(v.sum()) for k, v in prox.frozen().items()} if keep_zero else None
    acc1 = _accuracy(model, test)
    m1 = model_metrics(model, layers, grouping=grouping)
    trained = {n: l.weight.detach().clone() for n, l in layers.items()}
    tying = _tyings(layers, kw)
    for n, l in layers.items():
        tie_rows(l, tying[n], grouping=grouping)
    opt2 = make_optimizer(model.parameters())  # optimizer state reset
    sched2 = make_scheduler(opt2) if make_scheduler is not None else None
    losses += fit(model, batches, opt2, epochs=retrain_epochs, loss_fn=loss_fn, scheduler=sched2, progress=progress)
    acc2 = _accuracy(model, test)
    return TwoStageResult(tying, acc1, acc2, m1, model_metrics(model, layers, grouping=grouping), losses, trained, every, frozen)


def _tyings(layers: dict, kw: dict) -> dict:
    """:func:`find_tying` of every layer (name -> Tying).  Where
    AffinityPropagation does not converge on a layer, find_tying's warning is
    replaced by one naming the layer, attributed to the first caller outside
    this module (find_tying's own pointed into it, without saying which
    layer)."""
    tying = {}
    for n, layer in layers.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NOT_CONVERGED, category=RuntimeWarning)
            tying[n] = find_tying(layer.weight, **kw)
        if not tying[n].converged:
            warnings.warn(f"layer {n!r}: {NOT_CONVERGED}; leaving its rows untied (find_tying's max_iter, damping, "
                          "convergence_iter: two_stage's tying_options)", RuntimeWarning, stacklevel=_outside_this_module())
    return tying


def _outside_this_module() -> int:
    """The ``stacklevel`` of a ``warnings.warn`` in this module's caller that
    names the first frame outside this module (two_stage is called by users
    and by growl_two_stage)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _check_tied_layers(layers: dict, grouping: str) -> None:
    """The refusals of the tying after stage 1, before it: every layer has a
    weight tensor that ``grouping`` applies to and that :func:`tie_rows` takes
    (not a grouped or transposed conv's, not a DTensor)."""
    for n, l in layers.items():
        w = getattr(l, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"layers: {n!r} ({type(l).__name__}) has no weight tensor to tie")
        row_maps(tuple(w.shape), grouping)  # ValueError naming the grouping where it does not apply
        B.check_conv_layout(l, "weight", B.canonical_grouping(grouping))  # tie_rows' refusal (grouped, transposed conv)
        B.refuse_sharded(l, "weight", "two_stage's tying (tie_rows)")  # tie_rows' refusal of a DTensor weight (FSDP2)


def _tying_keywords(layers: dict, grouping: str, preference, random_state, tying_options) -> dict:
    """:func:`find_tying`'s keywords for :func:`two_stage`, checked before
    stage 1 (not only by the tying after it): ``grouping`` applies to every
    layer's weight, ``preference`` is a real number, ``tying_options`` names
    only find_tying's other keywords."""
    import inspect

    _check_tied_layers(layers, grouping)
    _validate.real_scalar(preference, "preference")
    options = dict(tying_options or {})
    allowed = set(inspect.signature(find_tying).parameters) - {"W", "grouping", "preference", "random_state"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"tying_options: unknown keyword(s) {unknown}; find_tying takes {sorted(allowed)} "
                        "(grouping, preference and random_state are two_stage's own arguments)")
    return dict(grouping=grouping, preference=preference, random_state=random_state, **options)


def _fit_with_prox(model, batches, opt, prox: ProximalStep, epochs: int, loss_fn, scheduler, progress) -> list[float]:
    """:func:`fit` for ``epochs`` with ``prox`` attached (if it has terms),
    ending with a proximal step: where ``prox.every`` does not divide the
    number of optimizer steps, the last epoch is followed by
    ``prox.step(steps=r)`` for its r steps since the last proximal step,
    then by the scheduler's step of that epoch (as :func:`fit` would have
    stepped it, so the step's lr is the epoch's).  Returns the epochs'
    losses; the hook is removed."""
    if not prox.terms or epochs <= 0:
        return fit(model, batches, opt, epochs=epochs, loss_fn=loss_fn, scheduler=scheduler, progress=progress)
    handle = prox.attach()
    try:
        losses = fit(model, batches, opt, epochs=epochs - 1, loss_fn=loss_fn, scheduler=scheduler, progress=progress)
        losses += fit(model, batches, opt, epochs=1, loss_fn=loss_fn, progress=progress)
    finally:
        handle.remove()
    tail = prox.n_optimizer_steps % prox.every
    if tail:
        prox.step(steps=tail)
    if scheduler is not None:
        _step_scheduler(scheduler, losses[-1])
    return losses


def growl_two_stage(model: torch.nn.Module, layers, X, y=None, *, weights, strength: float = 1.0, grouping: str = "channel", **kw) -> TwoStageResult:
    """:func:`two_stage` with the GrOWL prox on ``grouping`` rows of each layer.

    ``weights``: an array or a lambda builder ``n_rows -> weights`` (see
    :func:`~proxlib.torch.growl`), e.g. the poster's stairwise weights
    ``lambda G: proxlib.owl_weights_stairwise(G, L1, L2, G // 2)``.
    """
    layers = _named(layers)
    _check_tied_layers(layers, grouping)  # (a layer without a weight named, before the terms' own refusal)

    def configure(prox):
        for n, l in layers.items():
            prox.add(l, growl(weights), grouping=grouping, strength=strength, label=f"{n}.growl")

    configure(ProximalStep())  # weights and strength checked before any training (two_stage adds the terms after the warm-up)
    return two_stage(model, layers, X, y, configure=configure, grouping=grouping, **kw)


# ------------------------------------------------------------------ affine scaling


@dataclass
class AffineScalingResult:
    """What :func:`affine_scaling_prune` measured (accuracies on ``test``, NaN without it):
    after re-weighted training, right after pruning, after retraining."""

    accuracy_reweighted: float
    accuracy_pruned: float
    accuracy: float
    metrics: dict[str, LayerMetrics]
    masks: list[torch.Tensor]
    n_reweights: int = 0


def affine_scaling_prune(
    model: torch.nn.Module,
    layers,
    X,
    y=None,
    *,
    make_optimizer: Callable,
    rule: str = "l1",
    tau: float | Callable[[int], float] = 1e-4,
    p: float = 0.5,
    every: int | str = 100,
    init: str = "greedy",
    sigma: float = 0.0,
    guard: bool = True,
    cycle: bool = False,
    epochs: int,
    amount=None,
    threshold: float | None = None,
    scope: str = "layer",
    retrain_epochs: int,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    test=None,
    progress=None,
    loss_fn: Callable = F.cross_entropy,
    make_scheduler: Callable | None = None,
    on_reweight: Callable | None = None,
    reweight_first: bool = False,
) -> AffineScalingResult:
    """Fedorov & Rao's procedure on ``layers``: AST training, pruning, retraining.

    1. :func:`~proxlib.torch.affine_scaling` on each layer; train ``epochs`` with
       ``omega`` recomputed after every ``every`` optimizer steps (``"epoch"``:
       once per epoch) or, with ``reweight_first=True``, before each block of
       ``every`` steps: Fedorov & Rao's Algorithm 1 from a trained network
       (omega first from the weights given; no re-weighting after the last
       step, which otherwise shrinks the weights untrained before pruning),
       by ``rule`` (``"l1"``, ``"l2"``, ``"focuss"`` with ``p``;
       ``tau`` a number or a function of the re-weighting index for
       annealing; ``init``, ``sigma`` and ``guard`` as in
       :func:`~proxlib.torch.reweight`), for every layer at once or, with
       ``cycle=True``, for one layer per re-weighting in turn (the paper's
       greedy runs).  ``on_reweight(schedule)`` is called after each.
    2. :func:`~proxlib.torch.magnitude_prune` with ``amount`` (one fraction,
       or one per layer as a list or a dict keyed like ``layers``, its keys
       exactly their names; ``scope``
       ``"layer"`` or ``"global"``) or ``threshold``.
    3. Retrain ``retrain_epochs`` with a fresh optimizer; pruned weights stay 0.

    ``X, y``: tensors, or a DataLoader as ``X``; ``test``: ``(X, y)`` or a
    DataLoader; ``make_scheduler(optimizer)``: a scheduler per stage.
    """
    layers = _named(layers)
    epochs, retrain_epochs = _validate.count(epochs, "epochs"), _validate.count(retrain_epochs, "retrain_epochs")
    batches = _source(X, y, batch_size, generator)
    every = _resolve_every(every, batches, "every")
    if isinstance(amount, dict):
        missing = sorted(set(layers) - set(amount))
        if missing:
            raise ValueError(f"amount has no fraction for layer(s) {missing}")
        extra = sorted(set(amount) - set(layers), key=str)
        if extra:  # (a layer named there but not in layers would be neither trained nor pruned)
            raise ValueError(f"amount has fractions for {extra}, which are not among the layers {list(layers)}")
        amount = [amount[n] for n in layers]
    # every option is checked before the layers are re-parametrised and trained
    # (not only by magnitude_prune or the first re-weighting, after training)
    _check_reweight_options(rule=rule, tau=tau, p=p, init=init, sigma=sigma)
    _check_prune_options(len(layers), amount, threshold, scope)
    _check_test(test)
    done = []
    try:
        for l in layers.values():
            affine_scaling(l)
            done.append(l)
        opt = make_optimizer(model.parameters())
        sched = AffineScalingSchedule(
            list(layers.values()), every=every, rule=rule, tau=tau, p=p, init=init, sigma=sigma, guard=guard,
            generator=generator, cycle=cycle, on_reweight=on_reweight,
        )
    except BaseException:
        for l in done:  # the layers as they were (omega is still 1: theta = q exactly)
            remove_affine_scaling(l)
        raise
    handle = sched.attach(opt, before=bool(reweight_first))
    lr_sched = make_scheduler(opt) if make_scheduler is not None else None
    fit(model, batches, opt, epochs=epochs, loss_fn=loss_fn, scheduler=lr_sched, progress=progress)
    handle.remove()
    acc0 = _accuracy(model, test)
    masks = magnitude_prune(list(layers.values()), amount=amount, threshold=threshold, scope=scope)
    acc1 = _accuracy(model, test)
    opt2 = make_optimizer(model.parameters())
    lr_sched2 = make_scheduler(opt2) if make_scheduler is not None else None
    fit(model, batches, opt2, epochs=retrain_epochs, loss_fn=loss_fn, scheduler=lr_sched2, progress=progress)
    acc2 = _accuracy(model, test)
    return AffineScalingResult(acc0, acc1, acc2, model_metrics(model, layers), masks, sched.n_reweights)

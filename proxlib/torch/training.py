r"""The seeds' training procedures end to end, on in-memory classification data.

* :func:`two_stage` / :func:`growl_two_stage` -- the GrOWL poster's procedure:
  (1) train with proximal steps (GrOWL on the input neurons, or any other
  terms), (2) find the tying structure of the chosen layers
  (:func:`~proxlib.torch.find_tying`), (3) retrain with zero rows pruned and
  each cluster of rows tied (:class:`~proxlib.torch.TiedRows`) and a fresh
  optimizer (state reset).  The retraining stage has no penalty; the
  optimizer's own ``weight_decay`` still applies if ``make_optimizer`` sets it.
* :func:`affine_scaling_prune` -- Fedorov & Rao: train in ``q`` with
  ``theta = q * omega``, ``omega`` re-weighted every K steps, then magnitude
  pruning and retraining with the mask fixed.

SSL and the combined group + exclusive penalty are prox terms only
(:func:`~proxlib.torch.add_ssl`, :func:`~proxlib.torch.add_group_exclusive`),
trained with :func:`fit` and an attached :class:`~proxlib.torch.ProximalStep`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .metrics import LayerMetrics, model_metrics
from .prox import ProximalStep, growl
from .reweighting import AffineScalingSchedule, affine_scaling, magnitude_prune
from .tying import Tying, find_tying, tie_rows

__all__ = ["fit", "evaluate", "TwoStageResult", "two_stage", "growl_two_stage", "AffineScalingResult", "affine_scaling_prune"]


def fit(
    model: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    loss_fn: Callable = F.cross_entropy,
    progress=None,
) -> list[float]:
    """Minibatch training for ``epochs`` (shuffled by ``generator``); returns the
    mean loss of each epoch.  Hooks registered on ``optimizer`` (a
    :class:`~proxlib.torch.ProximalStep`, a schedule) run after every step;
    ``progress`` (e.g. a ``tqdm`` bar) is advanced by one per step.
    """
    model.train()
    n = X.shape[0]
    losses = []
    for _ in range(int(epochs)):
        perm = torch.randperm(n, generator=generator)
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total = total + loss.detach() * idx.numel()  # stays on the device: no sync per step
            count += idx.numel()
            if progress is not None:
                progress.update(1)
        losses.append(float(total) / max(count, 1))
    return losses


def evaluate(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Classification accuracy of ``model`` on ``(X, y)``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            correct += int((model(X[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train()
    return correct / max(X.shape[0], 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-int(n) // int(batch_size))


@dataclass
class TwoStageResult:
    """What :func:`two_stage` measured.  Accuracies are on ``test`` (NaN without it)."""

    tying: dict[str, Tying]
    accuracy_trained: float
    accuracy: float
    metrics_trained: dict[str, LayerMetrics]
    metrics: dict[str, LayerMetrics]
    losses: list[float] = field(default_factory=list)
    weights_trained: dict[str, torch.Tensor] = field(default_factory=dict)


def _named(layers) -> dict:
    return dict(layers) if isinstance(layers, dict) else {f"layer{i}": m for i, m in enumerate(layers)}


def two_stage(
    model: torch.nn.Module,
    layers,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    make_optimizer: Callable,
    configure: Callable[[ProximalStep], object] | None = None,
    epochs: int,
    retrain_epochs: int,
    batch_size: int = 64,
    grouping: str = "channel",
    preference: float = 0.8,
    random_state: int = 0,
    tying_options: dict | None = None,
    generator: torch.Generator | None = None,
    test: tuple | None = None,
    progress=None,
) -> TwoStageResult:
    """Train (with the prox terms ``configure(prox)`` adds), tie, retrain.

    Parameters
    ----------
    model, layers
        The network and the layers whose rows are tied (dict name -> module or list).
    X, y
        Training data (tensors on the model's device).
    make_optimizer : params -> Optimizer
        Called once per stage, so the retraining stage starts with fresh
        optimizer state.
    configure : ProximalStep -> any, optional
        Adds the stage-1 prox terms (none: plain training).
    epochs, retrain_epochs, batch_size
        Stage lengths.
    grouping, preference, random_state, tying_options
        Passed to :func:`~proxlib.torch.find_tying` for each layer
        (``tying_options``: its other keywords, e.g. ``max_iter``).
    test : (X_test, y_test), optional
        For the accuracies.

    Returns
    -------
    :class:`TwoStageResult`; the model is left tied (its ``state_dict`` holds
    the cluster labels of every tied layer).
    """
    layers = _named(layers)
    opt = make_optimizer(model.parameters())
    prox = ProximalStep(opt)
    if configure is not None:
        configure(prox)
    handle = prox.attach() if prox.terms else None
    losses = fit(model, X, y, opt, epochs=epochs, batch_size=batch_size, generator=generator, progress=progress)
    if handle is not None:
        handle.remove()
    acc1 = evaluate(model, *test) if test is not None else float("nan")
    m1 = model_metrics(model, layers, grouping=grouping)
    trained = {n: l.weight.detach().clone() for n, l in layers.items()}
    kw = dict(grouping=grouping, preference=preference, random_state=random_state, **(tying_options or {}))
    tying = {n: find_tying(l.weight, **kw) for n, l in layers.items()}
    for n, l in layers.items():
        tie_rows(l, tying[n], grouping=grouping)
    opt2 = make_optimizer(model.parameters())  # optimizer state reset
    losses += fit(model, X, y, opt2, epochs=retrain_epochs, batch_size=batch_size, generator=generator, progress=progress)
    acc2 = evaluate(model, *test) if test is not None else float("nan")
    return TwoStageResult(tying, acc1, acc2, m1, model_metrics(model, layers, grouping=grouping), losses, trained)


def growl_two_stage(model: torch.nn.Module, layers, X, y, *, weights, strength: float = 1.0, grouping: str = "channel", **kw) -> TwoStageResult:
    """:func:`two_stage` with the GrOWL prox on ``grouping`` rows of each layer.

    ``weights``: an array or a lambda builder ``n_rows -> weights`` (see
    :func:`~proxlib.torch.growl`), e.g. the poster's stairwise weights
    ``lambda G: proxlib.owl_weights_stairwise(G, L1, L2, G // 2)``.
    """
    layers = _named(layers)

    def configure(prox):
        for n, l in layers.items():
            prox.add(l, growl(weights), grouping=grouping, strength=strength, label=f"{n}.growl")

    return two_stage(model, layers, X, y, configure=configure, grouping=grouping, **kw)


@dataclass
class AffineScalingResult:
    accuracy_reweighted: float
    accuracy_pruned: float
    accuracy: float
    metrics: dict[str, LayerMetrics]
    masks: list[torch.Tensor]


def affine_scaling_prune(
    model: torch.nn.Module,
    layers,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    make_optimizer: Callable,
    rule: str = "l1",
    tau: float = 1e-4,
    p: float = 0.5,
    every: int = 100,
    init: str = "greedy",
    sigma: float = 0.0,
    epochs: int,
    amount: float | None = None,
    threshold: float | None = None,
    retrain_epochs: int,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    test: tuple | None = None,
    progress=None,
) -> AffineScalingResult:
    """Fedorov & Rao's procedure on ``layers``: AST training, pruning, retraining.

    1. :func:`~proxlib.torch.affine_scaling` on each layer; train ``epochs`` with
       ``omega`` recomputed every ``every`` optimizer steps by ``rule``
       (``"l1"``, ``"l2"``, ``"focuss"`` with ``p``; ``tau``; ``init`` and
       ``sigma`` as in :func:`~proxlib.torch.reweight`).
    2. :func:`~proxlib.torch.magnitude_prune` with ``amount`` or ``threshold``.
    3. Retrain ``retrain_epochs`` with a fresh optimizer; pruned weights stay 0.
    """
    layers = _named(layers)
    for l in layers.values():
        affine_scaling(l)
    opt = make_optimizer(model.parameters())
    sched = AffineScalingSchedule(list(layers.values()), every=every, rule=rule, tau=tau, p=p, init=init, sigma=sigma, generator=generator)
    handle = sched.attach(opt)
    fit(model, X, y, opt, epochs=epochs, batch_size=batch_size, generator=generator, progress=progress)
    handle.remove()
    acc0 = evaluate(model, *test) if test is not None else float("nan")
    masks = magnitude_prune(list(layers.values()), amount=amount, threshold=threshold)
    acc1 = evaluate(model, *test) if test is not None else float("nan")
    opt2 = make_optimizer(model.parameters())
    fit(model, X, y, opt2, epochs=retrain_epochs, batch_size=batch_size, generator=generator, progress=progress)
    acc2 = evaluate(model, *test) if test is not None else float("nan")
    return AffineScalingResult(acc0, acc1, acc2, model_metrics(model, layers), masks)

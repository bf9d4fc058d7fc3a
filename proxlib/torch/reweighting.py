r"""Affine-scaling re-weighting (Fedorov & Rao), then magnitude pruning and retraining.

Each weight is reparametrised as :math:`\theta = q \odot \omega` and the network
is trained in ``q`` (Eq. 6); every K optimizer steps ``omega`` is recomputed from
the current :math:`\theta` by a re-weighting rule (the ``.omega`` of
:func:`proxlib.reweight_l1`, :func:`proxlib.reweight_l2` or
:func:`proxlib.reweight_focuss`):

===========  ============================================  ==============
rule         :math:`\omega`                                 paper
===========  ============================================  ==============
``"l1"``     :math:`|\theta| + \tau`                        Eq. 8
``"l2"``     :math:`\sqrt{\theta^2 + \tau}`                 Eq. 9
``"focuss"`` :math:`|\theta|^{2-p} + \tau`                  Eq. 10
===========  ============================================  ==============

Small weights get small scales, so their gradients ``omega * dL/dtheta`` shrink
and they drift towards zero; afterwards :func:`magnitude_prune` zeroes the
small ones (``torch.nn.utils.prune``, mask kept as a buffer) for retraining.

``q`` at a re-weighting (``init``): ``"greedy"`` keeps the trained ``q`` (the
paper's greedy strategy: :math:`\theta` becomes :math:`q \odot \omega_{new}`),
``"rescale"`` sets :math:`q = \theta / \omega_{new}` (theta unchanged),
``"noise"`` adds :math:`\mathcal N(0, \sigma^2)` to that (Eq. 11).  The first
re-weighting always rescales (there is no trained ``q`` yet).  Since ``q``
may jump, reset or rebuild optimizer state that depends on it if needed.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize, prune

import proxlib

from . import _bridge as B

__all__ = ["AffineScaling", "affine_scaling", "reweight", "AffineScalingSchedule", "magnitude_prune", "remove_affine_scaling"]

_RULES = ("l1", "l2", "focuss")


class AffineScaling(torch.nn.Module):
    r"""Parametrization :math:`\theta = q \odot \omega` with ``omega`` a buffer.

    ``omega`` (same shape as the weight, initially ones) and the number of
    re-weightings done (``n_reweights``) are buffers, hence in ``state_dict``.
    """

    def __init__(self, shape, dtype=torch.float32, device=None):
        super().__init__()
        self.register_buffer("omega", torch.ones(shape, dtype=dtype, device=device))
        self.register_buffer("n_reweights", torch.zeros((), dtype=torch.int64, device=device))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q * self.omega

    def right_inverse(self, theta: torch.Tensor) -> torch.Tensor:
        return theta / self.omega


def _scaling(module: torch.nn.Module, name: str) -> AffineScaling:
    if parametrize.is_parametrized(module, name):
        for p in module.parametrizations[name]:
            if isinstance(p, AffineScaling):
                return p
    raise ValueError(f"{type(module).__name__}.{name} has no AffineScaling parametrization (call affine_scaling first)")


def affine_scaling(module: torch.nn.Module, name: str = "weight") -> AffineScaling:
    """Register :class:`AffineScaling` (omega = 1, so q = theta) on ``module.<name>``."""
    B.refuse_sharded(module, name, "affine_scaling")
    w = getattr(module, name)
    p = AffineScaling(w.shape, dtype=w.dtype, device=w.device)
    parametrize.register_parametrization(module, name, p)
    return p


def _omega(theta, rule: str, tau: float, p: float):
    if rule == "l1":
        return proxlib.reweight_l1(theta, tau).omega
    if rule == "l2":
        return proxlib.reweight_l2(theta, tau).omega
    if rule == "focuss":
        return proxlib.reweight_focuss(theta, p, tau).omega
    raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")


def reweight(
    module: torch.nn.Module,
    *,
    rule: str = "l1",
    tau: float = 1e-4,
    p: float = 0.5,
    init: str = "greedy",
    sigma: float = 0.0,
    generator: torch.Generator | None = None,
    name: str = "weight",
) -> None:
    r"""Recompute ``omega`` of ``module.<name>`` from the current theta = q * omega.

    ``rule`` is ``"l1"``, ``"l2"`` or ``"focuss"`` (with exponent ``p``, 0 <= p <= 2),
    ``tau`` > 0 their stabiliser; ``init`` is ``"greedy"``, ``"rescale"`` or
    ``"noise"`` (with ``sigma``) as in the module docstring.  Both ``omega`` and
    ``q`` are updated in place (their storage is kept).
    """
    if init not in ("greedy", "rescale", "noise"):
        raise ValueError(f"init must be 'greedy', 'rescale' or 'noise', got {init!r}")
    scaling = _scaling(module, name)
    q = module.parametrizations[name].original
    with torch.no_grad():
        theta = B.working_tensor(q * scaling.omega)
        omega = _omega(theta, rule, tau, p)
        first = int(scaling.n_reweights) == 0
        if init != "greedy" or first:
            new_q = theta / omega
            if init == "noise" and sigma > 0:
                new_q = new_q + sigma * torch.randn(new_q.shape, generator=generator, dtype=new_q.dtype).to(new_q.device)
            q.copy_(new_q)
        scaling.omega.copy_(omega)
        scaling.n_reweights += 1


class AffineScalingSchedule:
    """Re-weight ``modules`` every ``every`` optimizer steps (attach as a step post hook).

    ``state_dict()`` holds the step counter; the scales themselves are buffers
    of the :class:`AffineScaling` parametrizations, in the model's ``state_dict``.

    >>> import torch, proxlib.torch as pt
    >>> lin = torch.nn.Linear(6, 3)
    >>> _ = pt.affine_scaling(lin)
    >>> opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    >>> sched = pt.AffineScalingSchedule([lin], every=2, rule="l1", tau=1e-3)
    >>> handle = sched.attach(opt)
    >>> for _ in range(4):
    ...     opt.zero_grad(); lin(torch.randn(8, 6)).sum().backward(); opt.step()
    >>> int(lin.parametrizations.weight[0].n_reweights)
    2
    """

    def __init__(self, modules, *, every: int, name: str = "weight", **rule_kw):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.modules = list(modules)
        self.every = int(every)
        self.name = name
        self.rule_kw = rule_kw
        self.n_steps = 0
        for m in self.modules:
            _scaling(m, name)

    def step(self) -> bool:
        """Count one optimizer step; re-weight when the count reaches a multiple of ``every``."""
        self.n_steps += 1
        if self.n_steps % self.every:
            return False
        for m in self.modules:
            reweight(m, name=self.name, **self.rule_kw)
        return True

    def attach(self, optimizer: torch.optim.Optimizer):
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())

    def state_dict(self) -> dict:
        return {"n_steps": self.n_steps, "every": self.every}

    def load_state_dict(self, state: dict) -> None:
        self.n_steps = int(state["n_steps"])
        self.every = int(state["every"])


def remove_affine_scaling(module: torch.nn.Module, name: str = "weight") -> None:
    """Bake theta = q * omega into a plain parameter again."""
    _scaling(module, name)
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def magnitude_prune(modules, *, amount: float | None = None, threshold: float | None = None, name: str = "weight") -> list[torch.Tensor]:
    """Zero the smallest-magnitude weights of each module (per layer), with a kept mask.

    Exactly one of ``amount`` (fraction in [0, 1] pruned per layer) or
    ``threshold`` (weights with ``|w| <= threshold`` pruned) is required.  An
    :class:`AffineScaling` parametrization is baked in first.  Uses
    ``torch.nn.utils.prune.custom_from_mask``: the mask is the buffer
    ``<name>_mask`` (in ``state_dict``), the optimised leaf ``<name>_orig``.
    Returns the masks.
    """
    if (amount is None) == (threshold is None):
        raise ValueError("give exactly one of amount= or threshold=")
    masks = []
    for m in modules:
        B.refuse_sharded(m, name, "magnitude_prune")
        if parametrize.is_parametrized(m, name):
            remove_affine_scaling(m, name)
        with torch.no_grad():
            w = getattr(m, name).detach()
            a = w.abs()
            if threshold is not None:
                mask = a > float(threshold)
            else:
                if not 0.0 <= float(amount) <= 1.0:
                    raise ValueError(f"amount must lie in [0, 1], got {amount}")
                k = int(round(float(amount) * a.numel()))
                mask = torch.ones_like(a, dtype=torch.bool)
                if k > 0:
                    idx = torch.argsort(a.reshape(-1), stable=True)[:k]
                    mask.view(-1)[idx] = False
        prune.custom_from_mask(m, name, mask.to(w.dtype))
        masks.append(getattr(m, name + "_mask"))
    return masks

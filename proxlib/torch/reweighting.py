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

**The guard** (``guard=True``, the default).  A greedy re-weighting multiplies
each weight by :math:`\omega_{new}/\omega_{old} = |q| + \tau/\omega_{old}`
(rule ``"l1"``): a weight whose trained ``|q|`` exceeds 1 grows by that
factor at every re-weighting, geometrically when they are frequent (with
``init="greedy"``, ``every=20``, ``tau=1e-3`` one weight went from 0.2 to 944
and retraining collapsed).  The paper asks that a re-weighting "not take the
network too far from its state"; the guard makes that exact: a greedy
re-weighting never increases a weight's magnitude.  Entries where
:math:`|q\,\omega_{new}| > |\theta_{old}|` keep their value (``q`` is set to
:math:`\theta_{old}/\omega_{new}` there); the others follow the greedy rule,
so weights still shrink towards zero.  ``guard=False`` is the unguarded rule.
A re-weighting that would produce a non-finite ``omega`` or ``q`` raises
``FloatingPointError`` (naming the layer) either way.
"""

from __future__ import annotations

import numbers

import torch
from torch.nn.utils import parametrize, prune

import proxlib
from proxlib import _validate as V

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
        chain = list(module.parametrizations[name])
        for i, p in enumerate(chain):
            if isinstance(p, AffineScaling):
                if i:  # reweight forms theta = q * omega from the leaf q
                    raise ValueError(
                        f"{type(module).__name__}.{name}: the AffineScaling comes after "
                        f"{[type(c).__name__ for c in chain[:i]]}; re-weighting needs it first "
                        "(call affine_scaling before tie_rows or any other parametrization)"
                    )
                return p
    raise ValueError(f"{type(module).__name__}.{name} has no AffineScaling parametrization (call affine_scaling first)")


def affine_scaling(module: torch.nn.Module, name: str = "weight") -> AffineScaling:
    """Register :class:`AffineScaling` (omega = 1, so q = theta) on ``module.<name>``.

    It must be the tensor's first parametrization (ValueError otherwise):
    :func:`reweight` forms theta = q * omega from the leaf q.  Others (e.g.
    :func:`~proxlib.torch.tie_rows`) may be registered after it."""
    B.refuse_sharded(module, name, "affine_scaling")
    if parametrize.is_parametrized(module, name):
        others = [type(p).__name__ for p in module.parametrizations[name]]
        raise ValueError(
            f"affine_scaling: {type(module).__name__}.{name} has the parametrization(s) {others} already; "
            "register AffineScaling first (re-weighting forms theta = q * omega from the leaf q, which a "
            "parametrization before it would change), e.g. before tie_rows"
        )
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
    guard: bool = True,
) -> int:
    r"""Recompute ``omega`` of ``module.<name>`` from the current theta = q * omega.

    ``rule`` is ``"l1"``, ``"l2"`` or ``"focuss"`` (with exponent ``p``, 0 <= p <= 2),
    ``tau`` > 0 their stabiliser; ``init`` is ``"greedy"``, ``"rescale"`` or
    ``"noise"`` (with ``sigma`` >= 0; a ``sigma`` > 0 with another ``init`` is
    refused) as in the module docstring; the noise is drawn with ``generator``
    on its device (default: torch's CPU generator) and moved to the weight's.  Both ``omega`` and
    ``q`` are updated in place (their storage is kept).  With ``guard`` (the
    default) a greedy re-weighting never increases any ``|theta|`` (see the
    module docstring).  Returns the number of entries the guard held back
    (0 without it or when nothing would have grown).

    Raises ``FloatingPointError`` (naming the layer) if the weights, the new
    ``omega`` or the new ``q`` are not finite.
    """
    _check_options(rule=rule, tau=tau, p=p, init=init, sigma=sigma)
    scaling = _scaling(module, name)
    q = module.parametrizations[name].original
    held = 0
    with torch.no_grad():
        theta = B.working_tensor(q * scaling.omega)
        if not bool(torch.isfinite(theta).all()):
            raise FloatingPointError(f"re-weighting {type(module).__name__}.{name}: the weights hold NaN or Inf (training diverged)")
        try:
            omega = _omega(theta, rule, tau, p)
        except ValueError as e:  # (the options and theta are checked: omega or 1/omega overflows theta's dtype)
            raise FloatingPointError(f"re-weighting {type(module).__name__}.{name} (rule {rule!r}, tau {tau}): {e}") from e
        omega_f = omega.to(scaling.omega.dtype)  # as stored, and as the forward multiplies
        if not bool(torch.isfinite(omega_f).all()):
            # (e.g. FOCUSS's |theta|^(2-p) of half-precision weights: finite in
            # float32, inf once stored, and q * omega then inf: checked before anything is written)
            raise FloatingPointError(
                f"re-weighting {type(module).__name__}.{name} (rule {rule!r}, tau {tau}) gave an omega beyond "
                f"{scaling.omega.dtype}'s range; max |theta| = {float(theta.abs().max()):.3g}"
            )
        first = int(scaling.n_reweights) == 0
        if init != "greedy" or first:
            new_q = theta / omega
            if init == "noise" and sigma > 0:
                # drawn on the generator's device (a CPU generator's numbers are the
                # same for a model on any device; a CUDA one draws there)
                at = generator.device if generator is not None else torch.device("cpu")
                new_q = new_q + sigma * torch.randn(new_q.shape, generator=generator, dtype=new_q.dtype, device=at).to(new_q.device)
        else:
            new_q = B.working_tensor(q)
            if guard:
                # in the dtypes the forward multiplies in (q * omega, half precision as it is)
                grows = (q.detach() * omega_f).abs() > theta.abs()
                held = int(grows.sum())
                if held:
                    new_q = torch.where(grows, theta / omega, new_q).to(q.dtype)
                    # (theta / omega) * omega can round one unit above |theta|: such q step
                    # towards 0 until it does not (|q| shrinks, so this ends, at q = 0 at worst)
                    while True:
                        over = (new_q * omega_f).abs() > theta.abs()
                        if not bool(over.any()):
                            break
                        new_q = torch.where(over, torch.nextafter(new_q, torch.zeros_like(new_q)), new_q)
        if not (bool(torch.isfinite(omega).all()) and bool(torch.isfinite(new_q).all())):
            raise FloatingPointError(
                f"re-weighting {type(module).__name__}.{name} (rule {rule!r}, tau {tau}) gave a non-finite omega or q; "
                f"max |theta| = {float(theta.abs().max()):.3g}"
            )
        q.copy_(new_q)
        scaling.omega.copy_(omega)
        scaling.n_reweights += 1
    return held


def _check_options(*, rule="l1", tau=1e-4, p=0.5, init="greedy", sigma=0.0, **_) -> None:
    """The checks of :func:`reweight`'s options (ValueError / TypeError naming
    them), made before anything is computed; ``tau`` may be a function (a
    schedule's annealing), checked when it is called."""
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    if init not in ("greedy", "rescale", "noise"):
        raise ValueError(f"init must be 'greedy', 'rescale' or 'noise', got {init!r}")
    if not callable(tau):
        V.positive(tau, "tau")
    if rule == "focuss" and not 0 <= V.real_scalar(p, "p") <= 2:
        raise ValueError(f"p must lie in [0, 2], got {p}")
    if V.nonnegative(sigma, "sigma") > 0 and init != "noise":
        raise ValueError(f"sigma = {sigma} adds noise only with init='noise', got init={init!r}")


class AffineScalingSchedule:
    """Re-weight ``modules`` every ``every`` optimizer steps (:meth:`attach`:
    after each block of steps, or before it).

    ``every`` is an integer >= 1 (ValueError otherwise, also from
    :meth:`load_state_dict`); ``rule_kw`` go to :func:`reweight` (``rule``, ``tau``, ``p``, ``init``,
    ``sigma``, ``generator``, ``guard``), checked here as :func:`reweight`
    checks them (not only at the first re-weighting, ``every`` steps into
    training); ``tau`` may also be a function of
    the re-weighting index ``t = 0, 1, ...`` (annealing, as the paper does for
    re-weighted l2).  With ``cycle=True`` each re-weighting updates one module,
    in turn (the paper's greedy runs update one layer per iteration);
    otherwise all of them.  ``on_reweight(schedule)`` is called after each
    re-weighting.  ``n_reweights`` counts re-weightings, ``n_held`` the
    entries the guard held back in total.

    ``state_dict()`` holds the counters; the scales themselves are buffers
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

    def __init__(self, modules, *, every: int, name: str = "weight", cycle: bool = False, on_reweight=None, **rule_kw):
        every = V.positive_count(every, "every")
        unknown = sorted(set(rule_kw) - {"rule", "tau", "p", "init", "sigma", "generator", "guard"})
        if unknown:
            raise TypeError(f"unknown re-weighting option(s) {unknown}")
        _check_options(**rule_kw)
        self.modules = list(modules)
        if cycle and not self.modules:
            raise ValueError("AffineScalingSchedule(cycle=True) needs at least one module to re-weight in turn")
        self.every = every
        self.name = name
        self.cycle = bool(cycle)
        self.on_reweight = on_reweight
        self.rule_kw = rule_kw
        self.n_steps = 0
        self.n_reweights = 0
        self.n_held = 0
        for m in self.modules:
            _scaling(m, name)

    def reweight_now(self) -> None:
        """One re-weighting (of every module, or of the next one with ``cycle``)."""
        kw = dict(self.rule_kw)
        if callable(kw.get("tau")):
            kw["tau"] = float(kw["tau"](self.n_reweights))
        mods = [self.modules[self.n_reweights % len(self.modules)]] if self.cycle else self.modules
        for m in mods:
            self.n_held += reweight(m, name=self.name, **kw)
        self.n_reweights += 1
        if self.on_reweight is not None:
            self.on_reweight(self)

    def step(self) -> bool:
        """Count one optimizer step; re-weight when the count reaches a multiple of ``every``."""
        self.n_steps += 1
        if self.n_steps % self.every:
            return False
        self.reweight_now()
        return True

    def step_before(self) -> bool:
        """Before an optimizer step: re-weight when the steps counted so far
        are a multiple of ``every`` (none included), then count this one."""
        due = self.n_steps % self.every == 0
        if due:
            self.reweight_now()
        self.n_steps += 1
        return due

    def attach(self, optimizer: torch.optim.Optimizer, *, before: bool = False):
        """Re-weight from ``optimizer``'s steps (returns the hook's handle):
        after every ``every``-th step (:meth:`step`, a step post hook), or
        with ``before=True`` before steps 1, ``every`` + 1, 2 ``every`` + 1,
        ... (:meth:`step_before`, a step pre hook): Fedorov & Rao's
        Algorithm 1, omega from the weights a block of training starts from,
        then that block; no re-weighting follows the last step."""
        if before:
            def before_step(opt, args, kwargs) -> None:  # (a pre hook must return None)
                self.step_before()

            return optimizer.register_step_pre_hook(before_step)
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())

    def state_dict(self) -> dict:
        return {"n_steps": self.n_steps, "every": self.every, "n_reweights": self.n_reweights, "n_held": self.n_held}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.  Every entry is checked before any is
        set (a ValueError or TypeError naming it; the schedule is then left
        as it was): ``every`` an integer >= 1 (as the constructor's), the
        counters integers >= 0."""
        n_steps = V.count(state["n_steps"], "n_steps")
        every = V.positive_count(state["every"], "every")
        n_reweights = V.count(state.get("n_reweights", 0), "n_reweights")
        n_held = V.count(state.get("n_held", 0), "n_held")
        self.n_steps, self.every, self.n_reweights, self.n_held = n_steps, every, n_reweights, n_held


def remove_affine_scaling(module: torch.nn.Module, name: str = "weight") -> None:
    """Bake theta = q * omega into a plain parameter again.

    Parametrizations registered after the AffineScaling (e.g. a
    :class:`~proxlib.torch.TiedRows`) stay, on the leaf that now holds theta
    (the same Parameter object as q, so an optimizer keeps it)."""
    scaling = _scaling(module, name)
    rest = list(module.parametrizations[name])[1:]
    if not rest:
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        return
    leaf = module.parametrizations[name].original
    with torch.no_grad():
        theta = leaf * scaling.omega
    parametrize.remove_parametrizations(module, name, leave_parametrized=False)  # the leaf q back in place
    with torch.no_grad():
        leaf.copy_(theta)
    for p in rest:
        parametrize.register_parametrization(module, name, p)


def magnitude_prune(
    modules, *, amount=None, threshold: float | None = None, scope: str = "layer", name: str = "weight"
) -> list[torch.Tensor]:
    """Zero the smallest-magnitude weights of ``modules``, with a kept mask.

    Exactly one of

    * ``amount``: the fraction in [0, 1] of weights pruned -- one number, or
      one per module (a sequence in the order of ``modules``).  With
      ``scope="layer"`` (default) each module loses ``round(amount * size)``
      of its own smallest weights; with ``scope="global"`` one number
      prunes the ``round(amount * total)`` smallest weights over all
      modules together (one threshold; ties broken by position);
    * ``threshold``: a finite number >= 0; weights with ``|w| <= threshold``
      are pruned (``scope`` ignored).

    An :class:`AffineScaling` parametrization is baked in first; a module
    whose ``<name>`` has any other parametrization (e.g.
    :class:`~proxlib.torch.TiedRows`) is refused (ValueError naming it and
    the parametrization: ``torch.nn.utils.prune`` cannot mask a
    parametrised tensor).  Everything is checked before any module is
    changed.  Uses ``torch.nn.utils.prune.custom_from_mask``: the mask is
    the buffer ``<name>_mask`` (in ``state_dict``), the optimised leaf
    ``<name>_orig``.  Returns the masks.
    """
    modules = list(modules)
    amounts, threshold = _check_prune_options(len(modules), amount, threshold, scope)
    for m in modules:
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"magnitude_prune: modules must be torch.nn.Module objects, got {type(m).__name__}")
        if not isinstance(getattr(m, name, None), torch.Tensor):
            raise TypeError(f"magnitude_prune: {type(m).__name__} has no tensor named {name!r}")
        B.refuse_sharded(m, name, "magnitude_prune")
        _check_only_affine_scaling(m, name)
    for m in modules:
        if parametrize.is_parametrized(m, name):
            remove_affine_scaling(m, name)
    weights = [getattr(m, name).detach() for m in modules]
    with torch.no_grad():
        if threshold is not None:
            # in float64: torch rounds a Python threshold to the weights' dtype, and a
            # float32 weight just above the threshold (0.1f > 0.1) was pruned
            masks = [w.abs().to(torch.float64) > threshold for w in weights]
        elif scope == "global" and weights:
            flat = torch.cat([w.abs().reshape(-1).to(torch.float64) for w in weights])
            keep = _keep_largest(flat, float(amounts[0]))
            masks = [k.reshape(w.shape) for k, w in zip(torch.split(keep, [w.numel() for w in weights]), weights)]
        else:  # per layer (or global over no modules: no masks)
            masks = [_keep_largest(w.abs().reshape(-1), float(a)).reshape(w.shape) for w, a in zip(weights, amounts)]
    out = []
    for m, w, mask in zip(modules, weights, masks):
        prune.custom_from_mask(m, name, mask.to(w.dtype))
        out.append(getattr(m, name + "_mask"))
    return out


def _check_prune_options(n_modules: int, amount, threshold, scope: str) -> tuple:
    """The checks of :func:`magnitude_prune`'s ``amount``, ``threshold`` and
    ``scope`` for ``n_modules`` modules (ValueError naming them), made before
    anything is changed; returns (one amount per module or None, the
    threshold as a float or None)."""
    if (amount is None) == (threshold is None):
        raise ValueError("give exactly one of amount= or threshold=")
    if threshold is not None:
        threshold = V.nonnegative(threshold, "threshold")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    amounts = None
    if amount is not None:
        if not isinstance(amount, (list, tuple)) and hasattr(amount, "tolist"):
            amount = amount.tolist()  # a NumPy array or tensor: its fractions (or its one number)
        amounts = list(amount) if isinstance(amount, (list, tuple)) else [amount] * n_modules
        if len(amounts) != n_modules:
            raise ValueError(f"amount has {len(amounts)} fractions for {n_modules} modules")
        for a in amounts:
            if isinstance(a, bool) or not isinstance(a, numbers.Real) or not 0.0 <= float(a) <= 1.0:
                raise ValueError(f"amount must lie in [0, 1], got {a!r}")
        if scope == "global" and len(set(map(float, amounts))) > 1:
            raise ValueError("scope='global' takes one amount for all modules, got several")
    return amounts, threshold


def _check_only_affine_scaling(module: torch.nn.Module, name: str) -> None:
    """A ValueError naming the module and the parametrizations if
    ``module.<name>`` has any parametrization but :class:`AffineScaling`."""
    if not parametrize.is_parametrized(module, name):
        return
    others = [type(p).__name__ for p in module.parametrizations[name] if not isinstance(p, AffineScaling)]
    if others:
        raise ValueError(
            f"magnitude_prune: {type(module).__name__}.{name} has the parametrization(s) {others}, which "
            "torch.nn.utils.prune cannot mask (only an AffineScaling is baked in first); remove them first "
            "(torch.nn.utils.parametrize.remove_parametrizations)"
        )


def _keep_largest(a: torch.Tensor, amount: float) -> torch.Tensor:
    """Boolean mask of ``a`` (1-D magnitudes) with the ``round(amount * n)`` smallest set False
    (stable: among equal magnitudes the first ones go)."""
    k = int(round(amount * a.numel()))
    mask = torch.ones_like(a, dtype=torch.bool)
    if k > 0:
        mask[torch.argsort(a, stable=True)[:k]] = False
    return mask

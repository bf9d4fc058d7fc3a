r"""The proximal step of proximal stochastic gradient, for torch optimizers.

After the optimizer has taken its step ``w <- w - lr * g(w)`` on the smooth loss,
:class:`ProximalStep` replaces every configured tensor ``w`` by

.. math::

    w \leftarrow \operatorname{prox}_{\mathrm{step}\,\Omega}(w)
      = \arg\min_x \tfrac12 \|x - w\|_F^2 + \mathrm{step}\;\Omega(x),
    \qquad \mathrm{step} = \mathrm{lr} \times \mathrm{strength},

where ``lr`` is the *current* learning rate of the parameter group that holds
``w`` (so learning-rate schedulers change the step) and ``Omega`` is one of
proxlib's penalties evaluated on the rows of ``w`` under a grouping (see
:func:`proxlib.to_rows`).  With plain SGD this is exactly proximal SGD for
``loss + strength * Omega``; with momentum or adaptive optimizers it is the
usual heuristic (the prox uses the group's lr, not a per-coordinate step).

The prox is computed by proxlib's exact operators on a zero-copy view of the
parameter (NumPy for CPU tensors, CuPy through DLPack for CUDA tensors) and
written back into the parameter's own storage (``data_ptr`` unchanged) under
``torch.no_grad``.  For parametrised (``torch.nn.utils.parametrize``) or pruned
(``torch.nn.utils.prune``) weights it acts on the leaf the optimizer updates
(``parametrizations.weight.original`` / ``weight_orig``).

Several terms on one tensor are applied in the order they were added, each
exactly.  Their composition is the prox of the sum only in special cases
(e.g. group lassos over nested groups applied from the finest to the coarsest,
such as ``"filter"`` then ``"layer"``); otherwise it is a splitting
approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

import proxlib
from proxlib._dispatch import array_namespace

from . import _bridge as B

__all__ = ["ProxTerm", "ProximalStep", "growl", "owl", "GroupExclusiveSequential"]


# ---------------------------------------------------------------- penalty helpers


class _Lazy:
    """A penalty whose parameters depend on the size of the tensor (built once per size)."""

    def __init__(self, build: Callable[[Any], Any], label: str):
        self._build = build
        self._label = label
        self._cache: dict[tuple, Any] = {}

    def resolve(self, V):
        key = (type(V).__module__, tuple(V.shape))  # NumPy and CuPy get their own copy
        pen = self._cache.get(key)
        if pen is None:
            pen = self._cache[key] = self._build(V)
        return pen

    def __repr__(self) -> str:
        return self._label


def _weights(spec, n: int, like):
    """The weights for n rows, built once and kept on ``like``'s device (so a
    CUDA tensor's prox does not copy them to the device at every step); their
    dtype is left to the core, which forms step * weights in float64."""
    w = spec(n) if callable(spec) else spec
    return array_namespace(like).asarray(w)


def _n_rows(V) -> int:
    """Rows as the core's group operators see them (a 1-D tensor is one row)."""
    return int(V.shape[0]) if V.ndim > 1 else 1


def growl(weights) -> _Lazy:
    r"""GrOWL over the rows of the (grouped) tensor, weights built from the row count.

    ``weights`` is an array of length G (the number of rows) or a *lambda
    builder* ``G -> array``, e.g.
    ``lambda G: proxlib.owl_weights_stairwise(G, 1e-3, 1e-4, G // 2)``.

    .. math:: \Omega(W) = \sum_{i=1}^{G} \lambda_i \|w_{[i]}\|_2

    >>> import proxlib, proxlib.torch as pt
    >>> pen = pt.growl(lambda G: proxlib.owl_weights_oscar(G, 1e-3, 1e-5))
    """
    return _Lazy(lambda V: proxlib.GrOWL(_weights(weights, _n_rows(V), V)), f"growl({weights!r})")


def owl(weights) -> _Lazy:
    r"""OWL over all entries of the (grouped) tensor; ``weights`` an array of
    length n (the number of entries) or a builder ``n -> array``.

    .. math:: \Omega(x) = \sum_{i=1}^{n} \lambda_i |x|_{[i]}
    """
    return _Lazy(lambda V: proxlib.OWL(_weights(weights, int(V.size), V)), f"owl({weights!r})")


@dataclass(frozen=True)
class GroupExclusiveSequential:
    r"""The seed thesis' Algorithm 1 for the combined penalty (an APPROXIMATION).

    ``value`` is the combined penalty of :class:`proxlib.GroupExclusive`,

    .. math:: \Omega(W) = \mathrm{lam} \sum_g \big((1-\mu)\|w_g\|_2 + \tfrac{\mu}{2}\|w_g\|_1^2\big),

    but ``prox`` is :func:`proxlib.prox_group_exclusive_sequential` (group prox
    then the thesis' Eq. 8 exclusive step, or the exact exclusive prox with
    ``exclusive_step="exact"``), which is not the prox of that sum.  Provided
    to compare with the exact :class:`proxlib.GroupExclusive`.
    """

    lam: float
    mu: float
    exclusive_step: str = "thesis"

    def value(self, x) -> float:
        return proxlib.GroupExclusive(self.lam, self.mu).value(x)

    def prox(self, v, step=1.0):
        return proxlib.prox_group_exclusive_sequential(v, self.lam, self.mu, step, exclusive_step=self.exclusive_step)


# ------------------------------------------------------------------------ terms


@dataclass
class ProxTerm:
    """One penalty on one tensor: ``strength * penalty`` over ``grouping`` rows.

    ``target`` is a tensor or a module (``name`` picks its tensor; the leaf is
    re-resolved at every step, so pruning or parametrising the module later is
    followed).  ``penalty`` is any object with ``prox(v, step)`` and
    ``value(x)`` (proxlib's penalty classes), or :func:`growl` / :func:`owl`
    whose weights are built from the tensor's size, or any callable
    ``n_rows -> penalty``.  ``grouping`` is ``None`` (the tensor as it is: group
    penalties then take ``W.reshape(W.shape[0], -1)``'s rows, the filters) or
    one of :data:`proxlib.GROUPINGS`.
    """

    target: Any
    penalty: Any
    grouping: str | None = None
    strength: float = 1.0
    name: str = "weight"
    label: str = ""

    def __post_init__(self):
        if self.grouping is not None:
            self.grouping = B.canonical_grouping(self.grouping)
        s = float(self.strength)
        if not s >= 0:
            raise ValueError(f"strength must be >= 0, got {self.strength!r}")
        self.strength = s
        pen = self.penalty
        if not isinstance(pen, _Lazy):
            if callable(pen) and not hasattr(pen, "prox"):
                self.penalty = _Lazy(lambda V, f=pen: f(_n_rows(V)), repr(pen))
            elif not (hasattr(pen, "prox") and hasattr(pen, "value")):
                raise TypeError(f"penalty must have prox(v, step) and value(x) or be a builder, got {pen!r}")
        B.resolve_leaf(self.target, self.name)  # fail early on a bad target

    @property
    def leaf(self) -> torch.Tensor:
        return B.resolve_leaf(self.target, self.name)

    def _view(self, A):
        return A if self.grouping is None else proxlib.to_rows(A, self.grouping)

    def _penalty_for(self, V):
        return self.penalty.resolve(V) if isinstance(self.penalty, _Lazy) else self.penalty

    def apply(self, lr: float) -> None:
        """Replace the leaf by its prox with step ``lr * strength``, in place."""
        step = float(lr) * self.strength
        if step <= 0:
            return
        leaf = self.leaf
        with torch.no_grad():
            x = B.working_tensor(leaf)
            with B.device_context(x):
                A = B.as_array(x)
                V = self._view(A)
                X = self._penalty_for(V).prox(V, step)
                out = X if self.grouping is None else proxlib.from_rows(X, A.shape, self.grouping)
                B.write_(leaf, out)

    def value(self) -> float:
        """``strength * Omega(leaf)`` (float64), for logging."""
        if self.strength == 0:
            return 0.0
        with torch.no_grad():
            x = B.working_tensor(self.leaf)
            with B.device_context(x):
                V = self._view(B.as_array(x))
                return self.strength * float(self._penalty_for(V).value(V))


# ------------------------------------------------------------------ the hook


class ProximalStep:
    r"""Proximal steps on chosen tensors, run after ``optimizer.step()``.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer, optional
        Where each tensor's current ``lr`` is read from (the parameter group
        holding the leaf).  Needed unless ``lr=`` is given to :meth:`step`.

    Examples
    --------
    >>> import torch, proxlib, proxlib.torch as pt
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> prox = pt.ProximalStep(opt)
    >>> _ = prox.add(model[0], proxlib.GroupLasso(lam=1.0), grouping="channel", strength=0.5)
    >>> handle = prox.attach()           # runs after every opt.step()
    >>> loss = model(torch.randn(16, 8)).pow(2).mean()
    >>> loss.backward(); opt.step()      # SGD step, then the group-lasso prox (step 0.05)
    >>> prox.value() > 0                 # 0.5 * sum of input-neuron norms, for logging
    True
    >>> handle.remove()
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None = None):
        self.optimizer = optimizer
        self.terms: list[ProxTerm] = []
        self.n_steps = 0
        self._handle = None

    def add(self, target, penalty, *, grouping: str | None = None, strength: float = 1.0, name: str = "weight", label: str = "") -> ProxTerm:
        """Add ``strength * penalty`` on ``target`` (a tensor, or ``module.<name>``); see :class:`ProxTerm`."""
        term = ProxTerm(target, penalty, grouping, strength, name, label or self._label(target, name))
        self.terms.append(term)
        return term

    @staticmethod
    def _label(target, name) -> str:
        if isinstance(target, torch.nn.Module):
            return f"{type(target).__name__}.{name}"
        return f"tensor{tuple(target.shape)}"

    # -- running
    def _lr_of(self, leaf: torch.Tensor, optimizer) -> float:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p is leaf:
                    lr = group["lr"]
                    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
        raise ValueError(f"a tensor of shape {tuple(leaf.shape)} with a prox term is not in the optimizer's param_groups")

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, lr: float | None = None) -> None:
        """Apply every term once, now: step = lr (of the tensor's group, or ``lr``) * strength."""
        opt = optimizer if optimizer is not None else self.optimizer
        if lr is None and opt is None:
            raise ValueError("step() needs an optimizer (to read each group's lr) or an explicit lr")
        for term in self.terms:
            term.apply(lr if lr is not None else self._lr_of(term.leaf, opt))
        self.n_steps += 1

    def _hook(self, optimizer, args, kwargs) -> None:
        self.step(optimizer)

    def attach(self, optimizer: torch.optim.Optimizer | None = None):
        """Run :meth:`step` after every ``optimizer.step()`` (``register_step_post_hook``).

        Returns the hook handle (``handle.remove()`` detaches it).
        """
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError("attach() needs an optimizer")
        for term in self.terms:
            self._lr_of(term.leaf, opt)  # every term's tensor must be optimised
        self.detach()  # attaching twice would apply the prox twice per step
        self.optimizer = opt
        self._handle = opt.register_step_post_hook(self._hook)
        return self._handle

    def detach(self) -> None:
        """Remove the hook installed by :meth:`attach` (if any)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    # -- logging
    def value(self) -> float:
        """Total penalty ``sum_terms strength * Omega(tensor)`` at the current weights."""
        return float(sum(t.value() for t in self.terms))

    def values(self) -> dict[str, float]:
        """Each term's ``strength * Omega``, keyed by its label (made unique)."""
        out: dict[str, float] = {}
        for i, t in enumerate(self.terms):
            key = t.label if t.label not in out else f"{t.label}#{i}"
            out[key] = t.value()
        return out

    # -- checkpointing
    def state_dict(self) -> dict:
        """The mutable state: each term's strength and the number of steps taken."""
        return {"n_steps": self.n_steps, "strengths": [t.strength for t in self.terms]}

    def load_state_dict(self, state: dict) -> None:
        strengths = list(state["strengths"])
        if len(strengths) != len(self.terms):
            raise ValueError(f"state has {len(strengths)} terms, this ProximalStep has {len(self.terms)}")
        for t, s in zip(self.terms, strengths):
            t.strength = float(s)
        self.n_steps = int(state["n_steps"])

    def __repr__(self) -> str:
        body = ", ".join(f"{t.label}: {t.strength:g}*{t.penalty!r}[{t.grouping}]" for t in self.terms)
        return f"ProximalStep({body})"

r"""The seeds' structured penalties, configured on a whole network.

* :func:`add_ssl` -- Structured Sparsity Learning (Wen et al. 2016): group lasso
  over filters, channels, filter shapes and whole layers (depth),

  .. math:: \sum_l \Big(\lambda_n \sum_{n}\|W^{(l)}_{n,:,:,:}\|_2
            + \lambda_c \sum_{c}\|W^{(l)}_{:,c,:,:}\|_2
            + \lambda_s \sum_{c,h,w}\|W^{(l)}_{:,c,h,w}\|_2
            + \lambda_d \|W^{(l)}\|_2\Big),

  one exact group-lasso prox per grouping.
* :func:`add_group_exclusive` -- combined group and exclusive sparsity (Yoon
  2018): on layer l,
  :math:`\lambda \sum_g ((1-\mu_l)\|w_g\|_2 + \tfrac{\mu_l}{2}\|w_g\|_1^2)` with
  :math:`\mu_l` from :func:`proxlib.mu_schedule` (exclusivity growing with
  depth), by the exact prox (default) or the thesis' sequential approximation.
"""

from __future__ import annotations

import proxlib

from .prox import GroupExclusiveSequential, ProximalStep, ProxTerm

__all__ = ["add_ssl", "add_group_exclusive"]


class _all_or_none:
    """Adds the terms of one call or none: on an error the terms added so far
    are taken off ``prox`` again (a corrected call then does not meet its own
    labels)."""

    def __init__(self, prox: ProximalStep):
        self.prox = prox

    def __enter__(self):
        self.n = len(self.prox.terms)

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            del self.prox.terms[self.n :]


def _named(layers, prox: ProximalStep) -> dict:
    """Names of ``layers``: a dict's keys; for a list ``layer<i>``, where a
    layer an earlier call on ``prox`` named keeps its name and a new one takes
    the next free number (each call numbered from layer0: a second call on
    other layers failed on the first's labels, "a term labelled
    'layer0.filter' exists already; pass label=", which these functions do
    not take)."""
    if isinstance(layers, dict):
        return dict(layers)
    before: dict = {}
    for t in prox.terms:
        head = t.label.split(".")[0]
        if head.startswith("layer") and head[5:].isdigit():
            before.setdefault(id(t.target), head)
    taken = set(before.values())
    named: dict = {}
    k = 0
    for m in layers:
        name = before.get(id(m))
        if name is None or name in named:
            while f"layer{k}" in taken:
                k += 1
            name = f"layer{k}"
            taken.add(name)
        named[name] = m
    return named


def add_ssl(prox: ProximalStep, layers, lam, groupings=("filter", "channel"), *, group_weights=None) -> list[ProxTerm]:
    """Add SSL group-lasso terms to ``prox`` for every layer in ``layers``.

    ``lam``: one strength for every grouping, or a dict grouping -> strength
    (e.g. ``{"filter": 1e-4, "shape": 1e-4, "layer": 1e-5}``).  ``groupings`` are
    taken from :data:`proxlib.GROUPINGS`; they are applied in the order given
    (``"layer"`` is best last: group lassos over nested groups compose exactly
    from the finest to the coarsest).  ``group_weights`` is passed to
    :class:`proxlib.GroupLasso` (``"sqrt"`` weights each group by the square
    root of its size).  One grouping may be given as a string
    (``groupings="filter"``).  A dict ``lam`` gives one strength per grouping
    in ``groupings``, no more and no less.  On an error (a bad grouping or
    strength) no term is added.  Terms are labelled ``<name>.<grouping>``:
    the keys of a dict ``layers``, or ``layer<i>`` for a list (a layer keeps
    the number an earlier call on ``prox`` gave it, a new one takes the next
    free number).

    >>> import torch, proxlib.torch as pt
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> terms = pt.add_ssl(pt.ProximalStep(opt), [net[0], net[2]], 1e-3, ("filter", "shape"))
    >>> len(terms)
    4
    """
    if isinstance(groupings, str):  # one grouping, not its letters ("got 'f'")
        groupings = (groupings,)
    strengths = lam if isinstance(lam, dict) else {g: lam for g in groupings}
    missing = [g for g in groupings if g not in strengths]
    if missing:
        raise ValueError(f"lam has no strength for grouping(s) {missing}; give one per grouping in {tuple(groupings)}")
    extra = [g for g in strengths if g not in groupings]
    if extra:  # a strength for a grouping not asked for would be ignored silently
        raise ValueError(f"lam gives a strength for grouping(s) {extra} not in groupings {tuple(groupings)}; add them to groupings")
    terms = []
    with _all_or_none(prox):
        for name, layer in _named(layers, prox).items():
            for g in groupings:
                pen = proxlib.GroupLasso(lam=1.0, group_weights=group_weights)
                terms.append(prox.add(layer, pen, grouping=g, strength=strengths[g], label=f"{name}.{g}"))
    return terms


def add_group_exclusive(prox: ProximalStep, layers, lam: float, *, m: float = 0.0, grouping: str = "shape", method: str = "exact") -> list[ProxTerm]:
    """Add the combined group + exclusive penalty with per-layer ``mu_l = mu_schedule(L, m)[l]``.

    ``layers`` in order from input to output.  Groups are, as in the thesis,
    one input feature across all output units: ``grouping="shape"`` (for a
    Linear the input neurons; for a Conv one (in, kh, kw) position across
    filters).  ``method="exact"`` uses :class:`proxlib.GroupExclusive`;
    ``"sequential"`` the thesis' Algorithm 1 (group prox then Eq. 8), for
    comparison.  On an error no term is added.
    """
    if method not in ("exact", "sequential"):
        raise ValueError(f"method must be 'exact' or 'sequential', got {method!r}")
    named = _named(layers, prox)
    mus = proxlib.mu_schedule(len(named), m)
    terms = []
    with _all_or_none(prox):
        for (name, layer), mu in zip(named.items(), mus):
            pen = proxlib.GroupExclusive(lam=1.0, mu=mu) if method == "exact" else GroupExclusiveSequential(lam=1.0, mu=mu)
            terms.append(prox.add(layer, pen, grouping=grouping, strength=lam, label=f"{name}.mu={mu:.2f}"))
    return terms

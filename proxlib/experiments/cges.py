r"""Combined group and exclusive sparsity (Yoon 2018) against its baselines: thesis Fig. 3a.

``python -m proxlib.experiments cges`` trains a small CNN (conv 10@5x5, conv
20@5x5, fc 100, fc 10, ReLUs; the thesis' MNIST network type) from scratch on
the bundled MNIST digits with proximal SGD (the exact prox after every step, as
the thesis' Algorithm 1), the regulariser on every layer's weights, for each of

* L2: weight decay only (the reference);
* L1: :math:`\lambda\|W\|_1`;
* GS-filter: group lasso over filters / output neurons (rows of ``W.reshape(out, -1)``);
* GS-feature: group lasso over features (``grouping="shape"``: one (c, h, w) fibre
  across the filters of a conv, one input neuron across the units of a Linear);
* ES: the exclusive lasso :math:`\frac{\lambda}{2}\sum_g\|w_g\|_1^2` over the same feature groups;
* CGES: :math:`\lambda\sum_g((1-\mu_l)\|w_g\|_2 + \frac{\mu_l}{2}\|w_g\|_1^2)` with the
  thesis' per-layer :math:`\mu_l = m + (1-2m)\,l/(L-1)` (``proxlib.torch.add_group_exclusive``),
  by the exact prox and by the thesis' sequential approximation (group prox then
  its Eq. 8),

over a sweep of strengths (``--scales`` times a base strength per method).
Prints, per method and strength, % parameters (non-zero weights), % FLOP
(kept filters x kept columns of each layer's lowered product) and test
accuracy beside the thesis' reported MNIST points, a per-layer comparison of
the exact and sequential proxes on trained weights (prox objective and
distance), saves ``cges.png`` (accuracy against % parameters, Fig. 3a, and
against % FLOP, Fig. 3d) and ``results.json``, and ends with the compaction
report of the exact-CGES network of the largest strength whose accuracy is
within a point of the L2 reference's (usually the sparsest such; when none
is, the network of the first strength in ``--scales``).
"""

from __future__ import annotations

import sys
import time

import torch

import proxlib
import proxlib.torch as pt

from . import common as C

NAME = "cges"

#: What the thesis states for MNIST (Sec. 4.3, Table 2); Fig. 3a's curves are not in its text.
THESIS = [
    ("L2 (full network)", "100%", "100%", "99.20%", "Table 2"),
    ("CGES", "63.5%", "85.5%", "no loss vs L2", "Sec. 4.3: 36.48% fewer parameters, 14.46% less computation"),
    ("Han et al. (2015) pruning", "10%", "-", "98.71%", "Table 2"),
    ("CGES + iterative pruning", "10%", "-", "99.16%", "Table 2"),
]

#: method -> base strength (``--scales`` multiply it)
BASE = {"L1": 1e-3, "GS-filter": 4e-3, "GS-feature": 4e-3, "ES": 4e-3, "CGES": 4e-3, "CGES (sequential)": 4e-3}
METHODS = tuple(BASE)


def configure(method: str, prox: pt.ProximalStep, layers: dict, lam: float, m: float) -> None:
    if method == "L1":
        for n, l in layers.items():
            prox.add(l, proxlib.WeightedL1(1.0), strength=lam, label=f"{n}.l1")
    elif method == "GS-filter":
        for n, l in layers.items():
            prox.add(l, proxlib.GroupLasso(1.0), grouping="filter", strength=lam, label=f"{n}.gs-filter")
    elif method == "GS-feature":
        for n, l in layers.items():
            prox.add(l, proxlib.GroupLasso(1.0), grouping="shape", strength=lam, label=f"{n}.gs-feature")
    elif method == "ES":
        for n, l in layers.items():
            prox.add(l, proxlib.ExclusiveLasso(1.0), grouping="shape", strength=lam, label=f"{n}.es")
    elif method == "CGES":
        pt.add_group_exclusive(prox, layers, lam, m=m, grouping="shape", method="exact")
    elif method == "CGES (sequential)":
        pt.add_group_exclusive(prox, layers, lam, m=m, grouping="shape", method="sequential")
    else:  # pragma: no cover
        raise ValueError(method)


def _measure(net, split, example) -> dict:
    layers = C.layers_of(net)
    mm = pt.model_metrics(net, layers, example_input=example, removable=False)
    return {"params": C.nonzero_fraction(layers)["total"], "flop": mm["total"].flop_fraction, "accuracy": pt.evaluate(net, *split.test)}


def train_one(method: str, lam: float, args, split, make, example) -> tuple:
    torch.manual_seed(args.seed)
    net = make()
    wd = args.weight_decay if method == "L2" else 0.0
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=wd)
    if method != "L2":
        prox = pt.ProximalStep(opt, model=net)
        configure(method, prox, C.layers_of(net), lam, args.m)
        prox.attach()
    t0 = time.perf_counter()
    pt.fit(net, split.loader(args.batch_size, args.seed + 1), opt, epochs=args.epochs)
    r = _measure(net, split, example)
    r.update(method=method, strength=lam, seconds=time.perf_counter() - t0)
    return net, r


def prox_gap(net, lam: float, lr: float, m: float) -> list:
    """Exact vs sequential prox of every layer's trained weights at the training step lr * lam."""
    layers = C.layers_of(net)
    mus = proxlib.mu_schedule(len(layers), m)
    out = []
    for (n, l), mu in zip(layers.items(), mus):
        W = l.weight.detach().double()
        V = proxlib.to_rows(W, "shape")
        step = lr * lam
        pen = proxlib.GroupExclusive(1.0, mu)
        Xe = proxlib.prox_group_exclusive(V, 1.0, mu, step)
        Xs = proxlib.prox_group_exclusive_sequential(V, 1.0, mu, step)

        def F(X):
            return 0.5 * float(((X - V) ** 2).sum()) + step * pen.value(X)

        fe, fs = F(Xe), F(Xs)
        out.append(dict(layer=n, mu=mu, objective_exact=fe, objective_sequential=fs, relative_gap=(fs - fe) / max(abs(fe), 1e-300),
                        distance=float(torch.linalg.norm(Xs - Xe) / max(float(torch.linalg.norm(Xe)), 1e-300)),
                        zeros_exact=int((Xe == 0).sum()), zeros_sequential=int((Xs == 0).sum())))
    return out


def main(argv=None) -> int:
    p = C.base_parser("python -m proxlib.experiments cges", __doc__.split("\n\n")[0], {"lr": 0.02, "batch_size": 64})
    a = p.add_argument
    a("--epochs", type=C.nonnegative_int, default=10, help="training epochs per network (from scratch)")
    a("--weight-decay", type=C.nonnegative_float, default=5e-4, help="l2 strength of the L2 reference")
    a("--m", type=C.in_range(0.0, 0.5), default=0.0, help="lowest exclusivity of the per-layer mu_l = m + (1 - 2m) l / (L - 1)")
    a("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="regularisers in the sweep")
    a("--scales", nargs="+", type=C.nonnegative_float, default=[1.0, 4.0, 8.0, 16.0, 64.0], help="strengths: these multiples of each method's base strength")
    args = C.parse_args(p, argv, quick=dict(n_train=300, n_test=200, epochs=1, repeats=2, scales=[4.0],
                                            methods=["L1", "CGES", "CGES (sequential)"]))
    split, t_start, load0 = C.start(args, NAME)
    make = lambda: C.small_cnn(split.side)  # noqa: E731
    example = split.Xte[:256]
    _, ref = train_one("L2", 0.0, args, split, make, example)
    runs = [ref]
    nets = {}
    print(f"L2: accuracy {100 * ref['accuracy']:.2f}% ({ref['seconds']:.0f} s)")
    for method in args.methods:
        for s in args.scales:
            lam = BASE[method] * s
            net, r = train_one(method, lam, args, split, make, example)
            runs.append(r)
            nets[(method, lam)] = net
            print(f"{method:>18s} lambda {lam:.2e}: {100 * r['params']:.1f}% parameters, {100 * r['flop']:.1f}% FLOP, "
                  f"accuracy {100 * r['accuracy']:.2f}% ({r['seconds']:.0f} s)")
    print("\nThesis Fig. 3a / Table 2 (MNIST, full MNIST and its own CNN): what its text states\n")
    print(C.md_table(["model", "% params", "% FLOP", "accuracy", "source"], [list(r) for r in THESIS]))
    print(f"\nOurs ({split.Xtr.shape[0]} training digits, {args.epochs} epochs from scratch, accuracy on {split.Xte.shape[0]} held-out digits)\n")
    print(C.md_table(["method", "strength", "% params", "% FLOP", "accuracy", "vs L2"],
                     [[r["method"], f"{r['strength']:.2e}", C.pct(r["params"]), C.pct(r["flop"]), C.pct(r["accuracy"], 2),
                       f"{100 * (r['accuracy'] - ref['accuracy']):+.2f}"] for r in runs]))
    # exact vs sequential: the same strength, trained networks and the prox on trained weights
    gaps = None
    pairs = [(lam, nets[("CGES", lam)], nets[("CGES (sequential)", lam)]) for (mth, lam) in nets
             if mth == "CGES" and ("CGES (sequential)", lam) in nets]
    if pairs:
        print("\nExact CGES prox vs the thesis' sequential one (group prox, then Eq. 8), same strength:\n")
        print(C.md_table(["strength", "exact: % params / accuracy", "sequential: % params / accuracy"],
                         [[f"{lam:.2e}", f"{C.pct(_measure(e, split, example)['params'])} / {C.pct(pt.evaluate(e, *split.test), 2)}",
                           f"{C.pct(_measure(q, split, example)['params'])} / {C.pct(pt.evaluate(q, *split.test), 2)}"] for lam, e, q in pairs]))
        # the strongest strength whose exact network still works (within 5 points of L2): a collapsed
        # network (all weights zero) makes both proxes trivially equal
        working = [t for t in pairs if pt.evaluate(t[1], *split.test) >= ref["accuracy"] - 0.05]
        lam, e, _ = max(working, key=lambda t: t[0]) if working else pairs[0]
        gaps = prox_gap(e, lam, args.lr, args.m)
        print(f"\nOne prox step (step = lr x lambda = {args.lr * lam:.2e}) on the trained exact-CGES weights, per layer: objective "
              "1/2||X - W||^2 + step Omega(X) of each result (the exact prox is its minimiser)\n")
        print(C.md_table(["layer", "mu", "objective: exact", "objective: sequential", "relative excess", "‖X_seq − X_exact‖ / ‖X_exact‖", "zeros exact / sequential"],
                         [[g["layer"], f"{g['mu']:.2f}", f"{g['objective_exact']:.6g}", f"{g['objective_sequential']:.6g}", f"{g['relative_gap']:.2e}",
                           f"{g['distance']:.2e}", f"{g['zeros_exact']} / {g['zeros_sequential']}"] for g in gaps]))
    _figure(runs, ref, f"{args.out}/cges.png")
    compacted = None
    cges = [(lam, n) for (mth, lam), n in nets.items() if mth == "CGES"]
    if cges:
        ok = [(lam, n) for lam, n in cges if pt.evaluate(n, *split.test) >= ref["accuracy"] - 0.01]
        lam, net = max(ok or cges[:1], key=lambda t: t[0])
        compacted = C.compact_and_report(net, example, split.test, repeats=args.repeats, title=f"CGES network (lambda {lam:.2e})")
    elapsed = time.perf_counter() - t_start
    C.save_json(f"{args.out}/results.json", {
        "experiment": NAME, "data": split.source, "args": vars(args), "seconds": elapsed, "load_average": [load0, C.load_average()],
        "thesis": THESIS, "runs": runs, "prox_gap": gaps,
        "compaction": None if compacted is None else {"accuracy": compacted["accuracy"], "report": compacted["report"].as_dict()},
    })
    print(f"\nfigure: {args.out}/cges.png   results: {args.out}/results.json   time: {elapsed:.0f} s")
    return 0


def _figure(runs, ref, path):
    plt = C.pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    methods = [m for m in dict.fromkeys(r["method"] for r in runs) if m != "L2"]
    for ax, key, label in ((axes[0], "params", "% parameters (non-zero weights)"), (axes[1], "flop", "% FLOP")):
        for mth in methods:
            rs = sorted((r for r in runs if r["method"] == mth), key=lambda r: r[key])
            ax.plot([100 * r[key] for r in rs], [100 * r["accuracy"] for r in rs], "o-" if "sequential" not in mth else "x--", ms=4, label=mth)
        ax.plot([100 * ref[key]], [100 * ref["accuracy"]], "k*", ms=9, label="L2")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy / parameters (thesis Fig. 3a)", fontsize=9)
    axes[1].set_title("accuracy / FLOP (thesis Fig. 3d)", fontsize=9)
    axes[1].legend(fontsize=6)
    C.save_figure(fig, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

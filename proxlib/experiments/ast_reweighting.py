r"""Affine-scaling re-weighting (Fedorov & Rao) against magnitude pruning: their Table 1.

``python -m proxlib.experiments ast`` starts from the reference Caffe LeNet
(the paper's LeNet-5: conv1 20@5x5, conv2 50@5x5, fc1 500, fc2 10; 431k
weights) trained on the bundled MNIST digits (shared with the SSL experiment
through the cache) and, for each re-weighting rule,

1. trains in ``q`` with :math:`\theta = q \odot \omega` (Eq. 6), re-weighting
   :math:`\omega` at the start of each epoch (Algorithm 1: from the weights
   the epoch starts from, the reference's first), one layer at a time (conv1,
   conv2, fc1, fc2, twice each: 8 iterations, the paper's schedule) with the greedy
   initialisation (``proxlib.torch.affine_scaling_prune``, ``cycle=True``):
   re-weighted l1 :math:`\omega = |\theta| + \tau` (Eq. 8), re-weighted l2
   :math:`\omega = \sqrt{\theta^2 + \tau}` with :math:`\tau` annealed (Eq. 9),
   FOCUSS :math:`\omega = |\theta|^{2-p} + \tau`, p = 1/2 (Eq. 10);
2. prunes each layer by magnitude to the paper's per-layer density for that
   rule (e.g. 27.8% / 6% / 0.7% / 18.6% non-zeros for re-weighted l1) and
   retrains with the mask fixed;

and, as the control, magnitude pruning of the reference itself (LWC, one shot)
to exactly the same per-layer densities with the same retraining.  Prints
Table 1 (% non-zeros per layer, test error) with the paper's numbers beside
ours, saves ``ast.png`` (the kurtosis of each layer's weights along the
re-weighting iterations, as the paper's Fig. 1, and the errors) and
``results.json``, and ends with the compaction report of the re-weighted-l1
network.
"""

from __future__ import annotations

import sys
import time

import torch

import proxlib.torch as pt

from . import common as C

NAME = "ast"

#: Table 1 of the paper: % non-zeros (conv1, conv2, fc1, fc2, total) and test error %.
PAPER = {
    "reference": (None, None, None, None, None, 0.86),
    "l1": (27.8, 6.0, 0.7, 18.6, 1.28, 1.16),
    "l2": (50.4, 4.9, 0.9, 4.7, 1.26, 1.41),
    "focuss": (67.6, 8.1, 1.0, 15.0, 1.7, 1.13),
    "DNS": (14.2, 3.1, 0.7, 4.3, 0.9, 0.91),
    "LWC": (66.0, 12.0, 8.0, 19.0, 8.0, 0.77),
}
RULE_NAMES = {"l1": "re-weighted l1", "l2": "re-weighted l2", "focuss": "FOCUSS (p = 0.5)"}  # the paper's runs


def rule_name(rule: str, p: float) -> str:
    """This run's name of ``rule`` (FOCUSS with its exponent ``--p``)."""
    return f"FOCUSS (p = {p:g})" if rule == "focuss" else RULE_NAMES[rule]


LAYERS = ("conv1", "conv2", "fc1", "fc2")


def kurtosis(w: torch.Tensor) -> float:
    """E[((w - mean) / std)^4] of the entries (the paper's Eq. 13)."""
    w = w.detach().double().reshape(-1)
    s = w.std(unbiased=False)
    return float((((w - w.mean()) / s) ** 4).mean()) if s > 0 else float("nan")


def main(argv=None) -> int:
    p = C.base_parser("python -m proxlib.experiments ast", __doc__.split("\n\n")[0], {"lr": 0.01, "batch_size": 64})
    a = p.add_argument
    C.add_reference_options(p)
    a("--epochs-per-iteration", type=C.positive_int, default=1, help="epochs between two re-weightings (the paper: 1000)")
    a("--iterations", type=C.nonnegative_int, default=8, help="re-weighting iterations (one layer each, in turn)")
    a("--retrain-epochs", type=C.nonnegative_int, default=4, help="retraining epochs after pruning (AST and LWC alike)")
    a("--rules", nargs="+", default=list(RULE_NAMES), choices=list(RULE_NAMES), help="re-weighting rules")
    a("--tau-l1", type=C.positive_float, default=1e-3, help="tau of re-weighted l1")
    a("--tau-l2", type=C.positive_float, default=1e-4, help="initial tau of re-weighted l2 (halved at every re-weighting)")
    a("--tau-focuss", type=C.positive_float, default=1e-4, help="tau of FOCUSS")
    a("--p", type=C.in_range(0.0, 2.0), default=0.5, help="FOCUSS exponent")
    # %(default)s in the help: the formatter's own "(default: True)" read as --no-guard being on
    a("--no-guard", dest="guard", action="store_false",
      help="the unguarded greedy rule (weights may grow without bound); without it the rule is guarded (guard=%(default)s)")
    args = C.parse_args(p, argv, quick=dict(n_train=300, n_test=200, ref_epochs=1, iterations=4, retrain_epochs=1, repeats=2,
                                            rules=["l1", "focuss"]))
    split, t_start, load0 = C.start(args, NAME)
    make = lambda: C.caffe_lenet(split.side)  # noqa: E731
    ref, ref_s, _ = C.train_baseline(make, split, epochs=args.ref_epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                                     batch_size=args.batch_size, seed=args.seed, cache_dir=args.cache or None, tag="caffe-lenet")
    ref_err = 1 - pt.evaluate(ref, *split.test)
    print(f"reference error {100 * ref_err:.2f}%")
    results = {"reference": {"nonzero": C.nonzero_fraction(C.layers_of(ref)), "error": ref_err,
                             "kurtosis": {n: kurtosis(m.weight) for n, m in C.layers_of(ref).items()}}}
    make_opt = lambda ps: torch.optim.SGD(ps, lr=args.lr, momentum=args.momentum)  # noqa: E731
    taus = {"l1": args.tau_l1, "l2": lambda t: args.tau_l2 * 0.5**t, "focuss": args.tau_focuss}
    nets = {}
    for rule in args.rules:
        amounts = {n: 1 - PAPER[rule][i] / 100 for i, n in enumerate(LAYERS)}
        # AST: re-weighted training, then magnitude pruning to the paper's densities, retraining
        net = C.clone(ref)
        layers = C.layers_of(net)
        trace = []

        def record(sched, layers=layers, trace=trace):
            trace.append({n: kurtosis(m.weight) for n, m in layers.items()})

        t0 = time.perf_counter()
        loader = split.loader(args.batch_size, args.seed + 20)
        n_batches = len(loader)
        r = pt.affine_scaling_prune(
            net, layers, loader, make_optimizer=make_opt, rule=rule, tau=taus[rule], p=args.p,
            every=n_batches * args.epochs_per_iteration, init="greedy", guard=args.guard, cycle=True,
            epochs=args.iterations * args.epochs_per_iteration, amount=amounts, retrain_epochs=args.retrain_epochs,
            test=split.test, on_reweight=record, reweight_first=True,
        )
        sec = time.perf_counter() - t0
        results[rule] = {"nonzero": C.nonzero_fraction(layers), "error": 1 - r.accuracy, "error_reweighted": 1 - r.accuracy_reweighted,
                         "error_pruned": 1 - r.accuracy_pruned, "kurtosis_trace": trace, "n_reweights": r.n_reweights, "seconds": sec,
                         "max_abs_weight": max(float(m.weight.detach().abs().max()) for m in layers.values())}
        nets[rule] = net
        # LWC control: prune the reference to exactly the same densities, same retraining
        lwc = C.clone(ref)
        lwc_layers = C.layers_of(lwc)
        t0 = time.perf_counter()
        pt.magnitude_prune(list(lwc_layers.values()), amount=[amounts[n] for n in LAYERS])
        err_pruned = 1 - pt.evaluate(lwc, *split.test)
        # its own batches (a fixed seed): the control does not depend on how long AST trained
        pt.fit(lwc, split.loader(args.batch_size, args.seed + 30), make_opt(lwc.parameters()), epochs=args.retrain_epochs)
        results[f"LWC@{rule}"] = {"nonzero": C.nonzero_fraction(lwc_layers), "error": 1 - pt.evaluate(lwc, *split.test),
                                  "error_pruned": err_pruned, "seconds": time.perf_counter() - t0}
        print(f"{rule_name(rule, args.p)}: {sec:.0f} s; error after re-weighting {100 * (1 - r.accuracy_reweighted):.2f}%, pruned "
              f"{100 * (1 - r.accuracy_pruned):.2f}%, retrained {100 * (1 - r.accuracy):.2f}%; LWC at the same densities: pruned "
              f"{100 * err_pruned:.2f}%, retrained {100 * results[f'LWC@{rule}']['error']:.2f}%")

    cols = ["reference"] + list(args.rules) + [f"LWC@{r}" for r in args.rules]
    head = ["", "paper: reference", "paper: " + " / ".join(RULE_NAMES[r] for r in args.rules), "paper: DNS", "paper: LWC"] + [f"ours: {c}" for c in cols]
    rows = []
    for i, n in enumerate(LAYERS + ("total",)):
        paper = [PAPER["reference"][i] or "-", " / ".join(f"{PAPER[r][i]}" for r in args.rules), PAPER["DNS"][i], PAPER["LWC"][i]]
        rows.append([f"{n} % non-zeros", *paper, *[f"{100 * results[c]['nonzero'][n]:.2f}" for c in cols]])
    paper = [PAPER["reference"][5], " / ".join(f"{PAPER[r][5]}" for r in args.rules), PAPER["DNS"][5], PAPER["LWC"][5]]
    rows.append(["test error %", *paper, *[f"{100 * results[c]['error']:.2f}" for c in cols]])
    print(f"\nTable 1: pruning LeNet-5, % non-zeros and test error ({split.Xte.shape[0]} held-out digits; "
          f"LWC@rule: magnitude pruning of the reference to the same densities, same retraining)\n")
    print(C.md_table(head, rows))
    _figure(results, args.rules, f"{args.out}/ast.png", args.p)
    compacted = None
    if nets:
        first = next(iter(nets))
        compacted = C.compact_and_report(nets[first], split.Xte[:256], split.test, repeats=args.repeats, title=f"AST ({rule_name(first, args.p)}) LeNet")
    elapsed = time.perf_counter() - t_start
    C.save_json(f"{args.out}/results.json", {
        "experiment": NAME, "data": split.source, "args": {k: v for k, v in vars(args).items()}, "seconds": elapsed, "reference_seconds": ref_s,
        "load_average": [load0, C.load_average()], "paper": PAPER, "results": results,
        "compaction": None if compacted is None else {"accuracy": compacted["accuracy"], "report": compacted["report"].as_dict()},
    })
    print(f"\nfigure: {args.out}/ast.png   results: {args.out}/results.json   time: {elapsed:.0f} s")
    return 0


def _figure(results, rules, path, p):
    plt = C.pyplot()

    fig, axes = plt.subplots(1, len(rules) + 1, figsize=(3.2 * (len(rules) + 1), 3.0), squeeze=False)
    for ax, rule in zip(axes[0], rules):
        tr = results[rule]["kurtosis_trace"]
        for n in LAYERS:
            ax.plot(range(1, len(tr) + 1), [t[n] for t in tr], marker="o", ms=3, label=n)
        ax.set_yscale("log")
        ax.set_xlabel("re-weighting iteration t (at its start)")
        ax.set_title(f"{rule_name(rule, p)}: kurtosis", fontsize=9)
        ax.legend(fontsize=6)
    ax = axes[0][-1]
    x = range(len(rules))
    ax.bar([i - 0.2 for i in x], [100 * results[r]["error"] for r in rules], 0.4, label="AST, pruned, retrained")
    ax.bar([i + 0.2 for i in x], [100 * results[f"LWC@{r}"]["error"] for r in rules], 0.4, label="LWC, same densities")
    ax.axhline(100 * results["reference"]["error"], color="k", lw=0.8, ls="--", label="reference")
    ax.set_xticks(list(x))
    ax.set_xticklabels(rules, fontsize=8)
    ax.set_ylabel("test error %")
    ax.legend(fontsize=6)
    C.save_figure(fig, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

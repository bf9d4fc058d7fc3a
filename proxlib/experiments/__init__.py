"""The seed papers' experiments on the bundled MNIST digits (``python -m proxlib.experiments NAME``).

* ``ssl``: Wen et al. (SSL) on Caffe's LeNet: filters, channels and filter shapes per
  conv layer, FLOP and measured speed-ups of the compacted network (the slides' Tables 1-2);
* ``ast``: Fedorov & Rao's affine-scaling re-weighting (re-weighted l1, l2, FOCUSS p = 1/2)
  against magnitude pruning at the same sparsity (their Table 1);
* ``cges``: Yoon's combined group and exclusive sparsity against l1, group lasso over
  filters and over features and the exclusive lasso, accuracy against parameters over a
  sweep of strengths, the exact prox against the thesis' sequential one (Fig. 3a).

Each prints the paper's table layout with the paper's numbers beside ours, saves a figure
and ``results.json`` under ``./proxlib_experiments_out/NAME`` and ends with the compacted
network and its report.  ``--quick`` runs a tiny version (seconds) for the tests; ``--help``
lists every option.  These modules are examples built on proxlib's public API, not part of it.
"""

EXPERIMENTS = ("ssl", "ast", "cges")

